//! `guestctl oauth start|status|cancel|code` and `guestctl credentials`: OAuth sessions
//! on the agent (issue 7), through [`host_client::oauth::OAuthClient`].

use super::print::to_json;
use super::{bad, parse_duration, token, Auth};
use clap::Subcommand;
use guest_proto::oauth::{SessionInfo, SessionState};
use host_client::oauth::{OAuthClient, OAuthClientError};
use host_client::text::Untrusted;
use host_client::AgentAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Exit status of a session that ended without credentials.
pub const EXIT_NOT_AUTHENTICATED: u8 = 7;

#[derive(Subcommand)]
pub enum OAuthCmd {
    /// Start a login with a provider (codex, claude_code, gemini_cli, ...): the CLI runs in
    /// the VM and its login page opens in the VM's browser. Prints the session and its URL.
    Start {
        /// Agent address: IP[:PORT] (TCP, port 8080 when omitted), vsock:/PATH:PORT (Firecracker's
        /// hybrid vsock: the VM's vsock uds_path and the guest port) or vsock:CID:PORT (AF_VSOCK).
        addr: String,
        provider: String,
        /// Session id (the agent makes one up when omitted).
        #[arg(long)]
        session_id: Option<String>,
        /// Follow the session until it ends (exit 0 authenticated, 7 otherwise, 3 timeout).
        #[arg(long)]
        wait: bool,
        /// How long --wait follows the session.
        #[arg(long, default_value = "10m", value_parser = parse_duration)]
        wait_timeout: Duration,
        #[command(flatten)]
        auth: Auth,
    },
    /// Show one session (state, URL, reason, browser, history) or all of them.
    Status {
        /// Agent address: IP[:PORT] (TCP, port 8080 when omitted), vsock:/PATH:PORT (Firecracker's
        /// hybrid vsock: the VM's vsock uds_path and the guest port) or vsock:CID:PORT (AF_VSOCK).
        addr: String,
        session_id: Option<String>,
        #[command(flatten)]
        auth: Auth,
    },
    /// Cancel a live session: its CLI's process group is killed.
    Cancel {
        /// Agent address: IP[:PORT] (TCP, port 8080 when omitted), vsock:/PATH:PORT (Firecracker's
        /// hybrid vsock: the VM's vsock uds_path and the guest port) or vsock:CID:PORT (AF_VSOCK).
        addr: String,
        session_id: String,
        #[command(flatten)]
        auth: Auth,
    },
    /// Type a code shown by the login page into the CLI (paste-code flows, e.g. claude_code).
    Code {
        /// Agent address: IP[:PORT] (TCP, port 8080 when omitted), vsock:/PATH:PORT (Firecracker's
        /// hybrid vsock: the VM's vsock uds_path and the guest port) or vsock:CID:PORT (AF_VSOCK).
        addr: String,
        session_id: String,
        code: String,
        #[command(flatten)]
        auth: Auth,
    },
}

fn client(addr: &str, auth: &Auth) -> anyhow::Result<OAuthClient> {
    let addr: AgentAddr = addr.parse().map_err(bad)?;
    Ok(OAuthClient::new(addr)
        .with_token(token(auth)?)
        .with_timeout(Duration::from_secs(15)))
}

fn input_or(e: OAuthClientError) -> anyhow::Error {
    match e {
        OAuthClientError::BadName(b) => bad(b),
        other => anyhow::Error::new(other),
    }
}

