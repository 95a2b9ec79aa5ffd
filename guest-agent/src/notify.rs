//! sd_notify: READY=1 once every required service runs (Type=notify: systemd orders
//! dependants on real readiness, failure F10), STATUS= with a one-line summary when it
//! changes, WATCHDOG=1 at half of `WATCHDOG_USEC`. All no-ops without `NOTIFY_SOCKET`.

use crate::state::SupervisorState;
use guest_proto::api::ServiceState;
use sd_notify::NotifyState;
use std::time::Duration;

pub struct Notifier {
    enabled: bool,
    ready_sent: bool,
    last_status: String,
    watchdog: Option<Duration>,
}

impl Notifier {
    pub fn from_env() -> Self {
        Self {
            enabled: std::env::var_os("NOTIFY_SOCKET").is_some(),
            ready_sent: false,
            last_status: String::new(),
            watchdog: sd_notify::watchdog_enabled(),
        }
    }

    /// How often to send WATCHDOG=1 (half the timeout), when systemd asked for it.
    pub fn watchdog_interval(&self) -> Option<Duration> {
        self.watchdog.map(|d| d / 2).filter(|d| !d.is_zero())
    }

    pub fn watchdog(&self) {
        if self.enabled && self.watchdog.is_some() {
            let _ = sd_notify::notify(&[NotifyState::Watchdog]);
        }
    }

    pub fn update(&mut self, state: &SupervisorState) {
        if !self.enabled {
            return;
        }
        let status = summary(state);
        if state.ready && !self.ready_sent {
            self.ready_sent = true;
            let _ = sd_notify::notify(&[NotifyState::Ready, NotifyState::Status(&status)]);
            self.last_status = status;
        } else if status != self.last_status {
            let _ = sd_notify::notify(&[NotifyState::Status(&status)]);
            self.last_status = status;
        }
    }

    pub fn stopping() {
        if std::env::var_os("NOTIFY_SOCKET").is_some() {
            let _ = sd_notify::notify(&[
                NotifyState::Stopping,
                NotifyState::Status("stopping services"),
            ]);
        }
    }
}

/// `3/4 services running; xvfb crash-loop`.
pub fn summary(state: &SupervisorState) -> String {
    let running = state
        .services
        .iter()
        .filter(|s| s.state == ServiceState::Running)
        .count();
    let mut out = format!("{running}/{} services running", state.services.len());
    let bad: Vec<String> = state
        .services
        .iter()
        .filter(|s| matches!(s.state, ServiceState::CrashLoop | ServiceState::Backoff))
        .map(|s| {
            format!(
                "{} {}",
                s.name,
                if s.state == ServiceState::CrashLoop {
                    "crash-loop"
                } else {
                    "backoff"
                }
            )
        })
        .collect();
    if !bad.is_empty() {
        out.push_str("; ");
        out.push_str(&bad.join(", "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use guest_proto::api::ServiceStatus;
    use std::os::unix::net::UnixDatagram;

    fn svc(name: &str, state: ServiceState) -> ServiceStatus {
        ServiceStatus {
            name: name.into(),
            state,
            required: true,
            pid: None,
            restarts: 0,
            last_exit: None,
            since: String::new(),
            rss_bytes: None,
            cpu_seconds: None,
            message: None,
            systemd_unit: None,
        }
    }

    #[test]
    fn summary_names_the_troubled_services() {
        let st = SupervisorState {
            supervisor_pid: 1,
            started_at: String::new(),
            updated_at: String::new(),
            ready: false,
            services: vec![
                svc("a", ServiceState::Running),
                svc("b", ServiceState::CrashLoop),
            ],
        };
        assert_eq!(summary(&st), "1/2 services running; b crash-loop");
    }

    /// The real protocol over a real socket: READY=1 once, STATUS= on change only.
    #[test]
    fn ready_is_sent_once_over_the_notify_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let sock = UnixDatagram::bind(&path).unwrap();
        sock.set_nonblocking(true).unwrap();
        std::env::set_var("NOTIFY_SOCKET", &path);
        let mut n = Notifier::from_env();
        let mut st = SupervisorState {
            supervisor_pid: 1,
            started_at: String::new(),
            updated_at: String::new(),
            ready: false,
            services: vec![svc("a", ServiceState::Starting)],
        };
        n.update(&st);
        st.ready = true;
        st.services[0].state = ServiceState::Running;
        n.update(&st);
        n.update(&st);
        std::env::remove_var("NOTIFY_SOCKET");
        let mut msgs = Vec::new();
        let mut buf = [0u8; 512];
        while let Ok(len) = sock.recv(&mut buf) {
            msgs.push(String::from_utf8_lossy(&buf[..len]).into_owned());
        }
        assert_eq!(msgs.len(), 2, "{msgs:?}");
        assert!(msgs[0].contains("STATUS=0/1 services running"), "{msgs:?}");
        assert!(
            msgs[1].contains("READY=1") && msgs[1].contains("STATUS=1/1 services running"),
            "{msgs:?}"
        );
    }
}
