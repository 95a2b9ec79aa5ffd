//! The image's network files: the template and the other network configs of the interface
//! (failure F2, via `conflicts::scan`, the same scan the boot-time run does),
//! `/etc/resolv.conf`, and `/etc/environment` (failure F6). Units and binaries: `units.rs`.

use super::rootpath::resolve;
use super::units::UNIT_DIRS;
use super::{envlint, Finding, Severity};
use crate::conflicts;
use crate::run::DEFAULT_TEMPLATES;
use crate::sources::DEFAULT_INTERFACE;
use crate::template;
use std::collections::BTreeMap;
use std::path::Path;

/// Template and conflicts; returns the interface checked.
pub fn check_network(root: &Path, interface: Option<&str>, out: &mut Vec<Finding>) -> String {
    let template = DEFAULT_TEMPLATES
        .iter()
        .find(|t| resolve(root, t).is_some_and(|p| p.is_file()))
        .copied();
    let mut name = None;
    // The template asks for DHCP without a static address: a fallback file is then ours.
    let mut dhcp_only = false;
    match template {
        None => out.push(Finding::new(
            Severity::Ok,
            "template",
            None,
            format!(
                "no template ({}): the network is configured from the kernel cmdline ip= only",
                DEFAULT_TEMPLATES.join(", ")
            ),
        )),
        Some(t) => match std::fs::read_to_string(crate::files::under(root, t)) {
            Err(e) => out.push(Finding::new(
                Severity::Error,
                "template",
                Some(t.into()),
                format!("cannot read: {e}"),
            )),
            Ok(text) => {
                let (filled, names) = sample_fill(&text);
                match template::parse(&filled, &BTreeMap::new()) {
                    Ok(parsed) => {
                        name = parsed.name.clone();
                        let needs = if names.is_empty() {
                            String::new()
                        } else {
                            format!(
                                "; the kernel cmdline must give {}",
                                names
                                    .iter()
                                    .map(|n| format!("guest.{}=", n.to_ascii_lowercase()))
                                    .collect::<Vec<_>>()
                                    .join(" ")
                            )
                        };
                        out.push(Finding::new(
                            Severity::Ok,
                            "template",
                            Some(t.into()),
                            format!("parses{needs}"),
                        ));
                        let iface = parsed.name.as_deref().unwrap_or(DEFAULT_INTERFACE);
                        let fallback_file = crate::sources::fallback_files(iface)
                            .into_iter()
                            .find(|f| resolve(root, f).is_some_and(|p| p.is_file()));
                        dhcp_only =
                            matches!(parsed.dhcp, template::Dhcp::Yes | template::Dhcp::Ipv4)
                                && parsed.addresses.is_empty();
                        if dhcp_only && fallback_file.is_none() {
                            out.push(
                                Finding::new(
                                    Severity::Warning,
                                    "template",
                                    Some(t.into()),
                                    format!(
                                        "DHCP={} without a static Address=: when no lease comes in time, \
                                         guest-netinit exits 10 and the interface has no address",
                                        parsed.dhcp.as_str()
                                    ),
                                )
                                .hint("add the fallback Address=, Gateway=, DNS= (applied only when DHCP fails)"),
                            );
                        }
                        for w in parsed.warnings {
                            out.push(Finding::new(Severity::Warning, "template", Some(t.into()), w));
                        }
                    }
                    Err(e) => out.push(
                        Finding::new(Severity::Error, "template", Some(t.into()), e.to_string())
                            .hint("fix the line named (placeholders were filled with sample values to check it)"),
                    ),
                }
            }
        },
    }
    let iface = interface
        .map(str::to_string)
        .or(name)
        .unwrap_or_else(|| DEFAULT_INTERFACE.to_string());
    let winner = if template.is_some() {
        "template"
    } else {
        "cmdline ip="
    };
    let mut ours: Vec<std::path::PathBuf> = template
        .map(|t| crate::files::under(root, t))
        .into_iter()
        .collect();
    // The DHCP fallback file is ours too (the run reads it; networkd ignores it after our handoff).
    if let Some(f) = crate::sources::fallback_files(&iface)
        .into_iter()
        .find(|f| dhcp_only && resolve(root, f).is_some_and(|p| p.is_file()))
    {
        ours.push(crate::files::under(root, &f));
    }
    let skip: Vec<&Path> = ours.iter().map(|p| p.as_path()).collect();
    let found = conflicts::scan(root, &iface, &skip, winner);
    if found.is_empty() {
        out.push(Finding::new(
            Severity::Ok,
            "conflict",
            None,
            format!("no other network configuration of {iface}"),
        ));
    }
    for c in found {
        let dhcp = c.detail.contains("dhcp4: true")
            || (c.detail.contains("DHCP=")
                && !c.detail.contains("DHCP=no")
                && !c.detail.contains("DHCP=false"));
        let unresolved = c.resolution.contains("NOT resolved");
        // F2: DHCP elsewhere next to our static config took VMs off the network.
        let severity = if dhcp || unresolved {
            Severity::Error
        } else {
            Severity::Warning
        };
        out.push(
            Finding::new(
                severity,
                "conflict",
                c.path.clone(),
                format!("{}: {} (at boot: {})", c.source, c.detail, c.resolution),
            )
            .hint(format!(
                "remove it from the image: guest-netinit alone configures {iface}"
            )),
        );
    }
    iface
}

