//! The browser shim. A login CLI opens its URL with `$BROWSER` or `xdg-open`; both point
//! at small scripts in the session's directory that exec `guest-agent open-url URL`, which
//! hands the exact URL to the running agent over `oauth.sock` in the login directory (a
//! unix socket only root and the login user's group may use: no token in the CLI's
//! environment, and the state directory stays closed to it) and exits 0 like xdg-open.
//!
//! Protocol on the socket: one JSON line `{"url":…,"sessionId":…}` in, one JSON line
//! ([`OpenUrlResponse`]) out.

use guest_proto::oauth::{OpenUrlRequest, OpenUrlResponse};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

/// The socket the shim talks to.
pub const SOCKET_ENV: &str = "GUEST_AGENT_OAUTH_SOCKET";
/// The session the CLI belongs to: `id/generation`, so a URL from an old CLI never lands
/// in a session started again with the same id.
pub const SESSION_ENV: &str = "GUEST_AGENT_OAUTH_SESSION";
/// Names a CLI may use to open a browser; each gets a script.
pub const NAMES: &[&str] = &[
    "xdg-open",
    "x-www-browser",
    "www-browser",
    "sensible-browser",
    "gnome-open",
];
/// Longest line accepted on the socket.
pub const MAX_LINE: usize = 64 * 1024;

/// `'…'` quoting for sh.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// Writes the shim scripts into `dir` (created) and returns the path for `BROWSER`.
pub fn install(dir: &Path, command: &[String]) -> std::io::Result<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)?;
    let cmd: Vec<String> = command.iter().map(|c| sh_quote(c)).collect();
    let script = format!("#!/bin/sh\nexec {} \"$@\"\n", cmd.join(" "));
    for name in NAMES {
        let p = dir.join(name);
        std::fs::write(&p, &script)?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(dir.join("xdg-open"))
}

/// The URL among a shim's arguments: the first that parses as http(s).
pub fn url_arg(args: &[String]) -> Option<&str> {
    args.iter()
        .map(|a| a.as_str())
        .find(|a| a.starts_with("https://") || a.starts_with("http://"))
}

/// `guest-agent open-url URL`: exit status 0 when the agent recorded it.
pub fn open_url_main(args: &[String]) -> u8 {
    match open_url(args) {
        Ok(r) => {
            if let Some(e) = r.browser_error {
                eprintln!("guest-agent open-url: recorded, but the browser did not start: {e}");
            }
            0
        }
        Err(e) => {
            eprintln!("guest-agent open-url: {e}");
            1
        }
    }
}

fn open_url(args: &[String]) -> Result<OpenUrlResponse, String> {
    let url = url_arg(args).ok_or_else(|| {
        format!("no http(s) URL among the arguments {args:?} (usage: guest-agent open-url URL)")
    })?;
    let socket = std::env::var_os(SOCKET_ENV).ok_or_else(|| {
        format!("{SOCKET_ENV} is not set: not started by a guest-agent OAuth session")
    })?;
    let req = OpenUrlRequest {
        url: url.to_string(),
        session_id: std::env::var(SESSION_ENV).ok(),
    };
    let mut s = std::os::unix::net::UnixStream::connect(&socket)
        .map_err(|e| format!("{}: {e}", Path::new(&socket).display()))?;
    let _ = s.set_read_timeout(Some(std::time::Duration::from_secs(30)));
    let mut line = serde_json::to_vec(&req).map_err(|e| e.to_string())?;
    line.push(b'\n');
    s.write_all(&line).map_err(|e| format!("sending: {e}"))?;
    let mut answer = String::new();
    BufReader::new(&s)
        .read_line(&mut answer)
        .map_err(|e| format!("reading the answer: {e}"))?;
    let r: OpenUrlResponse = serde_json::from_str(answer.trim())
        .map_err(|e| format!("agent answered {:?}: {e}", answer.trim()))?;
    if r.success {
        Ok(r)
    } else {
        Err(r
            .browser_error
            .unwrap_or_else(|| "the agent refused the URL".into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_exec_the_command_with_the_arguments() {
        let d = tempfile::tempdir().unwrap();
        let out = d.path().join("out");
        let cmd = vec![
            "sh".to_string(),
            "-c".to_string(),
            format!("printf '%s|' \"$@\" > {}", out.display()),
            "it's".to_string(),
        ];
        let browser = install(&d.path().join("bin"), &cmd).unwrap();
        let st = std::process::Command::new(&browser)
            .arg("https://x/?a=1&b='2'")
            .status()
            .unwrap();
        assert!(st.success());
        assert_eq!(
            std::fs::read_to_string(&out).unwrap(),
            "https://x/?a=1&b='2'|"
        );
    }

    #[test]
    fn the_url_is_picked_from_the_arguments() {
        let a = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            url_arg(&a(&["--new-window", "https://x/y"])),
            Some("https://x/y")
        );
        assert_eq!(url_arg(&a(&["file:///etc/passwd"])), None);
    }
}
