//! Who the login CLIs and the browser run as (issue 12 item 2): third-party code that
//! renders arbitrary web pages must not read the agent's token or state directory.
//!
//! - `serve` as root: `run_as` from oauth.toml (default [`DEFAULT_RUN_AS`]), looked up in
//!   `/etc/passwd` (read directly: the images' agent is static, NSS modules cannot be
//!   loaded). A missing user, or uid 0, fails the login closed with an error naming the
//!   setting: the image must create the user. The children get its uid/gid and no
//!   supplementary groups; their HOME is oauth.toml's `home`, owned by that user, 0700,
//!   outside the state directory and reachable (every parent searchable by it).
//! - `serve` not root (a developer's laptop): they run as the current user; said once in
//!   the log.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The default of oauth.toml's `run_as`.
pub const DEFAULT_RUN_AS: &str = "guestkit-login";
/// The default of `home` when `serve` runs as root.
pub const DEFAULT_LOGIN_HOME: &str = "/var/lib/guestkit-login";

/// Why logins cannot start as the configured user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    #[error("oauth.toml run_as: user `{0}` does not exist; the image must create it (useradd --system --user-group --home-dir /var/lib/guestkit-login --shell /usr/sbin/nologin {0}): login CLIs and the browser never run as root")]
    Missing(String),
    #[error("oauth.toml run_as: `{0}` is uid 0; login CLIs and the browser must run as an unprivileged user")]
    Root(String),
    #[error("/etc/passwd: {0}")]
    Passwd(String),
    #[error("oauth.toml home {path}: {why}")]
    Home { path: String, why: String },
}

/// The identity children get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    /// `true` when `serve` is root and children switch to `uid`/`gid`.
    pub switch: bool,
}

/// `name:x:uid:gid:...` lines of a passwd file.
pub fn lookup(passwd: &str, name: &str) -> Option<(u32, u32)> {
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() >= 4 && f[0] == name)
            .then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))
            .flatten()
    })
}

impl LoginUser {
    /// The user `serve` runs as, unchanged.
    pub fn current() -> LoginUser {
        // SAFETY: plain getters.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        LoginUser {
            name: std::env::var("USER").unwrap_or_else(|_| format!("uid {uid}")),
            uid,
            gid,
            switch: false,
        }
    }

    /// Resolves oauth.toml's `run_as` for this process.
    pub fn resolve(run_as: &str) -> Result<LoginUser, UserError> {
        // SAFETY: plain getter.
        if unsafe { libc::geteuid() } != 0 {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                tracing::info!(
                    run_as,
                    "serve is not root: login CLIs and the browser run as the current user"
                );
            });
            return Ok(LoginUser::current());
        }
        let mut text = String::new();
        use std::io::Read;
        std::fs::File::open("/etc/passwd")
            .and_then(|f| f.take(8 << 20).read_to_string(&mut text))
            .map_err(|e| UserError::Passwd(e.to_string()))?;
        let (uid, gid) =
            lookup(&text, run_as).ok_or_else(|| UserError::Missing(run_as.to_string()))?;
        if uid == 0 {
            return Err(UserError::Root(run_as.to_string()));
        }
        Ok(LoginUser {
            name: run_as.to_string(),
            uid,
            gid,
            switch: true,
        })
    }

    /// Sets uid/gid on `cmd` (std also drops supplementary groups when root switches).
    pub fn apply(&self, cmd: &mut std::process::Command) {
        use std::os::unix::process::CommandExt;
        if self.switch {
            cmd.uid(self.uid).gid(self.gid);
        }
    }

    /// Can this user search (`x`) the directory with metadata `m`?
    fn can_search(&self, m: &std::fs::Metadata) -> bool {
        let mode = m.mode();
        if !self.switch || self.uid == 0 {
            return true;
        }
        if m.uid() == self.uid {
            mode & 0o100 != 0
        } else if m.gid() == self.gid {
            mode & 0o010 != 0
        } else {
            mode & 0o001 != 0
        }
    }

    /// Makes `home` a directory of this user, 0700, that it can reach and that is not
    /// inside (nor holds) `state_dir`. Created when missing (parents as root, 0755).
    pub fn prepare_home(&self, home: &Path, state_dir: &Path) -> Result<(), UserError> {
        let err = |why: String| UserError::Home {
            path: home.display().to_string(),
            why,
        };
        if !home.is_absolute() {
            return Err(err("must be an absolute path".into()));
        }
        let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let sd = canon(state_dir);
        if let Some(parent) = home.parent() {
            std::fs::create_dir_all(parent).map_err(|e| err(format!("creating it: {e}")))?;
        }
        let created = match std::fs::DirBuilder::new().create(home) {
            Ok(()) => true,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => false,
            Err(e) => return Err(err(format!("creating it: {e}"))),
        };
        let h = canon(home);
        if h.starts_with(&sd) || sd.starts_with(&h) {
            return Err(err(format!(
                "must be outside the agent's state directory {}",
                sd.display()
            )));
        }
        // Through a descriptor opened without following a symlink: the checks and the
        // chown/chmod are about the same directory even if the path is swapped meanwhile.
        use std::os::unix::fs::OpenOptionsExt;
        let dir = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(home)
            .map_err(|e| err(format!("not a directory or a symlink (not followed): {e}")))?;
        let m = dir.metadata().map_err(|e| err(e.to_string()))?;
        if self.switch && m.uid() != self.uid {
            let empty = std::fs::read_dir(home)
                .map(|mut d| d.next().is_none())
                .unwrap_or(false);
            if m.uid() == 0 && empty {
                // A directory we just made (or an empty root-owned one): hand it over.
                std::os::unix::fs::fchown(&dir, Some(self.uid), Some(self.gid))
                    .map_err(|e| err(format!("chown to {}: {e}", self.name)))?;
            } else {
                return Err(err(format!(
                    "is owned by uid {}, not by {} (run_as); give it to that user or pick another home",
                    m.uid(),
                    self.name
                )));
            }
        }
        // Not root: HOME may be the developer's own home, whose mode is theirs to choose.
        if (self.switch || created) && m.mode() & 0o777 != 0o700 {
            dir.set_permissions(std::fs::Permissions::from_mode(0o700))
                .map_err(|e| err(format!("chmod 0700: {e}")))?;
        }
        let mut p = PathBuf::new();
        for c in h.parent().unwrap_or(Path::new("/")).components() {
            p.push(c);
            let m = std::fs::metadata(&p).map_err(|e| err(format!("{}: {e}", p.display())))?;
            if !self.can_search(&m) {
                return Err(err(format!(
                    "{} cannot reach it: {} is mode {:o} owned by uid {}",
                    self.name,
                    p.display(),
                    m.mode() & 0o7777,
                    m.uid()
                )));
            }
        }
        Ok(())
    }
}

