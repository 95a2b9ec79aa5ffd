//! Init mode (DESIGN.md §3): guest-netinit as PID 1 (`init=/sbin/guest-netinit`, or an
//! initramfs's `/init`), so the network is up before the real init starts and no udev or
//! shell is needed to load the NIC's driver.
//!
//! Steps: mount `/proc`, `/sys`, `/dev` (devtmpfs), `/run` (tmpfs) unless already mounted;
//! bring up `lo`; load the modules named by `rd.driver.pre=` and `modules-load=`
//! (`rd.modules-load=` too; comma lists) with their dependencies; configure the network (the
//! normal run, whose failure is reported but does not stop the boot); exec the next init,
//! `guest_netinit.next=` (default: the kernel's own list, `/sbin/init`, `/etc/init`,
//! `/bin/init`), with the kernel's init arguments passed on unchanged and the same PID.
//!
//! PID 1 must never exit (the kernel would panic with "Attempted to kill init!" and nothing
//! else on the console). When the next init is missing or cannot be executed, each attempt is
//! said on the console (`/dev/kmsg` at error level and `/dev/console`), retried
//! [`NEXT_ATTEMPTS`] times [`RETRY_DELAY`] apart (a slow root device), then the machine is
//! powered off with a last message (`reboot(RB_POWER_OFF)`); if even that is refused, PID 1
//! sleeps forever rather than exit. In a PID namespace (the tests), power-off kills the
//! namespace's init with SIGINT, which is what the namespace test observes.

pub mod root;
pub mod vsock;

use crate::cli::{self, Command, RunOptions};
use crate::modules::KernelModules;
use guest_proto::KernelCmdline;
use std::collections::HashSet;
use std::ffi::CString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The kernel's own search order when no `init=` names one (`init/main.c`).
pub const DEFAULT_NEXT: [&str; 3] = ["/sbin/init", "/etc/init", "/bin/init"];
/// Attempts to exec the next init before powering off.
pub const NEXT_ATTEMPTS: u32 = 3;
/// Pause between attempts.
pub const RETRY_DELAY: Duration = Duration::from_secs(1);
/// Where console messages go by default (besides `/dev/kmsg`).
pub const CONSOLE: &str = "/dev/console";

/// One filesystem to mount.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub source: &'static str,
    pub target: &'static str,
    pub fstype: &'static str,
    pub flags: libc::c_ulong,
    pub data: &'static str,
}

/// What init mode mounts, in order (`/proc` first: the others are checked in its mountinfo).
pub fn mount_plan() -> Vec<Mount> {
    let (nosuid, nodev, noexec) = (libc::MS_NOSUID, libc::MS_NODEV, libc::MS_NOEXEC);
    vec![
        Mount {
            source: "proc",
            target: "/proc",
            fstype: "proc",
            flags: nosuid | nodev | noexec,
            data: "",
        },
        Mount {
            source: "sysfs",
            target: "/sys",
            fstype: "sysfs",
            flags: nosuid | nodev | noexec,
            data: "",
        },
        Mount {
            source: "devtmpfs",
            target: "/dev",
            fstype: "devtmpfs",
            flags: nosuid,
            data: "mode=0755",
        },
        Mount {
            source: "tmpfs",
            target: "/run",
            fstype: "tmpfs",
            flags: nosuid | nodev,
            data: "mode=0755",
        },
    ]
}

/// Mount points listed in a `/proc/self/mountinfo` text (field 5, `\040`-style escapes undone).
pub fn mount_points(mountinfo: &str) -> HashSet<String> {
    mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_octal)
        .collect()
}

fn unescape_octal(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mounts of `plan` not already present in `mounted`.
pub fn mounts_needed<'a>(plan: &'a [Mount], mounted: &HashSet<String>) -> Vec<&'a Mount> {
    plan.iter()
        .filter(|m| !mounted.contains(m.target))
        .collect()
}

/// What the cmdline asks of init mode.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InitParams {
    /// `guest_netinit.next=` (the last one wins, like `init=`).
    pub next: Option<String>,
    /// `rd.driver.pre=`, `modules-load=`, `rd.modules-load=`, in order, names normalised,
    /// duplicates removed.
    pub modules: Vec<String>,
}

impl InitParams {
    pub fn from_cmdline(cmd: &KernelCmdline) -> InitParams {
        let mut p = InitParams::default();
        for (k, v) in &cmd.params {
            let Some(v) = v else { continue };
            match k.as_str() {
                "guest_netinit.next" if !v.is_empty() => p.next = Some(v.clone()),
                "rd.driver.pre" | "modules-load" | "rd.modules-load" | "modules_load"
                | "rd.modules_load" => {
                    for m in v.split(',').map(str::trim).filter(|m| !m.is_empty()) {
                        let m = crate::modules::normalise(m);
                        if !p.modules.contains(&m) {
                            p.modules.push(m);
                        }
                    }
                }
                _ => {}
            }
        }
        p
    }

