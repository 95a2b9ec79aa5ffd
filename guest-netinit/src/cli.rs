//! Command-line arguments (the netinit contract). Hand-written over `std::env::args_os`:
//! clap would add several hundred KiB to a binary that must stay under 2.5 MB, for eight flags.

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

pub const USAGE: &str = "\
usage: guest-netinit [run] [--cmdline FILE] [--template FILE] [--root DIR] [--link-timeout DUR]
                     [--no-probe] [--probe-timeout DUR] [--dhcp-timeout DUR] [--events FILE]
                     [--quiet-human]
       guest-netinit parse 'ip=...' ['nameserver=...' 'rd.route=...' 'guest.NAME=...' ...]
       guest-netinit check --root DIR [--kernel-version V] [--interface IFACE] [--json]
       guest-netinit init [RUN FLAGS] [--console FILE] [-- NEXT-INIT ARGS]   (also: as PID 1)
       guest-netinit --version | --help
Kernel cmdline (run and init): guest_netinit.link_timeout=DUR, guest_netinit.probe=0|1,
guest_netinit.probe_timeout=DUR, guest_netinit.dhcp_timeout=DUR; flags win over them.
DUR: 30s, 500ms, 2 (seconds), at most 24h. Exit codes: 0 ok or nothing to do, 1 internal, 2 usage,
3 bad config, 4 no device, 5 module missing, 6 module load failed, 7 apply failed, 8 files,
9 check found errors, 10 dhcp (no lease and no fallback).";

/// Options of `guest-netinit run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOptions {
    /// `--cmdline FILE`; `None` = `/proc/cmdline`.
    pub cmdline: Option<PathBuf>,
    /// `--template FILE`; `None` = the default paths under ROOT.
    pub template: Option<PathBuf>,
    /// `--root DIR`; `None` = `/` and the kernel hostname is set too.
    pub root: Option<PathBuf>,
    pub link_timeout: Duration,
    pub probe: bool,
    pub probe_timeout: Duration,
    /// `--dhcp-timeout DUR`: how long to wait for a lease before the static fallback.
    pub dhcp_timeout: Duration,
    /// `--events FILE`; `None` = `/dev/kmsg`.
    pub events: Option<PathBuf>,
    pub quiet_human: bool,
    /// How long find-link waits for the interface before looking for a driverless virtio-net
    /// device ([`crate::run::MODULE_GRACE`]; zero in init mode, where no udev loads drivers).
    pub module_grace: Duration,
    /// Which tunables were given as flags: those win over the kernel cmdline's
    /// `guest_netinit.*` parameters (`tuning.rs`).
    pub given: FlagsGiven,
}

/// The tunables set by a command-line flag (not left at their default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FlagsGiven {
    pub link_timeout: bool,
    pub probe: bool,
    pub probe_timeout: bool,
    pub dhcp_timeout: bool,
}