/// Variables of the agent's environment a login CLI never gets: systemd's and the agent's
/// own (the CLI gets its own `GUEST_AGENT_OAUTH_*`).
pub fn scrub_env(env: &mut std::collections::BTreeMap<String, String>) {
    env.retain(|k, _| {
        !(k.starts_with("GUEST_AGENT_")
            || k.starts_with("GUESTKIT_")
            || matches!(
                k.as_str(),
                "NOTIFY_SOCKET"
                    | "WATCHDOG_PID"
                    | "WATCHDOG_USEC"
                    | "LISTEN_FDS"
                    | "LISTEN_PID"
                    | "LISTEN_FDNAMES"
                    | "INVOCATION_ID"
                    | "CREDENTIALS_DIRECTORY"
                    | "RUNTIME_DIRECTORY"
                    | "STATE_DIRECTORY"
                    | "XAUTHORITY"
                    | "MAIL"
            ))
    });
}

/// The environment of a child run as `user` in `home`.
pub fn child_env(user: &LoginUser, home: &Path) -> std::collections::BTreeMap<String, String> {
    let mut env: std::collections::BTreeMap<String, String> = std::env::vars().collect();
    scrub_env(&mut env);
    env.insert("HOME".into(), home.display().to_string());
    if user.switch {
        env.insert("USER".into(), user.name.clone());
        env.insert("LOGNAME".into(), user.name.clone());
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lookup() {
        let p = "root:x:0:0:root:/root:/bin/bash\nguestkit-login:x:998:997::/var/lib/guestkit-login:/usr/sbin/nologin\nbroken:x:y\n";
        assert_eq!(lookup(p, "guestkit-login"), Some((998, 997)));
        assert_eq!(lookup(p, "guestkit"), None);
        assert_eq!(lookup(p, "broken"), None);
    }

    #[test]
    fn errors_name_the_setting_and_the_fix() {
        let e = UserError::Missing("guestkit-login".into()).to_string();
        assert!(
            e.starts_with("oauth.toml run_as: user `guestkit-login` does not exist"),
            "{e}"
        );
        assert!(e.contains("useradd --system"), "{e}");
    }

    #[test]
    fn home_inside_the_state_dir_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let u = LoginUser::current();
        let e = u
            .prepare_home(&d.path().join("state/home"), &d.path().join("state"))
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("outside the agent's state directory"),
            "{e}"
        );
        u.prepare_home(&d.path().join("home"), &d.path().join("state"))
            .unwrap();
        let m = std::fs::metadata(d.path().join("home")).unwrap();
        assert_eq!(m.mode() & 0o777, 0o700);
    }

    #[test]
    fn the_agents_variables_are_not_passed_on() {
        let mut env = std::collections::BTreeMap::from([
            (
                "NOTIFY_SOCKET".to_string(),
                "/run/systemd/notify".to_string(),
            ),
            (
                "GUEST_AGENT_STATE_DIR".to_string(),
                "/run/guest-agent".to_string(),
            ),
            ("PATH".to_string(), "/usr/bin".to_string()),
        ]);
        scrub_env(&mut env);
        assert_eq!(env.keys().collect::<Vec<_>>(), vec!["PATH"]);
    }
}
