//! Text the guest wrote (console lines, event fields, `/health` strings, error bodies) is
//! untrusted (DESIGN.md §10: the guest is hostile): kept only in bounded amounts, so a
//! flooded console cannot make a diagnosis grow without end.

/// Longest evidence line kept in a finding or timeline entry (bytes).
pub const MAX_EVIDENCE: usize = 512;
/// Longest subject (unit, module, panic message) kept in a finding.
pub const MAX_SUBJECT: usize = 128;
/// Longest hint kept in a finding (hints quote guest text: event messages, subjects).
pub const MAX_HINT: usize = 1024;

/// `s` cut to at most `max` bytes at a char boundary, with a marker saying how many bytes
/// were cut; `s` itself when it fits.
pub fn cap(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… [{} more bytes cut]", &s[..end], s.len() - end)
}

/// [`cap`] in place.
pub fn cap_in_place(s: &mut String, max: usize) {
    if s.len() > max {
        *s = cap(s, max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_cuts_at_a_char_boundary_and_says_so() {
        assert_eq!(cap("short", 10), "short");
        assert_eq!(cap("abcdef", 3), "abc… [3 more bytes cut]");
        // 'é' is 2 bytes: a cut inside it moves back
        assert_eq!(cap("aé", 2), "a… [2 more bytes cut]");
        let mut s = "x".repeat(1000);
        cap_in_place(&mut s, MAX_EVIDENCE);
        assert!(s.starts_with(&"x".repeat(MAX_EVIDENCE)));
        assert!(s.len() < MAX_EVIDENCE + 40, "{}", s.len());
    }
}