    /// The inits to try, in order: the one named, or the kernel's list.
    pub fn next_candidates(&self) -> Vec<String> {
        match &self.next {
            Some(n) => vec![n.clone()],
            None => DEFAULT_NEXT.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// The first candidate that `exists` says is there.
pub fn resolve_next(candidates: &[String], exists: impl Fn(&str) -> bool) -> Option<String> {
    candidates.iter().find(|c| exists(c)).cloned()
}

/// The next init's argv: its path, then the kernel's init arguments unchanged.
pub fn next_argv(next: &str, init_args: &[String]) -> Vec<String> {
    std::iter::once(next.to_string())
        .chain(init_args.iter().cloned())
        .collect()
}

/// Options of init mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitOptions {
    /// The network run's options (`--cmdline` etc. with `guest-netinit init`).
    pub run: RunOptions,
    /// Arguments for the next init: argv[1..] when started by the kernel, after `--` with
    /// `guest-netinit init`.
    pub init_args: Vec<String>,
    /// `--console FILE` (default `/dev/console`).
    pub console: PathBuf,
    /// Said on the console once it is mounted: why the arguments were not used ([`fallback`]).
    pub notice: Option<String>,
}

/// As PID 1 with arguments [`parse_args`] refused: the default options, every argument after
/// `--` (or all of them, when there is none) passed on to the next init, and `error` kept to
/// be said on the console. PID 1 must not exit over a bad flag.
pub fn fallback(args: &[String], error: &str) -> InitOptions {
    let init_args = match args.iter().position(|a| a == "--") {
        Some(i) => args[i + 1..].to_vec(),
        None => args.to_vec(),
    };
    let mut run = RunOptions::default();
    run.module_grace = Duration::ZERO;
    InitOptions {
        run,
        init_args,
        console: PathBuf::from(CONSOLE),
        notice: Some(format!(
            "ignoring init's arguments ({error}); booting with the defaults"
        )),
    }
}

/// Parses `guest-netinit init [RUN FLAGS] [--console FILE] [-- INIT ARGS]`.
pub fn parse_args(args: &[String]) -> Result<InitOptions, String> {
    let (flags, init_args) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], args[i + 1..].to_vec()),
        None => (args, Vec::new()),
    };
    let mut console = PathBuf::from(CONSOLE);
    let mut run_flags = vec!["run".to_string()];
    let mut it = flags.iter();
    while let Some(a) = it.next() {
        if let Some(v) = a.strip_prefix("--console=") {
            console = v.into();
        } else if a == "--console" {
            console = it.next().ok_or("--console needs a value")?.into();
        } else {
            run_flags.push(a.clone());
        }
    }
    match cli::parse_args(run_flags.into_iter().map(Into::into))? {
        Command::Run(mut run) => Ok(InitOptions {
            run: {
                // PID 1 before any udev: nobody else will load the NIC's driver, so waiting
                // for one to bind is boot time lost (50 ms per boot under TCG).
                run.module_grace = Duration::ZERO;
                run
            },
            init_args,
            console,
            notice: None,
        }),
        _ => Err("init: only run flags, --console and -- ARGS are accepted".into()),
    }
}

/// Init mode: never returns. `configure` is the normal run (returns its exit code).
pub fn main(opts: &InitOptions, configure: impl FnOnce(&RunOptions) -> i32) -> ! {
    let mut con = Console::new(opts);
    exec_next_on_panic(
        InitParams::default(),
        opts.init_args.clone(),
        con.kmsg.clone(),
        con.console.clone(),
    );
    let t0 = Instant::now();
    let done = mount_all(&mut con);
    con.say(Level::Info, &format!("mounted {done} ({})", ms(t0)));
    if let Some(notice) = &opts.notice {
        con.say(Level::Error, notice);
    }

    let t = Instant::now();
    match loopback_up() {
        Ok(_) => con.say(Level::Info, &format!("lo up ({})", ms(t))),
        Err(e) => con.say(Level::Error, &format!("bringing up lo failed: {e}")),
    }

    let cmdline_path = opts
        .run
        .cmdline
        .clone()
        .unwrap_or_else(|| PathBuf::from("/proc/cmdline"));
    let cmdline = match std::fs::read_to_string(&cmdline_path) {
        Ok(text) => KernelCmdline::parse(&text),
        Err(e) => {
            con.say(
                Level::Error,
                &format!("reading {}: {e}; using defaults", cmdline_path.display()),
            );
            KernelCmdline::default()
        }
    };
    let params = InitParams::from_cmdline(&cmdline);
    exec_next_on_panic(
        params.clone(),
        opts.init_args.clone(),
        con.kmsg.clone(),
        con.console.clone(),
    );
    load_modules(&params.modules, &mut con);
    load_vsock(&cmdline, &mut con);
    // The initramfs role: with `root=` and `/` being the initramfs, mount the disk and switch
    // to it; its own guest-netinit.service configures the network (root.rs).
    if root::in_initramfs() {
        match root::RootParams::from_cmdline(&cmdline) {
            Ok(Some(r)) => root::switch(&r, &params, &opts.init_args, &mut con),
            Ok(None) => {}
            Err(e) => {
                con.say(Level::Error, &format!("root switch: {e}"));
                power_off(&mut con)
            }
        }
    }

    let code = configure(&opts.run);
    if code != 0 {
        con.say(
            Level::Error,
            &format!("network setup failed (exit {code}); starting the next init anyway"),
        );
    }
    exec_next(&params, &opts.init_args, &mut con)
}

