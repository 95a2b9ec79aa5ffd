//! The two pages of `bench stream`: the "VM screen" the streamer captures and the viewer that
//! measures what arrives (served by this process).

/// The "VM screen": repaints every frame (`?busy`) or only when the box changes (`?still`);
/// the box changes colour every 150 ms.
pub const SCREEN_HTML: &str = r#"<!doctype html><html><body style="margin:0;overflow:hidden">
<canvas id="c"></canvas><script>
const P = [[255,0,0],[0,255,0],[0,0,255],[255,255,0],[0,255,255],[255,0,255],[255,255,255],[0,0,0]];
const c = document.getElementById('c'); c.width = innerWidth; c.height = innerHeight;
const g = c.getContext('2d'); let k = 0, last = 0, n = 0;
const still = location.search.includes('still');
function frame(now) {
  n++;
  // A still screen draws only when the box changes (a login page, mostly).
  if (still && n > 1 && now - last <= 150) { requestAnimationFrame(frame); return; }
  const grad = g.createLinearGradient(0, 0, c.width, c.height);
  grad.addColorStop(0, `hsl(${n * 3 % 360},60%,40%)`); grad.addColorStop(1, `hsl(${(n * 3 + 180) % 360},60%,40%)`);
  g.fillStyle = grad; g.fillRect(0, 0, c.width, c.height);
  let changed = false;
  if (now - last > 150) { k = (k + 1 + Math.floor(Math.random() * 6)) % P.length; last = now; changed = true; }
  g.fillStyle = `rgb(${P[k].join(',')})`;
  g.fillRect(c.width / 2 - 100, c.height / 2 - 100, 200, 200);
  if (changed) fetch('/screen-event', {method: 'POST', body: JSON.stringify({k, t: Date.now()})});
  requestAnimationFrame(frame);
}
requestAnimationFrame(frame);
</script></body></html>"#;

/// The viewer: WHEP (offering only `?codec=` when given), colour sampling per decoded frame,
/// stats, one report.
pub const VIEWER_HTML: &str = r#"<!doctype html><html><body style="margin:0">
<video id="v" autoplay muted playsinline></video><script>
const P = [[255,0,0],[0,255,0],[0,0,255],[255,255,0],[0,255,255],[255,0,255],[255,255,255],[0,0,0]];
const W = @W@, H = @H@, SECS = @SECS@, RECONNECTS = @RECONNECTS@, LEAVE = new URLSearchParams(location.search).get('leave') || 'delete';
// ?codec=h264|vp8: offer only that codec (the streamer serves what the offer has).
const CODEC = (new URLSearchParams(location.search).get('codec') || '').toLowerCase();
function preferCodec(tr) {
  if (!CODEC) return;
  const caps = RTCRtpReceiver.getCapabilities('video').codecs, m = c => c.mimeType.toLowerCase();
  tr.setCodecPreferences(caps.filter(c => m(c) === 'video/' + CODEC).concat(caps.filter(c => m(c) === 'video/rtx')));
}
const v = document.getElementById('v');
const cv = document.createElement('canvas'); cv.width = 8; cv.height = 8;
const g = cv.getContext('2d', {willReadFrequently: true});
const changes = []; let cur = -1, measuring = false, recvToFrame = 0, recvToFrameN = 0;
function nearest(p) {
  let best = -1, bd = 1e9;
  P.forEach((q, i) => { const d = (p[0]-q[0])**2 + (p[1]-q[1])**2 + (p[2]-q[2])**2; if (d < bd) { bd = d; best = i; } });
  return bd < 3 * 40 * 40 ? best : -1;
}
function onFrame(now, meta) {
  // First packet received -> this callback (decode, jitter buffer, render), same clock.
  if (meta && meta.receiveTime) { recvToFrame += performance.now() - meta.receiveTime; recvToFrameN++; }
  g.drawImage(v, W / 2 - 4, H / 2 - 4, 8, 8, 0, 0, 8, 8);
  const d = g.getImageData(4, 4, 1, 1).data, k = nearest([d[0], d[1], d[2]]);
  if (k >= 0 && k !== cur) { cur = k; if (measuring) changes.push({k, t: Date.now()}); }
  v.requestVideoFrameCallback(onFrame);
}
async function stats() {
  const all = await pc.getStats(); let r = {};
  all.forEach(x => { if (x.type === 'inbound-rtp' && x.kind === 'video') r = x; });
  const c = r.codecId ? all.get(r.codecId) : null;
  return {t: Date.now(), codec: c ? c.mimeType : null, framesDecoded: r.framesDecoded || 0, bytesReceived: r.bytesReceived || 0,
          frameWidth: r.frameWidth, frameHeight: r.frameHeight, freezeCount: r.freezeCount || 0,
          jbDelay: r.jitterBufferDelay || 0, jbCount: r.jitterBufferEmittedCount || 0,
          decodeTime: r.totalDecodeTime || 0, processingDelay: r.totalProcessingDelay || 0,
          recvToFrame: recvToFrame, recvToFrameN: recvToFrameN};
}
const post = (p, o) => fetch(p, {method: 'POST', body: JSON.stringify(o)});
const pc = new RTCPeerConnection();
preferCodec(pc.addTransceiver('video', {direction: 'recvonly'}));
pc.ontrack = e => { v.srcObject = e.streams[0] || new MediaStream([e.track]); v.requestVideoFrameCallback(onFrame); };
(async () => {
  await pc.setLocalDescription(await pc.createOffer());
  await new Promise(r => { if (pc.iceGatheringState === 'complete') r();
    pc.onicegatheringstatechange = () => pc.iceGatheringState === 'complete' && r(); setTimeout(r, 2000); });
  const resp = await fetch('/whep', {method: 'POST', body: pc.localDescription.sdp});
  const loc = resp.headers.get('Location');
  await pc.setRemoteDescription({type: 'answer', sdp: await resp.text()});
  while ((await stats()).framesDecoded < 10) await new Promise(r => setTimeout(r, 100));
  await new Promise(r => setTimeout(r, 2000));
  measuring = true; await post('/start', await stats());
  await new Promise(r => setTimeout(r, SECS * 1000));
  const s = await stats(); s.changes = changes; await post('/report', s);
  if (RECONNECTS > 0) await reconnects({pc, loc, v}, RECONNECTS);
})();
@LOOP@
</script></body></html>"#;
