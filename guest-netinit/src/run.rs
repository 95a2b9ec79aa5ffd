//! The run, step by step (DESIGN.md §3): read-config, find-link (+ load-modules), dhcp (when
//! asked: lease or static fallback, `dhcp/step.rs`), apply, files, handoff, probe, report. Generic over the `system` traits, so every path (link late, never,
//! module missing, probe silent) is tested with fakes; `main.rs` plugs in the real ones.
//!
//! Finding the link: the netlink connection subscribes to link events when it is made, then we
//! look. When the link is absent we wait event-driven; after [`MODULE_GRACE`] (none in init
//! mode: no udev there, `RunOptions::module_grace`) and then every
//! [`MODULE_RECHECK`] until it is loaded once, we check for a virtio-net device without a driver
//! (a cheap sysfs read) and load `virtio_net` with its dependencies. The grace is short because
//! in the failure it exists for (F1, no udev loading the module, or init mode without udev) every
//! millisecond is boot time; it only spares a redundant `finit_module` when udev is binding the
//! driver at that moment. The recheck covers a device that is enumerated late.
//!
//! Nothing is applied before the link is found; a bad config stops in read-config, before any
//! netlink request.

use crate::cli::RunOptions;
use crate::config::NetConfig;
use crate::conflicts;
use crate::dhcp::step::{self as dhcp_step, Decision, DhcpClient};
use crate::exit::RunError;
use crate::files::{self, ResolvOutcome};
use crate::report::{fmt_duration, Reporter};
use crate::sources::{self, CmdlineInputs, ConfigError, TemplateInput};
use crate::system::{Apply, Links, Modules, NetError, Prober};
use crate::tuning::{self, Tuning};
use guest_proto::DhcpLeaseReport;
use guest_proto::KernelCmdline;
use guest_proto::{AddressReport, ConfigSource, Event, Level, Outcome, RouteReport};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Wait this long for the interface before looking for a driverless virtio-net device.
pub const MODULE_GRACE: Duration = Duration::from_millis(50);
/// Then look again this often until a module was loaded or the deadline passes.
pub const MODULE_RECHECK: Duration = Duration::from_millis(250);

/// Template paths tried, in order, when `--template` is not given (under ROOT).
pub const DEFAULT_TEMPLATES: [&str; 2] = [
    "/etc/guest-netinit/eth0.network",
    "/etc/systemd/network/10-eth0.network",
];

/// Opens the netlink side. The implementation subscribes to link events when connecting.
#[allow(async_fn_in_trait)] // static dispatch on a current-thread runtime
pub trait Connect {
    type Net: Links + Apply;
    async fn connect(&mut self) -> Result<Self::Net, NetError>;
}

/// The system the run acts on.
pub struct Deps<C, M, P, D> {
    pub connect: C,
    pub modules: M,
    pub prober: P,
    pub dhcp: D,
}

fn root_of(opts: &RunOptions) -> PathBuf {
    opts.root.clone().unwrap_or_else(|| PathBuf::from("/"))
}

