//! The agent as PID 1. In the initramfs image guest-netinit execs `guest-agent supervise` with
//! its own PID, so the supervisor *is* init. PID 1 must never return: when it does, the kernel
//! panics with "Attempted to kill init!" and the console shows nothing about why (the old
//! fleet's invisible failures, DESIGN.md §1). So every way out of the agent as PID 1 — a bad
//! config, an internal error, a panic, SIGTERM — goes through [`end`]: one console event that
//! says why, every other process stopped, the disks synced, and a clean power-off. If even the
//! power-off is refused, PID 1 stays alive (reaping) instead of returning.
//!
//! The kernel also hands PID 1 any word of its command line it does not know (`help`, `-h`,
//! `single`) as arguments; [`supervise_args`] keeps a stray word from turning into clap's
//! usage text and an exit.

use guest_proto::{Event, FailureReport, Level};
use std::time::{Duration, Instant};

/// How long the other processes get between SIGTERM and SIGKILL at power-off.
pub const STOP_GRACE: Duration = Duration::from_secs(2);

/// Whether this process is PID 1 (in its PID namespace).
pub fn is_pid1() -> bool {
    std::process::id() == 1
}

/// As PID 1, the arguments to parse: `args` (argv[0] first) when they name a role; else the
/// part from the first `supervise` on; else just `supervise`. Returns the words dropped (for a
/// console warning), empty when nothing was.
pub fn supervise_args(
    args: &[String],
    parses: impl Fn(&[String]) -> bool,
) -> (Vec<String>, Vec<String>) {
    let argv0 = args
        .first()
        .cloned()
        .unwrap_or_else(|| "guest-agent".into());
    if parses(args) {
        return (args.to_vec(), Vec::new());
    }
    let rest = args.get(1..).unwrap_or_default();
    if let Some(i) = rest.iter().position(|a| a == "supervise") {
        let candidate: Vec<String> = std::iter::once(argv0.clone())
            .chain(rest[i..].iter().cloned())
            .collect();
        if parses(&candidate) {
            return (candidate, rest[..i].to_vec());
        }
    }
    (vec![argv0, "supervise".into()], rest.to_vec())
}

/// Says on the console that stray kernel words were ignored.
pub fn warn_dropped(dropped: &[String]) {
    if dropped.is_empty() {
        return;
    }
    crate::console::emit(
        Level::Warn,
        Event::Warning {
            message: format!(
                "guest-agent (PID 1): ignoring init arguments that are not ours: {}",
                dropped.join(" ")
            ),
        },
    );
}

/// As PID 1, a panic anywhere is said on the console and ends in [`power_off`]; otherwise
/// nothing changes.
pub fn install_panic_hook() {
    if !is_pid1() {
        return;
    }
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        previous(info);
        say_failed("internal", 70, &format!("panic: {info}; powering off"));
        power_off();
    }));
}

/// The end of the agent. Not PID 1: returns the exit status to use. PID 1: says why on the
/// console and powers off; never returns.
pub fn end(outcome: &anyhow::Result<()>) -> std::process::ExitCode {
    if !is_pid1() {
        return match outcome {
            Ok(()) => std::process::ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("guest-agent: {e:#}");
                std::process::ExitCode::FAILURE
            }
        };
    }
    match outcome {
        Ok(()) => crate::console::emit(
            Level::Warn,
            Event::Warning {
                message: "guest-agent (PID 1): stopped (SIGTERM or SIGINT); powering off".into(),
            },
        ),
        Err(e) => {
            let text = format!("{e:#}");
            // The failure class from the error's type, not from its wording.
            let class = if e.downcast_ref::<crate::config::ConfigError>().is_some() {
                "bad-config"
            } else {
                "internal"
            };
            say_failed(
                class,
                1,
                &format!("guest-agent (PID 1): {text}; powering off (init must not exit)"),
            );
        }
    }
    power_off()
}

fn say_failed(class: &str, exit_code: i32, message: &str) {
    crate::console::emit(
        Level::Error,
        Event::Failed {
            failure: FailureReport {
                class: class.into(),
                exit_code,
                message: message.into(),
            },
        },
    );
}

/// Stops every other process (SIGTERM, [`STOP_GRACE`], SIGKILL), syncs and powers off. In a
/// PID namespace the kernel ends the namespace's init with SIGINT instead (what the tests
/// observe). If the power-off is refused, stays alive reaping: PID 1 never returns.
pub fn power_off() -> ! {
    // SAFETY: plain syscalls on no memory of ours. kill(-1) reaches every process but us.
    unsafe {
        libc::kill(-1, libc::SIGTERM);
    }
    let deadline = Instant::now() + STOP_GRACE;
    while Instant::now() < deadline && reap_all() {
        std::thread::sleep(Duration::from_millis(20));
    }
    // SAFETY: as above.
    unsafe {
        libc::kill(-1, libc::SIGKILL);
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    let err = std::io::Error::last_os_error();
    say_failed(
        "internal",
        1,
        &format!("guest-agent (PID 1): power off refused: {err}; staying up without services"),
    );
    loop {
        reap_all();
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Reaps every exited child; `true` while children remain.
fn reap_all() -> bool {
    loop {
        let mut status = 0;
        // SAFETY: waitpid with a valid out pointer.
        let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
        match pid {
            0 => return true,
            p if p < 0 => return false,
            _ => continue,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    /// Parses like the binary's clap: `supervise` with optional flags.
    fn parses(a: &[String]) -> bool {
        a.get(1).map(String::as_str) == Some("supervise")
            && a[2..].iter().all(|x| x.starts_with("--"))
    }

    #[test]
    fn good_arguments_are_kept() {
        let a = s(&["/sbin/guest-agent", "supervise", "--dev"]);
        assert_eq!(supervise_args(&a, parses), (a.clone(), vec![]));
    }

    #[test]
    fn stray_kernel_words_before_supervise_are_dropped() {
        let a = s(&[
            "/sbin/guest-agent",
            "help",
            "-h",
            "supervise",
            "--config=/x",
        ]);
        let (args, dropped) = supervise_args(&a, parses);
        assert_eq!(args, s(&["/sbin/guest-agent", "supervise", "--config=/x"]));
        assert_eq!(dropped, s(&["help", "-h"]));
    }

    #[test]
    fn nothing_usable_means_plain_supervise() {
        let a = s(&["/sbin/guest-agent", "run", "single"]);
        let (args, dropped) = supervise_args(&a, parses);
        assert_eq!(args, s(&["/sbin/guest-agent", "supervise"]));
        assert_eq!(dropped, s(&["run", "single"]));
        let (args, _) = supervise_args(&s(&["x", "supervise", "stray"]), parses);
        assert_eq!(args, s(&["x", "supervise"]));
        let (args, dropped) = supervise_args(&[], parses);
        assert_eq!(args, s(&["guest-agent", "supervise"]));
        assert!(dropped.is_empty());
    }
}
