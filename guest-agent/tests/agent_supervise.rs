//! `guest-agent supervise` for real: children, signals, restarts, env files.

mod common;
use common::*;
use guest_proto::api::ServiceState;
use std::time::Instant;

#[test]
fn kill_9_restarts_the_child_with_a_new_pid() {
    let agent = Agent::start(
        r#"
[services.sleeper]
command = ["sleep", "1000"]
"#,
    );
    let first = agent.wait("sleeper running", |a| {
        a.service("sleeper")
            .filter(|s| s.state == ServiceState::Running)
            .and_then(|s| s.pid)
    });
    let t = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(first as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let s = agent.wait("a new sleeper pid", |a| {
        a.service("sleeper")
            .filter(|s| s.state == ServiceState::Running && s.pid.is_some() && s.pid != Some(first))
    });
    println!(
        "restart after kill -9 visible in state.json after {:?}",
        t.elapsed()
    );
    assert_ne!(s.pid, Some(first));
    assert_eq!(s.restarts, 1);
    assert_eq!(s.last_exit.as_deref(), Some("signal 9 (KILL)"));
    // The old pid is gone (reaped, not a zombie).
    assert!(
        !std::path::Path::new(&format!("/proc/{first}")).exists(),
        "old child not reaped"
    );
}

#[test]
fn a_service_that_exits_at_once_backs_off_into_crash_loop() {
    let agent = Agent::start(
        r#"
[supervisor]
backoff_initial_ms = 10
backoff_max_ms = 300
crash_loop_failures = 4
crash_loop_window_ms = 60000

[services.flaky]
command = ["sh", "-c", "echo about to fail; exit 1"]
"#,
    );
    let s = agent.wait("flaky in crash-loop", |a| {
        a.service("flaky")
            .filter(|s| s.state == ServiceState::CrashLoop)
    });
    assert!(s.restarts >= 4, "{s:?}");
    assert_eq!(s.last_exit.as_deref(), Some("exit 1"));
    let msg = s.message.unwrap_or_default();
    assert!(
        msg.contains("crash loop") && msg.contains("retrying every"),
        "{msg}"
    );
    // It keeps retrying (slowly) and says so on the console.
    let later = agent.wait("another restart", |a| {
        a.service("flaky").filter(|x| x.restarts > s.restarts)
    });
    assert!(later.restarts > s.restarts);
    let ev = agent.wait("a crash-loop console event", |a| {
        a.stdout
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains(r#""ev":"crash-loop""#))
            .cloned()
    });
    let parsed = guest_proto::ConsoleEvent::find_in_line(&ev)
        .unwrap()
        .unwrap();
    match parsed.event {
        guest_proto::Event::CrashLoop {
            service, last_exit, ..
        } => {
            assert_eq!(service, "flaky");
            assert_eq!(last_exit, "exit 1");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_child_that_never_listens_is_killed_by_its_liveness_probe() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let agent = Agent::start(&format!(
        r#"
[services.hung]
command = ["sleep", "1000"]
liveness = {{ http = "http://127.0.0.1:{port}/health", interval_ms = 20, timeout_ms = 200, failures = 3 }}
"#
    ));
    let first = agent.wait("hung running", |a| {
        a.service("hung")
            .filter(|s| s.state == ServiceState::Running)
            .and_then(|s| s.pid)
    });
    let s = agent.wait("a liveness kill", |a| {
        a.service("hung").filter(|s| s.restarts >= 1)
    });
    assert_eq!(s.last_exit.as_deref(), Some("signal 9 (KILL)"), "{s:?}");
    let msg = s.message.unwrap_or_default();
    assert!(
        msg.contains("liveness probe") && msg.contains("3 times") && msg.contains("refused"),
        "{msg}"
    );
    assert!(
        !std::path::Path::new(&format!("/proc/{first}")).exists(),
        "killed child not reaped"
    );
}

#[test]
fn env_files_with_comments_quotes_and_garbage() {
    let dir_env = r#"# /etc/environment with comments (failure F6)
PATH="/usr/local/bin:/usr/bin:/bin"
; semicolon comment

export EXPORTED=yes
QUOTED="a \"quoted\" $value"
SINGLE='single # not a comment'
this line is garbage
SPACED =   padded value   
OVERRIDE=from file
9INVALID=x
CONT=one\
two
"#;
    let agent = Agent::start_with(
        r#"
[services.envdump]
command = ["sh", "-c", "env > {dir}/env.out; sleep 1000"]
env_files = ["{dir}/environment", "{dir}/missing"]
env = { FROM_TABLE = "table wins", OVERRIDE = "from table" }
restart = "never"
"#,
        &[],
        &[("environment", dir_env)],
    );
    let out = agent.wait("env.out", |a| {
        let t = std::fs::read_to_string(a.path("env.out")).ok()?;
        t.contains("FROM_TABLE").then_some(t)
    });
    let get = |k: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(&format!("{k}=")))
            .map(str::to_string)
    };
    assert_eq!(get("EXPORTED").as_deref(), Some("yes"));
    assert_eq!(get("QUOTED").as_deref(), Some("a \"quoted\" $value"));
    assert_eq!(get("SINGLE").as_deref(), Some("single # not a comment"));
    assert_eq!(get("SPACED").as_deref(), Some("padded value"));
    assert_eq!(get("CONT").as_deref(), Some("onetwo"));
    assert_eq!(get("OVERRIDE").as_deref(), Some("from table"));
    assert_eq!(get("FROM_TABLE").as_deref(), Some("table wins"));
    assert!(get("NOTIFY_SOCKET").is_none());
    assert!(out.lines().all(|l| !l.starts_with("9INVALID")));
    // The bad lines are reported with their numbers, and the child still ran.
    let err = agent.wait("env file warnings", |a| {
        let t = a.stderr_text();
        (t.contains("line 11") && t.contains("missing")).then_some(t)
    });
    assert!(err.contains("line 8: expected KEY=VALUE"), "{err}");
    assert!(
        err.contains("line 11:") && err.contains("9INVALID"),
        "{err}"
    );
}

#[test]
fn sigterm_stops_every_child_and_exits_0() {
    let mut agent = Agent::start(
        r#"
[supervisor]
stop_grace_ms = 300

[services.forks]
command = ["sh", "-c", "sleep 1000 & sleep 1000 & wait"]

[services.stubborn]
command = ["sh", "-c", "trap '' TERM; sleep 1000 & wait; sleep 1000"]
"#,
    );
    let pgids: Vec<i32> = agent.wait("both running with their children", |a| {
        let st = a.state()?;
        let pids: Vec<i32> = st
            .services
            .iter()
            .filter_map(|s| s.pid)
            .map(|p| p as i32)
            .collect();
        (pids.len() == 2 && pids.iter().all(|&p| group_members(p).len() >= 2)).then_some(pids)
    });
    assert_eq!(agent.terminate(), Some(0), "{}", agent.stderr_text());
    for pgid in pgids {
        assert_eq!(
            group_members(pgid),
            Vec::<i32>::new(),
            "process group {pgid} survived"
        );
    }
    let st = agent.state().unwrap();
    assert!(
        st.services.iter().all(|s| s.state == ServiceState::Stopped),
        "{st:?}"
    );
}

#[test]
fn a_systemd_unit_without_a_system_bus_is_unknown_with_the_reason() {
    let agent = Agent::start_with_env(
        r#"
[services.xvfb]
systemd_unit = "xvfb.service"
"#,
        &[(
            "DBUS_SYSTEM_BUS_ADDRESS",
            "unix:path=/nonexistent/guest-agent-test-bus",
        )],
    );
    let s = agent.wait("xvfb state message", |a| {
        a.service("xvfb")
            .filter(|s| s.state != ServiceState::Starting)
    });
    assert_eq!(s.state, ServiceState::Unknown);
    assert_eq!(s.systemd_unit.as_deref(), Some("xvfb.service"));
    assert!(s.message.unwrap().contains("no system bus"));
    let err = agent.wait("the warning", |a| {
        let t = a.stderr_text();
        t.contains("no system bus").then_some(t)
    });
    assert_eq!(
        err.matches("no system bus").count(),
        1,
        "said more than once: {err}"
    );
}

#[test]
fn dependants_wait_for_their_dependencies_without_spinning() {
    let agent = Agent::start(
        r#"
[services.app]
command = ["sleep", "1000"]
depends_on = ["db"]

[services.db]
command = ["/nonexistent/guest-agent-test/db"]
restart = "never"

[services.late]
command = ["sleep", "1000"]
depends_on = ["base"]

[services.base]
command = ["sleep", "1000"]
"#,
    );
    let db = agent.wait("db stopped", |a| {
        a.service("db").filter(|s| s.state == ServiceState::Stopped)
    });
    assert_eq!(db.last_exit.as_deref(), Some("spawn failed"));
    assert!(db.message.unwrap_or_default().contains("cannot start"));
    let app = agent.wait("app waiting", |a| {
        a.service("app").filter(|s| s.message.is_some())
    });
    assert_eq!(app.state, ServiceState::Starting);
    assert_eq!(app.pid, None);
    assert_eq!(app.message.as_deref(), Some("waiting for db"));
    // `late` starts once `base` runs, and not before it.
    let (late, base) = agent.wait("late running", |a| {
        let late = a
            .service("late")
            .filter(|s| s.state == ServiceState::Running)?;
        Some((late, a.service("base")?))
    });
    assert!(
        late.since >= base.since,
        "late {} started before base {}",
        late.since,
        base.since
    );
    // Waiting must not busy-loop: the supervisor's CPU time stays small while app waits.
    let pid = agent.child.id();
    let cpu = |p: u32| -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{p}/stat")).unwrap();
        // After `(comm)`: state ppid pgrp session tty tpgid flags minflt cminflt majflt
        // cmajflt utime stime ...
        let f: Vec<String> = stat
            .rsplit_once(')')
            .unwrap()
            .1
            .split_whitespace()
            .map(String::from)
            .collect();
        f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
    };
    let before = cpu(pid);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let used = cpu(pid) - before;
    println!("supervisor CPU while waiting: {used} ticks in 0.5 s");
    assert!(
        used < 25,
        "supervisor used {used} ticks in 0.5 s while a service waited"
    );
}

#[test]
fn console_events_go_to_the_kernel_log_named_in_the_env_and_children_inherit_it() {
    // In the initramfs the supervisor is PID 1 without a journal and picks /dev/kmsg itself;
    // here the same path is taken through GUESTKIT_KMSG, pointed at a plain file.
    let dir = tempfile::tempdir().unwrap();
    let kmsg = dir.path().join("kmsg");
    let mut agent = Agent::start_with_env(
        r#"
[services.serve]
command = ["{bin}", "serve", "--listen", "127.0.0.1:0", "--token-file", "{dir}/token", "--cmdline", "{dir}/cmdline", "--netinit-state", "{dir}/netinit.json"]
required = true
"#,
        &[("GUESTKIT_KMSG", kmsg.to_str().unwrap())],
    );
    let text = agent.wait("the listening record in the kernel log file", |_| {
        let t = std::fs::read_to_string(&kmsg).ok()?;
        t.contains("\"ev\":\"listening\"").then_some(t)
    });
    let addr = text
        .lines()
        .find_map(
            |l| match guest_proto::ConsoleEvent::find_in_line(l)?.ok()?.event {
                guest_proto::Event::Listening { addr } => Some(addr),
                _ => None,
            },
        )
        .unwrap_or_else(|| panic!("no parsable listening record:\n{text}"));
    let records: Vec<&str> = text.lines().collect();
    let start = records
        .iter()
        .position(|l| l.starts_with("<14>GUESTKIT: ") && l.contains("\"ev\":\"start\""))
        .unwrap_or_else(|| panic!("no start record from the supervisor:\n{text}"));
    // notice (5), lowered below the console log level so the console prints it (`quiet`)
    let console_level: u32 = std::fs::read_to_string("/proc/sys/kernel/printk")
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .unwrap_or(4);
    let prefix = format!(
        "<{}>GUESTKIT: ",
        8 + 5.min(console_level.saturating_sub(1)).max(1)
    );
    let listening = records
        .iter()
        .position(|l| {
            l.starts_with(&prefix)
                && l.contains("\"src\":\"agent\"")
                && l.contains(&format!("\"addr\":\"{addr}\""))
        })
        .unwrap_or_else(|| panic!("no listening record from serve (a child):\n{text}"));
    assert!(start < listening, "{text}");
    assert_eq!(agent.terminate(), Some(0));
    // The child wrote its event to the kernel log itself: the supervisor did not echo the
    // stdout copy to the console as well (it would print twice). Checked after exit, when
    // everything the supervisor printed has been read.
    let echoed = agent.stdout.lock().unwrap().join("\n");
    assert!(
        !echoed.contains("\"ev\":\"listening\""),
        "listening echoed on the supervisor's stdout too:\n{echoed}"
    );
}
