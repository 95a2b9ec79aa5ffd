//! Paths inside an image that is not the running system: symlinks are followed with the image
//! as `/`, so `/etc/resolv.conf -> /run/systemd/resolve/stub-resolv.conf` is looked up in the
//! image, not on the machine running `check` (which may well have that file).

use std::path::{Path, PathBuf};

/// Symlinks followed before giving up (the kernel's limit).
const MAX_HOPS: usize = 40;

/// The host path of `abs` (absolute, inside the image at `root`) with every symlink resolved
/// inside the image; `None` when something on the way does not exist (a dangling link), or
/// the links loop.
pub fn resolve(root: &Path, abs: &str) -> Option<PathBuf> {
    let mut pending: Vec<String> = parts(abs);
    pending.reverse();
    let mut cur: Vec<String> = Vec::new();
    let mut hops = 0;
    while let Some(c) = pending.pop() {
        if c == ".." {
            cur.pop();
            continue;
        }
        cur.push(c);
        let host = root.join(cur.join("/"));
        let meta = std::fs::symlink_metadata(&host).ok()?;
        if meta.file_type().is_symlink() {
            hops += 1;
            if hops > MAX_HOPS {
                return None;
            }
            let target = std::fs::read_link(&host).ok()?;
            let target = target.to_string_lossy();
            cur.pop();
            if target.starts_with('/') {
                cur.clear();
            }
            let mut t = parts(&target);
            t.reverse();
            pending.extend(t);
        }
    }
    Some(root.join(cur.join("/")))
}

fn parts(p: &str) -> Vec<String> {
    p.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::to_string)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn absolute_links_stay_inside_the_image() {
        let d = tempfile::tempdir().unwrap();
        let root = d.path();
        std::fs::create_dir_all(root.join("usr/lib/x")).unwrap();
        std::fs::write(root.join("usr/lib/x/f"), "f").unwrap();
        symlink("usr/lib", root.join("lib")).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        symlink("/lib/x/f", root.join("etc/abs")).unwrap();
        symlink("../lib/x/../x/f", root.join("etc/rel")).unwrap();
        // /proc/self exists on the host, never in this image.
        symlink("/proc/self", root.join("etc/host")).unwrap();
        symlink("loop2", root.join("etc/loop1")).unwrap();
        symlink("loop1", root.join("etc/loop2")).unwrap();
        let want = root.join("usr/lib/x/f");
        assert_eq!(resolve(root, "/etc/abs"), Some(want.clone()));
        assert_eq!(resolve(root, "/etc/rel"), Some(want.clone()));
        assert_eq!(resolve(root, "/lib/x/f"), Some(want));
        assert_eq!(resolve(root, "/etc/host"), None);
        assert_eq!(resolve(root, "/etc/loop1"), None);
        assert_eq!(resolve(root, "/etc/missing"), None);
    }
}
