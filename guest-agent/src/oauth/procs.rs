//! The processes a session starts (the login CLI, the browser) never outlive `serve`
//! (issue 12 item 5):
//!
//! - they are forked from one long-lived thread ([`spawn`]) with `PR_SET_PDEATHSIG(SIGKILL)`
//!   set after the user switch (a credential change clears it), so the direct child dies with
//!   `serve` however `serve` ends (the "parent" of PDEATHSIG is the forking *thread*: a
//!   tokio blocking thread that idles out would kill children at random);
//! - each leads its own session (`setsid`), so what it forks is found by session/group id;
//! - each is a [`ProcGroup`]: a pidfd of the leader opened before it is reaped (so it is
//!   ours), its start time (field 22 of `/proc/PID/stat`) and uid, and a marker in the
//!   environment its descendants inherit. Signals go through pidfds, never `killpg` on a
//!   number that may have been reused: a member is signalled only when its start time is not
//!   older than the leader's, its uid is the one the group runs as, and either it is in
//!   the leader's session/group while the leader is alive (then the number is still ours)
//!   or it carries the marker (unique per group: a random part), wherever it is;
//! - a [`Record`] of each group is written in the state directory (root-only) and removed
//!   when the group is gone; [`sweep`] at `serve` start kills what a crash, `kill -9` or a
//!   liveness restart left (codex's grandchild holding ports 1455/1457).
//!
//! A pidfd cannot be opened before Linux 5.3: then signals go by pid, right after the start
//! time was checked again (a race of microseconds instead of forever).

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::sync::{mpsc, Mutex, OnceLock};

/// The environment variable that marks a session's processes and their descendants.
pub const MARK_ENV: &str = "GUESTKIT_OAUTH_MARK";
/// Records of live groups, under the state directory.
pub const RECORDS_DIR: &str = "oauth-procs";

/// What `/proc/PID/stat` says about a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stat {
    pub state: char,
    pub pgrp: i32,
    pub session: i32,
    /// Clock ticks after boot (field 22).
    pub start: u64,
}

/// Parses a `/proc/PID/stat` line: `pid (comm) S ppid pgrp session ... starttime(22)`.
/// `comm` may hold spaces and parentheses, so fields are counted after the last `)`.
pub fn parse_stat(line: &str) -> Option<Stat> {
    let rest = line.rsplit_once(')')?.1;
    let f: Vec<&str> = rest.split_whitespace().collect();
    // f[0] is field 3 (state); field N is f[N - 3].
    Some(Stat {
        state: f.first()?.chars().next()?,
        pgrp: f.get(2)?.parse().ok()?,
        session: f.get(3)?.parse().ok()?,
        start: f.get(19)?.parse().ok()?,
    })
}

pub fn stat(pid: i32) -> Option<Stat> {
    parse_stat(&std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Real uid of a process (owner of `/proc/PID`).
pub fn uid_of(pid: i32) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}"))
        .ok()
        .map(|m| m.uid())
}

/// This boot's id: a record from an earlier boot names nothing alive.
pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

fn environ_has(pid: i32, marker: &str) -> bool {
    let mut buf = Vec::new();
    let Ok(f) = File::open(format!("/proc/{pid}/environ")) else {
        return false;
    };
    if f.take(1 << 20).read_to_end(&mut buf).is_err() {
        return false;
    }
    let want = format!("{MARK_ENV}={marker}");
    buf.split(|b| *b == 0).any(|kv| kv == want.as_bytes())
}

fn pids() -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect()
}

/// `pidfd_open(2)`; `Err(ENOSYS)` before Linux 5.3.
pub fn pidfd_open(pid: i32) -> std::io::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments; a non-negative result is a new fd we own.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the kernel just returned this descriptor.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// `pidfd_send_signal(2)`; `Ok` also when the process has already exited.
pub fn pidfd_signal(fd: &OwnedFd, sig: i32) -> std::io::Result<()> {
    // SAFETY: fd is a valid pidfd; info may be null; flags 0.
    let r = unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            fd.as_raw_fd(),
            sig,
            std::ptr::null::<libc::siginfo_t>(),
            0,
        )
    };
    if r < 0 {
        let e = std::io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            return Err(e);
        }
    }
    Ok(())
}

/// `true` once the process behind a pidfd has exited (the pidfd polls readable).
fn pidfd_exited(fd: &OwnedFd) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one pollfd on the stack, no wait.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    r > 0 && p.revents & libc::POLLIN != 0
}

/// Signals `pid` only if it is still the process that started at `start`: through a pidfd
/// opened first and checked after (then the signal cannot reach a newcomer), or by pid
/// right after the check when pidfds are missing.
fn signal_if_same(pid: i32, start: u64, sig: i32) -> bool {
    match pidfd_open(pid) {
        Ok(fd) => {
            if stat(pid).map(|s| s.start) != Some(start) {
                return false;
            }
            pidfd_signal(&fd, sig).is_ok()
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOSYS) => {
            stat(pid).map(|s| s.start) == Some(start)
                // SAFETY: plain kill(2).
                && unsafe { libc::kill(pid, sig) } == 0
        }
        Err(_) => false,
    }
}

