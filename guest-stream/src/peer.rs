//! One viewer's webrtc-rs 0.21 peer connection: answers the viewer's offer (non-trickle: the
//! answer carries our candidates once gathering completes, capped) with the codec chosen for it
//! (H.264 when the offer has a usable one, else VP8: [`super::sdp::choose_codec`]), sends that
//! codec's shared stream on a `TrackLocalStaticSample`, turns PLI/FIR into forced keyframes of
//! that codec, and feeds the
//! `input` data channel into the injector and the clipboard (answering clipboard reads on
//! the same channel), and sends the VM's pointer on it to a viewer that asked
//! ([`super::cursor`]).
//! Video packets carry the playout-delay header extension when the browser offers it
//! ([`super::playout`]).

use super::encode::Codec;
use super::inject_thread::InputSink;
use super::input;
use super::keyframe::{is_keyframe_request, KeyframeRequestForwarder};
use super::pipeline::{Frame, Pipeline};
use rtc::interceptor::{Registry, Slot};
use rtc::media::Sample;
use rtc::media_stream::MediaStreamTrack;
use rtc::peer_connection::configuration::interceptor_registry::register_default_interceptors;
use rtc::peer_connection::configuration::media_engine::{
    MediaEngine, MIME_TYPE_H264, MIME_TYPE_VP8,
};
use rtc::peer_connection::configuration::RTCConfigurationBuilder;
use rtc::peer_connection::sdp::RTCSessionDescription;
use rtc::peer_connection::transport::RTCIceServer;
use rtc::rtp_transceiver::rtp_sender::{
    RTCPFeedback, RTCRtpCodec, RTCRtpCodecParameters, RTCRtpCodingParameters,
    RTCRtpEncodingParameters, RTCRtpHeaderExtensionCapability, RtpCodecKind,
};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::{broadcast, mpsc, watch};
use webrtc::data_channel::{DataChannel, DataChannelEvent};
use webrtc::media_stream::track_local::static_sample::TrackLocalStaticSample;
use webrtc::media_stream::track_local::{TrackLocal, TrackLocalEvent};
use webrtc::peer_connection::{
    PeerConnection, PeerConnectionBuilder, PeerConnectionEventHandler, RTCIceGatheringState,
    RTCPeerConnectionState,
};
use webrtc::rtp_transceiver::RtpSender;

#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    #[error("bad SDP offer: {0}")]
    Offer(String),
    #[error("webrtc: {0}")]
    Webrtc(#[from] webrtc::error::Error),
    #[error("no local description after gathering")]
    NoAnswer,
    #[error(
        "the offer has no video codec this streamer encodes: H.264 (constrained baseline, \
         packetization-mode=1) or VP8 (the browser offered: {})",
        if offered.is_empty() { "no video".to_string() } else { offered.join(", ") }
    )]
    NoCommonCodec { offered: Vec<String> },
}

/// Network settings of the peers.
#[derive(Debug, Clone)]
pub struct PeerOptions {
    /// The address host candidates are gathered on (the VM's IP; 127.0.0.1 in tests).
    pub ice_ip: IpAddr,
    /// UDP port (0 = a fresh ephemeral port per viewer).
    pub ice_port: u16,
    pub ice_servers: Vec<IceServer>,
    /// Longest wait for ICE gathering before answering with what we have.
    pub gather_timeout: Duration,
    pub fps: f32,
    /// Upper bound of the receiver's playout delay (playout-delay extension), 10 ms steps,
    /// at most 40.95 s; zero = render on decode.
    pub playout_delay_max: Duration,
    /// A viewer not connected this long after its answer is closed (it never took the
    /// answer, or ICE cannot get through): it must not hold a viewer slot for ever.
    pub connect_timeout: Duration,
}

/// A STUN/TURN server as the controller hands it out.
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize, PartialEq)]
pub struct IceServer {
    pub urls: Vec<String>,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub credential: Option<String>,
}

/// Lifecycle notifications from a viewer's peer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewerState {
    Connecting,
    Connected,
    Gone,
}

/// Peer connections whose event handler still exists: webrtc-rs holds the handler for as long
/// as the connection's internals live, so this falls back to 0 once every viewer's connection
/// is really gone (a leak across reconnects shows here; webrtc-rs issue 906).
static LIVE_PEERS: AtomicUsize = AtomicUsize::new(0);

/// How many viewers' peer connections are still alive in this process.
pub fn live_peers() -> usize {
    LIVE_PEERS.load(Ordering::SeqCst)
}

