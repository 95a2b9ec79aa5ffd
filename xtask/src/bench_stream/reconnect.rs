//! The reconnect phase of `cargo xtask bench stream` (`--reconnects N`): operators run the
//! streamer for days while viewers come and go, and webrtc-rs has leaked across peer
//! connections before (webrtc-rs issue 906). After the latency window the viewer page turns
//! into a loop: connect a fresh `RTCPeerConnection` with WHEP, wait for decoded frames, close
//! it and `DELETE` the WHEP resource, then tell this process, which waits for the streamer's
//! status to show 0 viewers and samples the streamer's RSS and thread count from /proc and
//! its `peers_alive` (viewers' peer connections still alive inside the streamer) before the
//! page goes on. Printed: RSS before, after every 5 and after all, the growth per reconnect,
//! threads and live peers.

use serde_json::Value;
use std::time::{Duration, Instant};

/// One sample of the streamer after a viewer left (or before the first).
#[derive(Debug, Clone, Default)]
pub struct Sample {
    /// Reconnects done so far (0 = baseline).
    pub done: u64,
    pub rss_kb: u64,
    pub threads: u64,
    /// Status `viewers` once it went back to 0 (or what it was when we gave up waiting).
    pub viewers: u64,
    /// Status `peers_alive` at that moment.
    pub peers_alive: u64,
    /// Status `tasks_alive`: tasks on the streamer's tokio runtime.
    pub tasks: u64,
    /// Frames the viewer decoded in this round.
    pub frames: u64,
}

/// A field of /proc/PID/status in kB or as a plain count (`VmRSS`, `Threads`).
pub fn proc_status_field(pid: u32, field: &str) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// Waits (at most 30 s) for the streamer to count 0 viewers, no live peer connection (a
/// connection's internals may take a moment to unwind after the close; a viewer that left
/// without the WHEP DELETE is noticed when its connection fails) and an idle pipeline, then
/// samples it.
pub fn sample(done: u64, frames: u64, pid: u32, status: impl Fn() -> Option<Value>) -> Sample {
    let end = Instant::now() + Duration::from_secs(30);
    let mut last = Value::Null;
    while Instant::now() < end {
        if let Some(st) = status() {
            // Also wait for the pipeline to idle (encoder and capture released) so every
            // sample is taken in the same state.
            let gone =
                st["viewers"] == 0 && st["peers_alive"] == 0 && st["pipeline"]["running"] == false;
            last = st;
            if gone {
                break;
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Sample {
        done,
        rss_kb: proc_status_field(pid, "VmRSS").unwrap_or(0),
        threads: proc_status_field(pid, "Threads").unwrap_or(0),
        viewers: last["viewers"].as_u64().unwrap_or(u64::MAX),
        peers_alive: last["peers_alive"].as_u64().unwrap_or(u64::MAX),
        tasks: last["tasks_alive"].as_u64().unwrap_or(0),
        frames,
    }
}

/// Prints the phase's table and verdict lines.
pub fn print(samples: &[Sample], wanted: u64) {
    let Some(base) = samples.first() else {
        println!("reconnects         none measured");
        return;
    };
    println!("reconnects         {} of {wanted}", samples.len() - 1);
    println!("  after  RSS MiB  threads  tasks  viewers  peers_alive  frames decoded");
    for (i, s) in samples.iter().enumerate() {
        if s.done % 5 == 0 || i + 1 == samples.len() {
            println!(
                "  {:>5}  {:>7.1}  {:>7}  {:>5}  {:>7}  {:>11}  {:>14}",
                s.done,
                s.rss_kb as f64 / 1024.0,
                s.threads,
                s.tasks,
                s.viewers,
                s.peers_alive,
                s.frames
            );
        }
    }
    let last = samples.last().unwrap_or(base);
    let n = last.done.max(1) as f64;
    let growth = last.rss_kb as f64 - base.rss_kb as f64;
    println!(
        "  RSS {:.1} -> {:.1} MiB: {:+.1} MiB, {:+.0} KiB per reconnect",
        base.rss_kb as f64 / 1024.0,
        last.rss_kb as f64 / 1024.0,
        growth / 1024.0,
        growth / n
    );
    // The second half alone: one-time warm-up (allocator arenas, lazily built tables) lands
    // in the first rounds; a leak keeps growing.
    if let Some(mid) = samples
        .iter()
        .find(|s| s.done >= last.done / 2 && s.done > 0)
    {
        if last.done > mid.done {
            println!(
                "  second half ({} -> {}): {:+.0} KiB per reconnect",
                mid.done,
                last.done,
                (last.rss_kb as f64 - mid.rss_kb as f64) / (last.done - mid.done) as f64
            );
        }
    }
    let stuck: Vec<u64> = samples
        .iter()
        .filter(|s| s.viewers != 0 || s.peers_alive != 0)
        .map(|s| s.done)
        .collect();
    if stuck.is_empty() {
        println!("  every round: viewers back to 0, no peer connection left alive");
    } else {
        println!("  NOT back to 0 viewers / 0 live peers after rounds {stuck:?}");
    }
    println!(
        "  threads {} -> {} (max {}), runtime tasks {} -> {} (max {})",
        base.threads,
        last.threads,
        samples.iter().map(|s| s.threads).max().unwrap_or(0),
        base.tasks,
        last.tasks,
        samples.iter().map(|s| s.tasks).max().unwrap_or(0)
    );
}

/// The loop run by the viewer page after its report (`@RECONNECTS@` rounds); `pc` is the
/// measured connection, closed first.
pub const LOOP_JS: &str = r#"
async function whepConnect() {
  const pc = new RTCPeerConnection();
  preferCodec(pc.addTransceiver('video', {direction: 'recvonly'}));
  const v = document.createElement('video'); v.muted = true; v.autoplay = true;
  pc.ontrack = e => { v.srcObject = e.streams[0] || new MediaStream([e.track]); };
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(r => { if (pc.iceGatheringState === 'complete') r();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && r(); setTimeout(r, 2000); });
  const resp = await fetch('/whep', {method: 'POST', body: pc.localDescription.sdp});
  const loc = resp.headers.get('Location');
  await pc.setRemoteDescription({type: 'answer', sdp: await resp.text()});
  return {pc, loc, v};
}
async function decodedOf(pc) {
  let n = 0; (await pc.getStats()).forEach(x => { if (x.type === 'inbound-rtp' && x.kind === 'video') n = x.framesDecoded || 0; });
  return n;
}
async function leave(c, del) {
  c.pc.close(); c.v.srcObject = null;
  if (del && c.loc) await fetch(c.loc, {method: 'DELETE'});
}
async function reconnects(first, n) {
  await leave(first, true);
  await post('/reconnect-sample', {done: 0, frames: 0});
  for (let i = 1; i <= n; i++) {
    const c = await whepConnect();
    const end = Date.now() + 30000; let f = 0;
    while ((f = await decodedOf(c.pc)) < 10 && Date.now() < end) await new Promise(r => setTimeout(r, 50));
    await leave(c, LEAVE === 'delete' || (LEAVE === 'mixed' && i % 2 === 0));
    await post('/reconnect-sample', {done: i, frames: f});
  }
  await post('/reconnects-done', {});
}
"#;
