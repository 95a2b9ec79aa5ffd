//! Reading a kernel module's `.modinfo` ELF section (`depends=a,b`, `name=...`), for images
//! whose kernel package ships without `modules.dep` (Debian generates it in postinst, so a
//! rootfs assembled by unpacking the package has none). A small parser over bytes: ELF32
//! and ELF64, either byte order, extended section numbering; no ELF crate needed.

/// The `key=value` pairs of a `.modinfo` section, in order.
pub fn entries(section: &[u8]) -> Vec<(&str, &str)> {
    section
        .split(|b| *b == 0)
        .filter_map(|entry| std::str::from_utf8(entry).ok())
        .filter_map(|entry| entry.split_once('='))
        .collect()
}

/// The modules named by `depends=` in a module file's bytes (empty when it has none).
pub fn depends(elf: &[u8]) -> Result<Vec<String>, String> {
    let section = modinfo_section(elf)?;
    Ok(entries(section)
        .into_iter()
        .filter(|(k, _)| *k == "depends")
        .flat_map(|(_, v)| v.split(','))
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(str::to_owned)
        .collect())
}

/// The bytes of the `.modinfo` section of an ELF relocatable object.
pub fn modinfo_section(elf: &[u8]) -> Result<&[u8], String> {
    let e = Elf::new(elf)?;
    let (shoff, shentsize, mut shnum, mut shstrndx) = if e.is64 {
        (
            e.u64(0x28)?,
            e.u16(0x3a)? as u64,
            e.u16(0x3c)? as u64,
            e.u16(0x3e)? as u64,
        )
    } else {
        (
            e.u32(0x20)? as u64,
            e.u16(0x2e)? as u64,
            e.u16(0x30)? as u64,
            e.u16(0x32)? as u64,
        )
    };
    if shoff == 0 {
        return Err("ELF file has no section headers".into());
    }
    let min_entsize = if e.is64 { 64 } else { 40 };
    if shentsize < min_entsize {
        return Err(format!("ELF section header size {shentsize} is too small"));
    }
    // Extended numbering: the real counts live in section 0.
    if shnum == 0 {
        shnum = e.section(shoff, shentsize, 0)?.size;
    }
    if shstrndx == 0xffff {
        shstrndx = e.section(shoff, shentsize, 0)?.link;
    }
    if shstrndx >= shnum {
        return Err(format!(
            "ELF section name table index {shstrndx} is out of range"
        ));
    }
    let names = e.section(shoff, shentsize, shstrndx)?;
    let names = e.bytes(names.offset, names.size)?;
    for i in 1..shnum {
        let s = e.section(shoff, shentsize, i)?;
        let name = names
            .get(s.name as usize..)
            .and_then(|n| n.split(|b| *b == 0).next())
            .ok_or_else(|| format!("ELF section {i} has a bad name offset"))?;
        if name == b".modinfo" {
            return e.bytes(s.offset, s.size);
        }
    }
    Err("no .modinfo section (not a kernel module?)".into())
}

struct Elf<'a> {
    data: &'a [u8],
    is64: bool,
    little: bool,
}

struct Section {
    name: u32,
    link: u64,
    offset: u64,
    size: u64,
}

impl<'a> Elf<'a> {
    fn new(data: &'a [u8]) -> Result<Self, String> {
        if data.len() < 0x34 || &data[..4] != b"\x7fELF" {
            return Err("not an ELF file".into());
        }
        let is64 = match data[4] {
            1 => false,
            2 => true,
            c => return Err(format!("unknown ELF class {c}")),
        };
        let little = match data[5] {
            1 => true,
            2 => false,
            d => return Err(format!("unknown ELF byte order {d}")),
        };
        if is64 && data.len() < 0x40 {
            return Err("truncated ELF header".into());
        }
        Ok(Elf { data, is64, little })
    }

    fn bytes(&self, offset: u64, len: u64) -> Result<&'a [u8], String> {
        let end = offset
            .checked_add(len)
            .ok_or_else(|| "ELF offset overflow".to_string())?;
        usize::try_from(offset)
            .ok()
            .zip(usize::try_from(end).ok())
            .and_then(|(a, b)| self.data.get(a..b))
            .ok_or_else(|| format!("ELF file truncated: needs bytes {offset}..{end}"))
    }

    fn uint<const N: usize>(&self, at: u64) -> Result<[u8; N], String> {
        let b = self.bytes(at, N as u64)?;
        let mut out = [0u8; N];
        out.copy_from_slice(b);
        if !self.little {
            out.reverse();
        }
        Ok(out)
    }

    fn u16(&self, at: u64) -> Result<u16, String> {
        self.uint::<2>(at).map(u16::from_le_bytes)
    }
    fn u32(&self, at: u64) -> Result<u32, String> {
        self.uint::<4>(at).map(u32::from_le_bytes)
    }
    fn u64(&self, at: u64) -> Result<u64, String> {
        self.uint::<8>(at).map(u64::from_le_bytes)
    }

    fn section(&self, shoff: u64, entsize: u64, i: u64) -> Result<Section, String> {
        let at = i
            .checked_mul(entsize)
            .and_then(|o| o.checked_add(shoff))
            .ok_or_else(|| "ELF offset overflow".to_string())?;
        if self.is64 {
            Ok(Section {
                name: self.u32(at)?,
                link: self.u32(at + 40)? as u64,
                offset: self.u64(at + 24)?,
                size: self.u64(at + 32)?,
            })
        } else {
            Ok(Section {
                name: self.u32(at)?,
                link: self.u32(at + 24)? as u64,
                offset: self.u32(at + 16)? as u64,
                size: self.u32(at + 20)? as u64,
            })
        }
    }
}

