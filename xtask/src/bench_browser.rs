//! The browser VM measured from the host (issue 11): `cargo xtask bench boot --image browser`
//! and the stream part of `cargo xtask demo --image browser`. One boot of the browser image
//! under QEMU (TCG) on the fleet's network shape, stamped on the host clock since QEMU
//! started: agent ready (host-client), streamer ready (`/health` says `webrtc.state` running),
//! and — with a login — the login started, the login page requested by the VM's Chromium across
//! the TAP, then a viewer on the host side joins: first frame decoded, login page visible in
//! the stream. The old system reported 41.4 s from kernel start to "Launched browser for OAuth"
//! (on KVM); everything here runs 10–30x slower under software emulation.

use crate::sh::banner;
use crate::stats::{summarize, Summary};
use anyhow::{anyhow, bail, Context, Result};
use guestkit_tests::vm::boot::{agent_addr, TEST_TOKEN};
use guestkit_tests::vm::browser_flow::{test_variant, Viewer, PROVIDER};
use guestkit_tests::vm::browser_image::{BrowserImage, CPUS, MEMORY_MIB};
use guestkit_tests::vm::fixture::browser_boot_args;
use guestkit_tests::vm::provider::{self, FakeProvider};
use guestkit_tests::vm::{BootSpec, Kernel, Vm};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

/// Generous: Chromium under TCG on a loaded 2-core machine.
pub const DEADLINE: Duration = Duration::from_secs(420);
/// The size the bench streams at (the image's default is 1280x720).
pub const DISPLAY: &str = "1280x720";

/// What one boot measured, on the host clock since QEMU started.
#[derive(Debug, Clone, Default)]
pub struct Milestones {
    pub ready_s: f64,
    pub streamer_ready_s: f64,
    pub first_frame_s: f64,
    /// With a login: since the login started.
    pub login_page_requested_after_s: Option<f64>,
    pub login_page_visible_after_s: Option<f64>,
}

impl Milestones {
    /// As JSON, for `demo --json`.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::json!({
            "ready_s": self.ready_s,
            "streamer_ready_s": self.streamer_ready_s,
            "first_frame_s": self.first_frame_s,
            "login_page_requested_after_s": self.login_page_requested_after_s,
            "login_page_visible_after_s": self.login_page_visible_after_s,
        })
    }
}

/// A booted browser VM (kept running for `demo --keep`).
pub struct Booted {
    pub vm: Vm,
    pub milestones: Milestones,
    pub report: guestkit_tests::vm::BootReport,
    pub cmdline: String,
}

