use super::lease::{fallback_config, link_only, mask_len};
use super::msg::opt;
use super::*;
use crate::config::{Address, NetConfig, Route};
use guest_proto::ConfigSource;
use std::collections::VecDeque;
use std::net::IpAddr;

const MAC: [u8; 6] = [0x02, 0x42, 0xc0, 0xa8, 0x64, 0x02];
const SERVER: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 1);
const YOU: Ipv4Addr = Ipv4Addr::new(192, 168, 100, 57);

#[derive(Clone, Copy, PartialEq)]
enum Behaviour {
    Normal,
    Silent,
    /// NAK the first `n` REQUESTs.
    Nak(usize),
    /// Answer with garbage and foreign transactions before the real answer.
    Noisy,
    /// Every reply is unusable: OFFERs without a server id, ACKs without an address.
    Broken,
}

/// A scripted server: answers each message the client sends.
struct Fake {
    behaviour: Behaviour,
    sent: Vec<Message>,
    inbox: VecDeque<Vec<u8>>,
    naks_left: usize,
}

impl Fake {
    fn new(behaviour: Behaviour) -> Fake {
        let naks_left = match behaviour {
            Behaviour::Nak(n) => n,
            _ => 0,
        };
        Fake {
            behaviour,
            sent: vec![],
            inbox: VecDeque::new(),
            naks_left,
        }
    }

    fn reply(req: &Message, kind: MessageType, with_options: bool) -> Vec<u8> {
        let mut m = Message::request(kind, req.xid, req.chaddr);
        m.op = msg::BOOTREPLY;
        m.flags = 0;
        m.yiaddr = if kind == MessageType::Nak {
            Ipv4Addr::UNSPECIFIED
        } else {
            YOU
        };
        m.options = vec![
            (opt::MESSAGE_TYPE, vec![kind as u8]),
            (opt::SERVER_ID, SERVER.octets().to_vec()),
        ];
        if with_options {
            m.options.extend([
                (opt::SUBNET_MASK, vec![255, 255, 255, 0]),
                (opt::ROUTER, SERVER.octets().to_vec()),
                (opt::DNS, vec![192, 168, 100, 1, 9, 9, 9, 9]),
                (opt::MTU, 1400u16.to_be_bytes().to_vec()),
                (opt::LEASE_TIME, 600u32.to_be_bytes().to_vec()),
                (opt::DOMAIN_NAME, b"vms.example".to_vec()),
                (opt::HOSTNAME, b"vm-57".to_vec()),
            ]);
        }
        m.encode()
    }
}

impl Transport for Fake {
    fn mac(&self) -> [u8; 6] {
        MAC
    }

    async fn send(&mut self, payload: &[u8]) -> io::Result<()> {
        let m = Message::decode(payload).map_err(io::Error::other)?;
        let kind = m.message_type();
        self.sent.push(m.clone());
        if self.behaviour == Behaviour::Silent {
            return Ok(());
        }
        if self.behaviour == Behaviour::Noisy {
            self.inbox.push_back(vec![1, 2, 3]);
            let mut other = Message::decode(&Fake::reply(&m, MessageType::Offer, true)).unwrap();
            other.xid ^= 1;
            self.inbox.push_back(other.encode());
            let mut other_mac = other.clone();
            other_mac.xid = m.xid;
            other_mac.chaddr = [9; 6];
            self.inbox.push_back(other_mac.encode());
        }
        if self.behaviour == Behaviour::Broken {
            let mut r = Message::decode(&Fake::reply(&m, MessageType::Offer, true)).unwrap();
            r.options.retain(|(c, _)| *c != opt::SERVER_ID);
            self.inbox.push_back(r.encode());
            let mut a = Message::decode(&Fake::reply(&m, MessageType::Ack, true)).unwrap();
            a.yiaddr = Ipv4Addr::UNSPECIFIED;
            self.inbox.push_back(a.encode());
            return Ok(());
        }
        match kind {
            Some(MessageType::Discover) => {
                // Options only in the OFFER: the lease must take them from there.
                self.inbox
                    .push_back(Fake::reply(&m, MessageType::Offer, true));
            }
            Some(MessageType::Request) => {
                if self.naks_left > 0 {
                    self.naks_left -= 1;
                    self.inbox
                        .push_back(Fake::reply(&m, MessageType::Nak, false));
                } else {
                    self.inbox
                        .push_back(Fake::reply(&m, MessageType::Ack, false));
                }
            }
            _ => {}
        }
        Ok(())
    }

    async fn recv(&mut self, _until: Instant) -> io::Result<Option<Vec<u8>>> {
        Ok(self.inbox.pop_front())
    }
}

fn block<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

fn types(f: &Fake) -> Vec<MessageType> {
    f.sent.iter().filter_map(Message::message_type).collect()
}

