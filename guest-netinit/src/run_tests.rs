use super::*;
use crate::report::{EventSink, Reporter};
use crate::system::{ApplySummary, ModuleError};
use guest_proto::{ConsoleEvent, NetinitReport, ProbeResult};
use std::cell::RefCell;
use std::net::Ipv4Addr;
use std::rc::Rc;

use crate::test_support::{empty_report, Buf};

/// What the fake system does and what it saw.
#[derive(Default)]
struct World {
    present: bool,
    /// The link appears during the n-th `wait` call.
    appear_on_wait: Option<usize>,
    /// A virtio-net device without a driver; loading the module makes the link appear.
    device_without_driver: bool,
    module_missing: Option<String>,
    /// The module dir (empty for the running kernel): every load fails with NoModulesDir.
    no_module_dir: Option<String>,
    /// `modules_needed()` answer; `None` = the trait's default.
    needed: Option<Vec<String>>,
    loaded_names: Vec<String>,
    apply_error: Option<String>,
    probe_ok: bool,
    connects: usize,
    waits: usize,
    applied: Vec<NetConfig>,
    probes: Vec<(Ipv4Addr, Ipv4Addr)>,
    /// What the DHCP exchange yields; `None` = no server answers.
    lease: Option<crate::dhcp::Lease>,
    dhcp_timeouts: Vec<Duration>,
    loads: usize,
}

type Shared = Rc<RefCell<World>>;

struct FakeNet(Shared);
struct FakeConnect(Shared);
struct FakeModules(Shared);
struct FakeProber(Shared);
struct FakeDhcp(Shared);

impl Links for FakeNet {
    async fn find(&mut self, _name: &str) -> Result<Option<u32>, NetError> {
        Ok(self.0.borrow().present.then_some(2))
    }
    async fn wait(&mut self, _name: &str, deadline: Instant) -> Result<Option<u32>, NetError> {
        let present = {
            let mut w = self.0.borrow_mut();
            w.waits += 1;
            if w.appear_on_wait == Some(w.waits) {
                w.present = true;
            }
            w.present
        };
        if present {
            return Ok(Some(2));
        }
        tokio::time::sleep(deadline.saturating_duration_since(Instant::now())).await;
        Ok(None)
    }
}

impl Apply for FakeNet {
    async fn apply(&mut self, index: u32, cfg: &NetConfig) -> Result<ApplySummary, NetError> {
        assert_eq!(index, 2);
        let mut w = self.0.borrow_mut();
        if let Some(m) = &w.apply_error {
            return Err(NetError::Request {
                what: format!("add address to {}", cfg.interface),
                message: m.clone(),
            });
        }
        w.applied.push(cfg.clone());
        Ok(ApplySummary {
            actions: cfg
                .addresses
                .iter()
                .map(|a| format!("address {a}"))
                .collect(),
        })
    }
}

impl Connect for FakeConnect {
    type Net = FakeNet;
    async fn connect(&mut self) -> Result<FakeNet, NetError> {
        self.0.borrow_mut().connects += 1;
        Ok(FakeNet(self.0.clone()))
    }
}

impl Modules for FakeModules {
    fn virtio_net_without_driver(&self) -> bool {
        self.0.borrow().device_without_driver
    }
    fn modules_needed(&self) -> Vec<String> {
        self.needed().unwrap_or_else(|| vec!["virtio_net".into()])
    }
    fn load_with_deps(&self, name: &str) -> Result<Vec<String>, ModuleError> {
        let mut w = self.0.borrow_mut();
        w.loads += 1;
        w.loaded_names.push(name.into());
        if let Some(dir) = &w.no_module_dir {
            return Err(ModuleError::NoModulesDir {
                kernel: "6.1.0-28-cloud-amd64".into(),
                dir: dir.clone(),
                module: name.into(),
                path: crate::modules::expected_path(Path::new(dir), name),
            });
        }
        if let Some(path) = &w.module_missing {
            return Err(ModuleError::Missing {
                module: name.into(),
                path: path.clone(),
            });
        }
        if name == "virtio_pci" {
            return Ok(vec![name.into()]);
        }
        w.present = true;
        Ok(vec![
            "virtio_ring".into(),
            "net_failover".into(),
            name.into(),
        ])
    }
}

