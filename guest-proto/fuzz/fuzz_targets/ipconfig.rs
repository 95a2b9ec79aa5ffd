//! `ip=` values (and `rd.route=`): never panic; whatever parses prints back to an equal value.
#![no_main]

use guest_proto::cmdline::RdRoute;
use guest_proto::ipconfig::IpConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(x) = s.parse::<IpConfig>() {
        let text = x.to_string();
        let back = text.parse::<IpConfig>();
        assert_eq!(back.as_ref(), Ok(&x), "{s:?} printed as {text:?}");
        assert_eq!(x.validate(), Ok(()), "{s:?}");
    }
    if let Ok(r) = s.parse::<RdRoute>() {
        let text = r.to_string();
        assert_eq!(text.parse::<RdRoute>().as_ref(), Ok(&r), "{s:?} printed as {text:?}");
    }
});
