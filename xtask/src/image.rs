//! `cargo xtask image [initramfs]`: the bootable guestkit image (issue 5).
//!
//! Installs what it needs (QEMU for the boots that follow, iproute2), builds guest-netinit and
//! guest-agent statically (`+crt-static`: they run before anything is mounted and the
//! initramfs has no libc), fetches Debian's cloud kernel into `target/vm-cache/` (once), and
//! writes `target/vm-images/initramfs.cpio.gz`. The layout is in `tests/src/vm/image.rs`,
//! shared with the VM tests.
//!
//! guest-netinit uses the size-tuned `static` profile (LTO, one codegen unit: it must stay
//! small). The agent uses [`AGENT_PROFILE`], release without LTO and with 16 codegen units:
//! the `static` profile took most of a CI run for the agent (webrtc, openh264, zbus), and
//! the VM tests boot the agent that ships, so it has to be built in CI.

use crate::deps::{self, SystemPackage};
use crate::sh::{banner, cargo, run, target_dir};
use crate::static_build::{self, elf, TARGET};
use anyhow::{bail, Context, Result};
use guest_proto::stream::STREAMER_BIN;
use guestkit_tests::vm::{self, image, Binaries, InitramfsSpec, Kernel};
use std::path::PathBuf;

/// What booting a VM needs on the machine.
pub const VM_PACKAGES: &[SystemPackage] = &[
    SystemPackage {
        package: "qemu-system-x86",
        why: "boots the guest kernel (software emulation, no KVM)",
    },
    SystemPackage {
        package: "iproute2",
        why: "the VM's namespace, bridge fcbr0 and TAP",
    },
    SystemPackage {
        package: "gzip",
        why: "compresses the initramfs",
    },
];

/// A built image and what it boots with.
pub struct Built {
    pub kernel: Kernel,
    pub image: PathBuf,
}

/// What the systemd image needs on top.
pub const SYSTEMD_PACKAGES: &[SystemPackage] = &[
    SystemPackage {
        package: "debootstrap",
        why: "the Debian rootfs of the systemd image",
    },
    SystemPackage {
        package: "systemd",
        why: "`systemctl --root` enables the units in the image",
    },
];

/// `cargo xtask image [initramfs|systemd]`.
pub fn cli(args: &[String]) -> Result<()> {
    match args.first().map(String::as_str) {
        None | Some("initramfs") => {
            let built = initramfs()?;
            println!(
                "kernel {} ({})\nimage  {}",
                built.kernel.release,
                built.kernel.vmlinuz.display(),
                built.image.display()
            );
            Ok(())
        }
        Some("systemd") => {
            let built = systemd()?;
            println!(
                "kernel {} ({})\nimage  {}",
                built.kernel.release,
                built.kernel.vmlinuz.display(),
                built.image.display()
            );
            Ok(())
        }
        Some("browser") => {
            let (kernel, img) = browser()?;
            println!(
                "kernel {} ({})\ninitrd {}\ndisk   {} ({:.2} GB, ext4)\nboot   {} {}",
                kernel.release,
                kernel.vmlinuz.display(),
                img.initrd.display(),
                img.disk.display(),
                img.disk_bytes as f64 / 1e9,
                vm::browser_image::ROOT_ARGS,
                "ip=... guest_agent.token_sha256=... [guest_agent.display=WxH]"
            );
            Ok(())
        }
        Some(other) => bail!("image: unknown image `{other}` (known: initramfs, systemd, browser)"),
    }
}

/// The binaries that go into the images: built now, or (`build == false`) the ones already
/// built, which must exist. `GUESTKIT_VM_NETINIT` / `GUESTKIT_VM_AGENT` override either.
pub fn binaries(build: bool) -> Result<Binaries> {
    let (netinit, agent, streamer) = if build {
        let vm = build_agent()?;
        (static_build::build_netinit()?, vm.agent, Some(vm.streamer))
    } else {
        let netinit = static_build::static_dir().join("guest-netinit");
        let agent = agent_dir().join("guest-agent");
        // Only the browser image needs the streamer; it says so when it is missing.
        let streamer = agent_dir().join(STREAMER_BIN);
        let streamer = streamer.is_file().then_some(streamer);
        for p in [&netinit, &agent] {
            if !p.is_file() {
                bail!(
                    "{} is not built (run once without --no-build, or `cargo xtask image`)",
                    p.display()
                );
            }
        }
        (netinit, agent, streamer)
    };
    Ok(Binaries {
        netinit: overridden(vm::fixture::NETINIT_OVERRIDE_ENV, netinit),
        agent: overridden(vm::fixture::AGENT_OVERRIDE_ENV, agent),
        streamer: match std::env::var_os(vm::fixture::STREAMER_OVERRIDE_ENV) {
            Some(p) if !p.is_empty() => Some(PathBuf::from(p)),
            _ => streamer,
        },
    })
}

