//! Console event lines (`GUESTKIT: {...}`) on stdout: the unit sends stdout to
//! journal+console, so the host sees them on the serial console (failure F4).
//!
//! Without a journal, as the initramfs's init (PID 1, started by guest-netinit) and in its
//! children, each line also goes to the kernel log (`/dev/kmsg`), like guest-netinit's
//! events: the kernel prints it on the console with a kernel timestamp, so the host's boot
//! timeline has kernel time for `agent listening` too, comparable with netinit's `done`.
//! The supervisor passes the path on to its children in [`KMSG_ENV`] (they are not PID 1).
//!
//! Kernel log level (`<N>`, facility user), as netinit's (guest-netinit `report.rs`): errors
//! 3, warnings 4 and `listening` 5, each lowered to stay below `console_loglevel` (4 with
//! `quiet`) so they reach the console; other info lines 6. `/dev/kmsg` rate-limits each open
//! file to 10 records per 5 s, so it is opened per line.

use guest_proto::{Component, ConsoleEvent, Event, Level};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Names the kmsg-like file event lines also go to (set by the supervisor for its children;
/// tests point it at a plain file).
pub const KMSG_ENV: &str = "GUESTKIT_KMSG";
/// The kernel log device.
pub const KMSG: &str = "/dev/kmsg";

/// Prints one event line and flushes (stdout may be a pipe to the supervisor); first to the
/// kernel log when [`kmsg_path`] names one, so the timestamped line reaches the console
/// before any copy the supervisor echoes. As PID 1 with the kernel log, stdout is the same
/// console: the line is not printed twice (but it is when the kernel log refused it, as in a
/// container without `/dev/kmsg`).
pub fn emit(lvl: Level, event: Event) {
    let ev = ConsoleEvent::new(Component::Agent, lvl, event);
    let mut out = std::io::stdout().lock();
    emit_to(&ev, kmsg_path(), std::process::id() == 1, &mut out);
}

/// [`emit`] with its outputs given: `kmsg` (the kernel log, if any), whether we are PID 1,
/// and stdout.
pub fn emit_to(ev: &ConsoleEvent, kmsg: Option<&Path>, pid1: bool, out: &mut dyn Write) {
    let line = ev.to_line();
    if let Some(path) = kmsg {
        if write_kmsg(path, &kmsg_record(ev, &line, console_loglevel())) && pid1 {
            return;
        }
    }
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Where event lines also go: `$GUESTKIT_KMSG` when set, else `/dev/kmsg` when we are PID 1
/// and there is no journal (the initramfs image). Decided once per process.
pub fn kmsg_path() -> Option<&'static Path> {
    static PATH: OnceLock<Option<PathBuf>> = OnceLock::new();
    PATH.get_or_init(|| {
        choose_kmsg(
            std::env::var_os(KMSG_ENV).map(PathBuf::from),
            std::process::id(),
            Path::new(crate::logs::JOURNAL_SOCKET).exists(),
        )
    })
    .as_deref()
}

/// The choice behind [`kmsg_path`], given the environment, our pid and whether a journal
/// socket exists.
pub fn choose_kmsg(env: Option<PathBuf>, pid: u32, journal: bool) -> Option<PathBuf> {
    match env {
        Some(p) if !p.as_os_str().is_empty() => Some(p),
        _ if pid == 1 && !journal => Some(PathBuf::from(KMSG)),
        _ => None,
    }
}

/// One kmsg record: `<facility user + level>GUESTKIT: {...}\n`.
pub fn kmsg_record(ev: &ConsoleEvent, line: &str, console_loglevel: u8) -> String {
    let natural = match (ev.lvl, &ev.event) {
        (Level::Error, _) => 3,
        (Level::Warn, _) => 4,
        (Level::Info, Event::Listening { .. }) => 5,
        (Level::Info, _) => 6,
    };
    let level = if natural == 6 {
        6
    } else {
        natural.min(console_loglevel.saturating_sub(1)).max(1)
    };
    format!("<{}>{line}\n", 8 + u32::from(level))
}

/// The console log level (first field of `/proc/sys/kernel/printk`); 4 (`quiet`) when it
/// cannot be read, so important lines are not lost.
fn console_loglevel() -> u8 {
    static LEVEL: OnceLock<u8> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/printk")
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
            .unwrap_or(4)
    })
}

