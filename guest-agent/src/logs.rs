//! Child output: read line by line from the stdout/stderr pipes, kept in a bounded ring
//! per service (what `GET /services/:name/logs` shows, through the control socket), and
//! forwarded to the journal with `SYSLOG_IDENTIFIER=<service>` so `journalctl -t NAME`
//! works. Without a journal (a laptop in `--dev`) lines go to our stderr as `[name] ...`.
//!
//! The journal gets the native protocol over `/run/systemd/journal/socket` directly:
//! tracing-journald fixes one identifier per layer, and we need one per service.
//! Lines carrying a console event (`GUESTKIT: `) are also echoed on our stdout, which the
//! unit sends to the console (failure F4), unless the children write them to the kernel log
//! themselves (`GUESTKIT_KMSG`, see `console.rs`).

use guest_proto::api::{LogLine, LogStream};
use std::collections::VecDeque;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};

/// The journal's native socket.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";
/// Longer lines are cut into pieces of this many bytes.
const MAX_LINE: usize = 16 * 1024;

/// Bounded line buffer; the oldest lines fall out.
#[derive(Debug)]
pub struct LogRing {
    cap: usize,
    lines: VecDeque<LogLine>,
}

impl LogRing {
    pub fn new(cap: usize) -> Self {
        Self {
            cap: cap.max(1),
            lines: VecDeque::new(),
        }
    }
    pub fn push(&mut self, line: LogLine) {
        if self.lines.len() == self.cap {
            self.lines.pop_front();
        }
        self.lines.push_back(line);
    }
    /// The last `n` lines, oldest first.
    pub fn tail(&self, n: usize) -> Vec<LogLine> {
        self.lines
            .iter()
            .skip(self.lines.len().saturating_sub(n))
            .cloned()
            .collect()
    }
}

/// Where lines go besides the ring.
#[derive(Clone)]
pub enum Sink {
    Journal(Arc<UnixDatagram>),
    Stderr,
}

impl Sink {
    /// The journal when its socket exists, else stderr.
    pub fn detect() -> Sink {
        if Path::new(JOURNAL_SOCKET).exists() {
            if let Ok(sock) = UnixDatagram::unbound() {
                return Sink::Journal(Arc::new(sock));
            }
        }
        Sink::Stderr
    }

    fn emit(&self, service: &str, pid: u32, stream: LogStream, line: &str) {
        match self {
            Sink::Journal(sock) => {
                let prio = if stream == LogStream::Stderr { 4 } else { 6 };
                let msg = journal_message(service, pid, prio, line);
                if sock.send_to(&msg, JOURNAL_SOCKET).is_err() {
                    eprintln!("[{service}] {line}");
                }
            }
            Sink::Stderr => eprintln!("[{service}] {line}"),
        }
    }
}

/// One native-protocol journal entry. `line` has no newline, so the simple
/// `KEY=value\n` form is enough.
pub fn journal_message(service: &str, pid: u32, priority: u8, line: &str) -> Vec<u8> {
    format!(
        "SYSLOG_IDENTIFIER={service}\nPRIORITY={priority}\nGUEST_AGENT_SERVICE_PID={pid}\nMESSAGE={line}\n"
    )
    .into_bytes()
}

/// Reads `reader` to its end, line by line, into `ring` and `sink`.
pub async fn pump<R: AsyncRead + Unpin>(
    reader: R,
    service: String,
    pid: u32,
    stream: LogStream,
    ring: Arc<Mutex<LogRing>>,
    sink: Sink,
) {
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::with_capacity(256);
    loop {
        buf.clear();
        let n = match read_line_capped(&mut reader, &mut buf).await {
            Ok(n) => n,
            Err(_) => break,
        };
        if n == 0 {
            break;
        }
        while matches!(buf.last(), Some(b'\n' | b'\r')) {
            buf.pop();
        }
        let line = String::from_utf8_lossy(&buf).into_owned();
        // With a kernel log, the supervisor hands it to its children (GUESTKIT_KMSG) and
        // they write their events there themselves, with a kernel timestamp: echoing the
        // stdout copy would print each event twice on the console.
        if line.contains(guest_proto::EVENT_PREFIX) && crate::console::kmsg_path().is_none() {
            println!("{line}");
        }
        sink.emit(&service, pid, stream, &line);
        let entry = LogLine {
            timestamp: crate::state::rfc3339(SystemTime::now()),
            stream,
            line,
        };
        ring.lock().unwrap_or_else(|p| p.into_inner()).push(entry);
    }
}

/// `read_until(b'\n')` that stops at [`MAX_LINE`] bytes so a child printing without
/// newlines cannot grow our memory.
async fn read_line_capped<R: AsyncRead + Unpin>(
    reader: &mut BufReader<R>,
    buf: &mut Vec<u8>,
) -> std::io::Result<usize> {
    let mut total = 0;
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(total);
        }
        let room = MAX_LINE - buf.len();
        let take = available.len().min(room);
        let (used, done) = match available[..take].iter().position(|&b| b == b'\n') {
            Some(i) => (i + 1, true),
            None => (take, buf.len() + take >= MAX_LINE),
        };
        buf.extend_from_slice(&available[..used]);
        reader.consume(used);
        total += used;
        if done {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(s: &str) -> LogLine {
        LogLine {
            timestamp: String::new(),
            stream: LogStream::Stdout,
            line: s.into(),
        }
    }

    #[test]
    fn ring_keeps_the_newest_lines() {
        let mut r = LogRing::new(3);
        for i in 0..5 {
            r.push(line(&i.to_string()));
        }
        let t: Vec<String> = r.tail(10).into_iter().map(|l| l.line).collect();
        assert_eq!(t, ["2", "3", "4"]);
        let t: Vec<String> = r.tail(1).into_iter().map(|l| l.line).collect();
        assert_eq!(t, ["4"]);
    }

    #[test]
    fn journal_entries_carry_the_service_name() {
        let m = String::from_utf8(journal_message("xvfb", 42, 6, "hello")).unwrap();
        assert!(m.starts_with("SYSLOG_IDENTIFIER=xvfb\n"));
        assert!(m.contains("\nMESSAGE=hello\n"));
    }

    #[tokio::test]
    async fn pump_splits_lines_and_caps_long_ones() {
        let long = "x".repeat(MAX_LINE + 10);
        let input = format!("one\r\ntwo\n{long}\nlast-without-newline");
        let ring = Arc::new(Mutex::new(LogRing::new(10)));
        pump(
            input.as_bytes(),
            "t".into(),
            1,
            LogStream::Stdout,
            ring.clone(),
            Sink::Stderr,
        )
        .await;
        let got: Vec<usize> = ring
            .lock()
            .unwrap()
            .tail(10)
            .iter()
            .map(|l| l.line.len())
            .collect();
        assert_eq!(got, [3, 3, MAX_LINE, 10, 20]);
    }
}
