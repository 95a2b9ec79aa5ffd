//! Spawning programs inside a network namespace without forking the caller: a thread
//! `setns()`s into the namespace once and starts every program from there, so `Command`
//! uses `posix_spawn` (`clone(CLONE_VM|CLONE_VFORK)`). A `pre_exec` hook (as in
//! [`Namespace::setns_only_command`](crate::Namespace::setns_only_command)) forces a full
//! `fork()`, which copies the caller's page tables: about a millisecond for a large process,
//! charged to whatever program a benchmark is timing. A network namespace is per thread, and a
//! child inherits its creator thread's, so nothing else in the process is affected.

use crate::Namespace;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::process::{Command, Output};
use std::sync::mpsc::{channel, Sender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

type Job = (Command, Sender<std::io::Result<(Duration, Output)>>);

/// A thread in a namespace that runs commands to completion and times them (spawn → exit).
pub struct NsSpawner {
    jobs: Option<Sender<Job>>,
    thread: Option<JoinHandle<()>>,
}

impl NsSpawner {
    /// Starts the thread and enters `ns` on it; panics (a broken harness) when `setns` fails.
    pub fn new(ns: &Namespace) -> Self {
        Self::start(Some(ns.path()))
    }

    fn start(path: Option<String>) -> Self {
        let file = path
            .as_ref()
            .map(|p| File::open(p).unwrap_or_else(|e| panic!("cannot open {p}: {e}")));
        let (jobs, rx) = channel::<Job>();
        let (ready_tx, ready_rx) = channel();
        let thread = std::thread::spawn(move || {
            // SAFETY: setns on an fd this closure owns; it only changes this thread.
            let rc = match &file {
                Some(f) => unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) },
                None => 0,
            };
            let entered = if rc == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            };
            let ok = entered.is_ok();
            let _ = ready_tx.send(entered);
            if !ok {
                return;
            }
            for (mut cmd, reply) in rx {
                let started = Instant::now();
                let out = cmd.output().map(|o| (started.elapsed(), o));
                let _ = reply.send(out);
            }
        });
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("setns into {path:?}: {e}"),
            Err(_) => panic!("the spawner thread for {path:?} died"),
        }
        NsSpawner {
            jobs: Some(jobs),
            thread: Some(thread),
        }
    }

    /// A spawner that stays in the caller's namespace (for commands that enter one themselves).
    pub fn here() -> Self {
        Self::start(None)
    }

    /// Runs `cmd` in the namespace to completion: how long from spawn to exit, and its output.
    pub fn output(&self, cmd: Command) -> std::io::Result<(Duration, Output)> {
        let (tx, rx) = channel();
        let gone = || std::io::Error::other("the namespace spawner thread is gone");
        self.jobs
            .as_ref()
            .ok_or_else(gone)?
            .send((cmd, tx))
            .map_err(|_| gone())?;
        rx.recv().map_err(|_| gone())?
    }
}

impl Drop for NsSpawner {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
