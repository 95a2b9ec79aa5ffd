//! Summary statistics for benchmark samples (nearest-rank percentiles: with 50 runs the p90 is
//! the 45th fastest run, a time that was actually measured).

use std::time::Duration;

/// Median, p90, min and max of a set of run times.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub runs: usize,
    pub median: Duration,
    pub p90: Duration,
    pub min: Duration,
    pub max: Duration,
}

/// Nearest-rank percentile `p` (0 < p ≤ 100) of sorted samples.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `None` for no samples.
pub fn summarize(samples: &[Duration]) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let n = sorted.len();
    // Even count: mean of the two middle runs.
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        (sorted[n / 2 - 1] + sorted[n / 2]) / 2
    };
    Some(Summary {
        runs: n,
        median,
        p90: percentile(&sorted, 90.0),
        min: sorted[0],
        max: sorted[n - 1],
    })
}

/// Milliseconds with enough digits for both a 2 s script and a 1 ms binary.
pub fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else if ms >= 10.0 {
        format!("{ms:.1} ms")
    } else {
        format!("{ms:.3} ms")
    }
}

/// Prints a runs/median/p90/min/max table, one row per named summary.
pub fn print_table(rows: &[(&str, &Summary)]) {
    println!(
        "{:<16} {:>6} {:>12} {:>12} {:>12} {:>12}",
        "", "runs", "median", "p90", "min", "max"
    );
    for (name, s) in rows {
        println!(
            "{:<16} {:>6} {:>12} {:>12} {:>12} {:>12}",
            name,
            s.runs,
            ms(s.median),
            ms(s.p90),
            ms(s.min),
            ms(s.max)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms_list(v: &[u64]) -> Vec<Duration> {
        v.iter().map(|&m| Duration::from_millis(m)).collect()
    }

    #[test]
    fn odd_and_even_medians_and_nearest_rank_p90() {
        let s = summarize(&ms_list(&[5, 1, 3])).unwrap();
        assert_eq!(s.median, Duration::from_millis(3));
        assert_eq!(
            (s.min, s.max),
            (Duration::from_millis(1), Duration::from_millis(5))
        );
        let s = summarize(&ms_list(&[4, 1, 3, 2])).unwrap();
        assert_eq!(s.median, Duration::from_micros(2500));
        let ten: Vec<u64> = (1..=10).collect();
        assert_eq!(
            summarize(&ms_list(&ten)).unwrap().p90,
            Duration::from_millis(9)
        );
        let fifty: Vec<u64> = (1..=50).rev().collect();
        assert_eq!(
            summarize(&ms_list(&fifty)).unwrap().p90,
            Duration::from_millis(45)
        );
        assert!(summarize(&[]).is_none());
    }

    #[test]
    fn formats_across_magnitudes() {
        assert_eq!(ms(Duration::from_micros(1234)), "1.234 ms");
        assert_eq!(ms(Duration::from_millis(2034)), "2034 ms");
    }
}
