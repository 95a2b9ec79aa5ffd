//! The initramfs image: everything a guestkit VM needs in one gzip'd newc cpio, no busybox.
//!
//! ```text
//! /init -> sbin/guest-netinit          PID 1 in init mode: mounts, network, then execs
//! /sbin/guest-netinit                  guest_netinit.next= (the agent) with init's arguments
//! /sbin/guest-agent                    `supervise` (as the next init) runs `serve` as a child
//! /etc/guest-agent/config.toml         the supervisor's services
//! /lib/modules/<release>/...           the virtio network and vsock modules, no modules.dep (Debian's
//!                                      package has none: netinit reads each module's .modinfo)
//! /dev/console                         the kernel opens it for init's stdio before devtmpfs
//! ```
//! Fault variants for the VM tests change one thing each ([`InitramfsSpec`]).

use super::cpio::Writer;
use super::kernel::{Kernel, MODULE_INDEXES, NET_MODULES, VSOCK_MODULES};
use super::{run_checked, VmError};
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// Where the binaries go in the image.
pub const NETINIT_PATH: &str = "/sbin/guest-netinit";
pub const AGENT_PATH: &str = "/sbin/guest-agent";
/// Where images with a display put the streamer: beside the agent, where `guest-agent webrtc`
/// finds it too.
pub const STREAMER_PATH: &str = "/sbin/guest-stream";
pub const AGENT_CONFIG_PATH: &str = "/etc/guest-agent/config.toml";

/// The supervisor config of a healthy image: `serve` on 0.0.0.0:8080, required.
pub const DEFAULT_AGENT_CONFIG: &str = r#"# guestkit initramfs image: the agent's HTTP server, supervised.
[services.serve]
command = ["/sbin/guest-agent", "serve", "--listen", "0.0.0.0:8080"]
required = true
"#;

/// A file added to the image (a template, a conflicting `.network`, a fake service).
#[derive(Debug, Clone)]
pub struct ExtraFile {
    pub path: String,
    pub mode: u32,
    pub data: Vec<u8>,
}

/// What `/lib/modules/<release>/` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModuleSet {
    /// The virtio network modules and the index files (no modules.dep).
    Virtio,
    /// The index files and the virtio PCI transport (what a virtio-blk root disk needs
    /// too), but not virtio_net and its failover dependencies.
    NoVirtioNet,
    /// An empty directory: the F1 golden image.
    Empty,
}

/// What goes into one image.
#[derive(Debug, Clone)]
pub struct InitramfsSpec {
    pub modules: ModuleSet,
    /// `/etc/guest-agent/config.toml`.
    pub agent_config: String,
    pub extra_files: Vec<ExtraFile>,
    /// Host programs copied to `/bin/<name>`, with the shared libraries they need.
    pub host_binaries: Vec<PathBuf>,
    /// `(path, target)` symlinks (e.g. busybox applets).
    pub symlinks: Vec<(String, String)>,
    /// Replaces `/init -> sbin/guest-netinit` with this script (the benchmark's baseline).
    pub init_script: Option<String>,
}

impl Default for InitramfsSpec {
    fn default() -> Self {
        Self {
            modules: ModuleSet::Virtio,
            agent_config: DEFAULT_AGENT_CONFIG.to_string(),
            extra_files: Vec::new(),
            host_binaries: Vec::new(),
            symlinks: Vec::new(),
            init_script: None,
        }
    }
}

/// The host binaries that go in.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub netinit: PathBuf,
    pub agent: PathBuf,
    /// The screen streamer (`guest-stream`): only images with a display install it.
    pub streamer: Option<PathBuf>,
}

/// What [`build`] made.
#[derive(Debug, Clone)]
pub struct ImageInfo {
    pub path: PathBuf,
    /// Size of the compressed image.
    pub bytes: u64,
    /// Files in it (not counting directories).
    pub files: usize,
    /// Shared libraries copied because a binary is not static (empty when both are).
    pub shared_libs: Vec<PathBuf>,
}

/// Builds the image at `out` (gzip'd cpio).
pub fn build(
    kernel: &Kernel,
    bins: &Binaries,
    spec: &InitramfsSpec,
    out: &Path,
) -> Result<ImageInfo, VmError> {
    let mut tree = Tree::default();
    for dir in [
        "dev",
        "proc",
        "sys",
        "run",
        "tmp",
        "root",
        "etc/guest-agent",
        "sbin",
    ] {
        tree.dir(dir);
    }
    tree.file(NETINIT_PATH, 0o755, binary_bytes(&bins.netinit)?);
    match &spec.init_script {
        Some(script) => tree.file("/init", 0o755, script.as_bytes().to_vec()),
        None => tree.symlink("/init", "sbin/guest-netinit"),
    }
    tree.file(AGENT_PATH, 0o755, binary_bytes(&bins.agent)?);
    let mut shared_libs = shared_libraries(&bins.netinit)?;
    shared_libs.extend(shared_libraries(&bins.agent)?);
    for program in &spec.host_binaries {
        let name = program
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| VmError::Other(format!("{}: no file name", program.display())))?;
        tree.file(&format!("/bin/{name}"), 0o755, read(program)?);
        shared_libs.extend(shared_libraries(program)?);
    }
    for (path, target) in &spec.symlinks {
        tree.symlink(path, target);
    }
    shared_libs.sort();
    shared_libs.dedup();
    for lib in &shared_libs {
        let data = read(lib)?;
        tree.file(&lib.to_string_lossy(), 0o755, data);
    }
    tree.file(
        AGENT_CONFIG_PATH,
        0o644,
        spec.agent_config.as_bytes().to_vec(),
    );
    let module_base = format!("/lib/modules/{}", kernel.release);
    tree.dir(&module_base);
    let files: Vec<&str> = match spec.modules {
        ModuleSet::Virtio => NET_MODULES
            .iter()
            .chain(VSOCK_MODULES)
            .chain(MODULE_INDEXES)
            .copied()
            .collect(),
        ModuleSet::NoVirtioNet => NET_MODULES
            .iter()
            .chain(VSOCK_MODULES)
            .chain(MODULE_INDEXES)
            .copied()
            .filter(|m| !m.ends_with("virtio_net.ko") && !m.ends_with("failover.ko"))
            .collect(),
        ModuleSet::Empty => Vec::new(),
    };
    for rel in files {
        let data = read(&kernel.modules_dir.join(rel))?;
        tree.file(&format!("{module_base}/{rel}"), 0o644, data);
    }
    for extra in &spec.extra_files {
        tree.file(&extra.path, extra.mode, extra.data.clone());
    }

    let files = tree.files.len();
    let raw = tree.write()?;
    let gz = gzip(&raw)?;
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent).map_err(|e| VmError::io(parent, e))?;
    }
    let tmp = out.with_extension("partial");
    std::fs::write(&tmp, &gz).map_err(|e| VmError::io(&tmp, e))?;
    std::fs::rename(&tmp, out).map_err(|e| VmError::io(out, e))?;
    Ok(ImageInfo {
        path: out.to_path_buf(),
        bytes: gz.len() as u64,
        files,
        shared_libs,
    })
}

