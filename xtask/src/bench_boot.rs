//! `cargo xtask bench boot [--runs N] [--no-systemd] [--no-baseline] [--no-build]`: N boots of
//! each image, with the same kernel, QEMU (TCG) and network, and the median of each boot stage.
//! `--no-build` boots the binaries already built (static netinit, the images' agent) instead
//! of building them first; the images are always rebuilt (seconds).
//!
//! Images: `initramfs` (guest-netinit as PID 1, agent as next init), `systemd` (debootstrap
//! rootfs, our units), and `baseline` — the old way: a busybox init that loads the virtio
//! modules with insmod (udev's job in the old image), runs the old bash script from
//! `../shared/bench/baseline/` with the real bash, iproute2 and ping, then starts the same
//! agent. Stages:
//! - kernel → userspace: kernel clock of `Run /init as init process`;
//! - userspace → network configured: kernel clock of netinit's `done` event (baseline: a
//!   kmsg line written right after the script), minus the above;
//! - userspace → agent listening: kernel clock of the agent's `listening` line, which it writes
//!   to the kernel log in the initramfs image (host clock, the console read every 2 ms, when
//!   the line has no kernel timestamp: the baseline and systemd images);
//! - agent listening → host ready: host clock.
//!
//! Then, per image, the median kernel time of each step line netinit and the agent print
//! (`mounted`, `lo up`, each netinit step, `exec`, agent `start`, `listening`) since
//! `Run /init`, and since the step before: where the boot time goes.

use crate::image;
use crate::sh::{banner, repo_root};
use crate::stats::{ms, summarize};
use anyhow::{bail, Context, Result};
use guestkit_tests::vm::boot::{systemd_boot_args, BootReport, DEFAULT_MEMORY_MIB};
use guestkit_tests::vm::image::{Binaries, InitramfsSpec};
use guestkit_tests::vm::{self, cmdline, default_boot_args, BootSpec, Kernel, Vm};
use host_client::diagnose::kernel_timestamp;
use host_client::Milestone;
use std::path::PathBuf;
use std::time::Duration;

const DEADLINE: Duration = Duration::from_secs(180);
const CONSOLE_POLL: Duration = Duration::from_millis(2);
/// The kmsg line the baseline init writes once the old script is done.
const BASELINE_MARK: &str = "GUESTKIT-BASELINE: network configured";
/// The host programs the old script runs (bash, iproute2, iputils, coreutils).
const BASELINE_PROGRAMS: &[&str] = &["bash", "ip", "ping", "seq", "tee", "date", "cat", "sleep"];
/// busybox applets the baseline init uses.
const BUSYBOX_APPLETS: &[&str] = &["sh", "mount", "mkdir", "insmod", "uname"];
/// What udev loaded in the old image, in dependency order.
const BASELINE_MODULES: &[&str] = &[
    "drivers/virtio/virtio_ring.ko",
    "drivers/virtio/virtio.ko",
    "drivers/virtio/virtio_pci_legacy_dev.ko",
    "drivers/virtio/virtio_pci_modern_dev.ko",
    "drivers/virtio/virtio_pci.ko",
    "net/core/failover.ko",
    "drivers/net/net_failover.ko",
    "drivers/net/virtio_net.ko",
];

/// The lines whose kernel time the breakdown shows, in boot order: label, and what the
/// line contains.
const STEP_MARKS: &[(&str, &[&str])] = &[
    ("init: mounted", &["guest-netinit init: mounted"]),
    ("init: lo up", &["guest-netinit init: lo up"]),
    (
        "netinit start",
        &["\"src\":\"netinit\"", "\"ev\":\"start\""],
    ),
    ("read-config", &["\"step\":\"read-config\""]),
    ("load-modules", &["\"step\":\"load-modules\""]),
    ("find-link", &["\"step\":\"find-link\""]),
    ("apply", &["\"step\":\"apply\""]),
    ("files+handoff", &["\"step\":\"handoff\""]),
    ("probe", &["\"step\":\"probe\""]),
    ("netinit done", &["\"src\":\"netinit\"", "\"ev\":\"done\""]),
    ("init: exec agent", &["guest-netinit init: exec"]),
    ("agent start", &["\"src\":\"agent\"", "\"ev\":\"start\""]),
    (
        "agent listening",
        &["\"src\":\"agent\"", "\"ev\":\"listening\""],
    ),
];

