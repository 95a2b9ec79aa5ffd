//! The agent as PID 1 never returns (issue 12, item 9): run for real as the init of a new PID
//! namespace (`unshare --pid --fork`, as root; CI is root), it ends every way out — SIGTERM, a
//! bad config — with a console event and a power-off. In a PID namespace the kernel turns
//! `reboot(RB_POWER_OFF)` by the namespace's init into SIGINT for it, which `unshare` passes
//! on: before the fix the agent simply exited (status 0 or 1), which as a VM's PID 1 is a
//! kernel panic. Event lines go to a file through `GUESTKIT_KMSG`, never the host's kernel log.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Starts `guest-agent ARGS` as PID 1 of new PID and mount namespaces (own /proc).
fn start_as_pid1(dir: &Path, args: &[&str]) -> Child {
    Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(env!("CARGO_BIN_EXE_guest-agent"))
        .args(args)
        .env("GUESTKIT_KMSG", dir.join("kmsg"))
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("unshare")
}

/// The agent's pid as the host sees it: unshare's only child.
fn agent_pid(unshare: &Child) -> i32 {
    let path = format!("/proc/{0}/task/{0}/children", unshare.id());
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(pid) = std::fs::read_to_string(&path)
            .ok()
            .and_then(|t| t.split_whitespace().next().and_then(|p| p.parse().ok()))
        {
            return pid;
        }
        assert!(Instant::now() < end, "unshare started no child");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_exit(child: &mut Child, limit: Duration) -> ExitStatus {
    let end = Instant::now() + limit;
    loop {
        if let Some(s) = child.try_wait().expect("try_wait") {
            return s;
        }
        if Instant::now() > end {
            let _ = child.kill();
            panic!("the agent as PID 1 did not end within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_for(path: &Path, needle: &str) -> String {
    let end = Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < end,
            "no `{needle}` in {}:\n{text}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn config(dir: &Path, text: &str) -> String {
    let p = dir.join("config.toml");
    std::fs::write(&p, text).expect("write config");
    p.display().to_string()
}

#[test]
fn sigterm_to_the_agent_as_pid1_stops_the_services_and_powers_off() {
    let d = tempfile::tempdir().expect("tempdir");
    let cfg = config(
        d.path(),
        "[services.sleeper]\ncommand = [\"sleep\", \"1000\"]\n",
    );
    let state = d.path().join("state");
    let state = state.display().to_string();
    // `help` first: a stray word the kernel passes to init; it is dropped with a warning.
    let mut child = start_as_pid1(
        d.path(),
        &["help", "supervise", "--config", &cfg, "--state-dir", &state],
    );
    let pid = agent_pid(&child);
    wait_for(&d.path().join("state/state.json"), "\"running\"");
    let kmsg = std::fs::read_to_string(d.path().join("kmsg")).unwrap_or_default();
    assert!(
        kmsg.contains("ignoring init arguments that are not ours: help"),
        "{kmsg}"
    );
    // SAFETY: signalling the agent this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let status = wait_exit(&mut child, Duration::from_secs(20));
    assert_eq!(
        status.signal(),
        Some(libc::SIGINT),
        "PID 1 must power off, not exit: {status:?}"
    );
    let kmsg = std::fs::read_to_string(d.path().join("kmsg")).unwrap_or_default();
    assert!(
        kmsg.contains("stopped (SIGTERM or SIGINT); powering off"),
        "{kmsg}"
    );
}

#[test]
fn a_bad_config_as_pid1_is_said_on_the_console_then_power_off() {
    let d = tempfile::tempdir().expect("tempdir");
    let cfg = config(d.path(), "[services.serve]\ncommand = 42\n");
    let state = d.path().join("state").display().to_string();
    let mut child = start_as_pid1(
        d.path(),
        &["supervise", "--config", &cfg, "--state-dir", &state],
    );
    let status = wait_exit(&mut child, Duration::from_secs(20));
    assert_eq!(status.signal(), Some(libc::SIGINT), "{status:?}");
    let kmsg = std::fs::read_to_string(d.path().join("kmsg")).unwrap_or_default();
    let line = kmsg
        .lines()
        .find(|l| l.contains("\"failed\"") || l.contains("guest-agent (PID 1)"))
        .unwrap_or_else(|| panic!("no failure event:\n{kmsg}"));
    assert!(
        line.contains(&cfg),
        "the event should name the config file: {line}"
    );
    assert!(line.contains("powering off"), "{line}");
    // An error level record: the console shows it even under `quiet`.
    assert!(
        line.starts_with("<11>") || line.starts_with("<9>") || line.starts_with("<10>"),
        "{line}"
    );
}
