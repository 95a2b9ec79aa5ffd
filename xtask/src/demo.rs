//! `cargo xtask demo [--json] [--keep] [--image initramfs]`: boot a real VM with guestkit
//! inside and show what the host sees (README's first command).
//!
//! Installs what it needs, builds the image, makes a namespace with bridge `fcbr0`
//! (192.168.100.1/24) and a TAP, boots QEMU on it, waits with host-client's `wait_ready`
//! (following the serial console), prints the boot timeline and the agent's `/health`, then
//! stops the VM and removes the namespace (`--keep` leaves both and says how to reach them).

use crate::image;
use crate::sh::banner;
use anyhow::{bail, Context, Result};
use guestkit_tests::vm::boot::{pretty_health, BootSummary, VsockHealth, DEFAULT_MEMORY_MIB};
use guestkit_tests::vm::{self, cmdline, default_boot_args, BootSpec, Vm, GUEST_IP};
use std::time::Duration;

/// How long the demo waits for the agent (TCG boots take ~5 s on an idle machine).
const DEADLINE: Duration = Duration::from_secs(120);

struct Options {
    json: bool,
    keep: bool,
    image: String,
    /// `--extra K=V`: more kernel parameters, checked by BootArgs.
    extra: Vec<(String, Option<String>)>,
    /// `--memory MIB` (default: 256, 1024 for the systemd image).
    memory_mib: Option<u32>,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut opts = Options {
        json: false,
        keep: false,
        image: "initramfs".into(),
        extra: Vec::new(),
        memory_mib: None,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--json" => opts.json = true,
            "--keep" => opts.keep = true,
            "--image" => opts.image = it.next().context("--image needs a name")?.clone(),
            "--memory" => {
                let text = it.next().context("--memory needs MiB")?;
                opts.memory_mib = Some(
                    text.parse()
                        .with_context(|| format!("--memory: `{text}` is not a number of MiB"))?,
                );
            }
            "--extra" => {
                let text = it.next().context("--extra needs KEY=VALUE")?;
                opts.extra.push(
                    host_client::BootArgs::parse_extra(text)
                        .map_err(|e| anyhow::anyhow!("--extra: {e}"))?,
                );
            }
            other => bail!(
                "demo: unknown argument `{other}` (known: --json --keep --image NAME --extra K=V --memory MIB)"
            ),
        }
    }
    Ok(opts)
}

/// `cargo xtask demo ...`.
pub fn cli(args: &[String]) -> Result<()> {
    let opts = parse(args)?;
    if opts.image == "browser" {
        return crate::demo_browser::run(opts.json, opts.keep);
    }
    let built = match opts.image.as_str() {
        "initramfs" => image::initramfs()?,
        "systemd" => image::systemd()?,
        other => bail!("demo: unknown image `{other}` (known: initramfs, systemd, browser)"),
    };
    let mut args = if opts.image == "systemd" {
        vm::boot::systemd_boot_args()
    } else {
        default_boot_args()
    };
    args.extra.extend(opts.extra.iter().cloned());
    let cmdline = if opts.image == "systemd" {
        args.build()
            .map_err(|e| anyhow::anyhow!("boot args: {e}"))?
    } else {
        cmdline(&args, &[])?
    };
    let console = vm::images_dir().join(format!("demo-{}-console.log", opts.image));
    let spec = BootSpec {
        kernel: built.kernel.clone(),
        initrd: built.image.clone(),
        cmdline: cmdline.clone(),
        memory_mib: opts.memory_mib.unwrap_or(if opts.image == "systemd" {
            vm::systemd_image::MEMORY_MIB
        } else {
            DEFAULT_MEMORY_MIB
        }),
        cpus: 1,
        disk: None,
        nic: true,
        console: console.clone(),
        vsock: true,
        keep_after_exit: opts.keep,
    };

    banner("boot");
    println!("kernel cmdline: {cmdline}");
    let vm = Vm::boot(&spec)?;
    println!(
        "QEMU pid {} in namespace {} (bridge fcbr0 192.168.100.1/24, TAP {}), console {}",
        vm.qemu.pid(),
        vm.net.ns.name(),
        vm.net.tap,
        console.display()
    );
    let report = match vm.wait(DEADLINE) {
        Ok(r) => r,
        Err(e) => {
            println!("\nthe VM did not become ready: {e}");
            for f in e.findings() {
                println!("  {f}");
            }
            let text = vm.console();
            let tail: Vec<&str> = text.lines().rev().take(25).collect();
            println!("\nlast console lines:");
            for line in tail.iter().rev() {
                println!("  | {line}");
            }
            let stderr = vm.qemu.stderr_text();
            if !stderr.trim().is_empty() {
                println!("QEMU stderr: {}", stderr.trim());
            }
            bail!("demo VM not ready (console: {})", console.display());
        }
    };

    banner("boot timeline (host clock since QEMU start; kernel clock in brackets)");
    let rows = report.timeline();
    let mut prev = 0.0;
    for row in &rows {
        let kernel = row
            .kernel_s
            .map(|k| format!("[{k:>9.6}]"))
            .unwrap_or_else(|| " ".repeat(11));
        println!(
            "  {:>7.3} s  (+{:>6.3})  {kernel}  {}",
            row.host_s,
            row.host_s - prev,
            row.stage
        );
        prev = row.host_s;
    }
    for f in &report.ready.findings {
        println!("  note: {f}");
    }

    let health = vm.health().context("GET /health")?;
    banner(&format!("GET http://{GUEST_IP}:8080/health"));
    println!("{}", pretty_health(&health));
    let vsock = vm.vsock_health();
    match &vsock {
        VsockHealth::Health { addr, health } => {
            banner(&format!("GET /health over {addr} (no network involved)"));
            println!(
                "status {}, network {}",
                health.status,
                health
                    .network
                    .as_ref()
                    .map(|n| format!("{:?}", n.outcome))
                    .unwrap_or_else(|| "-".into())
            );
        }
        VsockHealth::Error { addr, error } => println!("\n/health over vsock {addr}: {error}"),
    }

    if opts.keep {
        let ns = vm.net.ns.name().to_string();
        let pid = vm.qemu.pid();
        println!(
            "\nthe VM keeps running (--keep):\n  ip netns exec {ns} {gc} health {GUEST_IP}:8080\n  \
             ip netns exec {ns} {gc} wait {GUEST_IP}:8080 --console {con}\n  \
             {gc} health {vs} (vsock: no network needed)\n  \
             console: tail -f {con}\n  stop: kill {pid}; ip netns del {ns}",
            gc = guestctl_hint(),
            vs = vm.vsock.as_ref().map(|d| d.agent_addr().to_string()).unwrap_or_default(),
            con = console.display()
        );
    }
    if opts.json {
        let summary = BootSummary {
            image: &opts.image,
            kernel: &built.kernel.release,
            cmdline: &cmdline,
            console: &console,
            timeline: rows,
            ready_after_s: report.ready_after.as_secs_f64(),
            ready: &report.ready,
            health: &health,
            vsock: &vsock,
        };
        println!("{}", summary.to_json());
    }
    if opts.keep {
        // Neither QEMU nor the namespace is torn down: the person asked to keep them.
        std::mem::forget(vm);
    } else {
        drop(vm);
        if !opts.json {
            println!("\nVM stopped, namespace removed.");
        }
    }
    Ok(())
}

fn guestctl_hint() -> String {
    crate::sh::target_dir()
        .join("debug/guestctl")
        .display()
        .to_string()
}