impl FakeModules {
    fn needed(&self) -> Option<Vec<String>> {
        self.0.borrow().needed.clone()
    }
}

impl Prober for FakeProber {
    async fn probe(
        &mut self,
        _index: u32,
        _iface: &str,
        source: Ipv4Addr,
        target: Ipv4Addr,
        _t: Duration,
    ) -> ProbeResult {
        let mut w = self.0.borrow_mut();
        w.probes.push((source, target));
        ProbeResult {
            target: target.into(),
            ok: w.probe_ok,
            rtt_us: w.probe_ok.then_some(120),
            mac: None,
            error: (!w.probe_ok).then(|| "no ARP reply".into()),
        }
    }
}

impl DhcpClient for FakeDhcp {
    async fn lease(
        &mut self,
        index: u32,
        _iface: &str,
        timeout: Duration,
    ) -> Result<crate::dhcp::DhcpOutcome, crate::dhcp::DhcpError> {
        assert_eq!(index, 2);
        let mut w = self.0.borrow_mut();
        w.dhcp_timeouts.push(timeout);
        Ok(match w.lease.clone() {
            Some(l) => crate::dhcp::DhcpOutcome::Leased(l),
            None => crate::dhcp::DhcpOutcome::TimedOut {
                offers: 0,
                naks: 0,
                waited: timeout,
            },
        })
    }
}

struct Outcome {
    code: i32,
    human: String,
    events: Vec<ConsoleEvent>,
    state: NetinitReport,
    root: tempfile::TempDir,
}

const STATIC: &str = "console=ttyS0 ip=192.168.100.2::192.168.100.1:255.255.255.0:vm1:eth0:off nameserver=1.1.1.1 quiet\n";

