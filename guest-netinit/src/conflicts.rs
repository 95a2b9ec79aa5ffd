//! Other configurations of the same interface in the image (failure F2: static `ip=` and DHCP in
//! netplan/networkd fought over eth0). Each one found is a [`Conflict`] in the report and an
//! event line on the console, with what guest-netinit did about it.
//!
//! Scanned under ROOT, by simple text reading (no YAML parser in the boot path):
//! - `/etc/systemd/network/*.network` (except the template and our own `00-guest-netinit-*`):
//!   `[Match] Name=` matching the interface (globs `*` `?`, `!` negation), or a `[Match]`
//!   without `Name=` (it may match any interface). Resolved: our handoff sorts first.
//! - `/etc/netplan/*.yaml|yml` mentioning the interface as a word. Resolved like networkd
//!   (netplan renders to networkd) unless the file says `renderer: NetworkManager`.
//! - `/etc/network/interfaces` and `/etc/network/interfaces.d/*` with `iface <name> `.
//! - `/etc/NetworkManager/system-connections/*` with `interface-name=<name>`.
//!
//! ifupdown and NetworkManager are not stopped by us: their resolution says so, and what to do.
//! Paths are reported as inside the image (the `--root` prefix removed).

use guest_proto::Conflict;
use std::path::{Path, PathBuf};

/// Scans `root` for other configurations of `iface`. `ours` (the template and the DHCP
/// fallback file actually used, full paths) are skipped. `winner` names the source applied
/// ("cmdline", "template").
pub fn scan(root: &Path, iface: &str, ours: &[&Path], winner: &str) -> Vec<Conflict> {
    let mut out = Vec::new();
    let handoff = handoff_name(iface);
    for path in list(&root.join("etc/systemd/network"), |n| {
        n.ends_with(".network")
    }) {
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name == handoff || ours.contains(&path.as_path()) {
            continue;
        }
        if let Some(detail) = read(&path).and_then(|t| networkd_matches(&t, iface)) {
            out.push(Conflict {
                source: "networkd".into(),
                path: Some(shown(root, &path)),
                detail,
                resolution: format!(
                    "{winner} wins; networkd uses our {handoff} (sorts first) and ignores this file"
                ),
            });
        }
    }
    for path in list(&root.join("etc/netplan"), |n| {
        n.ends_with(".yaml") || n.ends_with(".yml")
    }) {
        let Some(text) = read(&path) else { continue };
        if !mentions_word(&text, iface) {
            continue;
        }
        let dhcp = ["dhcp4: true", "dhcp4: yes", "dhcp4: on"]
            .iter()
            .any(|d| text.contains(d));
        let nm = text.contains("renderer: NetworkManager");
        out.push(Conflict {
            source: "netplan".into(),
            path: Some(shown(root, &path)),
            detail: format!("mentions {iface}{}", if dhcp { " with dhcp4: true" } else { "" }),
            resolution: if nm {
                format!("{winner} wins at boot; NOT resolved: netplan hands {iface} to NetworkManager, which may reconfigure it: remove it from the image")
            } else {
                format!("{winner} wins; netplan renders to networkd, which uses our {handoff} (sorts first)")
            },
        });
    }
    let mut ifupdown = vec![root.join("etc/network/interfaces")];
    ifupdown.extend(list(&root.join("etc/network/interfaces.d"), |_| true));
    for path in ifupdown {
        let Some(text) = read(&path) else { continue };
        if let Some(line) = text.lines().map(str::trim).find(|l| {
            let mut w = l.split_whitespace();
            w.next() == Some("iface") && w.next() == Some(iface)
        }) {
            out.push(Conflict {
                source: "ifupdown".into(),
                path: Some(shown(root, &path)),
                detail: format!("`{line}`"),
                resolution: format!("{winner} wins at boot; NOT resolved: networking.service may reconfigure {iface} later: remove this stanza from the image"),
            });
        }
    }
    for path in list(&root.join("etc/NetworkManager/system-connections"), |_| {
        true
    }) {
        let Some(text) = read(&path) else { continue };
        let binds = text.lines().map(str::trim).any(|l| {
            l.split_once('=')
                .is_some_and(|(k, v)| k.trim() == "interface-name" && v.trim() == iface)
        });
        if binds {
            let method = text
                .lines()
                .map(str::trim)
                .find_map(|l| l.strip_prefix("method="))
                .unwrap_or("?");
            out.push(Conflict {
                source: "network-manager".into(),
                path: Some(shown(root, &path)),
                detail: format!("interface-name={iface}, method={method}"),
                resolution: format!("{winner} wins at boot; NOT resolved: NetworkManager may reconfigure {iface}: remove this profile from the image"),
            });
        }
    }
    out
}

