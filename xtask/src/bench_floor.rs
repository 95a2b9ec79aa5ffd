//! The loopback floor for `bench agent`: the cheapest HTTP/1.1 keep-alive server that still
//! parses request boundaries, answering every request with the same small JSON, on one
//! current-thread tokio runtime. No routing, no headers parsed, no allocation per request.
//!
//! It is not a competitor: it shows what one pinned core can do at all with this load on this
//! machine, most of it kernel TCP over loopback. When the floor is not 5× Node's req/s, no
//! real server can be. Run as `xtask __bench-floor-server PORT` so it can be pinned like the
//! others.

use anyhow::{Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const BODY: &str = r#"{"status":"ok","timestamp":"2026-01-01T00:00:00.000Z","activeSessions":0}"#;

/// Serves on 127.0.0.1:`port` until killed.
pub fn serve(args: &[String]) -> Result<()> {
    let port: u16 = args
        .first()
        .context("usage: xtask __bench-floor-server PORT")?
        .parse()
        .context("PORT: not a port number")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    rt.block_on(async move {
        let listener = TcpListener::bind(("127.0.0.1", port)).await?;
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{BODY}",
            BODY.len()
        );
        let response: &'static [u8] = Box::leak(response.into_boxed_str()).as_bytes();
        loop {
            let (stream, _) = listener.accept().await?;
            let _ = stream.set_nodelay(true);
            tokio::spawn(connection(stream, response));
        }
    })
}

/// Answers each complete request head (`\r\n\r\n`) in what was read, in one write.
async fn connection(mut stream: TcpStream, response: &'static [u8]) -> std::io::Result<()> {
    let mut buf = vec![0u8; 8192];
    let mut out = Vec::with_capacity(response.len() * 4);
    let mut filled = 0;
    loop {
        let n = stream.read(&mut buf[filled..]).await?;
        if n == 0 {
            return Ok(());
        }
        filled += n;
        let mut start = 0;
        let mut close = false;
        while let Some(end) = find_head_end(&buf[start..filled]) {
            out.extend_from_slice(response);
            // `Connection: close` (the harness's readiness check reads to EOF).
            close |= buf[start..start + end]
                .windows(7)
                .any(|w| w.eq_ignore_ascii_case(b"close\r\n"));
            start += end;
        }
        if close {
            stream.write_all(&out).await?;
            return Ok(());
        }
        buf.copy_within(start..filled, 0);
        filled -= start;
        if filled == buf.len() {
            return Ok(()); // a head larger than the buffer: not this benchmark's load
        }
        if !out.is_empty() {
            stream.write_all(&out).await?;
            out.clear();
        }
    }
}

/// The length up to and including the first `\r\n\r\n`.
fn find_head_end(b: &[u8]) -> Option<usize> {
    b.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

#[cfg(test)]
mod tests {
    use super::find_head_end;

    #[test]
    fn head_ends_after_the_blank_line() {
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\n\r\nGET"), Some(18));
        assert_eq!(find_head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    }
}