async fn go(
    cmdline: &str,
    files: &[(&str, &str)],
    world: &Shared,
    tweak: impl FnOnce(&mut RunOptions),
) -> Outcome {
    let root = tempfile::tempdir().unwrap();
    let cmd_path = root.path().join("cmdline");
    std::fs::write(&cmd_path, cmdline).unwrap();
    for (p, text) in files {
        let path = root.path().join(p);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    let mut opts = RunOptions {
        cmdline: Some(cmd_path),
        root: Some(root.path().to_path_buf()),
        link_timeout: Duration::from_millis(400),
        ..RunOptions::default()
    };
    tweak(&mut opts);
    let (human, events) = (Buf::default(), Buf::default());
    let mut rep = Reporter::new(
        Some(Box::new(human.clone())),
        EventSink::Writer(Box::new(events.clone())),
        None,
        empty_report(),
    );
    let mut deps = Deps {
        connect: FakeConnect(world.clone()),
        modules: FakeModules(world.clone()),
        prober: FakeProber(world.clone()),
        dhcp: FakeDhcp(world.clone()),
    };
    let t0 = Instant::now();
    let result = run(&opts, &mut deps, &mut rep).await;
    let code = finish(&mut rep, result, &opts, t0);
    let state = serde_json::from_slice(
        &std::fs::read(root.path().join("run/guest-netinit/state.json")).unwrap(),
    )
    .unwrap();
    let events = events
        .text()
        .lines()
        .map(|l| ConsoleEvent::find_in_line(l).unwrap().unwrap())
        .collect();
    Outcome {
        code,
        human: human.text(),
        events,
        state,
        root,
    }
}

fn world(f: impl FnOnce(&mut World)) -> Shared {
    let mut w = World {
        present: true,
        probe_ok: true,
        ..World::default()
    };
    f(&mut w);
    Rc::new(RefCell::new(w))
}

fn step_names(r: &NetinitReport) -> Vec<&str> {
    r.steps.iter().map(|s| s.name.as_str()).collect()
}

#[tokio::test]
async fn static_ip_configures_writes_files_and_reports() {
    let w = world(|_| {});
    let o = go(STATIC, &[], &w, |_| {}).await;
    assert_eq!(o.code, 0, "{}", o.human);
    let w = w.borrow();
    assert_eq!(w.applied.len(), 1);
    assert_eq!(w.applied[0].addresses[0].to_string(), "192.168.100.2/24");
    assert_eq!(
        w.probes,
        vec![(
            "192.168.100.2".parse().unwrap(),
            "192.168.100.1".parse().unwrap()
        )]
    );
    assert_eq!(
        step_names(&o.state),
        [
            "read-config",
            "find-link",
            "apply",
            "files",
            "handoff",
            "probe"
        ]
    );
    assert_eq!(o.state.outcome, guest_proto::Outcome::Configured);
    assert_eq!(o.state.interface.as_deref(), Some("eth0"));
    assert_eq!(o.state.addresses.len(), 1);
    assert_eq!(
        o.state.handoff_path.as_deref(),
        Some("/run/systemd/network/00-guest-netinit-eth0.network")
    );
    assert!(o.state.probe.as_ref().unwrap().ok);
    assert!(o.state.error.is_none());
    let r = o.root.path();
    assert!(std::fs::read_to_string(r.join("etc/resolv.conf"))
        .unwrap()
        .contains("nameserver 1.1.1.1"));
    assert_eq!(
        std::fs::read_to_string(r.join("etc/hostname")).unwrap(),
        "vm1\n"
    );
    let handoff =
        std::fs::read_to_string(r.join("run/systemd/network/00-guest-netinit-eth0.network"))
            .unwrap();
    assert!(
        handoff.contains("Address=192.168.100.2/24\nGateway=192.168.100.1\nDNS=1.1.1.1\n"),
        "{handoff}"
    );
    for step in [
        "read-config",
        "find-link",
        "apply",
        "files",
        "handoff",
        "probe",
        "report",
        "done",
    ] {
        assert!(
            o.human.contains(&format!("[netinit] {step:<11} ")),
            "no {step} line in\n{}",
            o.human
        );
    }
    assert!(
        o.human.contains("find-link   eth0 index 2 ("),
        "{}",
        o.human
    );
    assert!(matches!(
        o.events.first().unwrap().event,
        Event::Start { .. }
    ));
    match &o.events.last().unwrap().event {
        Event::Done {
            interface,
            addresses,
            ..
        } => {
            assert_eq!(interface.as_deref(), Some("eth0"));
            assert_eq!(addresses, &vec!["192.168.100.2/24".to_string()]);
        }
        e => panic!("last event {e:?}"),
    }
}

#[tokio::test]
async fn silent_gateway_is_a_warning_and_exit_0() {
    let w = world(|w| w.probe_ok = false);
    let o = go(STATIC, &[], &w, |_| {}).await;
    assert_eq!(o.code, 0);
    assert_eq!(o.state.outcome, guest_proto::Outcome::Configured);
    assert!(!o.state.probe.as_ref().unwrap().ok);
    assert!(
        o.state.warnings[0].contains("gateway 192.168.100.1 did not answer ARP"),
        "{:?}",
        o.state.warnings
    );
    assert!(o
        .events
        .iter()
        .any(|e| e.lvl == Level::Warn && matches!(e.event, Event::Warning { .. })));
}

#[tokio::test]
async fn bad_config_is_exit_3_before_any_netlink() {
    let w = world(|_| {});
    let o = go(
        "ip=192.168.100.X::undefined:undefined::eth0:off",
        &[],
        &w,
        |_| {},
    )
    .await;
    assert_eq!(o.code, 3);
    assert_eq!(w.borrow().connects, 0, "nothing touched");
    let err = o.state.error.unwrap();
    assert_eq!(err.class, "bad-config");
    assert!(
        err.message.contains("is not an IPv4 address"),
        "{}",
        err.message
    );
    assert_eq!(
        step_names(&NetinitReport {
            steps: o.state.steps,
            ..empty_report()
        }),
        ["read-config"]
    );
}

#[tokio::test]
async fn unfilled_placeholder_is_exit_3_naming_it() {
    let w = world(|_| {});
    let tpl = "[Match]\nName=eth0\n[Network]\nAddress=__VM_IP__/24\n";
    let o = go(
        "quiet",
        &[("etc/guest-netinit/eth0.network", tpl)],
        &w,
        |_| {},
    )
    .await;
    assert_eq!(o.code, 3);
    assert!(o
        .state
        .error
        .unwrap()
        .message
        .contains("line 4: Address=: placeholder __VM_IP__ is not filled"));
    assert_eq!(w.borrow().connects, 0);
}

#[tokio::test]
async fn nothing_to_do_is_exit_0_without_netlink() {
    let w = world(|_| {});
    let o = go("console=ttyS0 quiet", &[], &w, |_| {}).await;
    assert_eq!(o.code, 0);
    assert_eq!(o.state.outcome, guest_proto::Outcome::NothingToDo);
    assert_eq!(w.borrow().connects, 0);
    assert!(o.human.contains("nothing to do"), "{}", o.human);
}

#[tokio::test]
async fn apply_failure_is_exit_7() {
    let w = world(|w| w.apply_error = Some("Operation not permitted (os error 1)".into()));
    let o = go(STATIC, &[], &w, |_| {}).await;
    assert_eq!(o.code, 7);
    assert!(o
        .state
        .error
        .unwrap()
        .message
        .contains("add address to eth0: Operation not permitted"));
}

#[tokio::test]
async fn template_with_placeholder_from_old_path() {
    let w = world(|_| {});
    let tpl = "[Match]\nName=eth0\n[Network]\nAddress=__VM_IP__/24\nGateway=__GW__\n";
    let o = go(
        "guest.vm_ip=192.168.100.7 guest.GW=192.168.100.1",
        &[("etc/systemd/network/10-eth0.network", tpl)],
        &w,
        |_| {},
    )
    .await;
    assert_eq!(o.code, 0, "{}", o.human);
    assert_eq!(o.state.source, Some(guest_proto::ConfigSource::Template));
    assert_eq!(
        w.borrow().applied[0].addresses[0].to_string(),
        "192.168.100.7/24"
    );
    assert!(
        o.state.conflicts.is_empty(),
        "the template itself is no conflict: {:?}",
        o.state.conflicts
    );
}

#[tokio::test]
async fn conflicting_sources_are_reported_and_cmdline_wins() {
    let w = world(|_| {});
    let files = [
        (
            "etc/guest-netinit/eth0.network",
            "[Match]\nName=eth0\n[Network]\nAddress=10.0.0.5/24\n",
        ),
        (
            "etc/netplan/50-cloud-init.yaml",
            "network:\n  ethernets:\n    eth0:\n      dhcp4: true\n",
        ),
    ];
    let o = go(STATIC, &files, &w, |_| {}).await;
    assert_eq!(o.code, 0, "{}", o.human);
    let sources: Vec<&str> = o
        .state
        .conflicts
        .iter()
        .map(|c| c.source.as_str())
        .collect();
    assert_eq!(sources, ["template", "netplan"]);
    assert_eq!(
        o.events
            .iter()
            .filter(|e| matches!(e.event, Event::Conflict { .. }))
            .count(),
        2
    );
    assert_eq!(
        w.borrow().applied[0].addresses[0].to_string(),
        "192.168.100.2/24"
    );
    let handoff = std::fs::read_to_string(
        o.root
            .path()
            .join("run/systemd/network/00-guest-netinit-eth0.network"),
    )
    .unwrap();
    assert!(
        handoff.contains("Address=192.168.100.2/24") && !handoff.contains("10.0.0.5"),
        "{handoff}"
    );
}

#[tokio::test]
async fn explicit_missing_template_is_bad_config() {
    let w = world(|_| {});
    let o = go("quiet", &[], &w, |o| {
        o.template = Some("/nonexistent/eth0.network".into())
    })
    .await;
    assert_eq!(o.code, 3);
    assert!(o
        .state
        .error
        .unwrap()
        .message
        .contains("/nonexistent/eth0.network"));
}

#[path = "run_dhcp_tests.rs"]
mod dhcp;

#[path = "run_link_tests.rs"]
mod link;
