//! `guest-agent supervise`: runs the configured services as children (one task each, see
//! [`service`]), reaps, publishes their state for `serve`, talks to systemd (sd_notify,
//! D-Bus for unit-backed services) and stops everything on SIGTERM/SIGINT.

pub mod control;
pub mod probe;
pub mod procinfo;
pub mod reaper;
pub mod service;

use crate::config::{Config, Run, ServiceSpec, SupervisorSettings};
use crate::logs::{LogRing, Sink};
use crate::notify::Notifier;
use crate::state::{rfc3339, StateDir, SupervisorState, STATE_DIR_ENV};
use crate::systemd;
use guest_proto::api::{ServiceState, ServiceStatus};
use reaper::Reaper;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, watch};

/// Mutable state of one service.
#[derive(Debug, Clone)]
pub struct Status {
    pub state: ServiceState,
    pub pid: Option<u32>,
    pub restarts: u32,
    pub last_exit: Option<String>,
    pub since: SystemTime,
    pub message: Option<String>,
}

/// One configured service.
pub struct Slot {
    pub spec: ServiceSpec,
    status: Mutex<Status>,
    pub logs: Arc<Mutex<LogRing>>,
    pub restart_tx: mpsc::Sender<()>,
}

impl Slot {
    pub fn snapshot(&self) -> Status {
        self.status
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

/// Everything the tasks share.
pub struct Shared {
    pub settings: SupervisorSettings,
    pub slots: Vec<Arc<Slot>>,
    /// Bumped on every status change (dependency waits and the publisher watch it).
    pub changed: watch::Sender<u64>,
    pub shutdown: watch::Receiver<bool>,
    pub reaper: Reaper,
    pub sink: Sink,
    pub state_dir: StateDir,
    pub extra_env: Vec<(String, String)>,
    pub systemd: systemd::Handle,
    pub started_at: SystemTime,
}

impl Shared {
    pub fn slot(&self, name: &str) -> Option<&Arc<Slot>> {
        self.slots.iter().find(|s| s.spec.name == name)
    }

    /// Changes a service's status and wakes whoever watches.
    pub fn update(&self, slot: &Slot, f: impl FnOnce(&mut Status)) {
        {
            let mut st = slot.status.lock().unwrap_or_else(|p| p.into_inner());
            f(&mut st);
        }
        self.changed.send_modify(|g| *g = g.wrapping_add(1));
    }

    /// The published view, with RSS/CPU from one scan of /proc (none while no service has a
    /// process: the first state, written before anything starts, costs no /proc walk).
    pub fn state(&self) -> SupervisorState {
        let any_pid = self.slots.iter().any(|s| s.snapshot().pid.is_some());
        let groups = if any_pid {
            procinfo::scan_groups()
        } else {
            Default::default()
        };
        let services: Vec<ServiceStatus> = self
            .slots
            .iter()
            .map(|slot| {
                let st = slot.snapshot();
                let usage = st.pid.and_then(|p| groups.get(&(p as i32)));
                ServiceStatus {
                    name: slot.spec.name.clone(),
                    state: st.state,
                    required: slot.spec.required,
                    pid: st.pid,
                    restarts: st.restarts,
                    last_exit: st.last_exit,
                    since: rfc3339(st.since),
                    rss_bytes: usage.map(|u| u.rss_bytes),
                    cpu_seconds: usage.map(|u| u.cpu_seconds),
                    message: st.message,
                    systemd_unit: match &slot.spec.run {
                        Run::SystemdUnit(u) => Some(u.clone()),
                        Run::Command { .. } => None,
                    },
                }
            })
            .collect();
        let ready = services
            .iter()
            .all(|s| !s.required || s.state == ServiceState::Running);
        SupervisorState {
            supervisor_pid: std::process::id(),
            started_at: rfc3339(self.started_at),
            updated_at: rfc3339(SystemTime::now()),
            ready,
            services,
        }
    }
}

/// Where `supervise` keeps its files, and what the children are told.
pub struct Options {
    pub state_dir: std::path::PathBuf,
}

/// Runs until SIGTERM/SIGINT; then stops every child and returns.
pub async fn run(config: Config, opts: Options) -> anyhow::Result<()> {
    if crate::console::kmsg_path().is_some() {
        // The initramfs's init: a kernel-timestamped line, so the boot timeline shows when
        // the agent started after netinit's exec (other images have the journal for that).
        crate::console::emit(
            guest_proto::Level::Info,
            guest_proto::Event::Start {
                version: env!("CARGO_PKG_VERSION").into(),
            },
        );
    }
    std::fs::create_dir_all(&opts.state_dir)?;
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&opts.state_dir, std::fs::Permissions::from_mode(0o700));
    }
    let state_dir = StateDir(opts.state_dir.clone());
    if let Err(e) = Reaper::become_subreaper() {
        tracing::warn!("cannot become child subreaper ({e}); grandchildren are reaped by init");
    }
    let reaper = Reaper::default();
    tokio::spawn(reaper.clone().run());

    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let (changed, _) = watch::channel(0u64);
    let mut receivers = Vec::new();
    let slots = config
        .services
        .into_iter()
        .map(|spec| {
            let (tx, rx) = mpsc::channel(4);
            receivers.push(rx);
            // Units start as `starting` until D-Bus says (or cannot say) what they are.
            let initial = ServiceState::Starting;
            let initial_message = matches!(spec.run, Run::SystemdUnit(_))
                .then(|| "asking systemd over D-Bus".to_string());
            Arc::new(Slot {
                spec,
                status: Mutex::new(Status {
                    state: initial,
                    pid: None,
                    restarts: 0,
                    last_exit: None,
                    since: SystemTime::now(),
                    message: initial_message,
                }),
                logs: Arc::new(Mutex::new(LogRing::new(config.supervisor.log_lines))),
                restart_tx: tx,
            })
        })
        .collect();
    let shared = Arc::new(Shared {
        settings: config.supervisor,
        slots,
        changed,
        shutdown: shutdown_rx,
        reaper,
        sink: Sink::detect(),
        state_dir: state_dir.clone(),
        extra_env: {
            let mut env = child_env(&opts.state_dir, crate::console::kmsg_path());
            env.extend(vm_settings_env());
            env
        },
        systemd: systemd::Handle::default(),
        started_at: SystemTime::now(),
    });
    let _ = std::fs::remove_file(state_dir.control_socket());
    state_dir.write(&shared.state())?;
    let control = tokio::net::UnixListener::bind(state_dir.control_socket())?;
    tokio::spawn(control::serve(control, shared.clone()));

