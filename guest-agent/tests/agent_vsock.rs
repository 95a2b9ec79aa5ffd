//! `serve`'s vsock side on a machine without a vsock peer: this machine has no vsock loopback
//! and must never connect to CID 2 (the real outside host), so nothing here connects over
//! vsock and nothing sets `--ready-port`. What can be shown here:
//! - the real binary: the TCP listener answers while the vsock bind fails (port taken), with
//!   one warning event; a free port prints `vsock listening port=N`; a bad
//!   `guest_agent.vsock_port=` is named on the console and the flag is used instead;
//! - in process: the very accept loop, guard and auth that vsock connections go through, fed
//!   by an [`Accept`] that hands out unix-socket connections as vsock peers (CID 2): the Host
//!   allow-list is not applied, the token still is.
//!
//! The end to end over real vsock (QEMU + vhost-device-vsock) is a VM test in `tests/`.

mod common;

use common::{http, BIN, DEADLINE};
use guest_agent::serve::listener::{self, Accept, Peer};
use guest_proto::{ConsoleEvent, Event};
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const TOKEN: &str = "vsock-test-token";

/// `serve` alone with `extra` flags and `cmdline` as its kernel command line; stdout lines
/// collected.
struct Serve {
    child: Child,
    out: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl Serve {
    fn start(extra: &[&str], cmdline: &str) -> Serve {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("token"), TOKEN).unwrap();
        std::fs::write(d.join("cmdline"), cmdline).unwrap();
        let mut child = Command::new(BIN)
            .args(["serve", "--listen", "127.0.0.1:0", "--state-dir"])
            .arg(d)
            .arg("--token-file")
            .arg(d.join("token"))
            .arg("--cmdline")
            .arg(d.join("cmdline"))
            .arg("--netinit-state")
            .arg(d.join("netinit.json"))
            .arg("--config")
            .arg(d.join("no-config.toml"))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = Arc::new(Mutex::new(Vec::new()));
        let o2 = out.clone();
        let stdout = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for l in std::io::BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
            {
                o2.lock().unwrap().push(l);
            }
        });
        Serve {
            child,
            out,
            _dir: dir,
        }
    }

    fn events(&self) -> Vec<Event> {
        self.out
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| ConsoleEvent::find_in_line(l)?.ok())
            .map(|e| e.event)
            .collect()
    }

    fn wait<T>(&self, what: &str, f: impl Fn(&[Event]) -> Option<T>) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = f(&self.events()) {
                return v;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "no {what}; stdout:\n{}",
                self.out.lock().unwrap().join("\n")
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    fn tcp_addr(&self) -> String {
        self.wait("listening event", |evs| {
            evs.iter().find_map(|e| match e {
                Event::Listening { addr } => Some(addr.clone()),
                _ => None,
            })
        })
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let _ = self.child.wait();
    }
}

fn vsock_warnings(evs: &[Event]) -> Vec<String> {
    evs.iter()
        .filter_map(|e| match e {
            Event::Warning { message } if message.contains("vsock") => Some(message.clone()),
            _ => None,
        })
        .collect()
}

/// A vsock port nobody else here uses (per process, so parallel runs do not collide).
fn free_vsock_port(salt: u32) -> u32 {
    40_000 + (std::process::id() % 10_000) * 2 + salt
}

#[test]
fn tcp_answers_while_the_vsock_bind_fails_with_one_warning() {
    let port = free_vsock_port(0);
    // Take the port first: serve's bind then fails like any bind error (EADDRINUSE here;
    // EAFNOSUPPORT/ENODEV on a kernel without vsock take the same path, see vsock.rs tests).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let _held = rt.block_on(async {
        tokio_vsock::VsockListener::bind(tokio_vsock::VsockAddr::new(
            tokio_vsock::VMADDR_CID_ANY,
            port,
        ))
        .expect("this machine binds AF_VSOCK")
    });
    let serve = Serve::start(&["--vsock-port", &port.to_string()], "quiet");
    let addr = serve.tcp_addr();
    let (code, body) = http(&addr, "GET", "/health", None).unwrap();
    assert_eq!(code, 200, "{body}");
    let (code, _) = http(&addr, "GET", "/services", Some(TOKEN)).unwrap();
    assert_eq!(code, 200);
    let w = serve.wait("vsock warning", |evs| {
        let w = vsock_warnings(evs);
        (!w.is_empty()).then_some(w)
    });
    // Still answering, still one warning.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(http(&addr, "GET", "/health", None).unwrap().0, 200);
    let w2 = vsock_warnings(&serve.events());
    assert_eq!(w2.len(), 1, "{w2:?}");
    assert!(
        w[0].contains(&format!("cannot listen on port {port}"))
            && w[0].contains("already taken")
            && w[0].contains("TCP only"),
        "{w:?}"
    );
    // The TCP listening event came first.
    let evs = serve.events();
    let tcp = evs
        .iter()
        .position(|e| matches!(e, Event::Listening { .. }));
    let warn = evs
        .iter()
        .position(|e| matches!(e, Event::Warning { message } if message.contains("vsock")));
    assert!(tcp < warn, "{evs:?}");
}

