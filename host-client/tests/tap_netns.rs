//! TAP listing and cleanup inside a namespace the test creates (never the host's devices).

mod common;

use common::netns::{in_new_netns, mount_sysfs};
use host_client::tap::{gc, list_taps, open_tun, set_persist};
use std::path::Path;

const TAP: u32 = (libc::IFF_TAP | libc::IFF_NO_PI) as u32;

#[test]
fn stale_taps_are_listed_and_removed_only_with_apply() {
    in_new_netns(|| {
        let sys = tempfile::tempdir().unwrap();
        mount_sysfs(sys.path());
        let net = sys.path().join("class/net");
        let proc = Path::new("/proc");

        // a TAP whose VMM died: persistent, nobody holds it
        let fd = open_tun("fcgkstale1", TAP).unwrap();
        set_persist(&fd, true).unwrap();
        drop(fd);
        // a TAP in use by a live "VMM" (this process)
        let live = open_tun("fcgklive1", TAP).unwrap();
        // persistent and held
        let held = open_tun("fcgkheld1", TAP).unwrap();
        set_persist(&held, true).unwrap();
        // stale, but not ours (other prefix)
        let fd = open_tun("othergk0", TAP).unwrap();
        set_persist(&fd, true).unwrap();
        drop(fd);

        let taps = list_taps(&net, proc).unwrap();
        let names: Vec<_> = taps.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["fcgkheld1", "fcgklive1", "fcgkstale1", "othergk0"]);
        let me = std::process::id();
        let live_tap = taps.iter().find(|t| t.name == "fcgklive1").unwrap();
        assert!(live_tap.holders.iter().any(|h| h.pid == me), "{live_tap:?}");
        assert!(!live_tap.persistent);
        assert_eq!(live_tap.kind, "tap");
        assert!(
            taps.iter()
                .find(|t| t.name == "fcgkstale1")
                .unwrap()
                .persistent
        );

        let dry = gc(&net, proc, "fc", false).unwrap();
        assert_eq!(dry.stale, ["fcgkstale1"]);
        assert!(dry.removed.is_empty());
        assert!(net.join("fcgkstale1").exists(), "dry run removed nothing");

        let done = gc(&net, proc, "fc", true).unwrap();
        assert_eq!(done.removed, ["fcgkstale1"]);
        assert!(done.failed.is_empty(), "{:?}", done.failed);
        let after: Vec<_> = list_taps(&net, proc)
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(after, ["fcgkheld1", "fcgklive1", "othergk0"]);
        drop((live, held));
    });
}
