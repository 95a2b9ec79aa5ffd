//! A guest that floods its console (issue 12 item 10): 200,000 distinct
//! `Failed to start uN.service` lines. The diagnosis stays bounded (findings, evidence, output
//! bytes) and `guestctl wait --timeout 5s` returns at its deadline while the log is parsed.
//! CPU time is printed, not asserted (no timed asserts): `cargo test -p host-client --test
//! flood -- --nocapture` shows it.

mod common;

use common::free_port;
use host_client::console::diagnose_reader;
use host_client::diagnose::MAX_FINDINGS;
use host_client::text::MAX_EVIDENCE;
use host_client::{Cause, Diagnosis};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const LINES: usize = 200_000;
/// Output bigger than this is not "bounded" (the flood itself is ~11 MB).
const MAX_OUTPUT: usize = 512 << 10;

fn flood_file(dir: &Path) -> PathBuf {
    let path = dir.join("flood.log");
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    writeln!(f, "[    0.000000] Linux version 6.1.0-28-cloud-amd64").unwrap();
    for i in 0..LINES {
        writeln!(f, "[FAILED] Failed to start u{i}.service - unit {i}.").unwrap();
    }
    // one very long line too: its evidence is cut
    writeln!(f, "[FAILED] Failed to start {}.service", "y".repeat(10_000)).unwrap();
    f.flush().unwrap();
    path
}

/// CPU time of this thread (user + system).
fn thread_cpu() -> Duration {
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: ru is a valid, writable rusage.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut ru) };
    assert_eq!(rc, 0);
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn assert_bounded(d: &Diagnosis) {
    assert_eq!(d.lines, LINES + 3, "every line read");
    assert!(
        d.findings.len() <= MAX_FINDINGS + 2,
        "{} findings",
        d.findings.len()
    );
    let s = d
        .findings
        .iter()
        .find(|f| f.cause == Cause::FindingsSuppressed)
        .expect("the left-out lines are counted");
    assert_eq!(s.occurrences, LINES + 1 - MAX_FINDINGS, "{s:?}");
    for f in &d.findings {
        assert!(f.evidence.len() < MAX_EVIDENCE + 40, "{f:?}");
        assert!(f.hint.len() < 1100, "{}", f.hint.len());
    }
}

#[test]
fn diagnose_of_a_flooded_console_is_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let path = flood_file(dir.path());

    let cpu = thread_cpu();
    let d = diagnose_reader(std::fs::File::open(&path).unwrap()).unwrap();
    let cpu = thread_cpu() - cpu;
    println!("diagnose_reader: {LINES} flood lines in {cpu:?} of CPU (this build's profile)");
    assert_bounded(&d);
    let text = std::fs::read_to_string(&path).unwrap();
    let cpu = thread_cpu();
    let a = host_client::analyze(&text);
    println!("analyze: {:?} of CPU", thread_cpu() - cpu);
    assert_eq!(a, d, "one-shot and streamed agree");

    for json in [false, true] {
        let mut args = vec!["diagnose", path.to_str().unwrap()];
        if json {
            args.insert(0, "--json");
        }
        let o = Command::new(env!("CARGO_BIN_EXE_guestctl"))
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(4), "{args:?}");
        println!("guestctl {args:?}: {} bytes of output", o.stdout.len());
        assert!(o.stdout.len() < MAX_OUTPUT, "{} bytes", o.stdout.len());
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(out.contains("findings-suppressed"), "{out}");
        if json {
            let v: serde_json::Value = serde_json::from_str(&out).unwrap();
            let n = v["findings"].as_array().unwrap().len();
            assert!(n <= MAX_FINDINGS + 2, "{n}");
        }
    }
}

#[test]
fn wait_honours_its_deadline_on_a_flooded_console() {
    let dir = tempfile::tempdir().unwrap();
    let path = flood_file(dir.path());
    // Loopback, a port nobody listens on: every probe is refused.
    let addr = free_port().to_string();
    let start = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_guestctl"))
        .args(["wait", &addr, "--timeout", "5s", "--console"])
        .arg(&path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // A correctness bound (it honours a 5 s deadline), not a speed measurement.
    let limit = Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break Some(s);
        }
        if start.elapsed() > limit {
            child.kill().unwrap();
            child.wait().unwrap();
            break None;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = start.elapsed();
    let o = child.wait_with_output().unwrap();
    println!(
        "guestctl wait --timeout 5s on a flooded console returned after {took:?}; {} + {} bytes of output",
        o.stdout.len(),
        o.stderr.len()
    );
    let status = status.unwrap_or_else(|| panic!("still waiting after {limit:?}"));
    assert_eq!(status.code(), Some(3), "timeout");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("refused"), "{err}");
    assert!(o.stdout.len() + o.stderr.len() < MAX_OUTPUT);
}
