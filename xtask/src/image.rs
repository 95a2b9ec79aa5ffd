//! `cargo xtask image [initramfs]`: the bootable guestkit image (issue 5).
//!
//! Installs what it needs (QEMU for the boots that follow, iproute2), builds guest-netinit and
//! guest-agent statically (`--profile static`, `+crt-static`: they run before anything is
//! mounted and the initramfs has no libc), fetches Debian's cloud kernel into
//! `target/vm-cache/` (once), and writes `target/vm-images/initramfs.cpio.gz`. The layout is
//! in `tests/src/vm/image.rs`, shared with the VM tests.

use crate::deps::{self, SystemPackage};
use crate::sh::{banner, cargo, run};
use crate::static_build::{self, elf, static_dir, TARGET};
use anyhow::{bail, Context, Result};
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
        Some(other) => bail!("image: unknown image `{other}` (known: initramfs, systemd)"),
    }
}

/// Everything up to a bootable initramfs: packages, static binaries, kernel, image.
pub fn initramfs() -> Result<Built> {
    deps::ensure(VM_PACKAGES)?;
    let netinit = static_build::build_netinit()?;
    let agent = build_static_agent()?;
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
    let info = image::build(
        &kernel,
        &Binaries {
            netinit: overridden(vm::fixture::NETINIT_OVERRIDE_ENV, netinit),
            agent: overridden(vm::fixture::AGENT_OVERRIDE_ENV, agent),
        },
        &InitramfsSpec::default(),
        &out,
    )
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
    deps::ensure(SYSTEMD_PACKAGES)?;
    let netinit = static_build::build_netinit()?;
    let agent = build_static_agent()?;
    banner("guest kernel");
    let kernel = vm::kernel::ensure().context("fetching the guest kernel")?;
    println!("{} from {}", kernel.release, kernel.deb.display());
    banner("systemd image (debootstrap rootfs cached in target/vm-cache)");
    let out = vm::images_dir().join("systemd.cpio.gz");
    let work = vm::images_dir().join("systemd-work");
    std::fs::create_dir_all(&work).with_context(|| format!("creating {}", work.display()))?;
    let info = vm::systemd_image::build(
        &kernel,
        &Binaries {
            netinit: overridden(vm::fixture::NETINIT_OVERRIDE_ENV, netinit),
            agent: overridden(vm::fixture::AGENT_OVERRIDE_ENV, agent),
        },
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

/// The static guest-agent (same profile and flags as guest-netinit), checked for linkage.
pub fn build_static_agent() -> Result<PathBuf> {
    banner("static guest-agent");
    run(cargo()
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .args([
            "build",
            "--profile",
            "static",
            "-p",
            "guest-agent",
            "--target",
            TARGET,
        ]))?;
    let path = static_dir().join("guest-agent");
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let linkage = elf::linkage(&bytes).with_context(|| format!("inspecting {}", path.display()))?;
    println!("{}: {} bytes, {linkage}", path.display(), bytes.len());
    if !linkage.is_static() {
        bail!("{} is not statically linked: {linkage}", path.display());
    }
    Ok(path)
}
