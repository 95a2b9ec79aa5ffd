//! `cargo xtask test`: the one command that checks everything (README, `.ci/run`).
//!
//! 1. installs the system packages the tests need (only the missing ones);
//! 2. builds the static guest-netinit and checks it is static and within budget;
//! 3. builds every workspace binary and the static agent of the VM images (the VM tests boot
//!    it: `GUESTKIT_VM_AGENT`), then runs the whole suite (nextest when installed, else
//!    `cargo test`), telling the tests where the binaries are through `GUESTKIT_BIN_DIR`
//!    (static build first: the netns tests exercise the binary that ships); before the suite,
//!    guest-netinit's module test runs against the Debian cloud kernel package;
//! 4. runs each fuzz target's bounded smoke pass.

use crate::sh::{banner, capture, cargo, run, target_dir};
use crate::{deps, disk, fuzz, image, static_build, tools};
use anyhow::{anyhow, bail, Context, Result};
use std::time::Instant;

/// Parses `cargo xtask test` arguments and runs.
pub fn cli(args: &[String]) -> Result<()> {
    let mut fuzz_seconds = fuzz::TEST_SECONDS;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--fuzz-seconds" => {
                let value = it.next().context("--fuzz-seconds needs a number")?;
                fuzz_seconds = value
                    .parse()
                    .with_context(|| format!("--fuzz-seconds: `{value}` is not a whole number"))?;
            }
            other => bail!("test: unknown argument `{other}` (known: --fuzz-seconds N)"),
        }
    }
    run_all(fuzz_seconds)
}

fn run_all(fuzz_seconds: u64) -> Result<()> {
    let started = Instant::now();
    // The netns tests' tools, and QEMU, debootstrap, systemd for the VM tests.
    deps::ensure_all(&[
        deps::TEST_PACKAGES,
        deps::STREAMER_BUILD_PACKAGES,
        image::VM_PACKAGES,
        image::SYSTEMD_PACKAGES,
    ])?;
    static_build::build_netinit()?;

    banner("workspace binaries");
    run(cargo().args(["build", "--workspace", "--bins"]))?;
    // The VM tests boot the agent that ships in the images (static, profile vmagent), not the
    // debug build.
    let vm_bins = image::build_agent()?;

    // The real login CLIs (npm, pinned) and the VM tests' vsock device (crates.io, pinned):
    // both cached under target/vm-cache.
    let login_clis = deps::install_login_clis(&target_dir().join("vm-cache/npm"))?;
    let vhost_vsock = tools::vhost_device_vsock()?;
    disk::report("the builds", &target_dir());

    banner("test suite");
    let bin_dirs = std::env::join_paths([static_build::static_dir(), target_dir().join("debug")])
        .context("joining binary directories")?;
    let mut tests = cargo();
    tests.env("GUESTKIT_BIN_DIR", &bin_dirs);
    tests.env(
        guestkit_tests::vm::fixture::AGENT_OVERRIDE_ENV,
        &vm_bins.agent,
    );
    tests.env(
        guestkit_tests::vm::fixture::STREAMER_OVERRIDE_ENV,
        &vm_bins.streamer,
    );
    tests.env("GUESTKIT_LOGIN_CLIS", &login_clis);
    tests.env(tools::VHOST_VSOCK_ENV, &vhost_vsock);
    if capture(cargo().args(["nextest", "--version"])).is_ok() {
        // nextest does not run doctests: run them first, so the suite's summary line is
        // nextest's and comes last.
        run(cargo().args(["test", "--workspace", "--doc"]))?;
        debian_kernel_modules()?;
        // --no-fail-fast: one run shows every failure.
        tests.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
        run(&mut tests)?;
    } else {
        println!("(cargo-nextest not installed: using cargo test)");
        debian_kernel_modules()?;
        tests.args(["test", "--workspace", "--no-fail-fast"]);
        run(&mut tests)?;
    }
    disk::report("the test suite", &target_dir());

    if fuzz_seconds > 0 {
        fuzz::run_targets(
            None,
            fuzz::Mode::Smoke {
                seconds: fuzz_seconds,
            },
        )?;
        disk::report("the fuzzers", &target_dir());
    } else {
        println!("\n(fuzzing turned off with --fuzz-seconds 0)");
    }
    println!(
        "\ncargo xtask test: all green in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// guest-netinit's module resolution against Debian's cloud kernel package, which ships
/// without `modules.dep` (the old system's first outage). The test is `#[ignore]`d in a plain
/// `cargo test` because it needs the package unpacked; here it gets the VM tests' cached copy.
fn debian_kernel_modules() -> Result<()> {
    banner("guest-netinit modules vs the Debian cloud kernel package");
    let kernel = guestkit_tests::vm::kernel::ensure()
        .map_err(|e| anyhow!("fetching the Debian cloud kernel package: {e}"))?;
    // modules_dir is <unpacked>/lib/modules/<release>.
    let root = kernel
        .modules_dir
        .ancestors()
        .nth(3)
        .with_context(|| format!("unexpected modules dir {}", kernel.modules_dir.display()))?;
    run(cargo().env("GKT_KERNEL_ROOT", root).args([
        "test",
        "-p",
        "guest-netinit",
        "--test",
        "modules_debian",
        "--",
        "--ignored",
    ]))
}
