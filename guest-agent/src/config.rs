//! The supervisor's configuration file (`/etc/guest-agent/config.toml`) → typed [`Config`].
//!
//! Parsing is strict: an unknown key or a bad value is an error that names the key and
//! the line, because a typo in a service definition must not silently start nothing.
//! `toml` + serde (`deny_unknown_fields`) does the syntax and the shapes, with spans that
//! we turn into line numbers; [`validate`] then checks what serde cannot (empty commands,
//! unknown `depends_on` targets, cycles, probe URLs) and points at the offending table.

use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::Spanned;

/// A configuration error: where it is and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: line {line}: {key}: {message}")]
pub struct ConfigError {
    /// File name, or `<built-in>` for the dev config.
    pub file: String,
    /// 1-based line; 0 when the file could not be read at all.
    pub line: usize,
    /// Dotted key (`services.web.liveness.http`), or `toml` for syntax errors.
    pub key: String,
    pub message: String,
}

/// When a service is started again after it exits.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

/// What a service is: a child process we run, or a systemd unit we watch over D-Bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Run {
    Command {
        argv: Vec<String>,
        env: BTreeMap<String, String>,
        env_files: Vec<PathBuf>,
        working_dir: Option<PathBuf>,
    },
    SystemdUnit(String),
}

/// An HTTP liveness probe: `failures` failed GETs in a row kill the service's group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Liveness {
    pub url: String,
    pub interval: Duration,
    pub timeout: Duration,
    pub failures: u32,
    /// Grace after each start before the first probe.
    pub initial_delay: Duration,
}

/// One `[services.NAME]` table, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceSpec {
    pub name: String,
    pub run: Run,
    pub required: bool,
    pub restart: RestartPolicy,
    pub liveness: Option<Liveness>,
    pub depends_on: Vec<String>,
}

/// `[supervisor]`: restart timing and shutdown grace, shared by all services.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SupervisorSettings {
    pub backoff_initial: Duration,
    pub backoff_max: Duration,
    pub crash_loop_failures: u32,
    pub crash_loop_window: Duration,
    /// A run at least this long resets the backoff.
    pub healthy_after: Duration,
    pub stop_grace: Duration,
    /// Lines kept per service for `GET /services/:name/logs`.
    pub log_lines: usize,
}

/// The whole file; services in file order is not kept (BTreeMap: stable by name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub supervisor: SupervisorSettings,
    pub services: Vec<ServiceSpec>,
    /// `[serve]`: read by `guest-agent serve`, not the supervisor.
    pub serve: ServeSettings,
}

/// `[serve]`: the vsock ports (`None` = not set here; `Some(0)` = off). The kernel command line
/// and `serve`'s flags win over these (see `serve/vsock.rs`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServeSettings {
    /// AF_VSOCK port `serve` listens on.
    pub vsock_port: Option<u32>,
    /// Host port (CID 2) the readiness line is pushed to.
    pub ready_port: Option<u32>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    supervisor: Option<Spanned<RawSupervisor>>,
    #[serde(default)]
    services: BTreeMap<String, Spanned<RawService>>,
    #[serde(default)]
    serve: Option<Spanned<ServeSettings>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSupervisor {
    backoff_initial_ms: Option<u64>,
    backoff_max_ms: Option<u64>,
    crash_loop_failures: Option<u32>,
    crash_loop_window_ms: Option<u64>,
    healthy_after_ms: Option<u64>,
    stop_grace_ms: Option<u64>,
    log_lines: Option<usize>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawService {
    command: Option<Spanned<Vec<String>>>,
    systemd_unit: Option<Spanned<String>>,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    restart: RestartPolicy,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    env_files: Vec<PathBuf>,
    working_dir: Option<PathBuf>,
    liveness: Option<Spanned<RawLiveness>>,
    #[serde(default)]
    depends_on: Option<Spanned<Vec<String>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLiveness {
    http: String,
    #[serde(default = "default_interval")]
    interval_ms: u64,
    #[serde(default = "default_timeout")]
    timeout_ms: u64,
    #[serde(default = "default_failures")]
    failures: u32,
    #[serde(default)]
    initial_delay_ms: u64,
}

fn default_interval() -> u64 {
    1000
}
fn default_timeout() -> u64 {
    500
}
fn default_failures() -> u32 {
    3
}

impl Default for SupervisorSettings {
    fn default() -> Self {
        Self {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_secs(30),
            crash_loop_failures: 5,
            crash_loop_window: Duration::from_secs(60),
            healthy_after: Duration::from_secs(10),
            stop_grace: Duration::from_secs(5),
            log_lines: 1000,
        }
    }
}

/// Reads and parses a config file.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.display().to_string(),
        line: 0,
        key: "file".into(),
        message: e.to_string(),
    })?;
    parse(&text, &path.display().to_string())
}

