//! `cargo xtask demo --image browser [--json] [--keep]`: boots the browser VM's golden image and
//! prints its timeline through "first frame seen by a viewer on the host" (a headless Chromium
//! on the host side of the TAP playing `/viewer`). `--keep` leaves the VM running and forwards
//! a loopback port of the host to the VM's :8080 (a small forwarder process that enters the
//! VM's namespace for each connection), printing the viewer URL.

use crate::bench_browser::{boot_and_measure, DISPLAY};
use crate::sh::banner;
use anyhow::{Context, Result};
use guestkit_tests::vm::boot::{pretty_health, TEST_TOKEN};
use guestkit_tests::vm::{self, GUEST_IP};
use std::os::unix::process::CommandExt;

/// Runs the demo.
pub fn run(json: bool, keep: bool) -> Result<()> {
    let (kernel, image) = crate::image::browser()?;
    let console = vm::images_dir().join("demo-browser-console.log");
    banner("boot (browser image: ext4 on /dev/vda, 2 GiB, 2 vCPUs, QEMU without KVM)");
    let b = boot_and_measure(&kernel, &image, console.clone(), keep, false)?;
    println!("kernel cmdline: {}", b.cmdline);
    println!(
        "QEMU pid {} in namespace {} (bridge fcbr0 192.168.100.1/24, TAP {}), console {}",
        b.vm.qemu.pid(),
        b.vm.net.ns.name(),
        b.vm.net.tap,
        console.display()
    );
    banner("boot timeline (host clock since QEMU start; kernel clock in brackets)");
    let mut rows: Vec<(String, f64, Option<f64>)> = b
        .report
        .timeline()
        .into_iter()
        .map(|r| (r.stage, r.host_s, r.kernel_s))
        .collect();
    rows.push(("streamer ready".into(), b.milestones.streamer_ready_s, None));
    rows.push((
        format!("first frame seen by a viewer on the host ({DISPLAY})"),
        b.milestones.first_frame_s,
        None,
    ));
    let mut prev = 0.0;
    for (stage, host_s, kernel_s) in &rows {
        let k = kernel_s
            .map(|k| format!("[{k:>9.6}]"))
            .unwrap_or_else(|| " ".repeat(11));
        println!("  {host_s:>7.3} s  (+{:>6.3})  {k}  {stage}", host_s - prev);
        prev = *host_s;
    }
    let health = b.vm.health().context("GET /health")?;
    banner(&format!("GET http://{GUEST_IP}:8080/health"));
    println!("{}", pretty_health(&health));
    if json {
        let v = serde_json::json!({
            "image": "browser",
            "disk": image.disk,
            "kernel": kernel.release,
            "cmdline": b.cmdline,
            "console": console,
            "timeline": rows.iter().map(|(s, h, k)| serde_json::json!({"stage": s, "host_s": h, "kernel_s": k})).collect::<Vec<_>>(),
            "ready_after_s": b.milestones.ready_s,
            "streamer_ready_s": b.milestones.streamer_ready_s,
            "first_frame_s": b.milestones.first_frame_s,
            "milestones": b.milestones.to_json(),
            "health": serde_json::to_value(&health).unwrap_or_default(),
        });
        println!("{v}");
    }
    if keep {
        let port = free_port()?;
        let exe = std::env::current_exe().context("locating xtask")?;
        let mut fwd = std::process::Command::new(exe);
        fwd.arg("__forward")
            .arg(b.vm.net.ns.path())
            .arg(port.to_string())
            .arg(format!("{GUEST_IP}:8080"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        // SAFETY: setsid only, between fork and exec: the forwarder outlives this command.
        unsafe {
            fwd.pre_exec(|| {
                libc::setsid();
                Ok(())
            });
        }
        let child = fwd.spawn().context("starting the port forwarder")?;
        let ns = b.vm.net.ns.name().to_string();
        let url = format!("http://{GUEST_IP}:8080/viewer#token={TEST_TOKEN}");
        println!(
            "\nthe VM keeps running (--keep):\n  viewer: http://127.0.0.1:{port}/viewer#token={TEST_TOKEN}\n  \
             (open it in a browser on this host: the forwarder carries the HTTP and relays the \
             stream's UDP from loopback ports to the VM's candidates)\n  \
             (on a fleet host, where fcbr0 is the host's own bridge, {url} plays directly)\n  \
             console: tail -f {con}\n  stop: kill {qemu} {fwd}; ip netns del {ns}",
            con = console.display(),
            qemu = b.vm.qemu.pid(),
            fwd = child.id(),
        );
        std::mem::forget(b);
    } else {
        drop(b);
        if !json {
            println!("\nVM stopped, namespace removed.");
        }
    }
    Ok(())
}

fn free_port() -> Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(l.local_addr()?.port())
}

/// `xtask __forward NS_PATH PORT TARGET`: serves 127.0.0.1:PORT as the VM's TARGET inside the
/// namespace at NS_PATH, the stream's UDP included (`guestkit_tests::vm::forward`).
pub fn forward(args: &[String]) -> Result<()> {
    let [ns, port, target] = args else {
        anyhow::bail!("__forward NS_PATH PORT TARGET");
    };
    let port: u16 = port.parse().context("PORT")?;
    let target: std::net::SocketAddr = target.parse().context("TARGET")?;
    guestkit_tests::vm::forward::Forwarder::start(std::path::Path::new(ns), target, port)
        .context("forwarder")?;
    loop {
        std::thread::park();
    }
}