/// Runs every step up to (not including) the final report; see [`finish`].
pub async fn run<C: Connect, M: Modules, P: Prober, D: DhcpClient>(
    opts: &RunOptions,
    deps: &mut Deps<C, M, P, D>,
    rep: &mut Reporter,
) -> Result<Outcome, RunError> {
    rep.event(
        Level::Info,
        Event::Start {
            version: env!("CARGO_PKG_VERSION").into(),
        },
    );
    let root = root_of(opts);

    // read-config (the cmdline's guest_netinit.* tunables first: they shape every later step)
    let t = Instant::now();
    let (cmdline, tuned) = match read_cmdline(opts, rep) {
        Ok(v) => v,
        Err(e) => {
            rep.step("read-config", false, t.elapsed(), &e.to_string());
            return Err(e);
        }
    };
    let opts = &tuned.0;
    let tuning = tuned.1.summary();
    let cfg = match read_config(opts, &root, &cmdline, rep) {
        Ok(Some(cfg)) => {
            rep.step(
                "read-config",
                true,
                t.elapsed(),
                &format!("{}{tuning}", describe(&cfg)),
            );
            cfg
        }
        Ok(None) => {
            rep.step(
                "read-config",
                true,
                t.elapsed(),
                &format!("nothing to do: no ip= address and no template{tuning}"),
            );
            return Ok(Outcome::NothingToDo);
        }
        Err(e) => {
            rep.step("read-config", false, t.elapsed(), &e.to_string());
            return Err(e);
        }
    };
    rep.report.interface = Some(cfg.interface.clone());
    rep.report.source = Some(cfg.source);
    rep.status(&format!("configuring {}", cfg.interface));

    // find-link
    let t = Instant::now();
    let found = find_link(opts, deps, rep, &cfg.interface).await;
    let (mut net, index) = match found {
        Ok(v) => {
            rep.step(
                "find-link",
                true,
                t.elapsed(),
                &format!("{} index {}", cfg.interface, v.1),
            );
            v
        }
        Err(e) => {
            rep.step("find-link", false, t.elapsed(), &e.to_string());
            return Err(e);
        }
    };

    // dhcp
    let mut outcome = Outcome::Configured;
    let cfg = if cfg.dhcp {
        let decision = dhcp_step::run_step(
            &mut net,
            &mut deps.dhcp,
            index,
            &cfg,
            opts.dhcp_timeout,
            rep,
        )
        .await?;
        match decision {
            Decision::Leased { cfg, lease } => {
                rep.report.dhcp = Some(DhcpLeaseReport {
                    lease: Some(lease.to_report()),
                    fallback_reason: None,
                });
                cfg
            }
            Decision::Fallback { cfg, reason } => {
                rep.report.dhcp = Some(DhcpLeaseReport {
                    lease: None,
                    fallback_reason: Some(reason),
                });
                outcome = Outcome::Fallback;
                cfg
            }
        }
    } else {
        cfg
    };
    rep.report.source = Some(cfg.source);

    // apply
    let t = Instant::now();
    match net.apply(index, &cfg).await {
        Ok(summary) => {
            let detail = if summary.actions.is_empty() {
                "nothing to change".into()
            } else {
                summary.actions.join(", ")
            };
            rep.step("apply", true, t.elapsed(), &detail);
        }
        Err(e) => {
            rep.step("apply", false, t.elapsed(), &e.to_string());
            return Err(e.into());
        }
    }
    record_applied(rep, &cfg);

    // files
    let t = Instant::now();
    match write_files(opts, &root, &cfg) {
        Ok(detail) => rep.step("files", true, t.elapsed(), &detail),
        Err(e) => {
            rep.step("files", false, t.elapsed(), &e.to_string());
            return Err(e.into());
        }
    }

    // handoff
    let t = Instant::now();
    match files::write_handoff(&root, &cfg) {
        Ok(path) => {
            rep.step(
                "handoff",
                true,
                t.elapsed(),
                &format!(
                    "{path} ({})",
                    if cfg.source == ConfigSource::Dhcp {
                        "DHCP=ipv4, KeepConfiguration=dhcp"
                    } else {
                        "KeepConfiguration=static"
                    }
                ),
            );
            rep.report.handoff_path = Some(path);
        }
        Err(e) => {
            rep.step("handoff", false, t.elapsed(), &e.to_string());
            return Err(e.into());
        }
    }

    // probe
    probe(opts, deps, rep, index, &cfg).await;
    Ok(outcome)
}

/// The kernel cmdline (`--cmdline FILE` or `/proc/cmdline`) and the options with its
/// `guest_netinit.*` tunables applied (flags win); warnings for unknown tunables.
fn read_cmdline(
    opts: &RunOptions,
    rep: &mut Reporter,
) -> Result<(KernelCmdline, (RunOptions, Tuning)), RunError> {
    let cmdline_path = opts
        .cmdline
        .clone()
        .unwrap_or_else(|| PathBuf::from("/proc/cmdline"));
    let text = std::fs::read_to_string(&cmdline_path)
        .map_err(|e| ConfigError::Cmdline(format!("reading {}: {e}", cmdline_path.display())))?;
    let cmdline = KernelCmdline::parse(&text);
    let tuned = tuning::apply(opts, &cmdline)?;
    for w in &tuned.1.warnings {
        rep.warning(w);
    }
    Ok((cmdline, tuned))
}

