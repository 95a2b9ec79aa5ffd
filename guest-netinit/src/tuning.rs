//! Run tunables from the kernel command line: `guest_netinit.link_timeout=DUR`,
//! `guest_netinit.probe=0|1`, `guest_netinit.probe_timeout=DUR`, `guest_netinit.dhcp_timeout=DUR`.
//!
//! In init mode guest-netinit is started by the kernel, so its flags are baked into the image;
//! these let an operator (or a test: a VM without a NIC need not wait 30 s) tune a run per boot
//! without rebuilding it. A flag given on guest-netinit's own command line wins over the
//! cmdline (the image's author asked for it explicitly). The last occurrence of a parameter
//! wins, as for the kernel's own. A malformed value is bad config (exit 3) naming the
//! parameter; an unknown `guest_netinit.*` key is a warning (a typo must not go unseen, nor
//! stop the boot). `guest_netinit.next=` belongs to init mode (`init.rs`).

use crate::cli::{parse_duration, RunOptions};
use crate::report::fmt_duration;
use crate::sources::ConfigError;
use guest_proto::KernelCmdline;

/// The parameters' common prefix.
pub const PREFIX: &str = "guest_netinit.";

/// Keys after [`PREFIX`] that are known (the run's, and init mode's `next`).
pub const KEYS: [&str; 5] = [
    "link_timeout",
    "probe",
    "probe_timeout",
    "dhcp_timeout",
    "next",
];

/// What the cmdline changed.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tuning {
    /// One phrase per value taken from the cmdline: `link-timeout 2.00 s`, `no probe`.
    pub applied: Vec<String>,
    /// One phrase per cmdline value a flag overrode: `guest_netinit.probe=1 (--no-probe wins)`.
    pub overridden: Vec<String>,
    /// Unknown `guest_netinit.*` keys.
    pub warnings: Vec<String>,
}

impl Tuning {
    /// For the read-config line: `; cmdline: link-timeout 2.00 s, no probe`, or empty.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if !self.applied.is_empty() {
            parts.push(format!("cmdline: {}", self.applied.join(", ")));
        }
        if !self.overridden.is_empty() {
            parts.push(format!("flags win over {}", self.overridden.join(", ")));
        }
        if parts.is_empty() {
            String::new()
        } else {
            format!("; {}", parts.join("; "))
        }
    }
}

