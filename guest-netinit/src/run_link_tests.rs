//! The find-link step with fakes: late and missing links, module loading and its failures.

use super::*;

#[tokio::test]
async fn link_appearing_late_is_awaited() {
    let w = world(|w| {
        w.present = false;
        w.appear_on_wait = Some(1);
    });
    let o = go(STATIC, &[], &w, |o| o.probe = false).await;
    assert_eq!(o.code, 0, "{}", o.human);
    assert_eq!(w.borrow().applied.len(), 1);
    assert_eq!(w.borrow().loads, 0);
    assert!(w.borrow().probes.is_empty(), "--no-probe");
    assert!(
        o.human
            .contains("probe       skipped (--no-probe or guest_netinit.probe=0)"),
        "{}",
        o.human
    );
}

#[tokio::test]
async fn link_never_appearing_is_exit_4_with_nothing_applied() {
    let w = world(|w| w.present = false);
    let o = go(STATIC, &[], &w, |_| {}).await;
    assert_eq!(o.code, 4);
    assert!(w.borrow().applied.is_empty());
    let err = o.state.error.as_ref().unwrap();
    assert_eq!((err.class.as_str(), err.exit_code), ("no-device", 4));
    assert!(
        err.message
            .starts_with("interface eth0 did not appear within"),
        "{}",
        err.message
    );
    assert_eq!(o.state.outcome, guest_proto::Outcome::Failed);
    assert!(o
        .events
        .iter()
        .any(|e| matches!(&e.event, Event::NoDevice { interface, .. } if interface == "eth0")));
    assert!(
        matches!(&o.events.last().unwrap().event, Event::Failed { failure } if failure.exit_code == 4)
    );
    assert!(
        !o.root.path().join("run/systemd/network").exists(),
        "no handoff on failure"
    );
}

#[tokio::test]
async fn missing_module_is_exit_5_naming_the_path() {
    let path = "/lib/modules/6.1.0-28-cloud-amd64/kernel/drivers/net/virtio_net.ko";
    let w = world(|w| {
        w.present = false;
        w.device_without_driver = true;
        w.module_missing = Some(path.into());
    });
    let o = go(STATIC, &[], &w, |_| {}).await;
    assert_eq!(o.code, 5);
    assert!(w.borrow().applied.is_empty());
    assert!(o.state.error.as_ref().unwrap().message.contains(path));
    assert!(o
        .events
        .iter()
        .any(|e| matches!(&e.event, Event::ModuleMissing { path: p, .. } if p == path)));
    assert_eq!(
        step_names(&o.state),
        ["read-config", "load-modules", "find-link"]
    );
}

/// F1 exactly: /lib/modules/<kver> empty. The PCI transport is asked for first, yet the
/// events name every module still needed with its path, and the error names virtio_net.ko.
#[tokio::test]
async fn empty_module_dir_names_virtio_net_and_its_path() {
    let dir = "/lib/modules/6.1.0-28-cloud-amd64";
    let net_path = format!("{dir}/kernel/drivers/net/virtio_net.ko");
    let w = world(|w| {
        w.present = false;
        w.device_without_driver = true;
        w.no_module_dir = Some(dir.into());
        w.needed = Some(vec!["virtio_pci".into(), "virtio_net".into()]);
    });
    let o = go(STATIC, &[], &w, |_| {}).await;
    assert_eq!(o.code, 5, "{}", o.human);
    let error = o.state.error.as_ref().unwrap();
    assert_eq!(error.class, "module-missing");
    assert!(
        error
            .message
            .starts_with(&format!("virtio_net.ko missing at {net_path}: ")),
        "{}",
        error.message
    );
    let missing: Vec<(String, String)> = o
        .events
        .iter()
        .filter_map(|e| match &e.event {
            Event::ModuleMissing { module, path } => Some((module.clone(), path.clone())),
            _ => None,
        })
        .collect();
    assert_eq!(
        missing,
        [
            (
                "virtio_pci".to_string(),
                format!("{dir}/kernel/drivers/virtio/virtio_pci.ko")
            ),
            ("virtio_net".to_string(), net_path.clone()),
        ]
    );
    assert!(
        matches!(&o.events.last().unwrap().event, Event::Failed { failure } if failure.message.contains(&net_path))
    );
}

/// Init mode (no grace): the driverless device is handled at the first look, without a wait
/// that times out first; the only wait is the one that sees the link after the load.
#[tokio::test]
async fn without_grace_the_module_is_loaded_before_any_wait() {
    let w = world(|w| {
        w.present = false;
        w.device_without_driver = true;
    });
    let o = go(STATIC, &[], &w, |o| o.module_grace = Duration::ZERO).await;
    assert_eq!(o.code, 0, "{}", o.human);
    let w = w.borrow();
    assert_eq!((w.loads, w.waits), (1, 1));
}

#[tokio::test]
async fn module_loaded_then_link_appears() {
    let w = world(|w| {
        w.present = false;
        w.device_without_driver = true;
    });
    let o = go(STATIC, &[], &w, |o| {
        o.link_timeout = Duration::from_secs(30)
    })
    .await;
    assert_eq!(o.code, 0, "{}", o.human);
    assert_eq!(w.borrow().loads, 1);
    assert_eq!(
        o.state.modules_loaded,
        ["virtio_ring", "net_failover", "virtio_net"]
    );
    assert_eq!(w.borrow().applied.len(), 1);
}

#[tokio::test]
async fn every_needed_module_is_loaded_in_order() {
    let w = world(|w| {
        w.present = false;
        w.device_without_driver = true;
        w.needed = Some(vec!["virtio_pci".into(), "virtio_net".into()]);
    });
    let o = go(STATIC, &[], &w, |o| {
        o.link_timeout = Duration::from_secs(30)
    })
    .await;
    assert_eq!(o.code, 0, "{}", o.human);
    assert_eq!(w.borrow().loaded_names, ["virtio_pci", "virtio_net"]);
    assert_eq!(
        o.state.modules_loaded,
        ["virtio_pci", "virtio_ring", "net_failover", "virtio_net"]
    );
}
