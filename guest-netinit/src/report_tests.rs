use super::*;
use crate::test_support::{empty_report, Buf};
use guest_proto::Conflict;

fn ev(lvl: Level, event: Event) -> ConsoleEvent {
    ConsoleEvent::new(Component::Netinit, lvl, event)
}

#[test]
fn kmsg_levels_stay_visible_under_quiet() {
    let err = ev(
        Level::Error,
        Event::Warning {
            message: "x".into(),
        },
    );
    let warn = ev(
        Level::Warn,
        Event::Warning {
            message: "x".into(),
        },
    );
    let done = ev(
        Level::Info,
        Event::Done {
            interface: None,
            addresses: vec![],
            duration_us: 1,
        },
    );
    let step = ev(
        Level::Info,
        Event::Step {
            step: "apply".into(),
            ok: true,
            duration_us: 1,
            detail: String::new(),
        },
    );
    // default console_loglevel 7: natural levels
    assert_eq!(
        (
            kmsg_level(&err, 7),
            kmsg_level(&warn, 7),
            kmsg_level(&done, 7),
            kmsg_level(&step, 7)
        ),
        (3, 4, 5, 6)
    );
    // quiet (4): everything important at 3, which the console prints (3 < 4)
    assert_eq!(
        (
            kmsg_level(&err, 4),
            kmsg_level(&warn, 4),
            kmsg_level(&done, 4),
            kmsg_level(&step, 4)
        ),
        (3, 3, 3, 6)
    );
    // loglevel=1: clamped at 1, never 0 (emergency)
    assert_eq!(kmsg_level(&err, 1), 1);
    assert_eq!(kmsg_level(&done, 0), 1);
}

#[test]
fn durations_are_human() {
    assert_eq!(fmt_duration(Duration::from_micros(412)), "412 µs");
    assert_eq!(fmt_duration(Duration::from_micros(1830)), "1.83 ms");
    assert_eq!(fmt_duration(Duration::from_millis(2100)), "2.10 s");
}

#[test]
fn reporter_writes_human_lines_events_and_the_report() {
    let (human, events) = (Buf::default(), Buf::default());
    let mut r = Reporter::new(
        Some(Box::new(human.clone())),
        EventSink::Writer(Box::new(events.clone())),
        None,
        empty_report(),
    );
    r.step(
        "find-link",
        true,
        Duration::from_micros(412),
        "eth0 index 2",
    );
    r.warning("gateway silent");
    r.conflict(Conflict {
        source: "netplan".into(),
        path: Some("/etc/netplan/a.yaml".into()),
        detail: "d".into(),
        resolution: "r".into(),
    });
    let h = human.text();
    assert!(
        h.starts_with("[netinit] find-link   eth0 index 2 (412 µs)\n"),
        "{h}"
    );
    assert!(h.contains("[netinit] warning     gateway silent\n"), "{h}");
    assert!(
        h.contains("[netinit] conflict    netplan /etc/netplan/a.yaml: d → r\n"),
        "{h}"
    );
    let lines: Vec<ConsoleEvent> = events
        .text()
        .lines()
        .map(|l| ConsoleEvent::find_in_line(l).unwrap().unwrap())
        .collect();
    assert_eq!(lines.len(), 3);
    assert_eq!(
        lines[0].event,
        Event::Step {
            step: "find-link".into(),
            ok: true,
            duration_us: 412,
            detail: "eth0 index 2".into()
        }
    );
    assert_eq!(lines[1].lvl, Level::Warn);
    assert!(matches!(lines[2].event, Event::Conflict { .. }));
    assert_eq!(r.report.steps.len(), 1);
    assert_eq!(r.report.warnings, vec!["gateway silent".to_string()]);
    assert_eq!(r.report.conflicts.len(), 1);
}

#[test]
fn kmsg_sink_writes_one_prefixed_record_per_event() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("kmsg");
    std::fs::write(&path, "").unwrap();
    let mut sink = EventSink::Kmsg {
        path: path.clone(),
        console_loglevel: 4,
    };
    sink.write(&ev(
        Level::Error,
        Event::NoDevice {
            interface: "eth0".into(),
            waited_ms: 30000,
        },
    ));
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("<11>GUESTKIT: {"), "{text}");
    assert!(text.ends_with("}\n") && text.lines().count() == 1, "{text}");
}

#[test]
fn sd_notify_status_reaches_path_and_abstract_sockets() {
    let d = tempfile::tempdir().unwrap();
    let path = d.path().join("notify");
    let server = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    Notifier::new(path.as_os_str())
        .unwrap()
        .status("eth0\nconfigured");
    let mut buf = [0u8; 256];
    let n = server.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STATUS=eth0 configured");

    use std::os::linux::net::SocketAddrExt;
    let name = format!("guest-netinit-test-{}", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let server = std::os::unix::net::UnixDatagram::bind_addr(&addr).unwrap();
    Notifier::new(std::ffi::OsStr::new(&format!("@{name}")))
        .unwrap()
        .status("x");
    let n = server.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"STATUS=x");

    assert!(Notifier::new(std::ffi::OsStr::new("relative")).is_none());
}

#[test]
fn long_texts_are_clipped_in_events_but_kept_in_the_report() {
    assert_eq!(clip("abc", 3), "abc");
    assert_eq!(clip("abcdef", 5), "ab…");
    assert_eq!(clip("ééé", 5), "é…"); // never splits a character
    assert_eq!(clip("ééé", 4), "…");
    let events = Buf::default();
    let mut r = Reporter::new(
        None,
        EventSink::Writer(Box::new(events.clone())),
        None,
        empty_report(),
    );
    let long = "x".repeat(5000);
    r.warning(&long);
    r.conflict(Conflict {
        source: "networkd".into(),
        path: Some(long.clone()),
        detail: long.clone(),
        resolution: long.clone(),
    });
    r.step("apply", false, Duration::from_micros(1), &long);
    for line in events.text().lines() {
        assert!(line.len() < 900, "{} bytes", line.len());
        assert!(ConsoleEvent::find_in_line(line).unwrap().is_ok());
    }
    assert_eq!(r.report.warnings[0].len(), 5000);
    assert_eq!(r.report.conflicts[0].detail.len(), 5000);
}
