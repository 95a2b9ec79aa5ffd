//! Our units installed and enabled (`*.wants/` symlinks that resolve inside the image), the
//! binaries their `ExecStart=` names, guest-agent's binary and its config.

use super::rootpath::resolve;
use super::{Finding, Severity};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Our units, installed from `systemd-units/`.
pub const UNITS: [&str; 2] = ["guest-netinit.service", "guest-agent.service"];
pub const UNIT_DIRS: [&str; 3] = [
    "/etc/systemd/system",
    "/lib/systemd/system",
    "/usr/lib/systemd/system",
];
const BIN_DIRS: [&str; 6] = [
    "/usr/local/bin",
    "/usr/bin",
    "/sbin",
    "/usr/sbin",
    "/bin",
    "/usr/local/sbin",
];
pub const AGENT_CONFIG: &str = "/etc/guest-agent/config.toml";

/// Our units: installed, not masked, enabled through a `*.wants/` symlink that resolves,
/// and the binary of `ExecStart=` present and executable.
pub fn check_units(root: &Path, out: &mut Vec<Finding>) {
    for unit in UNITS {
        let etc = format!("/etc/systemd/system/{unit}");
        if let Ok(target) = std::fs::read_link(crate::files::under(root, &etc)) {
            if target == Path::new("/dev/null") {
                out.push(
                    Finding::new(
                        Severity::Error,
                        "unit",
                        Some(etc),
                        format!("{unit} is masked"),
                    )
                    .hint(format!("systemctl --root <rootfs> unmask {unit}")),
                );
                continue;
            }
        }
        let file = UNIT_DIRS
            .iter()
            .map(|d| format!("{d}/{unit}"))
            .find_map(|p| resolve(root, &p).filter(|h| h.is_file()).map(|h| (p, h)));
        let Some((shown_path, host)) = file else {
            out.push(
                Finding::new(
                    Severity::Error,
                    "unit",
                    Some(format!("/etc/systemd/system/{unit}")),
                    format!("{unit} is not installed (not in {})", UNIT_DIRS.join(", ")),
                )
                .hint(format!(
                    "copy systemd-units/{unit} to /etc/systemd/system/ in the image"
                )),
            );
            check_enabled(root, unit, "", false, out);
            continue;
        };
        out.push(Finding::new(
            Severity::Ok,
            "unit",
            Some(shown_path.clone()),
            format!("{unit} installed"),
        ));
        let text = std::fs::read_to_string(&host).unwrap_or_default();
        check_enabled(root, unit, &text, true, out);
        check_exec_start(root, unit, &shown_path, &text, out);
    }
}

/// The `*.wants/` / `*.requires/` symlinks of `unit` in /etc. Not installed: only dangling
/// links are reported (the missing unit is already an error).
fn check_enabled(root: &Path, unit: &str, text: &str, installed: bool, out: &mut Vec<Finding>) {
    let mut links = Vec::new();
    if let Ok(rd) = std::fs::read_dir(root.join("etc/systemd/system")) {
        for e in rd.flatten() {
            let dir = e.file_name().to_string_lossy().into_owned();
            if dir.ends_with(".wants") || dir.ends_with(".requires") {
                let link = format!("/etc/systemd/system/{dir}/{unit}");
                if std::fs::symlink_metadata(crate::files::under(root, &link)).is_ok() {
                    links.push(link);
                }
            }
        }
    }
    links.sort();
    let wanted_by: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("WantedBy="))
        .flat_map(str::split_whitespace)
        .collect();
    if links.is_empty() && !installed {
        return;
    }
    if links.is_empty() {
        let by = if wanted_by.is_empty() {
            String::new()
        } else {
            format!(" (its [Install] says WantedBy={})", wanted_by.join(" "))
        };
        out.push(
            Finding::new(
                Severity::Error,
                "enabled",
                Some(format!("/etc/systemd/system/*.wants/{unit}")),
                format!(
                    "{unit} is not enabled: no *.wants/ symlink{by}, it will not start at boot"
                ),
            )
            .hint(format!("systemctl --root <rootfs> enable {unit}")),
        );
        return;
    }
    for link in links {
        if resolve(root, &link).is_some_and(|h| h.is_file()) {
            out.push(Finding::new(
                Severity::Ok,
                "enabled",
                Some(link.clone()),
                format!("{unit} enabled"),
            ));
        } else {
            let target = std::fs::read_link(crate::files::under(root, &link))
                .map(|t| t.display().to_string())
                .unwrap_or_else(|_| "?".into());
            out.push(
                Finding::new(
                    Severity::Error,
                    "enabled",
                    Some(link.clone()),
                    format!("{unit}: enable symlink points to {target}, which is not in the image"),
                )
                .hint(format!(
                    "systemctl --root <rootfs> reenable {unit} (after installing the unit file)"
                )),
            );
        }
    }
}

