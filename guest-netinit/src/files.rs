//! The files guest-netinit writes, all under `--root`: `/etc/resolv.conf`, `/etc/hostname`, the
//! networkd handoff `/run/systemd/network/00-guest-netinit-<iface>.network` and the state file
//! `/run/guest-netinit/state.json`. Content is built by pure functions (tested as text); writes
//! are atomic (temp file in the same directory + rename) so a reader never sees half a file.
//! No fsync: these are runtime files rewritten on every boot, and fsync would cost boot time.

use crate::config::NetConfig;
use crate::conflicts::handoff_name;
use guest_proto::NetinitReport;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A file could not be written: exit code 8.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    #[error("writing {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("sethostname({name}): {source}")]
    Hostname {
        name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("state file: {0}")]
    Serialize(String),
}

/// `abs` (an absolute path in the image) under `root`.
pub fn under(root: &Path, abs: &str) -> PathBuf {
    root.join(abs.trim_start_matches('/'))
}

pub const RESOLV_CONF: &str = "/etc/resolv.conf";
pub const HOSTNAME: &str = "/etc/hostname";
pub const STATE_FILE: &str = "/run/guest-netinit/state.json";
pub const HANDOFF_DIR: &str = "/run/systemd/network";

/// Writes `data` to `path` atomically, creating the parent directory. A file that already
/// holds exactly `data` is left alone (a second run, or a golden image that already has it):
/// on ext4 a rename over an existing file starts writeback (`auto_da_alloc`), which costs
/// milliseconds on a busy disk.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), FilesError> {
    if std::fs::read(path).is_ok_and(|old| old == data) {
        return Ok(());
    }
    let err = |source| FilesError::Write {
        path: path.display().to_string(),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(err)?;
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = dir.join(format!(".{name}.guest-netinit.{}", std::process::id()));
    let res = std::fs::File::create(&tmp)
        .and_then(|mut f| f.write_all(data))
        .and_then(|()| std::fs::rename(&tmp, path));
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res.map_err(err)
}

/// `resolv.conf` text, `None` when the config has no DNS servers and no search domains.
/// Routing-only domains (`~example.com`, `~.`) are networkd/resolved concepts and left out.
pub fn resolv_conf(cfg: &NetConfig) -> Option<String> {
    let search: Vec<&str> = cfg
        .domains
        .iter()
        .map(String::as_str)
        .filter(|d| !d.starts_with('~'))
        .collect();
    if cfg.dns.is_empty() && search.is_empty() {
        return None;
    }
    let mut s = format!(
        "# Written by guest-netinit for {} (source: {}).\n",
        cfg.interface,
        source_name(cfg)
    );
    for ns in &cfg.dns {
        s.push_str(&format!("nameserver {ns}\n"));
    }
    if !search.is_empty() {
        s.push_str(&format!("search {}\n", search.join(" ")));
    }
    Some(s)
}

/// What happened to `/etc/resolv.conf`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolvOutcome {
    /// No DNS configured: not touched.
    NotNeeded,
    Written,
    /// A symlink (systemd-resolved's stub): left alone; DNS goes to resolved via the handoff.
    LeftSymlink(String),
}

/// Writes `ROOT/etc/resolv.conf`, unless it is a symlink.
pub fn write_resolv_conf(root: &Path, cfg: &NetConfig) -> Result<ResolvOutcome, FilesError> {
    let Some(text) = resolv_conf(cfg) else {
        return Ok(ResolvOutcome::NotNeeded);
    };
    let path = under(root, RESOLV_CONF);
    if let Ok(target) = std::fs::read_link(&path) {
        return Ok(ResolvOutcome::LeftSymlink(target.display().to_string()));
    }
    write_atomic(&path, text.as_bytes())?;
    Ok(ResolvOutcome::Written)
}

/// Writes `ROOT/etc/hostname`, and sets the kernel hostname when `set_kernel` (no `--root`).
pub fn write_hostname(root: &Path, name: &str, set_kernel: bool) -> Result<(), FilesError> {
    write_atomic(&under(root, HOSTNAME), format!("{name}\n").as_bytes())?;
    if set_kernel {
        // SAFETY: the pointer and length describe `name`'s bytes, valid for the call.
        let rc = unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
        if rc != 0 {
            return Err(FilesError::Hostname {
                name: name.into(),
                source: std::io::Error::last_os_error(),
            });
        }
    }
    Ok(())
}

