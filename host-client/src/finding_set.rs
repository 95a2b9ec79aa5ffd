//! The findings of one console log: deduplicated by (cause, subject) through an index, and
//! at most [`MAX_FINDINGS`] of them.
//!
//! A hostile or broken guest can print 200,000 distinct `Failed to start uN.service` lines:
//! a linear scan per line made that quadratic (minutes of CPU), and one finding per line made
//! the output as big as the log. Past the cap, a new finding is kept only if it is more severe
//! than the least severe one kept (which it then replaces, so a kernel panic after a flood of
//! unit failures is still seen); the others are counted in one `findings-suppressed` finding.

use crate::diagnose::{Cause, Finding, Severity};
use crate::hints::hint;
use std::collections::HashMap;

/// Most distinct findings kept per console log.
pub const MAX_FINDINGS: usize = 100;

#[derive(Debug, Default, Clone)]
pub(crate) struct FindingSet {
    /// In order of creation.
    findings: Vec<Finding>,
    /// The creation number of each finding (parallel to `findings`, increasing).
    seq: Vec<u64>,
    /// (cause, subject) -> position in `findings`.
    index: HashMap<(Cause, Option<String>), usize>,
    /// Findings created so far, kept or not.
    created: u64,
    /// How many kept findings have each severity (indexed by `Severity as usize`).
    per_severity: [usize; 4],
    /// Console lines whose finding was left out, and the first of them (line, evidence).
    suppressed: usize,
    first_suppressed: Option<(usize, String)>,
}

impl FindingSet {
    pub(crate) fn as_slice(&self) -> &[Finding] {
        &self.findings
    }

    /// Findings created so far (kept or not): a mark for [`FindingSet::since`].
    pub(crate) fn created(&self) -> u64 {
        self.created
    }

    /// The kept findings created at or after `mark`.
    pub(crate) fn since(&self, mark: u64) -> &[Finding] {
        let at = self.seq.partition_point(|&s| s < mark);
        &self.findings[at..]
    }

    /// Merges `new` into the finding with the same cause and subject, or adds it. `None` when
    /// it was left out (the cap is reached and it is not more severe than what is kept).
    pub(crate) fn record(&mut self, new: Finding) -> Option<&Finding> {
        let key = (new.cause, new.subject.clone());
        if let Some(&i) = self.index.get(&key) {
            let old = &mut self.findings[i];
            old.occurrences += 1;
            if new.severity > old.severity {
                self.per_severity[old.severity as usize] -= 1;
                self.per_severity[new.severity as usize] += 1;
                old.severity = new.severity;
                old.line = new.line;
                old.evidence = new.evidence;
                old.hint = new.hint;
            }
            return Some(&self.findings[i]);
        }
        self.created += 1;
        if self.findings.len() >= MAX_FINDINGS {
            let least = self.least_severe()?;
            if new.severity <= least {
                self.suppress(new.occurrences, new.line, &new.evidence);
                return None;
            }
            // Make room: the latest of the least severe goes (the first failures explain most).
            let at = self.findings.iter().rposition(|f| f.severity == least)?;
            let old = self.findings.remove(at);
            self.seq.remove(at);
            self.per_severity[old.severity as usize] -= 1;
            self.suppress(old.occurrences, old.line, &old.evidence);
            self.index.clear();
            for (i, f) in self.findings.iter().enumerate() {
                self.index.insert((f.cause, f.subject.clone()), i);
            }
        }
        self.per_severity[new.severity as usize] += 1;
        self.index.insert(key, self.findings.len());
        self.seq.push(self.created - 1);
        self.findings.push(new);
        self.findings.last()
    }

    fn least_severe(&self) -> Option<Severity> {
        let sev = [
            Severity::Info,
            Severity::Warning,
            Severity::Error,
            Severity::Fatal,
        ];
        sev.into_iter().find(|s| self.per_severity[*s as usize] > 0)
    }

