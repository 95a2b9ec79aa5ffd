//! Credential files: noticed with inotify (the `notify` crate's Linux backend) on the
//! file's directory, parsed as JSON, the provider's required keys checked. A file that is
//! half written fails to parse and is looked at again on the next event.
//!
//! The content is never logged nor put in an error: errors say which key is missing or
//! where the JSON is broken (line/column), not what the file holds.
//!
//! The files are written by the login CLI, which runs as another user ([`super::user`])
//! and owns its HOME: it could plant a symlink to the agent's token where its credentials
//! should be, or a FIFO, or a huge file. So below HOME every component is opened with
//! `O_NOFOLLOW` (a symlink is an error naming the path, never followed), the file must be
//! a regular file of at most [`MAX_SIZE`] bytes, and the agent makes it 0600 and its
//! directory 0700 through the descriptors it opened (issue 12 item 7). Directories the
//! agent creates there for inotify are 0700 and given to the login user.

use super::user::LoginUser;
use ::notify::{RecommendedWatcher, RecursiveMode, Watcher};
use std::ffi::CString;
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;
use tokio::sync::mpsc;

/// Largest credentials file read.
pub const MAX_SIZE: u64 = 1 << 20;

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
    #[error("{0}: a symlink (not followed) or a non-directory on the way")]
    Symlink(String),
    #[error("{0}: not a regular file")]
    NotRegular(String),
    #[error("{path}: larger than {max} bytes")]
    TooLarge { path: String, max: u64 },
}

fn cstr(c: &std::ffi::OsStr) -> std::io::Result<CString> {
    CString::new(c.as_bytes()).map_err(|_| std::io::Error::from_raw_os_error(libc::EINVAL))
}

