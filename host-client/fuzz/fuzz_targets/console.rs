//! The console-log reader on arbitrary bytes: never panics, and the incremental reader (lines
//! fed one by one, as `wait_ready` does) agrees with the one-shot `analyze`.
#![no_main]

use host_client::{analyze, Diagnoser};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let whole = analyze(&text);
    for f in &whole.findings {
        assert!(f.line <= whole.lines, "finding past the end: {f:?}");
        assert!(f.occurrences >= 1);
    }
    let mut pairs: Vec<_> = whole.findings.iter().map(|f| (f.cause, &f.subject)).collect();
    let n = pairs.len();
    pairs.sort_by(|a, b| format!("{a:?}").cmp(&format!("{b:?}")));
    pairs.dedup();
    assert_eq!(pairs.len(), n, "one finding per cause and subject");

    let mut d = Diagnoser::new();
    for line in text.split('\n') {
        d.push_line(line);
    }
    assert_eq!(d.finish(), whole);
    for line in text.split('\n') {
        let _ = host_client::diagnose::kernel_timestamp(line);
        let _ = host_client::diagnose::clean_line(line);
    }
});