/// Everything up to a bootable initramfs: packages, static binaries, kernel, image.
pub fn initramfs() -> Result<Built> {
    deps::ensure(VM_PACKAGES)?;
    let bins = binaries(true)?;
    initramfs_with(&bins)
}

/// The initramfs image from `bins`.
pub fn initramfs_with(bins: &Binaries) -> Result<Built> {
    banner("guest kernel");
    let kernel = vm::kernel::ensure().context("fetching the guest kernel")?;
    println!(
        "{} from {} (cache {})",
        kernel.release,
        kernel.deb.display(),
        vm::kernel::cache_dir().display()
    );
    banner("initramfs image");
    let out = vm::images_dir().join("initramfs.cpio.gz");
    let info = image::build(&kernel, bins, &InitramfsSpec::default(), &out)
        .context("building the initramfs")?;
    println!(
        "{}: {} bytes ({:.1} MB), {} files",
        info.path.display(),
        info.bytes,
        info.bytes as f64 / 1e6,
        info.files
    );
    Ok(Built { kernel, image: out })
}

/// `path`, unless `env` names another binary to put in the image (said when it does).
fn overridden(env: &str, path: PathBuf) -> PathBuf {
    match std::env::var_os(env) {
        Some(p) if !p.is_empty() => {
            let p = PathBuf::from(p);
            println!("{env}: using {} instead of {}", p.display(), path.display());
            p
        }
        _ => path,
    }
}

/// The systemd image: debootstrap rootfs (cached), modules, our binaries and units enabled,
/// `guest-netinit check --root` on the tree, packed as an initramfs with systemd as /init.
pub fn systemd() -> Result<Built> {
    deps::ensure(VM_PACKAGES)?;
    let bins = binaries(true)?;
    systemd_with(&bins)
}

/// The systemd image from `bins`.
pub fn systemd_with(bins: &Binaries) -> Result<Built> {
    deps::ensure(SYSTEMD_PACKAGES)?;
    banner("guest kernel");
    let kernel = vm::kernel::ensure().context("fetching the guest kernel")?;
    println!("{} from {}", kernel.release, kernel.deb.display());
    banner("systemd image (debootstrap rootfs cached in target/vm-cache)");
    let out = vm::images_dir().join("systemd.cpio.gz");
    let work = vm::images_dir().join("systemd-work");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let info = vm::systemd_image::build(
        &kernel,
        bins,
        image::DEFAULT_AGENT_CONFIG,
        &crate::sh::repo_root().join("systemd-units"),
        &work,
        &out,
    )
    .context("building the systemd image")?;
    println!(
        "guest-netinit check --root:\n{}",
        info.check_report.trim_end()
    );
    println!(
        "{}: {} bytes ({:.1} MB)",
        info.path.display(),
        info.bytes,
        info.bytes as f64 / 1e6
    );
    Ok(Built { kernel, image: out })
}

/// The browser VM's golden image (`tests/src/vm/browser_image.rs`): debootstrap rootfs with
/// Xvfb, openbox and Chromium (cached), our binaries and units, checked with
/// `guest-netinit check --root`, written as an ext4 disk plus the small initramfs that loads
/// virtio-blk; cached under `target/vm-images/browser-<inputs>/`.
pub fn browser() -> Result<(Kernel, vm::browser_image::BrowserImage)> {
    deps::ensure(VM_PACKAGES)?;
    deps::ensure(SYSTEMD_PACKAGES)?;
    deps::ensure(BROWSER_PACKAGES)?;
    let bins = binaries(true)?;
    browser_with(&bins, &vm::browser_image::BrowserImageSpec::golden())
}

/// What the browser image's build needs on the machine.
pub const BROWSER_PACKAGES: &[SystemPackage] = &[SystemPackage {
    package: "e2fsprogs",
    why: "mkfs.ext4 -d writes the browser image's disk without a loop mount",
}];

