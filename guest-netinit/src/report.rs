//! Reporting, three ways at once (DESIGN.md §3 step 7, failure F4):
//! - a human line per step on stdout: `[netinit] find-link   eth0 index 2 (412 µs)`;
//! - `GUESTKIT: {json}` event lines (guest-proto `ConsoleEvent`) to `/dev/kmsg`, so they reach
//!   the serial console by themselves, or to `--events FILE`;
//! - sd_notify `STATUS=` when `NOTIFY_SOCKET` is set (path or abstract `@name` socket).
//!
//! Kernel log level of an event line (`<N>` prefix, facility user): the console prints a record
//! when its level is below `console_loglevel`, the first number of `/proc/sys/kernel/printk`
//! (7 normally, 4 with `quiet`). Errors, warnings (conflicts included) and `done` are written at
//! `min(natural, console_loglevel - 1)` (natural: error 3, warning 4, done 5), never below 1, so
//! they are on the console even under `quiet`; steps and start are info (6): in dmesg and the
//! journal, on the console only without `quiet`. When printk cannot be read, 4 (quiet) is assumed.
//! `/dev/kmsg` rate-limits each open file to 10 records per 5 s, so it is opened per line.

use guest_proto::{Component, ConsoleEvent, Event, Level, NetinitReport, StepReport};
use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

/// Where event lines go.
pub enum EventSink {
    /// `/dev/kmsg` (or another kmsg-like path), opened per line; `console_loglevel` read once.
    Kmsg {
        path: PathBuf,
        console_loglevel: u8,
    },
    /// A plain file or stream (tests, `--events FILE`, stderr fallback): lines without `<N>`.
    Writer(Box<dyn Write>),
    None,
}

impl EventSink {
    /// `--events FILE` or `/dev/kmsg` (falling back to stderr when it is not writable).
    pub fn open(events: Option<&std::path::Path>) -> Self {
        match events {
            Some(p) => match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
            {
                Ok(f) => EventSink::Writer(Box::new(f)),
                Err(_) => EventSink::Writer(Box::new(std::io::stderr())),
            },
            None => {
                let path = PathBuf::from("/dev/kmsg");
                if std::fs::OpenOptions::new().write(true).open(&path).is_ok() {
                    let console_loglevel = std::fs::read_to_string("/proc/sys/kernel/printk")
                        .ok()
                        .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
                        .unwrap_or(4);
                    EventSink::Kmsg {
                        path,
                        console_loglevel,
                    }
                } else {
                    EventSink::Writer(Box::new(std::io::stderr()))
                }
            }
        }
    }

    fn write(&mut self, ev: &ConsoleEvent) {
        let line = ev.to_line();
        match self {
            EventSink::Kmsg {
                path,
                console_loglevel,
            } => {
                let level = kmsg_level(ev, *console_loglevel);
                let record = format!("<{}>{line}\n", 8 + u32::from(level));
                if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open(path) {
                    // One write() is one record; a failed write is not worth failing the boot.
                    let _ = f.write_all(record.as_bytes());
                }
            }
            EventSink::Writer(w) => {
                let _ = writeln!(w, "{line}");
                let _ = w.flush();
            }
            EventSink::None => {}
        }
    }
}

/// The kernel log level for an event line (see the module doc).
pub fn kmsg_level(ev: &ConsoleEvent, console_loglevel: u8) -> u8 {
    let natural = match (ev.lvl, &ev.event) {
        (Level::Error, _) => 3,
        (Level::Warn, _) => 4,
        (Level::Info, Event::Done { .. }) => 5,
        (Level::Info, _) => return 6,
    };
    natural.min(console_loglevel.saturating_sub(1)).max(1)
}

/// sd_notify over the `NOTIFY_SOCKET` datagram socket.
pub struct Notifier {
    sock: std::os::unix::net::UnixDatagram,
    addr: std::os::unix::net::SocketAddr,
}

impl Notifier {
    /// From `NOTIFY_SOCKET`; `None` when unset or unusable (not under systemd).
    pub fn from_env() -> Option<Self> {
        Self::new(&std::env::var_os("NOTIFY_SOCKET")?)
    }

    pub fn new(socket: &std::ffi::OsStr) -> Option<Self> {
        use std::os::unix::ffi::OsStrExt;
        let bytes = socket.as_bytes();
        let addr = match bytes.split_first() {
            Some((b'@', name)) => {
                use std::os::linux::net::SocketAddrExt;
                std::os::unix::net::SocketAddr::from_abstract_name(name).ok()?
            }
            Some((b'/', _)) => std::os::unix::net::SocketAddr::from_pathname(socket).ok()?,
            _ => return None,
        };
        let sock = std::os::unix::net::UnixDatagram::unbound().ok()?;
        Some(Self { sock, addr })
    }

