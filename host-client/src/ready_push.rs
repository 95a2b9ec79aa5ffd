//! The host end of the readiness line the agent pushes over vsock (issue 13).
//!
//! The agent connects to CID 2 on `guest_agent.ready_port=` (8081) when it is ready and
//! whenever its summary changes. Firecracker (and vhost-device-vsock) deliver such a
//! connection to the unix socket `<uds_path>_<port>` on the host, which the host must be
//! listening on: [`ReadyListener`] binds it, accepts, and reads ONE line per connection.
//!
//! The line comes from the guest, so it is not trusted: at most [`MAX_PUSHED_LINE`] bytes are
//! read, a connection that does not finish its line within [`LINE_TIMEOUT`] is dropped, and
//! what does not parse as a [`ReadinessLine`] is an error naming why (the caller goes on
//! listening). Lines are handed out in arrival order (`seq` is not used to drop lines: it
//! starts over when the agent restarts).

use guest_proto::readiness::{ReadinessError, ReadinessLine};
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{UnixListener, UnixStream};

/// Longest pushed line read (the agent's own bound is 8 KiB).
pub const MAX_PUSHED_LINE: usize = 16 * 1024;
/// Time a pushing connection has to deliver its line.
pub const LINE_TIMEOUT: Duration = Duration::from_secs(2);

/// The socket Firecracker delivers guest connections to host port `port` on: `<uds>_<port>`.
pub fn ready_socket_path(uds: &Path, port: u32) -> PathBuf {
    let mut s = uds.as_os_str().to_owned();
    s.push(format!("_{port}"));
    PathBuf::from(s)
}

/// Why a pushed connection gave no line.
#[derive(Debug, thiserror::Error)]
pub enum PushError {
    #[error("readiness socket {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("readiness socket {0}: another process is listening on it")]
    InUse(PathBuf),
    #[error("pushed readiness line: {0}")]
    Io(#[from] io::Error),
    #[error("pushed readiness line: more than {MAX_PUSHED_LINE} bytes without a newline")]
    TooLong,
    #[error("pushed readiness line: not finished within {LINE_TIMEOUT:?}")]
    Slow,
    #[error("pushed readiness line: the connection closed before a newline ({0} bytes)")]
    Unterminated(usize),
    #[error("{0}")]
    Parse(#[from] ReadinessError),
}

/// Listens on `<uds>_<port>`; removes the socket file when dropped.
#[derive(Debug)]
pub struct ReadyListener {
    listener: UnixListener,
    path: PathBuf,
}

impl ReadyListener {
    /// Binds `path`. A stale socket left by an earlier run (nobody accepts on it) is replaced;
    /// one somebody listens on is [`PushError::InUse`].
    pub fn bind(path: &Path) -> Result<Self, PushError> {
        let bind = |path: &Path| {
            UnixListener::bind(path).map_err(|source| PushError::Bind {
                path: path.to_path_buf(),
                source,
            })
        };
        let listener = match bind(path) {
            Ok(l) => l,
            Err(PushError::Bind { source, .. }) if source.kind() == io::ErrorKind::AddrInUse => {
                if std::os::unix::net::UnixStream::connect(path).is_ok() {
                    return Err(PushError::InUse(path.to_path_buf()));
                }
                let is_socket = std::fs::symlink_metadata(path)
                    .map(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
                    .unwrap_or(false);
                if !is_socket {
                    return Err(PushError::Bind {
                        path: path.to_path_buf(),
                        source,
                    });
                }
                let _ = std::fs::remove_file(path);
                bind(path)?
            }
            Err(e) => return Err(e),
        };
        Ok(Self {
            listener,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The next line pushed, or why the next connection gave none. Waits for a connection;
    /// reading its line is bounded by [`LINE_TIMEOUT`] (another pusher is not served
    /// meanwhile: the agent pushes rarely, and a VM that stalls its own push only delays
    /// its own answer).
    pub async fn next(&self) -> Result<ReadinessLine, PushError> {
        let (sock, _) = self.listener.accept().await?;
        let line = match tokio::time::timeout(LINE_TIMEOUT, read_line(sock)).await {
            Err(_) => return Err(PushError::Slow),
            Ok(r) => r?,
        };
        Ok(ReadinessLine::parse(&line)?)
    }
}

impl Drop for ReadyListener {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads up to the first newline, at most [`MAX_PUSHED_LINE`] bytes.
async fn read_line(mut sock: UnixStream) -> Result<Vec<u8>, PushError> {
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 4096];
    loop {
        let n = sock.read(&mut chunk).await?;
        if n == 0 {
            return Err(PushError::Unterminated(buf.len()));
        }
        let chunk = &chunk[..n];
        if let Some(nl) = chunk.iter().position(|&b| b == b'\n') {
            if buf.len() + nl + 1 > MAX_PUSHED_LINE {
                return Err(PushError::TooLong);
            }
            buf.extend_from_slice(&chunk[..=nl]);
            return Ok(buf);
        }
        if buf.len() + n >= MAX_PUSHED_LINE {
            return Err(PushError::TooLong);
        }
        buf.extend_from_slice(chunk);
    }
}