fn read(path: &Path) -> Result<Vec<u8>, VmError> {
    std::fs::read(path).map_err(|e| VmError::io(path, e))
}

/// A binary's bytes; a big (debug) build is stripped of debug info on the way in, so the
/// image stays small (`strip` from binutils, when it is there).
fn binary_bytes(path: &Path) -> Result<Vec<u8>, VmError> {
    let data = read(path)?;
    if data.len() < 20_000_000 || !super::on_path("strip") {
        return Ok(data);
    }
    let tmp = tempfile::NamedTempFile::new().map_err(|e| VmError::io(path, e))?;
    run_checked(
        Command::new("strip")
            .arg("--strip-debug")
            .arg("-o")
            .arg(tmp.path())
            .arg(path),
    )?;
    read(tmp.path())
}

/// The shared libraries and loader a dynamic binary needs (from `ldd`); none for a static one.
pub fn shared_libraries(binary: &Path) -> Result<Vec<PathBuf>, VmError> {
    let out = Command::new("ldd")
        .arg(binary)
        .output()
        .map_err(|e| VmError::io(Path::new("ldd"), e))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut libs = BTreeSet::new();
    for line in text.lines() {
        // `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` or `/lib64/ld-linux... (0x...)`
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path.filter(|p| p.starts_with('/')) {
            libs.insert(PathBuf::from(p));
        }
    }
    Ok(libs.into_iter().collect())
}

pub fn gzip(raw: &[u8]) -> Result<Vec<u8>, VmError> {
    let mut child = Command::new("gzip")
        .args(["-1", "-n", "-c"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| VmError::io(Path::new("gzip"), e))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| VmError::Other("gzip stdin".into()))?;
    let data = raw.to_vec();
    let feeder = std::thread::spawn(move || stdin.write_all(&data));
    let out = child
        .wait_with_output()
        .map_err(|e| VmError::io(Path::new("gzip"), e))?;
    let fed = feeder
        .join()
        .map_err(|_| VmError::Other("gzip feeder panicked".into()))?;
    fed.map_err(|e| VmError::io(Path::new("gzip stdin"), e))?;
    if !out.status.success() {
        return Err(VmError::Other(format!("gzip failed ({})", out.status)));
    }
    Ok(out.stdout)
}

/// The image's entries before writing: directories are created for every parent.
#[derive(Default)]
struct Tree {
    dirs: BTreeSet<String>,
    files: Vec<(String, Entry)>,
}

enum Entry {
    File(u32, Vec<u8>),
    Symlink(String),
}

impl Tree {
    fn dir(&mut self, path: &str) {
        let mut at = String::new();
        for part in path.split('/').filter(|p| !p.is_empty()) {
            at.push('/');
            at.push_str(part);
            self.dirs.insert(at.clone());
        }
    }

    fn parent_of(&mut self, path: &str) {
        if let Some((parent, _)) = path.rsplit_once('/') {
            self.dir(parent);
        }
    }

    fn file(&mut self, path: &str, mode: u32, data: Vec<u8>) {
        self.parent_of(path);
        self.files.retain(|(p, _)| p != path);
        self.files.push((path.to_string(), Entry::File(mode, data)));
    }

    fn symlink(&mut self, path: &str, target: &str) {
        self.parent_of(path);
        self.files
            .push((path.to_string(), Entry::Symlink(target.to_string())));
    }

    fn write(self) -> Result<Vec<u8>, VmError> {
        let io = |e| VmError::io(Path::new("<cpio>"), e);
        let mut w = Writer::new(Vec::new());
        w.dir("/", 0o755).map_err(io)?;
        // BTreeSet order puts every parent before its children.
        for dir in &self.dirs {
            let mode = if dir == "/tmp" { 0o1777 } else { 0o755 };
            w.dir(dir, mode).map_err(io)?;
        }
        w.char_dev("/dev/console", 0o600, 5, 1).map_err(io)?;
        for (path, entry) in &self.files {
            match entry {
                Entry::File(mode, data) => w.file(path, *mode, data).map_err(io)?,
                Entry::Symlink(target) => w.symlink(path, target).map_err(io)?,
            }
        }
        w.finish().map_err(io)
    }
}