/// What is known of a group, enough to find its members again (also after a restart).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Record {
    /// The leader's pid (= its session and process group id).
    pub pid: i32,
    /// The leader's start time in clock ticks after boot.
    pub start: u64,
    pub boot: String,
    /// The uid its processes run as.
    pub uid: u32,
    /// Value of [`MARK_ENV`] in its environment.
    pub marker: String,
    /// For logs: `"cli"`, `"browser"`.
    pub what: String,
}

impl Record {
    /// Members of the group alive now (not zombies), leader included when it is still the
    /// recorded process. `leader_alive` says whether the group number is still ours.
    fn members(&self, leader_alive: bool) -> Vec<(i32, u64)> {
        let mut out = Vec::new();
        for pid in pids() {
            let Some(s) = stat(pid) else { continue };
            if matches!(s.state, 'Z' | 'X') {
                continue;
            }
            if pid == self.pid {
                if s.start == self.start {
                    out.push((pid, s.start));
                }
                continue;
            }
            // In the group while its number is surely ours, or anywhere with the marker
            // (a descendant that started a session of its own, e.g. a crash handler).
            let in_group = s.pgrp == self.pid || s.session == self.pid;
            if s.start >= self.start
                && uid_of(pid) == Some(self.uid)
                && ((in_group && leader_alive) || environ_has(pid, &self.marker))
            {
                out.push((pid, s.start));
            }
        }
        out
    }

    fn leader_is_alive(&self) -> bool {
        stat(self.pid).is_some_and(|s| s.start == self.start && !matches!(s.state, 'Z' | 'X'))
    }

    /// Signals every member; returns how many were signalled.
    pub fn signal(&self, sig: i32) -> usize {
        let alive = self.leader_is_alive();
        self.members(alive)
            .into_iter()
            .filter(|(pid, start)| signal_if_same(*pid, *start, sig))
            .count()
    }

    pub fn alive(&self) -> bool {
        !self.members(self.leader_is_alive()).is_empty()
    }

    /// Writes the record as `dir/name.json` (0600, `dir` 0700).
    pub fn write(&self, dir: &Path, name: &str) -> std::io::Result<PathBuf> {
        use std::io::Write;
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let path = dir.join(format!("{name}.json"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&path)?;
        // 0600 also when the file was already there (`mode` applies to new files only).
        f.set_permissions(std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
        f.write_all(&serde_json::to_vec(self).map_err(std::io::Error::other)?)?;
        Ok(path)
    }
}

/// Kills what records in `dir` name (from this boot) and removes the records. Returns
/// the number of processes killed. Called when `serve` starts, before any session.
pub fn sweep(dir: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    let boot = boot_id();
    let mut killed = 0;
    for e in entries.flatten() {
        let path = e.path();
        let rec = std::fs::read(&path)
            .ok()
            .filter(|b| b.len() < 64 * 1024)
            .and_then(|b| serde_json::from_slice::<Record>(&b).ok());
        if let Some(rec) = rec.filter(|r| r.boot == boot) {
            let n = rec.signal(libc::SIGKILL);
            if n > 0 {
                tracing::warn!(pid = rec.pid, what = %rec.what, killed = n,
                    "killed processes an earlier `serve` left behind");
            }
            killed += n;
        }
        let _ = std::fs::remove_file(&path);
    }
    killed
}

/// A started process and what it forks. Dropping it kills what is left (SIGKILL through
/// pidfds) and removes its record: when a session task ends, and when the runtime drops
/// the tasks on a graceful shutdown.
pub struct ProcGroup {
    pub rec: Record,
    leader: Option<OwnedFd>,
    file: Option<PathBuf>,
}

impl ProcGroup {
    /// Takes charge of `pid`, a child not reaped yet (so the pid is surely ours), and
    /// records it as `records/name.json` when `records` is given.
    pub fn adopt(
        pid: u32,
        uid: u32,
        marker: &str,
        what: &str,
        records: Option<(&Path, &str)>,
    ) -> ProcGroup {
        let pid = pid as i32;
        let rec = Record {
            pid,
            start: stat(pid).map(|s| s.start).unwrap_or(0),
            boot: boot_id(),
            uid,
            marker: marker.to_string(),
            what: what.to_string(),
        };
        let file = records.and_then(|(dir, name)| match rec.write(dir, name) {
            Ok(p) => Some(p),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e,
                    "cannot record a session's process; a crash of serve may leave it running");
                None
            }
        });
        ProcGroup {
            leader: pidfd_open(pid).ok(),
            rec,
            file,
        }
    }

