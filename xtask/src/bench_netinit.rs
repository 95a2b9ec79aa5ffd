//! `cargo xtask bench netinit [--runs N]`: the old bash network setup against the static
//! guest-netinit, side by side in the same run, in the same namespaces as the netns tests
//! (guest `eth0` over a veth to the host bridge `fcbr0` 192.168.100.1/24).
//!
//! Each run is timed from spawn to exit, with the program started directly in the guest
//! namespace by a thread that entered it (`posix_spawn`, no fork of this process; no
//! `ip netns exec` in front, no private `/sys`: neither program reads per-namespace sysfs).
//! The `--root` both write under is a tmpfs, as `/run` is in a VM and everything is in the
//! initramfs image (on this machine's ext4 each atomic `rename` costs a journal commit).
//! Between runs the guest NIC is reset to
//! how a fresh VM has it (no address, no route, down). After every run, outside the timing,
//! the gateway must answer a ping from the guest namespace, or the benchmark fails.
//!
//! Issue 2's goal: guest-netinit ≥ 500× faster than the baseline, median ≤ 3 ms.

use crate::sh::{banner, repo_root};
use crate::stats::{ms, print_table, summarize, Summary};
use crate::{deps, static_build};
use anyhow::{bail, Context, Result};
use guestkit_tests::{NetinitRun, NsSpawner, Topology, GUEST_NIC};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

const CMDLINE: &str = "console=ttyS0 reboot=k panic=1 pci=off \
                       ip=192.168.100.2::192.168.100.1:255.255.255.0:vm1:eth0:off";
const GUEST_ADDRESS: &str = "192.168.100.2/24";
const GOAL_RATIO: f64 = 500.0;
const GOAL_MEDIAN: Duration = Duration::from_millis(3);

/// The old image's script, next to the repository in `../shared/bench/baseline/`.
fn baseline_script() -> Result<PathBuf> {
    let path = repo_root().join("../shared/bench/baseline/setup-network-kernel-params.sh");
    path.canonicalize()
        .with_context(|| format!("baseline script {} not found", path.display()))
}

/// Parses `cargo xtask bench netinit` arguments and runs.
pub fn cli(args: &[String]) -> Result<()> {
    let mut runs = 50usize;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--runs" => {
                let value = it.next().context("--runs needs a number")?;
                runs = value
                    .parse()
                    .with_context(|| format!("--runs: `{value}` is not a whole number"))?;
                if runs == 0 {
                    bail!("--runs must be at least 1");
                }
            }
            other => bail!("bench netinit: unknown argument `{other}` (known: --runs N)"),
        }
    }
    run(runs)
}