/// A connected (or connecting) viewer; dropping it closes the connection.
pub struct Viewer {
    pub pc: Arc<dyn PeerConnection>,
    pub state: watch::Receiver<ViewerState>,
    /// The codec negotiated for this viewer.
    pub codec: Codec,
    /// Frames written to this viewer's track.
    pub frames_sent: Arc<AtomicU64>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Viewer {
    /// Closes the peer connection and stops its tasks.
    pub async fn close(self) {
        let _ = self.pc.close().await;
        for t in &self.tasks {
            t.abort();
        }
    }
}

impl Drop for Viewer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// The H.264 codec we offer: constrained baseline, packetization-mode 1, with NACK, PLI, FIR.
pub fn h264_codec() -> RTCRtpCodec {
    let fb = |typ: &str, parameter: &str| RTCPFeedback {
        typ: typ.into(),
        parameter: parameter.into(),
    };
    RTCRtpCodec {
        mime_type: MIME_TYPE_H264.to_owned(),
        clock_rate: 90000,
        channels: 0,
        sdp_fmtp_line: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f"
            .to_owned(),
        rtcp_feedback: vec![
            fb("nack", ""),
            fb("nack", "pli"),
            fb("ccm", "fir"),
            fb("goog-remb", ""),
        ],
    }
}

/// The VP8 codec we offer to browsers without a usable H.264, with the same feedback.
pub fn vp8_codec() -> RTCRtpCodec {
    RTCRtpCodec {
        mime_type: MIME_TYPE_VP8.to_owned(),
        sdp_fmtp_line: String::new(),
        ..h264_codec()
    }
}

/// The RTP codec (and its payload type in our media engine) for `codec`.
pub fn rtp_codec(codec: Codec) -> (RTCRtpCodec, u8) {
    match codec {
        Codec::H264 => (h264_codec(), 102),
        Codec::Vp8 => (vp8_codec(), 96),
    }
}

struct Handler {
    gathered: mpsc::Sender<()>,
    state: watch::Sender<ViewerState>,
    input: InputSink,
    pipeline: Pipeline,
    codec: Codec,
}

impl Drop for Handler {
    fn drop(&mut self) {
        LIVE_PEERS.fetch_sub(1, Ordering::SeqCst);
    }
}

#[async_trait::async_trait]
impl PeerConnectionEventHandler for Handler {
    async fn on_ice_gathering_state_change(&self, state: RTCIceGatheringState) {
        if state == RTCIceGatheringState::Complete {
            let _ = self.gathered.try_send(());
        }
    }

    async fn on_connection_state_change(&self, state: RTCPeerConnectionState) {
        tracing::info!("viewer peer connection: {state}");
        match state {
            RTCPeerConnectionState::Connected => {
                let _ = self.state.send(ViewerState::Connected);
                self.pipeline.request_keyframe(self.codec);
            }
            RTCPeerConnectionState::Failed
            | RTCPeerConnectionState::Disconnected
            | RTCPeerConnectionState::Closed => {
                let _ = self.state.send(ViewerState::Gone);
            }
            _ => {}
        }
    }