/// One boot's stages.
struct Sample {
    kernel_to_user: Duration,
    user_to_network: Duration,
    user_to_listening: Duration,
    /// Whether `user_to_listening` is kernel time (else host time).
    listening_kernel_clock: bool,
    /// The same on the host clock (console read every 2 ms), for comparing with images whose
    /// line has no kernel time.
    user_to_listening_host: Duration,
    listening_to_ready: Duration,
    qemu_to_ready: Duration,
    /// Kernel time since `Run /init` of each [`STEP_MARKS`] line seen.
    steps: Vec<Option<Duration>>,
}

/// `cargo xtask bench boot ...`.
pub fn cli(args: &[String]) -> Result<()> {
    let mut runs = 10usize;
    let (mut systemd, mut baseline, mut build) = (true, true, true);
    let mut browser = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--runs" => {
                let v = it.next().context("--runs needs a number")?;
                runs = v
                    .parse()
                    .with_context(|| format!("--runs: `{v}` is not a whole number"))?;
            }
            "--no-systemd" => systemd = false,
            "--no-baseline" => baseline = false,
            "--no-build" => build = false,
            "--image" => match it.next().map(String::as_str) {
                Some("browser") => browser = true,
                other => bail!("bench boot: --image takes `browser`, got {other:?}"),
            },
            other => bail!(
                "bench boot: unknown argument `{other}` \
                 (known: --runs N --no-systemd --no-baseline --no-build --image browser)"
            ),
        }
    }
    if runs == 0 {
        bail!("bench boot: --runs must be at least 1");
    }
    if browser {
        crate::deps::ensure(image::VM_PACKAGES)?;
        crate::deps::ensure(image::SYSTEMD_PACKAGES)?;
        crate::deps::ensure(image::BROWSER_PACKAGES)?;
        return crate::bench_browser::bench(runs, &image::binaries(build)?);
    }
    crate::deps::ensure(image::VM_PACKAGES)?;
    let bins = image::binaries(build)?;
    let built = image::initramfs_with(&bins)?;
    let kernel = built.kernel.clone();

    let mut plan: Vec<(&str, PathBuf, String, u32)> = vec![(
        "initramfs",
        built.image.clone(),
        cmdline(&default_boot_args(), &[])?,
        DEFAULT_MEMORY_MIB,
    )];
    if baseline {
        plan.push((
            "baseline",
            baseline_image(&kernel, &bins)?,
            default_boot_args()
                .build()
                .map_err(|e| anyhow::anyhow!("boot args: {e}"))?,
            DEFAULT_MEMORY_MIB,
        ));
    }
    if systemd {
        let sys = image::systemd_with(&bins)?;
        plan.push((
            "systemd",
            sys.image,
            systemd_boot_args()
                .build()
                .map_err(|e| anyhow::anyhow!("boot args: {e}"))?,
            vm::systemd_image::MEMORY_MIB,
        ));
    }

    let mut results = Vec::new();
    for (name, image, cmdline, memory) in &plan {
        banner(&format!("bench boot: {name}, {runs} boots"));
        let mut samples = Vec::new();
        for i in 0..runs {
            let console = vm::images_dir().join(format!("bench-{name}-console.log"));
            let spec = BootSpec {
                kernel: kernel.clone(),
                initrd: image.clone(),
                cmdline: cmdline.clone(),
                memory_mib: *memory,
                cpus: 1,
                disk: None,
                nic: true,
                console: console.clone(),
                vsock: false,
                keep_after_exit: false,
            };
            let vm = Vm::boot(&spec)?;
            let report = vm.wait_polling(DEADLINE, CONSOLE_POLL).map_err(|e| {
                anyhow::anyhow!("{name} boot {i}: {e} (console {})", console.display())
            })?;
            let sample = measure(&report, &vm.console(), *name == "baseline")
                .with_context(|| format!("{name} boot {i} (console {})", console.display()))?;
            println!(
                "  #{i:<2} kernel->user {:>9}  user->net {:>9}  user->listening {:>9} (host clock {:>9})  listening->ready {:>9}  qemu->ready {:>9}",
                ms(sample.kernel_to_user),
                ms(sample.user_to_network),
                ms(sample.user_to_listening),
                ms(sample.user_to_listening_host),
                ms(sample.listening_to_ready),
                ms(sample.qemu_to_ready)
            );
            samples.push(sample);
            drop(vm);
        }
        results.push((*name, samples));
    }

    banner("medians (TCG, no KVM; kernel clock, except * = host clock, and listening->ready)");
    println!(
        "  {:<10} {:>14} {:>16} {:>18} {:>19} {:>13}",
        "image",
        "kernel->user",
        "user->network",
        "user->listening",
        "listening->ready",
        "qemu->ready"
    );
    for (name, samples) in &results {
        let med = |f: fn(&Sample) -> Duration| {
            let v: Vec<Duration> = samples.iter().map(f).collect();
            summarize(&v).map(|s| ms(s.median)).unwrap_or_default()
        };
        let clock = if samples.iter().all(|s| s.listening_kernel_clock) {
            ""
        } else {
            "*"
        };
        println!(
            "  {:<10} {:>14} {:>16} {:>18} {:>19} {:>13}",
            name,
            med(|s| s.kernel_to_user),
            med(|s| s.user_to_network),
            format!("{clock}{}", med(|s| s.user_to_listening)),
            med(|s| s.listening_to_ready),
            med(|s| s.qemu_to_ready)
        );
    }
    for (name, samples) in &results {
        let host: Vec<Duration> = samples.iter().map(|s| s.user_to_listening_host).collect();
        if let Some(h) = summarize(&host) {
            println!(
                "  {name}: user->listening on the host clock {}",
                ms(h.median)
            );
        }
    }
    for (name, samples) in &results {
        print_steps(name, samples);
    }
    println!("\ngoal: initramfs user->listening <= 150 ms");
    Ok(())
}

