//! Module resolution against a real Debian kernel package (which ships without
//! modules.dep). Ignored by default because it needs the package unpacked somewhere:
//!
//!   apt-get download linux-image-6.1.0-<n>-cloud-amd64
//!   dpkg-deb -x linux-image-*.deb /tmp/kroot
//!   GKT_KERNEL_ROOT=/tmp/kroot cargo test -p guest-netinit --test modules_debian -- --ignored
//!
//! Nothing is loaded: the loader records the files instead of calling finit_module.

use guest_netinit::modules::KernelModules;
use guest_netinit::system::Modules;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

#[test]
#[ignore = "needs GKT_KERNEL_ROOT: an unpacked Debian linux-image package"]
fn debian_cloud_kernel_virtio_net_from_modinfo() {
    let root = PathBuf::from(
        std::env::var("GKT_KERNEL_ROOT").expect("set GKT_KERNEL_ROOT (see this file's doc)"),
    );
    let release = std::fs::read_dir(root.join("lib/modules"))
        .expect("ROOT/lib/modules")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .next()
        .expect("one kernel release");
    let dir = root.join("lib/modules").join(&release);
    assert!(
        !dir.join("modules.dep").exists(),
        "this test is about packages without modules.dep"
    );
    let calls: Arc<Mutex<Vec<(PathBuf, u32)>>> = Arc::default();
    let c = calls.clone();
    let empty = tempfile::NamedTempFile::new().unwrap();
    let m = KernelModules::new(&root, Path::new("/nonexistent-sys"), release)
        .with_proc_modules(empty.path())
        .with_loader(Box::new(move |p, _f, flags| {
            c.lock().unwrap().push((p.to_path_buf(), flags));
            Ok(())
        }));
    let loaded = m.load_with_deps("virtio_net").unwrap();
    // Debian 12's cloud kernel: virtio_net depends on virtio_ring, virtio, net_failover
    // (which depends on failover).
    assert_eq!(loaded.last().map(String::as_str), Some("virtio_net"));
    for dep in ["virtio", "virtio_ring", "failover", "net_failover"] {
        let pos = |n: &str| loaded.iter().position(|l| l == n);
        assert!(pos(dep).is_some(), "{dep} missing from {loaded:?}");
        assert!(pos(dep) < pos("virtio_net"));
    }
    let pos = |n: &str| loaded.iter().position(|l| l == n).unwrap();
    assert!(pos("failover") < pos("net_failover"));
    let calls = calls.lock().unwrap();
    assert_eq!(
        calls.last().unwrap().0,
        dir.join("kernel/drivers/net/virtio_net.ko")
    );
    assert!(calls.iter().all(|(_, flags)| *flags == 0));
}