impl Default for RunOptions {
    fn default() -> Self {
        Self {
            cmdline: None,
            template: None,
            root: None,
            link_timeout: Duration::from_secs(30),
            probe: true,
            probe_timeout: Duration::from_secs(1),
            dhcp_timeout: crate::dhcp::DEFAULT_TIMEOUT,
            events: None,
            quiet_human: false,
            module_grace: crate::run::MODULE_GRACE,
            given: FlagsGiven::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Run(RunOptions),
    /// `parse` with its cmdline parameters.
    Parse(Vec<String>),
    /// `check` with its own arguments (parsed by `check::parse_args`).
    Check(Vec<String>),
    /// Init mode with its own arguments (parsed by `init::parse_args`).
    Init(Vec<String>),
    Version,
    Help,
}

/// [`parse_args`] for a process whose pid is `pid`. Started by the kernel as PID 1
/// (`init=/sbin/guest-netinit`), every argument is the kernel's init argument for the next
/// init (init mode): the kernel passes on any word of its command line it does not know, so
/// `help`, `run` or `-h` there must not turn PID 1 into a subcommand that prints and exits
/// (the kernel would panic). Only an explicit leading `init` (a test's or an initramfs
/// script's `guest-netinit init FLAGS -- ARGS`) is read as ours.
pub fn parse_args_for_pid<I: IntoIterator<Item = OsString>>(
    pid: u32,
    args: I,
) -> Result<Command, String> {
    let args: Vec<OsString> = args.into_iter().collect();
    let first = args.first().and_then(|a| a.to_str());
    if pid == 1 && first != Some("init") {
        let mut init = vec!["--".to_string()];
        init.extend(args.iter().map(|a| a.to_string_lossy().into_owned()));
        return Ok(Command::Init(init));
    }
    parse_args(args)
}

/// Parses the arguments after the program name. `Err` is a usage error message (exit 2).
pub fn parse_args<I: IntoIterator<Item = OsString>>(args: I) -> Result<Command, String> {
    let mut args = args
        .into_iter()
        .map(|a| {
            a.into_string()
                .map_err(|a| format!("argument {a:?} is not UTF-8"))
        })
        .collect::<Result<Vec<String>, String>>()?
        .into_iter()
        .peekable();
    match args.peek().map(String::as_str) {
        Some("parse") => {
            args.next();
            let rest: Vec<String> = args.collect();
            if rest.is_empty() {
                return Err("parse: give at least one parameter, e.g. parse 'ip=192.168.100.2::192.168.100.1:255.255.255.0::eth0:off'".into());
            }
            return Ok(Command::Parse(rest));
        }
        Some("check") => {
            args.next();
            return Ok(Command::Check(args.collect()));
        }
        Some("init") => {
            args.next();
            return Ok(Command::Init(args.collect()));
        }
        Some("run") => {
            args.next();
        }
        Some("--version" | "-V") => return Ok(Command::Version),
        Some("--help" | "-h" | "help") => return Ok(Command::Help),
        _ => {}
    }
    let mut o = RunOptions::default();
    while let Some(arg) = args.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            match inline.clone() {
                Some(v) => Ok(v),
                None => args.next().ok_or_else(|| format!("{name} needs a value")),
            }
        };
        match flag.as_str() {
            "--cmdline" => o.cmdline = Some(value("--cmdline")?.into()),
            "--template" => o.template = Some(value("--template")?.into()),
            "--root" => o.root = Some(value("--root")?.into()),
            "--events" => o.events = Some(value("--events")?.into()),
            "--link-timeout" => {
                o.link_timeout = parse_duration(&value("--link-timeout")?)
                    .map_err(|e| format!("--link-timeout: {e}"))?;
                o.given.link_timeout = true;
            }
            "--probe-timeout" => {
                o.probe_timeout = parse_duration(&value("--probe-timeout")?)
                    .map_err(|e| format!("--probe-timeout: {e}"))?;
                o.given.probe_timeout = true;
            }
            "--dhcp-timeout" => {
                o.dhcp_timeout = parse_duration(&value("--dhcp-timeout")?)
                    .map_err(|e| format!("--dhcp-timeout: {e}"))?;
                o.given.dhcp_timeout = true;
            }
            "--no-probe" | "--quiet-human" if inline.is_some() => {
                return Err(format!("{flag} takes no value"))
            }
            "--no-probe" => {
                o.probe = false;
                o.given.probe = true;
            }
            "--quiet-human" => o.quiet_human = true,
            "--version" | "-V" => return Ok(Command::Version),
            "--help" | "-h" => return Ok(Command::Help),
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(Command::Run(o))
}

/// The longest `DUR` accepted.
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// `30s`, `500ms`, `2` (seconds), `1.5s`; at most [`MAX_DURATION`].
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("`{s}` is not a duration (30s, 500ms, 2)");
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else {
        (s, 1.0)
    };
    if num.is_empty() || !num.chars().all(|c| c.is_ascii_digit() || c == '.') {
        return Err(bad());
    }
    let v: f64 = num.parse().map_err(|_| bad())?;
    let d = Duration::try_from_secs_f64(v * scale).map_err(|_| bad())?;
    // Bounded so deadlines (`now + d`) can never overflow an Instant.
    if d > MAX_DURATION {
        return Err(format!("`{s}` is longer than the maximum, 24h"));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Command, String> {
        parse_args(args.iter().map(OsString::from))
    }

    #[test]
    fn defaults_and_every_flag() {
        assert_eq!(p(&[]).unwrap(), Command::Run(RunOptions::default()));
        assert_eq!(p(&["run"]).unwrap(), Command::Run(RunOptions::default()));
        let Command::Run(o) = p(&[
            "run",
            "--cmdline",
            "/c",
            "--template=/t",
            "--root",
            "/r",
            "--link-timeout",
            "500ms",
            "--no-probe",
            "--probe-timeout=2",
            "--dhcp-timeout",
            "1500ms",
            "--events",
            "/e",
            "--quiet-human",
        ])
        .unwrap() else {
            panic!("not run")
        };
        assert_eq!(o.cmdline, Some("/c".into()));
        assert_eq!(o.template, Some("/t".into()));
        assert_eq!(o.root, Some("/r".into()));
        assert_eq!(o.link_timeout, Duration::from_millis(500));
        assert!(!o.probe);
        assert_eq!(o.probe_timeout, Duration::from_secs(2));
        assert_eq!(o.dhcp_timeout, Duration::from_millis(1500));
        assert_eq!(RunOptions::default().dhcp_timeout, Duration::from_secs(5));
        assert_eq!(o.events, Some("/e".into()));
        assert!(o.quiet_human);
        assert_eq!(
            o.given,
            FlagsGiven {
                link_timeout: true,
                probe: true,
                probe_timeout: true,
                dhcp_timeout: true
            }
        );
        let Command::Run(o) = p(&["--link-timeout", "30s"]).unwrap() else {
            panic!("not run")
        };
        assert!(
            o.given.link_timeout,
            "a flag equal to the default still wins"
        );
        assert!(!o.given.probe && !o.given.dhcp_timeout && !o.given.probe_timeout);
    }

    #[test]
    fn parse_and_version() {
        assert_eq!(
            p(&["parse", "ip=dhcp", "nameserver=1.1.1.1"]).unwrap(),
            Command::Parse(vec!["ip=dhcp".into(), "nameserver=1.1.1.1".into()])
        );
        assert!(p(&["parse"]).is_err());
        assert_eq!(
            p(&["check", "--root", "/img", "--json"]).unwrap(),
            Command::Check(vec!["--root".into(), "/img".into(), "--json".into()])
        );
        assert_eq!(p(&["--version"]).unwrap(), Command::Version);
        assert_eq!(p(&["run", "--help"]).unwrap(), Command::Help);
    }

    #[test]
    fn pid_1_is_init_mode_unless_a_command_is_given() {
        let os = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            parse_args_for_pid(1, os(&["single", "--foo"])).unwrap(),
            Command::Init(vec!["--".into(), "single".into(), "--foo".into()])
        );
        assert_eq!(
            parse_args_for_pid(1, os(&[])).unwrap(),
            Command::Init(vec!["--".into()])
        );
        // Stray kernel words that happen to be our subcommands are the next init's too.
        for words in [
            &["run", "--no-probe"][..],
            &["help"],
            &["-h"],
            &["--version"],
            &["parse", "ip=x"],
            &["check"],
        ] {
            let mut expected = vec!["--".to_string()];
            expected.extend(words.iter().map(|w| w.to_string()));
            assert_eq!(
                parse_args_for_pid(1, os(words)).unwrap(),
                Command::Init(expected),
                "{words:?}"
            );
        }
        assert_eq!(
            parse_args_for_pid(1, os(&["init", "--no-probe", "--", "x"])).unwrap(),
            Command::Init(vec!["--no-probe".into(), "--".into(), "x".into()])
        );
        assert_eq!(
            parse_args_for_pid(7, os(&["init", "--", "x"])).unwrap(),
            Command::Init(vec!["--".into(), "x".into()])
        );
        assert!(parse_args_for_pid(7, os(&["single"])).is_err());
    }

    #[test]
    fn usage_errors_name_the_flag() {
        assert!(p(&["--bogus"]).unwrap_err().contains("--bogus"));
        assert!(p(&["--root"]).unwrap_err().contains("--root needs a value"));
        assert!(p(&["--link-timeout", "soon"])
            .unwrap_err()
            .contains("--link-timeout: `soon`"));
        assert!(p(&["--no-probe=1"]).unwrap_err().contains("takes no value"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2").unwrap(), Duration::from_secs(2));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("86400").unwrap(), MAX_DURATION);
        for bad in [
            "",
            "s",
            "ms",
            "-1",
            "1m",
            "abc",
            "1e9999",
            "86401",
            "1000000000000000000s",
        ] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