fn source_name(cfg: &NetConfig) -> &'static str {
    match cfg.source {
        guest_proto::ConfigSource::Cmdline => "kernel cmdline",
        guest_proto::ConfigSource::Template => "template",
        guest_proto::ConfigSource::Dhcp => "dhcp",
        guest_proto::ConfigSource::Fallback => "fallback",
    }
}

/// The networkd handoff: exactly what was applied, in `.network` syntax, with
/// `KeepConfiguration=static` (networkd never removes our address and routes) and
/// `ConfigureWithoutCarrier=yes`. After a DHCP lease: `DHCP=ipv4`, `KeepConfiguration=dhcp`
/// and `[DHCPv4] ClientIdentifier=mac` (our client id: type 1 + MAC), no static address, so
/// networkd renews the lease without dropping the address. guest-netinit's own template parser reads it back unchanged.
pub fn handoff(cfg: &NetConfig) -> String {
    let mut s = format!(
        "# Written by guest-netinit: what it applied to {} at boot (source: {}).\n\
         # Sorts before every other .network file, so systemd-networkd uses this one and keeps it.\n\
         [Match]\nName={}\n",
        cfg.interface,
        source_name(cfg),
        cfg.interface
    );
    if cfg.mtu.is_some() || cfg.mac.is_some() {
        s.push_str("\n[Link]\n");
        if let Some(m) = cfg.mtu {
            s.push_str(&format!("MTUBytes={m}\n"));
        }
        if let Some(m) = cfg.mac {
            s.push_str(&format!("MACAddress={m}\n"));
        }
    }
    s.push_str("\n[Network]\n");
    // A lease is not written as static: networkd takes it over with its own DHCP client
    // (same client id, so dnsmasq hands out the same address) and renews it.
    let leased = cfg.source == guest_proto::ConfigSource::Dhcp;
    if !leased {
        for a in &cfg.addresses {
            s.push_str(&format!("Address={a}\n"));
        }
        if let Some(g) = cfg.gateway {
            s.push_str(&format!("Gateway={g}\n"));
        }
    }
    for d in &cfg.dns {
        s.push_str(&format!("DNS={d}\n"));
    }
    if !cfg.domains.is_empty() {
        s.push_str(&format!("Domains={}\n", cfg.domains.join(" ")));
    }
    if leased {
        s.push_str("DHCP=ipv4\nKeepConfiguration=dhcp\nConfigureWithoutCarrier=yes\n");
        s.push_str("\n[DHCPv4]\nClientIdentifier=mac\n");
    } else {
        s.push_str("DHCP=no\nKeepConfiguration=static\nConfigureWithoutCarrier=yes\n");
    }
    for r in &cfg.routes {
        s.push_str(&format!(
            "\n[Route]\nDestination={}/{}\n",
            r.destination, r.prefix_len
        ));
        if let Some(g) = r.gateway {
            s.push_str(&format!("Gateway={g}\n"));
        }
        if let Some(m) = r.metric {
            s.push_str(&format!("Metric={m}\n"));
        }
    }
    s
}

/// Writes the handoff under `ROOT/run/systemd/network/`; returns the path inside the image.
pub fn write_handoff(root: &Path, cfg: &NetConfig) -> Result<String, FilesError> {
    let shown = format!("{HANDOFF_DIR}/{}", handoff_name(&cfg.interface));
    write_atomic(&under(root, &shown), handoff(cfg).as_bytes())?;
    Ok(shown)
}

/// Writes `ROOT/run/guest-netinit/state.json`.
pub fn write_state(root: &Path, report: &NetinitReport) -> Result<(), FilesError> {
    let mut json =
        serde_json::to_vec_pretty(report).map_err(|e| FilesError::Serialize(e.to_string()))?;
    json.push(b'\n');
    write_atomic(&under(root, STATE_FILE), &json)
}

#[cfg(test)]
#[path = "files_tests.rs"]
mod tests;
