//! `cargo xtask build-static`: the guest-netinit that goes into every golden image, built
//! statically with the size-tuned `static` profile, then checked: no ELF interpreter and no
//! shared-library dependency (it runs before anything is mounted), and at most 2.5 MB.
//!
//! The toolchain has no musl target, so it is glibc with `+crt-static`. `--target` is given so
//! that RUSTFLAGS reach only the target crates, not build scripts or proc-macros.

use crate::sh::{banner, cargo, run, target_dir};
use anyhow::{bail, Context, Result};
use std::path::PathBuf;

/// The host triple the static binary is built for.
pub const TARGET: &str = "x86_64-unknown-linux-gnu";
/// The size budget (issue 2): 2.5 MB.
pub const MAX_BYTES: u64 = 2_500_000;

/// The directory the static build lands in.
pub fn static_dir() -> PathBuf {
    target_dir().join(TARGET).join("static")
}

/// Builds the static guest-netinit, checks it, prints path and size; returns the path.
pub fn build_netinit() -> Result<PathBuf> {
    banner("static guest-netinit");
    run(cargo()
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .args([
            "build",
            "--profile",
            "static",
            "-p",
            "guest-netinit",
            "--target",
            TARGET,
        ]))?;
    let path = static_dir().join("guest-netinit");
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let linkage = elf::linkage(&bytes).with_context(|| format!("inspecting {}", path.display()))?;
    let size = bytes.len() as u64;
    println!(
        "{}: {size} bytes ({:.2} MB, budget {:.1} MB), {linkage}",
        path.display(),
        size as f64 / 1e6,
        MAX_BYTES as f64 / 1e6
    );
    if !linkage.is_static() {
        bail!("{} is not statically linked: {linkage}", path.display());
    }
    if size > MAX_BYTES {
        bail!(
            "{} is {size} bytes, over the {MAX_BYTES}-byte budget",
            path.display()
        );
    }
    Ok(path)
}

/// Just enough ELF64 reading to tell whether a binary needs a dynamic loader.
pub mod elf {
    use anyhow::{bail, Result};
    use std::fmt;

    const PT_DYNAMIC: u32 = 2;
    const PT_INTERP: u32 = 3;
    const DT_NULL: u64 = 0;
    const DT_NEEDED: u64 = 1;

    /// How a binary is linked.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Linkage {
        /// PT_INTERP contents, e.g. `/lib64/ld-linux-x86-64.so.2`.
        pub interpreter: Option<String>,
        /// Number of DT_NEEDED entries (shared libraries asked for).
        pub needed: usize,
        /// Has a PT_DYNAMIC segment (static-pie binaries do, to relocate themselves).
        pub dynamic_segment: bool,
    }

    impl Linkage {
        pub fn is_static(&self) -> bool {
            self.interpreter.is_none() && self.needed == 0
        }
    }

    impl fmt::Display for Linkage {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match (&self.interpreter, self.needed, self.dynamic_segment) {
                (None, 0, true) => write!(f, "static-pie (no interpreter, no shared libraries)"),
                (None, 0, false) => write!(f, "static (no interpreter, no shared libraries)"),
                (interp, needed, _) => write!(
                    f,
                    "dynamic (interpreter {}, {needed} shared libraries)",
                    interp.as_deref().unwrap_or("none")
                ),
            }
        }
    }

    fn u16_at(b: &[u8], at: usize) -> Result<u16> {
        match b.get(at..at + 2) {
            Some(s) => Ok(u16::from_le_bytes([s[0], s[1]])),
            None => bail!("truncated ELF at {at}"),
        }
    }
    fn u32_at(b: &[u8], at: usize) -> Result<u32> {
        match b.get(at..at + 4) {
            Some(s) => Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]])),
            None => bail!("truncated ELF at {at}"),
        }
    }
    fn u64_at(b: &[u8], at: usize) -> Result<u64> {
        match b.get(at..at + 8) {
            Some(s) => {
                let mut a = [0u8; 8];
                a.copy_from_slice(s);
                Ok(u64::from_le_bytes(a))
            }
            None => bail!("truncated ELF at {at}"),
        }
    }

    /// Reads the program headers of a little-endian ELF64 file.
    pub fn linkage(b: &[u8]) -> Result<Linkage> {
        if b.get(..4) != Some(b"\x7fELF".as_slice()) {
            bail!("not an ELF file");
        }
        if b.get(4) != Some(&2) || b.get(5) != Some(&1) {
            bail!("not a little-endian ELF64 file");
        }
        let phoff = u64_at(b, 0x20)? as usize;
        let phentsize = u16_at(b, 0x36)? as usize;
        let phnum = u16_at(b, 0x38)? as usize;
        let mut linkage = Linkage {
            interpreter: None,
            needed: 0,
            dynamic_segment: false,
        };
        for i in 0..phnum {
            let ph = phoff + i * phentsize;
            let kind = u32_at(b, ph)?;
            let offset = u64_at(b, ph + 8)? as usize;
            let filesz = u64_at(b, ph + 32)? as usize;
            match kind {
                PT_INTERP => {
                    let Some(raw) = b.get(offset..offset + filesz) else {
                        bail!("PT_INTERP out of the file");
                    };
                    let text = String::from_utf8_lossy(raw);
                    linkage.interpreter = Some(text.trim_end_matches('\0').to_owned());
                }
                PT_DYNAMIC => {
                    linkage.dynamic_segment = true;
                    let mut at = offset;
                    while at + 16 <= offset + filesz {
                        let tag = u64_at(b, at)?;
                        if tag == DT_NULL {
                            break;
                        }
                        if tag == DT_NEEDED {
                            linkage.needed += 1;
                        }
                        at += 16;
                    }
                }
                _ => {}
            }
        }
        Ok(linkage)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn this_test_binary_is_dynamic() {
            // Test binaries are built without +crt-static: they must read as dynamic, which
            // shows the check can fail.
            let exe = std::env::current_exe().expect("current exe");
            let bytes = std::fs::read(exe).expect("read exe");
            let l = linkage(&bytes).expect("parse");
            assert!(l.interpreter.is_some(), "{l}");
            assert!(l.needed > 0, "{l}");
            assert!(!l.is_static());
        }

        #[test]
        fn garbage_is_rejected() {
            assert!(linkage(b"#!/bin/sh\n").is_err());
            assert!(linkage(b"\x7fELF\x02\x01").is_err());
        }
    }
}