/// Parses config text; `file` only names the source in errors.
pub fn parse(text: &str, file: &str) -> Result<Config, ConfigError> {
    let err = |span: Option<std::ops::Range<usize>>, key: &str, message: String| ConfigError {
        file: file.to_string(),
        line: span.map(|s| line_of(text, s.start)).unwrap_or(0),
        key: key.to_string(),
        message,
    };
    let raw: RawConfig =
        toml::from_str(text).map_err(|e| err(e.span(), "toml", e.message().to_string()))?;

    let mut supervisor = SupervisorSettings::default();
    if let Some(s) = raw.supervisor {
        let span = s.span();
        let s = s.into_inner();
        let ms = Duration::from_millis;
        if let Some(v) = s.backoff_initial_ms {
            supervisor.backoff_initial = ms(v);
        }
        if let Some(v) = s.backoff_max_ms {
            supervisor.backoff_max = ms(v);
        }
        if let Some(v) = s.crash_loop_failures {
            if v == 0 {
                return Err(err(
                    Some(span),
                    "supervisor.crash_loop_failures",
                    "must be at least 1".into(),
                ));
            }
            supervisor.crash_loop_failures = v;
        }
        if let Some(v) = s.crash_loop_window_ms {
            supervisor.crash_loop_window = ms(v);
        }
        if let Some(v) = s.healthy_after_ms {
            supervisor.healthy_after = ms(v);
        }
        if let Some(v) = s.stop_grace_ms {
            supervisor.stop_grace = ms(v);
        }
        if let Some(v) = s.log_lines {
            supervisor.log_lines = v.max(1);
        }
        if supervisor.backoff_max < supervisor.backoff_initial {
            return Err(err(
                Some(span),
                "supervisor.backoff_max_ms",
                "must not be below backoff_initial_ms".into(),
            ));
        }
    }

    let mut services = Vec::new();
    let mut spans = HashMap::new();
    for (name, raw) in raw.services {
        let span = raw.span();
        let raw = raw.into_inner();
        let key = |k: &str| format!("services.{name}.{k}");
        if !valid_name(&name) {
            return Err(err(
                Some(span),
                &format!("services.{name}"),
                "service names use letters, digits, `_`, `-` and `.` only".into(),
            ));
        }
        let run = match (raw.command, raw.systemd_unit) {
            (Some(_), Some(u)) => {
                return Err(err(
                    Some(u.span()),
                    &key("systemd_unit"),
                    "a service has either `command` or `systemd_unit`, not both".into(),
                ))
            }
            (None, None) => {
                return Err(err(
                    Some(span),
                    &format!("services.{name}"),
                    "needs `command` (a process to run) or `systemd_unit` (a unit to watch)".into(),
                ))
            }
            (Some(cmd), None) => {
                let cspan = cmd.span();
                let argv = cmd.into_inner();
                if argv.first().map(String::as_str).unwrap_or("").is_empty() {
                    return Err(err(
                        Some(cspan),
                        &key("command"),
                        "must name a program".into(),
                    ));
                }
                Run::Command {
                    argv,
                    env: raw.env,
                    env_files: raw.env_files,
                    working_dir: raw.working_dir,
                }
            }
            (None, Some(unit)) => {
                let uspan = unit.span();
                let unit = unit.into_inner();
                if !unit.contains('.')
                    || unit.contains('/')
                    || unit.chars().any(char::is_whitespace)
                {
                    return Err(err(
                        Some(uspan),
                        &key("systemd_unit"),
                        format!("`{unit}` is not a unit name like `xvfb.service`"),
                    ));
                }
                Run::SystemdUnit(unit)
            }
        };
        let liveness = match raw.liveness {
            None => None,
            Some(l) => {
                let lspan = l.span();
                let l = l.into_inner();
                check_http_url(&l.http)
                    .map_err(|m| err(Some(lspan.clone()), &key("liveness.http"), m))?;
                if l.failures == 0 {
                    return Err(err(
                        Some(lspan),
                        &key("liveness.failures"),
                        "must be at least 1".into(),
                    ));
                }
                if l.interval_ms < 10 || l.timeout_ms == 0 {
                    return Err(err(
                        Some(lspan),
                        &key("liveness.interval_ms"),
                        "interval_ms must be ≥ 10 and timeout_ms ≥ 1".into(),
                    ));
                }
                Some(Liveness {
                    url: l.http,
                    interval: Duration::from_millis(l.interval_ms),
                    timeout: Duration::from_millis(l.timeout_ms),
                    failures: l.failures,
                    initial_delay: Duration::from_millis(l.initial_delay_ms),
                })
            }
        };
        let depends_on = match raw.depends_on {
            None => Vec::new(),
            Some(d) => {
                spans.insert(name.clone(), d.span());
                d.into_inner()
            }
        };
        services.push(ServiceSpec {
            name,
            run,
            required: raw.required,
            restart: raw.restart,
            liveness,
            depends_on,
        });
    }

    // depends_on: targets exist, no self-reference, no cycles.
    let names: HashMap<&str, &ServiceSpec> =
        services.iter().map(|s| (s.name.as_str(), s)).collect();
    for s in &services {
        let key = format!("services.{}.depends_on", s.name);
        for d in &s.depends_on {
            if !names.contains_key(d.as_str()) {
                return Err(err(
                    spans.get(&s.name).cloned(),
                    &key,
                    format!("no service named `{d}`"),
                ));
            }
        }
        if let Some(cycle) = find_cycle(&s.name, &names) {
            return Err(err(
                spans.get(&s.name).cloned(),
                &key,
                format!("dependency cycle: {}", cycle.join(" → ")),
            ));
        }
    }
    let serve = match raw.serve {
        Some(s) => {
            let span = s.span();
            let v = s.into_inner();
            for (k, p) in [
                ("serve.vsock_port", v.vsock_port),
                ("serve.ready_port", v.ready_port),
            ] {
                if p == Some(u32::MAX) {
                    return Err(err(
                        Some(span.clone()),
                        k,
                        "4294967295 is VMADDR_PORT_ANY, not a port (0 = off)".into(),
                    ));
                }
            }
            v
        }
        None => ServeSettings::default(),
    };
    Ok(Config {
        supervisor,
        services,
        serve,
    })
}

