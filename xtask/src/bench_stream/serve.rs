//! This process's HTTP during `bench stream`: the two pages, the screen's and the viewer's
//! reports, and WHEP forwarded to the streamer (with the token).

use super::pages::{SCREEN_HTML, VIEWER_HTML};
use super::{cpu_ticks, reconnect, streamer_status, Collected, TOKEN};
use anyhow::Result;
use serde_json::Value;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Mutex;
use std::time::Instant;

/// One HTTP/1.1 exchange (Connection: close).
pub(super) fn handle(
    conn: TcpStream,
    data: &Mutex<Collected>,
    streamer: SocketAddr,
    pid: u32,
    (w, h, secs, reconnects): (u16, u16, u64, u64),
) -> Result<()> {
    let mut r = BufReader::new(conn.try_clone()?);
    let mut first = String::new();
    r.read_line(&mut first)?;
    let mut len = 0usize;
    loop {
        let mut l = String::new();
        if r.read_line(&mut l)? == 0 || l == "\r\n" {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    let mut parts = first.split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let mut out = conn;
    let reply = |out: &mut TcpStream, code: &str, ctype: &str, body: &[u8]| -> Result<()> {
        write!(
            out,
            "HTTP/1.1 {code}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        )?;
        out.write_all(body)?;
        Ok(())
    };
    let json = || serde_json::from_slice::<Value>(&body).unwrap_or_default();
    match (method, path) {
        ("GET", "/screen") => reply(&mut out, "200 OK", "text/html", SCREEN_HTML.as_bytes()),
        ("GET", "/viewer") => {
            let page = VIEWER_HTML
                .replace("@W@", &w.to_string())
                .replace("@H@", &h.to_string())
                .replace("@SECS@", &secs.to_string())
                .replace("@RECONNECTS@", &reconnects.to_string())
                .replace("@LOOP@", reconnect::LOOP_JS);
            reply(&mut out, "200 OK", "text/html", page.as_bytes())
        }
        ("POST", "/screen-event") => {
            let v = json();
            if let (Some(k), Some(t)) = (v["k"].as_u64(), v["t"].as_f64()) {
                if let Ok(mut d) = data.lock() {
                    d.screen.push((k, t));
                }
            }
            reply(&mut out, "204 No Content", "text/plain", b"")
        }
        ("POST", "/start") => {
            if let Ok(mut d) = data.lock() {
                d.start = Some(json());
                d.cpu_start = cpu_ticks(pid).map(|t| (t, Instant::now()));
            }
            reply(&mut out, "204 No Content", "text/plain", b"")
        }
        ("POST", "/report") => {
            if let Ok(mut d) = data.lock() {
                d.cpu_end = cpu_ticks(pid).map(|t| (t, Instant::now()));
                d.streamer_status = streamer_status(streamer).ok();
                d.report = Some(json());
            }
            reply(&mut out, "204 No Content", "text/plain", b"")
        }
        ("POST", "/reconnect-sample") => {
            let v = json();
            let done = v["done"].as_u64().unwrap_or(0);
            let frames = v["frames"].as_u64().unwrap_or(0);
            let sample = reconnect::sample(done, frames, pid, || streamer_status(streamer).ok());
            if let Ok(mut d) = data.lock() {
                d.reconnects.push(sample);
            }
            reply(&mut out, "204 No Content", "text/plain", b"")
        }
        ("POST", "/reconnects-done") => {
            if let Ok(mut d) = data.lock() {
                d.reconnects_done = true;
            }
            reply(&mut out, "204 No Content", "text/plain", b"")
        }
        ("DELETE", p) if p.starts_with("/webrtc/whep/") => {
            let mut s = TcpStream::connect(streamer)?;
            write!(
                s,
                "DELETE {p} HTTP/1.1\r\nHost: {streamer}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
            let mut resp = Vec::new();
            s.read_to_end(&mut resp)?;
            out.write_all(&resp)?;
            Ok(())
        }
        ("POST", "/whep") => {
            let mut s = TcpStream::connect(streamer)?;
            write!(
                s,
                "POST /webrtc/whep HTTP/1.1\r\nHost: {streamer}\r\nContent-Type: application/sdp\r\nAuthorization: Bearer {TOKEN}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            s.write_all(&body)?;
            let mut resp = Vec::new();
            s.read_to_end(&mut resp)?;
            out.write_all(&resp)?;
            Ok(())
        }
        _ => reply(&mut out, "404 Not Found", "text/plain", b"not found\n"),
    }
}