/// From here on a panic — which aborts the process in the static build (`panic = "abort"`),
/// and a PID 1 that dies makes the kernel panic with nothing useful on the console — is said
/// on the console, then the next init is started all the same (retries, then power off).
pub fn exec_next_on_panic(
    params: InitParams,
    init_args: Vec<String>,
    kmsg: PathBuf,
    console: PathBuf,
) {
    std::panic::set_hook(Box::new(move |info| {
        let mut con = Console {
            kmsg: kmsg.clone(),
            console: console.clone(),
        };
        con.say(
            Level::Error,
            &format!("internal error: {info}; starting the next init anyway"),
        );
        exec_next(&params, &init_args, &mut con)
    }));
}

fn ms(t: Instant) -> String {
    crate::report::fmt_duration(t.elapsed())
}

/// Mounts what is missing; returns a summary. Failures are said and the boot goes on.
/// `/proc` first; then one read of its mountinfo tells which of the others are there.
fn mount_all(con: &mut Console) -> String {
    let plan = mount_plan();
    let mut done = Vec::new();
    let mut mounted: Option<HashSet<String>> = None;
    for m in &plan {
        let present = if m.target == "/proc" {
            Path::new("/proc/self/mountinfo").exists()
        } else {
            let mounted = mounted.get_or_insert_with(|| {
                std::fs::read_to_string("/proc/self/mountinfo")
                    .map(|t| mount_points(&t))
                    .unwrap_or_default()
            });
            mounts_needed(std::slice::from_ref(m), mounted).is_empty()
        };
        if present {
            continue;
        }
        match do_mount(m) {
            Ok(()) => done.push(m.target),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) => {}
            Err(e) => con.say(
                Level::Error,
                &format!("mount {} on {}: {e}", m.fstype, m.target),
            ),
        }
    }
    if done.is_empty() {
        "nothing (all mounted)".into()
    } else {
        done.join(" ")
    }
}

fn do_mount(m: &Mount) -> std::io::Result<()> {
    let _ = std::fs::create_dir_all(m.target);
    let c = |s: &str| CString::new(s).map_err(|_| std::io::ErrorKind::InvalidInput);
    let (src, tgt, fs, data) = (c(m.source)?, c(m.target)?, c(m.fstype)?, c(m.data)?);
    // SAFETY: valid NUL-terminated strings that outlive the call.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            tgt.as_ptr(),
            fs.as_ptr(),
            m.flags,
            data.as_ptr().cast(),
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `ip link set lo up`, as `SIOCGIFFLAGS`/`SIOCSIFFLAGS` on a datagram socket: two ioctls,
/// where an rtnetlink request needed its own tokio runtime and netlink connection (tens of
/// ms under emulation, before the network run builds its own). Returns how long it took.
fn loopback_up() -> Result<Duration, String> {
    let t = Instant::now();
    // SAFETY: plain socket call; the fd is owned below.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(format!("socket: {}", std::io::Error::last_os_error()));
    }
    // SAFETY: fd is a fresh socket nobody else owns.
    let sock = unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    set_up(&sock, "lo")?;
    Ok(t.elapsed())
}

