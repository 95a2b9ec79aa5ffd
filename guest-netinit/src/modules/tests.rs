//! Module resolution and device detection over temp-dir trees (fake sysfs, fake
//! modules.dep, generated ELF modules). Loading is recorded, never done: these tests
//! must not load anything into the machine running them.

use super::*;
use crate::system::{ModuleError, Modules};
use std::sync::{Arc, Mutex};
use tempfile::TempDir;

const REL: &str = "6.1.0-test";

struct Tree {
    tmp: TempDir,
}

impl Tree {
    fn new() -> Tree {
        Tree {
            tmp: tempfile::tempdir().unwrap(),
        }
    }
    fn root(&self) -> &Path {
        self.tmp.path()
    }
    fn path(&self, rel: &str) -> PathBuf {
        self.root().join(rel)
    }
    fn write(&self, rel: &str, bytes: &[u8]) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }
    fn link(&self, rel: &str, target: &str) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(target, p).unwrap();
    }
    fn moddir(&self) -> String {
        format!("lib/modules/{REL}")
    }
    /// A module file under the module dir whose .modinfo says `depends=<deps>`.
    fn module(&self, rel: &str, name: &str, deps: &str) {
        let info = format!("license=GPL\0depends={deps}\0name={name}\0");
        let ko = modinfo::fake_module(true, true, info.as_bytes());
        self.write(&format!("{}/{rel}", self.moddir()), &ko);
    }
    fn modules(&self) -> KernelModules {
        KernelModules::new(self.root(), &self.path("sys"), REL.into())
            .with_proc_modules(&self.path("proc/modules"))
    }
}

/// Debian 12's virtio_net dependency chain, as files, without modules.dep.
fn debian_like(t: &Tree) {
    t.module("kernel/drivers/virtio/virtio.ko", "virtio", "");
    t.module("kernel/drivers/virtio/virtio_ring.ko", "virtio_ring", "");
    t.module("kernel/net/core/failover.ko", "failover", "");
    t.module(
        "kernel/drivers/net/net_failover.ko",
        "net_failover",
        "failover",
    );
    t.module(
        "kernel/drivers/net/virtio_net.ko",
        "virtio_net",
        "virtio_ring,virtio,net_failover",
    );
}

const MODULES_DEP: &str = "\
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/net/core/failover.ko:
kernel/drivers/net/net_failover.ko: kernel/net/core/failover.ko
kernel/drivers/net/virtio_net.ko: kernel/drivers/virtio/virtio_ring.ko kernel/drivers/virtio/virtio.ko kernel/drivers/net/net_failover.ko kernel/net/core/failover.ko
";

fn names(files: &[ModuleFile]) -> Vec<&str> {
    files.iter().map(|f| f.name.as_str()).collect()
}

const EXPECTED_ORDER: [&str; 5] = [
    "virtio_ring",
    "virtio",
    "failover",
    "net_failover",
    "virtio_net",
];

#[test]
fn resolves_from_modules_dep_deepest_first() {
    let t = Tree::new();
    debian_like(&t);
    t.write(
        &format!("{}/modules.dep", t.moddir()),
        MODULES_DEP.as_bytes(),
    );
    let files = t.modules().resolve("virtio_net").unwrap();
    assert_eq!(names(&files), EXPECTED_ORDER);
    assert_eq!(
        files[4].path,
        t.path(&format!("{}/kernel/drivers/net/virtio_net.ko", t.moddir()))
    );
    assert!(files.iter().all(|f| !f.compressed));
}

#[test]
fn resolves_from_modinfo_without_modules_dep() {
    let t = Tree::new();
    debian_like(&t);
    // With modules.order (Debian ships it) and without (a walk of the tree).
    let files = t.modules().resolve("virtio_net").unwrap();
    assert_eq!(names(&files), EXPECTED_ORDER);
    t.write(
        &format!("{}/modules.order", t.moddir()),
        b"kernel/net/core/failover.ko\nkernel/drivers/net/net_failover.ko\n\
kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_ring.ko\n\
kernel/drivers/net/virtio_net.ko\n",
    );
    let files = t.modules().resolve("virtio-net").unwrap();
    assert_eq!(names(&files), EXPECTED_ORDER);
    assert_eq!(
        files[3].path,
        t.path(&format!(
            "{}/kernel/drivers/net/net_failover.ko",
            t.moddir()
        ))
    );
}

