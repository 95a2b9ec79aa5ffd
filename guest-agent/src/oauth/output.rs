//! What the CLI shows, as a person would see it. Login CLIs built on Ink (gemini, claude)
//! draw with cursor moves, erase lines and redraw; stripping escape sequences from the byte
//! stream runs words together and keeps text that was erased. So the PTY is *rendered*
//! with a terminal emulator (the `vt100` crate: maintained, no I/O, a plain `process(bytes)`
//! API, the screen's cells and rows readable, and a callback for each row that scrolls off)
//! at the PTY's fixed size ([`super::pty::COLUMNS`] x [`super::pty::ROWS`]), and:
//! - prompts are matched against the visible screen (whitespace runs count as one space)
//!   and answered once per appearance; an answer the CLI ignored (the screen did not change
//!   at all) is typed again, at most [`RETRIES`] times;
//! - the fallback URL regexes run on the rows that scrolled off plus the screen, with a row
//!   that fills the whole width joined to the next one (a URL the CLI wrapped itself);
//! - `lastOutput` is the visible screen, trailing blanks trimmed, at most [`SHOW`] bytes;
//! - a CLI that shows no URL for a while after its start or the last answer is *stuck*,
//!   and says so with what its screen shows ([`Output::stuck`]);
//! - screen text the provider says ends the login is reported at once (`fail_on`).
//!
//! Pasted codes are secrets: the terminal echoes what is typed (or the CLI draws it), so
//! every code pasted is replaced by `[redacted]` in what leaves this module (`lastOutput`
//! and failure reasons, which are also logged), including a code still arriving.
//! Pure: no I/O, time is passed in, so every rule has a unit test.

use super::provider::PromptAnswer;
use regex::Regex;
use std::collections::VecDeque;
use std::num::NonZeroU16;
use std::time::{Duration, Instant};

/// Rows that scrolled off, kept for the URL search.
const KEEP_ROWS: usize = 400;
/// Part of the screen shown as `lastOutput` (its end).
pub const SHOW: usize = 8192;
/// An answer the CLI did not react to is typed again after this long...
const RETRY_AFTER: Duration = Duration::from_secs(2);
/// ... at most this many times.
pub const RETRIES: u32 = 3;
/// A prompt absent this long has gone (shown again later, it is answered again).
const GONE_AFTER: Duration = Duration::from_millis(500);

/// What a secret is shown as.
pub const REDACTED: &str = "[redacted]";
/// A secret's beginning at the end of a line (where the echo is being typed) is hidden from
/// this many bytes on.
const PARTIAL: usize = 3;
/// A piece of a secret this long is hidden wherever it is.
const PIECE: usize = 8;

/// Collects the rows that scroll off the top of the screen (plain text).
#[derive(Default)]
struct History {
    rows: VecDeque<String>,
    fmt: vt100::capture::BasicFormattedCaptureState,
}

impl vt100::Callbacks for History {
    fn on_scroll(&mut self, row: vt100::capture::RowContents<'_>, _alternate: bool) {
        let mut formatted = String::new();
        let _ = row.write_formatted_basic(&mut formatted, &mut self.fmt);
        // A row that follows an unwrapped one starts with '\n': rows are kept one each.
        let plain: String = vt100::capture::basic_formatted_to_plain(&formatted).collect();
        self.rows
            .push_back(plain.trim_start_matches('\n').to_string());
        while self.rows.len() > KEEP_ROWS {
            self.rows.pop_front();
        }
    }
}

/// A prompt answered whose screen has not changed since.
#[derive(Debug)]
struct Answered {
    prompt: usize,
    at: Instant,
    screen: String,
    tries: u32,
}

/// The CLI's terminal as a session sees it.
pub struct Output {
    parser: vt100::Parser<History>,
    cols: usize,
    prompts: Vec<(PromptAnswer, String)>,
    fail_on: Vec<(String, String)>,
    patterns: Vec<Regex>,
    /// Pasted codes, never shown (longest first).
    secrets: Vec<String>,
    /// Per prompt: on the screen (it counts as gone once absent for [`GONE_AFTER`]).
    shown: Vec<bool>,
    /// Per prompt: absent from the screen since.
    absent: Vec<Option<Instant>>,
    /// The visible screen at the last look.
    screen: String,
    /// The start, or the last answer typed: a login that makes no progress from here
    /// (no URL) is stuck.
    progress: Instant,
    answered: Option<Answered>,
    /// The last URL reported (each is reported once).
    url: Option<String>,
}

