//! Credential files: noticed with inotify (the `notify` crate's Linux backend) on the
//! file's directory, parsed as JSON, the provider's required keys checked. A file that is
//! half written fails to parse and is looked at again on the next event.
//!
//! The content is never logged nor put in an error: errors say which key is missing or
//! where the JSON is broken (line/column), not what the file holds.

use ::notify::{RecommendedWatcher, RecursiveMode, Watcher};
use std::path::{Path, PathBuf};
use std::time::SystemTime;
use tokio::sync::mpsc;

/// Why a file does not (yet) prove a login.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredsError {
    #[error("{0}: no such file")]
    Missing(String),
    #[error("{path}: cannot read: {error}")]
    Unreadable { path: String, error: String },
    #[error("{path}: not JSON (line {line}, column {column})")]
    NotJson {
        path: String,
        line: usize,
        column: usize,
    },
    #[error("{path}: required key `{key}` missing or null")]
    MissingKey { path: String, key: String },
}

/// A credentials file that holds the required keys.
#[derive(Debug, Clone)]
pub struct Found {
    pub path: PathBuf,
    pub modified: SystemTime,
    pub json: serde_json::Value,
    /// Hash of the bytes, to tell a new login from a file that was already there.
    pub digest: u64,
}

fn digest(bytes: &[u8]) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    h.finish()
}

/// `key` is `a` or a dotted path `a.b`; present and not null.
fn has_key(v: &serde_json::Value, key: &str) -> bool {
    let mut cur = v;
    for part in key.split('.') {
        match cur.get(part) {
            Some(next) => cur = next,
            None => return false,
        }
    }
    !cur.is_null()
}

/// Reads and checks `path`.
pub fn check(path: &Path, required: &[String]) -> Result<Found, CredsError> {
    let shown = path.display().to_string();
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(CredsError::Missing(shown))
        }
        Err(e) => {
            return Err(CredsError::Unreadable {
                path: shown,
                error: e.to_string(),
            })
        }
    };
    let modified = std::fs::metadata(path)
        .and_then(|m| m.modified())
        .unwrap_or_else(|_| SystemTime::now());
    let json: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| CredsError::NotJson {
            path: shown.clone(),
            line: e.line(),
            column: e.column(),
        })?;
    if let Some(key) = required.iter().find(|k| !has_key(&json, k)) {
        return Err(CredsError::MissingKey {
            path: shown,
            key: key.clone(),
        });
    }
    Ok(Found {
        path: path.to_path_buf(),
        modified,
        digest: digest(&bytes),
        json,
    })
}

/// Digest of the file as it is now (`None`: absent or unreadable), taken when a session
/// starts so an old login is not mistaken for the new one.
pub fn baseline(path: &Path) -> Option<u64> {
    std::fs::read(path).ok().map(|b| digest(&b))
}

/// Watches the directory of a credentials file; each change of that file sends `()`.
/// Dropping it stops the watch.
pub struct CredsWatch {
    _watcher: RecommendedWatcher,
    pub events: mpsc::UnboundedReceiver<()>,
}

/// Starts watching `path`'s directory, creating it when missing (the CLI would create it
/// anyway; inotify cannot watch what does not exist).
pub fn watch(path: &Path) -> Result<CredsWatch, String> {
    let dir = path
        .parent()
        .ok_or_else(|| format!("{}: no parent directory", path.display()))?;
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let (tx, events) = mpsc::unbounded_channel();
    let name = path.file_name().map(|n| n.to_os_string());
    let mut watcher =
        ::notify::recommended_watcher(move |res: ::notify::Result<::notify::Event>| {
            let relevant = match res {
                Ok(ev) => ev.paths.iter().any(|p| p.file_name() == name.as_deref()),
                // Overflow or a watch error: look at the file anyway.
                Err(_) => true,
            };
            if relevant {
                let _ = tx.send(());
            }
        })
        .map_err(|e| format!("inotify: {e}"))?;
    watcher
        .watch(dir, RecursiveMode::NonRecursive)
        .map_err(|e| format!("watching {}: {e}", dir.display()))?;
    Ok(CredsWatch {
        _watcher: watcher,
        events,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_checked_and_content_never_shown() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("auth.json");
        let keys = vec!["tokens".to_string()];
        assert!(matches!(check(&p, &keys), Err(CredsError::Missing(_))));
        std::fs::write(&p, r#"{"tokens": "#).unwrap();
        let e = check(&p, &keys).unwrap_err();
        assert!(matches!(e, CredsError::NotJson { .. }));
        std::fs::write(&p, r#"{"secret_value_xyz": 1, "tokens": null}"#).unwrap();
        let e = check(&p, &keys).unwrap_err();
        assert!(!e.to_string().contains("secret_value_xyz"), "{e}");
        assert!(e.to_string().contains("`tokens`"), "{e}");
        std::fs::write(&p, r#"{"tokens": {"access_token": "a"}}"#).unwrap();
        let f = check(&p, &keys).unwrap();
        assert_eq!(f.json["tokens"]["access_token"], "a");
        assert_eq!(Some(f.digest), baseline(&p));
        assert!(check(&p, &["tokens.access_token".to_string()]).is_ok());
        assert!(check(&p, &["tokens.refresh_token".to_string()]).is_err());
    }

    #[tokio::test]
    async fn inotify_sees_the_file_appear_in_a_new_directory() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(".gemini/oauth_creds.json");
        let mut w = watch(&p).unwrap();
        std::fs::write(d.path().join(".gemini/other"), "x").unwrap();
        std::fs::write(&p, r#"{"refresh_token":"r"}"#).unwrap();
        w.events.recv().await.unwrap();
        assert!(check(&p, &["refresh_token".to_string()]).is_ok());
    }
}
