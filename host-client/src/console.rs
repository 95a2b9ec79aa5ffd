//! Following a console log file while it grows (Firecracker's serial output, QEMU's
//! `-serial file:`), feeding complete lines to a [`Diagnoser`].
//!
//! The file may not exist yet when the wait starts (the VMM creates it), may grow by partial
//! lines, and may be truncated or replaced when the VMM restarts: then reading starts over
//! with a fresh diagnosis, since the old findings belong to the previous boot.
//!
//! A poll reads at most [`MAX_READ`] bytes, so a guest that floods its console cannot hold
//! the wait loop (and its deadline) inside one poll; [`ConsoleFollower::pending`] says there
//! is more to read at once. [`diagnose_reader`] is the one-shot form on a stream.

use crate::diagnose::{Diagnoser, Diagnosis};
use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Longest line kept whole; a longer one is cut there (console logs can hold binary junk).
const MAX_LINE: usize = 64 * 1024;
/// Most bytes read per poll, so one poll never stalls the wait loop (a few ms of parsing).
pub const MAX_READ: usize = 256 << 10;

/// A console file being followed.
#[derive(Debug)]
pub struct ConsoleFollower {
    path: PathBuf,
    file: Option<File>,
    pos: u64,
    /// The file's length at the last poll.
    len: u64,
    lines: LineBuf,
    diagnoser: Diagnoser,
    /// How many times reading started over (file truncated or replaced).
    generation: u64,
}

/// Splits bytes into lines for a [`Diagnoser`], cutting lines longer than [`MAX_LINE`].
#[derive(Debug, Default)]
struct LineBuf {
    partial: Vec<u8>,
}

impl LineBuf {
    /// Feeds the complete lines in `bytes`; keeps the unfinished end. `true` if a line was fed.
    fn feed(&mut self, bytes: &[u8], d: &mut Diagnoser) -> bool {
        let mut fed = false;
        let mut rest = bytes;
        while let Some(nl) = rest.iter().position(|&b| b == b'\n') {
            self.partial.extend_from_slice(&rest[..nl]);
            self.push(d);
            fed = true;
            rest = &rest[nl + 1..];
        }
        self.partial.extend_from_slice(rest);
        if self.partial.len() >= MAX_LINE {
            self.push(d);
            fed = true;
        }
        fed
    }

    fn push(&mut self, d: &mut Diagnoser) {
        d.push_line(&String::from_utf8_lossy(&self.partial));
        self.partial.clear();
    }
}

/// Diagnoses a whole console log read from `r` (a file, stdin) without holding it in memory;
/// the same result as [`crate::analyze`] on its text (lines over [`MAX_LINE`] bytes are cut).
pub fn diagnose_reader(mut r: impl Read) -> io::Result<Diagnosis> {
    let mut d = Diagnoser::new();
    let mut lines = LineBuf::default();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        lines.feed(&buf[..n], &mut d);
    }
    // `analyze` reads the text after the last newline as a line, even an empty one.
    lines.push(&mut d);
    Ok(d.finish())
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
            len: 0,
            lines: LineBuf::default(),
            diagnoser: Diagnoser::new(),
            generation: 0,
        }
    }

    /// Changes when reading starts over (the file was truncated or replaced): findings and
    /// milestones seen before belong to another boot.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether the file held more than the last poll read: poll again at once.
    pub fn pending(&self) -> bool {
        self.len > self.pos
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
        let path = self.path.clone();
        let err = |source| ConsoleError {
            path: path.clone(),
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
        let Some(meta) = self.file.as_ref().map(File::metadata) else {
            return Ok(false);
        };
        let meta = meta.map_err(err)?;
        let replaced = std::fs::metadata(&self.path)
            .map(|now| (now.dev(), now.ino()) != (meta.dev(), meta.ino()))
            .unwrap_or(false);
        if replaced {
            // A new file at the path (the VMM recreated it): start over on the next poll.
            self.file = None;
            self.start_over();
            return self.poll();
        }
        let len = meta.len();
        if len < self.pos {
            // Truncated: a new boot writes the file from the start.
            self.start_over();
        }
        self.len = len;
        if len == self.pos {
            return Ok(false);
        }
        let Some(file) = self.file.as_mut() else {
            return Ok(false);
        };
        file.seek(SeekFrom::Start(self.pos)).map_err(err)?;
        let mut buf = Vec::new();
        let n = file
            .take(MAX_READ as u64)
            .read_to_end(&mut buf)
            .map_err(err)?;
        self.pos += n as u64;
        Ok(self.lines.feed(&buf, &mut self.diagnoser))
    }

    /// Feeds the unfinished last line too (the log ended without a newline).
    pub fn flush(&mut self) {
        if !self.lines.partial.is_empty() {
            self.lines.push(&mut self.diagnoser);
        }
    }

    fn start_over(&mut self) {
        self.pos = 0;
        self.len = 0;
        self.lines.partial.clear();
        self.diagnoser = Diagnoser::new();
        self.generation += 1;
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
    fn the_reader_agrees_with_analyze() {
        let text = "[    0.000000] Linux version 6.1\r\n[FAILED] Failed to start a.service.\n\
                    GUESTKIT: {cut\n\n[    1.0] Kernel panic - not syncing: x";
        for text in [text, "", "\n", "no newline at the end"] {
            let got = diagnose_reader(text.as_bytes()).unwrap();
            assert_eq!(got, crate::analyze(text), "{text:?}");
        }
    }

    #[test]
    fn a_directory_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut c = ConsoleFollower::new(dir.path());
        let e = c.poll().unwrap_err();
        assert!(e.to_string().contains("directory"), "{e}");
    }
}
