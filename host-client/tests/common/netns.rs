//! Runs a closure in a thread with its own, fresh network namespace (and mount namespace, so
//! it can mount that namespace's sysfs). Nothing in the root namespace is touched; the
//! namespaces disappear with the thread. Needs root: tests using it fail (never skip) without.

use nix::mount::{mount, MsFlags};
use nix::sched::{unshare, CloneFlags};
use std::path::Path;
use std::process::Command;

/// Runs `f` in a new network namespace with loopback up; returns its result.
pub fn in_new_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    std::thread::spawn(move || {
        unshare(CloneFlags::CLONE_NEWNET | CloneFlags::CLONE_NEWNS)
            .expect("unshare(CLONE_NEWNET|CLONE_NEWNS): these tests must run as root");
        // keep our mounts out of the parent's mount namespace
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .expect("make / private");
        ip(&["link", "set", "lo", "up"]);
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// Mounts this thread's namespace's sysfs at `dir` (inside the private mount namespace).
pub fn mount_sysfs(dir: &Path) {
    mount(
        Some("sysfs"),
        dir,
        Some("sysfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .expect("mount sysfs");
}

/// Runs `ip ARGS` in the calling thread's namespaces (a child inherits them) and asserts success.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .expect("run ip (iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}
