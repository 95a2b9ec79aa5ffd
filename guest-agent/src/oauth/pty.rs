//! Runs a login CLI on a pseudo-terminal: CLIs print their login URL (and ask their
//! first-run questions) only to a terminal, and wrap long lines at its width, so the PTY is
//! 200 columns wide: an authorize URL fits on one row, and an Ink CLI's full-width boxes stay
//! readable in `lastOutput` (the screen is rendered, see [`super::output`]). The CLI leads its own session and process group (`setsid`, the PTY as
//! controlling terminal), runs as the login user ([`super::user`]) and is a
//! [`ProcGroup`]: cancelling kills it and everything it started, through pidfds.
//!
//! `openpty(3)` from libc plus std's `Command` rather than `portable-pty`: we need exactly
//! one platform, one size, `setsid` + `TIOCSCTTY` and the group id, and a blocking reader
//! thread; that is forty lines, where portable-pty adds its own process and reader
//! abstractions we would work around.

use super::procs::{self, ProcGroup};
use super::user::LoginUser;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use tokio::sync::{mpsc, oneshot};

/// Terminal size given to the CLI.
pub const COLUMNS: u16 = 200;
pub const ROWS: u16 = 50;

/// A running CLI.
pub struct PtyChild {
    pub pid: u32,
    /// It and what it forks; dropping it kills what is left.
    pub group: ProcGroup,
    /// The PTY master, for answers and pasted codes.
    pub writer: File,
    /// Chunks of output; closed when the terminal closes.
    pub output: mpsc::Receiver<Vec<u8>>,
    /// The exit status, once reaped.
    pub exited: oneshot::Receiver<std::io::Result<ExitStatus>>,
}

fn openpty() -> std::io::Result<(OwnedFd, OwnedFd)> {
    let mut master = -1;
    let mut slave = -1;
    let ws = libc::winsize {
        ws_row: ROWS,
        ws_col: COLUMNS,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: out-pointers to locals; name and termios may be null.
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &ws,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: openpty returned two fresh descriptors that nothing else owns.
    let (m, s) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
    for fd in [m.as_raw_fd(), s.as_raw_fd()] {
        // The CLI must not inherit the master (it would keep the terminal open).
        // SAFETY: plain fcntl on a descriptor we own.
        unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) };
    }
    Ok((m, s))
}

/// How a child is tracked: [`procs::MARK_ENV`]'s value, and where its record goes
/// (`(dir, name)`), for the sweep after a crash.
pub struct Track<'a> {
    pub marker: &'a str,
    pub what: &'a str,
    pub records: Option<(&'a Path, &'a str)>,
}

/// Starts `argv` with exactly `env` (nothing inherited) in `cwd`, as `user`.
pub fn spawn(
    argv: &[String],
    env: &BTreeMap<String, String>,
    cwd: &Path,
    user: &LoginUser,
    track: &Track,
) -> std::io::Result<PtyChild> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| std::io::Error::other("empty command"))?;
    let (master, slave) = openpty()?;
    if user.switch {
        // Like login(1): the terminal belongs to its user (a CLI may reopen it by name).
        std::os::unix::fs::fchown(&slave, Some(user.uid), None)?;
        // SAFETY: fchmod on a descriptor we own.
        unsafe { libc::fchmod(slave.as_raw_fd(), 0o600) };
    }
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(env)
        .env(procs::MARK_ENV, track.marker)
        .current_dir(cwd)
        .stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave));
    user.apply(&mut cmd);
    let parent = std::process::id() as i32;
    // SAFETY: only async-signal-safe calls (setsid, ioctl, prctl, getppid) between fork and
    // exec; std switched uid/gid before this runs.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            procs::die_with_parent(parent)
        });
    }
    // `cmd` (with our copies of the slave) is dropped by the spawner, so EOF/EIO comes
    // when the CLI's side closes.
    let mut child = procs::spawn(cmd)?;
    let pid = child.id();
    let group = ProcGroup::adopt(pid, user.uid, track.marker, track.what, track.records);
    let mut reader = File::from(master);
    let writer = reader.try_clone()?;
    let (out_tx, output) = mpsc::channel(64);
    std::thread::Builder::new()
        .name(format!("oauth-pty-{pid}"))
        .spawn(move || {
            let mut buf = [0u8; 8192];
            loop {
                match reader.read(&mut buf) {
                    // EIO: every holder of the slave has closed it.
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if out_tx.blocking_send(buf[..n].to_vec()).is_err() {
                            break;
                        }
                    }
                }
            }
        })?;
    let (exit_tx, exited) = oneshot::channel();
    std::thread::Builder::new()
        .name(format!("oauth-wait-{pid}"))
        .spawn(move || {
            let _ = exit_tx.send(child.wait());
        })?;
    Ok(PtyChild {
        pid,
        group,
        writer,
        output,
        exited,
    })
}

/// Writes `text` to the terminal (an answer, a pasted code).
pub fn write(writer: &File, text: &str) -> std::io::Result<()> {
    let mut w = writer;
    w.write_all(text.as_bytes())?;
    w.flush()
}

/// `true` while any process of group `pgid` is alive (not a zombie), read from /proc (for
/// tests; the agent itself asks its [`ProcGroup`]s).
pub fn group_alive(pgid: i32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        e.file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
            .and_then(procs::stat)
            .is_some_and(|s| (s.pgrp == pgid || s.session == pgid) && !matches!(s.state, 'Z' | 'X'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_on_a_wide_terminal_in_its_own_group() {
        let env = BTreeMap::from([("PATH".to_string(), "/usr/bin:/bin".to_string())]);
        let argv: Vec<String> = [
            "sh",
            "-c",
            "stty size; echo pgid:$(cut -d' ' -f5 /proc/$$/stat); read x; echo got:$x",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        let mut c = spawn(&argv, &env, Path::new("/"), &LoginUser::current(), &track()).unwrap();
        let mut text = String::new();
        while !text.contains(&format!("pgid:{}", c.pid)) {
            let chunk = c.output.recv().await.expect("output before pgid");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        assert!(text.contains("50 200"), "{text}");
        write(&c.writer, "hello\r").unwrap();
        while !text.contains("got:hello") {
            match c.output.recv().await {
                Some(chunk) => text.push_str(&String::from_utf8_lossy(&chunk)),
                None => panic!("terminal closed before the answer: {text}"),
            }
        }
        let st = (&mut c.exited).await.unwrap().unwrap();
        assert!(st.success());
        assert!(!c.group.alive());
    }

    fn track() -> Track<'static> {
        Track {
            marker: "pty-test",
            what: "test",
            records: None,
        }
    }

    #[tokio::test]
    async fn kill_group_takes_the_children_too() {
        let env = BTreeMap::from([("PATH".to_string(), "/usr/bin:/bin".to_string())]);
        let argv: Vec<String> = ["sh", "-c", "sleep 300 & sleep 300 & echo started; wait"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut c = spawn(&argv, &env, Path::new("/"), &LoginUser::current(), &track()).unwrap();
        let mut text = String::new();
        while !text.contains("started") {
            let chunk = c.output.recv().await.expect("output");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        assert!(c.group.alive());
        c.group.signal(libc::SIGKILL);
        let _ = (&mut c.exited).await;
        // The sleeps are reparented and reaped by init; wait for that without timing it.
        let gone = c.group.wait_gone(std::time::Duration::from_secs(30)).await;
        assert!(gone, "processes of group {} left", c.pid);
    }
}