pub fn run(cmd: OAuthCmd, json: bool) -> anyhow::Result<u8> {
    let rt = super::runtime()?;
    match cmd {
        OAuthCmd::Start {
            addr,
            provider,
            session_id,
            wait,
            wait_timeout,
            auth,
        } => {
            let c = client(&addr, &auth)?;
            let s = rt
                .block_on(c.start(&provider, session_id.as_deref()))
                .map_err(input_or)?;
            if !wait {
                show(&s, json);
                return Ok(if s.state == SessionState::Failed {
                    EXIT_NOT_AUTHENTICATED
                } else {
                    0
                });
            }
            let end = rt
                .block_on(c.wait_end(
                    &s.session_id,
                    Duration::from_millis(500),
                    wait_timeout,
                    |s| {
                        if json {
                            if let Ok(j) = to_json(s, false) {
                                say!("{j}");
                            }
                        } else {
                            say!(
                                "{} {}{}",
                                Untrusted(&s.session_id),
                                s.state,
                                s.oauth_url
                                    .as_ref()
                                    .map(|u| format!("  {}", Untrusted(u)))
                                    .unwrap_or_default()
                            );
                        }
                    },
                ))
                .map_err(input_or)?;
            Ok(match end.state {
                SessionState::Authenticated => 0,
                s if s.is_terminal() => {
                    if !json {
                        tell!(
                            "guestctl: session {} {}: {}",
                            Untrusted(&end.session_id),
                            end.state,
                            Untrusted(end.reason.as_deref().unwrap_or("no reason given"))
                        );
                    }
                    EXIT_NOT_AUTHENTICATED
                }
                _ => 3,
            })
        }
        OAuthCmd::Status {
            addr,
            session_id,
            auth,
        } => {
            let c = client(&addr, &auth)?;
            match session_id {
                Some(id) => {
                    let s = rt.block_on(c.session(&id)).map_err(input_or)?;
                    show(&s, json);
                }
                None => {
                    let all = rt.block_on(c.sessions()).map_err(input_or)?;
                    if json {
                        say!(
                            "{}",
                            to_json(&serde_json::json!({ "sessions": all }), false)?
                        );
                    } else if all.is_empty() {
                        say!("no OAuth sessions");
                    } else {
                        for s in &all {
                            say!(
                                "{:<24} {:<12} {:<14} {}",
                                Untrusted(&s.session_id).to_string(),
                                Untrusted(&s.provider).to_string(),
                                s.state.as_str(),
                                Untrusted(s.reason.as_deref().unwrap_or(""))
                            );
                        }
                    }
                }
            }
            Ok(0)
        }
        OAuthCmd::Cancel {
            addr,
            session_id,
            auth,
        } => {
            let c = client(&addr, &auth)?;
            let s = rt.block_on(c.cancel(&session_id)).map_err(input_or)?;
            show(&s, json);
            Ok(0)
        }
        OAuthCmd::Code {
            addr,
            session_id,
            code,
            auth,
        } => {
            let c = client(&addr, &auth)?;
            let s = rt
                .block_on(c.paste_code(&session_id, &code))
                .map_err(input_or)?;
            show(&s, json);
            Ok(0)
        }
    }
}

/// `guestctl credentials ADDR SESSION [--out FILE]`: the credentials JSON of an
/// authenticated session, to stdout or a file created 0600.
pub fn credentials(
    addr: &str,
    session_id: &str,
    out: Option<PathBuf>,
    auth: &Auth,
) -> anyhow::Result<u8> {
    let c = client(addr, auth)?;
    let r = super::runtime()?
        .block_on(c.credentials(session_id))
        .map_err(input_or)?;
    // The same JSON value, with DEL/C1/bidi escaped too: the file may be `cat`ed.
    let text = to_json(&r.credentials, true)?;
    match out {
        Some(p) => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&p)
                .map_err(|e| anyhow::anyhow!("{}: {e}", p.display()))?;
            f.write_all(text.as_bytes())?;
            f.write_all(b"\n")?;
            tell!(
                "{} credentials ({}, modified {}) written to {}",
                Untrusted(&r.provider),
                Untrusted(&r.path),
                Untrusted(&r.modified_at),
                p.display()
            );
        }
        None => say!("{text}"),
    }
    Ok(0)
}

fn show(s: &SessionInfo, json: bool) {
    if json {
        if let Ok(j) = to_json(s, true) {
            say!("{j}");
        }
        return;
    }
    say!(
        "session   {} ({})",
        Untrusted(&s.session_id),
        Untrusted(&s.provider)
    );
    say!("state     {}", s.state);
    if let Some(u) = &s.oauth_url {
        say!(
            "url       {}  [{}]",
            Untrusted(u),
            Untrusted(s.url_source.as_deref().unwrap_or("?"))
        );
    }
    if let Some(r) = &s.reason {
        say!("reason    {}", Untrusted(r));
    }
    if let Some(b) = &s.browser {
        match (&b.error, b.pid) {
            (Some(e), _) => say!("browser   {}", Untrusted(e)),
            (None, Some(pid)) => say!("browser   {} (pid {pid})", Untrusted(&b.command)),
            _ => {}
        }
    }
    if let Some(p) = &s.credentials_path {
        say!("creds     {}", Untrusted(p));
    }
    say!("deadline  {}", Untrusted(&s.deadline));
    if s.state == SessionState::Failed {
        if let Some(o) = &s.last_output {
            let tail: Vec<&str> = o.lines().rev().take(5).collect();
            say!("output    (last lines)");
            for l in tail.into_iter().rev() {
                say!("  | {}", Untrusted(l));
            }
        }
    }
}
