//! Running the built guest-netinit the way the tests and the benchmark do: a kernel cmdline
//! file, a temporary `--root` (so every file it reads or writes is the test's), an `--events`
//! file instead of `/dev/kmsg`, and everything it left behind read back: exit code, stdout,
//! stderr, `state.json` as a `guest_proto::NetinitReport`, and the console event lines.
//!
//! CLI: `/work/notes/netinit-contract.md` (`guest-netinit run --cmdline F --root D --events F`).

use crate::bins::bin;
use crate::netns::{spawn_in, Namespace};
use guest_proto::{ConsoleEvent, Event, NetinitReport};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use tempfile::TempDir;

/// Where guest-netinit writes its report, relative to `--root`.
pub const STATE_FILE: &str = "run/guest-netinit/state.json";

/// One prepared invocation: a work dir holding `cmdline`, `events` and `root/`.
#[derive(Debug)]
pub struct NetinitRun {
    work: TempDir,
    extra_args: Vec<String>,
    /// A tmpfs is mounted on `work` (unmounted on drop).
    tmpfs: bool,
}

impl NetinitRun {
    /// Prepares a run whose kernel command line is `cmdline`.
    pub fn new(cmdline: &str) -> Self {
        let work = tempfile::Builder::new()
            .prefix("guestkit-netinit-")
            .tempdir()
            .unwrap_or_else(|e| panic!("cannot create a temp dir: {e}"));
        let run = Self {
            work,
            extra_args: Vec::new(),
            tmpfs: false,
        };
        run.populate(cmdline);
        run
    }

    /// Like [`NetinitRun::new`], with the work dir (so `--root`) on a fresh tmpfs, as `/run`
    /// is in a VM and everything is in the initramfs image: for benchmarks, where an ext4
    /// journal commit per `rename` would be charged to guest-netinit. Needs root.
    pub fn new_on_tmpfs(cmdline: &str) -> Self {
        let mut run = Self::new(cmdline);
        let dir = run.work.path().to_path_buf();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=16m,mode=0755", "guestkit-bench"])
            .arg(&dir)
            .status()
            .unwrap_or_else(|e| panic!("cannot run mount: {e}"));
        assert!(
            status.success(),
            "mount tmpfs on {} failed: {status}",
            dir.display()
        );
        run.tmpfs = true;
        run.populate(cmdline);
        run
    }

    fn populate(&self, cmdline: &str) {
        let run = self;
        std::fs::create_dir_all(run.root())
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", run.root().display()));
        run.set_cmdline(cmdline);
    }