/// The networkd handoff file name for `iface`.
pub fn handoff_name(iface: &str) -> String {
    format!("00-guest-netinit-{iface}.network")
}

/// Files in `dir` whose name passes `keep`, sorted; none when `dir` is absent.
fn list(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return vec![];
    };
    let mut v: Vec<PathBuf> = rd
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(&keep))
        .filter(|p| p.is_file())
        .collect();
    v.sort();
    v
}

/// Reads a config file; unreadable or non-UTF-8 files are skipped (`None`).
fn read(p: &Path) -> Option<String> {
    std::fs::read_to_string(p).ok()
}

/// `p` as inside the image: the root prefix removed, absolute.
fn shown(root: &Path, p: &Path) -> String {
    match p.strip_prefix(root) {
        Ok(rel) if root != Path::new("/") => format!("/{}", rel.display()),
        _ => p.display().to_string(),
    }
}

/// Whether a `.network` file's `[Match]` may select `iface`; the detail when it does.
pub fn networkd_matches(text: &str, iface: &str) -> Option<String> {
    let mut in_match = false;
    let mut saw_match = false;
    let mut names: Option<String> = None;
    let mut other_keys = Vec::new();
    let mut configures = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.starts_with(';') || line.is_empty() {
            continue;
        }
        if line.starts_with('[') {
            in_match = line == "[Match]";
            saw_match |= in_match;
            continue;
        }
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let (k, v) = (k.trim(), v.trim());
        if in_match {
            if k == "Name" {
                names = Some(v.to_string());
            } else {
                other_keys.push(k.to_string());
            }
        } else if matches!(k, "DHCP" | "Address" | "Gateway") && configures.len() < 4 {
            configures.push(format!("{k}={v}"));
        }
    }
    let what = if configures.is_empty() {
        String::new()
    } else {
        format!(": {}", configures.join(", "))
    };
    match names {
        Some(n) if name_list_matches(&n, iface) => {
            Some(format!("matches {iface} (Name={n}){what}"))
        }
        Some(_) => None,
        None if !saw_match || other_keys.is_empty() => {
            Some(format!("matches every interface (no [Match] Name=){what}"))
        }
        None => Some(format!(
            "may match {iface} (matches by {}){what}",
            other_keys.join(", ")
        )),
    }
}

/// networkd's `Name=` list: whitespace-separated globs; a leading `!` inverts the whole list.
fn name_list_matches(list: &str, iface: &str) -> bool {
    let (invert, list) = match list.strip_prefix('!') {
        Some(rest) => (true, rest),
        None => (false, list),
    };
    list.split_whitespace()
        .any(|g| glob(g.as_bytes(), iface.as_bytes()))
        != invert
}

/// Shell glob with `*` and `?` (enough for interface names).
fn glob(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(&p[1..], s) || (!s.is_empty() && glob(p, &s[1..])),
        (Some(b'?'), Some(_)) => glob(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob(&p[1..], &s[1..]),
        _ => false,
    }
}

/// `word` occurs in `text` not as part of a longer name (`eth0` does not match `eth01`).
fn mentions_word(text: &str, word: &str) -> bool {
    let is_name = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-' || c == '.';
    text.match_indices(word).any(|(at, _)| {
        let before = text[..at].chars().next_back();
        let after = text[at + word.len()..].chars().next();
        !before.is_some_and(is_name) && !after.is_some_and(|c| is_name(c) && c != '.')
    })
}

#[cfg(test)]
#[path = "conflicts_tests.rs"]
mod tests;
