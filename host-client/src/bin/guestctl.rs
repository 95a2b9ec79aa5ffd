//! `guestctl`: the operator's CLI over host-client — is the VM up, what is it waiting for,
//! why did it fail, which boot args and TAP name does it get, which TAPs are dead.

use anyhow::{anyhow, Context};
use clap::{Parser, Subcommand};
use host_client::bootargs::{static_ip, BootArgs};
use host_client::console::diagnose_reader;
use host_client::firecracker::{ConfigError, Drive, MachineConfig, VmConfig, Vsock};
use host_client::health_diag::{health_findings, unreachable_finding};
use host_client::tap::{self, TAP_PREFIX};
use host_client::wait::WaitOptions;
use host_client::{AgentAddr, GuestClient, Severity};
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// `println!` with the guest's control characters escaped: any line guestctl prints may
/// quote the guest (console lines, `/health` strings, error bodies, session fields), and
/// none of it may reach the operator's terminal raw (DESIGN.md §10). Newlines and tabs stay.
macro_rules! say {
    ($($arg:tt)*) => {
        println!("{}", host_client::text::escape_lines(&format!($($arg)*)))
    };
}

/// [`say!`] on stderr.
macro_rules! tell {
    ($($arg:tt)*) => {
        eprintln!("{}", host_client::text::escape_lines(&format!($($arg)*)))
    };
}

#[path = "guestctl/oauth_cmd.rs"]
mod oauth_cmd;
#[path = "guestctl/print.rs"]
mod print;
#[path = "guestctl/wait_cmd.rs"]
mod wait_cmd;

use print::{print_diagnosis, print_gc, print_health, to_json};

