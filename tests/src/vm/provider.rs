//! A stand-in OAuth provider on the host side of a VM's TAP (`192.168.100.1:PORT` in the
//! VM's namespace), reached across the network the way the real provider is. Its authorize
//! page paints the whole window one colour ([`PAGE_RGB`], so a viewer can tell from the
//! stream's pixels that the page is on the VM's screen) and a click anywhere on it follows the
//! `redirect_uri` with a code and the `state`, as the provider's "Authorize" button does.

use crate::vm::VmError;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

/// The port the provider listens on in the namespace (baked into the test image's provider).
pub const PORT: u16 = 18080;
/// The authorize page's colour.
pub const PAGE_RGB: (u8, u8, u8) = (255, 0, 255);
/// The code handed to the CLI.
pub const CODE: &str = "vm-c0de";

/// One request the provider saw.
#[derive(Debug, Clone)]
pub struct Seen {
    pub path: String,
    pub user_agent: String,
}

/// The provider; stops serving when the namespace goes.
pub struct FakeProvider {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl FakeProvider {
    /// Listens on `bind` inside the namespace at `ns_path` (a thread that `setns`es there).
    pub fn start(ns_path: &str, bind: SocketAddr) -> Result<FakeProvider, VmError> {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let path = ns_path.to_string();
        let log = seen.clone();
        std::thread::spawn(move || {
            let listener = (|| {
                let file = std::fs::File::open(&path).map_err(|e| format!("{path}: {e}"))?;
                // SAFETY: setns on this thread only, with an fd held open.
                if unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    return Err(format!("setns {path}: {}", std::io::Error::last_os_error()));
                }
                TcpListener::bind(bind).map_err(|e| format!("bind {bind}: {e}"))
            })();
            let listener = match listener {
                Ok(l) => {
                    let _ = tx.send(Ok(()));
                    l
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    return;
                }
            };
            for conn in listener.incoming().flatten() {
                let log = log.clone();
                std::thread::spawn(move || serve_one(conn, &log));
            }
        });
        rx.recv()
            .map_err(|_| VmError::Other("provider thread died".into()))?
            .map_err(VmError::Other)?;
        Ok(FakeProvider { addr: bind, seen })
    }

    pub fn authorize_url(&self) -> String {
        format!("http://{}/authorize", self.addr)
    }

    /// Requests so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

fn serve_one(conn: std::net::TcpStream, log: &Mutex<Vec<Seen>>) {
    let mut reader = BufReader::new(match conn.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut request = String::new();
    if reader.read_line(&mut request).is_err() {
        return;
    }
    let mut user_agent = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("user-agent:") {
            user_agent = v.trim().to_string();
        }
    }
    let path = request.split_whitespace().nth(1).unwrap_or("").to_string();
    log.lock().unwrap_or_else(|p| p.into_inner()).push(Seen {
        path: path.clone(),
        user_agent,
    });
    let (status, body) = match path.split_once('?') {
        Some(("/authorize", query)) => ("200 OK", page(query)),
        _ => ("404 Not Found", "not found".to_string()),
    };
    let mut conn = conn;
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// The value of `key` in a query string, percent-decoded.
fn query_value(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let decoded = (b[i] == b'%' && i + 2 < b.len())
            .then(|| Some(hex(b[i + 1])? * 16 + hex(b[i + 2])?))
            .flatten();
        match (decoded, b[i]) {
            (Some(v), _) => {
                out.push(v);
                i += 3;
            }
            (None, b'+') => {
                out.push(b' ');
                i += 1;
            }
            (None, c) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The authorize page: one colour, a click anywhere authorizes (a JSON-escaped target URL).
fn page(query: &str) -> String {
    let redirect = query_value(query, "redirect_uri").unwrap_or_default();
    let state = query_value(query, "state").unwrap_or_default();
    let sep = if redirect.contains('?') { '&' } else { '?' };
    let target = format!("{redirect}{sep}code={CODE}&state={state}");
    let target_js = serde_json::to_string(&target).unwrap_or_else(|_| "\"\"".into());
    let (r, g, b) = PAGE_RGB;
    format!(
        "<!doctype html><html><head><title>Authorize guestkit</title><style>\
         html,body{{margin:0;height:100%;background:rgb({r},{g},{b});cursor:pointer}}\
         h1{{margin:0;padding-top:40vh;text-align:center;font:bold 48px sans-serif;color:#fff}}\
         </style></head><body><h1>Authorize</h1><script>\
         document.addEventListener('mousedown',()=>{{location.href={target_js};}});\
         </script></body></html>"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_page_redirects_with_code_and_state() {
        let p = page("client_id=x&redirect_uri=http%3A%2F%2Flocalhost%3A1455%2Fcallback&state=s1");
        assert!(
            p.contains(r#""http://localhost:1455/callback?code=vm-c0de&state=s1""#),
            "{p}"
        );
        assert!(p.contains("rgb(255,0,255)"), "{p}");
    }

    #[test]
    fn percent_decoding_keeps_bad_escapes() {
        assert_eq!(percent_decode("a%2Fb%zz%"), "a/b%zz%");
    }
}