    pub fn pid(&self) -> i32 {
        self.rec.pid
    }

    /// Signals the leader (through its pidfd) and every member still there.
    pub fn signal(&self, sig: i32) {
        if let Some(fd) = &self.leader {
            let _ = pidfd_signal(fd, sig);
        }
        self.rec.signal(sig);
    }

    /// `true` while the leader or any member runs.
    pub fn alive(&self) -> bool {
        let leader = match &self.leader {
            Some(fd) => !pidfd_exited(fd),
            None => self.rec.leader_is_alive(),
        };
        leader || !self.rec.members(false).is_empty()
    }

    /// Waits (polling, bounded) until nothing of the group runs.
    pub async fn wait_gone(&self, max: std::time::Duration) -> bool {
        let until = tokio::time::Instant::now() + max;
        while self.alive() {
            if tokio::time::Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        true
    }

    /// TERM, up to `grace` to go, then KILL.
    pub async fn close(&self, grace: std::time::Duration) {
        self.signal(libc::SIGTERM);
        self.wait_gone(grace).await;
        self.signal(libc::SIGKILL);
    }
}

impl Drop for ProcGroup {
    fn drop(&mut self) {
        self.signal(libc::SIGKILL);
        if let Some(f) = &self.file {
            let _ = std::fs::remove_file(f);
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// Starts `cmd` from the process-lifetime spawner thread (see the module doc). `cmd`
/// should carry [`die_with_parent`] in its `pre_exec`.
pub fn spawn(cmd: Command) -> std::io::Result<Child> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    let sender = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let _ = std::thread::Builder::new()
            .name("oauth-spawner".into())
            .spawn(move || {
                while let Ok(job) = rx.recv() {
                    job();
                }
            });
        Mutex::new(tx)
    });
    let (tx, rx) = mpsc::channel();
    let job: Job = Box::new(move || {
        let mut cmd = cmd;
        let _ = tx.send(cmd.spawn());
    });
    sender
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send(job)
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?;
    rx.recv()
        .map_err(|_| std::io::Error::other("the spawner thread is gone"))?
}

/// Makes `cmd`'s child lead its own session (a group of its own to close) and die with this
/// process ([`die_with_parent`]); std switches uid/gid before such hooks run.
pub fn own_session_dying_with_us(cmd: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let parent = std::process::id() as i32;
    // SAFETY: setsid, prctl and getppid are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            die_with_parent(parent)
        });
    }
}

/// In a child between fork and exec (async-signal-safe): SIGKILL when the forking thread
/// dies, and die now if the parent already has (`parent` = the agent's pid).
///
/// # Safety
/// Only for `pre_exec`, after the uid/gid change.
pub unsafe fn die_with_parent(parent: i32) -> std::io::Result<()> {
    if libc::prctl(
        libc::PR_SET_PDEATHSIG,
        libc::SIGKILL as libc::c_ulong,
        0,
        0,
        0,
    ) != 0
    {
        return Err(std::io::Error::last_os_error());
    }
    if libc::getppid() != parent {
        libc::_exit(1);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_after_a_comm_with_parens() {
        let line =
            "4242 (a) b (c)) S 1 4240 4239 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1 2";
        assert_eq!(
            parse_stat(line),
            Some(Stat {
                state: 'S',
                pgrp: 4240,
                session: 4239,
                start: 987654
            })
        );
        assert_eq!(parse_stat("1 (x) S 0"), None);
        let me = stat(std::process::id() as i32).unwrap();
        assert!(me.start > 0);
    }

    #[test]
    fn records_are_0600_in_a_0700_directory_even_over_an_old_file() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join(RECORDS_DIR);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("a.json"), "old").unwrap();
        std::fs::set_permissions(dir.join("a.json"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        let rec = Record {
            pid: 1,
            start: 1,
            boot: boot_id(),
            uid: 0,
            marker: "m".into(),
            what: "cli".into(),
        };
        let p = rec.write(&dir, "a").unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o777, 0o600);
        let back: Record = serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap();
        assert_eq!(back, rec);
        let nested = d.path().join("new/").join(RECORDS_DIR);
        rec.write(&nested, "b").unwrap();
        assert_eq!(std::fs::metadata(&nested).unwrap().mode() & 0o777, 0o700);
    }

    #[test]
    fn a_reused_pid_is_not_signalled() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        let start = stat(pid).unwrap().start;
        let rec = Record {
            pid,
            start: start + 1, // the pid now belongs to a process that started later
            boot: boot_id(),
            uid: uid_of(pid).unwrap(),
            marker: "m-none".into(),
            what: "test".into(),
        };
        assert_eq!(rec.signal(libc::SIGKILL), 0);
        assert!(child.try_wait().unwrap().is_none(), "a stranger was killed");
        let rec = Record { start, ..rec };
        assert_eq!(rec.signal(libc::SIGKILL), 1);
        child.wait().unwrap();
    }
}
