//! Test harness: starts the real `guest-agent` binary with a config in a temp dir,
//! collects its stdout/stderr, reads `state.json`, speaks plain HTTP/1.1 on loopback.
//! Waits poll with a generous deadline that only turns a hang into a clear failure;
//! nothing asserts on speed.
#![allow(dead_code)]

use guest_agent::state::SupervisorState;
use guest_proto::api::ServiceStatus;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_guest-agent");
/// Upper bound for any wait: a hang fails the test instead of blocking CI.
pub const DEADLINE: Duration = Duration::from_secs(30);

pub struct Agent {
    pub child: Child,
    pub dir: tempfile::TempDir,
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl Agent {
    /// `supervise --config DIR/config.toml --state-dir DIR/state` with `config` (may use
    /// `{dir}` for the temp dir and `{bin}` for the binary).
    pub fn start(config: &str) -> Agent {
        Self::start_with_env(config, &[])
    }

    pub fn start_with_env(config: &str, env: &[(&str, &str)]) -> Agent {
        Self::start_with(config, env, &[])
    }

    /// Also writes `files` (relative name, contents) into the temp dir first.
    pub fn start_with(config: &str, env: &[(&str, &str)], files: &[(&str, &str)]) -> Agent {
        let dir = tempfile::tempdir().unwrap();
        for (name, text) in files {
            std::fs::write(dir.path().join(name), text).unwrap();
        }
        let text = config
            .replace("{dir}", &dir.path().display().to_string())
            .replace("{bin}", BIN);
        std::fs::write(dir.path().join("config.toml"), text).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("supervise")
            .arg("--config")
            .arg(dir.path().join("config.toml"))
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().unwrap();
        let stdout = collect(child.stdout.take().unwrap());
        let stderr = collect(child.stderr.take().unwrap());
        Agent {
            child,
            dir,
            stdout,
            stderr,
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    pub fn state(&self) -> Option<SupervisorState> {
        let bytes = std::fs::read(self.path("state/state.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn service(&self, name: &str) -> Option<ServiceStatus> {
        self.state()?.services.into_iter().find(|s| s.name == name)
    }

    /// Polls `f` until it returns `Some`; panics with `what` and the agent's output after
    /// [`DEADLINE`].
    pub fn wait<T>(&self, what: &str, mut f: impl FnMut(&Agent) -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            if start.elapsed() > DEADLINE {
                panic!(
                    "gave up waiting for {what}\nstate: {:#?}\nstderr:\n{}",
                    self.state(),
                    self.stderr.lock().unwrap().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The address `serve` printed in its `listening` console event (echoed by the supervisor).
    pub fn listening_addr(&self) -> String {
        self.wait("a listening event", |a| {
            a.stdout.lock().unwrap().iter().find_map(|l| {
                let ev = guest_proto::ConsoleEvent::find_in_line(l)?.ok()?;
                match ev.event {
                    guest_proto::Event::Listening { addr } => Some(addr),
                    _ => None,
                }
            })
        })
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// SIGTERM and wait; returns the exit code.
    pub fn terminate(&mut self) -> Option<i32> {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st.code();
            }
            if start.elapsed() > DEADLINE {
                let _ = self.child.kill();
                panic!(
                    "supervisor did not exit after SIGTERM\n{}",
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.terminate();
        }
    }
}

fn collect<R: Read + Send + 'static>(r: R) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l2 = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            l2.lock().unwrap().push(line);
        }
    });
    lines
}

/// One HTTP/1.1 request with `Connection: close`; returns status and body.
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> std::io::Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect(addr)?;
    s.set_read_timeout(Some(DEADLINE))?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(s, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n")?;
    let mut raw = String::new();
    s.read_to_string(&mut raw)?;
    let status = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((&raw, ""));
    let body = if head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        dechunk(body)
    } else {
        body.to_string()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

/// Live processes (not zombies... and zombies too) whose process group is `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) =
            std::fs::read_to_string(Path::new("/proc").join(pid.to_string()).join("stat"))
        else {
            continue;
        };
        // Fields after the `(comm)`: state ppid pgrp ...
        let Some(after) = stat.rsplit_once(')').map(|x| x.1) else {
            continue;
        };
        let f: Vec<&str> = after.split_whitespace().collect();
        if f.get(2).and_then(|g| g.parse::<i32>().ok()) == Some(pgid) {
            out.push(pid);
        }
    }
    out
}