    /// Sends `STATUS=text` (newlines replaced: one status line).
    pub fn status(&self, text: &str) {
        let msg = format!("STATUS={}", text.replace('\n', " "));
        let _ = self.sock.send_to_addr(msg.as_bytes(), &self.addr);
    }
}

/// A report before anything happened: outcome `failed` until `run::finish` says otherwise,
/// so a state file written after a crash never claims success.
pub fn blank_report(started_at_ms: u64) -> NetinitReport {
    NetinitReport {
        version: env!("CARGO_PKG_VERSION").into(),
        outcome: guest_proto::Outcome::Failed,
        started_at_ms,
        duration_us: 0,
        interface: None,
        source: None,
        addresses: vec![],
        gateway: None,
        routes: vec![],
        dns: vec![],
        search_domains: vec![],
        mtu: None,
        mac: None,
        hostname: None,
        modules_loaded: vec![],
        conflicts: vec![],
        steps: vec![],
        probe: None,
        warnings: vec![],
        error: None,
        handoff_path: None,
        dhcp: None,
    }
}

/// Longest free text in one event line. `/dev/kmsg` cuts a record at 1 KiB, which would leave
/// unparsable JSON; the report (`state.json`) keeps the full text.
pub const CLIP: usize = 600;

/// `s` cut to at most `max` bytes at a character boundary, `…` marking the cut.
pub fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// `412 µs`, `1.83 ms`, `2.10 s`.
pub fn fmt_duration(d: Duration) -> String {
    let us = d.as_micros();
    if us < 1000 {
        format!("{us} µs")
    } else if us < 1_000_000 {
        format!("{:.2} ms", us as f64 / 1000.0)
    } else {
        format!("{:.2} s", us as f64 / 1e6)
    }
}

/// Collects the run's report and emits every line as it happens.
pub struct Reporter {
    human: Option<Box<dyn Write>>,
    events: EventSink,
    notify: Option<Notifier>,
    pub report: NetinitReport,
}

impl Reporter {
    pub fn new(
        human: Option<Box<dyn Write>>,
        events: EventSink,
        notify: Option<Notifier>,
        report: NetinitReport,
    ) -> Self {
        Self {
            human,
            events,
            notify,
            report,
        }
    }

    fn human(&mut self, tag: &str, text: &str) {
        if let Some(w) = self.human.as_mut() {
            let _ = writeln!(w, "[netinit] {tag:<11} {text}");
            let _ = w.flush();
        }
    }

    pub fn event(&mut self, lvl: Level, event: Event) {
        self.events
            .write(&ConsoleEvent::new(Component::Netinit, lvl, event));
    }

    pub fn status(&mut self, text: &str) {
        if let Some(n) = &self.notify {
            n.status(text);
        }
    }

    /// A finished step: human line, event line, entry in the report.
    pub fn step(&mut self, name: &str, ok: bool, took: Duration, detail: &str) {
        let duration_us = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.human(name, &format!("{detail} ({})", fmt_duration(took)));
        self.event(
            if ok { Level::Info } else { Level::Error },
            Event::Step {
                step: name.into(),
                ok,
                duration_us,
                detail: clip(detail, CLIP),
            },
        );
        self.report.steps.push(StepReport {
            name: name.into(),
            ok,
            duration_us,
            detail: detail.into(),
        });
    }

    pub fn warning(&mut self, message: &str) {
        self.human("warning", message);
        self.event(
            Level::Warn,
            Event::Warning {
                message: clip(message, CLIP),
            },
        );
        self.report.warnings.push(message.into());
    }

    pub fn conflict(&mut self, c: guest_proto::Conflict) {
        let path = c
            .path
            .as_deref()
            .map(|p| format!(" {p}"))
            .unwrap_or_default();
        self.human(
            "conflict",
            &format!("{}{path}: {} → {}", c.source, c.detail, c.resolution),
        );
        self.event(
            Level::Warn,
            Event::Conflict {
                source: c.source.clone(),
                path: c.path.as_deref().map(|p| clip(p, 200)),
                detail: clip(&c.detail, 300),
                resolution: clip(&c.resolution, 250),
            },
        );
        self.report.conflicts.push(c);
    }

    /// A line for the human log only (e.g. the final summary).
    pub fn say(&mut self, tag: &str, text: &str) {
        self.human(tag, text);
    }
}

#[cfg(test)]
#[path = "report_tests.rs"]
mod tests;
