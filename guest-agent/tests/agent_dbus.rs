//! The systemd D-Bus path for real: a private `dbus-daemon`, a fake
//! `org.freedesktop.systemd1` on it (Manager.LoadUnit/RestartUnit, Unit.ActiveState/SubState)
//! served with zbus, and the supervisor pointed at it through `DBUS_SYSTEM_BUS_ADDRESS`.
//! (A session bus cannot host the real systemd, but it speaks the same protocol.)

mod common;
use common::*;
use guest_proto::api::{RestartResponse, ServiceState};
use std::io::BufRead;
use std::sync::{Arc, Mutex};
use zbus::OwnedObjectPath;

#[derive(Default)]
struct Fake {
    active: String,
    sub: String,
    restarts: Vec<(String, String)>,
}

struct Manager(Arc<Mutex<Fake>>);
struct Unit(Arc<Mutex<Fake>>);

const UNIT_PATH: &str = "/org/freedesktop/systemd1/unit/xvfb_2eservice";

#[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
impl Manager {
    fn load_unit(&self, name: &str) -> zbus::fdo::Result<OwnedObjectPath> {
        if name != "xvfb.service" {
            return Err(zbus::fdo::Error::Failed(format!("no unit {name}")));
        }
        Ok(OwnedObjectPath::try_from(UNIT_PATH).unwrap())
    }
    fn restart_unit(&self, name: &str, mode: &str) -> zbus::fdo::Result<OwnedObjectPath> {
        let mut f = self.0.lock().unwrap();
        f.restarts.push((name.to_string(), mode.to_string()));
        f.active = "active".into();
        f.sub = "running".into();
        Ok(OwnedObjectPath::try_from("/org/freedesktop/systemd1/job/1").unwrap())
    }
}

#[zbus::interface(name = "org.freedesktop.systemd1.Unit")]
impl Unit {
    #[zbus(property)]
    fn active_state(&self) -> String {
        self.0.lock().unwrap().active.clone()
    }
    #[zbus(property)]
    fn sub_state(&self) -> String {
        self.0.lock().unwrap().sub.clone()
    }
}

struct Daemon(std::process::Child);
impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A private bus; fails (never skips) when dbus-daemon is missing.
fn start_bus(dir: &std::path::Path) -> (Daemon, String) {
    let conf = dir.join("bus.conf");
    std::fs::write(
        &conf,
        format!(
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}/bus</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow send_destination="*" eavesdrop="true"/>
    <allow receive_sender="*"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
            dir.display()
        ),
    )
    .unwrap();
    let mut child = std::process::Command::new("dbus-daemon")
        .arg(format!("--config-file={}", conf.display()))
        .args(["--nofork", "--print-address"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("dbus-daemon is needed for this test (apt-get install dbus-daemon)");
    let mut addr = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut addr)
        .unwrap();
    (Daemon(child), addr.trim().to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unit_state_and_restart_over_a_real_bus() {
    let busdir = tempfile::tempdir().unwrap();
    let (_daemon, addr) = start_bus(busdir.path());
    let fake = Arc::new(Mutex::new(Fake {
        active: "activating".into(),
        sub: "start".into(),
        ..Default::default()
    }));
    let build = zbus::connection::Builder::address(addr.as_str())
        .name("org.freedesktop.systemd1")
        .serve_at("/org/freedesktop/systemd1", Manager(fake.clone()))
        .serve_at(UNIT_PATH, Unit(fake.clone()))
        .build();
    let _conn = tokio::time::timeout(DEADLINE, build)
        .await
        .expect("connecting to the private bus hung")
        .expect("fake systemd1 on the private bus");

    let agent = Agent::start_with_env(
        r#"
[services.serve]
command = ["{bin}", "serve", "--listen", "127.0.0.1:0", "--token-file", "{dir}/none", "--cmdline", "{dir}/none", "--insecure-no-auth"]

[services.xvfb]
systemd_unit = "xvfb.service"
"#,
        &[("DBUS_SYSTEM_BUS_ADDRESS", addr.as_str())],
    );
    let s = agent.wait("xvfb activating", |a| {
        a.service("xvfb").filter(|s| {
            s.state == ServiceState::Starting
                && s.message.as_deref() != Some("asking systemd over D-Bus")
        })
    });
    assert_eq!(
        s.message.as_deref(),
        Some("systemd unit activating (start)")
    );

    {
        let mut f = fake.lock().unwrap();
        f.active = "failed".into();
        f.sub = "failed".into();
    }
    let s = agent.wait("xvfb failed", |a| {
        a.service("xvfb")
            .filter(|s| s.state == ServiceState::Stopped)
    });
    assert_eq!(s.message.as_deref(), Some("systemd unit failed (failed)"));

    let http_addr = agent.listening_addr();
    let (code, body) = http(&http_addr, "POST", "/services/xvfb/restart", None).unwrap();
    assert_eq!(code, 200, "{body}");
    let r: RestartResponse = serde_json::from_str(&body).unwrap();
    assert_eq!(r.action, "restart-unit-queued");
    assert_eq!(
        fake.lock().unwrap().restarts,
        [("xvfb.service".to_string(), "replace".to_string())]
    );
    let s = agent.wait("xvfb running", |a| {
        a.service("xvfb")
            .filter(|s| s.state == ServiceState::Running)
    });
    assert_eq!(s.message.as_deref(), Some("systemd unit active (running)"));
}
