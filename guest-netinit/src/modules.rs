//! Kernel modules: noticing a virtio-net device that has no driver, and loading
//! `virtio_net` with its dependencies via `finit_module` — the old system's first outage
//! was an image whose kernel had no `virtio_net.ko`, and nobody was told. So a missing
//! module file is an error naming the exact path that was looked for.
//!
//! Dependencies come from `modules.dep` when the image has one, else from each module's
//! own `.modinfo` section (`modinfo.rs`): Debian's kernel package ships without
//! `modules.dep`, which depmod only generates in the package's postinst.

pub mod modinfo;

use crate::system::{ModuleError, Modules};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// `finit_module` flag: the file is compressed; the kernel (≥ 6.4) decompresses it.
pub const MODULE_INIT_COMPRESSED_FILE: u32 = 4;

const EXTENSIONS: [&str; 4] = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"];

/// Loads one module file: `(path, open file, finit_module flags)`. The real one is
/// `finit_module`; tests substitute a recorder so they never load into the test machine.
pub type Loader = Box<dyn Fn(&Path, &File, u32) -> io::Result<()>>;

/// A module file to load, in load order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModuleFile {
    /// Module name, `-` normalised to `_` (`virtio_net`).
    pub name: String,
    pub path: PathBuf,
    pub compressed: bool,
}

/// Where a virtio network device was seen, and which driver (if any) is bound to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtioNetDevice {
    /// The sysfs device directory (`/sys/bus/virtio/devices/virtio0`).
    pub path: PathBuf,
    /// True for the PCI function (1af4:1000/1041), false for the virtio-bus device.
    pub pci: bool,
    pub driver: Option<String>,
}

/// The modules of one kernel release inside a root directory (`/` in a VM, a temp dir or
/// a golden image in tests and `check`).
pub struct KernelModules {
    root: PathBuf,
    sys: PathBuf,
    proc_modules: PathBuf,
    release: String,
    loader: Loader,
}

impl KernelModules {
    /// Modules from `root/lib/modules/<kernel_release>`, devices from `sys` (`/sys`),
    /// loaded modules from `/proc/modules`, loading with `finit_module`.
    pub fn new(root: &Path, sys: &Path, kernel_release: String) -> Self {
        KernelModules {
            root: root.to_path_buf(),
            sys: sys.to_path_buf(),
            proc_modules: PathBuf::from("/proc/modules"),
            release: kernel_release,
            loader: Box::new(finit_module),
        }
    }

    /// Read the list of loaded modules from `path` instead of `/proc/modules`.
    pub fn with_proc_modules(mut self, path: &Path) -> Self {
        self.proc_modules = path.to_path_buf();
        self
    }

    /// Load with `loader` instead of `finit_module` (tests).
    pub fn with_loader(mut self, loader: Loader) -> Self {
        self.loader = loader;
        self
    }

    /// The running kernel's release (`uname -r`).
    pub fn running_release() -> io::Result<String> {
        // SAFETY: uname fills the zeroed struct; fields are NUL-terminated.
        let mut u: libc::utsname = unsafe { std::mem::zeroed() };
        if unsafe { libc::uname(&mut u) } != 0 {
            return Err(io::Error::last_os_error());
        }
        let bytes: Vec<u8> = u
            .release
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    pub fn release(&self) -> &str {
        &self.release
    }

    /// `ROOT/lib/modules/<release>`.
    pub fn module_dir(&self) -> PathBuf {
        self.root.join("lib/modules").join(&self.release)
    }

    /// Every virtio network device in sysfs: virtio-bus devices with device id 0x0001 and
    /// PCI functions 1af4:1000 (legacy) / 1af4:1041 (modern), with their bound driver.
    pub fn virtio_net_devices(&self) -> Vec<VirtioNetDevice> {
        let mut out = Vec::new();
        for dev in list_dir(&self.sys.join("bus/virtio/devices")) {
            if read_trimmed(&dev.join("device")).as_deref() == Some("0x0001") {
                out.push(VirtioNetDevice {
                    driver: driver_of(&dev),
                    path: dev,
                    pci: false,
                });
            }
        }
        for dev in list_dir(&self.sys.join("bus/pci/devices")) {
            let vendor = read_trimmed(&dev.join("vendor"));
            let device = read_trimmed(&dev.join("device"));
            if vendor.as_deref() == Some("0x1af4")
                && matches!(device.as_deref(), Some("0x1000") | Some("0x1041"))
            {
                out.push(VirtioNetDevice {
                    driver: driver_of(&dev),
                    path: dev,
                    pci: true,
                });
            }
        }
        out
    }

    /// The modules to load for the driverless virtio-net devices, in order:
    /// `virtio_pci` when a PCI function has no driver (no virtio device exists until it
    /// binds), then `virtio_net`. Empty when every device has its driver.
    pub fn drivers_needed(&self) -> Vec<&'static str> {
        let devices = self.virtio_net_devices();
        let mut out = Vec::new();
        if devices.iter().any(|d| d.pci && d.driver.is_none()) {
            out.push("virtio_pci");
        }
        if devices.iter().any(|d| d.driver.is_none()) {
            out.push("virtio_net");
        }
        out
    }

