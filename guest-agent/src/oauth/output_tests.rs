//! Tests of [`super::Output`]: synthetic streams drawn the way Ink CLIs draw (cursor moves,
//! erased and redrawn lines, spinners), and PTY streams recorded from the real CLIs at
//! 200x50 (`guest-agent/tests/oauth_support/screens/*.bin`: each read as a little-endian
//! u32 length and the bytes, so a replay is cut where the real reads were).

use super::*;
use std::time::Duration;

const COLS: u16 = 200;
const ROWS: u16 = 50;

fn t0() -> Instant {
    Instant::now()
}

fn pa(prompt: &str, answer: &str) -> PromptAnswer {
    PromptAnswer {
        prompt: prompt.into(),
        answer: answer.into(),
    }
}

fn out(prompts: &[PromptAnswer], pats: &[&str], fail_on: &[&str], now: Instant) -> Output {
    let pats: Vec<String> = pats.iter().map(|s| s.to_string()).collect();
    let fail: Vec<String> = fail_on.iter().map(|s| s.to_string()).collect();
    Output::new((COLS, ROWS), prompts, &pats, &fail, now)
}

/// The chunks of a recording.
fn recording(name: &str) -> Vec<Vec<u8>> {
    let path = format!(
        "{}/tests/oauth_support/screens/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut chunks = Vec::new();
    let mut rest = &bytes[..];
    while rest.len() >= 4 {
        let n = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        chunks.push(rest[4..4 + n].to_vec());
        rest = &rest[4 + n..];
    }
    assert!(rest.is_empty() && !chunks.is_empty(), "{path}: bad framing");
    chunks
}

/// Feeds every chunk (10 ms apart); all findings in order.
fn replay(o: &mut Output, chunks: &[Vec<u8>], start: Instant) -> Vec<Findings> {
    chunks
        .iter()
        .enumerate()
        .map(|(i, c)| o.feed(c, start + Duration::from_millis(10 * i as u64)))
        .collect()
}

#[test]
fn words_placed_with_cursor_moves_keep_their_spaces() {
    // claude 2.1 offline: every word is placed with CHA (ESC [ n G); stripping the escapes
    // gave "UnabletoconnecttoAnthropicservices".
    let now = t0();
    let mut o = out(&[], &[], &["Unable to connect to Anthropic services"], now);
    let found = replay(&mut o, &recording("claude-2.1-offline.bin"), now);
    let tail = o.tail();
    assert!(
        tail.contains("Unable to connect to Anthropic services"),
        "{tail}"
    );
    assert!(
        tail.contains("Failed to connect to api.anthropic.com: EAI_AGAIN"),
        "{tail}"
    );
    assert!(!tail.contains('\x1b'), "{tail}");
    let failure = found.iter().find_map(|f| f.failure.clone());
    assert_eq!(
        failure.as_deref(),
        Some("Unable to connect to Anthropic services")
    );
    // Synthetic: cursor-forward and absolute moves, a line overwritten in place.
    let mut o = out(&[], &[], &[], now);
    o.feed(
        b"Hello\x1b[1Cworld\r\n\x1b[5Gindented\r\nold text\rnew",
        now,
    );
    assert_eq!(o.tail(), "Hello world\n    indented\nnew text");
}

#[test]
fn gemini_first_run_is_answered_and_its_wrapped_url_joined() {
    // gemini 0.61, first run in a folder, GOOGLE_GENAI_USE_GCA unset: "Do you trust the
    // files in this folder?" (then it restarts itself), "How would you like to
    // authenticate for this project?", "Opening authentication page in your browser. Do
    // you want to continue?", then the URL, hard-wrapped by Ink over three rows with a
    // two-space indent. The recording's keys were typed by hand, 6/12/17 s in.
    let gemini = super::super::provider::builtins()
        .into_iter()
        .find(|p| p.name == "gemini_cli")
        .unwrap();
    let now = t0();
    let mut o = Output::new(
        (COLS, ROWS),
        &gemini.prompts,
        &gemini.url_patterns,
        &gemini.fail_on,
        now,
    );
    let found = replay(&mut o, &recording("gemini-0.61-first-run.bin"), now);
    let answers: Vec<&String> = found.iter().flat_map(|f| &f.answers).collect();
    assert_eq!(answers, vec!["\r", "\r", "\r"]);
    let urls: Vec<&String> = found.iter().filter_map(|f| f.url.as_ref()).collect();
    assert_eq!(urls.len(), 1, "{urls:?}");
    let url = urls[0];
    assert!(
        url.starts_with("https://accounts.google.com/o/oauth2/v2/auth?redirect_uri=http%3A%2F%2F127.0.0.1%3A33915%2Foauth2callback&access_type=offline&scope=https%3A%2F%2Fwww.googleapis.com%2Fauth%2Fcloud-platform%20https%3A%2F%2Fwww.googleapis.com%2Fauth%2Fuserinfo.email"),
        "{url}"
    );
    assert!(
        url.contains("&state=a4811c34ecc37061f6c450060a7dfe4c668209f734ff652dc07ff97b64392a7e&response_type=code&client_id="),
        "{url}"
    );
    assert!(url.ends_with(".apps.googleusercontent.com"), "{url}");
    assert!(!url.contains(' '), "{url}");
    assert!(
        o.tail().contains("Waiting for authentication..."),
        "{}",
        o.tail()
    );
}

#[test]
fn the_prompts_appear_in_order_in_the_gemini_recording() {
    // Which prompt each answer was for: the screen after the chunk that got it.
    let gemini = super::super::provider::builtins()
        .into_iter()
        .find(|p| p.name == "gemini_cli")
        .unwrap();
    let now = t0();
    let mut o = Output::new((COLS, ROWS), &gemini.prompts, &[], &[], now);
    let mut seen = Vec::new();
    for (i, c) in recording("gemini-0.61-first-run.bin").iter().enumerate() {
        let f = o.feed(c, now + Duration::from_millis(10 * i as u64));
        if !f.answers.is_empty() {
            let flat = norm(&o.screen_text());
            let which = gemini
                .prompts
                .iter()
                .rev()
                .find(|p| flat.contains(&norm(&p.prompt)))
                .map(|p| p.prompt.clone());
            seen.push(which.unwrap_or_default());
        }
    }
    assert_eq!(
        seen,
        vec![
            "Do you trust the files in this folder?",
            "How would you like to authenticate for this project?",
            "Opening authentication page in your browser. Do you want to continue?",
        ]
    );
}

#[test]
fn codex_url_wrapped_by_the_terminal_is_whole() {
    let codex = super::super::provider::builtins()
        .into_iter()
        .find(|p| p.name == "codex")
        .unwrap();
    let now = t0();
    let mut o = Output::new((COLS, ROWS), &[], &codex.url_patterns, &[], now);
    let found = replay(&mut o, &recording("codex-0.171-login.bin"), now);
    let url = found.iter().find_map(|f| f.url.clone()).expect("a URL");
    assert!(url.starts_with("https://auth.openai.com/oauth/authorize?response_type=code"));
    assert!(
        url.ends_with("&codex_cli_simplified_flow=true&originator=codex_cli_rs"),
        "{url}"
    );
    assert!(url.contains("code_challenge=Bs5c0iw4X58RZfbb6T72C2eOCUYr1BiPgN3rUpad_rw&"));
}

#[test]
fn prompts_are_answered_once_per_appearance_however_often_redrawn() {
    let now = t0();
    let prompts = vec![pa("Do you want to continue? [Y/n]", "Y\r")];
    let mut o = out(&prompts, &[], &[], now);
    assert!(o.feed(b"Do you want to con", now).answers.is_empty());
    assert_eq!(o.feed(b"tinue? [Y/n] ", now).answers, vec!["Y\r"]);
    // Ink redraws the same dialog with a spinner: erase the line, draw again.
    for frame in ["\u{280b}", "\u{2819}", "\u{2839}"] {
        let redraw = format!("\r\x1b[2K{frame} Do you want to continue? [Y/n] ");
        assert!(o.feed(redraw.as_bytes(), now).answers.is_empty());
    }
    // Erased in one read and drawn again in the next: the same appearance.
    assert!(o.feed(b"\r\x1b[2K", now).answers.is_empty());
    let again = b"\rDo you want to continue? [Y/n] ";
    assert!(o
        .feed(again, now + Duration::from_millis(50))
        .answers
        .is_empty());
    // Gone (for longer than a redraw), then shown again: a new appearance.
    let later = now + Duration::from_secs(1);
    assert!(o.feed(b"\r\x1b[2Kworking...\r\n", later).answers.is_empty());
    assert!(o.tick(later + Duration::from_secs(1)).answers.is_empty());
    assert_eq!(
        o.feed(
            b"\x1b[33mDo you want to\x1b[3Ccontinue? [Y/n]\x1b[0m",
            later + Duration::from_secs(2)
        )
        .answers,
        vec!["Y\r"],
        "drawn with a cursor move instead of spaces: {}",
        o.tail()
    );
    // A prompt drawn over two rows of a box matches too.
    let prompts = vec![pa(
        "Opening authentication page in your browser. Do you want to continue?",
        "\r",
    )];
    let mut o = out(&prompts, &[], &[], now);
    let boxed = "\u{256d}\u{2500}\u{2500}\u{256e}\r\n\u{2502} Opening authentication page in your browser. \u{2502}\r\n\u{2502} Do you want to continue? \u{2502}\r\n";
    assert_eq!(o.feed(boxed.as_bytes(), now).answers, vec!["\r"]);
}

#[test]
fn an_ignored_answer_is_typed_again_a_few_times() {
    let now = t0();
    let prompts = vec![pa("Trust folder?", "\r")];
    let mut o = out(&prompts, &[], &[], now);
    assert_eq!(o.feed(b"Trust folder?", now).answers, vec!["\r"]);
    assert!(o.tick(now + Duration::from_secs(1)).answers.is_empty());
    let mut again = 0;
    for s in 2..20 {
        again += o.tick(now + Duration::from_secs(s)).answers.len();
    }
    assert_eq!(again as u32, RETRIES - 1);
    // One the CLI reacted to (the screen changed) is not typed again.
    let mut o = out(&prompts, &[], &[], now);
    assert_eq!(o.feed(b"Trust folder?", now).answers, vec!["\r"]);
    o.feed(b" (yes)", now + Duration::from_millis(100));
    for s in 2..20 {
        assert!(o.tick(now + Duration::from_secs(s)).answers.is_empty());
    }
}

#[test]
fn a_cli_without_progress_is_stuck_with_its_screen() {
    let now = t0();
    let after = Duration::from_secs(10);
    let prompts = vec![pa("Known prompt?", "y\r")];
    let mut o = out(&prompts, &[], &[], now);
    assert_eq!(o.stuck(now + Duration::from_secs(9), after), None);
    assert_eq!(
        o.stuck(now + Duration::from_secs(10), after).as_deref(),
        Some("stuck: the CLI has shown nothing for 10s")
    );
    // A new release's question: a spinner keeps the screen changing, it is stuck anyway.
    o.feed(b"Pick a colour theme:\r\n> 1. Dark\r\n  2. Light\r\n", now);
    for i in 0..12 {
        let frame = format!("\r{}", ["|", "/", "-", "\\"][i % 4]);
        o.feed(frame.as_bytes(), now + Duration::from_secs(i as u64));
    }
    let why = o.stuck(now + Duration::from_secs(12), after).unwrap();
    assert!(why.contains("no login URL for 12s"), "{why}");
    assert!(why.contains("shows no prompt this agent knows"), "{why}");
    assert!(
        o.tail().contains("Pick a colour theme:\n> 1. Dark"),
        "{}",
        o.tail()
    );
    // A known prompt answered restarts the clock; still there later: named.
    let t = now + Duration::from_secs(13);
    assert_eq!(o.feed(b"\r\nKnown prompt? ", t).answers, vec!["y\r"]);
    assert_eq!(o.stuck(t + Duration::from_secs(9), after), None);
    let why = o.stuck(t + Duration::from_secs(30), after).unwrap();
    assert!(
        why.contains("\"Known prompt?\" is still on the screen"),
        "{why}"
    );
}

#[test]
fn url_is_found_when_complete() {
    let now = t0();
    let pat = [r"https://auth\.example\.com/authorize\?[^\s\x07]+"];
    let mut o = out(&[], &pat, &[], now);
    assert_eq!(
        o.feed(b"Open https://auth.example.com/autho", now).url,
        None
    );
    assert_eq!(o.feed(b"rize?a=1&b=", now).url, None);
    assert_eq!(
        o.feed(b"2\r\n", now).url.as_deref(),
        Some("https://auth.example.com/authorize?a=1&b=2")
    );
    // Reported once, however often it is redrawn.
    assert_eq!(
        o.feed(
            b"\x1b[2A\r\x1b[2KOpen https://auth.example.com/authorize?a=1&b=2\r\n\r\n",
            now
        )
        .url,
        None
    );
    // A newer one (the CLI retried) is reported.
    assert_eq!(
        o.feed(b"Open https://auth.example.com/authorize?a=3 now\r\n", now)
            .url
            .as_deref(),
        Some("https://auth.example.com/authorize?a=3")
    );
}

#[test]
fn urls_wrapped_by_the_cli_are_joined() {
    let now = t0();
    let pat = [r"https://auth\.example\.com/authorize\?[^\s\x07]+"];
    let long = format!(
        "https://auth.example.com/authorize?q={}&end=1",
        "x".repeat(400)
    );
    // Hard-wrapped at the full width with an indent, as Ink prints it.
    let mut o = out(&[], &pat, &[], now);
    let mut text = String::from("  Otherwise navigate to:\r\n");
    let body: Vec<char> = long.chars().collect();
    for piece in body.chunks(198) {
        text.push_str("  ");
        text.extend(piece);
        text.push_str("\r\n");
    }
    text.push_str("Waiting...\r\n");
    let f = o.feed(text.as_bytes(), now);
    assert_eq!(f.url.as_deref(), Some(long.as_str()));
    // Inside a box (border, one column of padding), wrapped at the box's width.
    let mut o = out(&[], &pat, &[], now);
    let mut text = String::new();
    for piece in body.chunks(196) {
        let p: String = piece.iter().collect();
        text.push_str(&format!("\u{2502} {p:<196} \u{2502}\r\n"));
    }
    text.push_str(&format!("\u{2502} {:<196} \u{2502}\r\n", "Waiting..."));
    let f = o.feed(text.as_bytes(), now);
    assert_eq!(f.url.as_deref(), Some(long.as_str()));
}

#[test]
fn a_url_that_leaves_the_screen_within_one_read_is_seen() {
    let now = t0();
    let pat = [r"https://a\.example/authorize\?[^\s]+"];
    // Scrolled off by 100 lines in the same chunk.
    let mut o = out(&[], &pat, &[], now);
    let mut text = String::from("https://a.example/authorize?x=1\r\n");
    for i in 0..100 {
        text.push_str(&format!("line {i}\r\n"));
    }
    assert_eq!(
        o.feed(text.as_bytes(), now).url.as_deref(),
        Some("https://a.example/authorize?x=1")
    );
    // Printed, then the screen cleared, in one read.
    let mut o = out(&[], &pat, &[], now);
    let f = o.feed(
        b"https://a.example/authorize?x=2\r\n\x1b[2J\x1b[HNext step",
        now,
    );
    assert_eq!(f.url.as_deref(), Some("https://a.example/authorize?x=2"));
    assert_eq!(o.tail(), "Next step");
}

proptest::proptest! {
    /// However the PTY cuts the stream, the screen is the same and prompts/URLs are found
    /// the same way.
    #[test]
    fn chunking_does_not_change_the_screen(
        parts in proptest::collection::vec(
            proptest::prop_oneof![
                proptest::strategy::Just(b"\x1b[1;32m".to_vec()),
                proptest::strategy::Just(b"\x1b]0;t\x07".to_vec()),
                proptest::strategy::Just(b"\x1b[3G".to_vec()),
                proptest::strategy::Just(b"\x1b[1A\x1b[2K".to_vec()),
                proptest::strategy::Just("\u{e9}\u{1F600}".as_bytes().to_vec()),
                proptest::strategy::Just(b"Continue? [Y/n]\r\n".to_vec()),
                proptest::strategy::Just(b"https://a.example/authorize?x=1 \r\n".to_vec()),
                proptest::strategy::Just(b"\r\n".to_vec()),
                proptest::collection::vec(0x20u8..0x7f, 0..8),
            ],
            0..20,
        ),
        cuts in proptest::collection::vec(0usize..300, 0..10),
    ) {
        let now = t0();
        let all: Vec<u8> = parts.concat();
        let prompts = vec![pa("Continue? [Y/n]", "Y\r")];
        let pats = [r"https://a\.example/authorize\?[^\s]+"];
        let mut whole = out(&prompts, &pats, &[], now);
        let f1 = whole.feed(&all, now);
        let mut cut = out(&prompts, &pats, &[], now);
        let mut points: Vec<usize> = cuts.into_iter().filter(|c| *c < all.len()).collect();
        points.sort();
        points.dedup();
        let mut url = None;
        let mut answers = 0;
        let mut from = 0;
        for p in points.into_iter().chain([all.len()]) {
            let f = cut.feed(&all[from..p], now);
            url = url.or(f.url);
            answers += f.answers.len();
            from = p;
        }
        proptest::prop_assert_eq!(whole.tail(), cut.tail());
        proptest::prop_assert!(!whole.tail().chars().any(|c| c == '\x1b' || (c < ' ' && c != '\n')));
        // What the final screen shows is found whatever the cuts (what was drawn and
        // overwritten in between depends on where the reads ended).
        let flat = norm(&whole.screen_text());
        if flat.contains("Continue? [Y/n]") {
            proptest::prop_assert!(!f1.answers.is_empty() && answers > 0);
        }
        if whole.search_text().contains("https://a.example/authorize?x=1\n") {
            proptest::prop_assert!(f1.url.is_some() && url.is_some());
        }
    }
}

#[test]
fn pasted_codes_never_leave_even_when_split() {
    let now = t0();
    let mut o = out(&[], &[], &[], now);
    o.feed(b"Paste code here if prompted > ", now);
    o.add_secret("PASTED-123#st4te");
    // The echo comes in pieces; between them, no piece of the code is shown.
    o.feed(b"PASTED-1", now);
    assert!(!o.tail().contains("PASTED"), "{}", o.tail());
    assert!(o.tail().ends_with(REDACTED), "{}", o.tail());
    o.feed(
        b"23#st4te\r\nerror: code PASTED-123#st4te rejected\r\n",
        now,
    );
    let t = o.tail();
    assert!(!t.contains("PASTED") && !t.contains("23#st4te"), "{t}");
    assert!(t.ends_with("error: code [redacted] rejected"), "{t}");
    // Drawn inside a box (the echo does not end the row), and wrapped over two rows.
    let mut o = out(&[], &[], &[], now);
    let code = format!("LONGCODE-{}", "z".repeat(250));
    o.add_secret(&code);
    o.feed(
        format!("\u{2502} > {} \u{2502}\r\n", &code[..12]).as_bytes(),
        now,
    );
    assert!(!o.tail().contains("LONGCODE"), "{}", o.tail());
    o.feed(format!("{code}\r\ndone\r\n").as_bytes(), now);
    let t = o.tail();
    assert!(!t.contains("LONGCODE") && !t.contains("zzzzzzzz"), "{t}");
}

#[test]
fn long_output_keeps_the_end_of_the_screen() {
    let now = t0();
    let mut o = out(&[], &[], &[], now);
    for i in 0..5000 {
        o.feed(format!("line {i} {}\r\n", "=".repeat(190)).as_bytes(), now);
    }
    let t = o.tail();
    assert!(
        t.ends_with(&format!("line 4999 {}", "=".repeat(190))),
        "{t}"
    );
    assert!(t.len() <= SHOW);
    assert!(o.parser.callbacks().rows.len() <= KEEP_ROWS);
}