/// Sets IFF_UP on `name` (keeping its other flags) through `sock`.
fn set_up(sock: &std::os::fd::OwnedFd, name: &str) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    if name.len() >= req.ifr_name.len() {
        return Err(format!("interface name {name:?} too long"));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: valid socket and a properly sized ifreq for these requests.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
        return Err(format!(
            "SIOCGIFFLAGS {name}: {}",
            std::io::Error::last_os_error()
        ));
    }
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    if flags & libc::IFF_UP as libc::c_short != 0 {
        return Ok(());
    }
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: as above.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) } < 0 {
        return Err(format!(
            "SIOCSIFFLAGS {name}: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

fn load_modules(names: &[String], con: &mut Console) {
    if names.is_empty() {
        return;
    }
    let release = match KernelModules::running_release() {
        Ok(r) => r,
        Err(e) => {
            con.say(Level::Error, &format!("uname: {e}; modules not loaded"));
            return;
        }
    };
    let km = KernelModules::new(Path::new("/"), Path::new("/sys"), release);
    for name in names {
        let t = Instant::now();
        match crate::system::Modules::load_with_deps(&km, name) {
            Ok(loaded) if loaded.is_empty() => con.say(
                Level::Info,
                &format!("module {name}: already loaded or built in ({})", ms(t)),
            ),
            Ok(loaded) => con.say(
                Level::Info,
                &format!("module {name}: loaded {} ({})", loaded.join(", "), ms(t)),
            ),
            Err(e) => con.say(Level::Error, &format!("module {name}: {e}")),
        }
    }
}

/// The vsock transport's modules, when a virtio-vsock device is there ([`vsock`]).
fn load_vsock(cmdline: &KernelCmdline, con: &mut Console) {
    let Ok(release) = KernelModules::running_release() else {
        return; // load_modules said so already, when it needed it
    };
    let km = KernelModules::new(Path::new("/"), Path::new("/sys"), release);
    vsock::load(
        Path::new("/sys"),
        cmdline,
        |name| crate::system::Modules::load_with_deps(&km, name),
        con,
    );
}

/// Execs the next init; on failure retries, then powers off. Never returns.
fn exec_next(params: &InitParams, init_args: &[String], con: &mut Console) -> ! {
    use std::os::unix::process::CommandExt;
    let candidates = params.next_candidates();
    for attempt in 1..=NEXT_ATTEMPTS {
        match resolve_next(&candidates, |p| Path::new(p).is_file()) {
            Some(next) => {
                let argv = next_argv(&next, init_args);
                con.say(Level::Info, &format!("exec {}", argv.join(" ")));
                let err = std::process::Command::new(&next)
                    .arg0(&next)
                    .args(init_args)
                    .exec();
                con.say(
                    Level::Error,
                    &format!(
                        "cannot execute the next init {next}: {err} (attempt {attempt}/{NEXT_ATTEMPTS})"
                    ),
                );
            }
            None => con.say(
                Level::Error,
                &format!(
                    "the next init is missing: {} not found (attempt {attempt}/{NEXT_ATTEMPTS}); \
                     set guest_netinit.next= to the init of this image",
                    candidates.join(", ")
                ),
            ),
        }
        if attempt < NEXT_ATTEMPTS {
            std::thread::sleep(RETRY_DELAY);
        }
    }
    con.say(Level::Error, "no init to start");
    power_off(con)
}

/// Syncs and powers off with a last message; if that is refused, sleeps forever. PID 1 never
/// exits (the kernel would panic with nothing useful on the console).
fn power_off(con: &mut Console) -> ! {
    con.say(
        Level::Error,
        "powering off (guest-netinit does not exit as PID 1, which would panic the kernel)",
    );
    // SAFETY: plain syscalls; reboot only returns on failure.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    let err = std::io::Error::last_os_error();
    con.say(
        Level::Error,
        &format!("power off failed: {err}; halting here"),
    );
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Level {
    Info,
    Error,
}

/// Init mode's messages: stdout (the console the kernel gave us), the kernel log
/// (`--events FILE` or `/dev/kmsg`, so they show under `quiet`), and for errors also the
/// console device, opened per message (it may appear only after `/dev` is mounted).
struct Console {
    kmsg: PathBuf,
    console: PathBuf,
}

impl Console {
    fn new(opts: &InitOptions) -> Console {
        Console {
            kmsg: opts
                .run
                .events
                .clone()
                .unwrap_or_else(|| PathBuf::from("/dev/kmsg")),
            console: opts.console.clone(),
        }
    }

    fn say(&mut self, level: Level, msg: &str) {
        let line = format!("guest-netinit init: {msg}");
        // Never panic here (this also runs in the panic hook): write errors are ignored.
        let _ = writeln!(std::io::stdout(), "[netinit] init        {msg}");
        // kmsg: <3> err is shown even with `quiet` (loglevel 4); <5> notice for progress.
        let prio = if level == Level::Error { 3 } else { 5 };
        append(&self.kmsg, &format!("<{prio}>{line}\n"));
        if level == Level::Error {
            append(&self.console, &format!("{line}\n"));
            let _ = writeln!(std::io::stderr(), "{line}");
        }
    }
}

fn append(path: &Path, text: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new()
        .append(true)
        .create(!path.starts_with("/dev"))
        .open(path)
    {
        let _ = f.write_all(text.as_bytes());
    }
}

#[cfg(test)]
#[path = "init_tests.rs"]
mod tests;