    fn suppress(&mut self, lines: usize, line: usize, evidence: &str) {
        self.suppressed += lines;
        match &self.first_suppressed {
            Some((first, _)) if *first <= line => {}
            _ => self.first_suppressed = Some((line, evidence.to_string())),
        }
    }

    /// The `findings-suppressed` finding, when something was left out.
    pub(crate) fn summary(&self) -> Option<Finding> {
        let (line, evidence) = self.first_suppressed.clone()?;
        Some(Finding {
            cause: Cause::FindingsSuppressed,
            severity: Severity::Info,
            subject: None,
            line,
            evidence,
            hint: format!(
                "{} more console lines with problems are not listed: only {MAX_FINDINGS} distinct findings are kept (the most severe win); the first left out is line {line}. {}",
                self.suppressed,
                hint(Cause::FindingsSuppressed, None)
            ),
            occurrences: self.suppressed,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::MAX_FINDINGS;
    use crate::diagnose::{analyze, Cause, Diagnoser, Severity};
    use crate::text::MAX_EVIDENCE;

    #[test]
    fn a_flood_of_distinct_failures_is_capped_and_counted() {
        let mut d = Diagnoser::new();
        for i in 0..5000 {
            d.push_line(&format!(
                "[FAILED] Failed to start u{i}.service - unit {i}."
            ));
        }
        d.push_line("[FAILED] Failed to start u7.service - unit 7.");
        assert_eq!(d.findings().len(), MAX_FINDINGS);
        assert_eq!(d.findings()[7].occurrences, 2, "kept ones still merge");
        let diag = d.finish();
        assert_eq!(diag.findings.len(), MAX_FINDINGS + 1);
        let s = diag.findings.last().unwrap();
        assert_eq!(
            (s.cause, s.severity, s.occurrences, s.line),
            (Cause::FindingsSuppressed, Severity::Info, 4900, 101)
        );
        assert!(s.evidence.contains("u100.service"), "{s:?}");
        assert!(s.hint.contains("4900 more console lines"), "{}", s.hint);
    }

    #[test]
    fn a_panic_after_the_flood_is_kept_and_followers_see_it() {
        let mut d = Diagnoser::new();
        d.push_line("systemd-modules-load[201]: Failed to find module 'snd'");
        for i in 0..300 {
            d.push_line(&format!("[FAILED] Failed to start u{i}.service."));
        }
        let mark = d.findings_mark();
        d.push_line("[    9.1] Kernel panic - not syncing: Fatal exception");
        let fatal = d.fatal().expect("the panic is kept");
        assert_eq!(fatal.cause, Cause::KernelPanic);
        let new = d.findings_since(mark);
        assert_eq!(new.len(), 1, "{new:?}");
        assert_eq!(new[0].cause, Cause::KernelPanic);
        // the warning (least severe) made room; the first unit failures are still there
        assert!(d.findings().iter().all(|f| f.severity >= Severity::Error));
        assert_eq!(
            d.findings()[0].subject.as_deref(),
            Some("u0.service"),
            "{:?}",
            d.findings()[0]
        );
        assert_eq!(d.findings().len(), MAX_FINDINGS);
        let diag = d.finish();
        let s = diag.findings.last().unwrap();
        assert_eq!((s.cause, s.line), (Cause::FindingsSuppressed, 1));
        assert_eq!(s.occurrences, 300 - 99 + 1);
    }

    #[test]
    fn long_lines_are_cut_in_evidence_subject_and_hint() {
        let unit = "x".repeat(100_000);
        let text = format!("[FAILED] Failed to start {unit}.service - long.\n");
        let diag = analyze(&text);
        let f = &diag.findings[0];
        assert!(f.evidence.len() < MAX_EVIDENCE + 40, "{}", f.evidence.len());
        assert!(f.evidence.ends_with("more bytes cut]"), "{}", f.evidence);
        assert!(f.subject.as_ref().unwrap().len() < 200);
        assert!(f.hint.len() < 1100, "{}", f.hint.len());
    }
}