/// The browser image for `spec` from `bins`.
pub fn browser_with(
    bins: &Binaries,
    spec: &vm::browser_image::BrowserImageSpec,
) -> Result<(Kernel, vm::browser_image::BrowserImage)> {
    banner("guest kernel");
    let kernel = vm::kernel::ensure().context("fetching the guest kernel")?;
    banner("browser image (ext4 on /dev/vda; debootstrap rootfs cached in target/vm-cache)");
    let img = vm::browser_image::build(
        &kernel,
        bins,
        &crate::sh::repo_root().join("systemd-units"),
        spec,
        &vm::images_dir(),
    )
    .context("building the browser image")?;
    println!(
        "{} ({}):\nguest-netinit check --root:\n{}",
        img.disk.display(),
        if img.built {
            "built"
        } else {
            "cached: its inputs did not change"
        },
        img.check_report.trim_end()
    );
    Ok((kernel, img))
}

/// The cargo profile of the agent in the images (defined by [`AGENT_PROFILE_CONFIG`]).
/// (Same as `guestkit_tests::vm::fixture::AGENT_PROFILE`, which the VM tests search.)
pub const AGENT_PROFILE: &str = vm::fixture::AGENT_PROFILE;

/// `--config` values defining [`AGENT_PROFILE`]: release (opt-level 3, no debug info),
/// without LTO and with 16 codegen units (both cost build time, not speed worth having in
/// a VM), stripped (a smaller image to unpack).
pub const AGENT_PROFILE_CONFIG: &[&str] = &[
    "profile.vmagent.inherits=\"release\"",
    "profile.vmagent.lto=false",
    "profile.vmagent.codegen-units=16",
    "profile.vmagent.strip=true",
];

/// Where [`build_agent`] puts the agent.
pub fn agent_dir() -> PathBuf {
    target_dir().join(TARGET).join(AGENT_PROFILE)
}

/// RUSTFLAGS of the agent in the images: static (`+crt-static`, like guest-netinit), and
/// position-independent (static-pie, Rust's default), so the root daemon that answers on the
/// VM's network keeps ASLR. The price was measured: a static-pie binary relocates itself at
/// every exec (25 000 relocations, 380 KB of `.data.rel.ro`), which the agent pays twice per
/// boot (`supervise`, then `serve`): ~50 ms of `agent start -> listening` under TCG (104-165 ms
/// against 74-86 ms with `-C relocation-model=static`, A/B in one run), about 1 ms natively.
pub const AGENT_RUSTFLAGS: &str = "-C target-feature=+crt-static";

/// The guest binaries of the images besides netinit.
pub struct VmBins {
    pub agent: PathBuf,
    /// `guest-stream`: only the browser image installs it.
    pub streamer: PathBuf,
}

/// guest-agent and guest-stream for the images, in one cargo run: [`AGENT_RUSTFLAGS`], the
/// [`AGENT_PROFILE`] profile, each checked for linkage and its size printed.
pub fn build_agent() -> Result<VmBins> {
    deps::ensure(deps::STREAMER_BUILD_PACKAGES)?;
    banner(&format!(
        "static guest-agent and guest-stream (profile {AGENT_PROFILE})"
    ));
    let mut cmd = cargo();
    cmd.env("RUSTFLAGS", AGENT_RUSTFLAGS);
    for c in AGENT_PROFILE_CONFIG {
        cmd.args(["--config", c]);
    }
    cmd.args([
        "build",
        "--profile",
        AGENT_PROFILE,
        "-p",
        "guest-agent",
        "-p",
        "guest-stream",
        "--target",
        TARGET,
    ]);
    run(&mut cmd)?;
    let checked = |name: &str| -> Result<PathBuf> {
        let path = agent_dir().join(name);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        let linkage =
            elf::linkage(&bytes).with_context(|| format!("inspecting {}", path.display()))?;
        println!("{}: {} bytes, {linkage}", path.display(), bytes.len());
        if !linkage.is_static() {
            bail!("{} is not statically linked: {linkage}", path.display());
        }
        Ok(path)
    };
    Ok(VmBins {
        agent: checked("guest-agent")?,
        streamer: checked(STREAMER_BIN)?,
    })
}
