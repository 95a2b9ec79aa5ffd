//! Locating the built binaries a test runs.
//!
//! `GUESTKIT_BIN_DIR` is a `:`-separated list of directories searched in order (`cargo xtask
//! test` puts the static guest-netinit build first, then the debug build of everything else).
//! Without it, `<target>/debug`. A missing binary is a test failure with the command that
//! builds it, never a skip.

use std::path::{Path, PathBuf};

/// Env var naming the directories that hold the binaries under test.
pub const BIN_DIR_ENV: &str = "GUESTKIT_BIN_DIR";

/// The cargo target directory: `CARGO_TARGET_DIR` if set, else `<workspace>/target`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                workspace_root().join(dir)
            }
        }
        None => workspace_root().join("target"),
    }
}

/// The workspace root (this crate's parent directory).
pub fn workspace_root() -> PathBuf {
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().unwrap_or(manifest).to_path_buf()
}

/// The directories searched by [`bin`], in order.
pub fn search_dirs() -> Vec<PathBuf> {
    match std::env::var_os(BIN_DIR_ENV) {
        Some(list) if !list.is_empty() => std::env::split_paths(&list).collect(),
        _ => vec![target_dir().join("debug")],
    }
}

/// Path to the built binary `name`; panics naming every place looked at when it is absent.
pub fn bin(name: &str) -> PathBuf {
    let dirs = search_dirs();
    for dir in &dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return candidate;
        }
    }
    let looked: Vec<String> = dirs.iter().map(|d| d.display().to_string()).collect();
    panic!(
        "binary `{name}` not found in [{}] ({BIN_DIR_ENV}={:?}); build it first: \
         `cargo build --bins --workspace`, or run the suite with `cargo xtask test`",
        looked.join(", "),
        std::env::var_os(BIN_DIR_ENV)
    );
}
