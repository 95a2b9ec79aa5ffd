//! Network namespaces owned by one test: created with `ip netns add` under a name unique to
//! this process (pid + counter, so tests run in parallel, also under nextest where each test is
//! its own process), deleted on drop, which also runs while a failing test unwinds.
//!
//! Nothing here touches the root namespace: every link and address lives inside a namespace
//! the test created.

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Once;

/// Prefix of every namespace the harness makes: `gk-<pid>-<n>-<role>`.
const NAME_PREFIX: &str = "gk-";
/// Where iproute2 keeps named namespaces.
pub const NETNS_DIR: &str = "/run/netns";

static COUNTER: AtomicU32 = AtomicU32::new(0);
static PREFLIGHT: Once = Once::new();

/// Fails loudly (panics) unless we are root and iproute2's `ip` is installed: netns tests
/// must never pass or skip because they could not run.
pub fn require_netns_prerequisites() {
    PREFLIGHT.call_once(|| {
        // SAFETY: geteuid has no preconditions and cannot fail.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(
            euid, 0,
            "netns tests need root (euid is {euid}); run them as root, e.g. via `cargo xtask test`"
        );
        let ip = Command::new("ip").arg("-V").output();
        match ip {
            Ok(out) if out.status.success() => {}
            Ok(out) => panic!("`ip -V` failed ({}): is iproute2 broken?", out.status),
            Err(e) => panic!(
                "`ip` (iproute2) is not runnable ({e}); install it: apt-get install -y iproute2 \
                 (`cargo xtask test` does this)"
            ),
        }
        remove_stale_namespaces();
    });
}

/// Deletes `gk-<pid>-*` namespaces left by test processes that were killed before their
/// destructors ran (SIGKILL, timeout). Only namespaces of dead pids are touched.
fn remove_stale_namespaces() {
    let Ok(entries) = std::fs::read_dir(NETNS_DIR) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(rest) = name.strip_prefix(NAME_PREFIX) else {
            continue;
        };
        let Some(pid) = rest.split('-').next().and_then(|p| p.parse::<u32>().ok()) else {
            continue;
        };
        if !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
        }
    }
}

/// A named network namespace, deleted when dropped.
#[derive(Debug)]
pub struct Namespace {
    name: String,
}

impl Namespace {
    /// Creates `gk-<pid>-<n>-<role>` with its loopback up.
    pub fn new(role: &str) -> Self {
        require_netns_prerequisites();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("{NAME_PREFIX}{}-{n}-{role}", std::process::id());
        ip(["netns", "add", &name]);
        let ns = Self { name };
        ns.ip(["link", "set", "lo", "up"]);
        ns
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `ip -n <ns> <args>` and panics with its stderr when it fails.
    pub fn ip<I, S>(&self, args: I) -> String
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("ip");
        cmd.arg("-n").arg(&self.name).args(args);
        checked(cmd)
    }