#[test]
fn dash_and_underscore_are_the_same_module() {
    let t = Tree::new();
    t.module("kernel/drivers/virtio/virtio-ring.ko", "virtio_ring", "");
    t.module(
        "kernel/drivers/net/virtio_net.ko",
        "virtio_net",
        "virtio_ring",
    );
    let files = t.modules().resolve("virtio_net").unwrap();
    assert_eq!(names(&files), ["virtio_ring", "virtio_net"]);
    assert!(files[0].path.ends_with("virtio-ring.ko"));
}

#[test]
fn missing_module_names_the_exact_path_from_modules_dep() {
    let t = Tree::new();
    debian_like(&t);
    t.write(
        &format!("{}/modules.dep", t.moddir()),
        MODULES_DEP.as_bytes(),
    );
    let ko = t.path(&format!("{}/kernel/drivers/net/virtio_net.ko", t.moddir()));
    std::fs::remove_file(&ko).unwrap();
    let err = t.modules().resolve("virtio_net").unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "kernel module virtio_net is missing: {} does not exist",
            ko.display()
        )
    );
}

#[test]
fn missing_dependency_is_named_too() {
    let t = Tree::new();
    debian_like(&t);
    t.write(
        &format!("{}/modules.dep", t.moddir()),
        MODULES_DEP.as_bytes(),
    );
    let ko = t.path(&format!("{}/kernel/net/core/failover.ko", t.moddir()));
    std::fs::remove_file(&ko).unwrap();
    match t.modules().resolve("virtio_net").unwrap_err() {
        ModuleError::Missing { module, path } => {
            assert_eq!(module, "failover");
            assert_eq!(path, ko.display().to_string());
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn missing_without_modules_dep_names_the_module_dir() {
    let t = Tree::new();
    t.module("kernel/drivers/virtio/virtio.ko", "virtio", "");
    let err = t.modules().resolve("virtio_net").unwrap_err();
    let dir = t.path(&t.moddir());
    assert_eq!(
        err.to_string(),
        format!(
            "kernel module virtio_net is missing: {}/**/virtio_net.ko does not exist",
            dir.display()
        )
    );
    // Likewise a module modules.dep does not list.
    t.write(
        &format!("{}/modules.dep", t.moddir()),
        b"kernel/drivers/virtio/virtio.ko:\n",
    );
    let err = t.modules().resolve("virtio_net").unwrap_err();
    assert!(
        err.to_string()
            .contains("virtio_net.ko (not in modules.dep)"),
        "{err}"
    );
}

#[test]
fn no_module_dir_for_the_running_kernel() {
    let t = Tree::new();
    t.module("kernel/x.ko", "x", ""); // modules exist, for another release
    let m = KernelModules::new(t.root(), &t.path("sys"), "9.9.9-other".into());
    match m.resolve("virtio_net").unwrap_err() {
        ModuleError::NoModulesDir {
            kernel,
            dir,
            module,
            path,
        } => {
            let want_dir = t.path("lib/modules/9.9.9-other");
            assert_eq!(kernel, "9.9.9-other");
            assert_eq!(dir, want_dir.display().to_string());
            assert_eq!(module, "virtio_net");
            assert_eq!(
                path,
                want_dir
                    .join("kernel/drivers/net/virtio_net.ko")
                    .display()
                    .to_string()
            );
        }
        other => panic!("{other:?}"),
    }
    // An empty directory is as good as none.
    std::fs::create_dir_all(t.path("lib/modules/9.9.9-other")).unwrap();
    assert!(matches!(
        m.resolve("virtio-pci"),
        Err(ModuleError::NoModulesDir { module, path, .. })
            if module == "virtio_pci" && path.ends_with("/9.9.9-other/kernel/drivers/virtio/virtio_pci.ko")
    ));
}

#[test]
fn expected_paths_are_the_kernel_build_layout() {
    let dir = Path::new("/lib/modules/6.1.0-28-cloud-amd64");
    assert_eq!(
        expected_path(dir, "virtio_net"),
        "/lib/modules/6.1.0-28-cloud-amd64/kernel/drivers/net/virtio_net.ko"
    );
    assert_eq!(
        expected_path(dir, "virtio-pci"),
        "/lib/modules/6.1.0-28-cloud-amd64/kernel/drivers/virtio/virtio_pci.ko"
    );
    assert_eq!(
        expected_path(dir, "e1000"),
        "/lib/modules/6.1.0-28-cloud-amd64/**/e1000.ko"
    );
}

#[test]
fn builtin_modules_are_not_loaded() {
    let t = Tree::new();
    debian_like(&t);
    t.write(
        &format!("{}/modules.builtin", t.moddir()),
        b"kernel/drivers/virtio/virtio.ko\nkernel/drivers/virtio/virtio_ring.ko\n",
    );
    let files = t.modules().resolve("virtio_net").unwrap();
    assert_eq!(names(&files), ["failover", "net_failover", "virtio_net"]);
    t.write(
        &format!("{}/modules.builtin", t.moddir()),
        b"kernel/drivers/net/virtio_net.ko\n",
    );
    assert_eq!(t.modules().resolve("virtio_net").unwrap(), vec![]);
}

#[test]
fn dependency_cycle_is_an_error() {
    let t = Tree::new();
    t.module("kernel/a.ko", "a", "b");
    t.module("kernel/b.ko", "b", "a");
    let err = t.modules().resolve("a").unwrap_err();
    assert!(err.to_string().contains("cycle: a -> b -> a"), "{err}");
}

#[test]
fn garbage_module_file_is_reported_with_its_path() {
    let t = Tree::new();
    t.write(
        &format!("{}/kernel/drivers/net/virtio_net.ko", t.moddir()),
        b"not elf",
    );
    match t.modules().resolve("virtio_net").unwrap_err() {
        ModuleError::BadModuleFile { path, message } => {
            assert!(path.ends_with("kernel/drivers/net/virtio_net.ko"), "{path}");
            assert_eq!(message, "not an ELF file");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn compressed_modules_need_modules_dep_and_get_the_kernel_flag() {
    let t = Tree::new();
    t.write(
        &format!("{}/kernel/drivers/net/virtio_net.ko.xz", t.moddir()),
        b"xz",
    );
    // Without modules.dep the dependencies cannot be read from a compressed file.
    let err = t.modules().resolve("virtio_net").unwrap_err();
    assert!(err.to_string().contains("run depmod"), "{err}");
    t.write(
        &format!("{}/modules.dep", t.moddir()),
        b"kernel/drivers/net/virtio_net.ko.xz:\n",
    );
    let (m, calls) = recording(t.modules(), None);
    assert_eq!(m.load_with_deps("virtio_net").unwrap(), ["virtio_net"]);
    let calls = calls.lock().unwrap();
    assert_eq!(calls.len(), 1);
    assert!(calls[0].0.ends_with("virtio_net.ko.xz"));
    assert_eq!(calls[0].1, MODULE_INIT_COMPRESSED_FILE);
}

type Calls = Arc<Mutex<Vec<(PathBuf, u32)>>>;

/// A loader that records each call; answers `fail.1` for the module file named `fail.0`.
fn recording(m: KernelModules, fail: Option<(&'static str, i32)>) -> (KernelModules, Calls) {
    let calls: Calls = Arc::default();
    let c = calls.clone();
    let m = m.with_loader(Box::new(move |path: &Path, _f: &File, flags: u32| {
        c.lock().unwrap().push((path.to_path_buf(), flags));
        match fail {
            Some((name, errno)) if path.to_string_lossy().contains(name) => {
                Err(io::Error::from_raw_os_error(errno))
            }
            _ => Ok(()),
        }
    }));
    (m, calls)
}

#[test]
fn load_skips_loaded_modules_and_treats_eexist_as_loaded() {
    let t = Tree::new();
    debian_like(&t);
    t.write(
        "proc/modules",
        b"virtio_ring 45056 3 virtio_net,virtio_pci, Live 0x0000000000000000\n",
    );
    let (m, calls) = recording(t.modules(), Some(("/virtio.ko", libc::EEXIST)));
    let loaded = m.load_with_deps("virtio_net").unwrap();
    assert_eq!(loaded, ["failover", "net_failover", "virtio_net"]);
    let calls = calls.lock().unwrap();
    let called: Vec<_> = calls
        .iter()
        .map(|(p, _)| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        called,
        [
            "virtio.ko",
            "failover.ko",
            "net_failover.ko",
            "virtio_net.ko"
        ]
    );
    assert!(calls.iter().all(|(_, flags)| *flags == 0));
}

#[test]
fn load_failure_names_module_and_path_and_stops() {
    let t = Tree::new();
    debian_like(&t);
    let (m, calls) = recording(t.modules(), Some(("net_failover", libc::ENOEXEC)));
    match m.load_with_deps("virtio_net").unwrap_err() {
        ModuleError::Load {
            module,
            path,
            source,
        } => {
            assert_eq!(module, "net_failover");
            assert!(
                path.ends_with("kernel/drivers/net/net_failover.ko"),
                "{path}"
            );
            assert_eq!(source.raw_os_error(), Some(libc::ENOEXEC));
        }
        other => panic!("{other:?}"),
    }
    // virtio_net was not attempted after its dependency failed.
    assert_eq!(calls.lock().unwrap().len(), 4);
}

#[test]
fn virtio_bus_device_without_driver() {
    let t = Tree::new();
    t.write("sys/bus/virtio/devices/virtio0/device", b"0x0002\n"); // block, no driver
    t.write("sys/bus/virtio/devices/virtio1/device", b"0x0001\n");
    t.link(
        "sys/bus/virtio/devices/virtio1/driver",
        "../../drivers/virtio_net",
    );
    let m = t.modules();
    assert!(!m.virtio_net_without_driver());
    assert_eq!(
        m.virtio_net_devices()[0].driver.as_deref(),
        Some("virtio_net")
    );
    t.write("sys/bus/virtio/devices/virtio2/device", b"0x0001\n");
    assert!(m.virtio_net_without_driver());
    assert_eq!(m.drivers_needed(), ["virtio_net"]);
}

#[test]
fn pci_function_without_driver_needs_virtio_pci_too() {
    let t = Tree::new();
    t.write("sys/bus/pci/devices/0000:00:03.0/vendor", b"0x1af4\n");
    t.write("sys/bus/pci/devices/0000:00:03.0/device", b"0x1041\n");
    t.write("sys/bus/pci/devices/0000:00:04.0/vendor", b"0x8086\n");
    t.write("sys/bus/pci/devices/0000:00:04.0/device", b"0x1000\n");
    let m = t.modules();
    assert!(m.virtio_net_without_driver());
    assert_eq!(m.drivers_needed(), ["virtio_pci", "virtio_net"]);
    assert_eq!(Modules::modules_needed(&m), ["virtio_pci", "virtio_net"]);
    // virtio-pci bound, its virtio child still without virtio_net.
    t.link(
        "sys/bus/pci/devices/0000:00:03.0/driver",
        "../../../bus/pci/drivers/virtio-pci",
    );
    t.write("sys/bus/virtio/devices/virtio0/device", b"0x0001\n");
    assert!(m.virtio_net_without_driver());
    assert_eq!(m.drivers_needed(), ["virtio_net"]);
    t.link(
        "sys/bus/virtio/devices/virtio0/driver",
        "../../drivers/virtio_net",
    );
    assert!(!m.virtio_net_without_driver());
    assert!(m.drivers_needed().is_empty());
}

#[test]
fn no_sysfs_means_no_device() {
    let t = Tree::new();
    assert!(!t.modules().virtio_net_without_driver());
    assert!(t.modules().virtio_net_devices().is_empty());
}

#[test]
fn running_release_matches_proc() {
    let proc = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    assert_eq!(KernelModules::running_release().unwrap(), proc.trim());
}

#[test]
fn modules_present_in_sys_module_are_not_loaded_again() {
    let t = Tree::new();
    debian_like(&t);
    std::fs::create_dir_all(t.path("sys/module/virtio")).unwrap();
    std::fs::create_dir_all(t.path("sys/module/failover")).unwrap();
    let (m, calls) = recording(t.modules(), None);
    assert_eq!(
        m.load_with_deps("virtio_net").unwrap(),
        ["virtio_ring", "net_failover", "virtio_net"]
    );
    assert_eq!(calls.lock().unwrap().len(), 3);
}

#[test]
fn wrong_kernel_module_says_which_kernel_it_was_built_for() {
    let t = Tree::new();
    let info =
        b"depends=\0name=virtio_net\0vermagic=6.1.0-47-cloud-amd64 SMP preempt mod_unload \0";
    t.write(
        &format!("{}/kernel/drivers/net/virtio_net.ko", t.moddir()),
        &modinfo::fake_module(true, true, info),
    );
    let (m, _calls) = recording(t.modules(), Some(("virtio_net", libc::ENOEXEC)));
    let err = m.load_with_deps("virtio_net").unwrap_err().to_string();
    assert!(
        err.ends_with("; the module was built for kernel 6.1.0-47-cloud-amd64, not 6.1.0-test"),
        "{err}"
    );
    assert!(err.starts_with("loading virtio_net from "), "{err}");
}
