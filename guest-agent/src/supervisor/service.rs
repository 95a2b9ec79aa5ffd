//! One task per child service: wait for dependencies, start the child in its own process
//! group, watch it (exit, liveness probe, restart request, shutdown), then decide with
//! [`Backoff`] when to start it again.

use super::probe;
use super::reaper::ExitInfo;
use super::{Shared, Slot};
use crate::backoff::{Backoff, BackoffPolicy};
use crate::config::{Liveness, RestartPolicy, Run};
use crate::envfile;
use crate::logs;
use guest_proto::api::{LogLine, LogStream, ServiceState};
use guest_proto::{Event, Level};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{mpsc, oneshot};

/// Why the child stopped, as far as we caused it.
enum Cause {
    Exited,
    Liveness(String),
    Manual,
    Shutdown,
}

/// Runs one service until shutdown.
pub async fn run(shared: Arc<Shared>, slot: Arc<Slot>, mut restart_rx: mpsc::Receiver<()>) {
    let Run::Command { argv, .. } = &slot.spec.run else {
        return;
    };
    let s = &shared.settings;
    let mut backoff = Backoff::new(BackoffPolicy {
        initial: s.backoff_initial,
        max: s.backoff_max,
        crash_loop_failures: s.crash_loop_failures,
        window: s.crash_loop_window,
        healthy_after: s.healthy_after,
        jitter: 0.2,
    });
    let mut shutdown = shared.shutdown.clone();
    let mut in_crash_loop = false;
    loop {
        if !wait_for_dependencies(&shared, &slot).await {
            break;
        }
        let started = Instant::now();
        let (pid, exit_rx) = match spawn(&shared, &slot) {
            Ok(x) => x,
            Err(e) => {
                let msg = format!("cannot start `{}`: {e}", argv[0]);
                tracing::error!(service = %slot.spec.name, "{msg}");
                log_line(&slot, LogStream::Stderr, format!("guest-agent: {msg}"));
                let delay = after_exit(
                    &shared,
                    &slot,
                    &mut backoff,
                    &mut in_crash_loop,
                    None,
                    true,
                    started,
                    msg,
                );
                if !pause(&mut shutdown, &mut restart_rx, delay).await {
                    break;
                }
                continue;
            }
        };
        shared.update(&slot, |st| {
            st.state = ServiceState::Running;
            st.pid = Some(pid);
            st.since = SystemTime::now();
            // Keep why it was last restarted visible while it runs again.
            st.message = match (&st.message, in_crash_loop) {
                (Some(m), true) => Some(format!("running, but crash-looping; last: {m}")),
                (Some(m), false) if st.restarts > 0 => Some(format!("running again after: {m}")),
                _ => None,
            };
        });
        tracing::info!(service = %slot.spec.name, pid, "started");

        let pgid = Pid::from_raw(pid as i32);
        let mut exit_rx = exit_rx;
        let cause;
        let exit = tokio::select! {
            r = &mut exit_rx => { cause = Cause::Exited; r.unwrap_or(ExitInfo::Signal(9)) }
            why = liveness_failed(slot.spec.liveness.as_ref()) => {
                tracing::warn!(service = %slot.spec.name, "{why}; killing process group {pid}");
                let _ = killpg(pgid, Signal::SIGKILL);
                cause = Cause::Liveness(why);
                (&mut exit_rx).await.unwrap_or(ExitInfo::Signal(9))
            }
            Some(()) = restart_rx.recv() => {
                cause = Cause::Manual;
                stop_group(pgid, &mut exit_rx, shared.settings.stop_grace).await
            }
            _ = shutting_down(&mut shutdown) => {
                cause = Cause::Shutdown;
                stop_group(pgid, &mut exit_rx, shared.settings.stop_grace).await
            }
        };
        // Whatever the main process left in its group goes with it.
        let _ = killpg(pgid, Signal::SIGKILL);
        let ran = started.elapsed();
        tracing::info!(service = %slot.spec.name, pid, status = %exit, ran_ms = ran.as_millis() as u64, "exited");
        match cause {
            Cause::Shutdown => {
                super::wait_group_gone(pgid.as_raw(), Duration::from_secs(2)).await;
                shared.update(&slot, |st| {
                    st.state = ServiceState::Stopped;
                    st.pid = None;
                    st.last_exit = Some(exit.to_string());
                    st.since = SystemTime::now();
                    st.message = Some("supervisor shutting down".into());
                });
                break;
            }
            Cause::Manual => {
                backoff.reset();
                in_crash_loop = false;
                shared.update(&slot, |st| {
                    st.state = ServiceState::Starting;
                    st.pid = None;
                    st.restarts += 1;
                    st.last_exit = Some(exit.to_string());
                    st.since = SystemTime::now();
                    st.message = Some("restarted on request".into());
                });
            }
            Cause::Exited | Cause::Liveness(_) => {
                let (failed, msg) = match cause {
                    Cause::Liveness(why) => (true, format!("{why}; killed ({exit})")),
                    _ => (!exit.success(), format!("exited: {exit}")),
                };
                let delay = after_exit(
                    &shared,
                    &slot,
                    &mut backoff,
                    &mut in_crash_loop,
                    Some(exit),
                    failed,
                    started,
                    msg,
                );
                if !pause(&mut shutdown, &mut restart_rx, delay).await {
                    break;
                }
            }
        }
    }
    shared.update(&slot, |st| {
        if st.state != ServiceState::Stopped {
            st.state = ServiceState::Stopped;
            st.pid = None;
            st.since = SystemTime::now();
        }
    });
}