/// Boots `image` and measures; with `login`, also a login through the stand-in provider (the
/// image must be the test variant).
pub fn boot_and_measure(
    kernel: &Kernel,
    image: &BrowserImage,
    console: std::path::PathBuf,
    keep: bool,
    login: bool,
) -> Result<Booted> {
    let args = browser_boot_args(&[("guest_agent.display", DISPLAY)]);
    let cmdline = args.build().map_err(|e| anyhow!("boot args: {e}"))?;
    let spec = BootSpec {
        kernel: kernel.clone(),
        initrd: image.initrd.clone(),
        cmdline: cmdline.clone(),
        memory_mib: MEMORY_MIB,
        cpus: CPUS,
        disk: Some(image.disk.clone()),
        nic: true,
        console: console.clone(),
        vsock: false,
        keep_after_exit: keep,
    };
    let vm = Vm::boot(&spec)?;
    let started = vm.qemu.started;
    let since = |t: Instant| t.duration_since(started).as_secs_f64();
    let provider = if login {
        Some(FakeProvider::start(
            &vm.net.ns.path(),
            SocketAddr::new(IpAddr::V4(Ipv4Addr::new(192, 168, 100, 1)), provider::PORT),
        )?)
    } else {
        None
    };
    let report = vm
        .wait(DEADLINE)
        .map_err(|e| anyhow!("not ready: {e} (console {})", console.display()))?;
    let mut m = Milestones {
        ready_s: report.ready_after.as_secs_f64(),
        ..Milestones::default()
    };
    let end = Instant::now() + DEADLINE;
    loop {
        if let Ok(h) = vm.health() {
            if h.webrtc
                .as_ref()
                .is_some_and(|w| w.state == guest_proto::api::WebrtcState::Running)
            {
                m.streamer_ready_s = since(Instant::now());
                break;
            }
        }
        if Instant::now() > end {
            bail!(
                "the streamer never answered (console {})",
                console.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut login_started = None;
    if let Some(p) = &provider {
        let t0 = Instant::now();
        login_started = Some(t0);
        vm.net
            .run(|| async {
                host_client::oauth::OAuthClient::new(agent_addr())
                    .with_token(Some(TEST_TOKEN.into()))
                    .start(PROVIDER, Some("bench-login"))
                    .await
            })?
            .map_err(|e| anyhow!("starting the login: {e}"))?;
        while !p.seen().iter().any(|h| h.path.starts_with("/authorize?")) {
            if Instant::now() > end {
                bail!("the VM's Chromium never asked for the login page");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        m.login_page_requested_after_s = Some(t0.elapsed().as_secs_f64());
    }
    let mut viewer = Viewer::open(&vm.net).map_err(|e| anyhow!("viewer: {e}"))?;
    let (w, h) = (1280u16, 720u16);
    viewer
        .wait(w / 2, h / 5, DEADLINE, |p| p.frames > 0)
        .map_err(|last| anyhow!("no frame decoded on the host (last {last:?})"))?;
    m.first_frame_s = since(Instant::now());
    if let Some(t0) = login_started {
        viewer
            .wait(w / 2, h / 5, DEADLINE, |p| p.is_page_colour())
            .map_err(|last| anyhow!("the login page never showed in the stream (last {last:?})"))?;
        m.login_page_visible_after_s = Some(t0.elapsed().as_secs_f64());
    }
    drop(viewer);
    Ok(Booted {
        vm,
        milestones: m,
        report,
        cmdline,
    })
}

/// `bench boot --image browser`: `runs` boots of the test variant, medians of each milestone.
pub fn bench(runs: usize, bins: &guestkit_tests::vm::Binaries) -> Result<()> {
    let spec = test_variant().map_err(|e| anyhow!(e))?;
    let (kernel, image) = crate::image::browser_with(bins, &spec)?;
    banner(&format!(
        "bench boot: browser image, {runs} boots (QEMU TCG, 2 vCPUs, 2 GiB, {DISPLAY})"
    ));
    let mut all = Vec::new();
    for i in 0..runs {
        let console = guestkit_tests::vm::images_dir().join("bench-browser-console.log");
        let b = boot_and_measure(&kernel, &image, console, false, true)
            .with_context(|| format!("browser boot {i}"))?;
        println!(
            "  boot {i}: ready {:.1} s, streamer {:.1} s, first frame {:.1} s; login: page requested +{:.1} s, visible in the stream +{:.1} s",
            b.milestones.ready_s,
            b.milestones.streamer_ready_s,
            b.milestones.first_frame_s,
            b.milestones.login_page_requested_after_s.unwrap_or(0.0),
            b.milestones.login_page_visible_after_s.unwrap_or(0.0),
        );
        all.push(b.milestones);
    }
    let col = |f: &dyn Fn(&Milestones) -> f64| -> Option<Summary> {
        summarize(
            &all.iter()
                .map(|m| Duration::from_secs_f64(f(m)))
                .collect::<Vec<_>>(),
        )
    };
    let rows = [
        ("agent ready", col(&|m| m.ready_s)),
        ("streamer ready", col(&|m| m.streamer_ready_s)),
        ("first frame", col(&|m| m.first_frame_s)),
        (
            "login: page asked",
            col(&|m| m.login_page_requested_after_s.unwrap_or(0.0)),
        ),
        (
            "login: page seen",
            col(&|m| m.login_page_visible_after_s.unwrap_or(0.0)),
        ),
    ];
    let rows: Vec<(&str, &Summary)> = rows
        .iter()
        .filter_map(|(n, s)| s.as_ref().map(|s| (*n, s)))
        .collect();
    println!("(since QEMU started, except the login rows: since the login started; the viewer joins once the page was asked for)");
    crate::stats::print_table(&rows);
    println!(
        "\nthe old system (bash + Node, on KVM): kernel start -> \"Launched browser for OAuth\" 41.4 s"
    );
    Ok(())
}
