//! `guest-netinit check --root DIR`: lint a golden rootfs before anyone boots it (DESIGN.md §3,
//! failures F1, F2, F6). The old image shipped with an empty `/lib/modules` and with DHCP in
//! netplan next to a static `ip=`; both were found only after VMs had been destroyed.
//!
//! Each rule yields [`Finding`]s (`ok`, `warning`, `error`), printed as a table or as JSON.
//! Any error makes the exit code [`EXIT_CHECK_FAILED`] (9, `check-failed`).
//! Rules live in submodules: `kernels` (modules for each kernel in the image), `image`
//! (template, network config conflicts, resolv.conf, /etc/environment), `units` (units
//! installed and enabled, the binaries they start and their ELF/`#!` interpreters (`interp`),
//! guest-agent and its config), `envlint`
//! (the `EnvironmentFile=` line rules), `rootpath` (symlinks resolved inside the image).
//!
//! Nothing here writes to the image; a missing or unreadable file is a finding, never a panic.

mod envlint;
mod image;
mod interp;
mod kernels;
mod rootpath;
mod units;
mod vsock;

use serde::Serialize;
use std::path::{Path, PathBuf};

pub use envlint::{lint as lint_env, EnvLineError};
pub use rootpath::resolve as resolve_in_root;

/// Exit code of `check` when at least one finding is an error.
pub const EXIT_CHECK_FAILED: i32 = 9;

pub const CHECK_USAGE: &str = "\
usage: guest-netinit check --root DIR [--kernel-version V] [--interface IFACE] [--json]
Lints a rootfs: kernel modules (virtio_net, virtio_pci, virtio_blk) for each kernel in
DIR/lib/modules and DIR/boot, conflicting network configs, units installed and enabled,
guest-agent binary and config, /etc/resolv.conf, /etc/environment.
Exit codes: 0 no errors (warnings allowed), 2 usage, 9 check-failed (at least one error).";

/// How bad a finding is. Ordered: errors sort first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Ok,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Ok => "ok",
        }
    }
}

/// One result of one rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// The rule: `kernel`, `module`, `modules.dep`, `template`, `conflict`, `unit`, `enabled`,
    /// `binary`, `config`, `resolv.conf`, `environment`.
    pub check: String,
    /// The file concerned, as inside the image (`/lib/modules/6.1.0-13-cloud-amd64`).
    pub path: Option<String>,
    pub message: String,
    /// What to do about it (errors and warnings).
    pub hint: Option<String>,
}

impl Finding {
    pub fn new(severity: Severity, check: &str, path: Option<String>, message: String) -> Self {
        Finding {
            severity,
            check: check.into(),
            path,
            message,
            hint: None,
        }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// Options of `guest-netinit check`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckOptions {
    pub root: PathBuf,
    /// Only this kernel (else every kernel found in the image).
    pub kernel_version: Option<String>,
    /// The interface guest-netinit configures (else the template's `[Match] Name=`, else eth0).
    pub interface: Option<String>,
    pub json: bool,
}

/// The whole result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckReport {
    pub root: String,
    pub kernels: Vec<String>,
    pub interface: String,
    pub findings: Vec<Finding>,
    pub errors: usize,
    pub warnings: usize,
}

impl CheckReport {
    /// 0 without errors, [`EXIT_CHECK_FAILED`] with.
    pub fn exit_code(&self) -> i32 {
        if self.errors > 0 {
            EXIT_CHECK_FAILED
        } else {
            0
        }
    }
}

