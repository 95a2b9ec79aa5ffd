//! systemd over D-Bus (zbus): services configured with `systemd_unit = "xvfb.service"`
//! are not our children; their state is the unit's `ActiveState`, polled every 2 s, and a
//! restart request becomes `RestartUnit(name, "replace")`.
//!
//! Without a system bus (a container, a laptop without systemd) we say so once, report the
//! units as `unknown` with the reason, and retry quietly every 30 s.

use crate::config::Run;
use crate::supervisor::Shared;
use guest_proto::api::ServiceState;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};
use zbus::proxy::CacheProperties;
use zbus::OwnedObjectPath;

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Manager",
    default_service = "org.freedesktop.systemd1",
    default_path = "/org/freedesktop/systemd1"
)]
pub trait Manager {
    fn load_unit(&self, name: &str) -> zbus::Result<OwnedObjectPath>;
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::Result<OwnedObjectPath>;
}

#[zbus::proxy(
    interface = "org.freedesktop.systemd1.Unit",
    default_service = "org.freedesktop.systemd1"
)]
pub trait Unit {
    #[zbus(property)]
    fn active_state(&self) -> zbus::Result<String>;
    #[zbus(property)]
    fn sub_state(&self) -> zbus::Result<String>;
}

/// The system bus connection, once we have one.
#[derive(Default)]
pub struct Handle {
    conn: Mutex<Option<zbus::Connection>>,
}

impl Handle {
    fn get(&self) -> Option<zbus::Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
    fn set(&self, c: Option<zbus::Connection>) {
        *self.conn.lock().unwrap_or_else(|p| p.into_inner()) = c;
    }

    /// Asks systemd to restart `unit`.
    pub async fn restart(&self, unit: &str) -> Result<(), String> {
        let conn = self.get().ok_or("no system bus connection")?;
        let m = ManagerProxy::new(&conn).await.map_err(|e| e.to_string())?;
        m.restart_unit(unit, "replace")
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// Our state for a unit's `ActiveState`/`SubState`, with a sentence.
pub fn map_state(active: &str, sub: &str) -> (ServiceState, String) {
    let state = match active {
        "active" | "reloading" | "refreshing" => ServiceState::Running,
        "activating" => ServiceState::Starting,
        "deactivating" | "inactive" | "failed" => ServiceState::Stopped,
        _ => ServiceState::Unknown,
    };
    (state, format!("systemd unit {active} ({sub})"))
}

/// One unit's state.
pub async fn unit_state(conn: &zbus::Connection, unit: &str) -> zbus::Result<(String, String)> {
    let path = ManagerProxy::new(conn).await?.load_unit(unit).await?;
    let u = UnitProxy::builder(conn)
        .path(path)
        .cache_properties(CacheProperties::No)
        .build()
        .await?;
    Ok((u.active_state().await?, u.sub_state().await?))
}

/// Keeps the unit-backed services' status current until the process ends.
pub async fn watch_units(shared: Arc<Shared>) {
    let units: Vec<(Arc<crate::supervisor::Slot>, String)> = shared
        .slots
        .iter()
        .filter_map(|s| match &s.spec.run {
            Run::SystemdUnit(u) => Some((s.clone(), u.clone())),
            Run::Command { .. } => None,
        })
        .collect();
    let mut warned = false;
    loop {
        let conn = match shared.systemd.get() {
            Some(c) => c,
            None => match tokio::time::timeout(Duration::from_secs(2), zbus::Connection::system())
                .await
            {
                Ok(Ok(c)) => {
                    tracing::info!("connected to the system bus");
                    shared.systemd.set(Some(c.clone()));
                    c
                }
                outcome => {
                    let why = match outcome {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".to_string(),
                    };
                    if !warned {
                        tracing::warn!(
                            "no system bus ({why}): systemd units are reported as unknown"
                        );
                        warned = true;
                    }
                    for (slot, unit) in &units {
                        let msg = format!("no system bus ({why}): state of {unit} unknown");
                        set(&shared, slot, ServiceState::Unknown, msg);
                    }
                    tokio::time::sleep(Duration::from_secs(30)).await;
                    continue;
                }
            },
        };
        for (slot, unit) in &units {
            match unit_state(&conn, unit).await {
                Ok((active, sub)) => {
                    let (state, msg) = map_state(&active, &sub);
                    set(&shared, slot, state, msg);
                }
                Err(e) => {
                    set(&shared, slot, ServiceState::Unknown, format!("D-Bus: {e}"));
                    if matches!(e, zbus::Error::InputOutput(_)) {
                        shared.systemd.set(None);
                    }
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn set(shared: &Shared, slot: &crate::supervisor::Slot, state: ServiceState, msg: String) {
    let cur = slot.snapshot();
    if cur.state == state && cur.message.as_deref() == Some(msg.as_str()) {
        return;
    }
    shared.update(slot, |st| {
        if st.state != state {
            st.since = SystemTime::now();
        }
        st.state = state;
        st.message = Some(msg);
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn active_states_map_to_ours() {
        assert_eq!(map_state("active", "running").0, ServiceState::Running);
        assert_eq!(map_state("activating", "start").0, ServiceState::Starting);
        assert_eq!(map_state("failed", "failed").0, ServiceState::Stopped);
        assert_eq!(map_state("inactive", "dead").0, ServiceState::Stopped);
        assert_eq!(map_state("maintenance", "x").0, ServiceState::Unknown);
        assert_eq!(
            map_state("failed", "failed").1,
            "systemd unit failed (failed)"
        );
    }
}
