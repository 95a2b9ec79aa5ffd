//! `cargo xtask fuzz [TARGET] [--seconds N]`: runs the cargo-fuzz targets of every crate that
//! has a `fuzz/` directory (guest-proto's parsers, guest-netinit's template reader, ...), each
//! for a bounded time. `cargo xtask test` runs them all briefly.
//!
//! cargo-fuzz needs `-Z` flags (sanitizers, coverage instrumentation). The machine has one
//! stable toolchain, so on stable the build runs with `RUSTC_BOOTSTRAP=1`, which lets stable
//! rustc accept them. A missing cargo-fuzz is installed from crates.io; when that fails the task
//! fails, saying why: fuzzing is part of the suite, it is never skipped in silence.
//!
//! Two modes. `cargo xtask fuzz` explores: a random seed, the target's kept corpus, for as
//! long as asked. `cargo xtask test` runs a bounded smoke pass: a fixed seed, an empty corpus,
//! a fixed number of inputs (with a time cap for slow machines). It is not bit-for-bit
//! repeatable (randomly seeded hash maps in the code under test steer the coverage feedback a
//! little), but close: what the pass reaches here it reaches in CI. A crash the explorer finds
//! becomes a unit test, so CI fails on that test rather than on a lucky seed.

use crate::sh::{banner, capture, cargo, repo_root, run, run_logged, target_dir};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Time cap per target when `cargo xtask test` runs the fuzzers.
pub const TEST_SECONDS: u64 = 30;
/// Inputs per target in the smoke pass (3-30 s per target on this 2-core machine).
const SMOKE_RUNS: u64 = 500_000;
/// The smoke pass's libFuzzer seed.
const SMOKE_SEED: u64 = 20_261_122;

/// How a fuzz run picks its inputs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Random seed, kept corpus, `-max_total_time` seconds.
    Explore { seconds: u64 },
    /// Fixed seed, empty corpus, [`SMOKE_RUNS`] inputs, at most `seconds`.
    Smoke { seconds: u64 },
}

/// One fuzz target and the fuzz directory that holds it.
#[derive(Debug, Clone)]
pub struct Target {
    pub fuzz_dir: PathBuf,
    pub name: String,
}

/// Parses `cargo xtask fuzz [TARGET] [--seconds N] [--smoke]` and runs.
pub fn cli(args: &[String]) -> Result<()> {
    let mut only: Option<String> = None;
    let mut seconds = None;
    let mut smoke = false;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--seconds" => {
                let value = it.next().context("--seconds needs a number")?;
                seconds = Some(
                    value
                        .parse()
                        .with_context(|| format!("--seconds: `{value}` is not a whole number"))?,
                );
            }
            "--smoke" => smoke = true,
            flag if flag.starts_with('-') => {
                bail!("fuzz: unknown flag `{flag}` (known: --seconds N, --smoke)")
            }
            name if only.is_none() => only = Some(name.to_owned()),
            extra => bail!("fuzz: unexpected argument `{extra}`"),
        }
    }
    let mode = if smoke {
        // Exactly what `cargo xtask test` runs.
        Mode::Smoke {
            seconds: seconds.unwrap_or(TEST_SECONDS),
        }
    } else {
        Mode::Explore {
            seconds: seconds.unwrap_or(60),
        }
    };
    run_targets(only.as_deref(), mode)
}