fn check_exec_start(root: &Path, unit: &str, unit_path: &str, text: &str, out: &mut Vec<Finding>) {
    let Some(cmd) = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("ExecStart="))
        .find(|v| !v.trim().is_empty())
    else {
        out.push(Finding::new(
            Severity::Error,
            "unit",
            Some(unit_path.into()),
            format!("{unit} has no ExecStart="),
        ));
        return;
    };
    let bin = cmd
        .split_whitespace()
        .next()
        .unwrap_or("")
        .trim_start_matches(['-', '@', ':', '+', '!']);
    out.push(binary_finding(root, bin, &format!("{unit} ExecStart=")));
}

/// `bin` (absolute, in the image) exists and is executable.
fn binary_finding(root: &Path, bin: &str, what: &str) -> Finding {
    match resolve(root, bin).and_then(|h| std::fs::metadata(h).ok()) {
        Some(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => {
            match needed_interpreter(root, bin) {
                Some(interp) => Finding::new(
                    Severity::Error,
                    "binary",
                    Some(bin.into()),
                    format!(
                        "{what} {bin} needs {interp} to start, which is not in the image \
                         (it would fail with \"No such file or directory\")"
                    ),
                )
                .hint(format!(
                    "install a static build of {bin} (cargo xtask build-static), or {interp}"
                )),
                None => Finding::new(
                    Severity::Ok,
                    "binary",
                    Some(bin.into()),
                    format!("{what} binary present"),
                ),
            }
        }
        Some(_) => Finding::new(
            Severity::Error,
            "binary",
            Some(bin.into()),
            format!("{what} {bin} is not an executable file"),
        )
        .hint(format!("chmod 0755 {bin} in the image")),
        None => Finding::new(
            Severity::Error,
            "binary",
            Some(bin.into()),
            format!("{what} {bin} is not in the image"),
        )
        .hint(format!(
            "install {bin} (cargo xtask build-static builds the binaries)"
        )),
    }
}

/// The interpreter `bin` needs (ELF loader or `#!` line) when it is missing from the image.
fn needed_interpreter(root: &Path, bin: &str) -> Option<String> {
    use std::io::Read;
    let host = resolve(root, bin)?;
    let mut head = Vec::with_capacity(64 * 1024);
    std::fs::File::open(host)
        .ok()?
        .take(64 * 1024)
        .read_to_end(&mut head)
        .ok()?;
    let interp = super::interp::interpreter(&head)?;
    resolve(root, &interp).is_none().then_some(interp)
}

/// guest-agent's binary and its config file.
pub fn check_agent(root: &Path, out: &mut Vec<Finding>) {
    let found = BIN_DIRS
        .iter()
        .map(|d| format!("{d}/guest-agent"))
        .find(|p| resolve(root, p).is_some());
    match found {
        Some(p) => out.push(binary_finding(root, &p, "guest-agent")),
        None => out.push(
            Finding::new(
                Severity::Error,
                "binary",
                Some("/usr/local/bin/guest-agent".into()),
                format!(
                    "guest-agent is not in the image (looked in {})",
                    BIN_DIRS.join(", ")
                ),
            )
            .hint("install the guest-agent binary to /usr/local/bin/guest-agent"),
        ),
    }
    match resolve(root, AGENT_CONFIG).and_then(|h| std::fs::metadata(h).ok()) {
        Some(m) if m.is_file() && m.len() > 0 => out.push(Finding::new(
            Severity::Ok,
            "config",
            Some(AGENT_CONFIG.into()),
            "guest-agent config present".into(),
        )),
        Some(_) => out.push(
            Finding::new(
                Severity::Warning,
                "config",
                Some(AGENT_CONFIG.into()),
                "guest-agent config is empty or not a regular file: no services are supervised"
                    .into(),
            )
            .hint("write the services to supervise into it"),
        ),
        None => out.push(
            Finding::new(
                Severity::Error,
                "config",
                Some(AGENT_CONFIG.into()),
                "guest-agent config is missing: `guest-agent supervise` reads it at start".into(),
            )
            .hint(format!("install {AGENT_CONFIG} in the image")),
        ),
    }
}