/// Parses the arguments after `check`. `Err` is a usage error (exit 2).
pub fn parse_args(args: &[String]) -> Result<CheckOptions, String> {
    let mut root = None;
    let mut o = CheckOptions {
        root: PathBuf::new(),
        kernel_version: None,
        interface: None,
        json: false,
    };
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value = |name: &str| -> Result<String, String> {
            match inline.clone() {
                Some(v) if !v.is_empty() => Ok(v),
                Some(_) => Err(format!("{name} needs a value")),
                None => it.next().cloned().ok_or(format!("{name} needs a value")),
            }
        };
        match flag {
            "--root" => root = Some(PathBuf::from(value("--root")?)),
            "--kernel-version" => o.kernel_version = Some(value("--kernel-version")?),
            "--interface" => o.interface = Some(value("--interface")?),
            "--json" if inline.is_some() => return Err("--json takes no value".into()),
            "--json" => o.json = true,
            other => return Err(format!("check: unknown argument `{other}`")),
        }
    }
    o.root = root.ok_or("check: --root DIR is required")?;
    if !o.root.is_dir() {
        return Err(format!(
            "check: --root {}: not a directory",
            o.root.display()
        ));
    }
    Ok(o)
}

/// Runs every rule against the image at `opts.root`.
pub fn check(opts: &CheckOptions) -> CheckReport {
    let root = opts.root.as_path();
    let mut findings = Vec::new();
    let kernels = kernels::check(root, opts.kernel_version.as_deref(), &mut findings);
    let interface = image::check_network(root, opts.interface.as_deref(), &mut findings);
    units::check_units(root, &mut findings);
    units::check_agent(root, &mut findings);
    image::check_resolv_conf(root, &mut findings);
    image::check_environment(root, &mut findings);
    let count = |s| findings.iter().filter(|f| f.severity == s).count();
    CheckReport {
        root: root.display().to_string(),
        kernels,
        interface,
        errors: count(Severity::Error),
        warnings: count(Severity::Warning),
        findings,
    }
}

/// The table: one row per finding (severity, check, path, message), the hint indented
/// under it, then a summary line.
pub fn render_table(r: &CheckReport) -> String {
    let w_check = r
        .findings
        .iter()
        .map(|f| f.check.len())
        .max()
        .unwrap_or(5)
        .max(5);
    let w_path = r
        .findings
        .iter()
        .map(|f| f.path.as_deref().unwrap_or("-").len())
        .max()
        .unwrap_or(4)
        .clamp(4, 48);
    let mut out = format!(
        "{:<8} {:<w_check$} {:<w_path$} MESSAGE\n",
        "SEVERITY", "CHECK", "PATH"
    );
    for f in &r.findings {
        out.push_str(&format!(
            "{:<8} {:<w_check$} {:<w_path$} {}\n",
            f.severity.as_str(),
            f.check,
            f.path.as_deref().unwrap_or("-"),
            f.message
        ));
        if let Some(h) = &f.hint {
            out.push_str(&format!(
                "{:<8} {:<w_check$} {:<w_path$} fix: {h}\n",
                "", "", ""
            ));
        }
    }
    out.push_str(&format!(
        "{}: {} error(s), {} warning(s); kernels: {}; interface {}\n",
        r.root,
        r.errors,
        r.warnings,
        if r.kernels.is_empty() {
            "none".to_string()
        } else {
            r.kernels.join(" ")
        },
        r.interface
    ));
    out
}

/// `guest-netinit check ARGS`: prints the table (or JSON) and returns the exit code.
pub fn main(args: &[String]) -> i32 {
    let opts = match parse_args(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("guest-netinit: {e}\n{CHECK_USAGE}");
            return 2;
        }
    };
    let report = check(&opts);
    if opts.json {
        match serde_json::to_string_pretty(&report) {
            Ok(s) => println!("{s}"),
            Err(e) => {
                eprintln!("guest-netinit: internal error: {e}");
                return 1;
            }
        }
    } else {
        print!("{}", render_table(&report));
    }
    report.exit_code()
}

/// `p` as inside the image (root prefix removed, absolute).
pub(crate) fn shown(root: &Path, p: &Path) -> String {
    match p.strip_prefix(root) {
        Ok(rel) => format!("/{}", rel.display()),
        Err(_) => p.display().to_string(),
    }
}

#[cfg(test)]
#[path = "check_tests.rs"]
mod tests;
