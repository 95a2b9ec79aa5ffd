//! Child reaping: one `waitpid(-1)` loop driven by SIGCHLD, so every zombie is reaped,
//! including grandchildren that were re-parented to us (we are a child subreaper), and
//! each exit status goes to the task that spawned that pid.
//!
//! Spawning happens under the same lock as reaping, so a child that exits at once cannot
//! be reaped before its pid is registered.

use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// How a process ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitInfo {
    Code(i32),
    Signal(i32),
}

impl ExitInfo {
    pub fn success(self) -> bool {
        self == ExitInfo::Code(0)
    }
}

impl std::fmt::Display for ExitInfo {
    /// `exit 1`, `signal 9 (KILL)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            ExitInfo::Code(c) => write!(f, "exit {c}"),
            ExitInfo::Signal(s) => match nix::sys::signal::Signal::try_from(s) {
                Ok(sig) => write!(f, "signal {s} ({})", sig.as_str().trim_start_matches("SIG")),
                Err(_) => write!(f, "signal {s}"),
            },
        }
    }
}

type Waiters = HashMap<i32, oneshot::Sender<ExitInfo>>;

/// Shared handle: spawn through it, and run [`Reaper::run`] once.
#[derive(Clone, Default)]
pub struct Reaper {
    waiters: Arc<Mutex<Waiters>>,
}

impl Reaper {
    /// Makes this process a child subreaper so orphaned grandchildren come back to us.
    pub fn become_subreaper() -> nix::Result<()> {
        nix::sys::prctl::set_child_subreaper(true)
    }

    /// Spawns `cmd` and registers its pid; the receiver yields its exit.
    pub fn spawn(
        &self,
        cmd: &mut std::process::Command,
    ) -> std::io::Result<(std::process::Child, oneshot::Receiver<ExitInfo>)> {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        let child = cmd.spawn()?;
        let (tx, rx) = oneshot::channel();
        waiters.insert(child.id() as i32, tx);
        Ok((child, rx))
    }

    /// Reaps on every SIGCHLD until the process ends.
    pub async fn run(self) -> std::io::Result<()> {
        let mut sigchld = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::child())?;
        loop {
            self.reap_all();
            sigchld.recv().await;
        }
    }

    fn reap_all(&self) {
        let mut waiters = self.waiters.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let (pid, info) = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, ExitInfo::Code(code)),
                Ok(WaitStatus::Signaled(pid, sig, _)) => (pid, ExitInfo::Signal(sig as i32)),
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            };
            if let Some(tx) = waiters.remove(&pid.as_raw()) {
                let _ = tx.send(info);
            } else {
                tracing::debug!(pid = pid.as_raw(), status = %info, "reaped an orphan");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_info_reads_like_the_api_says() {
        assert_eq!(ExitInfo::Code(1).to_string(), "exit 1");
        assert_eq!(ExitInfo::Signal(9).to_string(), "signal 9 (KILL)");
        assert_eq!(ExitInfo::Signal(15).to_string(), "signal 15 (TERM)");
    }
}