const EXIT_CODES: &str = "\
Exit status:
  0  ok: ready / healthy / nothing wrong found / done
  1  other error (I/O, a TAP that could not be removed, ...)
  2  bad input (arguments, unreadable or malformed files, invalid values)
  3  timeout: the VM was not ready by the deadline
  4  diagnosed failure: the console log shows a fatal error (wait), or an error-level finding (diagnose)
  5  the agent did not answer (health)
  6  the agent answered but is not healthy (health: status is not \"ok\")
  7  the OAuth session ended without credentials (oauth start: failed, expired, cancelled)";

#[derive(Parser)]
#[command(name = "guestctl", version, about = "Drive and diagnose guestkit VMs", after_help = EXIT_CODES)]
struct Cli {
    /// Machine-readable output (JSON; `wait` writes one JSON object per line).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(clap::Args)]
struct Auth {
    /// File holding the agent's bearer token (or set GUESTCTL_TOKEN).
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
}

// Parsed once per run: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Cmd {
    /// GET /health once and show it.
    #[command(after_help = EXIT_CODES)]
    Health {
        /// Agent address: IP[:PORT] (TCP, port 8080 when omitted), vsock:/PATH:PORT (Firecracker's
        /// hybrid vsock: the VM's vsock uds_path and the guest port) or vsock:CID:PORT (AF_VSOCK).
        addr: String,
        /// Request timeout (e.g. 5s, 500ms).
        #[arg(long, default_value = "5s", value_parser = parse_duration)]
        timeout: Duration,
        #[command(flatten)]
        auth: Auth,
    },
    /// Wait until the VM is ready, showing the stages it reaches; fail fast on a fatal console finding.
    ///
    /// With --vsock the agent is also asked over vsock (no guest network needed): ready when it
    /// is ready on either, and when ADDR (TCP) does not answer but the agent says over vsock
    /// that netinit failed, the wait ends at once with that diagnosis (exit 4). With
    /// --ready-socket the line the agent pushes when it is ready is read as it arrives.
    ///
    /// Example (Firecracker, vsock uds_path /run/vm/v.sock, agent defaults: vsock port 8080,
    /// readiness pushed to host port 8081):
    ///   guestctl wait 192.168.100.9:8080 --vsock vsock:/run/vm/v.sock:8080 --ready-socket /run/vm/v.sock_8081
    #[command(after_help = EXIT_CODES, verbatim_doc_comment)]
    Wait {
        /// Agent address: IP[:PORT] (TCP, port 8080 when omitted), vsock:/PATH:PORT (Firecracker's
        /// hybrid vsock: the VM's vsock uds_path and the guest port) or vsock:CID:PORT (AF_VSOCK).
        addr: String,
        /// Also ask the agent here, usually over vsock (vsock:/PATH:PORT or vsock:CID:PORT).
        #[arg(long, value_name = "ADDR")]
        vsock: Option<String>,
        /// Listen on this unix socket for the agent's pushed readiness line: the VM's vsock
        /// uds_path + `_` + the ready port (guest_agent.ready_port=, 8081), e.g. /run/vm/v.sock_8081.
        #[arg(long, value_name = "PATH")]
        ready_socket: Option<PathBuf>,
        /// Give up after this long (e.g. 60s, 2m).
        #[arg(long, default_value = "60s", value_parser = parse_duration)]
        timeout: Duration,
        /// The VM's console log (Firecracker/QEMU serial output file), followed while waiting.
        #[arg(long, value_name = "FILE")]
        console: Option<PathBuf>,
        #[command(flatten)]
        auth: Auth,
    },
    /// Read a console log and say what went wrong and how far the boot got; with --addr also
    /// ask the agent (/health) how the VM is now.
    #[command(after_help = EXIT_CODES)]
    Diagnose {
        /// Console log file (`-` for stdin).
        file: PathBuf,
        /// Also GET /health from the agent (IP[:PORT], vsock:/PATH:PORT or vsock:CID:PORT) and
        /// add what it reports.
        #[arg(long)]
        addr: Option<String>,
        /// Timeout for the /health request.
        #[arg(long, default_value = "2s", value_parser = parse_duration)]
        timeout: Duration,
    },
    /// Build the kernel command line (and the Firecracker config: the boot-source and
    /// network-interfaces fragment, or with --rootfs the whole VM config) from typed values.
    #[command(after_help = EXIT_CODES)]
    Bootargs {
        /// Guest address with prefix length, e.g. 192.168.100.9/24.
        #[arg(long)]
        ip: String,
        /// Gateway, e.g. 192.168.100.1.
        #[arg(long)]
        gw: Option<IpAddr>,
        /// DNS server (at most 2).
        #[arg(long)]
        dns: Vec<IpAddr>,
        #[arg(long)]
        hostname: Option<String>,
        #[arg(long, default_value = "eth0")]
        iface: String,
        #[arg(long, default_value = "ttyS0")]
        console: String,
        /// root= (e.g. /dev/vda).
        #[arg(long)]
        root: Option<String>,
        /// Extra parameter KEY=VALUE or a flag KEY; repeatable.
        #[arg(long, value_name = "K=V")]
        extra: Vec<String>,
        /// Print the Firecracker config as JSON: boot-source and network-interfaces; with
        /// --rootfs also machine-config, drives and vsock (one --config-file document).
        #[arg(long)]
        firecracker: bool,
        /// kernel_image_path for --firecracker.
        #[arg(long, default_value = "vmlinux")]
        kernel: String,
        /// VM id: the TAP name for --firecracker is derived from it.
        #[arg(long)]
        vm_id: Option<String>,
        /// TAP name for --firecracker (instead of --vm-id).
        #[arg(long, conflicts_with = "vm_id")]
        tap: Option<String>,
        /// With --firecracker: the root drive's file; the output is then the whole VM config
        /// (boot-source, network-interfaces, machine-config, drives, vsock) for
        /// `firecracker --config-file`.
        #[arg(long, value_name = "PATH", requires = "firecracker")]
        rootfs: Option<String>,
        /// The root drive is read-only.
        #[arg(long, requires = "rootfs")]
        rootfs_read_only: bool,
        /// vCPUs (machine-config.vcpu_count, 1-32).
        #[arg(long, default_value_t = 2, requires = "rootfs")]
        vcpus: u8,
        /// Memory in MiB (machine-config.mem_size_mib).
        #[arg(long, default_value_t = 512, requires = "rootfs")]
        mem_mib: u32,
        /// What the image needs: a smaller --mem-mib is refused.
        #[arg(long, value_name = "MIB", requires = "rootfs")]
        min_mem_mib: Option<u32>,
        /// vsock.guest_cid (3 or more, unique on the host).
        #[arg(long, value_name = "CID", requires_all = ["rootfs", "vsock_uds"])]
        vsock_cid: Option<u32>,
        /// vsock.uds_path: the host socket of the VM's vsock device (reach the agent with
        /// vsock:PATH:8080; its readiness line arrives on PATH_8081).
        #[arg(long, value_name = "PATH", requires = "vsock_cid")]
        vsock_uds: Option<String>,
        /// A CID already used by another VM on this host (repeatable): --vsock-cid must differ.
        #[arg(long, value_name = "CID")]
        taken_cid: Vec<u32>,
    },
    /// TAP devices: names and cleanup.
    #[command(subcommand)]
    Tap(TapCmd),
    /// OAuth logins in the VM: start, status, cancel, paste a code.
    #[command(subcommand, after_help = EXIT_CODES)]
    Oauth(oauth_cmd::OAuthCmd),
    /// Print (or --out FILE, mode 0600) the credentials of an authenticated OAuth session.
    #[command(after_help = EXIT_CODES)]
    Credentials {
        /// Agent address: IP[:PORT] (TCP, port 8080 when omitted), vsock:/PATH:PORT (Firecracker's
        /// hybrid vsock: the VM's vsock uds_path and the guest port) or vsock:CID:PORT (AF_VSOCK).
        addr: String,
        session_id: String,
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
        #[command(flatten)]
        auth: Auth,
    },
}

#[derive(Subcommand)]
enum TapCmd {
    /// The TAP name for a VM id (≤ 15 chars, collision-free in practice).
    Name { vm_id: String },
    /// List TAP devices and remove the stale ones (no process holds them). Dry run unless --apply.
    #[command(after_help = EXIT_CODES)]
    Gc {
        /// Remove the stale devices.
        #[arg(long)]
        apply: bool,
        /// Only devices whose name starts with this.
        #[arg(long, default_value = TAP_PREFIX)]
        prefix: String,
    },
}

/// An error that is the caller's input: exit 2.
#[derive(Debug)]
struct BadInput(anyhow::Error);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:#}", self.0)
    }
}
impl std::error::Error for BadInput {}

