//! The bearer token of the streamer's own TCP listener (`guest-stream --listen`, for
//! development and tests). In a VM the streamer listens only on its root-only unix socket and
//! `guest-agent serve` checks the token before proxying, with the full policy (hashed tokens,
//! the explicit opt-out); this is the small part a stand-alone streamer needs.

use guest_proto::KernelCmdline;
use sha2::{Digest, Sha256};
use std::path::Path;
use subtle::ConstantTimeEq;

/// Kernel parameter with the token in clear (the one `serve` reads too).
pub const TOKEN_PARAM: &str = "guest_agent.token";

/// The clear token: the file wins; an empty file or value counts as none. A hashed token
/// (`guest_agent.token_sha256=`) is not usable here: the listener then refuses everyone.
pub fn load_token(file: &Path, cmdline: &Path) -> Option<String> {
    if let Ok(text) = std::fs::read_to_string(file) {
        let t = text.trim();
        if !t.is_empty() {
            return Some(t.to_string());
        }
    }
    let text = std::fs::read_to_string(cmdline).ok()?;
    KernelCmdline::parse(&text)
        .get(TOKEN_PARAM)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
}

/// `true` when `header_value` is `Bearer <expected>`. The digests are compared in constant
/// time, so neither the answer time nor the token's length leaks.
pub fn authorized(expected: &str, header_value: Option<&str>) -> bool {
    let Some(presented) = header_value.and_then(|h| h.strip_prefix("Bearer ")) else {
        return false;
    };
    let a: [u8; 32] = Sha256::digest(expected.as_bytes()).into();
    let b: [u8; 32] = Sha256::digest(presented.trim().as_bytes()).into();
    !expected.is_empty() && bool::from(a.ct_eq(&b))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_must_match_exactly() {
        assert!(authorized("s3cret", Some("Bearer s3cret")));
        assert!(!authorized("s3cret", Some("Bearer s3cre")));
        assert!(!authorized("s3cret", Some("Bearer s3cretX")));
        assert!(!authorized("s3cret", Some("Basic s3cret")));
        assert!(!authorized("s3cret", None));
        assert!(!authorized("", Some("Bearer ")));
    }

    #[test]
    fn file_wins_over_cmdline_and_empty_is_none() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("token");
        let cmdline = dir.path().join("cmdline");
        std::fs::write(&cmdline, "console=ttyS0 guest_agent.token=fromcmd quiet\n").expect("w");
        assert_eq!(load_token(&file, &cmdline).as_deref(), Some("fromcmd"));
        std::fs::write(&file, "fromfile\n").expect("w");
        assert_eq!(load_token(&file, &cmdline).as_deref(), Some("fromfile"));
        std::fs::write(&file, "\n").expect("w");
        std::fs::write(&cmdline, "console=ttyS0 guest_agent.token_sha256=ab\n").expect("w");
        assert_eq!(load_token(&file, &cmdline), None);
    }
}