/// Records an exit and returns how long to wait before the next start; `Duration::MAX`
/// when the restart policy says stay stopped (only a restart request starts it again).
#[allow(clippy::too_many_arguments)]
fn after_exit(
    shared: &Shared,
    slot: &Slot,
    backoff: &mut Backoff,
    in_crash_loop: &mut bool,
    exit: Option<ExitInfo>,
    failed: bool,
    started: Instant,
    msg: String,
) -> Duration {
    let restart = match slot.spec.restart {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => failed,
        RestartPolicy::Never => false,
    };
    let last_exit = exit
        .map(|e| e.to_string())
        .unwrap_or_else(|| "spawn failed".into());
    if !restart {
        shared.update(slot, |st| {
            st.state = ServiceState::Stopped;
            st.pid = None;
            st.last_exit = Some(last_exit.clone());
            st.since = SystemTime::now();
            st.message = Some(format!("{msg}; restart policy says stay stopped"));
        });
        return Duration::MAX;
    }
    let d = backoff.on_exit(Instant::now(), started.elapsed(), failed, fastrand::f64());
    let mut restarts = 0;
    shared.update(slot, |st| {
        st.restarts += 1;
        restarts = st.restarts;
        st.state = if d.crash_loop {
            ServiceState::CrashLoop
        } else if d.delay.is_zero() {
            ServiceState::Starting
        } else {
            ServiceState::Backoff
        };
        st.pid = None;
        st.last_exit = Some(last_exit.clone());
        st.since = SystemTime::now();
        st.message = Some(if d.crash_loop {
            format!(
                "{msg}; crash loop: {} failures within {} s, retrying every {} ms",
                backoff.recent_failures(),
                shared.settings.crash_loop_window.as_secs(),
                d.delay.as_millis()
            )
        } else {
            format!("{msg}; restarting in {} ms", d.delay.as_millis())
        });
    });
    if d.crash_loop && !*in_crash_loop {
        tracing::error!(service = %slot.spec.name, restarts, last_exit = %last_exit, "entered crash loop");
        crate::console::emit(
            Level::Error,
            Event::CrashLoop {
                service: slot.spec.name.clone(),
                restarts,
                last_exit,
            },
        );
    }
    *in_crash_loop = d.crash_loop;
    d.delay
}

/// Sleeps `delay` (`Duration::MAX`: until asked); a restart request cuts it short.
/// `false` when shutting down.
async fn pause(
    shutdown: &mut tokio::sync::watch::Receiver<bool>,
    restart_rx: &mut mpsc::Receiver<()>,
    delay: Duration,
) -> bool {
    let sleep = async {
        if delay == Duration::MAX {
            std::future::pending::<()>().await
        } else {
            tokio::time::sleep(delay).await
        }
    };
    tokio::select! {
        _ = sleep => true,
        Some(()) = restart_rx.recv() => true,
        _ = shutting_down(shutdown) => false,
    }
}

/// Waits until every `depends_on` service runs. `false` on shutdown.
async fn wait_for_dependencies(shared: &Shared, slot: &Slot) -> bool {
    let mut changed = shared.changed.subscribe();
    let mut shutdown = shared.shutdown.clone();
    loop {
        if *shutdown.borrow() {
            return false;
        }
        let waiting: Vec<&str> = slot
            .spec
            .depends_on
            .iter()
            .filter(|d| !dependency_met(shared, d))
            .map(|d| d.as_str())
            .collect();
        if waiting.is_empty() {
            return true;
        }
        let msg = format!("waiting for {}", waiting.join(", "));
        // Only a real change is published: our own update would otherwise wake us again.
        if slot.snapshot().message.as_deref() != Some(msg.as_str()) {
            shared.update(slot, |st| {
                st.state = ServiceState::Starting;
                st.message = Some(msg.clone());
            });
        }
        tokio::select! {
            _ = changed.changed() => {}
            _ = shutdown.changed() => {}
        }
    }
}