#[test]
fn full_exchange_gives_a_lease_with_every_option() {
    let mut f = Fake::new(Behaviour::Normal);
    let out = block(obtain(&mut f, DEFAULT_TIMEOUT, 77)).unwrap();
    let DhcpOutcome::Leased(l) = out else {
        panic!("{out:?}")
    };
    assert_eq!(types(&f), vec![MessageType::Discover, MessageType::Request]);
    let req = &f.sent[1];
    assert_eq!(req.xid, 77);
    assert_eq!(req.addr(opt::REQUESTED_IP), Some(YOU));
    assert_eq!(req.addr(opt::SERVER_ID), Some(SERVER));
    assert_eq!(req.flags, msg::FLAG_BROADCAST);
    assert_eq!((l.address, l.prefix_len), (YOU, 24));
    assert_eq!(l.router, Some(SERVER));
    assert_eq!(l.dns, vec![SERVER, Ipv4Addr::new(9, 9, 9, 9)]);
    assert_eq!(l.mtu, Some(1400));
    assert_eq!(l.lease_secs, Some(600));
    assert_eq!(l.domain.as_deref(), Some("vms.example"));
    assert_eq!(l.hostname.as_deref(), Some("vm-57"));
    assert_eq!(l.server, SERVER);
    assert_eq!(l.expires_at_ms(), Some(l.obtained_at_ms + 600_000));
}

#[test]
fn silence_times_out_after_retransmitting() {
    let mut f = Fake::new(Behaviour::Silent);
    let out = block(obtain(&mut f, Duration::from_secs(5), 1)).unwrap();
    assert!(
        matches!(
            out,
            DhcpOutcome::TimedOut {
                offers: 0,
                naks: 0,
                ..
            }
        ),
        "{out:?}"
    );
    // sent at 0 s, 1 s, 3 s; the next (7 s) is past the 5 s deadline
    assert_eq!(types(&f), vec![MessageType::Discover; 3]);
    assert!(
        out.why().contains("no DHCP server answered"),
        "{}",
        out.why()
    );
}

#[test]
fn garbage_and_foreign_transactions_are_ignored() {
    let mut f = Fake::new(Behaviour::Noisy);
    let out = block(obtain(&mut f, DEFAULT_TIMEOUT, 5)).unwrap();
    assert!(
        matches!(out, DhcpOutcome::Leased(ref l) if l.address == YOU),
        "{out:?}"
    );
    assert_eq!(types(&f), vec![MessageType::Discover, MessageType::Request]);
}

#[test]
fn unusable_replies_are_ignored_without_spinning() {
    let mut f = Fake::new(Behaviour::Broken);
    let out = block(obtain(&mut f, Duration::from_secs(5), 3)).unwrap();
    assert!(
        matches!(out, DhcpOutcome::TimedOut { offers: 0, .. }),
        "{out:?}"
    );
    // only the scheduled retransmissions: 0 s, 1 s, 3 s
    assert_eq!(types(&f), vec![MessageType::Discover; 3]);
}

#[test]
fn a_nak_restarts_with_a_new_transaction_and_too_many_give_up() {
    let mut f = Fake::new(Behaviour::Nak(1));
    let out = block(obtain(&mut f, DEFAULT_TIMEOUT, 100)).unwrap();
    assert!(matches!(out, DhcpOutcome::Leased(_)), "{out:?}");
    let xids: Vec<u32> = f.sent.iter().map(|m| m.xid).collect();
    assert_eq!(xids, vec![100, 100, 101, 101]);
    let mut f = Fake::new(Behaviour::Nak(10));
    let out = block(obtain(&mut f, DEFAULT_TIMEOUT, 100)).unwrap();
    assert!(
        matches!(
            out,
            DhcpOutcome::TimedOut {
                offers: 3,
                naks: 3,
                ..
            }
        ),
        "{out:?}"
    );
    assert!(out.why().contains("3 offer(s) but no lease"));
}

fn base() -> NetConfig {
    NetConfig {
        interface: "eth0".into(),
        source: ConfigSource::Template,
        mtu: None,
        mac: None,
        addresses: vec![Address {
            addr: "192.168.100.200".parse().unwrap(),
            prefix_len: 24,
        }],
        gateway: Some("192.168.100.1".parse().unwrap()),
        routes: vec![Route {
            destination: "10.0.0.0".parse().unwrap(),
            prefix_len: 8,
            gateway: Some("192.168.100.254".parse().unwrap()),
            metric: None,
        }],
        dns: vec!["1.1.1.1".parse().unwrap(), "9.9.9.9".parse().unwrap()],
        domains: vec![],
        hostname: None,
        dhcp: true,
    }
}

fn lease() -> Lease {
    Lease {
        address: YOU,
        prefix_len: 24,
        router: Some(SERVER),
        dns: vec![SERVER, Ipv4Addr::new(9, 9, 9, 9)],
        domain: Some("vms.example".into()),
        hostname: Some("vm-57".into()),
        mtu: Some(1400),
        lease_secs: None,
        server: SERVER,
        obtained_at_ms: 1,
    }
}

