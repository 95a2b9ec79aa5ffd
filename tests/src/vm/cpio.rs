//! A newc ("SVR4 with no CRC", magic `070701`) cpio writer: the archive format the kernel
//! unpacks as an initramfs. Written here (about sixty lines) rather than shelling out to
//! `cpio`, so the image is byte-for-byte reproducible (fixed mtimes, owners, inode numbers)
//! and the build needs no extra package.
//!
//! Each entry: a 110-byte ASCII header (13 eight-digit hex fields after the magic), the name
//! with its NUL, padding to 4 bytes, the data, padding to 4 bytes. The archive ends with the
//! entry `TRAILER!!!`. Parent directories must come before their children.

use std::io::{self, Write};

/// `S_IFDIR`, `S_IFREG`, `S_IFLNK`, `S_IFCHR` file-type bits of `mode`.
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFCHR: u32 = 0o020000;

/// Writes entries one after the other; [`Writer::finish`] adds the trailer.
pub struct Writer<W: Write> {
    out: W,
    written: u64,
    next_ino: u32,
}

impl<W: Write> Writer<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            written: 0,
            next_ino: 1,
        }
    }

    /// A directory (`mode` holds the permission bits, e.g. 0o755).
    pub fn dir(&mut self, path: &str, mode: u32) -> io::Result<()> {
        self.entry(path, S_IFDIR | (mode & 0o7777), 2, (0, 0), &[])
    }

    /// A regular file with `data`.
    pub fn file(&mut self, path: &str, mode: u32, data: &[u8]) -> io::Result<()> {
        self.entry(path, S_IFREG | (mode & 0o7777), 1, (0, 0), data)
    }

    /// A symbolic link to `target`.
    pub fn symlink(&mut self, path: &str, target: &str) -> io::Result<()> {
        self.entry(path, S_IFLNK | 0o777, 1, (0, 0), target.as_bytes())
    }

    /// A character device node (e.g. `/dev/console` 5:1, which the kernel opens before
    /// running init, before devtmpfs is mounted).
    pub fn char_dev(&mut self, path: &str, mode: u32, major: u32, minor: u32) -> io::Result<()> {
        self.entry(path, S_IFCHR | (mode & 0o7777), 1, (major, minor), &[])
    }

    fn entry(
        &mut self,
        path: &str,
        mode: u32,
        nlink: u32,
        (rmajor, rminor): (u32, u32),
        data: &[u8],
    ) -> io::Result<()> {
        let name = path.trim_start_matches('/');
        let name = if name.is_empty() { "." } else { name };
        let size = u32::try_from(data.len()).map_err(|_| {
            io::Error::new(io::ErrorKind::InvalidInput, format!("{path}: over 4 GiB"))
        })?;
        let ino = self.next_ino;
        self.next_ino += 1;
        let fields = [
            ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime: fixed, so images are reproducible
            size,
            0, // dev major
            0, // dev minor
            rmajor,
            rminor,
            name.len() as u32 + 1,
            0, // check (unused by newc)
        ];
        let mut header = String::with_capacity(110);
        header.push_str("070701");
        for f in fields {
            header.push_str(&format!("{f:08X}"));
        }
        self.put(header.as_bytes())?;
        self.put(name.as_bytes())?;
        self.put(&[0])?;
        self.pad()?;
        self.put(data)?;
        self.pad()
    }

    fn put(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.out.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }

    fn pad(&mut self) -> io::Result<()> {
        let rem = (self.written % 4) as usize;
        if rem != 0 {
            self.put(&[0u8; 3][..4 - rem])?;
        }
        Ok(())
    }

    /// Writes the trailer and returns the underlying writer.
    pub fn finish(mut self) -> io::Result<W> {
        self.entry("TRAILER!!!", 0, 1, (0, 0), &[])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (name, mode, (rdev major, minor), data) of one entry.
    type Entry = (String, u32, (u32, u32), Vec<u8>);

    /// Parses a newc archive back into entries: the reader the kernel is.
    fn parse(mut b: &[u8]) -> Vec<Entry> {
        let mut out = Vec::new();
        let mut offset = 0usize;
        loop {
            assert_eq!(&b[..6], b"070701", "magic at {offset}");
            let field = |i: usize| {
                let s = std::str::from_utf8(&b[6 + i * 8..14 + i * 8]).unwrap();
                u32::from_str_radix(s, 16).unwrap()
            };
            let mode = field(1);
            let size = field(6) as usize;
            let rdev = (field(9), field(10));
            let namesize = field(11) as usize;
            let name = String::from_utf8(b[110..110 + namesize - 1].to_vec()).unwrap();
            let mut at = 110 + namesize;
            at += (4 - (offset + at) % 4) % 4;
            let data = b[at..at + size].to_vec();
            at += size;
            at += (4 - (offset + at) % 4) % 4;
            offset += at;
            b = &b[at..];
            if name == "TRAILER!!!" {
                assert!(b.is_empty(), "bytes after the trailer");
                return out;
            }
            out.push((name, mode, rdev, data));
        }
    }

    #[test]
    fn entries_round_trip_with_alignment() {
        let mut w = Writer::new(Vec::new());
        w.dir("/", 0o755).unwrap();
        w.dir("/sbin", 0o755).unwrap();
        w.file("/sbin/x", 0o755, b"abcde").unwrap();
        w.file("/e", 0o644, b"").unwrap();
        w.symlink("/init", "sbin/x").unwrap();
        w.char_dev("/console", 0o600, 5, 1).unwrap();
        let bytes = w.finish().unwrap();
        assert_eq!(bytes.len() % 4, 0);
        let entries = parse(&bytes);
        let names: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(names, [".", "sbin", "sbin/x", "e", "init", "console"]);
        assert_eq!(entries[2].1, S_IFREG | 0o755);
        assert_eq!(entries[2].3, b"abcde");
        assert_eq!(entries[4].1 & S_IFLNK, S_IFLNK);
        assert_eq!(entries[4].3, b"sbin/x");
        assert_eq!(entries[5].1, S_IFCHR | 0o600);
        assert_eq!(entries[5].2, (5, 1));
    }

    #[test]
    fn same_input_same_bytes() {
        let build = || {
            let mut w = Writer::new(Vec::new());
            w.file("/a", 0o644, b"x").unwrap();
            w.finish().unwrap()
        };
        assert_eq!(build(), build());
    }
}
