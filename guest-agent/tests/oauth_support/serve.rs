//! The real `guest-agent serve` for the tests that need the binary (its log, a kill -9, a
//! restart on the same state directory), and process helpers.

use super::*;

/// The real `guest-agent serve` on a loopback port, with a token file in its state
/// directory (as in the images: `/run/guest-agent/token`), its log in `dir/serve.log`.
pub struct RealServe {
    pub child: Child,
    pub addr: SocketAddr,
    pub dir: PathBuf,
}

impl RealServe {
    pub fn state(dir: &Path) -> PathBuf {
        dir.join("state")
    }

    pub fn token_file(dir: &Path) -> PathBuf {
        Self::state(dir).join("token")
    }

    /// Starts serve on `dir` (made by [`test_dir`]); `config` is oauth.toml with the
    /// placeholders of [`Agent::start`]. A second start on the same `dir` is a restart.
    pub fn start(dir: &Path, config: &str) -> RealServe {
        Self::start_with(dir, config, &[], &[])
    }

    /// [`Self::start`], with `prefix` before the serve command line (a wrapper that sets up
    /// a mount namespace) and `env` added to serve's environment (the CLIs inherit it).
    pub fn start_with(
        dir: &Path,
        config: &str,
        prefix: &[String],
        env: &[(String, String)],
    ) -> RealServe {
        use std::os::unix::fs::OpenOptionsExt;
        ensure_login_user();
        let state = Self::state(dir);
        std::fs::create_dir_all(&state).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(Self::token_file(dir))
            .unwrap()
            .write_all(TOKEN.as_bytes())
            .unwrap();
        std::fs::write(dir.join("cmdline"), "console=ttyS0\n").unwrap();
        let text = config
            .replace("{home}", &dir.join("home").display().to_string())
            .replace("{dir}", &dir.display().to_string())
            .replace("{bin}", &agent_bin())
            .replace("{fixture}", &fixture());
        std::fs::write(dir.join("oauth.toml"), text).unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("serve.log"))
            .unwrap();
        let mut cmd = match prefix.split_first() {
            Some((p, rest)) => {
                let mut c = Command::new(p);
                c.args(rest).arg(BIN);
                c
            }
            None => Command::new(BIN),
        };
        let child = cmd
            .envs(env.iter().map(|(k, v)| (k, v)))
            .args(["serve", "--listen", &addr.to_string(), "--state-dir"])
            .arg(&state)
            .arg("--token-file")
            .arg(Self::token_file(dir))
            .arg("--cmdline")
            .arg(dir.join("cmdline"))
            .arg("--netinit-state")
            .arg(dir.join("netinit.json"))
            .arg("--oauth-config")
            .arg(dir.join("oauth.toml"))
            .env_remove("GUEST_AGENT_STATE_DIR")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let s = RealServe {
            child,
            addr,
            dir: dir.to_path_buf(),
        };
        let start = Instant::now();
        while TcpStream::connect(addr).is_err() {
            assert!(
                start.elapsed() < WAIT,
                "serve never listened; log:\n{}",
                s.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        s
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("serve.log")).unwrap_or_default()
    }

    pub fn get(&self, path: &str) -> (u16, serde_json::Value) {
        http(self.addr, "GET", path, Some(TOKEN), None)
    }

    pub fn post(&self, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
        http(self.addr, "POST", path, Some(TOKEN), Some(body))
    }

    pub fn wait_session(
        &self,
        id: &str,
        what: &str,
        pred: impl Fn(&serde_json::Value) -> bool,
    ) -> serde_json::Value {
        let start = Instant::now();
        loop {
            let (_, s) = self.get(&format!("/v1/oauth/sessions/{id}"));
            if pred(&s) {
                return s;
            }
            assert!(
                start.elapsed() < WAIT,
                "waiting for {what}: session is {s:#}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// `kill -9`: nothing of serve runs its shutdown.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for RealServe {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            // SAFETY: kill(2) of our own child, not reaped yet (so the pid is still it).
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let _ = self.child.wait();
        }
    }
}

/// The user a process runs as, as `ps -o user=` says it.
pub fn ps_user(pid: i64) -> String {
    let o = Command::new("ps")
        .args(["-o", "user=", "-p", &pid.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).trim().to_string()
}

/// `true` while `pid` runs (not a zombie).
pub fn pid_alive(pid: i64) -> bool {
    guest_agent::oauth::procs::stat(pid as i32).is_some_and(|s| !matches!(s.state, 'Z' | 'X'))
}