/// `opts` with the cmdline's `guest_netinit.*` values applied where no flag set them.
/// Nothing is changed when a value is malformed.
pub fn apply(opts: &RunOptions, cmd: &KernelCmdline) -> Result<(RunOptions, Tuning), ConfigError> {
    let mut out = opts.clone();
    let mut tuning = Tuning::default();
    for (key, value) in &cmd.params {
        let Some(name) = key.strip_prefix(PREFIX) else {
            continue;
        };
        let raw = || format!("{key}={}", value.as_deref().unwrap_or(""));
        let bad = |why: String| ConfigError::Cmdline(format!("{key}: {why}"));
        let duration = || -> Result<std::time::Duration, ConfigError> {
            let v = value
                .as_deref()
                .ok_or_else(|| bad("needs a duration (30s, 500ms, 2)".into()))?;
            parse_duration(v).map_err(bad)
        };
        match name {
            "link_timeout" | "probe_timeout" | "dhcp_timeout" => {
                let d = duration()?;
                let (slot, given, flag) = match name {
                    "link_timeout" => (
                        &mut out.link_timeout,
                        opts.given.link_timeout,
                        "--link-timeout",
                    ),
                    "probe_timeout" => (
                        &mut out.probe_timeout,
                        opts.given.probe_timeout,
                        "--probe-timeout",
                    ),
                    _ => (
                        &mut out.dhcp_timeout,
                        opts.given.dhcp_timeout,
                        "--dhcp-timeout",
                    ),
                };
                if given {
                    tuning.overridden.push(format!("{} ({flag} wins)", raw()));
                } else {
                    *slot = d;
                    tuning
                        .applied
                        .push(format!("{} {}", name.replace('_', "-"), fmt_duration(d)));
                }
            }
            "probe" => {
                let on = match value.as_deref() {
                    None | Some("1" | "yes" | "true" | "on") => true,
                    Some("0" | "no" | "false" | "off") => false,
                    Some(other) => return Err(bad(format!("`{other}` is not 0 or 1"))),
                };
                if opts.given.probe {
                    tuning
                        .overridden
                        .push(format!("{} (--no-probe wins)", raw()));
                } else {
                    out.probe = on;
                    tuning
                        .applied
                        .push(if on { "probe" } else { "no probe" }.to_string());
                }
            }
            "next" => {}
            _ => tuning.warnings.push(format!(
                "kernel cmdline: {} ignored: unknown parameter (known: {})",
                raw(),
                KEYS.map(|k| format!("{PREFIX}{k}=")).join(", ")
            )),
        }
    }
    Ok((out, tuning))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn tune(opts: &RunOptions, text: &str) -> Result<(RunOptions, Tuning), ConfigError> {
        apply(opts, &KernelCmdline::parse(text))
    }

    #[test]
    fn cmdline_values_replace_the_defaults() {
        let (o, t) = tune(
            &RunOptions::default(),
            "console=ttyS0 guest_netinit.link_timeout=2s guest_netinit.probe=0 \
             guest_netinit.probe_timeout=300ms guest_netinit.dhcp_timeout=1 quiet",
        )
        .unwrap();
        assert_eq!(o.link_timeout, Duration::from_secs(2));
        assert!(!o.probe);
        assert_eq!(o.probe_timeout, Duration::from_millis(300));
        assert_eq!(o.dhcp_timeout, Duration::from_secs(1));
        assert_eq!(t.applied.len(), 4, "{t:?}");
        assert!(t.summary().contains("link-timeout 2"), "{}", t.summary());
        assert!(t.summary().contains("no probe"), "{}", t.summary());
        assert!(t.warnings.is_empty() && t.overridden.is_empty());
    }

    #[test]
    fn flags_win_and_the_override_is_said() {
        let mut opts = RunOptions {
            link_timeout: Duration::from_secs(7),
            probe: false,
            ..RunOptions::default()
        };
        opts.given.link_timeout = true;
        opts.given.probe = true;
        let (o, t) = tune(
            &opts,
            "guest_netinit.link_timeout=1s guest_netinit.probe=1 guest_netinit.dhcp_timeout=2s",
        )
        .unwrap();
        assert_eq!(o.link_timeout, Duration::from_secs(7));
        assert!(!o.probe);
        assert_eq!(o.dhcp_timeout, Duration::from_secs(2), "no flag: cmdline");
        assert_eq!(t.overridden.len(), 2, "{t:?}");
        assert!(
            t.summary().contains("--link-timeout wins"),
            "{}",
            t.summary()
        );
    }

    #[test]
    fn last_one_wins_and_bare_probe_is_on() {
        let (o, _) = tune(
            &RunOptions::default(),
            "guest_netinit.link_timeout=1s guest_netinit.link_timeout=3s guest_netinit.probe=off guest_netinit.probe",
        )
        .unwrap();
        assert_eq!(o.link_timeout, Duration::from_secs(3));
        assert!(o.probe);
    }

    #[test]
    fn malformed_values_are_bad_config_naming_the_parameter() {
        for (text, needle) in [
            (
                "guest_netinit.link_timeout=soon",
                "guest_netinit.link_timeout: `soon`",
            ),
            (
                "guest_netinit.link_timeout",
                "guest_netinit.link_timeout: needs a duration",
            ),
            (
                "guest_netinit.dhcp_timeout=90000",
                "guest_netinit.dhcp_timeout: `90000` is longer",
            ),
            (
                "guest_netinit.probe=maybe",
                "guest_netinit.probe: `maybe` is not 0 or 1",
            ),
        ] {
            let e = tune(&RunOptions::default(), text).unwrap_err();
            assert!(e.to_string().contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn unknown_keys_are_warnings_and_unrelated_parameters_are_ignored() {
        let (o, t) = tune(
            &RunOptions::default(),
            "guest_netinit.link_timout=2s guest_netinit.next=/sbin/init guest.link_timeout=1s link_timeout=1",
        )
        .unwrap();
        assert_eq!(o, RunOptions::default());
        assert_eq!(t.warnings.len(), 1, "{t:?}");
        assert!(
            t.warnings[0].contains("guest_netinit.link_timout=2s"),
            "{t:?}"
        );
        assert_eq!(t.summary(), "");
    }
}
