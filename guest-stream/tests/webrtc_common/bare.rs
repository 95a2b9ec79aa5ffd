//! A streamer assembled in-process from its parts with chosen peer options (no X display,
//! no browser), and a crafted WHEP offer for it: for the tests of viewer accounting.

use super::{http, TOKEN};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// A streamer built in-process from its parts (no X display: capture starts only once a
/// viewer connects) with chosen peer options, served on loopback TCP with [`TOKEN`].
pub struct BareStreamer {
    pub addr: SocketAddr,
    pub streamer: Arc<guest_stream::server::Streamer>,
}

/// Peer options for loopback tests: host candidates on 127.0.0.1, short gathering.
pub fn loopback_peer_options() -> guest_stream::peer::PeerOptions {
    guest_stream::peer::PeerOptions {
        ice_ip: std::net::Ipv4Addr::LOCALHOST.into(),
        ice_port: 0,
        ice_servers: Vec::new(),
        gather_timeout: Duration::from_millis(2500),
        fps: 30.0,
        playout_delay_max: Duration::ZERO,
        connect_timeout: Duration::from_secs(30),
    }
}

pub fn start_bare_streamer(
    peer: guest_stream::peer::PeerOptions,
    max_viewers: usize,
) -> BareStreamer {
    use guest_stream::{encode, inject_thread, pipeline, server};
    let settings = encode::EncoderSettings {
        width: 320,
        height: 240,
        fps: 30.0,
        bitrate_bps: 500_000,
        keyframe_interval: 0,
    };
    let pipeline = pipeline::Pipeline::start(
        settings,
        Box::new(|| Err("no display in this test".to_string())),
    );
    let input = inject_thread::InputSink::start(Some(":9999".into()));
    let streamer = server::Streamer::new(pipeline, input, peer, max_viewers);
    let app = server::router(Arc::clone(&streamer), Some(TOKEN.to_string()));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let l = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            axum::serve(l, app).await.expect("serve");
        });
    });
    BareStreamer { addr, streamer }
}

/// A well-formed browser-like WHEP offer: recvonly H.264 video and the input data channel.
/// Nothing answers its ICE, so a viewer made from it never connects.
pub const H264_OFFER: &str = "v=0\r\no=- 46117314 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n\
    a=group:BUNDLE 0 1\r\na=msid-semantic: WMS\r\n\
    m=video 9 UDP/TLS/RTP/SAVPF 102\r\nc=IN IP4 0.0.0.0\r\na=rtcp:9 IN IP4 0.0.0.0\r\n\
    a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=ice-options:trickle\r\n\
    a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
    a=setup:actpass\r\na=mid:0\r\na=recvonly\r\na=rtcp-mux\r\n\
    a=rtpmap:102 H264/90000\r\na=rtcp-fb:102 nack\r\na=rtcp-fb:102 nack pli\r\n\
    a=fmtp:102 level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=42e01f\r\n\
    m=application 9 UDP/DTLS/SCTP webrtc-datachannel\r\nc=IN IP4 0.0.0.0\r\n\
    a=ice-ufrag:abcd\r\na=ice-pwd:abcdefghijklmnopqrstuvwx\r\na=ice-options:trickle\r\n\
    a=fingerprint:sha-256 00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF:00:11:22:33:44:55:66:77:88:99:AA:BB:CC:DD:EE:FF\r\n\
    a=setup:actpass\r\na=mid:1\r\na=sctp-port:5000\r\na=max-message-size:262144\r\n";

/// POSTs [`H264_OFFER`] to `/webrtc/whep`: (status, headers + body).
pub fn post_offer(addr: SocketAddr) -> (u16, String) {
    http(
        addr,
        "POST",
        "/webrtc/whep",
        &[
            ("Authorization", &format!("Bearer {TOKEN}")),
            ("Content-Type", "application/sdp"),
        ],
        H264_OFFER,
    )
}
