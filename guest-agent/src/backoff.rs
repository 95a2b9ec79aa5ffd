//! Restart timing, pure: the first exit restarts at once (failure F8: the old supervisor
//! left 10 s gaps), repeated quick exits back off exponentially with jitter, and N failures
//! inside a window enter `crash-loop`, which keeps retrying at the slowest pace.
//!
//! No clock and no randomness inside: callers pass `now` and a uniform `[0, 1)` sample.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Tunables (from `[supervisor]` in the config).
#[derive(Debug, Clone, PartialEq)]
pub struct BackoffPolicy {
    pub initial: Duration,
    pub max: Duration,
    /// Failures within `window` that make a crash loop.
    pub crash_loop_failures: u32,
    pub window: Duration,
    /// A run at least this long resets the exponential step.
    pub healthy_after: Duration,
    /// ± fraction of the delay, e.g. 0.2.
    pub jitter: f64,
}

/// What to do after an exit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub delay: Duration,
    pub crash_loop: bool,
}

/// Per-service restart history.
#[derive(Debug, Clone)]
pub struct Backoff {
    policy: BackoffPolicy,
    /// Quick exits in a row (reset by a healthy run or a manual restart).
    streak: u32,
    failures: VecDeque<Instant>,
}

impl Backoff {
    pub fn new(policy: BackoffPolicy) -> Self {
        Self {
            policy,
            streak: 0,
            failures: VecDeque::new(),
        }
    }

    /// Records an exit at `now` after running `ran_for`; `failed` is a non-zero exit, a
    /// signal or a liveness kill. `rand01` is uniform in `[0, 1)`.
    pub fn on_exit(
        &mut self,
        now: Instant,
        ran_for: Duration,
        failed: bool,
        rand01: f64,
    ) -> Decision {
        if ran_for >= self.policy.healthy_after {
            self.streak = 0;
        }
        self.streak = self.streak.saturating_add(1);
        if failed {
            self.failures.push_back(now);
        }
        while let Some(&t) = self.failures.front() {
            if now.saturating_duration_since(t) > self.policy.window {
                self.failures.pop_front();
            } else {
                break;
            }
        }
        let crash_loop = self.failures.len() as u64 >= u64::from(self.policy.crash_loop_failures);
        let base = if crash_loop {
            self.policy.max
        } else if self.streak <= 1 {
            Duration::ZERO
        } else {
            let exp = (self.streak - 2).min(30);
            self.policy
                .initial
                .saturating_mul(1u32 << exp)
                .min(self.policy.max)
        };
        let factor = 1.0 + self.policy.jitter * (2.0 * rand01.clamp(0.0, 1.0) - 1.0);
        let delay = base.mul_f64(factor.max(0.0)).min(self.policy.max);
        Decision { delay, crash_loop }
    }

    /// A manual restart: start afresh.
    pub fn reset(&mut self) {
        self.streak = 0;
        self.failures.clear();
    }

    /// Failures currently inside the window.
    pub fn recent_failures(&self) -> usize {
        self.failures.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy() -> BackoffPolicy {
        BackoffPolicy {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            crash_loop_failures: 5,
            window: Duration::from_secs(60),
            healthy_after: Duration::from_secs(10),
            jitter: 0.0,
        }
    }

    #[test]
    fn first_exit_restarts_at_once_then_doubles_up_to_the_cap() {
        let mut b = Backoff::new(BackoffPolicy {
            crash_loop_failures: 100,
            ..policy()
        });
        let t = Instant::now();
        let delays: Vec<u128> = (0..10)
            .map(|i| {
                b.on_exit(
                    t + Duration::from_secs(i),
                    Duration::from_millis(5),
                    true,
                    0.5,
                )
                .delay
                .as_millis()
            })
            .collect();
        assert_eq!(
            delays,
            [0, 100, 200, 400, 800, 1600, 3200, 6400, 10000, 10000]
        );
    }

    #[test]
    fn a_healthy_run_resets_the_streak() {
        let mut b = Backoff::new(policy());
        let t = Instant::now();
        b.on_exit(t, Duration::from_millis(1), true, 0.5);
        assert_eq!(
            b.on_exit(t, Duration::from_millis(1), true, 0.5).delay,
            Duration::from_millis(100)
        );
        assert_eq!(
            b.on_exit(t, Duration::from_secs(11), true, 0.5).delay,
            Duration::ZERO
        );
    }

    #[test]
    fn crash_loop_after_n_failures_in_the_window_and_out_when_they_age() {
        let mut b = Backoff::new(policy());
        let t = Instant::now();
        let states: Vec<bool> = (0..5)
            .map(|_| b.on_exit(t, Duration::from_millis(1), true, 0.5).crash_loop)
            .collect();
        assert_eq!(states, [false, false, false, false, true]);
        let d = b.on_exit(t, Duration::from_millis(1), true, 0.5);
        assert!(d.crash_loop);
        assert_eq!(d.delay, policy().max);
        // 61 s later the old failures left the window.
        let d = b.on_exit(
            t + Duration::from_secs(61),
            Duration::from_millis(1),
            true,
            0.5,
        );
        assert!(!d.crash_loop);
        assert_eq!(b.recent_failures(), 1);
    }

    #[test]
    fn clean_exits_back_off_but_never_crash_loop() {
        let mut b = Backoff::new(policy());
        let t = Instant::now();
        for _ in 0..20 {
            assert!(
                !b.on_exit(t, Duration::from_millis(1), false, 0.5)
                    .crash_loop
            );
        }
        assert_eq!(
            b.on_exit(t, Duration::from_millis(1), false, 0.5).delay,
            policy().max
        );
    }

    proptest! {
        #[test]
        fn jitter_stays_within_bounds(r in 0.0f64..1.0, n in 1u32..12) {
            let p = BackoffPolicy { jitter: 0.2, crash_loop_failures: 1000, ..policy() };
            let mut jit = Backoff::new(p.clone());
            let mut flat = Backoff::new(BackoffPolicy { jitter: 0.0, ..p });
            let t = Instant::now();
            for _ in 0..n {
                let d = jit.on_exit(t, Duration::ZERO, true, r).delay.as_secs_f64();
                let base = flat.on_exit(t, Duration::ZERO, true, 0.5).delay.as_secs_f64();
                prop_assert!(d >= base * 0.8 - 1e-9 && d <= (base * 1.2).min(10.0) + 1e-9);
            }
        }
    }
}