#[test]
fn lease_config_over_the_static_base() {
    let c = lease().to_config(&base());
    assert_eq!(c.source, ConfigSource::Dhcp);
    assert_eq!(c.addresses.len(), 1);
    assert_eq!(c.addresses[0].addr, IpAddr::V4(YOU));
    assert_eq!(c.gateway, Some(IpAddr::V4(SERVER)));
    assert_eq!(c.routes, base().routes);
    let dns: Vec<String> = c.dns.iter().map(|d| d.to_string()).collect();
    assert_eq!(dns, vec!["192.168.100.1", "9.9.9.9", "1.1.1.1"]);
    assert_eq!(c.domains, vec!["vms.example"]);
    assert_eq!(c.mtu, Some(1400));
    assert_eq!(c.hostname.as_deref(), Some("vm-57"));
    assert_eq!(lease().expires_at_ms(), None);
    // explicit settings win
    let mut b = base();
    b.mtu = Some(9000);
    b.hostname = Some("given".into());
    let c = lease().to_config(&b);
    assert_eq!((c.mtu, c.hostname.as_deref()), (Some(9000), Some("given")));
}

#[test]
fn fallback_and_link_only() {
    let f = fallback_config(&base()).unwrap();
    assert_eq!(f.source, ConfigSource::Fallback);
    assert!(!f.dhcp);
    assert_eq!(f.addresses, base().addresses);
    let mut b = base();
    b.addresses.clear();
    assert_eq!(fallback_config(&b), None);
    let l = link_only(&base());
    assert!(l.addresses.is_empty() && l.gateway.is_none() && l.routes.is_empty());
}

#[test]
fn masks() {
    assert_eq!(mask_len(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
    assert_eq!(mask_len(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
    assert_eq!(mask_len(Ipv4Addr::new(0, 0, 0, 0)), Some(0));
    assert_eq!(mask_len(Ipv4Addr::new(255, 0, 255, 0)), None);
}

mod step {
    use super::super::step::{run_step, Decision, DhcpClient, DhcpStepError};
    use super::*;
    use crate::report::{EventSink, Reporter};
    use crate::system::{ApplySummary, NetError};
    use crate::test_support::{empty_report, Buf};

    #[derive(Default)]
    struct Net {
        applied: Vec<NetConfig>,
    }
    impl crate::system::Apply for Net {
        async fn apply(&mut self, _i: u32, cfg: &NetConfig) -> Result<ApplySummary, NetError> {
            self.applied.push(cfg.clone());
            Ok(ApplySummary::default())
        }
    }

    struct Client(Option<DhcpOutcome>, Vec<Duration>);
    impl DhcpClient for Client {
        async fn lease(
            &mut self,
            _index: u32,
            _iface: &str,
            timeout: Duration,
        ) -> Result<DhcpOutcome, DhcpError> {
            self.1.push(timeout);
            self.0.take().ok_or(DhcpError::Socket {
                interface: "eth0".into(),
                source: io::Error::from_raw_os_error(libc::EPERM),
            })
        }
    }

    fn go(
        base: &NetConfig,
        outcome: Option<DhcpOutcome>,
    ) -> (Result<Decision, DhcpStepError>, Net, String) {
        let human = Buf::default();
        let mut rep = Reporter::new(
            Some(Box::new(human.clone())),
            EventSink::Writer(Box::new(Buf::default())),
            None,
            empty_report(),
        );
        let mut net = Net::default();
        let mut client = Client(outcome, vec![]);
        let r = block(run_step(
            &mut net,
            &mut client,
            2,
            base,
            Duration::from_secs(3),
            &mut rep,
        ));
        assert_eq!(client.1, vec![Duration::from_secs(3)]);
        (r, net, human.text())
    }

    #[test]
    fn lease_is_decided_after_the_link_is_set_up() {
        let mut b = base();
        b.mtu = Some(1450);
        let (r, net, human) = go(&b, Some(DhcpOutcome::Leased(lease())));
        let Ok(Decision::Leased { cfg, .. }) = r else {
            panic!("{r:?}")
        };
        assert_eq!(cfg.source, ConfigSource::Dhcp);
        // only the link part went out before the exchange
        assert_eq!(net.applied.len(), 1);
        assert!(net.applied[0].addresses.is_empty());
        assert_eq!(net.applied[0].mtu, Some(1450));
        assert!(
            human.contains("lease 192.168.100.57/24 from 192.168.100.1"),
            "{human}"
        );
    }

    #[test]
    fn no_lease_falls_back_or_fails_without_a_fallback() {
        let silent = || DhcpOutcome::TimedOut {
            offers: 0,
            naks: 0,
            waited: Duration::from_secs(3),
        };
        let (r, _, human) = go(&base(), Some(silent()));
        let Ok(Decision::Fallback { cfg, reason }) = r else {
            panic!("{r:?}")
        };
        assert_eq!(cfg.source, ConfigSource::Fallback);
        assert_eq!(cfg.addresses, base().addresses);
        assert!(reason.contains("no DHCP server answered"), "{reason}");
        assert!(human.contains("static fallback"), "{human}");

        let mut b = base();
        b.addresses.clear();
        let (r, _, _) = go(&b, Some(silent()));
        let err = r.unwrap_err();
        assert!(matches!(err, DhcpStepError::NoLease { .. }));
        assert!(err.to_string().contains("no static fallback"), "{err}");

        let (r, _, _) = go(&base(), None);
        assert!(matches!(r, Err(DhcpStepError::Client(_))), "{r:?}");
    }
}
