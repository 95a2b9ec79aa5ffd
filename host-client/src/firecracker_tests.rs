use super::*;
use crate::bootargs::static_ip;

fn vm(cid: u32) -> VmConfig {
    VmConfig {
        boot_args: BootArgs::new()
            .console("ttyS0")
            .root("/dev/vda")
            .ip(static_ip("192.168.100.9/24", None, &[], None, Some("eth0")).unwrap()),
        kernel_image_path: "/srv/vmlinux".into(),
        host_dev_name: "fcgk-vm9".into(),
        machine: MachineConfig {
            vcpu_count: 2,
            mem_size_mib: 512,
        },
        drives: vec![Drive {
            drive_id: "rootfs".into(),
            path_on_host: "/srv/vm9.ext4".into(),
            is_root_device: true,
            is_read_only: false,
        }],
        vsock: Some(Vsock {
            guest_cid: cid,
            uds_path: "/run/vm9/v.sock".into(),
        }),
        min_mem_mib: Some(256),
    }
}

#[test]
fn one_document_with_firecrackers_field_names() {
    let v = vm(3).to_json().unwrap();
    assert_eq!(
        v["machine-config"],
        json!({"vcpu_count": 2, "mem_size_mib": 512})
    );
    assert_eq!(
        v["drives"],
        json!([{"drive_id": "rootfs", "path_on_host": "/srv/vm9.ext4", "is_root_device": true, "is_read_only": false}])
    );
    assert_eq!(
        v["vsock"],
        json!({"guest_cid": 3, "uds_path": "/run/vm9/v.sock"})
    );
    assert_eq!(v["boot-source"]["kernel_image_path"], "/srv/vmlinux");
    assert!(v["boot-source"]["boot_args"]
        .as_str()
        .unwrap()
        .contains("ip=192.168.100.9::"));
    assert_eq!(v["network-interfaces"][0]["host_dev_name"], "fcgk-vm9");
    let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "boot-source",
            "drives",
            "machine-config",
            "network-interfaces",
            "vsock"
        ]
    );
    let mut no_vsock = vm(3);
    no_vsock.vsock = None;
    assert!(no_vsock.to_json().unwrap().get("vsock").is_none());
}

#[test]
fn each_bad_field_is_named() {
    let err = |f: &dyn Fn(&mut VmConfig)| {
        let mut c = vm(3);
        f(&mut c);
        c.to_json().unwrap_err().to_string()
    };
    assert_eq!(
        err(&|c| c.machine.vcpu_count = 0),
        "machine-config.vcpu_count: 0 is not 1-32"
    );
    assert!(err(&|c| c.machine.vcpu_count = 33).starts_with("machine-config.vcpu_count: 33"));
    assert_eq!(
        err(&|c| c.machine.mem_size_mib = 128),
        "machine-config.mem_size_mib: 128 MiB is below the 256 MiB the image needs"
    );
    assert!(err(&|c| c.drives[0].is_root_device = false).starts_with("drives: no drive"));
    assert!(err(&|c| c.drives.clear()).starts_with("drives: no drive"));
    let two = err(&|c| {
        let mut d = c.drives[0].clone();
        d.drive_id = "data".into();
        c.drives.push(d);
    });
    assert_eq!(
        two,
        "drives: `rootfs` and `data` are both is_root_device = true"
    );
    let dup = err(&|c| {
        let mut d = c.drives[0].clone();
        d.is_root_device = false;
        c.drives.push(d);
    });
    assert!(
        dup.starts_with("drives[1].drive_id: `rootfs` is also"),
        "{dup}"
    );
    assert!(err(&|c| c.drives[0].drive_id = "a b".into()).starts_with("drives[0].drive_id"));
    assert!(
        err(&|c| c.drives[0].path_on_host = String::new()).starts_with("drives[0].path_on_host")
    );
    for cid in [0, 1, 2, u32::MAX] {
        assert!(
            err(&|c| c.vsock.as_mut().unwrap().guest_cid = cid).starts_with("vsock.guest_cid:"),
            "{cid}"
        );
    }
    assert!(
        err(&|c| c.vsock.as_mut().unwrap().uds_path = "v.sock".into())
            .starts_with("vsock.uds_path")
    );
    assert!(
        err(&|c| c.vsock.as_mut().unwrap().uds_path = format!("/{}", "a".repeat(100)))
            .starts_with("vsock.uds_path: 101 bytes")
    );
    // the boot args are still checked
    assert!(err(&|c| c.kernel_image_path = "a b".into()).contains("kernel_image_path"));
}

#[test]
fn duplicate_cids_across_vms_are_named() {
    let (a, b, c) = (vm(3), vm(4), vm(3));
    check_cids([("vm-a", &a), ("vm-b", &b)]).unwrap();
    let e = check_cids([("vm-a", &a), ("vm-b", &b), ("vm-c", &c)]).unwrap_err();
    assert_eq!(
        e.to_string(),
        "vsock.guest_cid: 3 is used by both `vm-a` and `vm-c`"
    );
}