/// `__NAME__` placeholders replaced by sample values that fit their key, so the template's
/// syntax can be checked without a cmdline; also the placeholder names, in order.
pub fn sample_fill(text: &str) -> (String, Vec<String>) {
    let mut names: Vec<String> = Vec::new();
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        if t.starts_with('#') || t.starts_with(';') || !line.contains("__") {
            out.push_str(line);
            continue;
        }
        let key = t.split_once('=').map(|(k, _)| k.trim()).unwrap_or("");
        let mut rest = line;
        while let Some(at) = rest.find("__") {
            let before = &rest[..at];
            let after = &rest[at + 2..];
            match template::placeholder_name(after) {
                Some(name) => {
                    out.push_str(before);
                    out.push_str(sample_for(key, before.ends_with('/')));
                    if !names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                        names.push(name.to_string());
                    }
                    rest = &after[name.len() + 2..];
                }
                None => {
                    out.push_str(&rest[..at + 1]);
                    rest = &rest[at + 1..];
                }
            }
        }
        out.push_str(rest);
    }
    (out, names)
}

fn sample_for(key: &str, after_slash: bool) -> &'static str {
    match key {
        "MTUBytes" => "1500",
        "Metric" => "100",
        "MACAddress" => "02:00:00:00:00:01",
        "Name" => "eth0",
        "Domains" => "example.invalid",
        "DHCP" => "no",
        _ if after_slash => "24",
        _ => "192.0.2.10",
    }
}

/// `/etc/resolv.conf`: a file, a symlink that resolves in the image, or systemd-resolved's
/// stub (created at boot when systemd-resolved is installed). Dangling otherwise: a warning,
/// since guest-netinit leaves symlinks alone and DNS would then not work.
pub fn check_resolv_conf(root: &Path, out: &mut Vec<Finding>) {
    let path = crate::files::RESOLV_CONF;
    let host = crate::files::under(root, path);
    let Ok(meta) = std::fs::symlink_metadata(&host) else {
        out.push(
            Finding::new(
                Severity::Warning,
                "resolv.conf",
                Some(path.into()),
                "missing: names resolve only when the cmdline or template gives DNS (guest-netinit then writes it)".into(),
            )
            .hint("ship a resolv.conf, or give DNS= in the template / nameserver= on the cmdline"),
        );
        return;
    };
    if !meta.file_type().is_symlink() {
        let n = std::fs::read_to_string(&host)
            .map(|t| {
                t.lines()
                    .filter(|l| l.trim_start().starts_with("nameserver"))
                    .count()
            })
            .unwrap_or(0);
        out.push(Finding::new(
            Severity::Ok,
            "resolv.conf",
            Some(path.into()),
            format!(
                "regular file, {n} nameserver(s); guest-netinit rewrites it when DNS is configured"
            ),
        ));
        return;
    }
    let target = std::fs::read_link(&host)
        .map(|t| t.display().to_string())
        .unwrap_or_default();
    if resolve(root, path).is_some() {
        out.push(Finding::new(
            Severity::Ok,
            "resolv.conf",
            Some(path.into()),
            format!("symlink to {target}; guest-netinit leaves it alone"),
        ));
        return;
    }
    let resolved_installed = UNIT_DIRS
        .iter()
        .any(|d| resolve(root, &format!("{d}/systemd-resolved.service")).is_some());
    if target.contains("/run/systemd/resolve/") && resolved_installed {
        out.push(Finding::new(
            Severity::Ok,
            "resolv.conf",
            Some(path.into()),
            format!("symlink to {target}, created by systemd-resolved at boot; DNS goes through the networkd handoff"),
        ));
    } else {
        out.push(
            Finding::new(
                Severity::Warning,
                "resolv.conf",
                Some(path.into()),
                format!("dangling symlink to {target}: nothing in the image creates it, and guest-netinit leaves symlinks alone, so DNS will not work"),
            )
            .hint("replace it with a regular file (guest-netinit writes it), or install systemd-resolved"),
        );
    }
}

/// `/etc/environment` lines that `EnvironmentFile=` parsing would skip.
pub fn check_environment(root: &Path, out: &mut Vec<Finding>) {
    let path = "/etc/environment";
    let Some(host) = resolve(root, path) else {
        return;
    };
    let Ok(text) = std::fs::read_to_string(&host) else {
        out.push(Finding::new(
            Severity::Warning,
            "environment",
            Some(path.into()),
            "not readable as UTF-8 text".into(),
        ));
        return;
    };
    let errors = envlint::lint(&text);
    if errors.is_empty() {
        out.push(Finding::new(
            Severity::Ok,
            "environment",
            Some(path.into()),
            "every line parses".into(),
        ));
    }
    for e in errors {
        out.push(
            Finding::new(
                Severity::Warning,
                "environment",
                Some(format!("{path}:{}", e.line)),
                format!("line {}: {}; the line is skipped", e.line, e.message),
            )
            .hint("write KEY=value (quote values with spaces), comments on their own line with #"),
        );
    }
}