/// One timed run: spawn → exit, checked for success.
fn timed(spawner: &NsSpawner, mut cmd: Command, what: &str, i: usize) -> Result<Duration> {
    cmd.stdin(Stdio::null());
    let (took, out) = spawner
        .output(cmd)
        .with_context(|| format!("{what} run {i}: cannot start"))?;
    if !out.status.success() {
        bail!(
            "{what} run {i} failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(took)
}

fn verify(topo: &Topology, what: &str, i: usize) -> Result<()> {
    let addrs = topo.guest.ipv4_addresses(GUEST_NIC);
    if !addrs.iter().any(|a| a.to_string() == GUEST_ADDRESS) {
        bail!("{what} run {i}: {GUEST_NIC} lacks {GUEST_ADDRESS}, has {addrs:?}");
    }
    if topo.guest.default_routes().is_empty() {
        bail!("{what} run {i}: no default route in the guest");
    }
    if !topo.guest_reaches_gateway() {
        bail!("{what} run {i}: gateway 192.168.100.1 does not answer ping after the run");
    }
    Ok(())
}

fn run(runs: usize) -> Result<()> {
    deps::ensure(deps::TEST_PACKAGES)?;
    let netinit = static_build::build_netinit()?;
    let netinit_size = std::fs::metadata(&netinit)?.len();
    let script = baseline_script()?;

    banner(&format!("bench netinit: {runs} runs each, alternating"));
    let topo = Topology::new();
    topo.attach_guest_nic(GUEST_NIC);
    let netinit_run = NetinitRun::new_on_tmpfs(CMDLINE);
    let script_log = netinit_run.root().join("network-setup.log");
    let spawner = NsSpawner::new(&topo.guest);

    let mut baseline_times = Vec::with_capacity(runs);
    let mut netinit_times = Vec::with_capacity(runs);
    let mut probe_rtts = Vec::with_capacity(runs);
    let mut self_reported = Vec::with_capacity(runs);
    for i in 1..=runs {
        topo.reset_guest_nic(GUEST_NIC);
        let mut cmd = Command::new("bash");
        cmd.arg(&script)
            .arg(netinit_run.cmdline_path())
            .env("NETSETUP_LOG", &script_log);
        baseline_times.push(timed(&spawner, cmd, "baseline", i)?);
        verify(&topo, "baseline", i)?;

        topo.reset_guest_nic(GUEST_NIC);
        let mut cmd = Command::new(&netinit);
        cmd.args(netinit_run.args());
        netinit_times.push(timed(&spawner, cmd, "guest-netinit", i)?);
        verify(&topo, "guest-netinit", i)?;
        let report = netinit_run
            .report()
            .with_context(|| format!("guest-netinit run {i} wrote no state.json"))?;
        self_reported.push(Duration::from_micros(report.duration_us));
        match report.probe {
            Some(p) if p.ok => probe_rtts.extend(p.rtt_us.map(Duration::from_micros)),
            other => bail!("guest-netinit run {i}: gateway probe did not succeed: {other:?}"),
        }
        if i % 10 == 0 || i == runs {
            println!("  {i}/{runs} runs done");
        }
    }

    // What starting a process costs in this setup, measured on `true`: part of both columns.
    // For comparison, the same through a fork of this process with setns before exec.
    let mut overhead = Vec::with_capacity(runs);
    let mut overhead_fork = Vec::with_capacity(runs);
    let fork_spawner = NsSpawner::here();
    for i in 1..=runs {
        overhead.push(timed(&spawner, Command::new("true"), "true", i)?);
        let forked = topo.guest.setns_only_command("true");
        overhead_fork.push(timed(&fork_spawner, forked, "true", i)?);
    }

    let (Some(base), Some(ours), Some(overhead), Some(overhead_fork)) = (
        summarize(&baseline_times),
        summarize(&netinit_times),
        summarize(&overhead),
        summarize(&overhead_fork),
    ) else {
        bail!("no samples");
    };
    print_report(&script, &netinit, netinit_size, &base, &ours, &probe_rtts);
    if let Some(own) = summarize(&self_reported) {
        println!(
            "guest-netinit's own measure (state.json duration_us, start of main → report): \
             median {}, p90 {}",
            ms(own.median),
            ms(own.p90)
        );
    }
    println!(
        "spawn overhead included in both (posix_spawn + exec of `true` in the namespace): \
         median {} (through fork + setns + exec, as a pre_exec hook makes it: {})",
        ms(overhead.median),
        ms(overhead_fork.median)
    );
    drop(topo);
    crate::bench_dhcp::run(&netinit, runs)
}

fn print_report(
    script: &Path,
    netinit: &Path,
    size: u64,
    base: &Summary,
    ours: &Summary,
    probe_rtts: &[Duration],
) {
    banner("results (exec → exit, gateway verified after every run)");
    println!("cmdline: {CMDLINE}");
    println!("baseline:      bash {}", script.display());
    println!(
        "               waits for eth0, sets it up, and pings the gateway 3 times (ping -c 3)"
    );
    println!(
        "guest-netinit: {} ({size} bytes, {:.2} MB)",
        netinit.display(),
        size as f64 / 1e6
    );
    println!("               probes the gateway once (one ARP request), result in state.json");
    println!();
    print_table(&[("baseline script", base), ("guest-netinit", ours)]);
    if let Some(rtt) = summarize(probe_rtts) {
        println!("guest-netinit ARP probe RTT: median {}", ms(rtt.median));
    }
    let ratio = base.median.as_secs_f64() / ours.median.as_secs_f64();
    let ratio_p90 = base.p90.as_secs_f64() / ours.p90.as_secs_f64();
    println!();
    println!(
        "speed-up (baseline / guest-netinit): {ratio:.0}× at the median, {ratio_p90:.0}× at p90"
    );
    let met = ratio >= GOAL_RATIO && ours.median <= GOAL_MEDIAN;
    println!(
        "goal (≥ {GOAL_RATIO:.0}×, median ≤ {}): {}",
        ms(GOAL_MEDIAN),
        if met { "MET" } else { "NOT MET" }
    );
    println!("guest-netinit binary size: {size} bytes");
}
