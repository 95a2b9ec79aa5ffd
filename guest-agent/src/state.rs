//! What `supervise` publishes for `serve`: one JSON file, `state.json` in the state
//! directory, rewritten atomically (write a temp file, rename) on every change and every
//! second, plus `control.sock` beside it for what a file cannot do (logs, restarts).
//!
//! A file rather than a socket for state because `serve` answers `/health` from it at high
//! rates and must keep answering while the supervisor is busy or restarting.

use guest_proto::api::ServiceStatus;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// Default state directory (tmpfs, root-only).
pub const DEFAULT_STATE_DIR: &str = "/run/guest-agent";
/// Children learn the state directory from this variable (so `serve` finds it in `--dev`).
pub const STATE_DIR_ENV: &str = "GUEST_AGENT_STATE_DIR";

/// Contents of `state.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupervisorState {
    pub supervisor_pid: u32,
    /// RFC 3339.
    pub started_at: String,
    pub updated_at: String,
    /// Every required service runs.
    pub ready: bool,
    pub services: Vec<ServiceStatus>,
}

/// Paths inside a state directory.
#[derive(Debug, Clone)]
pub struct StateDir(pub PathBuf);

impl StateDir {
    pub fn state_file(&self) -> PathBuf {
        self.0.join("state.json")
    }
    pub fn control_socket(&self) -> PathBuf {
        self.0.join("control.sock")
    }

    /// Writes `state.json` atomically: readers see the old or the new file, never half.
    pub fn write(&self, state: &SupervisorState) -> std::io::Result<()> {
        let tmp = self.0.join(".state.json.tmp");
        let json = serde_json::to_vec(state).map_err(std::io::Error::other)?;
        std::fs::write(&tmp, json)?;
        std::fs::rename(&tmp, self.state_file())
    }

    /// Reads `state.json`; `Ok(None)` when there is none (no supervisor).
    pub fn read(&self) -> Result<Option<SupervisorState>, String> {
        read_state(&self.state_file())
    }
}

fn read_state(path: &Path) -> Result<Option<SupervisorState>, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", path.display())),
    }
}

/// RFC 3339 UTC with milliseconds, the format of JavaScript's `toISOString()`.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_look_like_javascript_iso_strings() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123);
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20.123Z");
    }

    #[test]
    fn write_then_read_round_trips_and_missing_is_none() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir(dir.path().to_path_buf());
        assert_eq!(sd.read().unwrap(), None);
        let st = SupervisorState {
            supervisor_pid: 7,
            started_at: rfc3339(SystemTime::now()),
            updated_at: rfc3339(SystemTime::now()),
            ready: true,
            services: vec![],
        };
        sd.write(&st).unwrap();
        assert_eq!(sd.read().unwrap(), Some(st));
        std::fs::write(sd.state_file(), b"{").unwrap();
        assert!(sd.read().is_err());
    }
}