/// Build a minimal relocatable ELF file holding `.modinfo` (for tests of this parser and of
/// module resolution; real modules are exercised in the VM tests).
#[doc(hidden)]
pub fn fake_module(is64: bool, little: bool, modinfo: &[u8]) -> Vec<u8> {
    let shstrtab = b"\0.shstrtab\0.modinfo\0.text\0";
    let text = b"\x90\x90\x90\x90";
    let (ehsize, shentsize) = if is64 { (64usize, 64usize) } else { (52, 40) };
    let put = |v: &mut Vec<u8>, at: usize, bytes: &[u8]| {
        let mut b = bytes.to_vec();
        if !little {
            b.reverse();
        }
        v[at..at + b.len()].copy_from_slice(&b);
    };
    // Layout: header, .shstrtab, .text, .modinfo, section headers.
    let off_names = ehsize;
    let off_text = off_names + shstrtab.len();
    let off_modinfo = off_text + text.len();
    let shoff = off_modinfo + modinfo.len();
    let total = shoff + 4 * shentsize;
    let mut v = vec![0u8; total];
    v[..4].copy_from_slice(b"\x7fELF");
    v[4] = if is64 { 2 } else { 1 };
    v[5] = if little { 1 } else { 2 };
    v[6] = 1;
    put(&mut v, 16, &1u16.to_le_bytes()); // ET_REL
    v[off_names..off_text].copy_from_slice(shstrtab);
    v[off_text..off_modinfo].copy_from_slice(text);
    v[off_modinfo..shoff].copy_from_slice(modinfo);
    if is64 {
        put(&mut v, 0x28, &(shoff as u64).to_le_bytes());
        put(&mut v, 0x3a, &(shentsize as u16).to_le_bytes());
        put(&mut v, 0x3c, &4u16.to_le_bytes());
        put(&mut v, 0x3e, &1u16.to_le_bytes());
    } else {
        put(&mut v, 0x20, &(shoff as u32).to_le_bytes());
        put(&mut v, 0x2e, &(shentsize as u16).to_le_bytes());
        put(&mut v, 0x30, &4u16.to_le_bytes());
        put(&mut v, 0x32, &1u16.to_le_bytes());
    }
    // (name offset in shstrtab, data offset, size); section 0 stays null.
    let sections = [
        (1u32, off_names, shstrtab.len()),
        (21, off_text, text.len()),
        (11, off_modinfo, modinfo.len()),
    ];
    for (i, (name, off, size)) in sections.iter().enumerate() {
        let at = shoff + (i + 1) * shentsize;
        put(&mut v, at, &name.to_le_bytes());
        put(&mut v, at + 4, &1u32.to_le_bytes()); // SHT_PROGBITS (good enough)
        if is64 {
            put(&mut v, at + 24, &(*off as u64).to_le_bytes());
            put(&mut v, at + 32, &(*size as u64).to_le_bytes());
        } else {
            put(&mut v, at + 16, &(*off as u32).to_le_bytes());
            put(&mut v, at + 20, &(*size as u32).to_le_bytes());
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `.modinfo` of Debian 12's virtio_net.ko (6.1.0-48-cloud-amd64), verbatim.
    const VIRTIO_NET_MODINFO: &[u8] = b"license=GPL\0description=Virtio network driver\0\
parmtype=napi_tx:bool\0parmtype=gso:bool\0parmtype=csum:bool\0parmtype=napi_weight:int\0\
alias=virtio:d00000001v*\0depends=virtio_ring,virtio,net_failover\0retpoline=Y\0intree=Y\0\
name=virtio_net\0vermagic=6.1.0-48-cloud-amd64 SMP preempt mod_unload modversions \0";

    #[test]
    fn depends_from_every_elf_flavour() {
        for is64 in [true, false] {
            for little in [true, false] {
                let ko = fake_module(is64, little, VIRTIO_NET_MODINFO);
                assert_eq!(
                    depends(&ko).unwrap(),
                    vec!["virtio_ring", "virtio", "net_failover"],
                    "is64={is64} little={little}"
                );
            }
        }
    }

    #[test]
    fn empty_depends_is_no_dependencies() {
        let ko = fake_module(true, true, b"license=GPL\0depends=\0name=virtio\0");
        assert_eq!(depends(&ko).unwrap(), Vec::<String>::new());
        let section = modinfo_section(&ko).unwrap();
        assert!(entries(section).contains(&("name", "virtio")));
    }

    #[test]
    fn not_a_module() {
        assert_eq!(depends(b"hello").unwrap_err(), "not an ELF file");
        let mut ko = fake_module(true, true, b"depends=\0");
        // Rename `.modinfo` to `.modinfX`: found no more.
        let pos = ko.windows(8).position(|w| w == b".modinfo").unwrap();
        ko[pos + 7] = b'X';
        assert!(depends(&ko).unwrap_err().contains("no .modinfo section"));
    }

    #[test]
    fn truncated_files_are_errors_not_panics() {
        let ko = fake_module(true, true, VIRTIO_NET_MODINFO);
        for len in 0..ko.len() {
            let _ = depends(&ko[..len]); // must not panic
        }
        // Cut inside the last section header (.modinfo's size field), or before them all.
        assert!(depends(&ko[..ko.len() - 30])
            .unwrap_err()
            .contains("truncated"));
        assert!(depends(&ko[..ko.len() - 4 * 64])
            .unwrap_err()
            .contains("truncated"));
    }
}