#[test]
fn a_free_port_is_announced_and_a_bad_parameter_is_named() {
    let port = free_vsock_port(1);
    let serve = Serve::start(
        &["--vsock-port", &port.to_string()],
        "quiet guest_agent.vsock_port=undefined",
    );
    let addr = serve.tcp_addr();
    assert_eq!(http(&addr, "GET", "/health", None).unwrap().0, 200);
    let detail = format!("vsock listening port={port}");
    serve.wait("vsock listening event", |evs| {
        evs.iter()
            .any(|e| matches!(e, Event::Step { detail: d, .. } if *d == detail))
            .then_some(())
    });
    let w = serve.wait("warning naming the parameter", |evs| {
        evs.iter().find_map(|e| match e {
            Event::Warning { message } if message.contains("guest_agent.vsock_port") => {
                Some(message.clone())
            }
            _ => None,
        })
    });
    assert!(w.contains("\"undefined\""), "{w}");
}

#[test]
fn vsock_port_zero_means_no_listener() {
    let serve = Serve::start(&[], "guest_agent.vsock_port=0");
    let addr = serve.tcp_addr();
    assert_eq!(http(&addr, "GET", "/health", None).unwrap().0, 200);
    std::thread::sleep(Duration::from_millis(300));
    let evs = serve.events();
    assert!(
        !evs.iter()
            .any(|e| matches!(e, Event::Step { step, .. } if step == "vsock"))
            && vsock_warnings(&evs).is_empty(),
        "{evs:?}"
    );
}

/// Unix-socket connections handed to the accept loop as if they came over vsock (or TCP).
struct UnixAs(tokio::net::UnixListener, Peer);

impl Accept for UnixAs {
    type Stream = tokio::net::UnixStream;
    async fn accept(&self) -> std::io::Result<(Self::Stream, Peer)> {
        Ok((self.0.accept().await?.0, self.1))
    }
}

fn raw_request(sock: &Path, host: &str, path: &str, token: Option<&str>) -> (u16, String) {
    let mut s = std::os::unix::net::UnixStream::connect(sock).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let code = raw
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (code, raw)
}

#[test]
fn over_vsock_the_token_is_required_and_the_host_allow_list_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(d.join("token"), TOKEN).unwrap();
    let opts = guest_agent::serve::ServeOptions {
        listen: "127.0.0.1:0".parse().unwrap(),
        state_dir: d.to_path_buf(),
        token_file: d.join("token"),
        cmdline: d.join("none"),
        netinit_state: d.join("none.json"),
        oauth_config: d.join("none.toml"),
        insecure_no_auth: false,
        allowed_hosts: vec![],
        max_connections: 16,
        vsock_flags: Default::default(),
        config: d.join("none.toml"),
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let vs = d.join("vsock.sock");
    let tcp = d.join("tcp.sock");
    let stats = Arc::new(listener::ConnStats::default());
    rt.block_on(async {
        let loaded = guest_agent::serve::auth::load(&opts.token_file, &opts.cmdline, false);
        let app = guest_agent::serve::router(&opts, loaded.auth, stats.clone());
        let reg = listener::Registry::new(16, stats.clone());
        let as_vsock = UnixAs(tokio::net::UnixListener::bind(&vs).unwrap(), Peer::Cid(2));
        let as_tcp = UnixAs(
            tokio::net::UnixListener::bind(&tcp).unwrap(),
            Peer::Ip("127.0.0.1".parse().unwrap()),
        );
        tokio::spawn(listener::serve(
            as_vsock,
            app.clone(),
            reg.clone(),
            std::future::pending(),
        ));
        tokio::spawn(listener::serve(as_tcp, app, reg, std::future::pending()));
    });
    let (vs2, tcp2) = (vs.clone(), tcp.clone());
    let (no_token, with_token, tcp_rebind, tcp_ok) = rt.block_on(async move {
        tokio::task::spawn_blocking(move || {
            (
                raw_request(&vs2, "vsock", "/services", None),
                raw_request(&vs2, "vsock", "/services", Some(TOKEN)),
                raw_request(&tcp2, "evil.example", "/services", Some(TOKEN)),
                raw_request(&tcp2, "localhost", "/services", Some(TOKEN)),
            )
        })
        .await
        .unwrap()
    });
    assert_eq!(no_token.0, 401, "{}", no_token.1);
    assert_eq!(with_token.0, 200, "{}", with_token.1);
    assert_eq!(tcp_rebind.0, 403, "{}", tcp_rebind.1);
    assert_eq!(tcp_ok.0, 200, "{}", tcp_ok.1);
    // Open /health over vsock too.
    assert_eq!(raw_request(&vs, "anything", "/health", None).0, 200);
    rt.shutdown_timeout(Duration::from_secs(1));
}