fn read_config(
    opts: &RunOptions,
    root: &Path,
    cmdline: &KernelCmdline,
    rep: &mut Reporter,
) -> Result<Option<NetConfig>, RunError> {
    let inputs = CmdlineInputs::from_cmdline(cmdline)?;
    let template = match &opts.template {
        Some(p) => Some(read_template(p)?),
        None => DEFAULT_TEMPLATES
            .iter()
            .map(|t| files::under(root, t))
            .find(|p| p.is_file())
            .map(|p| read_template(&p))
            .transpose()?,
    };
    let plan = sources::build(&inputs, template.as_ref())?;
    for w in &plan.warnings {
        rep.warning(w);
    }
    let Some(mut cfg) = plan.config else {
        return Ok(None);
    };
    for c in plan.conflicts {
        rep.conflict(c);
    }
    let winner = match cfg.source {
        ConfigSource::Cmdline => "cmdline ip=",
        _ => "template",
    };
    let mut ours: Vec<PathBuf> = template.iter().map(|t| PathBuf::from(&t.path)).collect();
    // DHCP without a static address: the old image kept its fallback in its own file.
    if cfg.dhcp && cfg.addresses.is_empty() {
        let found = sources::fallback_files(&cfg.interface)
            .iter()
            .map(|f| files::under(root, f))
            .find(|p| p.is_file());
        if let Some(path) = found {
            let input = read_template(&path)?;
            if let Some(w) = sources::add_fallback_file(&mut cfg, &input, &inputs.values)? {
                rep.warning(&w);
            }
            ours.push(path);
        }
    }
    let skip: Vec<&Path> = ours.iter().map(PathBuf::as_path).collect();
    for c in conflicts::scan(root, &cfg.interface, &skip, winner) {
        rep.conflict(c);
    }
    Ok(Some(cfg))
}

fn read_template(p: &Path) -> Result<TemplateInput, ConfigError> {
    let path = p.display().to_string();
    match std::fs::read_to_string(p) {
        Ok(text) => Ok(TemplateInput { path, text }),
        Err(source) => Err(ConfigError::TemplateRead { path, source }),
    }
}

/// One line saying what will be applied: `cmdline ip=: eth0 192.168.100.2/24 via 192.168.100.1`.
pub fn describe(cfg: &NetConfig) -> String {
    let src = match cfg.source {
        ConfigSource::Cmdline => "cmdline ip=",
        ConfigSource::Template => "template",
        ConfigSource::Dhcp => "dhcp",
        ConfigSource::Fallback => "fallback",
    };
    let mut s = format!("{src}: {}", cfg.interface);
    if cfg.dhcp && cfg.source != ConfigSource::Dhcp {
        s.push_str(" dhcp");
        if !cfg.addresses.is_empty() {
            s.push_str(", fallback");
        }
    }
    for a in &cfg.addresses {
        s.push_str(&format!(" {a}"));
    }
    if let Some(g) = cfg.gateway {
        s.push_str(&format!(" via {g}"));
    }
    if !cfg.routes.is_empty() {
        s.push_str(&format!(", {} route(s)", cfg.routes.len()));
    }
    if !cfg.dns.is_empty() {
        s.push_str(&format!(
            ", dns {}",
            cfg.dns
                .iter()
                .map(IpAddr::to_string)
                .collect::<Vec<_>>()
                .join(" ")
        ));
    }
    if let Some(m) = cfg.mtu {
        s.push_str(&format!(", mtu {m}"));
    }
    if let Some(m) = cfg.mac {
        s.push_str(&format!(", mac {m}"));
    }
    s
}

fn record_applied(rep: &mut Reporter, cfg: &NetConfig) {
    let r = &mut rep.report;
    r.addresses = cfg
        .addresses
        .iter()
        .map(|a| AddressReport {
            address: a.addr,
            prefix_len: a.prefix_len,
        })
        .collect();
    r.gateway = cfg.gateway;
    r.routes = cfg
        .routes
        .iter()
        .map(|x| RouteReport {
            destination: x.destination,
            prefix_len: x.prefix_len,
            gateway: x.gateway,
            metric: x.metric,
        })
        .collect();
    r.dns = cfg.dns.clone();
    r.search_domains = cfg.domains.clone();
    r.mtu = cfg.mtu;
    r.mac = cfg.mac;
    r.hostname = cfg.hostname.clone();
}

fn write_files(
    opts: &RunOptions,
    root: &Path,
    cfg: &NetConfig,
) -> Result<String, files::FilesError> {
    let mut parts = Vec::new();
    match files::write_resolv_conf(root, cfg)? {
        ResolvOutcome::NotNeeded => {}
        ResolvOutcome::Written => {
            parts.push(format!("resolv.conf: {} nameserver(s)", cfg.dns.len()))
        }
        ResolvOutcome::LeftSymlink(target) => parts.push(format!(
            "resolv.conf is a symlink to {target}: left alone, DNS goes to the networkd handoff"
        )),
    }
    if let Some(h) = &cfg.hostname {
        files::write_hostname(root, h, opts.root.is_none())?;
        parts.push(format!("hostname {h}"));
    }
    Ok(if parts.is_empty() {
        "nothing to write (no DNS, no hostname)".into()
    } else {
        parts.join("; ")
    })
}

