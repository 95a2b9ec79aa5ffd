//! `cargo fuzz run envfile`: the env-file parser must never panic, every reported line
//! number must exist, and quoting any parsed value must give it back.
#![no_main]
use guest_proto::envfile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let parsed = envfile::parse(text);
    let lines = text.split('\n').count();
    for e in &parsed.errors {
        assert!(e.line >= 1 && e.line <= lines, "{e}");
    }
    for (k, v) in &parsed.vars {
        let again = envfile::parse(&format!("{k}={}\n", envfile::quote(v)));
        assert_eq!(again.vars, vec![(k.clone(), v.clone())]);
    }
});
