//! Init mode as PID 1, for real: the binary runs as PID 1 of a new PID namespace, chrooted
//! into a temp root that has only empty /proc /sys /dev /run (and the host's /usr bound in
//! for a shell), in new mount and network namespaces. It must mount the four filesystems,
//! run, and exec the next init with the init arguments and its own PID; with the next init
//! missing it must say so on the console and power off (in a PID namespace the kernel turns
//! that into SIGINT for the namespace's init). Needs root; touches nothing outside the
//! namespaces (the mounts live and die in the test's mount namespace).

use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::Command;

fn write(root: &Path, rel: &str, text: &str, mode: u32) {
    let p = root.join(rel);
    std::fs::write(&p, text).unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A root with the binary at /guest-netinit, the usr-merged symlinks, empty mount points.
fn rootfs(cmdline: &str) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    let r = d.path();
    for dir in ["proc", "sys", "dev", "run", "out", "usr", "etc"] {
        std::fs::create_dir(r.join(dir)).unwrap();
    }
    for l in ["bin", "lib", "lib64", "sbin"] {
        symlink(format!("usr/{l}"), r.join(l)).unwrap();
    }
    std::fs::copy(env!("CARGO_BIN_EXE_guest-netinit"), r.join("guest-netinit")).unwrap();
    write(r, "cmdline", cmdline, 0o644);
    write(
        r,
        "next-init",
        "#!/bin/sh\n{ echo \"pid=$$\"; echo \"args=$*\"; echo \"lo=$(cat /sys/class/net/lo/flags)\"; cat /proc/self/mountinfo; } > /out/marker\n\
         cp /run/guest-netinit/state.json /out/state.json\n",
        0o755,
    );
    d
}

/// Runs the binary as PID 1 in the namespaces; returns its status and stdout+stderr.
fn boot(root: &Path, init_args: &[&str]) -> (std::process::ExitStatus, String) {
    let script = r#"set -e
mount --rbind /usr "$1/usr"
root="$1"; shift
exec unshare --pid --net --fork --root="$root" /guest-netinit init --cmdline /cmdline \
  --events /out/events --console /out/console --no-probe -- "$@""#;
    let out = Command::new("unshare")
        .args([
            "--mount",
            "--propagation",
            "private",
            "--",
            "sh",
            "-c",
            script,
            "sh",
        ])
        .arg(root)
        .args(init_args)
        .output()
        .expect("unshare");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status, text)
}

#[test]
fn mounts_then_execs_the_next_init_with_its_arguments_as_pid_1() {
    let d = rootfs("console=ttyS0 quiet guest_netinit.next=/next-init\n");
    let (status, out) = boot(d.path(), &["single", "x y"]);
    assert!(status.success(), "{status:?}\n{out}");
    let marker = std::fs::read_to_string(d.path().join("out/marker"))
        .unwrap_or_else(|e| panic!("next init did not run: {e}\n{out}"));
    let mut lines = marker.lines();
    assert_eq!(
        lines.next(),
        Some("pid=1"),
        "exec must keep PID 1\n{marker}"
    );
    assert_eq!(lines.next(), Some("args=single x y"), "{marker}");
    // lo is up in the new network namespace (it starts down): IFF_UP is bit 0 of its flags
    let lo = lines.next().and_then(|l| l.strip_prefix("lo=0x"));
    let flags = lo.and_then(|f| u32::from_str_radix(f, 16).ok());
    assert_eq!(
        flags.map(|f| f & 1),
        Some(1),
        "lo not up: {lo:?}\n{marker}\n{out}"
    );
    assert!(out.contains("lo up ("), "{out}");
    let fs_at = |target: &str| {
        marker
            .lines()
            .find(|l| l.split(' ').nth(4) == Some(target))
            .and_then(|l| l.split(" - ").nth(1))
            .and_then(|rest| rest.split(' ').next())
            .map(str::to_string)
    };
    assert_eq!(fs_at("/proc").as_deref(), Some("proc"), "{marker}");
    assert_eq!(fs_at("/sys").as_deref(), Some("sysfs"), "{marker}");
    assert_eq!(fs_at("/dev").as_deref(), Some("devtmpfs"), "{marker}");
    assert_eq!(fs_at("/run").as_deref(), Some("tmpfs"), "{marker}");
    // the network run happened (nothing to do here) and left its state in the new /run
    let state = std::fs::read_to_string(d.path().join("out/state.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(v["outcome"], "nothing-to-do", "{state}");
    assert!(out.contains("exec /next-init single x y"), "{out}");
    // none of it leaked into the test's own mount namespace
    assert!(!d.path().join("proc/self").exists());
}

#[test]
fn missing_next_init_is_said_on_the_console_then_power_off() {
    let d = rootfs("guest_netinit.next=/nope\n");
    let (status, out) = boot(d.path(), &[]);
    // reboot(RB_POWER_OFF) in a PID namespace: the kernel kills its init with SIGINT.
    assert_eq!(status.signal(), Some(libc::SIGINT), "{status:?}\n{out}");
    let console = std::fs::read_to_string(d.path().join("out/console")).unwrap();
    for attempt in 1..=3 {
        assert!(
            console.contains(&format!(
                "the next init is missing: /nope not found (attempt {attempt}/3)"
            )),
            "{console}"
        );
    }
    assert!(console.contains("powering off"), "{console}");
    let events = std::fs::read_to_string(d.path().join("out/events")).unwrap();
    assert!(
        events.contains("<3>guest-netinit init: the next init is missing"),
        "{events}"
    );
}
