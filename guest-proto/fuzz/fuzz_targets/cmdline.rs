//! Whole kernel command lines: tokenising and every accessor never panic; a line that can be
//! printed parses back to an equal value, and so does every `ip=` and `rd.route=` in it.
#![no_main]

use guest_proto::cmdline::KernelCmdline;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    let c = KernelCmdline::parse(s);
    let _ = c.get("ip");
    let _ = c.get_all("nameserver");
    let _ = c.template_values();
    let _ = c.nameservers();
    if c.can_display() {
        let text = c.to_string();
        assert_eq!(KernelCmdline::parse(&text), c, "{s:?} printed as {text:?}");
    }
    if let Ok(ips) = c.ip_configs() {
        for x in ips {
            assert_eq!(x.to_string().parse().as_ref(), Ok(&x));
        }
    }
    if let Ok(routes) = c.rd_routes() {
        for r in routes {
            assert_eq!(r.to_string().parse().as_ref(), Ok(&r));
        }
    }
});
