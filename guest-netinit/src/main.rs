//! `guest-netinit`: the binary. Reads the arguments (`cli`), then prints a parsed cmdline
//! (`parse`), lints an image (`check`), runs as PID 1 (`init`, also chosen when started by the
//! kernel as init), or runs the steps (`run`) on a current-thread tokio runtime with the real
//! system: rtnetlink (`netlink`), kernel modules (`modules`), the ARP probe (`probe`).
//! Exit codes: `exit.rs`.

use guest_netinit::cli::{self, Command, RunOptions, USAGE};
use guest_netinit::dhcp::step::PacketDhcp;
use guest_netinit::exit::RunError;
use guest_netinit::init;
use guest_netinit::modules::KernelModules;
use guest_netinit::netlink::Netlink;
use guest_netinit::probe::ArpProber;
use guest_netinit::report::{blank_report, EventSink, Notifier, Reporter};
use guest_netinit::run::{self, Connect, Deps};
use guest_netinit::sources::{self, CmdlineInputs};
use guest_netinit::system::NetError;
use guest_proto::KernelCmdline;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Opens the rtnetlink connection (subscribed to link events) when the run needs it.
struct NetlinkConnect;

impl Connect for NetlinkConnect {
    type Net = Netlink;
    async fn connect(&mut self) -> Result<Netlink, NetError> {
        Netlink::connect().await
    }
}

fn main() {
    let code = match cli::parse_args_for_pid(std::process::id(), std::env::args_os().skip(1)) {
        Err(msg) => {
            eprintln!("guest-netinit: {msg}\n{USAGE}");
            2
        }
        Ok(Command::Help) => {
            println!("{USAGE}");
            0
        }
        Ok(Command::Version) => {
            println!("guest-netinit {}", env!("CARGO_PKG_VERSION"));
            0
        }
        Ok(Command::Parse(params)) => parse_cmd(&params),
        Ok(Command::Check(args)) => guest_netinit::check::main(&args),
        Ok(Command::Init(args)) => match init::parse_args(&args) {
            Ok(o) => init::main(&o, run_cmd),
            // PID 1 must not exit over a bad flag: say so and boot with the defaults.
            Err(msg) if std::process::id() == 1 => {
                init::main(&init::fallback(&args, &msg), run_cmd)
            }
            Err(msg) => {
                eprintln!("guest-netinit: {msg}\n{USAGE}");
                2
            }
        },
        Ok(Command::Run(opts)) => run_cmd(&opts),
    };
    std::process::exit(code);
}

fn run_cmd(opts: &RunOptions) -> i32 {
    let t0 = Instant::now();
    let started_at_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0);
    let human = (!opts.quiet_human).then(|| Box::new(std::io::stdout()) as Box<dyn Write>);
    let mut rep = Reporter::new(
        human,
        EventSink::open(opts.events.as_deref()),
        Notifier::from_env(),
        blank_report(started_at_ms),
    );
    let result = (|| {
        let root = opts.root.clone().unwrap_or_else(|| PathBuf::from("/"));
        // With --root, sysfs is read from ROOT/sys too, so tests can fake a driverless device.
        let sys = if opts.root.is_some() {
            root.join("sys")
        } else {
            PathBuf::from("/sys")
        };
        let release = KernelModules::running_release()
            .map_err(|e| RunError::Internal(format!("uname: {e}")))?;
        let mut deps = Deps {
            connect: NetlinkConnect,
            modules: KernelModules::new(Path::new(&root), &sys, release),
            prober: ArpProber,
            dhcp: PacketDhcp,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| RunError::Internal(format!("tokio runtime: {e}")))?;
        rt.block_on(run::run(opts, &mut deps, &mut rep))
    })();
    run::finish(&mut rep, result, opts, t0)
}

/// `guest-netinit parse PARAM...`: each argument is one cmdline parameter (`ip=...`,
/// `nameserver=...`, `rd.route=...`, `guest.NAME=...`). Prints JSON; exit 3 on a malformed one.
fn parse_cmd(params: &[String]) -> i32 {
    let cmd = KernelCmdline {
        params: params
            .iter()
            .map(|p| match p.split_once('=') {
                Some((k, v)) => (k.to_string(), Some(v.to_string())),
                None => (p.clone(), None),
            })
            .collect(),
    };
    let inputs = match CmdlineInputs::from_cmdline(&cmd) {
        Ok(i) => i,
        Err(e) => {
            eprintln!("guest-netinit: {e}");
            return 3;
        }
    };
    let (config, warnings, config_error) = match sources::build(&inputs, None) {
        Ok(plan) => (plan.config, plan.warnings, None),
        Err(e) => (None, vec![], Some(e.to_string())),
    };
    let out = serde_json::json!({
        "ip": inputs.ips,
        "nameservers": inputs.nameservers,
        "rd_routes": inputs.routes,
        "template_values": inputs.values,
        "config": config,
        "config_error": config_error,
        "warnings": warnings,
    });
    match serde_json::to_string_pretty(&out) {
        Ok(s) => {
            println!("{s}");
            0
        }
        Err(e) => {
            eprintln!("guest-netinit: internal error: {e}");
            1
        }
    }
}