    if shared
        .slots
        .iter()
        .any(|s| matches!(s.spec.run, Run::SystemdUnit(_)))
    {
        tokio::spawn(systemd::watch_units(shared.clone()));
    }
    let mut tasks = Vec::new();
    for (slot, rx) in shared.slots.iter().zip(receivers) {
        tasks.push(tokio::spawn(service::run(shared.clone(), slot.clone(), rx)));
    }
    let publisher = tokio::spawn(publish(shared.clone()));

    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let sig = tokio::select! {
        _ = term.recv() => "TERM",
        _ = int.recv() => "INT",
    };
    tracing::info!("SIG{sig}: stopping services");
    Notifier::stopping();
    let _ = shutdown_tx.send(true);
    let all = futures_join(tasks);
    let limit = shared.settings.stop_grace + Duration::from_secs(5);
    if tokio::time::timeout(limit, all).await.is_err() {
        tracing::error!("services did not stop within {} ms", limit.as_millis());
    }
    publisher.abort();
    let _ = publisher.await;
    let _ = state_dir.write(&shared.state());
    let _ = std::fs::remove_file(state_dir.control_socket());
    tracing::info!("stopped");
    Ok(())
}

/// What every child is told: the state dir, and the kernel log to write console events to
/// when we write there ourselves (children are not PID 1, so they would not choose it).
pub fn child_env(
    state_dir: &std::path::Path,
    kmsg: Option<&std::path::Path>,
) -> Vec<(String, String)> {
    let mut env = vec![(STATE_DIR_ENV.into(), state_dir.display().to_string())];
    if let Some(k) = kmsg {
        env.push((crate::console::KMSG_ENV.into(), k.display().to_string()));
    }
    env
}

/// Names the kernel command line file the per-VM settings are read from (tests point it at a
/// file; default `/proc/cmdline`).
pub const CMDLINE_ENV: &str = "GUESTKIT_CMDLINE";

/// The per-VM settings of the kernel command line (display size, controller-mode signaling:
/// `guest_proto::vm_settings`) as environment for every service, so the golden image's
/// config needs no per-VM edit. A bad value is said on the console, naming the parameter,
/// and its default is used.
fn vm_settings_env() -> Vec<(String, String)> {
    let path = std::env::var_os(CMDLINE_ENV)
        .filter(|p| !p.is_empty())
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| "/proc/cmdline".into());
    let text = std::fs::read_to_string(&path).unwrap_or_default();
    let (settings, errors) = guest_proto::vm_settings::VmSettings::from_cmdline(
        &guest_proto::KernelCmdline::parse(&text),
    );
    for e in errors {
        crate::console::emit(
            guest_proto::Level::Error,
            guest_proto::Event::Warning {
                message: format!("kernel command line: {e}"),
            },
        );
    }
    settings.env()
}

async fn futures_join(tasks: Vec<tokio::task::JoinHandle<()>>) {
    for t in tasks {
        let _ = t.await;
    }
}

/// Rewrites `state.json` on every change and every second (RSS/CPU move), and tells
/// systemd (READY=1 once required services run, STATUS=, WATCHDOG=1).
async fn publish(shared: Arc<Shared>) {
    let mut changed = shared.changed.subscribe();
    let mut notifier = Notifier::from_env();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut watchdog = tokio::time::interval(
        notifier
            .watchdog_interval()
            .unwrap_or(Duration::from_secs(3600)),
    );
    loop {
        tokio::select! {
            _ = changed.changed() => {}
            _ = tick.tick() => {}
            _ = watchdog.tick() => { notifier.watchdog(); continue; }
        }
        let state = shared.state();
        if let Err(e) = shared.state_dir.write(&state) {
            tracing::warn!(
                "cannot write {}: {e}",
                shared.state_dir.state_file().display()
            );
        }
        notifier.update(&state);
    }
}

/// Waits (bounded) until no process of group `pgid` is left, zombies included.
pub async fn wait_group_gone(pgid: i32, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    while !procinfo::group_members(pgid).is_empty() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
