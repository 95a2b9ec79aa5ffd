//! RSS and CPU per process group, from procfs: a service is its whole group (a
//! `sh -c` wrapper's real work happens in its children).

use std::collections::HashMap;

/// Usage of one process group.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct GroupUsage {
    pub rss_bytes: u64,
    pub cpu_seconds: f64,
    pub processes: u32,
}

/// One scan of `/proc`, summed by process group.
pub fn scan_groups() -> HashMap<i32, GroupUsage> {
    let mut out: HashMap<i32, GroupUsage> = HashMap::new();
    let page = procfs::page_size();
    let tps = procfs::ticks_per_second() as f64;
    let Ok(all) = procfs::process::all_processes() else {
        return out;
    };
    for p in all.flatten() {
        let Ok(stat) = p.stat() else { continue };
        let u = out.entry(stat.pgrp).or_default();
        u.rss_bytes += stat.rss * page;
        u.cpu_seconds += (stat.utime + stat.stime) as f64 / tps;
        u.processes += 1;
    }
    out
}

/// Pids whose process group is `pgid` (zombies included: they are not gone yet).
pub fn group_members(pgid: i32) -> Vec<i32> {
    let Ok(all) = procfs::process::all_processes() else {
        return Vec::new();
    };
    all.flatten()
        .filter_map(|p| p.stat().ok())
        .filter(|s| s.pgrp == pgid)
        .map(|s| s.pid)
        .collect()
}

/// Resident set size of one process, from `/proc/PID/status` `VmRSS`.
pub fn rss_bytes(pid: i32) -> Option<u64> {
    let status = procfs::process::Process::new(pid).ok()?.status().ok()?;
    status.vmrss.map(|kb| kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_group_is_seen_with_memory() {
        let me = std::process::id() as i32;
        let pgid = nix::unistd::getpgid(None).unwrap().as_raw();
        let groups = scan_groups();
        let g = groups.get(&pgid).expect("own group");
        assert!(g.rss_bytes > 0 && g.processes >= 1);
        assert!(group_members(pgid).contains(&me));
        assert!(rss_bytes(me).unwrap() > 0);
    }
}