    async fn on_data_channel(&self, dc: Arc<dyn DataChannel>) {
        let input = self.input.clone();
        // The channel's task also ends with the viewer (the server removes a viewer whose
        // peer is gone): its cursor feed must not outlive it waiting for a close event.
        let mut state = self.state.subscribe();
        tokio::spawn(async move {
            let reading = Arc::new(AtomicBool::new(false));
            let mut cursor = None;
            loop {
                let ev = tokio::select! {
                    ev = dc.poll() => ev,
                    _ = state.wait_for(|s| *s == ViewerState::Gone) => None,
                };
                let Some(ev) = ev else { break };
                match ev {
                    DataChannelEvent::OnMessage(msg) => match input::parse(&msg.data) {
                        Ok(evs) => apply(evs, &input, &dc, &reading, &mut cursor).await,
                        Err(e) => {
                            tracing::debug!("bad input message: {e}");
                            input.malformed(&e);
                        }
                    },
                    DataChannelEvent::OnClose => break,
                    _ => {}
                }
            }
            // Its subscription ends with the channel, so the cursor thread can go idle.
            if let Some(t) = cursor.take() {
                t.abort();
            }
            input.viewer_gone();
        });
    }
}

/// Applies one message's events in order. Input goes to the injector's queue; a clipboard
/// set is awaited (the X server owns the text) before the events after it are queued, so a
/// Ctrl+V sent right after a paste pastes the new text; a clipboard read runs on its own
/// (input is not held up by a slow owner in the VM), one at a time per channel (a read sent
/// while one runs is dropped and counted as busy), and is answered with a 0x80 message. A
/// cursor watch starts (or stops) this channel's task sending the VM's pointer.
async fn apply(
    evs: Vec<input::Event>,
    input: &InputSink,
    dc: &Arc<dyn DataChannel>,
    reading: &Arc<AtomicBool>,
    cursor: &mut Option<tokio::task::JoinHandle<()>>,
) {
    let mut batch = Vec::new();
    for e in evs {
        match e {
            input::Event::Input(e) => batch.push(e),
            input::Event::ClipboardSet(text) => {
                if !batch.is_empty() {
                    input.send(std::mem::take(&mut batch));
                }
                if let Err(e) = input.clipboard().set(text).await {
                    tracing::info!("clipboard set: {e}");
                }
            }
            input::Event::ClipboardGet => {
                if reading.swap(true, Ordering::SeqCst) {
                    input.clipboard().count_busy();
                    continue;
                }
                let (clip, dc, reading) = (input.clipboard().clone(), dc.clone(), reading.clone());
                tokio::spawn(async move {
                    let r = clip.get().await;
                    let msg = input::encode_clipboard_reply(&r);
                    if let Err(e) = dc.send(bytes::BytesMut::from(&msg[..])).await {
                        tracing::debug!("clipboard reply: {e}");
                    }
                    reading.store(false, Ordering::SeqCst);
                });
            }
            input::Event::CursorWatch(on) => {
                if let Some(t) = cursor.take() {
                    t.abort();
                }
                if on {
                    let (sub, dc) = (input.cursor().subscribe(), dc.clone());
                    *cursor = Some(tokio::spawn(sub.feed(move |m| {
                        let dc = dc.clone();
                        async move { dc.send(bytes::BytesMut::from(&m[..])).await.is_ok() }
                    })));
                }
            }
        }
    }
    if !batch.is_empty() {
        input.send(batch);
    }
}

/// Answers `offer_sdp` with a new peer sending the pipeline's video. Returns the viewer and
/// the answer SDP (with candidates).
pub async fn accept_offer(
    offer_sdp: String,
    pipeline: &Pipeline,
    input: &InputSink,
    opts: &PeerOptions,
) -> Result<(Viewer, String), PeerError> {
    let chosen = match super::sdp::choose_codec(&offer_sdp) {
        Ok(c) => c,
        Err(offered) => {
            // Not SDP at all is the parser's error; SDP without a codec of ours is ours.
            RTCSessionDescription::offer(offer_sdp).map_err(|e| PeerError::Offer(e.to_string()))?;
            return Err(PeerError::NoCommonCodec { offered });
        }
    };
    let offer =
        RTCSessionDescription::offer(offer_sdp).map_err(|e| PeerError::Offer(e.to_string()))?;
    // Only the chosen codec is registered, so the answer can carry no other.
    let (codec, payload_type) = rtp_codec(chosen);
    let mut media = MediaEngine::default();
    media.register_codec(
        RTCRtpCodecParameters {
            rtp_codec: codec.clone(),
            payload_type,
        },
        RtpCodecKind::Video,
    )?;
    media.register_header_extension(
        RTCRtpHeaderExtensionCapability {
            uri: super::playout::PLAYOUT_DELAY_URI.to_owned(),
        },
        RtpCodecKind::Video,
        None,
    )?;
    let registry = register_default_interceptors(Registry::new(), &mut media)?;
    let registry = registry
        .with(Slot::from(14_000), KeyframeRequestForwarder::default())
        .with(
            Slot::from(13_000),
            super::playout::PlayoutDelay::new(opts.playout_delay_max),
        );
    let config = RTCConfigurationBuilder::new()
        .with_ice_servers(
            opts.ice_servers
                .iter()
                .map(|s| RTCIceServer {
                    urls: s.urls.clone(),
                    username: s.username.clone().unwrap_or_default(),
                    credential: s.credential.clone().unwrap_or_default(),
                })
                .collect(),
        )
        .build();
    let (gathered_tx, mut gathered_rx) = mpsc::channel(1);
    let (state_tx, state_rx) = watch::channel(ViewerState::Connecting);
    LIVE_PEERS.fetch_add(1, Ordering::SeqCst);
    let handler = Arc::new(Handler {
        gathered: gathered_tx,
        state: state_tx,
        input: input.clone(),
        pipeline: pipeline.clone(),
        codec: chosen,
    });
    let pc = PeerConnectionBuilder::new()
        .with_configuration(config)
        .with_media_engine(media)
        .with_interceptor_registry(registry)
        .with_handler(handler)
        .with_udp_addrs(vec![format!("{}:{}", opts.ice_ip, opts.ice_port)])
        .build()
        .await?;
    let pc: Arc<dyn PeerConnection> = Arc::new(pc);
    let ssrc: u32 = fastrand::u32(1..);
    // From here on an error must close the connection: webrtc-rs keeps a built connection's
    // internals (sockets, tasks) alive until `close`.
    let (track, sender, sdp) =
        match negotiate(&pc, offer, &codec, ssrc, &mut gathered_rx, opts).await {
            Ok(r) => r,
            Err(e) => {
                let _ = pc.close().await;
                return Err(e);
            }
        };

    let mut tasks = Vec::new();
    // Keyframe requests from this viewer.
    {
        let track = Arc::clone(&track);
        let pipeline = pipeline.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(ev) = track.poll().await {
                let TrackLocalEvent::OnRtcpPacket(pkts) = ev else {
                    continue;
                };
                if pkts.iter().any(|p| is_keyframe_request(p.as_ref())) {
                    pipeline.request_keyframe(chosen);
                }
            }
        }));
    }
    // Video: once connected, subscribe and send.
    let frames_sent = Arc::new(AtomicU64::new(0));
    {
        let pipeline = pipeline.clone();
        let sent = Arc::clone(&frames_sent);
        let mut state = state_rx.clone();
        let frame_time = Duration::from_secs_f64(1.0 / f64::from(opts.fps.max(1.0)));
        tasks.push(tokio::spawn(async move {
            if state
                .wait_for(|s| *s != ViewerState::Connecting)
                .await
                .map(|s| *s != ViewerState::Connected)
                .unwrap_or(true)
            {
                return;
            }
            let pt = match sender.get_parameters().await {
                Ok(p) => match p.rtp_parameters.codecs.first() {
                    Some(c) => c.payload_type,
                    None => return,
                },
                Err(_) => return,
            };
            let mut sub = pipeline.subscribe(chosen);
            let mut need_key = true;
            let mut prev: Option<Instant> = None;
            loop {
                let frame: Arc<Frame> = match sub.frames.recv().await {
                    Ok(f) => f,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        need_key = true;
                        pipeline.request_keyframe(chosen);
                        continue;
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                };
                if need_key && !frame.keyframe {
                    continue;
                }
                need_key = false;
                // webrtc-rs advances RTP time by `duration`: the real gap since the last frame.
                let duration = prev
                    .map(|p| frame.captured.saturating_duration_since(p))
                    .unwrap_or(frame_time);
                prev = Some(frame.captured);
                let sample = Sample {
                    data: frame.data.clone(),
                    duration,
                    ..Sample::new(frame.captured)
                };
                match track.sample_writer(ssrc, pt).write_sample(&sample).await {
                    Ok(()) => {
                        sent.fetch_add(1, Ordering::SeqCst);
                        pipeline.frame_sent(chosen);
                    }
                    Err(e) => tracing::debug!("write_sample: {e}"),
                }
            }
        }));
    }
    Ok((
        Viewer {
            pc,
            state: state_rx,
            codec: chosen,
            frames_sent,
            tasks,
        },
        sdp,
    ))
}