async fn probe<C: Connect, M: Modules, P: Prober, D: DhcpClient>(
    opts: &RunOptions,
    deps: &mut Deps<C, M, P, D>,
    rep: &mut Reporter,
    index: u32,
    cfg: &NetConfig,
) {
    let t = Instant::now();
    if !opts.probe {
        rep.step(
            "probe",
            true,
            t.elapsed(),
            "skipped (--no-probe or guest_netinit.probe=0)",
        );
        return;
    }
    let (Some(IpAddr::V4(gw)), Some(IpAddr::V4(src))) = (
        cfg.gateway,
        cfg.addresses.iter().map(|a| a.addr).find(IpAddr::is_ipv4),
    ) else {
        rep.step(
            "probe",
            true,
            t.elapsed(),
            "skipped: no IPv4 gateway and address",
        );
        return;
    };
    let result = deps
        .prober
        .probe(index, &cfg.interface, src, gw, opts.probe_timeout)
        .await;
    if result.ok {
        let rtt = result
            .rtt_us
            .map(|us| fmt_duration(Duration::from_micros(us)))
            .unwrap_or_else(|| "?".into());
        let mac = result.mac.map(|m| format!(" at {m}")).unwrap_or_default();
        rep.step(
            "probe",
            true,
            t.elapsed(),
            &format!("gateway {gw}{mac} answered ARP in {rtt}"),
        );
    } else {
        let why = result.error.clone().unwrap_or_else(|| "no answer".into());
        let msg = format!(
            "gateway {gw} did not answer ARP within {}: {why}",
            fmt_duration(opts.probe_timeout)
        );
        rep.step("probe", true, t.elapsed(), &msg);
        rep.warning(&msg);
    }
    rep.report.probe = Some(result);
}

/// Ends the run: outcome and error in the report, `state.json` (also on failure), the `done` or
/// `failed` event, the summary line, sd_notify. Returns the exit code.
pub fn finish(
    rep: &mut Reporter,
    result: Result<Outcome, RunError>,
    opts: &RunOptions,
    t0: Instant,
) -> i32 {
    let t = Instant::now();
    let root = root_of(opts);
    let mut result = result;
    match &result {
        Ok(o) => rep.report.outcome = *o,
        Err(e) => {
            rep.report.outcome = Outcome::Failed;
            rep.report.error = Some(e.to_failure());
        }
    }
    rep.report.duration_us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
    if let Err(e) = files::write_state(&root, &rep.report) {
        if result.is_ok() {
            result = Err(e.into());
        } else {
            rep.say("warning", &format!("state file not written: {e}"));
        }
    }
    let total = t0.elapsed();
    let duration_us = u64::try_from(total.as_micros()).unwrap_or(u64::MAX);
    match result {
        Ok(outcome) => {
            let addresses: Vec<String> = rep
                .report
                .addresses
                .iter()
                .map(|a| format!("{}/{}", a.address, a.prefix_len))
                .collect();
            let iface = rep.report.interface.clone();
            rep.event(
                Level::Info,
                Event::Done {
                    interface: iface.clone(),
                    addresses: addresses.clone(),
                    duration_us,
                },
            );
            let summary = match outcome {
                Outcome::NothingToDo => "nothing to do".to_string(),
                _ => format!(
                    "{} {} configured",
                    iface.unwrap_or_default(),
                    addresses.join(" ")
                ),
            };
            rep.say(
                "report",
                &format!("{} ({})", files::STATE_FILE, fmt_duration(t.elapsed())),
            );
            rep.say("done", &format!("{summary} in {}", fmt_duration(total)));
            rep.status(&format!("{summary} in {}", fmt_duration(total)));
            0
        }
        Err(e) => {
            let failure = e.to_failure();
            let mut short = failure.clone();
            short.message = crate::report::clip(&short.message, crate::report::CLIP);
            rep.event(Level::Error, Event::Failed { failure: short });
            let line = format!(
                "exit {} ({}): {}",
                failure.exit_code, failure.class, failure.message
            );
            eprintln!("[netinit] failed      {line}");
            rep.status(&format!("failed: {line}"));
            failure.exit_code
        }
    }
}

#[path = "run_link.rs"]
mod link;
use link::find_link;

#[cfg(test)]
#[path = "run_tests.rs"]
mod tests;
