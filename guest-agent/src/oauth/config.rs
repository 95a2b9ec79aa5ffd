//! OAuth settings: `/etc/guest-agent/oauth.toml` (its own file, so the supervisor's
//! strict config stays as it is). Missing file = built-in defaults. Every key optional:
//!
//! ```toml
//! run_as = "guestkit-login"     # user the login CLIs and the browser run as when serve is
//!                                # root (must exist in the image; never root); not root: the
//!                                # current user
//! home = "/var/lib/guestkit-login"  # HOME of the login CLIs and the browser (credentials land
//!                                # here): owned by run_as, 0700, outside the state directory.
//!                                # Default: this when serve is root, else $HOME
//! display = ":99"                # DISPLAY for the CLI and the browser
//! browser = ["chromium", "--no-sandbox", "--no-first-run"]   # the URL is appended
//! deadline_secs = 600            # a session not done by then is `expired`
//! stuck_secs = 20                # no URL and the CLI's screen unchanged this long: the
//!                                # session's `reason` says it is stuck (it stays live)
//! shim_command = ["/usr/bin/guest-agent", "open-url"]        # what BROWSER/xdg-open run
//! proxy = "http://10.0.0.1:3128"  # what the CLIs and the browser go through; the kernel
//!                                # command line's guest_agent.proxy= / decodo_port= win
//! [providers.codex]              # override fields of a built-in, or define a new provider
//! command = ["/opt/codex/bin/codex", "login"]
//! ```

use super::provider::{self, Provider, ProviderError, ProviderOverride};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Default config file.
pub const DEFAULT_PATH: &str = "/etc/guest-agent/oauth.toml";
/// Default session lifetime.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(600);
/// Default time a CLI's screen may stay unchanged without a URL before it is called stuck.
pub const DEFAULT_STUCK: Duration = Duration::from_secs(20);

/// The merged settings.
#[derive(Debug, Clone)]
pub struct OAuthConfig {
    /// The user login CLIs and the browser run as (see [`super::user`]).
    pub run_as: String,
    pub home: PathBuf,
    pub display: String,
    /// Browser command line; the URL is appended.
    pub browser: Vec<String>,
    pub deadline: Duration,
    /// No URL and a screen unchanged this long: the session says it is stuck.
    pub stuck_after: Duration,
    /// Per-provider deadline overrides.
    pub deadlines: BTreeMap<String, Duration>,
    /// What the `BROWSER`/`xdg-open` shim execs (the URL is appended).
    pub shim_command: Vec<String>,
    /// The proxy of this file (`oauth::proxy` says which one a login uses).
    pub proxy: Option<String>,
    pub providers: BTreeMap<String, Provider>,
}