fn bad(e: impl Into<anyhow::Error>) -> anyhow::Error {
    anyhow::Error::new(BadInput(e.into()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            tell!("guestctl: {e:#}");
            ExitCode::from(if e.is::<BadInput>() { 2 } else { 1 })
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<u8> {
    let json = cli.json;
    match cli.cmd {
        Cmd::Health {
            addr,
            timeout,
            auth,
        } => {
            let addr: AgentAddr = addr.parse().map_err(bad)?;
            let client = GuestClient::new(addr.clone())
                .with_token(token(&auth)?)
                .with_timeout(timeout);
            let res = runtime()?.block_on(client.health());
            match res {
                Ok(h) => {
                    if json {
                        say!("{}", to_json(&h, true)?);
                    } else {
                        print_health(&h);
                    }
                    Ok(if h.status == "ok" { 0 } else { 6 })
                }
                Err(e) => {
                    if json {
                        let v = serde_json::json!({"error": e.to_string(), "class": e.class()});
                        say!("{}", to_json(&v, false)?);
                    } else {
                        tell!("guestctl: {addr}: {e}");
                    }
                    Ok(5)
                }
            }
        }
        Cmd::Wait {
            addr,
            vsock,
            ready_socket,
            timeout,
            console,
            auth,
        } => {
            let addr: AgentAddr = addr.parse().map_err(bad)?;
            let vsock: Option<AgentAddr> = vsock.map(|a| a.parse()).transpose().map_err(bad)?;
            let opts = WaitOptions {
                deadline: timeout,
                console,
                token: token(&auth)?,
                vsock,
                ready_socket,
                ..Default::default()
            };
            wait_cmd::wait(addr, &opts, json)
        }
        Cmd::Diagnose {
            file,
            addr,
            timeout,
        } => {
            let addr: Option<AgentAddr> = addr.map(|a| a.parse()).transpose().map_err(bad)?;
            // Streamed: a console log can be as big as the guest made it.
            let mut d = if file.as_os_str() == "-" {
                diagnose_reader(std::io::stdin().lock())?
            } else {
                std::fs::File::open(&file)
                    .and_then(diagnose_reader)
                    .with_context(|| format!("{}", file.display()))
                    .map_err(bad)?
            };
            if let Some(addr) = addr {
                let client = GuestClient::new(addr).with_timeout(timeout);
                match runtime()?.block_on(client.health()) {
                    Ok(h) => d.findings.extend(health_findings(&h)),
                    Err(e) => d.findings.push(unreachable_finding(&e)),
                }
            }
            if json {
                say!("{}", to_json(&d, true)?);
            } else {
                print_diagnosis(&d.findings, &d.timeline);
            }
            let failed = d.findings.iter().any(|f| f.severity >= Severity::Error);
            Ok(if failed { 4 } else { 0 })
        }
        Cmd::Bootargs {
            ip,
            gw,
            dns,
            hostname,
            iface,
            console,
            root,
            extra,
            firecracker,
            kernel,
            vm_id,
            tap,
            rootfs,
            rootfs_read_only,
            vcpus,
            mem_mib,
            min_mem_mib,
            vsock_cid,
            vsock_uds,
            taken_cid,
        } => {
            let ipc = static_ip(&ip, gw, &dns, hostname.as_deref(), Some(&iface)).map_err(bad)?;
            let mut args = BootArgs::new().console(console).ip(ipc);
            if let Some(r) = root {
                args = args.root(r);
            }
            for e in &extra {
                let (k, v) = BootArgs::parse_extra(e).map_err(bad)?;
                args = args.extra(k, v);
            }
            let line = args.build().map_err(bad)?;
            if firecracker {
                let tap = match (tap, vm_id) {
                    (Some(t), _) => t,
                    (None, Some(id)) => tap::tap_name(&id),
                    (None, None) => {
                        return Err(bad(anyhow!(
                            "--firecracker needs --vm-id or --tap (the host TAP device)"
                        )))
                    }
                };
                let frag = match rootfs {
                    None => args.firecracker(&kernel, &tap).map_err(bad)?,
                    Some(path_on_host) => {
                        let vsock = match (vsock_cid, vsock_uds) {
                            (Some(guest_cid), Some(uds_path)) => {
                                if taken_cid.contains(&guest_cid) {
                                    return Err(bad(ConfigError::DuplicateCid {
                                        cid: guest_cid,
                                        first: "--taken-cid".into(),
                                        second: "--vsock-cid".into(),
                                    }));
                                }
                                Some(Vsock {
                                    guest_cid,
                                    uds_path,
                                })
                            }
                            _ => None,
                        };
                        VmConfig {
                            boot_args: args,
                            kernel_image_path: kernel,
                            host_dev_name: tap,
                            machine: MachineConfig {
                                vcpu_count: vcpus,
                                mem_size_mib: mem_mib,
                            },
                            drives: vec![Drive {
                                drive_id: "rootfs".into(),
                                path_on_host,
                                is_root_device: true,
                                is_read_only: rootfs_read_only,
                            }],
                            vsock,
                            min_mem_mib,
                        }
                        .to_json()
                        .map_err(bad)?
                    }
                };
                say!("{}", to_json(&frag, true)?);
            } else if json {
                say!(
                    "{}",
                    to_json(&serde_json::json!({ "boot_args": line }), false)?
                );
            } else {
                say!("{line}");
            }
            Ok(0)
        }
        Cmd::Oauth(c) => oauth_cmd::run(c, json),
        Cmd::Credentials {
            addr,
            session_id,
            out,
            auth,
        } => oauth_cmd::credentials(&addr, &session_id, out, &auth),
        Cmd::Tap(TapCmd::Name { vm_id }) => {
            if vm_id.is_empty() {
                return Err(bad(anyhow!("VMID is empty")));
            }
            let name = tap::tap_name(&vm_id);
            if json {
                let v = serde_json::json!({ "vm_id": vm_id, "name": name });
                say!("{}", to_json(&v, false)?);
            } else {
                say!("{name}");
            }
            Ok(0)
        }
        Cmd::Tap(TapCmd::Gc { apply, prefix }) => {
            let report = tap::gc(
                std::path::Path::new("/sys/class/net"),
                std::path::Path::new("/proc"),
                &prefix,
                apply,
            )?;
            if json {
                say!("{}", to_json(&report, true)?);
            } else {
                print_gc(&report);
            }
            Ok(if report.failed.is_empty() { 0 } else { 1 })
        }
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn token(auth: &Auth) -> anyhow::Result<Option<String>> {
    if let Some(f) = &auth.token_file {
        let t = std::fs::read_to_string(f)
            .with_context(|| format!("token file {}", f.display()))
            .map_err(bad)?;
        return Ok(Some(t.trim().to_string()));
    }
    Ok(std::env::var("GUESTCTL_TOKEN").ok())
}

/// `60s`, `500ms`, `2m`, `1h`, or a plain number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (e.g. 60s, 500ms, 2m)"))?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" | "min" => n * 60.0,
        "h" => n * 3600.0,
        u => return Err(format!("`{s}`: unknown unit `{u}` (use ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| format!("`{s}` is out of range"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("60s"), Ok(Duration::from_secs(60)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