/// Runs every target (or only `only`) in `mode`.
pub fn run_targets(only: Option<&str>, mode: Mode) -> Result<()> {
    banner("fuzz");
    ensure_cargo_fuzz()?;
    let targets = discover()?;
    if targets.is_empty() {
        bail!("no fuzz targets found (looked for */fuzz/Cargo.toml under the repository)");
    }
    let chosen: Vec<&Target> = match only {
        Some(name) => {
            let found: Vec<&Target> = targets.iter().filter(|t| t.name == name).collect();
            if found.is_empty() {
                let all: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
                bail!("no fuzz target `{name}`; there are: {}", all.join(", "));
            }
            found
        }
        None => targets.iter().collect(),
    };
    let logs = target_dir().join("fuzz-logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("creating {}", logs.display()))?;
    for target in chosen {
        let what = match mode {
            Mode::Explore { seconds } => format!("for {seconds} s"),
            Mode::Smoke { seconds } => {
                format!("smoke: {SMOKE_RUNS} inputs from seed {SMOKE_SEED}, at most {seconds} s")
            }
        };
        banner(&format!(
            "fuzz {} ({}) {what}",
            target.name,
            target.fuzz_dir.display()
        ));
        let mut cmd = cargo();
        bootstrap_if_stable(&mut cmd)?;
        cmd.arg("fuzz")
            .arg("run")
            .arg("--fuzz-dir")
            .arg(&target.fuzz_dir)
            .arg(&target.name);
        match mode {
            Mode::Explore { seconds } => {
                cmd.arg("--").arg(format!("-max_total_time={seconds}"));
            }
            Mode::Smoke { seconds } => {
                let corpus = target_dir().join("fuzz-smoke-corpus").join(&target.name);
                let _ = std::fs::remove_dir_all(&corpus);
                std::fs::create_dir_all(&corpus)
                    .with_context(|| format!("creating {}", corpus.display()))?;
                cmd.arg(&corpus)
                    .arg("--")
                    .arg(format!("-seed={SMOKE_SEED}"))
                    .arg(format!("-runs={SMOKE_RUNS}"))
                    .arg(format!("-max_total_time={seconds}"));
            }
        }
        cmd.arg("-rss_limit_mb=2048").arg("-print_final_stats=1");
        if let Some(dict) = dictionary(target) {
            cmd.arg(format!("-dict={}", dict.display()));
        }
        // Run from the crate that owns the fuzz dir: cargo-fuzz looks for the project there.
        if let Some(project) = target.fuzz_dir.parent() {
            cmd.current_dir(project);
        }
        // libFuzzer prints a line per new input: keep that in a log, show its end.
        let log = logs.join(format!("{}.log", target.name));
        let result = run_logged(&mut cmd, &log);
        let tail_lines = if result.is_ok() { 8 } else { 60 };
        println!("--- last lines of {}", log.display());
        print!("{}", tail(&log, tail_lines));
        result.with_context(|| {
            format!(
                "fuzz target {} found a failure or did not build (full log: {})",
                target.name,
                log.display()
            )
        })?;
    }
    Ok(())
}

/// The target's libFuzzer dictionary: `<fuzz dir>/<target>.dict`, else the fuzz dir's only
/// `*.dict` file.
fn dictionary(target: &Target) -> Option<PathBuf> {
    let own = target.fuzz_dir.join(format!("{}.dict", target.name));
    if own.is_file() {
        return Some(own);
    }
    let dicts: Vec<PathBuf> = std::fs::read_dir(&target.fuzz_dir)
        .ok()?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "dict"))
        .collect();
    match dicts.as_slice() {
        [only] => Some(only.clone()),
        _ => None,
    }
}

fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    let from = all.len().saturating_sub(lines);
    all[from..].iter().map(|l| format!("{l}\n")).collect()
}

/// Every `*/fuzz` directory of the repository with its targets (`[[bin]]` names).
pub fn discover() -> Result<Vec<Target>> {
    let mut targets = Vec::new();
    let root = repo_root();
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(&root)
        .with_context(|| format!("listing {}", root.display()))?
        .flatten()
        .map(|e| e.path().join("fuzz"))
        .filter(|d| d.join("Cargo.toml").is_file())
        .collect();
    dirs.sort();
    for fuzz_dir in dirs {
        let manifest = fuzz_dir.join("Cargo.toml");
        let text = std::fs::read_to_string(&manifest)
            .with_context(|| format!("reading {}", manifest.display()))?;
        for name in bin_names(&text) {
            targets.push(Target {
                fuzz_dir: fuzz_dir.clone(),
                name,
            });
        }
    }
    Ok(targets)
}

/// The `name = "..."` of each `[[bin]]` table of a Cargo.toml (enough TOML for cargo-fuzz's
/// generated manifests).
fn bin_names(manifest: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut in_bin = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_bin = line == "[[bin]]";
            continue;
        }
        if !in_bin {
            continue;
        }
        if let Some(value) = line.strip_prefix("name") {
            let value = value.trim_start();
            if let Some(value) = value.strip_prefix('=') {
                names.push(value.trim().trim_matches('"').to_owned());
            }
        }
    }
    names
}

/// Installs cargo-fuzz from crates.io when `cargo fuzz` is not available.
fn ensure_cargo_fuzz() -> Result<()> {
    if let Ok(version) = capture(cargo().args(["fuzz", "--version"])) {
        println!("{}", version.trim());
        return Ok(());
    }
    println!("cargo-fuzz is not installed: installing it from crates.io");
    run(cargo().args(["install", "--locked", "cargo-fuzz"])).context(
        "installing cargo-fuzz failed; fuzzing is part of the suite, so the suite fails. \
         Install it by hand (`cargo install cargo-fuzz`) and rerun",
    )?;
    Ok(())
}

/// cargo-fuzz passes `-Z` flags; stable rustc takes them only with `RUSTC_BOOTSTRAP=1`.
fn bootstrap_if_stable(cmd: &mut std::process::Command) -> Result<()> {
    let version = capture(std::process::Command::new("rustc").arg("--version"))?;
    if !version.contains("nightly") {
        cmd.env("RUSTC_BOOTSTRAP", "1");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::bin_names;

    #[test]
    fn reads_bin_names_of_a_cargo_fuzz_manifest() {
        let manifest = r#"
[package]
name = "guest-proto-fuzz"

[[bin]]
name = "ip_config"
path = "fuzz_targets/ip_config.rs"
test = false

[dependencies]
name = "not-a-bin"

[[bin]]
name="event_line"
path = "fuzz_targets/event_line.rs"
"#;
        assert_eq!(bin_names(manifest), ["ip_config", "event_line"]);
    }
}