/// A config file that cannot be used: names the file and what is wrong.
#[derive(Debug, thiserror::Error)]
pub enum OAuthConfigError {
    #[error("{file}: {error}")]
    Read { file: String, error: std::io::Error },
    #[error("{file}: {error}")]
    Syntax { file: String, error: String },
    #[error("{file}: {error}")]
    Provider { file: String, error: ProviderError },
    #[error("{file}: {field} must not be empty")]
    Empty { file: String, field: &'static str },
    #[error("{file}: run_as must be a user name (not empty, no `:`), got {value:?}")]
    RunAs { file: String, value: String },
    #[error("{file}: proxy: {error}")]
    Proxy { file: String, error: String },
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Raw {
    run_as: Option<String>,
    home: Option<PathBuf>,
    display: Option<String>,
    browser: Option<Vec<String>>,
    deadline_secs: Option<u64>,
    stuck_secs: Option<u64>,
    shim_command: Option<Vec<String>>,
    proxy: Option<String>,
    #[serde(default)]
    providers: BTreeMap<String, ProviderOverride>,
}

impl OAuthConfig {
    /// Built-ins only, with `home` [`super::user::DEFAULT_LOGIN_HOME`] when root, else
    /// `$HOME`, and DISPLAY from the environment (else `:99`, the image's Xvfb).
    pub fn defaults() -> OAuthConfig {
        let shim = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "/usr/bin/guest-agent".into());
        // SAFETY: plain getter.
        let root = unsafe { libc::geteuid() } == 0;
        OAuthConfig {
            run_as: super::user::DEFAULT_RUN_AS.to_string(),
            home: match std::env::var_os("HOME") {
                Some(h) if !root => PathBuf::from(h),
                _ => PathBuf::from(super::user::DEFAULT_LOGIN_HOME),
            },
            display: std::env::var("DISPLAY").unwrap_or_else(|_| ":99".into()),
            browser: vec![
                "chromium".into(),
                "--no-sandbox".into(),
                "--disable-gpu".into(),
                "--no-first-run".into(),
                "--disable-sync".into(),
                "--disable-background-networking".into(),
                "--disable-component-update".into(),
            ],
            deadline: DEFAULT_DEADLINE,
            stuck_after: DEFAULT_STUCK,
            deadlines: BTreeMap::new(),
            shim_command: vec![shim, "open-url".into()],
            proxy: None,
            providers: provider::builtins()
                .into_iter()
                .map(|p| (p.name.clone(), p))
                .collect(),
        }
    }

    /// Reads `path`; a missing file is the defaults.
    pub fn load(path: &Path) -> Result<OAuthConfig, OAuthConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, &path.display().to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Self::defaults()),
            Err(error) => Err(OAuthConfigError::Read {
                file: path.display().to_string(),
                error,
            }),
        }
    }

    /// Parses a config text (`file` names it in errors).
    pub fn parse(text: &str, file: &str) -> Result<OAuthConfig, OAuthConfigError> {
        let raw: Raw = toml::from_str(text).map_err(|e| OAuthConfigError::Syntax {
            file: file.to_string(),
            error: e.to_string(),
        })?;
        let mut c = Self::defaults();
        let empty = |field| OAuthConfigError::Empty {
            file: file.to_string(),
            field,
        };
        if let Some(u) = raw.run_as {
            if u.is_empty() || u.contains([':', '\n']) {
                return Err(OAuthConfigError::RunAs {
                    file: file.to_string(),
                    value: u,
                });
            }
            c.run_as = u;
        }
        if let Some(h) = raw.home {
            c.home = h;
        }
        if let Some(d) = raw.display {
            c.display = d;
        }
        if let Some(b) = raw.browser {
            if b.first().is_none_or(|x| x.is_empty()) {
                return Err(empty("browser"));
            }
            c.browser = b;
        }
        if let Some(s) = raw.shim_command {
            if s.first().is_none_or(|x| x.is_empty()) {
                return Err(empty("shim_command"));
            }
            c.shim_command = s;
        }
        if let Some(p) = raw.proxy.filter(|p| !p.is_empty()) {
            guest_proto::vm_settings::check_proxy_url(&p).map_err(|error| {
                OAuthConfigError::Proxy {
                    file: file.to_string(),
                    error,
                }
            })?;
            c.proxy = Some(p);
        }
        if let Some(d) = raw.deadline_secs {
            c.deadline = Duration::from_secs(d.max(1));
        }
        if let Some(d) = raw.stuck_secs {
            c.stuck_after = Duration::from_secs(d.max(1));
        }
        for (name, o) in &raw.providers {
            let base = c.providers.remove(name);
            let p = provider::merge(name, base, o).map_err(|error| OAuthConfigError::Provider {
                file: file.to_string(),
                error,
            })?;
            if let Some(d) = o.deadline_secs {
                c.deadlines
                    .insert(name.clone(), Duration::from_secs(d.max(1)));
            }
            c.providers.insert(name.clone(), p);
        }
        Ok(c)
    }

    /// The deadline of a session of `provider`.
    pub fn deadline_for(&self, provider: &str) -> Duration {
        self.deadlines
            .get(provider)
            .copied()
            .unwrap_or(self.deadline)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_and_new_providers() {
        let c = OAuthConfig::parse(
            r#"
home = "/home/u"
run_as = "someone"
browser = ["firefox"]
deadline_secs = 5
[providers.codex]
command = ["/opt/codex", "login"]
deadline_secs = 2
[providers.fake]
command = ["fake-cli"]
credential_paths = ["~/.fake.json"]
required_keys = ["token"]
"#,
            "oauth.toml",
        )
        .unwrap();
        assert_eq!(c.home, PathBuf::from("/home/u"));
        assert_eq!(c.run_as, "someone");
        assert_eq!(OAuthConfig::defaults().run_as, "guestkit-login");
        assert_eq!(c.browser, vec!["firefox"]);
        assert_eq!(c.providers["codex"].command, vec!["/opt/codex", "login"]);
        assert_eq!(c.providers["codex"].callback_ports, vec![1455, 1457]);
        assert_eq!(c.deadline_for("codex"), Duration::from_secs(2));
        assert_eq!(c.deadline_for("fake"), Duration::from_secs(5));
        assert!(c.providers.contains_key("gemini_cli"));
    }

    #[test]
    fn errors_name_the_file_and_field() {
        let e = OAuthConfig::parse("browser = []", "o.toml").unwrap_err();
        assert_eq!(e.to_string(), "o.toml: browser must not be empty");
        let e = OAuthConfig::parse("[providers.x]\ncommand=[\"x\"]\n", "o.toml").unwrap_err();
        assert!(e.to_string().contains("credential_paths"), "{e}");
        let e = OAuthConfig::parse("colour = 1", "o.toml").unwrap_err();
        assert!(e.to_string().contains("colour"), "{e}");
        let e = OAuthConfig::parse("[providers.codex]\ncomand=[\"x\"]\n", "o.toml").unwrap_err();
        assert!(e.to_string().contains("comand"), "{e}");
    }
}
