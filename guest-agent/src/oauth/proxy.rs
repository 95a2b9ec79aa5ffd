//! The per-VM HTTP proxy (issue 14 item 6). The old controller gave each VM a port on the
//! host (`decodo_port=N`) whose proxy that VM's browsing must go through; here it is a
//! kernel parameter (`guest_agent.proxy=URL`, or `decodo_port=N` for `http://<gateway>:N`,
//! parsed in `guest_proto::vm_settings` and handed down by the supervisor as environment)
//! or, on a laptop, `proxy =` in `oauth.toml`. It is applied to the login CLIs (the usual
//! `HTTP(S)_PROXY` variables, with `NO_PROXY` keeping loopback, where the agent and the
//! CLIs' callback listeners are, direct) and to the browser (Chromium's `--proxy-server`).
//!
//! An unusable value never stops a login: it is said on the console and in the log,
//! naming the parameter, and the login goes direct.

use guest_proto::vm_settings::Proxy;
use std::net::IpAddr;

/// What stays direct: the agent, the shim's socket peers and the CLIs' callback ports.
pub const NO_PROXY: &str = "localhost,127.0.0.1,::1";

/// The proxy for a login starting now: the kernel command line's (the supervisor's
/// environment) over `configured` (`oauth.toml`); `None`: direct.
pub fn for_login(configured: Option<&str>) -> Option<String> {
    let from_cmdline = Proxy::from_env(|k| std::env::var(k).ok());
    let chosen = match from_cmdline {
        Ok(Some(p)) => p.url(default_gateway()),
        Ok(None) => return configured.map(str::to_string),
        Err(e) => Err(e),
    };
    match chosen {
        Ok(url) => Some(url),
        Err(e) => {
            // `e` names what was bad: the variable, or `decodo_port=N` without a gateway.
            let message = format!("proxy: {e}; this login starts without a proxy");
            tracing::error!("{message}");
            crate::console::emit(
                guest_proto::Level::Error,
                guest_proto::Event::Warning { message },
            );
            None
        }
    }
}

/// The default route's gateway in this network namespace (IPv4, as netinit sets it).
fn default_gateway() -> Option<IpAddr> {
    let routes = procfs::net::route().ok()?;
    routes
        .iter()
        .find(|r| {
            r.destination.is_unspecified() && r.mask.is_unspecified() && !r.gateway.is_unspecified()
        })
        .map(|r| IpAddr::V4(r.gateway))
}

/// The variables a CLI (Node, Python, curl, Go) reads, both spellings.
pub fn env(url: &str) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for k in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"] {
        env.push((k.to_string(), url.to_string()));
        env.push((k.to_ascii_lowercase(), url.to_string()));
    }
    env.push(("NO_PROXY".into(), NO_PROXY.into()));
    env.push(("no_proxy".into(), NO_PROXY.into()));
    // Node's built-in fetch (undici) ignores the variables unless this is set (Node 22.21+).
    env.push(("NODE_USE_ENV_PROXY".into(), "1".into()));
    env
}

/// Whether `command` is a Chromium-family browser (it takes `--proxy-server`).
pub fn is_chromium(command: &[String]) -> bool {
    command.first().is_some_and(|c| {
        let name = std::path::Path::new(c)
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        name.contains("chrom") || name.contains("brave") || name.contains("edge")
    })
}

/// Chromium's flags for `url`: loopback stays direct (Chromium's own default, said
/// explicitly so a `<-loopback>` in the image's flags cannot send the callback away).
pub fn chromium_args(url: &str) -> Vec<String> {
    vec![
        format!("--proxy-server={url}"),
        "--proxy-bypass-list=localhost;127.0.0.1;[::1]".to_string(),
        // No WebRTC UDP around the proxy: a page must not learn the VM's own address.
        "--force-webrtc-ip-handling-policy=disable_non_proxied_udp".to_string(),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_has_both_spellings_and_keeps_loopback_direct() {
        let e = env("http://10.0.0.1:3128");
        for k in ["HTTP_PROXY", "https_proxy", "ALL_PROXY"] {
            assert!(
                e.contains(&(k.into(), "http://10.0.0.1:3128".into())),
                "{k}"
            );
        }
        assert!(e.contains(&("NO_PROXY".into(), NO_PROXY.into())));
    }

    #[test]
    fn chromium_is_recognised_by_its_file_name() {
        let c = |s: &str| vec![s.to_string(), "--kiosk".into()];
        assert!(is_chromium(&c("/usr/bin/chromium")));
        assert!(is_chromium(&c("google-chrome-stable")));
        assert!(!is_chromium(&c("/usr/bin/firefox-esr")));
        assert!(!is_chromium(&[]));
        assert_eq!(
            chromium_args("socks5://h:1")[0],
            "--proxy-server=socks5://h:1"
        );
    }
}
