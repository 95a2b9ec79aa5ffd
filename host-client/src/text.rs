//! Text the guest wrote (console lines, event fields, `/health` strings, error bodies, OAuth
//! session fields) is untrusted (DESIGN.md §10: the guest is hostile):
//! - kept only in bounded amounts ([`cap`]), so a flooded console cannot make a diagnosis
//!   grow without end;
//! - shown escaped ([`Untrusted`], [`escape_lines`], [`to_json`]), so an ESC, BEL, a C1
//!   control (U+009B is a one-character CSI for many terminals) or a bidi override cannot
//!   clear the operator's screen, set its title, hide text or reorder it.

use std::borrow::Cow;
use std::fmt::{self, Write as _};

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

/// Whether a terminal may act on `c` instead of showing it: C0 controls (newline and tab
/// included), DEL, C1 controls, and the bidi embeddings, overrides and isolates.
pub fn is_unsafe(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

fn write_escaped(out: &mut impl fmt::Write, s: &str, keep: &[char]) -> fmt::Result {
    let mut rest = s;
    while let Some(at) = rest.find(|c: char| is_unsafe(c) && !keep.contains(&c)) {
        out.write_str(&rest[..at])?;
        let c = rest[at..].chars().next().unwrap_or_default();
        match c {
            '\n' => out.write_str("\\n")?,
            '\r' => out.write_str("\\r")?,
            '\t' => out.write_str("\\t")?,
            c if (c as u32) < 0x80 => write!(out, "\\x{:02x}", c as u32)?,
            c => write!(out, "\\u{{{:x}}}", c as u32)?,
        }
        rest = &rest[at + c.len_utf8()..];
    }
    out.write_str(rest)
}

/// Shows guest text on one line: every [`is_unsafe`] character as a visible escape
/// (`\x1b`, `\x07`, `\x7f`, `\n`, `\r`, `\t`, `\u{9b}`, `\u{202e}`).
#[derive(Debug, Clone, Copy)]
pub struct Untrusted<'a>(pub &'a str);

impl fmt::Display for Untrusted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_escaped(f, self.0, &[])
    }
}

/// [`Untrusted`] for text of several lines (a whole command output): newlines and tabs
/// stay, everything else unsafe is escaped.
pub fn escape_lines(s: &str) -> Cow<'_, str> {
    if !s.chars().any(|c| is_unsafe(c) && c != '\n' && c != '\t') {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 16);
    // Writing to a String cannot fail.
    let _ = write_escaped(&mut out, s, &['\n', '\t']);
    Cow::Owned(out)
}

/// JSON that is safe on a terminal: serde_json escapes C0 controls in strings but writes DEL,
/// C1 controls and bidi overrides raw; here they become `\u007f`, `\u009b`, `\u202e` (the
/// same JSON value). `pretty`: indented, as `serde_json::to_string_pretty`.
pub fn to_json<T: serde::Serialize + ?Sized>(
    value: &T,
    pretty: bool,
) -> serde_json::Result<String> {
    let text = if pretty {
        serde_json::to_string_pretty(value)?
    } else {
        serde_json::to_string(value)?
    };
    // Outside strings JSON holds only printable ASCII, spaces and (pretty) newlines, so every
    // unsafe character other than a newline is inside a string, where `\uXXXX` is valid.
    if !text.chars().any(|c| is_unsafe(c) && c != '\n') {
        return Ok(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        if is_unsafe(c) && c != '\n' {
            // All unsafe characters are in the Basic Multilingual Plane: one escape each.
            let _ = write!(out, "\\u{:04x}", c as u32);
        } else {
            out.push(c);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_characters_are_shown_escaped() {
        let nasty = "a\u{1b}[2J\u{7}b\u{9b}31m\u{7f}\u{202e}c\rd\ne\tf é";
        assert_eq!(
            Untrusted(nasty).to_string(),
            "a\\x1b[2J\\x07b\\u{9b}31m\\x7f\\u{202e}c\\rd\\ne\\tf é"
        );
        assert_eq!(
            escape_lines(nasty),
            "a\\x1b[2J\\x07b\\u{9b}31m\\x7f\\u{202e}c\\rd\ne\tf é"
        );
        assert!(matches!(escape_lines("plain\ntext é"), Cow::Borrowed(_)));
    }

    #[test]
    fn json_is_ascii_safe_and_decodes_to_the_same_text() {
        let nasty = "\u{1b}[2J\u{7}\u{9b}\u{85}\u{7f}\u{202e}\u{2066}x\ny é";
        for pretty in [false, true] {
            let v = serde_json::json!({ "k\u{9b}": [nasty] });
            let text = to_json(&v, pretty).unwrap();
            assert!(!text.chars().any(|c| is_unsafe(c) && c != '\n'), "{text}");
            assert!(
                text.contains("\\u009b") && text.contains("\\u202e"),
                "{text}"
            );
            assert!(text.contains('é'), "printable text stays: {text}");
            let back: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert_eq!(back, v);
        }
    }

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