    /// Replaces the kernel command line (e.g. between two runs).
    pub fn set_cmdline(&self, cmdline: &str) {
        let path = self.cmdline_path();
        std::fs::write(&path, format!("{cmdline}\n"))
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    /// Adds command-line flags after the standard ones (e.g. `--link-timeout 1s`).
    pub fn arg(&mut self, arg: impl Into<String>) -> &mut Self {
        self.extra_args.push(arg.into());
        self
    }

    /// The `--root` directory.
    pub fn root(&self) -> PathBuf {
        self.work.path().join("root")
    }

    pub fn cmdline_path(&self) -> PathBuf {
        self.work.path().join("cmdline")
    }

    pub fn events_path(&self) -> PathBuf {
        self.work.path().join("events")
    }

    /// Writes `ROOT/<rel>` (parents created), e.g. `etc/guest-netinit/eth0.network`.
    pub fn write_root_file(&self, rel: &str, content: &str) {
        let path = self.root().join(rel.trim_start_matches('/'));
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .unwrap_or_else(|e| panic!("cannot create {}: {e}", parent.display()));
        }
        std::fs::write(&path, content)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    /// `ROOT/<rel>` as text, `None` when it does not exist.
    pub fn root_file(&self, rel: &str) -> Option<String> {
        read_optional(&self.root().join(rel.trim_start_matches('/')))
    }

    /// Every regular file under ROOT, as paths relative to it, sorted (to assert that a
    /// failed run wrote nothing but its report).
    pub fn root_files(&self) -> Vec<String> {
        let mut found = Vec::new();
        collect_files(&self.root(), &self.root(), &mut found);
        found.sort();
        found
    }

    /// `guest-netinit run --cmdline F --root D --events F <extra>` (not in any namespace).
    pub fn command(&self) -> Command {
        self.command_for(&bin("guest-netinit"))
    }

    /// Same as [`NetinitRun::command`] for a given binary path.
    pub fn command_for(&self, binary: &Path) -> Command {
        let mut cmd = Command::new(binary);
        cmd.args(self.args());
        cmd
    }

    /// The arguments: `run --cmdline F --root D --events F <extra>`.
    pub fn args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "run".into(),
            "--cmdline".into(),
            self.cmdline_path().into(),
            "--root".into(),
            self.root().into(),
            "--events".into(),
            self.events_path().into(),
        ];
        args.extend(self.extra_args.iter().map(OsString::from));
        args
    }

    /// The `state.json` the last run left, `None` when there is none (also for runs started
    /// by other means: the benchmark times its own spawn).
    pub fn report(&self) -> Option<NetinitReport> {
        let state_path = self.root().join(STATE_FILE);
        read_optional(&state_path).map(|text| {
            serde_json::from_str::<NetinitReport>(&text).unwrap_or_else(|e| {
                panic!(
                    "{} is not a NetinitReport: {e}\n{text}",
                    state_path.display()
                )
            })
        })
    }

    /// Runs guest-netinit inside `ns` to completion.
    pub fn run_in(&self, ns: &Namespace) -> NetinitOutcome {
        let child = self.spawn_in(ns);
        self.finish(child)
    }

    /// Starts guest-netinit inside `ns` without waiting (to change the network meanwhile).
    pub fn spawn_in(&self, ns: &Namespace) -> Child {
        // Each run appends to a fresh events file so outcomes do not mix.
        let _ = std::fs::remove_file(self.events_path());
        spawn_in(ns, &self.command())
    }

    /// Waits for a run started by [`NetinitRun::spawn_in`] and collects what it left.
    pub fn finish(&self, child: Child) -> NetinitOutcome {
        let out = child
            .wait_with_output()
            .unwrap_or_else(|e| panic!("waiting for guest-netinit: {e}"));
        let events_text = read_optional(&self.events_path()).unwrap_or_default();
        let mut events = Vec::new();
        let mut bad_event_lines = Vec::new();
        for line in events_text.lines().filter(|l| !l.trim().is_empty()) {
            match ConsoleEvent::find_in_line(line) {
                Some(Ok(ev)) => events.push(ev),
                Some(Err(e)) => bad_event_lines.push(format!("{line} ({e})")),
                None => bad_event_lines.push(format!("{line} (no GUESTKIT: prefix)")),
            }
        }
        let report = self.report();
        NetinitOutcome {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            report,
            events,
            bad_event_lines,
        }
    }
}

/// What one guest-netinit run left behind.
#[derive(Debug, Clone)]
pub struct NetinitOutcome {
    /// Exit code; `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    /// `ROOT/run/guest-netinit/state.json`, when written.
    pub report: Option<NetinitReport>,
    /// Parsed event lines of the `--events` file, in order.
    pub events: Vec<ConsoleEvent>,
    /// Lines of the events file that are not valid event lines.
    pub bad_event_lines: Vec<String>,
}

impl NetinitOutcome {
    /// Panics with the full outcome unless the exit code is `code`.
    pub fn assert_exit(&self, code: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(code),
            "guest-netinit exit code: expected {code}\n{}",
            self.describe()
        );
        self
    }

    /// The state report, which guest-netinit writes on success and on failure.
    pub fn report(&self) -> &NetinitReport {
        self.report
            .as_ref()
            .unwrap_or_else(|| panic!("no {STATE_FILE} written\n{}", self.describe()))
    }

    /// The events whose payload matches `pred`.
    pub fn events_where(&self, pred: impl Fn(&Event) -> bool) -> Vec<&ConsoleEvent> {
        self.events.iter().filter(|e| pred(&e.event)).collect()
    }

    /// Exit code, stdout, stderr and event lines, for assertion messages.
    pub fn describe(&self) -> String {
        format!(
            "exit: {:?}\n--- stdout\n{}--- stderr\n{}--- events ({} parsed, bad: {:?})\n{:#?}",
            self.code,
            self.stdout,
            self.stderr,
            self.events.len(),
            self.bad_event_lines,
            self.events
        )
    }
}

fn read_optional(path: &Path) -> Option<String> {
    match std::fs::read_to_string(path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => panic!("cannot read {}: {e}", path.display()),
    }
}

fn collect_files(base: &Path, dir: &Path, found: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_files(base, &path, found);
        } else if let Ok(rel) = path.strip_prefix(base) {
            found.push(rel.display().to_string());
        }
    }
}

impl Drop for NetinitRun {
    fn drop(&mut self) {
        if self.tmpfs {
            // Lazy, so a file still open somewhere does not keep the mount (and TempDir's
            // removal of the directory then finds it empty).
            let _ = Command::new("umount")
                .arg("-l")
                .arg(self.work.path())
                .status();
        }
    }
}
