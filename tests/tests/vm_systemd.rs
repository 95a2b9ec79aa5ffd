//! The golden-image path under real systemd (issue 5): a debootstrap'd Debian rootfs with our
//! binaries and `systemd-units/` enabled next to systemd-networkd, linted by
//! `guest-netinit check --root` while it is built, booted like the initramfs image. Asserts
//! the order systemd itself recorded: guest-netinit finished before systemd-networkd started,
//! and guest-agent (Type=notify) became active, i.e. sent READY=1.

use guestkit_tests::vm::fixture::{boot_systemd, TEST_DEADLINE};
use guestkit_tests::vm::image::DEFAULT_AGENT_CONFIG;
use std::collections::HashMap;

/// A one-shot service that waits (bounded) for guest-agent.service and systemd-networkd.service
/// to be active (networkd may still be `activating` when the agent is ready), then prints
/// what systemd knows about the three units; its output is read through the agent's logs API.
const UNIT_ORDER_SERVICE: &str = r#"
[services.unit-order]
command = ["/bin/sh", "-c", "i=0; until { systemctl is-active -q guest-agent.service && systemctl is-active -q systemd-networkd.service; } || [ $i -ge 600 ]; do i=$((i+1)); sleep 0.1; done; systemctl show --property=Id,ActiveState,ActiveEnterTimestampMonotonic,InactiveExitTimestampMonotonic,StatusText guest-netinit.service systemd-networkd.service guest-agent.service; echo END-OF-UNITS"]
restart = "never"
"#;

/// `systemctl show` output of several units: blocks of `Key=Value` separated by blank lines.
fn parse_show(text: &str) -> HashMap<String, HashMap<String, String>> {
    let mut units = HashMap::new();
    for block in text.split("\n\n") {
        let props: HashMap<String, String> = block
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        if let Some(id) = props.get("Id") {
            units.insert(id.clone(), props);
        }
    }
    units
}

fn mono(units: &HashMap<String, HashMap<String, String>>, unit: &str, key: &str) -> u64 {
    let value = units
        .get(unit)
        .and_then(|p| p.get(key))
        .unwrap_or_else(|| panic!("{unit} has no {key}: {units:#?}"));
    value
        .parse()
        .unwrap_or_else(|_| panic!("{unit} {key}={value} is not a number"))
}

#[test]
fn systemd_image_boots_netinit_before_networkd_and_agent_notifies_ready() {
    let config = format!("{DEFAULT_AGENT_CONFIG}{UNIT_ORDER_SERVICE}");
    let (t, image) = boot_systemd(&config);
    assert!(
        image.check_report.contains("0 error(s)"),
        "guest-netinit check --root: {}",
        image.check_report
    );
    match t.vm.wait(TEST_DEADLINE) {
        Ok(_) => {}
        Err(e) => panic!("VM not ready: {e}\n--- console ---\n{}", t.vm.console()),
    }
    let console = t.vm.console();
    assert!(
        console.contains("systemd[1]") || console.contains("Welcome to"),
        "systemd did not run as init:\n{console}"
    );
    let health = t.vm.health().expect("GET /health");
    let net = health.network.as_ref().expect("network block");
    assert_eq!(net.interface.as_deref(), Some("eth0"), "{net:?}");
    assert!(
        net.handoff_path.is_some(),
        "netinit should hand off to networkd: {net:?}"
    );

    // The unit-order service's output, through the agent (bounded poll: it runs once the
    // agent is active).
    let mut text = String::new();
    for _ in 0..150 {
        let logs =
            t.vm.client(|c| async move { c.service_logs("unit-order", Some(200)).await })
                .expect("namespace")
                .expect("GET /services/unit-order/logs");
        text = logs
            .lines
            .iter()
            .map(|l| l.line.as_str())
            .collect::<Vec<_>>()
            .join("\n");
        if text.contains("END-OF-UNITS") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    assert!(text.contains("END-OF-UNITS"), "unit-order output: {text}");
    let units = parse_show(&text);
    for unit in [
        "guest-netinit.service",
        "systemd-networkd.service",
        "guest-agent.service",
    ] {
        assert_eq!(
            units
                .get(unit)
                .and_then(|p| p.get("ActiveState"))
                .map(String::as_str),
            Some("active"),
            "{unit}: {units:#?}"
        );
    }
    let netinit_done = mono(
        &units,
        "guest-netinit.service",
        "ActiveEnterTimestampMonotonic",
    );
    let networkd_start = mono(
        &units,
        "systemd-networkd.service",
        "InactiveExitTimestampMonotonic",
    );
    let agent_start = mono(
        &units,
        "guest-agent.service",
        "InactiveExitTimestampMonotonic",
    );
    let agent_ready = mono(
        &units,
        "guest-agent.service",
        "ActiveEnterTimestampMonotonic",
    );
    assert!(netinit_done > 0, "{units:#?}");
    assert!(
        netinit_done <= networkd_start,
        "netinit finished at {netinit_done} µs, after networkd started at {networkd_start} µs"
    );
    assert!(
        netinit_done <= agent_start,
        "the agent started at {agent_start} µs, before netinit finished at {netinit_done} µs"
    );
    // Type=notify: active only once READY=1 came.
    assert!(agent_ready >= agent_start, "{units:#?}");
    let status = units["guest-agent.service"]
        .get("StatusText")
        .cloned()
        .unwrap_or_default();
    assert!(
        status.contains("running"),
        "the agent's sd_notify STATUS= should say what runs: `{status}`"
    );
}