    /// Modules built into the kernel (`modules.builtin`), names normalised.
    pub fn builtin(&self) -> HashSet<String> {
        std::fs::read_to_string(self.module_dir().join("modules.builtin"))
            .map(|text| text.lines().filter_map(module_name_of_path).collect())
            .unwrap_or_default()
    }

    /// Modules currently loaded (`/proc/modules`), names normalised; empty when the file
    /// is absent (a kernel without module support).
    pub fn loaded(&self) -> HashSet<String> {
        std::fs::read_to_string(&self.proc_modules)
            .map(|text| {
                text.lines()
                    .filter_map(|l| l.split_whitespace().next())
                    .map(normalise)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The files to load for `name`, deepest dependency first, `name` last. Built-in
    /// modules are left out (there is nothing to load); loaded ones are kept (the caller
    /// skips them). Errors: no module dir, a missing file (with the path looked for), an
    /// unreadable module, or a dependency cycle.
    pub fn resolve(&self, name: &str) -> Result<Vec<ModuleFile>, ModuleError> {
        let dir = self.module_dir();
        let builtin = self.builtin();
        let want = normalise(name);
        if builtin.contains(&want) {
            return Ok(Vec::new());
        }
        let has_entries = std::fs::read_dir(&dir)
            .map(|mut d| d.next().is_some())
            .unwrap_or(false);
        if !has_entries {
            return Err(ModuleError::NoModulesDir {
                kernel: self.release.clone(),
                dir: dir.display().to_string(),
                path: expected_path(&dir, &want),
                module: want,
            });
        }
        let mut index = match std::fs::read_to_string(dir.join("modules.dep")) {
            Ok(text) => Index::from_modules_dep(&dir, &self.root, &text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Index::from_files(&dir),
            Err(e) => {
                return Err(ModuleError::BadModuleFile {
                    path: dir.join("modules.dep").display().to_string(),
                    message: e.to_string(),
                })
            }
        };
        let mut order = Vec::new();
        let mut done = HashSet::new();
        let mut stack = Vec::new();
        index.visit(&want, &builtin, &mut stack, &mut done, &mut order)?;
        Ok(order)
    }
}

impl Modules for KernelModules {
    fn virtio_net_without_driver(&self) -> bool {
        self.virtio_net_devices().iter().any(|d| d.driver.is_none())
    }

    fn modules_needed(&self) -> Vec<String> {
        let needed = self.drivers_needed();
        if needed.is_empty() {
            // Called when a device was seen without a driver; it may have bound since.
            vec!["virtio_net".to_string()]
        } else {
            needed.into_iter().map(str::to_string).collect()
        }
    }

    fn load_with_deps(&self, name: &str) -> Result<Vec<String>, ModuleError> {
        let files = self.resolve(name)?;
        let loaded = self.loaded();
        let mut done = Vec::new();
        for m in files {
            // /sys/module/<name> exists for loaded modules and for built-in ones with
            // parameters: either way there is nothing to load.
            if loaded.contains(&m.name) || self.sys.join("module").join(&m.name).is_dir() {
                continue;
            }
            let path = m.path.display().to_string();
            let load_err = |source| ModuleError::Load {
                module: m.name.clone(),
                path: path.clone(),
                source,
            };
            let file = File::open(&m.path).map_err(load_err)?;
            let flags = if m.compressed {
                MODULE_INIT_COMPRESSED_FILE
            } else {
                0
            };
            match (self.loader)(&m.path, &file, flags) {
                Ok(()) => done.push(m.name.clone()),
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
                Err(e) if m.compressed && e.raw_os_error() == Some(libc::EINVAL) => {
                    return Err(load_err(io::Error::new(
                        e.kind(),
                        format!(
                            "{e}; this kernel may be older than 6.4, which cannot load \
                             compressed modules: ship {} uncompressed",
                            m.name
                        ),
                    )));
                }
                Err(e) if e.raw_os_error() == Some(libc::ENOEXEC) => {
                    let Some(other) = built_for_other_kernel(&m.path, &self.release) else {
                        return Err(load_err(e));
                    };
                    let hint = format!(
                        "{e}; the module was built for kernel {other}, not {}",
                        self.release
                    );
                    return Err(load_err(io::Error::new(e.kind(), hint)));
                }
                Err(e) => return Err(load_err(e)),
            }
        }
        Ok(done)
    }
}

/// The kernel release in the module's `vermagic=` when it is not `release` (uncompressed
/// modules only): the usual reason for ENOEXEC.
fn built_for_other_kernel(path: &Path, release: &str) -> Option<String> {
    let bytes = std::fs::read(path).ok()?;
    let section = modinfo::modinfo_section(&bytes).ok()?;
    let vermagic = modinfo::entries(section)
        .into_iter()
        .find(|(k, _)| *k == "vermagic")?
        .1;
    let built_for = vermagic.split_whitespace().next()?;
    (built_for != release).then(|| built_for.to_string())
}

/// `finit_module(fd, "", flags)`.
pub fn finit_module(_path: &Path, file: &File, flags: u32) -> io::Result<()> {
    // SAFETY: valid fd, NUL-terminated empty parameter string.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_finit_module,
            file.as_raw_fd(),
            c"".as_ptr(),
            flags as libc::c_uint,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Where module files are and what each depends on.
struct Index {
    dir: PathBuf,
    /// From modules.dep: name → (file, dependency files). None: no modules.dep.
    dep: Option<HashMap<String, (PathBuf, Vec<PathBuf>)>>,
    /// Without modules.dep: name → file path minus extension, from modules.order.
    order: Option<HashMap<String, PathBuf>>,
    /// Without modules.dep, when modules.order does not know a module: a walk of the dir.
    walked: Option<HashMap<String, PathBuf>>,
}

impl Index {
    fn from_modules_dep(dir: &Path, root: &Path, text: &str) -> Index {
        // Paths are relative to the module dir; very old depmods wrote absolute ones.
        let resolve = |p: &str| {
            if let Some(abs) = p.strip_prefix('/') {
                root.join(abs)
            } else {
                dir.join(p)
            }
        };
        let mut map = HashMap::new();
        for line in text.lines() {
            let Some((file, deps)) = line.split_once(':') else {
                continue;
            };
            let Some(name) = module_name_of_path(file) else {
                continue;
            };
            let deps = deps.split_whitespace().map(resolve).collect();
            map.insert(name, (resolve(file.trim()), deps));
        }
        Index {
            dir: dir.to_path_buf(),
            dep: Some(map),
            order: None,
            walked: None,
        }
    }

    fn from_files(dir: &Path) -> Index {
        Index {
            dir: dir.to_path_buf(),
            dep: None,
            order: None,
            walked: None,
        }
    }

    /// Post-order DFS: dependencies of `name` (recursively) then `name`.
    fn visit(
        &mut self,
        name: &str,
        builtin: &HashSet<String>,
        stack: &mut Vec<String>,
        done: &mut HashSet<String>,
        order: &mut Vec<ModuleFile>,
    ) -> Result<(), ModuleError> {
        if done.contains(name) || builtin.contains(name) {
            return Ok(());
        }
        if stack.iter().any(|s| s == name) {
            stack.push(name.to_string());
            return Err(ModuleError::BadModuleFile {
                path: self.dir.display().to_string(),
                message: format!("module dependency cycle: {}", stack.join(" -> ")),
            });
        }
        let (path, deps) = self.lookup(name)?;
        stack.push(name.to_string());
        for dep in deps {
            self.visit(&dep, builtin, stack, done, order)?;
        }
        stack.pop();
        done.insert(name.to_string());
        order.push(ModuleFile {
            name: name.to_string(),
            compressed: !path.to_string_lossy().ends_with(".ko"),
            path,
        });
        Ok(())
    }

    /// The file of `name` (which must exist) and the names of its direct dependencies.
    fn lookup(&mut self, name: &str) -> Result<(PathBuf, Vec<String>), ModuleError> {
        if let Some(map) = &self.dep {
            let Some((file, deps)) = map.get(name) else {
                return Err(self.missing_everywhere(name, " (not in modules.dep)"));
            };
            if !file.exists() {
                return Err(ModuleError::Missing {
                    module: name.to_string(),
                    path: file.display().to_string(),
                });
            }
            let deps = deps
                .iter()
                .filter_map(|d| module_name_of_path(&d.to_string_lossy()))
                .collect();
            return Ok((file.clone(), deps));
        }
        let Some(file) = self.find_file(name) else {
            return Err(self.missing_everywhere(name, ""));
        };
        let bad = |message: String| ModuleError::BadModuleFile {
            path: file.display().to_string(),
            message,
        };
        if !file.to_string_lossy().ends_with(".ko") {
            return Err(bad(
                "compressed module and no modules.dep to read its dependencies from: \
                 run depmod for this kernel in the image"
                    .into(),
            ));
        }
        let bytes = std::fs::read(&file).map_err(|e| bad(e.to_string()))?;
        let deps = modinfo::depends(&bytes).map_err(bad)?;
        Ok((file, deps.iter().map(|d| normalise(d)).collect()))
    }

    /// Without modules.dep: modules.order's entry (any compression), else a walk.
    fn find_file(&mut self, name: &str) -> Option<PathBuf> {
        let order = self.order.get_or_insert_with(|| order_index(&self.dir));
        if let Some(base) = order.get(name) {
            let found = EXTENSIONS
                .iter()
                .map(|ext| PathBuf::from(format!("{}{ext}", base.display())))
                .find(|p| p.is_file());
            if found.is_some() {
                return found;
            }
        }
        let walked = self.walked.get_or_insert_with(|| walk_index(&self.dir));
        walked.get(name).cloned()
    }

    fn missing_everywhere(&self, name: &str, note: &str) -> ModuleError {
        ModuleError::Missing {
            module: name.to_string(),
            path: format!("{}/**/{name}.ko{note}", self.dir.display()),
        }
    }
}

/// name → path without extension, from `modules.order` (one read, no walk).
fn order_index(dir: &Path) -> HashMap<String, PathBuf> {
    std::fs::read_to_string(dir.join("modules.order"))
        .map(|order| {
            order
                .lines()
                .filter_map(|rel| {
                    let name = module_name_of_path(rel)?;
                    Some((name, dir.join(rel.trim().trim_end_matches(".ko"))))
                })
                .collect()
        })
        .unwrap_or_default()
}

/// name → file for every module file under `dir` (out-of-tree `updates/`, `extra/`, or
/// an image without modules.order).
fn walk_index(dir: &Path) -> HashMap<String, PathBuf> {
    let mut map = HashMap::new();
    walk(dir, 0, &mut |path| {
        if let Some(name) = module_name_of_path(&path.to_string_lossy()) {
            map.entry(name).or_insert_with(|| path.to_path_buf());
        }
    });
    map
}

fn walk(dir: &Path, depth: usize, f: &mut dyn FnMut(&Path)) {
    if depth > 16 {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let Ok(ft) = entry.file_type() else { continue };
        let path = entry.path();
        if ft.is_dir() {
            walk(&path, depth + 1, f); // symlinks (build/, source/) are not followed
        } else if ft.is_file() {
            f(&path);
        }
    }
}

/// Where the kernel's own build puts the modules guest-netinit loads, relative to the module
/// dir (`make modules_install` without compression): the path to name when there is no tree
/// to search.
const KNOWN_PATHS: [(&str, &str); 6] = [
    ("virtio_net", "kernel/drivers/net/virtio_net.ko"),
    ("net_failover", "kernel/drivers/net/net_failover.ko"),
    ("failover", "kernel/net/core/failover.ko"),
    ("virtio_pci", "kernel/drivers/virtio/virtio_pci.ko"),
    ("virtio_ring", "kernel/drivers/virtio/virtio_ring.ko"),
    ("virtio", "kernel/drivers/virtio/virtio.ko"),
];

/// The file `name` would be in `dir` (`/lib/modules/<release>`): its standard path for the
/// virtio modules, else `dir/**/name.ko`.
pub fn expected_path(dir: &Path, name: &str) -> String {
    let name = normalise(name);
    match KNOWN_PATHS.iter().find(|(n, _)| *n == name) {
        Some((_, rel)) => dir.join(rel).display().to_string(),
        None => format!("{}/**/{name}.ko", dir.display()),
    }
}

/// `kernel/drivers/net/virtio_net.ko.xz` → `virtio_net`; `amd-uncore.ko` → `amd_uncore`.
fn module_name_of_path(path: &str) -> Option<String> {
    let base = path.trim().rsplit('/').next()?;
    EXTENSIONS
        .iter()
        .find_map(|ext| base.strip_suffix(ext))
        .filter(|n| !n.is_empty())
        .map(normalise)
}

/// Module names treat `-` and `_` as the same character.
pub fn normalise(name: &str) -> String {
    name.replace('-', "_")
}

fn list_dir(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

fn read_trimmed(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|s| s.trim().to_string())
}

fn driver_of(dev: &Path) -> Option<String> {
    let target = std::fs::read_link(dev.join("driver")).ok()?;
    Some(
        target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests;
