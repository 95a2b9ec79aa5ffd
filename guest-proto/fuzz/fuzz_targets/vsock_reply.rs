//! `cargo fuzz run vsock_reply`: the hybrid-vsock reply decoder (bytes from the VM's device,
//! fed in the pieces the first input byte chooses) must never panic, never buffer past
//! `MAX_REPLY_LINE` before the newline, agree with the one-shot parse, and give back every
//! byte after the line untouched.
#![no_main]
use guest_proto::vsock::{parse_reply, ReplyDecoder, Step, MAX_REPLY_LINE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&chunk, data)) = data.split_first() else {
        return;
    };
    let chunk = usize::from(chunk % 16) + 1;
    let mut d = ReplyDecoder::new();
    let mut fed = 0;
    for piece in data.chunks(chunk) {
        let r = d.feed(piece);
        fed += piece.len();
        match r {
            Ok(Step::NeedMore) => assert!(d.pending().len() < MAX_REPLY_LINE),
            Ok(Step::Ok { host_port, rest }) => {
                let nl = data.iter().position(|&b| b == b'\n').unwrap();
                assert!(nl < MAX_REPLY_LINE);
                assert_eq!(parse_reply(&data[..nl]), Ok(host_port));
                assert_eq!(&rest[..], &data[nl + 1..fed]);
                return;
            }
            Err(e) => {
                assert!(!e.to_string().bytes().any(|b| b < 0x20 || b == 0x7f));
                if let Some(nl) = data[..fed].iter().position(|&b| b == b'\n') {
                    if nl < MAX_REPLY_LINE {
                        assert_eq!(parse_reply(&data[..nl]), Err(e));
                    }
                }
                return;
            }
        }
    }
});
