//! Running external commands from xtask: each command is echoed before it runs (so a CI log
//! shows exactly what was done) and a failure names the command and its exit status.

use anyhow::{bail, Context, Result};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The repository root (the workspace holding `xtask/`).
pub fn repo_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The cargo target directory: `CARGO_TARGET_DIR` if set, else `<repo>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) if Path::new(&dir).is_absolute() => PathBuf::from(dir),
        Some(dir) => repo_root().join(dir),
        None => repo_root().join("target"),
    }
}

/// `cargo` as invoked us (the `CARGO` env cargo sets), else `cargo` from PATH.
pub fn cargo() -> Command {
    let program = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(program);
    cmd.current_dir(repo_root());
    cmd
}

/// Prints a section banner.
pub fn banner(title: &str) {
    println!("\n==> {title}");
}

fn describe(cmd: &Command) -> String {
    let mut text = String::new();
    for (key, value) in cmd.get_envs() {
        if let Some(value) = value {
            text.push_str(&format!(
                "{}={} ",
                key.to_string_lossy(),
                value.to_string_lossy()
            ));
        }
    }
    text.push_str(&cmd.get_program().to_string_lossy());
    for arg in cmd.get_args() {
        text.push(' ');
        text.push_str(&arg.to_string_lossy());
    }
    text
}

/// Runs `cmd` with inherited stdio; fails unless it exits 0.
pub fn run(cmd: &mut Command) -> Result<()> {
    let shown = describe(cmd);
    println!("$ {shown}");
    let status = cmd
        .stdin(Stdio::null())
        .status()
        .with_context(|| format!("cannot start `{shown}`"))?;
    if !status.success() {
        return Err(failed(&shown, status));
    }
    Ok(())
}

/// Runs `cmd` with stdout and stderr going to the file `log`; fails unless it exits 0.
pub fn run_logged(cmd: &mut Command, log: &Path) -> Result<()> {
    let shown = describe(cmd);
    println!("$ {shown} > {} 2>&1", log.display());
    let file = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let err = file
        .try_clone()
        .with_context(|| format!("dup {}", log.display()))?;
    let status = cmd
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .status()
        .with_context(|| format!("cannot start `{shown}`"))?;
    if !status.success() {
        return Err(failed(&shown, status));
    }
    Ok(())
}

/// "`cmd` failed (status)", saying so when the disk is (nearly) full: a build that fills the
/// disk fails with a linker's SIGBUS that names neither (see [`crate::disk`]).
fn failed(shown: &str, status: std::process::ExitStatus) -> anyhow::Error {
    crate::disk::explain_failure(
        anyhow::anyhow!("`{shown}` failed ({status})"),
        &target_dir(),
    )
}

/// Runs `cmd` quietly and returns its stdout; fails with its stderr unless it exits 0.
pub fn capture(cmd: &mut Command) -> Result<String> {
    let shown = describe(cmd);
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot start `{shown}`"))?;
    if !out.status.success() {
        bail!(
            "`{shown}` failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Whether `program` is found on PATH (the `command -v` test).
pub fn on_path(program: impl AsRef<OsStr>) -> bool {
    let program = program.as_ref();
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}