/// Median kernel time of each step line since `Run /init`, and since the previous step
/// (steps missing from any boot of the image are left out).
fn print_steps(name: &str, samples: &[Sample]) {
    let mut rows = Vec::new();
    let mut prev: Option<Vec<Duration>> = None;
    for (i, (label, _)) in STEP_MARKS.iter().enumerate() {
        let Some(at) = samples
            .iter()
            .map(|s| s.steps[i])
            .collect::<Option<Vec<_>>>()
        else {
            continue;
        };
        let since_prev: Vec<Duration> = match &prev {
            Some(p) => at
                .iter()
                .zip(p)
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
            None => at.clone(),
        };
        let median = |v: &[Duration]| summarize(v).map(|s| ms(s.median)).unwrap_or_default();
        rows.push(format!(
            "  {label:<18} {:>12} {:>12}",
            median(&at),
            median(&since_prev)
        ));
        prev = Some(at);
    }
    if rows.is_empty() {
        return;
    }
    banner(&format!("{name}: steps (median kernel time)"));
    println!(
        "  {:<18} {:>12} {:>12}",
        "line", "since /init", "since prev"
    );
    for r in rows {
        println!("{r}");
    }
}

fn secs(d: f64) -> Duration {
    Duration::from_secs_f64(d.max(0.0))
}