/// 1-based line number of byte offset `at`.
fn line_of(text: &str, at: usize) -> usize {
    text.as_bytes()[..at.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
}

fn check_http_url(url: &str) -> Result<(), String> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| format!("`{url}` is not a URL: {e}"))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(format!("`{url}` must be an http:// URL with a host"));
    }
    Ok(())
}

/// Depth-first search from `start`; returns the path of a cycle through `start`.
fn find_cycle(start: &str, names: &HashMap<&str, &ServiceSpec>) -> Option<Vec<String>> {
    fn walk(
        at: &str,
        start: &str,
        names: &HashMap<&str, &ServiceSpec>,
        path: &mut Vec<String>,
    ) -> bool {
        let Some(spec) = names.get(at) else {
            return false;
        };
        for d in &spec.depends_on {
            if d == start {
                path.push(d.clone());
                return true;
            }
            if path.iter().any(|p| p == d) {
                continue;
            }
            path.push(d.clone());
            if walk(d, start, names, path) {
                return true;
            }
            path.pop();
        }
        false
    }
    let mut path = vec![start.to_string()];
    walk(start, start, names, &mut path).then_some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
[services.serve]
command = ["guest-agent", "serve", "--listen", "0.0.0.0:8080"]
required = true

[services.sleeper]
command = ["sleep", "1000"]
restart = "on-failure"
env = { DISPLAY = ":1" }
env_files = ["/etc/environment"]
liveness = { http = "http://127.0.0.1:8080/health", interval_ms = 1000, timeout_ms = 500, failures = 3 }
depends_on = ["xvfb"]

[services.xvfb]
systemd_unit = "xvfb.service"
"#;

    #[test]
    fn the_issue_example_parses() {
        let c = parse(EXAMPLE, "t.toml").unwrap();
        assert_eq!(c.services.len(), 3);
        let sleeper = c.services.iter().find(|s| s.name == "sleeper").unwrap();
        assert_eq!(sleeper.restart, RestartPolicy::OnFailure);
        assert_eq!(sleeper.depends_on, vec!["xvfb"]);
        let l = sleeper.liveness.as_ref().unwrap();
        assert_eq!((l.failures, l.timeout), (3, Duration::from_millis(500)));
        match &sleeper.run {
            Run::Command {
                argv,
                env,
                env_files,
                ..
            } => {
                assert_eq!(argv, &["sleep", "1000"]);
                assert_eq!(env["DISPLAY"], ":1");
                assert_eq!(env_files, &[PathBuf::from("/etc/environment")]);
            }
            other => panic!("{other:?}"),
        }
        let xvfb = c.services.iter().find(|s| s.name == "xvfb").unwrap();
        assert_eq!(xvfb.run, Run::SystemdUnit("xvfb.service".into()));
        assert!(
            c.services
                .iter()
                .find(|s| s.name == "serve")
                .unwrap()
                .required
        );
    }

    #[test]
    fn unknown_key_names_key_and_line() {
        let text = "[services.a]\ncommand = [\"true\"]\nrestrat = \"always\"\n";
        let e = parse(text, "t.toml").unwrap_err();
        assert_eq!(e.line, 3, "{e}");
        assert!(e.message.contains("restrat"), "{e}");
    }

    #[test]
    fn bad_value_names_line() {
        let text = "[services.a]\ncommand = [\"true\"]\n\nrestart = \"sometimes\"\n";
        let e = parse(text, "t.toml").unwrap_err();
        assert_eq!(e.line, 4, "{e}");
        assert!(e.message.contains("sometimes"), "{e}");
    }

    #[test]
    fn semantic_errors_name_the_key() {
        let e = parse("[services.a]\ncommand = []\n", "t").unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("services.a.command", 2));
        let e = parse(
            "[services.a]\ncommand = [\"x\"]\ndepends_on = [\"b\"]\n",
            "t",
        )
        .unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("services.a.depends_on", 3));
        assert!(e.message.contains("`b`"));
        let e = parse(
            "[services.a]\ncommand = [\"x\"]\nliveness = { http = \"ftp://x/\" }\n",
            "t",
        )
        .unwrap_err();
        assert_eq!(e.key, "services.a.liveness.http");
        let e = parse("[services.a]\nrequired = true\n", "t").unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("services.a", 1));
    }

    #[test]
    fn cycles_are_rejected() {
        let text = "[services.a]\ncommand=[\"x\"]\ndepends_on=[\"b\"]\n[services.b]\ncommand=[\"x\"]\ndepends_on=[\"a\"]\n";
        let e = parse(text, "t").unwrap_err();
        assert!(e.message.contains("cycle"), "{e}");
    }

    #[test]
    fn supervisor_table_overrides_defaults() {
        let c = parse(
            "[supervisor]\nbackoff_initial_ms = 5\nstop_grace_ms = 100\n",
            "t",
        )
        .unwrap();
        assert_eq!(c.supervisor.backoff_initial, Duration::from_millis(5));
        assert_eq!(c.supervisor.stop_grace, Duration::from_millis(100));
        assert_eq!(c.supervisor.crash_loop_failures, 5);
        let e = parse("[supervisor]\nbackof_ms = 5\n", "t").unwrap_err();
        assert_eq!(e.line, 2);
    }

    #[test]
    fn serve_table_gives_the_vsock_ports() {
        let c = parse("[serve]\nvsock_port = 1024\nready_port = 0\n", "t").unwrap();
        assert_eq!(c.serve.vsock_port, Some(1024));
        assert_eq!(c.serve.ready_port, Some(0));
        assert_eq!(parse("", "t").unwrap().serve, ServeSettings::default());
        let e = parse("[serve]\nvsock_port = \"8080\"\n", "t").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
        let e = parse("[serve]\nvsock = 1\n", "t").unwrap_err();
        assert!(e.to_string().contains("vsock"), "{e}");
        let e = parse("[serve]\nready_port = 4294967295\n", "t").unwrap_err();
        assert_eq!(e.key, "serve.ready_port", "{e}");
        let e = parse("[serve]\nvsock_port = -1\n", "t").unwrap_err();
        assert_eq!(e.line, 2, "{e}");
    }
}
