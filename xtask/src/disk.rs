//! How much disk the suite uses, printed between its stages.
//!
//! Why: a CI machine whose disk fills while the test binaries link fails with
//! `ld terminated with signal 7 [Bus error]` (the linker writes its output through a memory
//! map, and a full disk turns that write into SIGBUS), which names neither the disk nor how
//! much was needed. Printing the target directory's size and the free space at each stage puts
//! the figure in the log, and a failed command on a nearly full disk says so (`sh::run`).

use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// Below this much free space a failed step's error says the disk is the likely cause.
const LOW_FREE_BYTES: u64 = 2 << 30;

/// Bytes free (for an unprivileged writer) on the filesystem holding `path`.
pub fn free_bytes(path: &Path) -> Option<u64> {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    let c_path = CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: c_path is a valid NUL-terminated string and stat points to writable memory of
    // the right type; statvfs fills it when it returns 0.
    let rc = unsafe { libc::statvfs(c_path.as_ptr(), stat.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: statvfs returned 0, so it initialised the struct.
    let stat = unsafe { stat.assume_init() };
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Bytes allocated to the files under `dir` (blocks, not lengths: sparse images count for
/// what they take). Symbolic links are not followed; unreadable entries are skipped.
pub fn used_bytes(dir: &Path) -> u64 {
    let mut total = 0u64;
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            total = total.saturating_add(meta.blocks().saturating_mul(512));
            if meta.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    total
}

fn gib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1u32 << 30)
}

/// Prints `disk after STAGE: target/ X GiB, Y GiB free`.
pub fn report(stage: &str, target: &Path) {
    let used = gib(used_bytes(target));
    match free_bytes(target) {
        Some(free) => println!(
            "disk after {stage}: {} {used:.1} GiB, {:.1} GiB free",
            target.display(),
            gib(free)
        ),
        None => println!("disk after {stage}: {} {used:.1} GiB", target.display()),
    }
}

/// Adds "the disk is (nearly) full" to `err` when the filesystem holding `target` has less
/// than [`LOW_FREE_BYTES`] left, so a linker's SIGBUS is read for what it is.
pub fn explain_failure(err: anyhow::Error, target: &Path) -> anyhow::Error {
    explain_with_free(err, target, free_bytes(target))
}

fn explain_with_free(err: anyhow::Error, target: &Path, free: Option<u64>) -> anyhow::Error {
    match free {
        Some(free) if free < LOW_FREE_BYTES => err.context(format!(
            "only {:.2} GiB is free on the filesystem of {}: a full disk makes the linker \
             die with SIGBUS (signal 7); free space and run again",
            gib(free),
            target.display()
        )),
        _ => err,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn used_bytes_counts_what_files_take() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let before = used_bytes(dir);
        std::fs::write(dir.join("a"), vec![7u8; 1 << 20]).unwrap();
        std::fs::create_dir(dir.join("sub")).unwrap();
        std::fs::write(dir.join("sub/b"), vec![7u8; 1 << 20]).unwrap();
        let after = used_bytes(dir);
        assert!(
            after - before >= 2 << 20,
            "two 1 MiB files counted as {} bytes",
            after - before
        );
    }

    #[test]
    fn a_failure_on_a_nearly_full_disk_says_so() {
        let target = Path::new("/ci/target");
        let full = explain_with_free(
            anyhow::anyhow!("`cargo build` failed"),
            target,
            Some(1 << 20),
        );
        let text = format!("{full:#}");
        assert!(
            text.contains("0.00 GiB is free on the filesystem of /ci/target"),
            "{text}"
        );
        assert!(text.contains("`cargo build` failed"), "{text}");
        for free in [Some(LOW_FREE_BYTES), None] {
            let plain = explain_with_free(anyhow::anyhow!("`cargo build` failed"), target, free);
            assert_eq!(format!("{plain:#}"), "`cargo build` failed");
        }
    }

    #[test]
    fn free_bytes_reads_the_filesystem() {
        assert!(free_bytes(Path::new("/")).is_some(), "statvfs / failed");
        assert!(free_bytes(Path::new("/no/such/dir/here")).is_none());
    }
}
