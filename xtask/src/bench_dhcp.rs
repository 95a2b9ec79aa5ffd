//! The DHCP part of `cargo xtask bench netinit` (issue 6): guest-netinit with `ip=eth0:dhcp`
//! against a real dnsmasq on the host bridge, in the same namespaces as the static runs. Each
//! run starts from a fresh NIC (no address, down) and is timed exec → exit; the lease must be
//! applied (an address in dnsmasq's range, the default route) and the gateway must answer.

use crate::sh::banner;
use crate::stats::{print_table, summarize};
use anyhow::{bail, Context, Result};
use guestkit_tests::dnsmasq::Dnsmasq;
use guestkit_tests::{NetinitRun, Topology, GUEST_NIC};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

const CMDLINE: &str = "console=ttyS0 ip=eth0:dhcp";

pub fn run(netinit: &Path, runs: usize) -> Result<()> {
    banner(&format!(
        "bench netinit, DHCP: {runs} runs against dnsmasq on fcbr0"
    ));
    let topo = Topology::new();
    topo.attach_guest_nic(GUEST_NIC);
    let _dnsmasq = Dnsmasq::start(&topo, &[]);
    let mut run = NetinitRun::new(CMDLINE);
    run.arg("--dhcp-timeout").arg("10s");

    let mut wall = Vec::with_capacity(runs);
    let mut step = Vec::with_capacity(runs);
    for i in 1..=runs {
        topo.reset_guest_nic(GUEST_NIC);
        let mut cmd = topo.guest.setns_only_command(netinit);
        cmd.args(run.args()).stdin(Stdio::null());
        let started = Instant::now();
        let out = cmd
            .output()
            .with_context(|| format!("DHCP run {i}: cannot start"))?;
        wall.push(started.elapsed());
        if !out.status.success() {
            bail!(
                "DHCP run {i} failed ({}):\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let report = run
            .report()
            .with_context(|| format!("DHCP run {i} wrote no state.json"))?;
        let lease = report
            .dhcp
            .as_ref()
            .and_then(|d| d.lease.as_ref())
            .with_context(|| format!("DHCP run {i}: no lease in state.json: {:?}", report.dhcp))?;
        let last = lease.address.octets()[3];
        if !(50..=99).contains(&last) || topo.guest.default_routes().is_empty() {
            bail!("DHCP run {i}: lease {lease:?} not applied as dnsmasq gave it");
        }
        if !topo.guest_reaches_gateway() {
            bail!("DHCP run {i}: gateway does not answer ping after the run");
        }
        step.extend(
            report
                .steps
                .iter()
                .find(|s| s.name == "dhcp")
                .map(|s| Duration::from_micros(s.duration_us)),
        );
    }
    let (Some(wall), Some(step)) = (summarize(&wall), summarize(&step)) else {
        bail!("no samples");
    };
    print_table(&[("DHCP run", &wall), ("  dhcp step", &step)]);
    println!("(exec → exit with the lease applied and the gateway probed; the dhcp step is DISCOVER → ACK)");
    Ok(())
}