/// The stages of one boot, from the console and the host's stamps.
fn measure(report: &BootReport, console: &str, baseline: bool) -> Result<Sample> {
    let entry = |m: Milestone| report.ready.timeline.iter().find(|e| e.milestone == m);
    let host = |m: Milestone| report.milestones.iter().find(|e| e.milestone == m);
    let user = entry(Milestone::Userspace).context("no userspace line")?;
    let user_k = user
        .kernel_time
        .context("userspace line has no kernel time")?;
    let net_k = if baseline {
        console
            .lines()
            .find(|l| l.contains(BASELINE_MARK))
            .and_then(kernel_timestamp)
            .context("no baseline network mark")?
    } else {
        entry(Milestone::NetinitDone)
            .and_then(|e| e.kernel_time)
            .context("no netinit done line with a kernel time")?
    };
    let user_h = host(Milestone::Userspace).context("host did not see userspace")?;
    let listen_h = host(Milestone::AgentListening).context("host did not see agent listening")?;
    let listen_k = entry(Milestone::AgentListening).and_then(|e| e.kernel_time);
    let steps = STEP_MARKS
        .iter()
        .map(|(_, needles)| {
            console
                .lines()
                .find(|l| needles.iter().all(|n| l.contains(n)))
                .and_then(kernel_timestamp)
                .map(|t| secs(t - user_k))
        })
        .collect();
    Ok(Sample {
        kernel_to_user: secs(user_k),
        user_to_network: secs(net_k - user_k),
        user_to_listening: match listen_k {
            Some(k) => secs(k - user_k),
            None => listen_h.host_elapsed.saturating_sub(user_h.host_elapsed),
        },
        listening_kernel_clock: listen_k.is_some(),
        user_to_listening_host: listen_h.host_elapsed.saturating_sub(user_h.host_elapsed),
        listening_to_ready: report.ready_after.saturating_sub(listen_h.host_elapsed),
        qemu_to_ready: report.ready_after,
        steps,
    })
}

/// The old way as an initramfs: busybox for mounts and insmod, the old script with real bash,
/// ip and ping, then the same agent.
fn baseline_image(kernel: &Kernel, bins: &Binaries) -> Result<PathBuf> {
    crate::deps::ensure(&[crate::deps::SystemPackage {
        package: "busybox-static",
        why: "the baseline image's init (mount, insmod)",
    }])?;
    let script_path = repo_root().join("../shared/bench/baseline/setup-network-kernel-params.sh");
    let script = std::fs::read(&script_path)
        .with_context(|| format!("baseline script {}", script_path.display()))?;
    let mut spec = InitramfsSpec::default();
    let busybox = PathBuf::from("/bin/busybox");
    spec.host_binaries.push(busybox);
    for p in BASELINE_PROGRAMS {
        spec.host_binaries.push(which(p)?);
    }
    for applet in BUSYBOX_APPLETS {
        spec.symlinks
            .push((format!("/sbin/{applet}"), "/bin/busybox".into()));
    }
    spec.extra_files.push(vm::ExtraFile {
        path: "/setup-network-kernel-params.sh".into(),
        mode: 0o755,
        data: script,
    });
    let modules: Vec<String> = BASELINE_MODULES
        .iter()
        .map(|m| format!("insmod /lib/modules/{}/kernel/{m}", kernel.release))
        .collect();
    spec.init_script = Some(format!(
        "#!/sbin/sh\n# The old way (benchmark baseline): mounts, udev's module loading, the bash script.\n\
         export PATH=/bin:/sbin\n\
         mount -t proc proc /proc\nmount -t sysfs sysfs /sys\nmount -t devtmpfs devtmpfs /dev\n\
         mount -t tmpfs tmpfs /run\nmount -t tmpfs tmpfs /tmp\n{}\n\
         /bin/bash /setup-network-kernel-params.sh\n\
         echo '<5>{BASELINE_MARK}' > /dev/kmsg\n\
         exec /sbin/guest-agent supervise\n",
        modules.join("\n")
    ));
    let out = vm::images_dir().join("baseline.cpio.gz");
    let info =
        vm::image::build(kernel, bins, &spec, &out).context("building the baseline image")?;
    println!(
        "baseline image {}: {} bytes, {} files",
        info.path.display(),
        info.bytes,
        info.files
    );
    Ok(out)
}

fn which(program: &str) -> Result<PathBuf> {
    let paths = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&paths)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|d| d.join(program))
        .find(|p| p.is_file())
        .with_context(|| format!("`{program}` not found (the baseline script needs it)"))
}