/// One `write()` per record (one record per write on `/dev/kmsg`); false when the file could
/// not be opened or written (a lost timestamp is not worth failing the agent).
fn write_kmsg(path: &Path, record: &str) -> bool {
    let file = std::fs::OpenOptions::new()
        .append(true)
        .create(!path.starts_with("/dev"))
        .open(path);
    match file {
        Ok(mut f) => f.write_all(record.as_bytes()).is_ok(),
        Err(_) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(lvl: Level, event: Event) -> ConsoleEvent {
        ConsoleEvent::new(Component::Agent, lvl, event)
    }

    fn listening() -> Event {
        Event::Listening {
            addr: "0.0.0.0:8080".into(),
        }
    }

    #[test]
    fn kmsg_only_as_init_without_a_journal_or_when_asked() {
        assert_eq!(choose_kmsg(None, 1, false), Some(PathBuf::from(KMSG)));
        assert_eq!(choose_kmsg(None, 1, true), None);
        assert_eq!(choose_kmsg(None, 4242, false), None);
        assert_eq!(
            choose_kmsg(Some("/tmp/k".into()), 4242, true),
            Some(PathBuf::from("/tmp/k"))
        );
        assert_eq!(choose_kmsg(Some(PathBuf::new()), 4242, false), None);
    }

    #[test]
    fn listening_is_on_the_console_even_under_quiet() {
        let e = ev(Level::Info, listening());
        let line = e.to_line();
        // user facility (8) + notice (5); with quiet (console_loglevel 4): warning (4) is
        // not printed, so it becomes 3.
        assert_eq!(kmsg_record(&e, &line, 7), format!("<13>{line}\n"));
        assert_eq!(kmsg_record(&e, &line, 4), format!("<11>{line}\n"));
        assert!(line.starts_with("GUESTKIT: "), "{line}");
    }

    #[test]
    fn errors_stay_errors_and_other_info_is_info() {
        let crash = ev(
            Level::Error,
            Event::CrashLoop {
                service: "serve".into(),
                restarts: 5,
                last_exit: "exit 1".into(),
            },
        );
        let line = crash.to_line();
        assert_eq!(kmsg_record(&crash, &line, 7), format!("<11>{line}\n"));
        assert_eq!(kmsg_record(&crash, &line, 1), format!("<9>{line}\n"));
        let start = ev(
            Level::Info,
            Event::Start {
                version: "0.1.0".into(),
            },
        );
        let line = start.to_line();
        assert_eq!(kmsg_record(&start, &line, 4), format!("<14>{line}\n"));
    }

    #[test]
    fn as_init_the_line_goes_to_stdout_only_when_the_kernel_log_refuses_it() {
        let dir = tempfile::tempdir().unwrap();
        let kmsg = dir.path().join("kmsg");
        let e = ev(Level::Info, listening());
        let line = e.to_line();

        let mut out = Vec::new();
        emit_to(&e, Some(&kmsg), true, &mut out);
        assert!(out.is_empty(), "PID 1 printed it twice");
        assert!(std::fs::read_to_string(&kmsg).unwrap().contains(&line));

        let mut out = Vec::new();
        emit_to(
            &e,
            Some(&dir.path().join("no/such/dir/kmsg")),
            true,
            &mut out,
        );
        assert_eq!(String::from_utf8(out).unwrap(), format!("{line}\n"));

        let mut out = Vec::new();
        emit_to(&e, Some(&kmsg), false, &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), format!("{line}\n"));
        assert_eq!(
            std::fs::read_to_string(&kmsg)
                .unwrap()
                .matches(&line)
                .count(),
            2
        );

        let mut out = Vec::new();
        emit_to(&e, None, true, &mut out);
        assert_eq!(String::from_utf8(out).unwrap(), format!("{line}\n"));
    }

    #[test]
    fn records_are_appended_one_per_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("kmsg");
        assert!(write_kmsg(&path, "<13>GUESTKIT: a\n"));
        assert!(write_kmsg(&path, "<13>GUESTKIT: b\n"));
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "<13>GUESTKIT: a\n<13>GUESTKIT: b\n"
        );
    }
}
