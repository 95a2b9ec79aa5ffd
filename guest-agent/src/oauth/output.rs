//! What the CLI prints, made searchable: escape sequences removed as the bytes stream in
//! (a sequence may be split across reads), the last few KiB kept for "failed with its last
//! output", prompts matched once per appearance, and the fallback URL regexes applied.
//! Pasted codes are secrets: the terminal echoes what is typed (or the CLI draws it), so
//! every code pasted is replaced by `[redacted]` in what leaves this module (`lastOutput`
//! and failure reasons, which are also logged), including a code cut by the window's
//! start or still arriving at its end.
//! Pure: no I/O, so every rule has a unit test.

use super::provider::PromptAnswer;
use regex::Regex;

/// Text kept for searching and for the session's `lastOutput`.
const KEEP: usize = 16 * 1024;
/// Part of it shown as `lastOutput`.
const SHOW: usize = 2048;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Scan {
    #[default]
    Text,
    /// After ESC.
    Escape,
    /// CSI: ESC [ ... final byte 0x40-0x7e.
    Csi,
    /// OSC / DCS / APC ... ended by BEL or ESC \.
    Str,
    /// ESC inside a string: `\` ends it.
    StrEscape,
}

/// Streaming remover of terminal escape sequences and control characters (keeps `\n`, `\t`).
#[derive(Debug, Default)]
pub struct Stripper {
    state: Scan,
    /// Bytes of an incomplete UTF-8 character carried to the next chunk.
    partial: Vec<u8>,
}

impl Stripper {
    /// Returns the visible text of `chunk`.
    pub fn feed(&mut self, chunk: &[u8]) -> String {
        let mut bytes = Vec::with_capacity(chunk.len());
        for &b in chunk {
            self.state = match (self.state, b) {
                (Scan::Text, 0x1b) => Scan::Escape,
                (Scan::Text, b'\n' | b'\t') => {
                    bytes.push(b);
                    Scan::Text
                }
                (Scan::Text, b) if b < 0x20 || b == 0x7f => Scan::Text,
                (Scan::Text, b) => {
                    bytes.push(b);
                    Scan::Text
                }
                (Scan::Escape, b'[') => Scan::Csi,
                (Scan::Escape, b']' | b'P' | b'_' | b'^' | b'X') => Scan::Str,
                (Scan::Escape, _) => Scan::Text,
                (Scan::Csi, 0x40..=0x7e) => Scan::Text,
                (Scan::Csi, _) => Scan::Csi,
                (Scan::Str, 0x07) => Scan::Text,
                (Scan::Str, 0x1b) => Scan::StrEscape,
                (Scan::Str, _) => Scan::Str,
                (Scan::StrEscape, b'\\') => Scan::Text,
                (Scan::StrEscape, _) => Scan::Str,
            };
        }
        let mut all = std::mem::take(&mut self.partial);
        all.extend_from_slice(&bytes);
        // Invalid bytes become U+FFFD one by one; an incomplete character at the end
        // waits for the next chunk (so the cut does not change the text).
        let mut out = String::new();
        let mut rest: &[u8] = &all;
        loop {
            match std::str::from_utf8(rest) {
                Ok(s) => {
                    out.push_str(s);
                    break;
                }
                Err(e) => {
                    let good = e.valid_up_to();
                    out.push_str(&String::from_utf8_lossy(&rest[..good]));
                    match e.error_len() {
                        Some(n) => {
                            out.push('\u{FFFD}');
                            rest = &rest[good + n..];
                        }
                        None => {
                            self.partial = rest[good..].to_vec();
                            break;
                        }
                    }
                }
            }
        }
        out
    }
}

/// The CLI's output as a session sees it.
#[derive(Debug)]
pub struct Output {
    stripper: Stripper,
    /// The last `KEEP` bytes of visible text.
    text: String,
    /// Bytes dropped from the front of `text` so far (offsets below are absolute).
    base: usize,
    /// Per prompt: where the next search starts (absolute), so a prompt is answered once
    /// per time it is printed.
    prompt_from: Vec<usize>,
    prompts: Vec<PromptAnswer>,
    patterns: Vec<Regex>,
    /// Pasted codes, never shown.
    secrets: Vec<String>,
}

/// What a secret is shown as.
pub const REDACTED: &str = "[redacted]";
/// A secret's beginning at the end of the text is hidden from this many bytes on (shorter
/// ones are not the code, only its first characters).
const PARTIAL: usize = 3;

