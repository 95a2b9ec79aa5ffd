//! What an executable needs to start: the ELF program interpreter (`PT_INTERP`, e.g.
//! `/lib64/ld-linux-x86-64.so.2`) of a dynamic binary, or the `#!` interpreter of a script.
//! A binary copied into an image without its loader fails with a bare ENOENT at boot, which
//! reads exactly like "the binary is missing" — so `check` names the loader instead.

const PT_INTERP: u32 = 3;

/// The interpreter `bytes` (the start of an executable file) asks for, `None` for a static
/// binary or an unknown format. Only 64-bit little-endian ELF is parsed (the VMs are x86-64).
pub fn interpreter(bytes: &[u8]) -> Option<String> {
    if let Some(rest) = bytes.strip_prefix(b"#!") {
        let line = rest.split(|b| *b == b'\n').next()?;
        let line = String::from_utf8_lossy(line);
        return line.split_whitespace().next().map(str::to_string);
    }
    if bytes.get(0..4)? != b"\x7fELF" || bytes.get(4)? != &2 || bytes.get(5)? != &1 {
        return None;
    }
    let field = |o: usize, n: usize| bytes.get(o..o.checked_add(n)?);
    let u16_at = |o: usize| Some(u16::from_le_bytes(field(o, 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(field(o, 4)?.try_into().ok()?));
    let u64_at = |o: usize| {
        let v = u64::from_le_bytes(field(o, 8)?.try_into().ok()?);
        usize::try_from(v).ok()
    };
    let phoff = u64_at(0x20)?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    for i in 0..phnum.min(64) {
        let ph = phoff.checked_add(i.checked_mul(phentsize)?)?;
        if u32_at(ph)? != PT_INTERP {
            continue;
        }
        let off = u64_at(ph.checked_add(0x08)?)?;
        let size = u64_at(ph.checked_add(0x20)?)?;
        let raw = bytes.get(off..off.checked_add(size)?)?;
        let path = raw.split(|b| *b == 0).next()?;
        return Some(String::from_utf8_lossy(path).into_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scripts_and_this_test_binary() {
        assert_eq!(interpreter(b"#!/bin/sh -e\necho"), Some("/bin/sh".into()));
        assert_eq!(
            interpreter(b"#!  /usr/bin/env python3\n"),
            Some("/usr/bin/env".into())
        );
        assert_eq!(interpreter(b"plain text"), None);
        assert_eq!(interpreter(b"\x7fELF\x02\x01"), None);
        // The test binary itself is a dynamic (or static-pie) x86-64 executable.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let interp = interpreter(&me);
        let static_build = cfg!(target_feature = "crt-static");
        assert_eq!(interp.is_none(), static_build, "{interp:?}");
        if let Some(i) = interp {
            assert!(i.starts_with('/') && i.contains("ld-linux"), "{i}");
        }
    }

    #[test]
    fn truncated_and_hostile_headers_do_not_panic() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        for n in [0, 4, 6, 0x20, 0x3a, 0x40, 100, 500] {
            let _ = interpreter(&me[..n.min(me.len())]);
        }
        let mut bad = me[..0x40].to_vec();
        bad[0x20..0x28].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(interpreter(&bad), None);
        // a program header pointing just below usize::MAX
        let mut bad = me[..0x40].to_vec();
        bad[0x20..0x28].copy_from_slice(&(u64::MAX - 3).to_le_bytes());
        bad[0x38..0x3a].copy_from_slice(&2u16.to_le_bytes());
        assert_eq!(interpreter(&bad), None);
    }

    proptest::proptest! {
        #[test]
        fn never_panics(tail in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let mut b = b"\x7fELF\x02\x01".to_vec();
            b.extend(tail);
            let _ = interpreter(&b);
        }
    }
}
