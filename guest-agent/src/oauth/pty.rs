//! Runs a login CLI on a pseudo-terminal: CLIs print their login URL (and ask their
//! first-run questions) only to a terminal, and wrap long lines at its width, so the PTY is
//! 500 columns wide. The CLI leads its own session and process group (`setsid`, the PTY as
//! controlling terminal), so cancelling kills it and everything it started with one
//! `killpg`.
//!
//! `openpty(3)` from libc plus std's `Command` rather than `portable-pty`: we need exactly
//! one platform, one size, `setsid` + `TIOCSCTTY` and the group id, and a blocking reader
//! thread; that is forty lines, where portable-pty adds its own process and reader
//! abstractions we would work around.

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use tokio::sync::{mpsc, oneshot};

/// Terminal size given to the CLI.
pub const COLUMNS: u16 = 500;
pub const ROWS: u16 = 50;

/// A running CLI.
pub struct PtyChild {
    pub pid: u32,
    /// Its process group (= pid).
    pub pgid: i32,
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

/// Starts `argv` with exactly `env` (nothing inherited) in `cwd`.
pub fn spawn(
    argv: &[String],
    env: &BTreeMap<String, String>,
    cwd: &Path,
) -> std::io::Result<PtyChild> {
    let (program, args) = argv
        .split_first()
        .ok_or_else(|| std::io::Error::other("empty command"))?;
    let (master, slave) = openpty()?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(env)
        .current_dir(cwd)
        .stdin(Stdio::from(slave.try_clone()?))
        .stdout(Stdio::from(slave.try_clone()?))
        .stderr(Stdio::from(slave));
    // SAFETY: only async-signal-safe calls (setsid, ioctl) between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::ioctl(0, libc::TIOCSCTTY as _, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn()?;
    // Our copies of the slave were moved into `cmd`; drop it so EOF/EIO comes when the
    // CLI's side closes.
    drop(cmd);
    let pid = child.id();
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
        pgid: pid as i32,
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

/// Signals the whole process group; `Ok` also when it is already gone.
pub fn kill_group(pgid: i32, sig: Signal) -> std::io::Result<()> {
    match killpg(Pid::from_raw(pgid), sig) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => Ok(()),
        Err(e) => Err(std::io::Error::from(e)),
    }
}

/// `true` while any process of group `pgid` is alive (not a zombie), read from /proc.
pub fn group_alive(pgid: i32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten().any(|e| {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            return false;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        // "pid (comm) S ppid pgrp ...": comm may hold spaces and parens; split after the last ')'.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else {
            return false;
        };
        let mut f = rest.split_whitespace();
        let state = f.next();
        let pgrp = f.nth(1).and_then(|p| p.parse::<i32>().ok());
        pgrp == Some(pgid) && state != Some("Z") && state != Some("X")
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
        let mut c = spawn(&argv, &env, Path::new("/")).unwrap();
        let mut text = String::new();
        while !text.contains(&format!("pgid:{}", c.pid)) {
            let chunk = c.output.recv().await.expect("output before pgid");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        assert!(text.contains("50 500"), "{text}");
        write(&c.writer, "hello\r").unwrap();
        while !text.contains("got:hello") {
            match c.output.recv().await {
                Some(chunk) => text.push_str(&String::from_utf8_lossy(&chunk)),
                None => panic!("terminal closed before the answer: {text}"),
            }
        }
        let st = (&mut c.exited).await.unwrap().unwrap();
        assert!(st.success());
        assert!(!group_alive(c.pgid));
    }

    #[tokio::test]
    async fn kill_group_takes_the_children_too() {
        let env = BTreeMap::from([("PATH".to_string(), "/usr/bin:/bin".to_string())]);
        let argv: Vec<String> = ["sh", "-c", "sleep 300 & sleep 300 & echo started; wait"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let mut c = spawn(&argv, &env, Path::new("/")).unwrap();
        let mut text = String::new();
        while !text.contains("started") {
            let chunk = c.output.recv().await.expect("output");
            text.push_str(&String::from_utf8_lossy(&chunk));
        }
        assert!(group_alive(c.pgid));
        kill_group(c.pgid, Signal::SIGKILL).unwrap();
        let _ = (&mut c.exited).await;
        // The sleeps are reparented and reaped by init; wait for that without timing it.
        let mut n = 0;
        while group_alive(c.pgid) && n < 3000 {
            std::thread::sleep(std::time::Duration::from_millis(10));
            n += 1;
        }
        assert!(!group_alive(c.pgid), "processes of group {} left", c.pgid);
    }
}