/// What a chunk of output asks the session to do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Findings {
    /// Answers to write to the PTY, in order.
    pub answers: Vec<String>,
    /// First URL matched by a pattern in the new text.
    pub url: Option<String>,
}

impl Output {
    /// `patterns` must be valid (providers are validated when loaded); invalid ones are skipped.
    pub fn new(prompts: &[PromptAnswer], patterns: &[String]) -> Output {
        Output {
            stripper: Stripper::default(),
            text: String::new(),
            base: 0,
            prompt_from: vec![0; prompts.len()],
            prompts: prompts.to_vec(),
            patterns: patterns.iter().filter_map(|p| Regex::new(p).ok()).collect(),
            secrets: Vec::new(),
        }
    }

    /// A code about to be typed into the CLI: never shown from now on.
    pub fn add_secret(&mut self, code: &str) {
        let code = code.trim();
        if !code.is_empty() && !self.secrets.iter().any(|s| s == code) {
            self.secrets.push(code.to_string());
            // The longest first, so one inside another leaves nothing of itself.
            self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    /// `text` with every secret replaced, and a secret's beginning at its end hidden.
    fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for sec in &self.secrets {
            out = out.replace(sec.as_str(), REDACTED);
        }
        for sec in &self.secrets {
            let longest = (PARTIAL.min(sec.len())..sec.len())
                .rev()
                .find(|n| sec.is_char_boundary(*n) && out.ends_with(&sec[..*n]));
            if let Some(n) = longest {
                out.truncate(out.len() - n);
                out.push_str(REDACTED);
                break;
            }
        }
        out
    }

    /// Takes a chunk of raw PTY bytes.
    pub fn feed(&mut self, chunk: &[u8]) -> Findings {
        let new = self.stripper.feed(chunk);
        // URLs are searched from a little before the new text: one may span two chunks.
        let url_from = self.base + self.text.len().saturating_sub(4096);
        self.text.push_str(&new);
        let mut f = Findings::default();
        for (i, pa) in self.prompts.iter().enumerate() {
            // Every appearance gets its answer, also several in one chunk.
            loop {
                let from = self.prompt_from[i].max(self.base) - self.base;
                let Some(pos) = self.text.get(from..).and_then(|t| t.find(&pa.prompt)) else {
                    break;
                };
                f.answers.push(pa.answer.clone());
                self.prompt_from[i] = self.base + from + pos + pa.prompt.len();
            }
        }
        let start = floor_char(&self.text, url_from.max(self.base) - self.base);
        for re in &self.patterns {
            // A URL that runs to the end of the text may still be growing: wait for its end.
            if let Some(m) = re.find(&self.text[start..]) {
                if start + m.end() < self.text.len() {
                    f.url = Some(m.as_str().to_string());
                    break;
                }
            }
        }
        self.trim();
        f
    }

    fn trim(&mut self) {
        if self.text.len() > KEEP {
            let cut = floor_char(&self.text, self.text.len() - KEEP);
            self.text.drain(..cut);
            self.base += cut;
        }
    }

    /// The last lines printed (for `lastOutput` and failure reasons).
    pub fn tail(&self) -> String {
        // From far enough back that a secret reaching into the shown part is whole.
        let longest = self.secrets.first().map_or(0, |s| s.len());
        let from = floor_char(&self.text, self.text.len().saturating_sub(SHOW + longest));
        let text = self.redact(&self.text[from..]);
        let start = floor_char(&text, text.len().saturating_sub(SHOW));
        text[start..].trim().to_string()
    }
}

fn floor_char(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i.min(s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_are_removed_even_when_split() {
        let mut s = Stripper::default();
        let mut out = s.feed(b"\x1b[1;3");
        out += &s.feed(b"2mhello\x1b]0;title\x07 wor");
        out += &s.feed(b"ld\r\n\x1b[2K\xc3");
        out += &s.feed(b"\xa9\x1bP1$r\x1b\\!");
        assert_eq!(out, "hello world\n\u{e9}!");
    }

    #[test]
    fn prompts_are_answered_once_per_appearance() {
        let prompts = vec![PromptAnswer {
            prompt: "Do you want to continue? [Y/n]".into(),
            answer: "Y\r".into(),
        }];
        let mut o = Output::new(&prompts, &[]);
        assert!(o.feed(b"Do you want to con").answers.is_empty());
        assert_eq!(o.feed(b"tinue? [Y/n] ").answers, vec!["Y\r"]);
        assert!(o.feed(b"Y\nworking...\n").answers.is_empty());
        assert_eq!(
            o.feed(b"\x1b[33mDo you want to continue? [Y/n]\x1b[0m")
                .answers,
            vec!["Y\r"]
        );
    }

    #[test]
    fn url_is_found_when_complete() {
        let pat = vec![r"https://auth\.example\.com/authorize\?[^\s\x07]+".to_string()];
        let mut o = Output::new(&[], &pat);
        assert_eq!(o.feed(b"Open https://auth.example.com/autho").url, None);
        assert_eq!(o.feed(b"rize?a=1&b=").url, None);
        assert_eq!(
            o.feed(b"2\r\n").url.as_deref(),
            Some("https://auth.example.com/authorize?a=1&b=2")
        );
        assert!(o.tail().ends_with("b=2"));
    }

    proptest::proptest! {
        /// However the PTY cuts the stream, the visible text is the same, never holds an
        /// escape or control byte, and prompts/URLs are found the same way.
        #[test]
        fn chunking_does_not_change_the_text(
            parts in proptest::collection::vec(
                proptest::prop_oneof![
                    proptest::strategy::Just(b"\x1b[1;32m".to_vec()),
                    proptest::strategy::Just(b"\x1b]0;t\x07".to_vec()),
                    proptest::strategy::Just("\u{e9}\u{1F600}".as_bytes().to_vec()),
                    proptest::strategy::Just(b"Continue? [Y/n]".to_vec()),
                    proptest::strategy::Just(b"https://a.example/authorize?x=1 ".to_vec()),
                    proptest::collection::vec(proptest::num::u8::ANY, 0..8),
                ],
                0..20,
            ),
            cuts in proptest::collection::vec(0usize..200, 0..10),
        ) {
            let all: Vec<u8> = parts.concat();
            let prompts = vec![PromptAnswer { prompt: "Continue? [Y/n]".into(), answer: "Y\r".into() }];
            let pats = vec![r"https://a\.example/authorize\?[^\s]+".to_string()];
            let mut whole = Output::new(&prompts, &pats);
            let f1 = whole.feed(&all);
            let mut cut = Output::new(&prompts, &pats);
            let mut points: Vec<usize> = cuts.into_iter().filter(|c| *c < all.len()).collect();
            points.sort();
            points.dedup();
            let mut answers = Vec::new();
            let mut url = None;
            let mut from = 0;
            for p in points.into_iter().chain([all.len()]) {
                let f = cut.feed(&all[from..p]);
                answers.extend(f.answers);
                url = url.or(f.url);
                from = p;
            }
            proptest::prop_assert_eq!(&whole.text, &cut.text);
            proptest::prop_assert!(!whole.text.bytes().any(|b| b == 0x1b || (b < 0x20 && b != b'\n' && b != b'\t')));
            proptest::prop_assert_eq!(f1.answers.len(), answers.len());
            proptest::prop_assert_eq!(f1.url.is_some(), url.is_some());
        }
    }

    #[test]
    fn pasted_codes_never_leave_even_when_split() {
        let mut o = Output::new(&[], &[]);
        o.feed(b"Paste code here if prompted > ");
        o.add_secret("PASTED-123#st4te");
        // The echo comes in pieces; between them, no piece of the code is shown.
        o.feed(b"PASTED-1");
        assert!(!o.tail().contains("PASTED"), "{}", o.tail());
        assert!(o.tail().ends_with(REDACTED), "{}", o.tail());
        o.feed(b"23#st4te\r\nerror: code PASTED-123#st4te rejected\n");
        let t = o.tail();
        assert!(!t.contains("PASTED") && !t.contains("23#st4te"), "{t}");
        assert!(t.ends_with("error: code [redacted] rejected"), "{t}");
        // A code cut by the start of the shown window is still hidden.
        let mut o = Output::new(&[], &[]);
        o.add_secret("SECRETCODE");
        o.feed(b"SECRETCODE");
        o.feed(&vec![b'x'; SHOW - 4]);
        let t = o.tail();
        assert!(!t.contains("CODE") && !t.contains("ODE"), "{}", &t[..20]);
    }

    #[test]
    fn long_output_keeps_the_end() {
        let mut o = Output::new(&[], &[]);
        for i in 0..5000 {
            o.feed(format!("line {i}\n").as_bytes());
        }
        assert!(o.tail().ends_with("line 4999"));
        assert!(o.tail().len() <= SHOW);
        assert!(o.text.len() <= KEEP);
    }
}
