use super::*;

fn cmd(text: &str) -> KernelCmdline {
    KernelCmdline::parse(text)
}

#[test]
fn mount_plan_is_proc_sys_dev_run_with_safe_flags() {
    let plan = mount_plan();
    let targets: Vec<_> = plan.iter().map(|m| (m.target, m.fstype)).collect();
    assert_eq!(
        targets,
        vec![
            ("/proc", "proc"),
            ("/sys", "sysfs"),
            ("/dev", "devtmpfs"),
            ("/run", "tmpfs")
        ]
    );
    for m in &plan {
        assert_ne!(m.flags & libc::MS_NOSUID, 0, "{m:?}");
    }
    // device nodes only on /dev
    assert_eq!(plan[2].flags & libc::MS_NODEV, 0);
    assert_ne!(plan[3].flags & libc::MS_NODEV, 0);
}

#[test]
fn already_mounted_filesystems_are_skipped() {
    let info = "22 1 0:21 / /proc rw,nosuid - proc proc rw\n\
                23 1 0:22 / /sys rw - sysfs sysfs rw\n\
                24 1 0:5 / /dev\\040x rw - devtmpfs udev rw\n";
    let mounted = mount_points(info);
    assert!(mounted.contains("/dev x"), "{mounted:?}");
    let plan = mount_plan();
    let need: Vec<_> = mounts_needed(&plan, &mounted)
        .iter()
        .map(|m| m.target)
        .collect();
    assert_eq!(need, vec!["/dev", "/run"]);
    assert_eq!(mounts_needed(&plan, &HashSet::new()).len(), 4);
}

#[test]
fn params_from_the_cmdline() {
    let p = InitParams::from_cmdline(&cmd(
        "console=ttyS0 init=/sbin/guest-netinit rd.driver.pre=virtio_pci,virtio-net \
         modules-load=virtio_blk,,virtio_net rd.modules-load=af_packet guest_netinit.next=/lib/systemd/systemd",
    ));
    assert_eq!(
        p.modules,
        vec!["virtio_pci", "virtio_net", "virtio_blk", "af_packet"]
    );
    assert_eq!(p.next.as_deref(), Some("/lib/systemd/systemd"));
    assert_eq!(p.next_candidates(), vec!["/lib/systemd/systemd"]);
    let d = InitParams::from_cmdline(&cmd("quiet guest_netinit.next="));
    assert_eq!(d.next, None);
    assert_eq!(
        d.next_candidates(),
        vec!["/sbin/init", "/etc/init", "/bin/init"]
    );
    assert!(d.modules.is_empty());
}

#[test]
fn next_init_resolution_and_arguments() {
    let c: Vec<String> = DEFAULT_NEXT.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        resolve_next(&c, |p| p == "/bin/init" || p == "/etc/init"),
        Some("/etc/init".to_string())
    );
    assert_eq!(resolve_next(&c, |_| false), None);
    assert_eq!(
        next_argv("/sbin/init", &["single".into(), "--".into(), "x y".into()]),
        vec!["/sbin/init", "single", "--", "x y"]
    );
    assert_eq!(next_argv("/sbin/init", &[]), vec!["/sbin/init"]);
}

#[test]
fn init_arguments() {
    let a = |v: &[&str]| parse_args(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>());
    let o = a(&[]).unwrap();
    assert_eq!(
        o.run,
        RunOptions {
            module_grace: Duration::ZERO,
            ..RunOptions::default()
        },
        "init mode: no udev, so no grace before loading the NIC's driver"
    );
    assert_eq!(RunOptions::default().module_grace, crate::run::MODULE_GRACE);
    assert!(o.init_args.is_empty());
    assert_eq!(o.console, PathBuf::from(CONSOLE));
    let o = a(&[
        "--cmdline",
        "/c",
        "--console=/out/con",
        "--no-probe",
        "--",
        "single",
        "--cmdline",
    ])
    .unwrap();
    assert_eq!(o.run.cmdline, Some("/c".into()));
    assert!(!o.run.probe);
    assert_eq!(o.console, PathBuf::from("/out/con"));
    assert_eq!(o.init_args, vec!["single", "--cmdline"]);
    assert!(a(&["--bogus"]).unwrap_err().contains("--bogus"));
    assert!(a(&["--console"])
        .unwrap_err()
        .contains("--console needs a value"));
}

/// A panic in init mode execs the next init (here `/bin/echo exec-ok`) instead of dying. Runs
/// itself as a child process (the hook replaces the process image).
#[test]
fn a_panic_execs_the_next_init() {
    if let Some(dir) = std::env::var_os("GKT_INIT_PANIC_CHILD") {
        let dir = PathBuf::from(dir);
        let params = InitParams {
            next: Some("/bin/echo".into()),
            modules: vec![],
        };
        exec_next_on_panic(
            params,
            vec!["exec-ok".into(), "single".into()],
            dir.join("kmsg"),
            dir.join("console"),
        );
        panic!("boom in the run");
    }
    let d = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "init::tests::a_panic_execs_the_next_init",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("GKT_INIT_PANIC_CHILD", d.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("exec-ok single"), "{stdout}");
    let console = std::fs::read_to_string(d.path().join("console")).unwrap();
    assert!(console.contains("internal error: "), "{console}");
    assert!(console.contains("boom in the run"), "{console}");
    let kmsg = std::fs::read_to_string(d.path().join("kmsg")).unwrap();
    assert!(
        kmsg.contains("<3>guest-netinit init: internal error"),
        "{kmsg}"
    );
    assert!(
        kmsg.contains("<5>guest-netinit init: exec /bin/echo exec-ok single"),
        "{kmsg}"
    );
}

#[test]
fn pid1_fallback_keeps_the_next_inits_arguments_and_says_why() {
    let args: Vec<String> = ["--bogus", "--", "single", "x"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let err = parse_args(&args).unwrap_err();
    let o = fallback(&args, &err);
    assert_eq!(o.init_args, vec!["single".to_string(), "x".to_string()]);
    assert_eq!(o.run.module_grace, Duration::ZERO);
    let notice = o.notice.expect("a notice");
    assert!(notice.contains("--bogus"), "{notice}");
    let o = fallback(&["stray".to_string()], "bad");
    assert_eq!(o.init_args, vec!["stray".to_string()]);
    assert_eq!(parse_args(&[]).unwrap().notice, None);
}
