//! `cargo xtask <task>`: the project's build, test and benchmark tasks, in Rust so they run the
//! same on a developer's machine and in CI (`.ci/run` runs exactly `cargo xtask test`).

mod bench_dhcp;
mod bench_netinit;
mod deps;
mod disk;
mod fuzz;
mod sh;
mod static_build;
mod stats;
mod test_cmd;
mod tools;
// ---- bench modules of other components: one `mod` line each (see `bench` below) ----
// bench_agent: guest-agent; bench_wait: host-client; bench_boot: VM images; bench_stream: webrtc.
mod bench_agent;
mod bench_boot;
mod bench_browser;
mod bench_floor;
mod bench_stream;
mod bench_wait;
mod bench_wait_vsock;
// ---- end of bench modules ----
// ---- VM tasks (issue 5 helper): image, demo ----
mod demo;
mod demo_browser;
mod image;
// ---- end of VM tasks ----

use anyhow::{bail, Result};

const USAGE: &str = "\
usage: cargo xtask <task>

  test [--fuzz-seconds N]         install missing system packages, build the static guest-netinit
                                  (static, <= 2.5 MB), build all binaries, run the whole test
                                  suite, run each fuzz target's smoke pass (fixed seed,
                                  500k inputs, at most N s each, default 30)
  build-static                    build the static guest-netinit, print its path and size
  fuzz [TARGET] [--seconds N] [--smoke]
                                  run cargo-fuzz targets (all, or TARGET), N s each (default 60)
                                  with a random seed; --smoke: the test suite's fixed-seed pass
  bench netinit [--runs N]        baseline bash script vs guest-netinit, N runs each (default 50)
  bench agent [--seconds N] [--connections N] [--runs N] [--rounds N] [--no-pin]
                                  the Node baseline agent vs guest-agent serve under wrk: req/s,
                                  p99, RSS; exec -> first /health; restart after kill -9
  bench wait [--runs N] [--max-delay-ms N]
                                  lag between the agent binding and wait_ready returning
  bench stream [--seconds N] [--width W --height H --fps F] [--reconnects N] [--leave MODE]
                                  WebRTC streamer: delivered fps, CPU, bitrate, glass-to-glass latency
  bench boot [--runs N] [--no-systemd] [--no-baseline] [--no-build] [--image browser]
                                  N boots of each image (initramfs, systemd, old-way baseline),
                                  median of each boot stage and of each step (default 10);
                                  --image browser: the browser VM, QEMU -> ready -> streamer
                                  -> first frame on the host, login -> page seen in the stream
  image [initramfs|systemd|browser]
                                  build a bootable image (kernel cached in target/vm-cache);
                                  browser: the fleet's golden ext4 disk (Xvfb, openbox,
                                  Chromium, guestkit) + the initramfs that mounts it
  demo [--json] [--keep] [--image systemd|browser] [--memory MIB] [--extra K=V]
                                  boot a real VM (QEMU, TAP on bridge fcbr0 in a namespace), wait
                                  for the agent with host-client, print the boot timeline + /health
";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Err(e) = dispatch(&args) {
        eprintln!("\nxtask: error: {e:#}");
        std::process::exit(1);
    }
}

fn dispatch(args: &[String]) -> Result<()> {
    let Some((task, rest)) = args.split_first() else {
        print!("{USAGE}");
        bail!("no task given");
    };
    match task.as_str() {
        "test" => test_cmd::cli(rest),
        "build-static" => {
            static_build::build_netinit()?;
            Ok(())
        }
        "fuzz" => fuzz::cli(rest),
        "bench" => bench(rest),
        // Internal: the loopback floor server `bench agent` starts (pinned) as a process.
        "__bench-floor-server" => bench_floor::serve(rest),
        // ---- VM tasks (issue 5 helper) ----
        "image" => image::cli(rest),
        "demo" => demo::cli(rest),
        // Internal: the loopback port forwarder of `demo --image browser --keep`.
        "__forward" => demo_browser::forward(rest),
        // ---- end of VM tasks ----
        "help" | "-h" | "--help" => {
            print!("{USAGE}");
            Ok(())
        }
        other => {
            print!("{USAGE}");
            bail!("unknown task `{other}`")
        }
    }
}

/// `cargo xtask bench <what> [args]`. Each benchmark is a module with
/// `pub fn cli(args: &[String]) -> anyhow::Result<()>`.
fn bench(args: &[String]) -> Result<()> {
    let Some((what, rest)) = args.split_first() else {
        bail!("bench: say what to benchmark: netinit");
    };
    match what.as_str() {
        "netinit" => bench_netinit::cli(rest),
        // ---- other components' benchmarks: one match arm each ----
        "agent" => bench_agent::cli(rest),
        "wait" => bench_wait::cli(rest),
        "boot" => bench_boot::cli(rest),
        "stream" => bench_stream::cli(rest),
        // ---- end of other components' benchmarks ----
        other => bail!("bench: unknown benchmark `{other}`"),
    }
}
