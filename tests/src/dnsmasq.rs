//! dnsmasq (Debian's `dnsmasq-base`, the old host's DHCP server) serving the bridge `fcbr0`
//! in a topology's host namespace: the real DHCP server of the DHCP tests and benchmark.

use crate::{Topology, HOST_BRIDGE};
use std::process::{Child, Command, Stdio};

/// dnsmasq serving the bridge in the host namespace; killed on drop.
pub struct Dnsmasq {
    child: Child,
    _dir: tempfile::TempDir,
}

impl Dnsmasq {
    /// Starts it with a 10-minute lease range 192.168.100.50–99 and router 192.168.100.1;
    /// `extra` adds options (`--dhcp-option=option:mtu,1400`).
    pub fn start(topo: &Topology, extra: &[&str]) -> Dnsmasq {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", topo.host.name(), "dnsmasq"])
            .args([
                "--keep-in-foreground",
                "--conf-file=/dev/null",
                "--port=0",
                "--user=root",
                "--group=root",
                "--bind-interfaces",
                "--no-ping",
                "--pid-file=",
                "--log-facility=-",
                "--dhcp-range=192.168.100.50,192.168.100.99,255.255.255.0,10m",
                "--dhcp-option=option:router,192.168.100.1",
            ])
            .arg(format!("--interface={HOST_BRIDGE}"))
            .arg(format!(
                "--dhcp-leasefile={}",
                dir.path().join("leases").display()
            ))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().expect("dnsmasq: apt-get install dnsmasq-base");
        Dnsmasq { child, _dir: dir }
    }

    /// Kills it now (the server "dies"), and reaps it.
    pub fn stop(mut self) {
        self.child.kill().expect("kill dnsmasq");
        self.child.wait().expect("reap dnsmasq");
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