    /// Like [`Namespace::ip`] but returns the output whatever the status (for teardown and
    /// for commands whose failure is expected, e.g. flushing a route that is not there).
    pub fn ip_unchecked<I, S>(&self, args: I) -> Output
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        let mut cmd = Command::new("ip");
        cmd.arg("-n").arg(&self.name).args(args);
        cmd.output()
            .unwrap_or_else(|e| panic!("cannot run `ip`: {e}"))
    }

    /// `ip netns exec <ns> <program>`: the program runs inside the namespace with `/sys`
    /// remounted for it (what a test wants: the process sees the namespace's links in sysfs
    /// too). Add arguments, env and stdio to the returned command as usual.
    pub fn exec(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]).arg(program);
        cmd
    }

    /// `program` run directly in the namespace, the way `ip netns exec` puts it there but
    /// without an `ip` process in front of it: between fork and exec the child `setns()`s into
    /// the namespace, enters a private mount namespace and mounts a fresh sysfs on `/sys` (so
    /// `/sys/class/net` shows the namespace's links, not the root namespace's `eth0`). For
    /// benchmarks: exec → exit is then the program alone.
    pub fn setns_command(&self, program: impl AsRef<OsStr>) -> Command {
        let path = self.path();
        let file = File::open(&path).unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
        let mut cmd = Command::new(program);
        // SAFETY: the closure only makes syscalls (setns, unshare, mount, umount2) on data
        // prepared before the fork: no allocation, no locks. `file` is moved in and stays open
        // in the parent until the command is dropped, so the fd is valid in the forked child.
        unsafe {
            cmd.pre_exec(move || {
                let fail = || Err(std::io::Error::last_os_error());
                if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return fail();
                }
                if libc::unshare(libc::CLONE_NEWNS) != 0 {
                    return fail();
                }
                let root = c"/".as_ptr();
                let sys = c"/sys".as_ptr();
                let sysfs = c"sysfs".as_ptr();
                let none = std::ptr::null();
                if libc::mount(none, root, none, libc::MS_SLAVE | libc::MS_REC, none as _) != 0 {
                    return fail();
                }
                // /sys may be absent in odd containers: then there is nothing to replace.
                libc::umount2(sys, libc::MNT_DETACH);
                if libc::mount(sysfs, sys, sysfs, 0, none as _) != 0 {
                    return fail();
                }
                Ok(())
            });
        }
        cmd
    }

    /// `program` run in the namespace with nothing but `setns(CLONE_NEWNET)` between fork and
    /// exec: the cheapest start, for benchmarks of programs that do not read per-namespace
    /// sysfs (`/sys/class/net` then still shows the root namespace's links; see
    /// [`Namespace::setns_command`] for a private `/sys`).
    pub fn setns_only_command(&self, program: impl AsRef<OsStr>) -> Command {
        let path = self.path();
        let file = File::open(&path).unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
        let mut cmd = Command::new(program);
        // SAFETY: as in `setns_command`: one syscall on an fd kept open by the closure.
        unsafe {
            cmd.pre_exec(move || {
                if libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        cmd
    }

    /// Path of the namespace file (for `setns` from a thread, see `readback`).
    pub fn path(&self) -> String {
        format!("{NETNS_DIR}/{}", self.name)
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        // Deleting the namespace destroys its links; a veth's peer in another namespace goes
        // with it. Failure here is reported, not raised: we may already be unwinding.
        match Command::new("ip")
            .args(["netns", "del", &self.name])
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "warning: `ip netns del {}` failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => eprintln!("warning: cannot run `ip netns del {}`: {e}", self.name),
        }
    }
}

/// Runs `cmd` inside `ns` (through `ip netns exec`, keeping the command's arguments, env,
/// working directory) and returns its output; stdin is closed.
pub fn run_in(ns: &Namespace, cmd: &Command) -> Output {
    let mut wrapped = wrap(ns, cmd);
    wrapped.stdin(Stdio::null());
    wrapped
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?} in {}: {e}", ns.name()))
}

/// Starts `cmd` inside `ns` without waiting (stdout/stderr piped, stdin closed).
pub fn spawn_in(ns: &Namespace, cmd: &Command) -> Child {
    let mut wrapped = wrap(ns, cmd);
    wrapped
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    wrapped
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {cmd:?} in {}: {e}", ns.name()))
}

fn wrap(ns: &Namespace, cmd: &Command) -> Command {
    let mut wrapped = ns.exec(cmd.get_program());
    wrapped.args(cmd.get_args());
    for (key, value) in cmd.get_envs() {
        match value {
            Some(v) => wrapped.env(key, v),
            None => wrapped.env_remove(key),
        };
    }
    if let Some(dir) = cmd.get_current_dir() {
        wrapped.current_dir(dir);
    }
    wrapped
}

/// Runs `ip <args>` in the root namespace; used only for `ip netns add|del`, which create and
/// remove our own namespaces and change nothing else.
fn ip<const N: usize>(args: [&str; N]) {
    let mut cmd = Command::new("ip");
    cmd.args(args);
    checked(cmd);
}

fn checked(mut cmd: Command) -> String {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}
