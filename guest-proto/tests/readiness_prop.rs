//! Property tests of the pushed readiness line: whatever the agent puts in it (service names
//! full of control characters, huge netinit messages, hundreds of services), the wire form is
//! ONE line ending in `\n`, at most `MAX_LINE_BYTES`, and reads back as the bounded value.

use guest_proto::api::{AuthMode, ServiceState};
use guest_proto::readiness::{
    AgentState, NetinitFailure, NetinitSummary, ReadinessLine, ServiceSummary, MAX_LINE_BYTES,
};
use guest_proto::report::{AddressReport, ConfigSource, Outcome};
use proptest::prelude::*;
use std::net::{IpAddr, Ipv4Addr};

/// Any text, weighted towards what makes escaping expensive.
fn text(max: usize) -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::string::string_regex(&format!("[\\x00-\\x1f\"\\\\]{{0,{max}}}")).unwrap(),
        proptest::collection::vec(any::<char>(), 0..max).prop_map(|v| v.into_iter().collect()),
        "[a-z0-9_-]{0,20}",
    ]
}

fn service_state() -> impl Strategy<Value = ServiceState> {
    prop::sample::select(vec![
        ServiceState::Starting,
        ServiceState::Running,
        ServiceState::Backoff,
        ServiceState::CrashLoop,
        ServiceState::Stopped,
        ServiceState::Unknown,
    ])
}

fn network() -> impl Strategy<Value = Option<NetinitSummary>> {
    proptest::option::of(
        (
            prop::sample::select(vec![
                Outcome::Configured,
                Outcome::Fallback,
                Outcome::NothingToDo,
                Outcome::Failed,
            ]),
            proptest::option::of(text(100)),
            proptest::option::of(prop::sample::select(vec![
                ConfigSource::Cmdline,
                ConfigSource::Dhcp,
            ])),
            proptest::collection::vec((any::<u32>(), 0u8..=32), 0..10),
            proptest::option::of((text(80), any::<i32>(), text(3000))),
        )
            .prop_map(
                |(outcome, interface, source, addrs, failure)| NetinitSummary {
                    outcome,
                    interface,
                    source,
                    addresses: addrs
                        .into_iter()
                        .map(|(a, p)| AddressReport {
                            address: IpAddr::V4(Ipv4Addr::from(a)),
                            prefix_len: p,
                        })
                        .collect(),
                    failure: failure.map(|(class, exit_code, message)| NetinitFailure {
                        class,
                        exit_code,
                        message,
                    }),
                },
            ),
    )
}

fn line() -> impl Strategy<Value = ReadinessLine> {
    (
        any::<u64>(),
        prop::sample::select(vec![
            AgentState::Starting,
            AgentState::Ready,
            AgentState::Degraded,
            AgentState::ShuttingDown,
        ]),
        text(100),
        any::<u64>(),
        proptest::option::of(prop::sample::select(vec![
            AuthMode::Token,
            AuthMode::TokenSha256,
            AuthMode::Disabled,
            AuthMode::Unconfigured,
            AuthMode::Invalid,
        ])),
        proptest::collection::vec((text(120), service_state(), any::<bool>()), 0..60),
        network(),
        proptest::collection::vec(text(400), 0..12),
    )
        .prop_map(
            |(seq, state, agent_version, uptime_ms, auth, services, network, reasons)| {
                ReadinessLine {
                    version: 1,
                    seq,
                    state,
                    agent_version,
                    uptime_ms,
                    auth,
                    services: services
                        .into_iter()
                        .map(|(name, state, required)| ServiceSummary {
                            name,
                            state,
                            required,
                        })
                        .collect(),
                    services_omitted: 0,
                    network,
                    reasons,
                }
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn one_bounded_line_that_round_trips(l in line()) {
        let wire = l.to_line().expect("a bounded line always serialises");
        prop_assert!(wire.len() <= MAX_LINE_BYTES, "{} bytes", wire.len());
        prop_assert!(wire.ends_with('\n'));
        prop_assert_eq!(wire.matches('\n').count(), 1);
        let back = ReadinessLine::parse(wire.as_bytes()).expect("own line parses");
        prop_assert_eq!(&back, &l.clone().bounded());
        // Bounding is idempotent: a host re-serialising what it read gets the same bytes.
        prop_assert_eq!(back.to_line().unwrap(), wire);
    }

    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = ReadinessLine::parse(&bytes);
    }
}

/// The worst case the bounds allow still fits: every list at its cap, every text field made
/// of characters that escape to six bytes.
#[test]
fn worst_case_fits() {
    let ctl = "\u{1}".repeat(10_000);
    let l = ReadinessLine {
        version: u32::MAX,
        seq: u64::MAX,
        state: AgentState::ShuttingDown,
        agent_version: ctl.clone(),
        uptime_ms: u64::MAX,
        auth: Some(AuthMode::Unconfigured),
        services: (0..1000)
            .map(|_| ServiceSummary {
                name: ctl.clone(),
                state: ServiceState::CrashLoop,
                required: false,
            })
            .collect(),
        services_omitted: u32::MAX - 3,
        network: Some(NetinitSummary {
            outcome: Outcome::NothingToDo,
            interface: Some(ctl.clone()),
            source: Some(ConfigSource::Fallback),
            addresses: vec![
                AddressReport {
                    address: "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff".parse().unwrap(),
                    prefix_len: 128,
                };
                100
            ],
            failure: Some(NetinitFailure {
                class: ctl.clone(),
                exit_code: i32::MIN,
                message: ctl.clone(),
            }),
        }),
        reasons: vec![ctl; 100],
    };
    let wire = l.to_line().unwrap();
    assert!(wire.len() <= MAX_LINE_BYTES, "{} bytes", wire.len());
    eprintln!("worst case: {} bytes", wire.len());
}