/// What output (or time passing) asks the session to do.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Findings {
    /// Answers to write to the PTY, in order.
    pub answers: Vec<String>,
    /// A URL matched by a pattern, not reported before (the newest on the screen).
    pub url: Option<String>,
    /// The screen shows text the provider says ends the login: that line.
    pub failure: Option<String>,
}

/// Box-drawing characters (Ink draws dialogs in boxes).
fn is_box(c: char) -> bool {
    ('\u{2500}'..='\u{257f}').contains(&c)
}

/// How screen text and prompts are compared: box-drawing characters dropped, whitespace
/// runs as one space, trimmed. A prompt drawn over several rows of a box still matches.
fn norm(s: &str) -> String {
    s.split(|c: char| c.is_whitespace() || is_box(c))
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A row for the URL search: its text and whether it goes on in the next row (it reaches
/// the right edge of the screen, or comes within 2 columns of the border of the box it is
/// in). A border at its end is dropped when it goes on.
fn search_row(row: &str, cols: usize) -> (&str, bool) {
    let t = row.trim_end();
    if t.chars().count() < cols {
        return (t, false);
    }
    match t.strip_suffix(|c: char| is_box(c)) {
        Some(inner) => {
            let inner = inner.trim_end();
            (inner, inner.chars().count() + 4 >= cols)
        }
        None => (t, true),
    }
}

/// The continuation of a wrapped row: without its indentation and box border.
fn strip_left(row: &str) -> &str {
    row.trim_start()
        .trim_start_matches(|c: char| is_box(c))
        .trim_start()
}

impl Output {
    /// A terminal of `cols` x `rows`. `patterns` must be valid (providers are validated
    /// when loaded); invalid ones are skipped. `fail_on`: screen texts that end the login.
    pub fn new(
        (cols, rows): (u16, u16),
        prompts: &[PromptAnswer],
        patterns: &[String],
        fail_on: &[String],
        now: Instant,
    ) -> Output {
        let c = NonZeroU16::new(cols.max(2)).unwrap_or(NonZeroU16::MIN);
        let r = NonZeroU16::new(rows.max(2)).unwrap_or(NonZeroU16::MIN);
        Output {
            parser: vt100::Parser::new_with_callbacks(r, c, 0, History::default()),
            cols: usize::from(c.get()),
            prompts: prompts
                .iter()
                .map(|p| (p.clone(), norm(&p.prompt)))
                .filter(|(_, n)| !n.is_empty())
                .collect(),
            fail_on: fail_on
                .iter()
                .map(|f| (f.clone(), norm(f)))
                .filter(|(_, n)| !n.is_empty())
                .collect(),
            patterns: patterns.iter().filter_map(|p| Regex::new(p).ok()).collect(),
            secrets: Vec::new(),
            shown: vec![false; prompts.len()],
            absent: vec![None; prompts.len()],
            screen: String::new(),
            progress: now,
            answered: None,
            url: None,
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

    /// `text` with every secret replaced; a piece of one (`PIECE` bytes or more) anywhere,
    /// and its beginning at the end of a line, hidden too.
    fn redact(&self, text: &str) -> String {
        let mut out = text.to_string();
        for sec in &self.secrets {
            out = out.replace(sec.as_str(), REDACTED);
        }
        for sec in &self.secrets {
            for n in (PIECE.min(sec.len())..sec.len()).rev() {
                for start in 0..=sec.len() - n {
                    if let Some(piece) = sec.get(start..start + n) {
                        if out.contains(piece) {
                            out = out.replace(piece, REDACTED);
                        }
                    }
                }
            }
        }
        let lines: Vec<String> = out
            .split('\n')
            .map(|line| {
                let t = line.trim_end();
                for sec in &self.secrets {
                    let longest = (PARTIAL.min(sec.len())..sec.len())
                        .rev()
                        .find(|n| sec.is_char_boundary(*n) && t.ends_with(&sec[..*n]));
                    if let Some(n) = longest {
                        return format!("{}{REDACTED}", &t[..t.len() - n]);
                    }
                }
                line.to_string()
            })
            .collect();
        lines.join("\n")
    }

    /// The visible rows, trailing blanks trimmed, with the last blank rows dropped, except
    /// up to the cursor's row (a URL on the cursor's row may still be growing).
    fn visible_rows(&self) -> Vec<String> {
        let screen = self.parser.screen();
        let mut rows: Vec<String> = screen
            .rows(0, self.cols as u16)
            .map(|r| r.trim_end().to_string())
            .collect();
        let cursor = usize::from(screen.cursor_position().0);
        while rows.len() > cursor + 1 && rows.last().is_some_and(|r| r.is_empty()) {
            rows.pop();
        }
        rows
    }

    /// Text to search for URLs: the rows that scrolled off, then the screen, one line per
    /// row, except that a row whose text reaches the right edge (of the screen, or of the
    /// box it is drawn in) goes on in the next one: the CLI wrapped a long URL there. The
    /// next row's indentation and box border are dropped when it is joined.
    fn search_text(&self) -> String {
        let rows: Vec<&str> = self
            .parser
            .callbacks()
            .rows
            .iter()
            .map(String::as_str)
            .collect();
        let visible = self.visible_rows();
        let mut out = String::new();
        let mut joining = false;
        for r in rows
            .iter()
            .copied()
            .chain(visible.iter().map(String::as_str))
        {
            let (text, more) = search_row(r, self.cols);
            out.push_str(if joining { strip_left(text) } else { text });
            if !more {
                out.push('\n');
            }
            joining = more;
        }
        // Text that ends where the cursor is may still grow; anything else has ended.
        out.truncate(out.trim_end_matches('\n').len());
        if !out.is_empty() && !self.cursor_at_end(&visible) {
            out.push('\n');
        }
        out
    }

    /// Whether the cursor sits right after the last text on the screen (where the next
    /// character printed would extend it).
    fn cursor_at_end(&self, rows: &[String]) -> bool {
        let (r, c) = self.parser.screen().cursor_position();
        let r = usize::from(r);
        if r + 1 != rows.len() {
            return false;
        }
        if rows[r].is_empty() {
            return c == 0 && r > 0 && search_row(&rows[r - 1], self.cols).1;
        }
        usize::from(c) >= rows[r].chars().count()
    }

    /// The visible screen as one string (rows joined with `\n`).
    fn screen_text(&self) -> String {
        self.visible_rows().join("\n")
    }

    /// Takes a chunk of raw PTY bytes.
    pub fn feed(&mut self, chunk: &[u8], now: Instant) -> Findings {
        let mut f = Findings::default();
        // Look before text is wiped, so a URL printed and erased within one read is seen.
        let mut from = 0;
        for cut in clears(chunk) {
            self.parser.process(&chunk[from..cut]);
            self.find_url(&mut f);
            from = cut;
        }
        self.parser.process(&chunk[from..]);
        self.find_url(&mut f);
        self.look(now, &mut f);
        f
    }

    /// Time passing without output: an ignored answer is typed again.
    pub fn tick(&mut self, now: Instant) -> Findings {
        let mut f = Findings::default();
        self.look(now, &mut f);
        f
    }

    fn find_url(&mut self, f: &mut Findings) {
        if self.patterns.is_empty() {
            return;
        }
        let text = self.search_text();
        let mut newest = None;
        for re in &self.patterns {
            for m in re.find_iter(&text) {
                // A URL that runs to the end of the text may still be growing.
                if m.end() < text.len() && newest.is_none_or(|(at, _)| m.start() > at) {
                    newest = Some((m.start(), m.as_str()));
                }
            }
        }
        if let Some((_, url)) = newest {
            if self.url.as_deref() != Some(url) {
                self.url = Some(url.to_string());
                f.url = Some(url.to_string());
            }
        }
    }

    /// Prompts appearing (answered), ignored answers (typed again), failure texts.
    fn look(&mut self, now: Instant, f: &mut Findings) {
        self.screen = self.screen_text();
        let flat = norm(&self.screen);
        for (i, (pa, n)) in self.prompts.iter().enumerate() {
            let on = flat.contains(n.as_str());
            if on {
                self.absent[i] = None;
            } else if self.shown[i] {
                // Erased and redrawn across two reads is not a new appearance.
                let since = *self.absent[i].get_or_insert(now);
                if now.duration_since(since) >= GONE_AFTER {
                    self.shown[i] = false;
                }
                continue;
            }
            if on && !self.shown[i] {
                f.answers.push(pa.answer.clone());
                self.progress = now;
                self.answered = Some(Answered {
                    prompt: i,
                    at: now,
                    screen: self.screen.clone(),
                    tries: 1,
                });
            }
            self.shown[i] = on;
        }
        if let Some(a) = &mut self.answered {
            if a.screen != self.screen || !self.shown[a.prompt] {
                self.answered = None;
            } else if now.duration_since(a.at) >= RETRY_AFTER && a.tries < RETRIES {
                a.tries += 1;
                a.at = now;
                self.progress = now;
                f.answers.push(self.prompts[a.prompt].0.answer.clone());
            }
        }
        if f.failure.is_none() {
            for (text, n) in &self.fail_on {
                if flat.contains(n.as_str()) {
                    let line = self
                        .screen
                        .lines()
                        .map(norm)
                        .find(|l| l.contains(n.as_str()))
                        .unwrap_or_else(|| text.clone());
                    f.failure = Some(self.redact(&line));
                    break;
                }
            }
        }
    }

    /// Why the CLI looks stuck: `after` or longer since the start or the last answer typed
    /// (the caller asks only while there is no URL). Ink CLIs animate spinners, so a screen
    /// that keeps changing can be stuck too.
    pub fn stuck(&self, now: Instant, after: Duration) -> Option<String> {
        let quiet = now.duration_since(self.progress);
        if quiet < after {
            return None;
        }
        let secs = quiet.as_secs();
        let known = self
            .prompts
            .iter()
            .zip(&self.shown)
            .find(|(_, on)| **on)
            .map(|((pa, _), _)| pa.prompt.clone());
        Some(match known {
            Some(p) => format!(
                "stuck: no login URL {secs}s after answering; the prompt {p:?} is still on \
                 the screen (lastOutput)"
            ),
            None if self.screen.trim().is_empty() => {
                format!("stuck: the CLI has shown nothing for {secs}s")
            }
            None => format!(
                "stuck: no login URL for {secs}s, and the screen (lastOutput) shows no prompt \
                 this agent knows"
            ),
        })
    }

    /// The screen a person would see (for `lastOutput` and failure reasons): trailing
    /// blanks and blank rows trimmed, secrets hidden, the last [`SHOW`] bytes.
    pub fn tail(&self) -> String {
        let text = self.redact(&self.screen_text());
        let text = text.trim_matches('\n');
        let start = floor_char(text, text.len().saturating_sub(SHOW));
        text[start..].to_string()
    }
}

/// Offsets in `chunk` where text is about to be wiped: a screen clear (`ESC [ n J`,
/// `ESC c`) or a line erase (`ESC [ n K`), the first of a run only (Ink erases its whole
/// previous frame line by line before drawing the next: one look per frame).
fn clears(chunk: &[u8]) -> Vec<usize> {
    let mut v = Vec::new();
    let mut printed = false;
    let mut i = 0;
    while i < chunk.len() {
        let b = chunk[i];
        if b != 0x1b {
            printed |= b >= 0x20 && b != 0x7f;
            i += 1;
            continue;
        }
        // The escape sequence's length and whether it wipes text.
        let (len, wipes) = match chunk.get(i + 1) {
            Some(b'c') => (2, true),
            Some(b'[') => {
                let params = chunk[i + 2..]
                    .iter()
                    .take_while(|c| (0x30..=0x3f).contains(*c))
                    .count();
                match chunk.get(i + 2 + params) {
                    Some(f) => (3 + params, matches!(f, b'J' | b'K')),
                    None => (chunk.len() - i, false),
                }
            }
            Some(b']') => {
                let end = chunk[i..]
                    .iter()
                    .position(|c| *c == 0x07 || *c == 0x9c)
                    .map_or(chunk.len() - i, |p| p + 1);
                (end, false)
            }
            _ => (2, false),
        };
        if wipes && printed && i > 0 {
            v.push(i);
            printed = false;
        }
        i += len.max(1);
    }
    v
}

fn floor_char(s: &str, mut i: usize) -> usize {
    while i > 0 && !s.is_char_boundary(i) {
        i -= 1;
    }
    i.min(s.len())
}

#[cfg(test)]
#[path = "output_tests.rs"]
mod tests;