/// A dependency is met when it runs, or when it is a systemd unit whose state cannot be
/// known (no system bus): not knowing must not keep the dependants down for ever.
fn dependency_met(shared: &Shared, name: &str) -> bool {
    let Some(dep) = shared.slot(name) else {
        return true;
    };
    match dep.snapshot().state {
        ServiceState::Running => true,
        ServiceState::Unknown => matches!(dep.spec.run, Run::SystemdUnit(_)),
        _ => false,
    }
}

/// Starts the child: own process group, stdin from /dev/null, output piped to the log pumps.
fn spawn(
    shared: &Arc<Shared>,
    slot: &Arc<Slot>,
) -> Result<(u32, oneshot::Receiver<ExitInfo>), String> {
    let Run::Command {
        argv,
        env,
        env_files,
        working_dir,
    } = &slot.spec.run
    else {
        return Err("not a command".into());
    };
    let mut cmd = std::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID");
    for file in env_files {
        match std::fs::read_to_string(file) {
            Ok(text) => {
                let parsed = envfile::parse(&text);
                for e in &parsed.errors {
                    let msg = format!("{}: {e} (line skipped)", file.display());
                    tracing::warn!(service = %slot.spec.name, "env file {msg}");
                    log_line(
                        slot,
                        LogStream::Stderr,
                        format!("guest-agent: env file {msg}"),
                    );
                }
                cmd.envs(parsed.vars);
            }
            Err(e) => {
                let msg = format!("env file {}: {e} (ignored)", file.display());
                tracing::warn!(service = %slot.spec.name, "{msg}");
                log_line(slot, LogStream::Stderr, format!("guest-agent: {msg}"));
            }
        }
    }
    cmd.envs(env);
    cmd.envs(shared.extra_env.iter().map(|(k, v)| (k, v)));
    if let Some(dir) = working_dir {
        cmd.current_dir(dir);
    }
    let (mut child, rx) = shared.reaper.spawn(&mut cmd).map_err(|e| e.to_string())?;
    let pid = child.id();
    for (pipe, stream) in [
        (
            child.stdout.take().map(std::os::fd::OwnedFd::from),
            LogStream::Stdout,
        ),
        (
            child.stderr.take().map(std::os::fd::OwnedFd::from),
            LogStream::Stderr,
        ),
    ] {
        let Some(fd) = pipe else { continue };
        match tokio::net::unix::pipe::Receiver::from_owned_fd(fd) {
            Ok(rx) => {
                tokio::spawn(logs::pump(
                    rx,
                    slot.spec.name.clone(),
                    pid,
                    stream,
                    slot.logs.clone(),
                    shared.sink.clone(),
                ));
            }
            Err(e) => tracing::warn!(service = %slot.spec.name, "cannot read child output: {e}"),
        }
    }
    Ok((pid, rx))
}

fn log_line(slot: &Slot, stream: LogStream, line: String) {
    let entry = LogLine {
        timestamp: crate::state::rfc3339(SystemTime::now()),
        stream,
        line,
    };
    slot.logs
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .push(entry);
}

/// TERM to the group, KILL after `grace`; returns the main process's exit.
async fn stop_group(
    pgid: Pid,
    exit_rx: &mut oneshot::Receiver<ExitInfo>,
    grace: Duration,
) -> ExitInfo {
    let _ = killpg(pgid, Signal::SIGTERM);
    match tokio::time::timeout(grace, &mut *exit_rx).await {
        Ok(r) => r.unwrap_or(ExitInfo::Signal(9)),
        Err(_) => {
            tracing::warn!(
                pgid = pgid.as_raw(),
                "still running {} ms after TERM; KILL",
                grace.as_millis()
            );
            let _ = killpg(pgid, Signal::SIGKILL);
            exit_rx.await.unwrap_or(ExitInfo::Signal(9))
        }
    }
}

/// Resolves when the probe has failed `failures` times in a row; never without a probe.
async fn liveness_failed(l: Option<&Liveness>) -> String {
    let Some(l) = l else {
        return std::future::pending().await;
    };
    tokio::time::sleep(l.initial_delay).await;
    let mut fails = 0;
    loop {
        tokio::time::sleep(l.interval).await;
        match probe::http_get_ok(&l.url, l.timeout).await {
            Ok(()) => fails = 0,
            Err(e) => {
                fails += 1;
                if fails >= l.failures {
                    return format!(
                        "liveness probe {} failed {fails} times in a row ({e})",
                        l.url
                    );
                }
            }
        }
    }
}

/// Resolves once shutdown is requested (the `Ref` that `wait_for` returns is dropped here,
/// so callers' futures stay `Send`).
async fn shutting_down(rx: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|s| *s).await;
}
