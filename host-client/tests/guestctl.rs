//! The `guestctl` binary: outputs and exit codes (0 ok, 2 bad input, 3 timeout,
//! 4 diagnosed failure, 5 unreachable, 6 unhealthy).

mod common;

use common::netns::{in_new_netns, mount_sysfs};
use common::{free_port, health, serve};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::Arc;

fn guestctl(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_guestctl"))
        .args(args)
        .env_remove("GUESTCTL_TOKEN")
        .output()
        .expect("run guestctl")
}

fn code(o: &Output) -> i32 {
    o.status.code().expect("exited")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn console(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/consoles")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn help_documents_exit_codes() {
    let o = guestctl(&["--help"]);
    assert_eq!(code(&o), 0);
    for needle in ["3  timeout", "4  diagnosed failure", "2  bad input"] {
        assert!(stdout(&o).contains(needle), "{needle}: {}", stdout(&o));
    }
}

#[test]
fn diagnose_names_the_cause_and_exits_4() {
    let o = guestctl(&["diagnose", &console("oom-deadlocked.log")]);
    assert_eq!(code(&o), 4, "{}", stdout(&o));
    assert!(stdout(&o).contains("FATAL out-of-memory"), "{}", stdout(&o));
    assert!(stdout(&o).contains("mem_size_mib"), "{}", stdout(&o));

    let o = guestctl(&["--json", "diagnose", &console("healthy.log")]);
    assert_eq!(code(&o), 0, "{}", stdout(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["findings"].as_array().unwrap().len(), 0);
    assert_eq!(v["timeline"][3]["milestone"], "agent-listening");

    let o = guestctl(&["diagnose", &console("empty.log")]);
    assert_eq!(code(&o), 4);
    assert!(stdout(&o).contains("console=ttyS0"), "{}", stdout(&o));

    let o = guestctl(&["diagnose", "/nonexistent/console.log"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
}

#[test]
fn bootargs_builds_and_refuses_placeholders() {
    let o = guestctl(&[
        "bootargs",
        "--ip",
        "192.168.100.9/24",
        "--gw",
        "192.168.100.1",
        "--root",
        "/dev/vda",
        "--extra",
        "panic=1",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert_eq!(
        stdout(&o).trim(),
        "console=ttyS0 root=/dev/vda ip=192.168.100.9::192.168.100.1:255.255.255.0::eth0:off panic=1"
    );

    let o = guestctl(&[
        "bootargs",
        "--ip",
        "192.168.100.9/24",
        "--extra",
        "guest.vm_ip=undefined",
    ]);
    assert_eq!(code(&o), 2);
    assert!(
        stderr(&o).contains("guest.vm_ip: `undefined`"),
        "{}",
        stderr(&o)
    );

    let o = guestctl(&["bootargs", "--ip", "192.168.100.X/24"]);
    assert_eq!(code(&o), 2);
    assert!(stderr(&o).contains("192.168.100.X/24"), "{}", stderr(&o));

    let o = guestctl(&["bootargs", "--ip", "192.168.100.9/24", "--gw", "undefined"]);
    assert_eq!(code(&o), 2, "clap rejects it: {}", stderr(&o));

    let o = guestctl(&[
        "bootargs",
        "--ip",
        "192.168.100.9/24",
        "--firecracker",
        "--vm-id",
        "vm-9",
        "--kernel",
        "/srv/vmlinux",
    ]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["network-interfaces"][0]["guest_mac"], "06:00:C0:A8:64:09");
    assert_eq!(
        v["network-interfaces"][0]["host_dev_name"],
        host_client::tap::tap_name("vm-9")
    );
    assert_eq!(v["boot-source"]["kernel_image_path"], "/srv/vmlinux");
}

#[test]
fn tap_name() {
    let o = guestctl(&["tap", "name", "vm-9"]);
    assert_eq!(code(&o), 0);
    assert_eq!(stdout(&o).trim(), host_client::tap::tap_name("vm-9"));
    assert_eq!(code(&guestctl(&["tap", "name", ""])), 2);
}

#[test]
fn wait_timeout_is_3_with_refused_and_panic_is_4() {
    let addr = free_port().to_string();
    let o = guestctl(&["wait", &addr, "--timeout", "300ms"]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert!(stderr(&o).contains("refused"), "{}", stderr(&o));

    let o = guestctl(&[
        "--json",
        "wait",
        &addr,
        "--timeout",
        "60s",
        "--console",
        &console("no-init.log"),
    ]);
    assert_eq!(code(&o), 4, "{}", stdout(&o));
    let last = stdout(&o).lines().last().unwrap().to_string();
    let v: serde_json::Value = serde_json::from_str(&last).unwrap();
    assert_eq!(v["result"], "diagnosed");
    assert!(
        stdout(&o).contains(r#""progress":"milestone""#),
        "{}",
        stdout(&o)
    );

    let o = guestctl(&["wait", "not-an-address"]);
    assert_eq!(code(&o), 2);
}

#[test]
fn health_exit_codes() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (ok, degraded) = rt.block_on(async {
        let a = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let b = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (aa, ba) = (a.local_addr().unwrap(), b.local_addr().unwrap());
        serve(a, Arc::new(|_: &str, _| (200, health("ok"))));
        serve(b, Arc::new(|_: &str, _| (200, health("degraded"))));
        (aa, ba)
    });
    let o = guestctl(&["health", &ok.to_string()]);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    assert!(stdout(&o).contains("status: ok"));
    assert_eq!(code(&guestctl(&["health", &degraded.to_string()])), 6);
    let o = guestctl(&["--json", "health", &free_port().to_string()]);
    assert_eq!(code(&o), 5);
    assert!(
        stdout(&o).contains(r#""class":"refused""#),
        "{}",
        stdout(&o)
    );
    drop(rt);
}

#[test]
fn tap_gc_in_a_namespace() {
    let (dry, applied, after) = in_new_netns(|| {
        // this thread's private mount namespace gets its own /sys, which guestctl inherits
        mount_sysfs(Path::new("/sys"));
        let flags = (libc::IFF_TAP | libc::IFF_NO_PI) as u32;
        let fd = host_client::tap::open_tun("fcgkcli0", flags).unwrap();
        host_client::tap::set_persist(&fd, true).unwrap();
        drop(fd);
        let dry = guestctl(&["tap", "gc"]);
        let applied = guestctl(&["--json", "tap", "gc", "--apply"]);
        let after = Path::new("/sys/class/net/fcgkcli0").exists();
        (dry, applied, after)
    });
    assert_eq!(code(&dry), 0, "{}", stderr(&dry));
    assert!(stdout(&dry).contains("fcgkcli0"), "{}", stdout(&dry));
    assert!(
        stdout(&dry).contains("would remove fcgkcli0"),
        "{}",
        stdout(&dry)
    );
    assert_eq!(code(&applied), 0, "{}", stderr(&applied));
    let v: serde_json::Value = serde_json::from_str(&stdout(&applied)).unwrap();
    assert_eq!(v["removed"], serde_json::json!(["fcgkcli0"]));
    assert!(!after, "removed");
}

#[test]
fn diagnose_with_addr_adds_what_the_agent_reports() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let addr = rt.block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let a = l.local_addr().unwrap();
        serve(l, Arc::new(|_: &str, _| {
            (200, r#"{"status":"degraded","timestamp":"t","activeSessions":0,"services":[{"name":"xvfb","state":"crash-loop","required":true,"pid":null,"restarts":9,"lastExit":"exit 1","since":"t","rssBytes":null,"cpuSeconds":null}]}"#.to_string())
        }));
        a
    });
    let o = guestctl(&[
        "--json",
        "diagnose",
        &console("healthy.log"),
        "--addr",
        &addr.to_string(),
    ]);
    assert_eq!(code(&o), 4, "{}", stdout(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["findings"][0]["cause"], "service-crash-loop");
    assert_eq!(v["findings"][0]["subject"], "xvfb");
    assert_eq!(v["findings"][0]["line"], 0);

    let o = guestctl(&[
        "diagnose",
        &console("healthy.log"),
        "--addr",
        &free_port().to_string(),
    ]);
    assert_eq!(code(&o), 4);
    assert!(stdout(&o).contains("agent-unreachable"), "{}", stdout(&o));
    drop(rt);
}

#[test]
fn bootargs_firecracker_whole_vm_config_and_bad_fields() {
    let base = [
        "bootargs",
        "--ip",
        "192.168.100.9/24",
        "--firecracker",
        "--vm-id",
        "vm-9",
        "--kernel",
        "/srv/vmlinux",
        "--rootfs",
        "/srv/vm9.ext4",
        "--rootfs-read-only",
        "--vcpus",
        "4",
        "--mem-mib",
        "1024",
        "--vsock-cid",
        "7",
        "--vsock-uds",
        "/run/vm9/v.sock",
    ];
    let o = guestctl(&base);
    assert_eq!(code(&o), 0, "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(v["machine-config"]["vcpu_count"], 4);
    assert_eq!(v["machine-config"]["mem_size_mib"], 1024);
    assert_eq!(v["drives"][0]["path_on_host"], "/srv/vm9.ext4");
    assert_eq!(v["drives"][0]["is_root_device"], true);
    assert_eq!(v["drives"][0]["is_read_only"], true);
    assert_eq!(v["vsock"]["guest_cid"], 7);
    assert_eq!(v["vsock"]["uds_path"], "/run/vm9/v.sock");
    for (extra, want) in [
        (&["--vsock-cid", "2"][..], "vsock.guest_cid: 2 is reserved"),
        (&["--vcpus", "0"][..], "machine-config.vcpu_count: 0"),
        (
            &["--min-mem-mib", "2048"][..],
            "machine-config.mem_size_mib: 1024 MiB is below the 2048 MiB",
        ),
        (
            &["--taken-cid", "7"][..],
            "vsock.guest_cid: 7 is used by both",
        ),
    ] {
        let mut args = base.to_vec();
        match args.iter().position(|a| *a == extra[0]) {
            Some(i) => args[i + 1] = extra[1],
            None => args.extend_from_slice(extra),
        }
        let o = guestctl(&args);
        assert_eq!(code(&o), 2, "{extra:?}: {}", stderr(&o));
        assert!(stderr(&o).contains(want), "{extra:?}: {}", stderr(&o));
    }
}