fn openat(dir: &OwnedFd, name: &std::ffi::OsStr, flags: i32) -> std::io::Result<OwnedFd> {
    let name = cstr(name)?;
    // SAFETY: valid dirfd and NUL-terminated name; a non-negative result is ours.
    let fd = unsafe { libc::openat(dir.as_raw_fd(), name.as_ptr(), flags | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: just returned by the kernel.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

const DIR_FLAGS: i32 = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW;

/// Where the walk to `path` starts and the components after it: `base` (HOME, chosen by
/// root, resolved normally) when `path` is below it, else `/`. `..` is refused.
fn split<'a>(
    path: &'a Path,
    base: &'a Path,
) -> std::io::Result<(&'a Path, Vec<&'a std::ffi::OsStr>, bool)> {
    let (start, rest, below) = match path.strip_prefix(base) {
        Ok(r) if base.is_absolute() => (base, r, true),
        _ => (Path::new("/"), path, false),
    };
    let mut parts = Vec::new();
    for c in rest.components() {
        match c {
            Component::Normal(n) => parts.push(n),
            Component::RootDir | Component::CurDir => {}
            _ => return Err(std::io::Error::from_raw_os_error(libc::EINVAL)),
        }
    }
    Ok((start, parts, below))
}

fn open_dir(p: &Path) -> std::io::Result<OwnedFd> {
    let c = cstr(p.as_os_str())?;
    // SAFETY: NUL-terminated path; a non-negative result is ours.
    let fd = unsafe {
        libc::open(
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: just returned by the kernel.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Opens `path` for reading, no symlink followed after `base`; returns the file and
/// the directory it is in, and whether it is below `base`.
fn open_file(path: &Path, base: &Path) -> std::io::Result<(File, OwnedFd, bool)> {
    let (start, parts, below) = split(path, base)?;
    let (last, dirs) = parts
        .split_last()
        .ok_or_else(|| std::io::Error::from_raw_os_error(libc::EISDIR))?;
    let mut dir = open_dir(start)?;
    for d in dirs {
        dir = openat(&dir, d, DIR_FLAGS)?;
    }
    let f = openat(
        &dir,
        last,
        libc::O_RDONLY | libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY,
    )?;
    Ok((File::from(f), dir, below))
}

/// Reads a credentials file the safe way (see the module doc); also makes it 0600 and
/// its directory 0700 when it is below `base` (not `base` itself: that is HOME, 0700).
fn read_bounded(path: &Path, base: &Path) -> Result<(Vec<u8>, SystemTime), CredsError> {
    let shown = path.display().to_string();
    let io = |e: std::io::Error| match e.raw_os_error() {
        Some(libc::ENOENT) => CredsError::Missing(shown.clone()),
        Some(libc::ELOOP) | Some(libc::ENOTDIR) => CredsError::Symlink(shown.clone()),
        _ => CredsError::Unreadable {
            path: shown.clone(),
            error: e.to_string(),
        },
    };
    let (f, dir, below) = open_file(path, base).map_err(io)?;
    let m = f.metadata().map_err(io)?;
    if !m.is_file() {
        return Err(CredsError::NotRegular(shown));
    }
    if m.len() > MAX_SIZE {
        return Err(CredsError::TooLarge {
            path: shown,
            max: MAX_SIZE,
        });
    }
    if below {
        use std::os::unix::fs::PermissionsExt;
        if m.mode() & 0o777 != 0o600 {
            let _ = f.set_permissions(std::fs::Permissions::from_mode(0o600));
        }
        if path.parent() != Some(base) {
            let dm = File::from(dir);
            if dm.metadata().is_ok_and(|d| d.mode() & 0o077 != 0) {
                let _ = dm.set_permissions(std::fs::Permissions::from_mode(0o700));
            }
        }
    }
    let mut bytes = Vec::new();
    f.take(MAX_SIZE + 1).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() as u64 > MAX_SIZE {
        return Err(CredsError::TooLarge {
            path: shown,
            max: MAX_SIZE,
        });
    }
    Ok((bytes, m.modified().unwrap_or_else(|_| SystemTime::now())))
}

/// Creates the directories of `dir` below `base` that are missing: 0700, given to
/// `user`. Symlinks are not followed. A `dir` not below `base` is left alone.
pub fn ensure_dirs(dir: &Path, base: &Path, user: &LoginUser) -> std::io::Result<()> {
    let (start, parts, below) = split(dir, base)?;
    if !below {
        return Ok(());
    }
    let mut fd = open_dir(start)?;
    for d in parts {
        fd = match openat(&fd, d, DIR_FLAGS) {
            Ok(next) => next,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let name = cstr(d)?;
                // SAFETY: valid dirfd and NUL-terminated name.
                if unsafe { libc::mkdirat(fd.as_raw_fd(), name.as_ptr(), 0o700) } != 0 {
                    let e = std::io::Error::last_os_error();
                    if e.kind() != std::io::ErrorKind::AlreadyExists {
                        return Err(e);
                    }
                }
                let next = openat(&fd, d, DIR_FLAGS)?;
                if user.switch {
                    std::os::unix::fs::fchown(&next, Some(user.uid), Some(user.gid))?;
                }
                next
            }
            Err(e) => return Err(e),
        };
    }
    Ok(())
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

/// Reads and checks `path` (`base`: the login HOME, see the module doc).
pub fn check(path: &Path, base: &Path, required: &[String]) -> Result<Found, CredsError> {
    let shown = path.display().to_string();
    let (bytes, modified) = read_bounded(path, base)?;
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
pub fn baseline(path: &Path, base: &Path) -> Option<u64> {
    read_bounded(path, base).ok().map(|(b, _)| digest(&b))
}

/// Watches the directory of a credentials file; each change of that file sends `()`.
/// Dropping it stops the watch.
pub struct CredsWatch {
    _watcher: RecommendedWatcher,
    pub events: mpsc::UnboundedReceiver<()>,
}

/// Starts watching `path`'s directory, creating it below `base` when missing (the CLI
/// would create it anyway; inotify cannot watch what does not exist).
pub fn watch(path: &Path, base: &Path, user: &LoginUser) -> Result<CredsWatch, String> {
    let dir = path
        .parent()
        .ok_or_else(|| format!("{}: no parent directory", path.display()))?;
    ensure_dirs(dir, base, user).map_err(|e| format!("creating {}: {e}", dir.display()))?;
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
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn keys_are_checked_and_content_never_shown() {
        let d = tempfile::tempdir().unwrap();
        let b = d.path();
        let p = b.join("auth.json");
        let keys = vec!["tokens".to_string()];
        assert!(matches!(check(&p, b, &keys), Err(CredsError::Missing(_))));
        std::fs::write(&p, r#"{"tokens": "#).unwrap();
        let e = check(&p, b, &keys).unwrap_err();
        assert!(matches!(e, CredsError::NotJson { .. }));
        std::fs::write(&p, r#"{"secret_value_xyz": 1, "tokens": null}"#).unwrap();
        let e = check(&p, b, &keys).unwrap_err();
        assert!(!e.to_string().contains("secret_value_xyz"), "{e}");
        assert!(e.to_string().contains("`tokens`"), "{e}");
        std::fs::write(&p, r#"{"tokens": {"access_token": "a"}}"#).unwrap();
        let f = check(&p, b, &keys).unwrap();
        assert_eq!(f.json["tokens"]["access_token"], "a");
        assert_eq!(Some(f.digest), baseline(&p, b));
        assert!(check(&p, b, &["tokens.access_token".to_string()]).is_ok());
        assert!(check(&p, b, &["tokens.refresh_token".to_string()]).is_err());
    }

    /// The login user owns HOME: a symlink to a root-only file (the agent's token), in
    /// the file's place or the directory's, is not followed; nor is a FIFO opened for
    /// reading (it would block) or a huge file read.
    #[test]
    fn symlinks_fifos_and_huge_files_are_refused() {
        let d = tempfile::tempdir().unwrap();
        let home = d.path().join("home");
        std::fs::create_dir(&home).unwrap();
        let secret = d.path().join("token");
        std::fs::write(&secret, r#"{"tokens":"the-agent-token"}"#).unwrap();
        let keys = vec!["tokens".to_string()];
        std::fs::create_dir(home.join(".codex")).unwrap();
        let p = home.join(".codex/auth.json");
        std::os::unix::fs::symlink(&secret, &p).unwrap();
        let e = check(&p, &home, &keys).unwrap_err();
        assert_eq!(e, CredsError::Symlink(p.display().to_string()));
        assert!(baseline(&p, &home).is_none());
        std::os::unix::fs::symlink(d.path(), home.join(".gemini")).unwrap();
        let q = home.join(".gemini/token");
        assert!(matches!(
            check(&q, &home, &keys),
            Err(CredsError::Symlink(_))
        ));
        std::fs::remove_file(&p).unwrap();
        nix_mkfifo(&p);
        assert_eq!(
            check(&p, &home, &keys).unwrap_err(),
            CredsError::NotRegular(p.display().to_string())
        );
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&p, vec![b' '; MAX_SIZE as usize + 1]).unwrap();
        let e = check(&p, &home, &keys).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("{}: larger than 1048576 bytes", p.display())
        );
    }

    fn nix_mkfifo(p: &Path) {
        let c = CString::new(p.as_os_str().as_bytes()).unwrap();
        // SAFETY: NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    }

    #[test]
    fn a_readable_credentials_file_is_made_0600_in_a_0700_directory() {
        let d = tempfile::tempdir().unwrap();
        let home = d.path();
        std::fs::create_dir(home.join(".codex")).unwrap();
        std::fs::set_permissions(home.join(".codex"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        let p = home.join(".codex/auth.json");
        std::fs::write(&p, r#"{"tokens":"t"}"#).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        check(&p, home, &["tokens".to_string()]).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o777;
        assert_eq!(mode(&p), 0o600);
        assert_eq!(mode(&home.join(".codex")), 0o700);
    }

    #[tokio::test]
    async fn inotify_sees_the_file_appear_in_a_new_directory() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join(".gemini/oauth_creds.json");
        let mut w = watch(&p, d.path(), &LoginUser::current()).unwrap();
        let mode = std::fs::metadata(d.path().join(".gemini")).unwrap().mode() & 0o777;
        assert_eq!(mode, 0o700);
        std::fs::write(d.path().join(".gemini/other"), "x").unwrap();
        std::fs::write(&p, r#"{"refresh_token":"r"}"#).unwrap();
        w.events.recv().await.unwrap();
        assert!(check(&p, d.path(), &["refresh_token".to_string()]).is_ok());
    }
}
