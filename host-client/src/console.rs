//! Following a console log file while it grows (Firecracker's serial output, QEMU's
//! `-serial file:`), feeding complete lines to a [`Diagnoser`].
//!
//! The file may not exist yet when the wait starts (the VMM creates it), may grow by partial
//! lines, and may be truncated or replaced when the VMM restarts: then reading starts over
//! with a fresh diagnosis, since the old findings belong to the previous boot.

use crate::diagnose::Diagnoser;
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Longest line kept whole; a longer one is cut there (console logs can hold binary junk).
const MAX_LINE: usize = 64 * 1024;
/// Most bytes read per poll, so one poll never stalls the wait loop.
const MAX_READ: usize = 4 << 20;

/// A console file being followed.
#[derive(Debug)]
pub struct ConsoleFollower {
    path: PathBuf,
    file: Option<File>,
    pos: u64,
    partial: Vec<u8>,
    diagnoser: Diagnoser,
}

/// A console file that exists but cannot be read.
#[derive(Debug, thiserror::Error)]
#[error("console log {path}: {source}")]
pub struct ConsoleError {
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

impl ConsoleFollower {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            file: None,
            pos: 0,
            partial: Vec::new(),
            diagnoser: Diagnoser::new(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The diagnosis of the complete lines read so far.
    pub fn diagnoser(&self) -> &Diagnoser {
        &self.diagnoser
    }

    /// Whether the file has been seen.
    pub fn exists(&self) -> bool {
        self.file.is_some()
    }

    /// Reads what was appended since the last poll. `Ok(true)` when new lines were fed.
    /// A missing file is not an error (the VMM has not created it yet).
    pub fn poll(&mut self) -> Result<bool, ConsoleError> {
        let err = |source| ConsoleError {
            path: self.path.clone(),
            source,
        };
        if self.file.is_none() {
            match File::open(&self.path) {
                Ok(f) => {
                    if f.metadata().map_err(err)?.is_dir() {
                        return Err(err(io::Error::new(
                            io::ErrorKind::InvalidInput,
                            "is a directory",
                        )));
                    }
                    self.file = Some(f);
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
                Err(e) => return Err(err(e)),
            }
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(false);
        };
        let meta = file.metadata().map_err(err)?;
        let replaced = std::fs::metadata(&self.path)
            .map(|now| (now.dev(), now.ino()) != (meta.dev(), meta.ino()))
            .unwrap_or(false);
        if replaced {
            // A new file at the path (the VMM recreated it): start over on the next poll.
            self.file = None;
            self.pos = 0;
            self.partial.clear();
            self.diagnoser = Diagnoser::new();
            return self.poll();
        }
        let len = meta.len();
        if len < self.pos {
            // Truncated: a new boot writes the file from the start.
            self.pos = 0;
            self.partial.clear();
            self.diagnoser = Diagnoser::new();
        }
        if len == self.pos {
            return Ok(false);
        }
        file.seek(SeekFrom::Start(self.pos)).map_err(err)?;
        let mut buf = Vec::new();
        let n = file
            .take(MAX_READ as u64)
            .read_to_end(&mut buf)
            .map_err(err)?;
        self.pos += n as u64;
        let mut fed = false;
        let mut rest = &buf[..];
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&rest[..nl]);
            self.feed_partial();
            fed = true;
            rest = &rest[nl + 1..];
        }
        self.partial.extend_from_slice(rest);
        if self.partial.len() >= MAX_LINE {
            self.feed_partial();
            fed = true;
        }
        Ok(fed)
    }

    /// Feeds the unfinished last line too (the log ended without a newline).
    pub fn flush(&mut self) {
        if !self.partial.is_empty() {
            self.feed_partial();
        }
    }

    fn feed_partial(&mut self) {
        let line = String::from_utf8_lossy(&self.partial).into_owned();
        self.partial.clear();
        self.diagnoser.push_line(&line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diagnose::Cause;
    use std::io::Write;

    #[test]
    fn follows_growth_partial_lines_and_truncation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let mut c = ConsoleFollower::new(&path);
        assert!(!c.poll().unwrap(), "missing file is fine");
        let mut f = File::create(&path).unwrap();
        f.write_all(b"[    0.000000] Linux version 6.1\n[    1.0] Kernel pan")
            .unwrap();
        assert!(c.poll().unwrap());
        assert!(
            c.diagnoser().fatal().is_none(),
            "half a line is not read yet"
        );
        f.write_all(b"ic - not syncing: Fatal exception\n").unwrap();
        assert!(c.poll().unwrap());
        let fatal = c.diagnoser().fatal().unwrap();
        assert_eq!((fatal.cause, fatal.line), (Cause::KernelPanic, 2));
        // the VMM restarts and truncates the file: the old panic is forgotten
        let mut f = File::create(&path).unwrap();
        f.write_all(b"[    0.000000] Linux version 6.1\n").unwrap();
        c.poll().unwrap();
        assert!(c.diagnoser().fatal().is_none());
        assert_eq!(c.diagnoser().lines(), 1);
    }

    #[test]
    fn a_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = ConsoleFollower::new(dir.path());
        let e = c.poll().unwrap_err();
        assert!(e.to_string().contains("directory"), "{e}");
    }
}
