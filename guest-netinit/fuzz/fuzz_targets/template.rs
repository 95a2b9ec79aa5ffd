//! The template reader and the source merge: the first line is a kernel cmdline, the rest a
//! template. Never panics; an error names a line that exists; a parsed template's values are
//! valid, and the networkd handoff written for it is read back as the same configuration.
#![no_main]

use guest_netinit::sources::{self, CmdlineInputs, TemplateInput};
use guest_netinit::{files, template};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let (cmdline, text) = s.split_once('\n').unwrap_or((s, ""));
    let Ok(inputs) = CmdlineInputs::from_text(cmdline) else {
        return;
    };
    match template::parse(text, &inputs.values) {
        Err(e) => assert!(e.line >= 1 && e.line <= text.lines().count().max(1), "{e}"),
        Ok(t) => {
            for a in &t.addresses {
                assert!(a.prefix_len <= if a.addr.is_ipv4() { 32 } else { 128 });
            }
            for r in &t.routes {
                assert_eq!(
                    template::network_of(r.destination, r.prefix_len),
                    r.destination
                );
            }
        }
    }
    let input = TemplateInput {
        path: "/t".into(),
        text: text.into(),
    };
    if let Ok(plan) = sources::build(&inputs, Some(&input)) {
        if let Some(cfg) = plan.config {
            let handoff = files::handoff(&cfg);
            let back = template::parse(&handoff, &Default::default())
                .unwrap_or_else(|e| panic!("handoff does not parse: {e}\n{handoff}"));
            assert_eq!(back.addresses, cfg.addresses, "{handoff}");
            assert_eq!(back.routes, cfg.routes, "{handoff}");
            assert_eq!(back.gateway, cfg.gateway, "{handoff}");
            assert_eq!(back.dns, cfg.dns, "{handoff}");
            assert_eq!(
                back.name.as_deref(),
                Some(cfg.interface.as_str()),
                "{handoff}"
            );
        }
    }
});
