//! `cargo xtask bench wait`, the vsock part (issue 13): in a real VM with a virtio-vsock
//! device (rust-vmm's vhost-device-vsock, Firecracker's hybrid protocol), how long after the
//! agent's ready event does the host know, three ways at once in the same boot:
//! polling `/ready` over TCP, polling over vsock, and the line the agent pushes to
//! `<uds>_<port>`. The reference is the host seeing the agent's `ready` event on the serial
//! console (read every 1 ms): the same for all three, so their difference is exact even where
//! the console's own delay is not. Then `/health` round trips over vsock and TCP.
//!
//! Under this machine's software emulation the guest runs 10–30× slower than under
//! Firecracker: compare the rows with each other, not with a KVM figure.

use anyhow::{anyhow, Context, Result};
use guestkit_tests::vm::boot::DEFAULT_MEMORY_MIB;
use guestkit_tests::vm::boot::{agent_addr, TEST_TOKEN};
use guestkit_tests::vm::vsock::READY_PORT;
use guestkit_tests::vm::{cmdline, default_boot_args, BootSpec, Vm};
use host_client::{wait_ready_with, GuestClient, WaitOptions};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(240);

/// Lags (ready event on the console → host knows) of one boot, and round trips.
struct Boot {
    tcp: Duration,
    vsock: Duration,
    pushed: Duration,
    rtt_tcp: Vec<Duration>,
    rtt_vsock: Vec<Duration>,
}

pub fn run(runs: usize) -> Result<()> {
    let built = crate::image::initramfs()?;
    let args = default_boot_args().extra("guest_agent.ready_port", Some(READY_PORT.to_string()));
    let line = cmdline(&args, &[])?;
    println!(
        "\nbench wait, vsock: {runs} boots of the initramfs image with a vsock device, three \
         waiters per boot"
    );
    let mut boots = Vec::new();
    for i in 0..runs {
        // Short paths: the vsock sockets must fit sun_path with their `_<port>` suffix.
        let dir = guestkit_tests::vm::images_dir().join(format!("bench-vsock-{i}"));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        let spec = BootSpec {
            kernel: built.kernel.clone(),
            initrd: built.image.clone(),
            cmdline: line.clone(),
            memory_mib: DEFAULT_MEMORY_MIB,
            cpus: 1,
            disk: None,
            nic: true,
            console: dir.join("console.log"),
            vsock: true,
            keep_after_exit: false,
        };
        let vm = Vm::boot(&spec)?;
        let b = one(&vm).with_context(|| format!("boot {}", i + 1))?;
        println!(
            "  boot {}: tcp {:.2} ms, vsock {:.2} ms, pushed {:.2} ms",
            i + 1,
            ms(b.tcp),
            ms(b.vsock),
            ms(b.pushed)
        );
        boots.push(b);
    }
    let col = |f: fn(&Boot) -> Duration| boots.iter().map(f).collect::<Vec<_>>();
    println!("\nready event (console) -> host knows, over {runs} boots:");
    row("polling /ready over TCP", &col(|b| b.tcp));
    row("polling /ready over vsock", &col(|b| b.vsock));
    row("pushed line over vsock", &col(|b| b.pushed));
    let all =
        |f: fn(&Boot) -> &Vec<Duration>| boots.iter().flat_map(f).copied().collect::<Vec<_>>();
    println!("\n/health round trip after ready:");
    row("TCP", &all(|b| &b.rtt_tcp));
    row("vsock (hybrid socket)", &all(|b| &b.rtt_vsock));
    Ok(())
}

fn one(vm: &Vm) -> Result<Boot> {
    let dev = vm
        .vsock
        .as_ref()
        .ok_or_else(|| anyhow!("no vsock device"))?;
    let vsock_addr = dev.agent_addr();
    let ready_socket = dev.ready_socket();
    // The host's clock when the console shows the agent's ready event.
    let console = vm.qemu.console.clone();
    let seen: Arc<Mutex<Option<Instant>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (seen, stop) = (seen.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let text = std::fs::read(&console).unwrap_or_default();
                if memchr_find(&text, br#""step":"ready""#) {
                    *seen.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
                    return;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let opts = WaitOptions {
        deadline: DEADLINE,
        token: Some(TEST_TOKEN.into()),
        ..WaitOptions::default()
    };
    let (o1, o2) = (opts.clone(), opts.clone());
    let o3 = WaitOptions {
        ready_socket: Some(ready_socket),
        ..opts.clone()
    };
    let v = vsock_addr.clone();
    // Port 9 answers nothing: only the pushed line ends that waiter.
    let silent = SocketAddr::new(agent_addr().ip(), 9);
    let times = vm.net.run(move || async move {
        let at = |r: Result<host_client::Ready, host_client::WaitError>| {
            r.map(|_| Instant::now()).map_err(|e| e.to_string())
        };
        let (a, b, c) = tokio::join!(
            async { at(wait_ready_with(agent_addr(), &o1, |_| {}).await) },
            async { at(wait_ready_with(v, &o2, |_| {}).await) },
            async { at(wait_ready_with(silent, &o3, |_| {}).await) },
        );
        (a, b, c)
    })?;
    stop.store(true, Ordering::Relaxed);
    let _ = watcher.join();
    let ready = seen
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .ok_or_else(|| anyhow!("the console never showed the ready event"))?;
    let lag = |r: Result<Instant, String>, what: &str| {
        r.map(|t| t.saturating_duration_since(ready))
            .map_err(|e| anyhow!("{what}: {e}"))
    };
    let (tcp, vsock, pushed) = (
        lag(times.0, "tcp")?,
        lag(times.1, "vsock")?,
        lag(times.2, "pushed")?,
    );
    let (rtt_tcp, rtt_vsock) = vm.net.run(move || async move {
        let mut t = Vec::new();
        let mut v = Vec::new();
        for _ in 0..10 {
            let s = Instant::now();
            let ok = GuestClient::new(agent_addr()).health().await.is_ok();
            if ok {
                t.push(s.elapsed());
            }
            let s = Instant::now();
            if GuestClient::new(vsock_addr.clone()).health().await.is_ok() {
                v.push(s.elapsed());
            }
        }
        (t, v)
    })?;
    Ok(Boot {
        tcp,
        vsock,
        pushed,
        rtt_tcp,
        rtt_vsock,
    })
}

fn memchr_find(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn row(what: &str, v: &[Duration]) {
    if v.is_empty() {
        println!("  {what:<28} no samples");
        return;
    }
    let mut s = v.to_vec();
    s.sort();
    let n = s.len();
    let median = s[n / 2];
    let p99 = s[((0.99 * n as f64).ceil() as usize).clamp(1, n) - 1];
    println!(
        "  {what:<28} median {:>8.2} ms  p99 {:>8.2} ms  (n={n})",
        ms(median),
        ms(p99)
    );
}