/// Adds the video track and answers the offer on `pc`; the answer carries our candidates
/// once gathering completes (or `gather_timeout` passes).
async fn negotiate(
    pc: &Arc<dyn PeerConnection>,
    offer: RTCSessionDescription,
    codec: &RTCRtpCodec,
    ssrc: u32,
    gathered: &mut mpsc::Receiver<()>,
    opts: &PeerOptions,
) -> Result<(Arc<TrackLocalStaticSample>, Arc<dyn RtpSender>, String), PeerError> {
    let track = Arc::new(TrackLocalStaticSample::new(
        Instant::now(),
        MediaStreamTrack::new(
            "guest-screen".into(),
            "guest-screen-video".into(),
            "screen".into(),
            RtpCodecKind::Video,
            vec![RTCRtpEncodingParameters {
                rtp_coding_parameters: RTCRtpCodingParameters {
                    ssrc: Some(ssrc),
                    ..Default::default()
                },
                codec: codec.clone(),
                ..Default::default()
            }],
        ),
    )?);
    let sender = pc
        .add_track(Arc::clone(&track) as Arc<dyn TrackLocal>)
        .await?;
    pc.set_remote_description(offer).await?;
    let answer = pc.create_answer(None).await?;
    pc.set_local_description(answer).await?;
    let _ = tokio::time::timeout(opts.gather_timeout, gathered.recv()).await;
    let sdp = pc.local_description().await.ok_or(PeerError::NoAnswer)?.sdp;
    Ok((track, sender, sdp))
}
