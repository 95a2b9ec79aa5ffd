//! Per-VM settings on the kernel command line (issue 11). The old controller mounted every
//! VM's rootfs to `sed` placeholders into it; here one golden image serves every VM unchanged
//! and what differs per VM is a kernel parameter, read in the guest and built on the host
//! from these same types. The supervisor exports them to its services as environment
//! variables ([`VmSettings::env`]); a bad value is reported naming the parameter and the
//! default is used, so one typo does not stop the VM.
//!
//! | parameter | env | default |
//! |---|---|---|
//! | `guest_agent.display=WxH` | `GUESTKIT_DISPLAY_SIZE`, `_WIDTH`, `_HEIGHT` | 1280x720 |
//! | `guest_agent.webrtc_controller=URL` | `GUESTKIT_WEBRTC_CONTROLLER` | none (WHEP only) |
//! | `guest_agent.webrtc_session=ID` | `GUESTKIT_WEBRTC_SESSION` | none |
//! | `guest_agent.proxy=URL` | `GUESTKIT_PROXY` | none (direct) |
//! | `decodo_port=N` (the old controller's) | `GUESTKIT_PROXY_GATEWAY_PORT` | none |
//!
//! The proxy is what the VM's browser and login CLIs go through (`http://HOST:PORT`,
//! `https://…` or `socks5://…`, no credentials: they would show in the browser's process
//! arguments). `decodo_port=N` means `http://<gateway>:N`, the gateway being the default
//! route's when a login starts (so it holds however the address was configured);
//! `guest_agent.proxy=` wins when both are given.

use crate::KernelCmdline;
use std::fmt;

pub const DISPLAY_PARAM: &str = "guest_agent.display";
pub const CONTROLLER_PARAM: &str = "guest_agent.webrtc_controller";
pub const SESSION_PARAM: &str = "guest_agent.webrtc_session";
pub const PROXY_PARAM: &str = "guest_agent.proxy";
pub const DECODO_PARAM: &str = "decodo_port";
/// The proxy URL, when one was given as a URL.
pub const PROXY_ENV: &str = "GUESTKIT_PROXY";
/// The proxy's port on the default gateway, when given as `decodo_port=`.
pub const PROXY_GATEWAY_PORT_ENV: &str = "GUESTKIT_PROXY_GATEWAY_PORT";

/// The virtual display's size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisplaySize {
    pub width: u16,
    pub height: u16,
}

impl Default for DisplaySize {
    fn default() -> Self {
        Self {
            width: 1280,
            height: 720,
        }
    }
}

impl fmt::Display for DisplaySize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

impl std::str::FromStr for DisplaySize {
    type Err = String;
    /// `WxH`, each even (the encoder's 4:2:0 needs it), width 16..=7680, height 16..=4320.
    fn from_str(s: &str) -> Result<Self, String> {
        let (w, h) = s
            .split_once(['x', 'X'])
            .ok_or_else(|| format!("`{s}` is not WIDTHxHEIGHT (e.g. 1280x720)"))?;
        let num = |v: &str, what: &str, max: u16| -> Result<u16, String> {
            let n: u16 = v
                .parse()
                .map_err(|_| format!("`{s}`: {what} `{v}` is not a number"))?;
            if !(16..=max).contains(&n) || !n.is_multiple_of(2) {
                return Err(format!(
                    "`{s}`: {what} must be even and 16..={max}, got {n}"
                ));
            }
            Ok(n)
        };
        Ok(Self {
            width: num(w, "width", 7680)?,
            height: num(h, "height", 4320)?,
        })
    }
}

/// Where controller-mode signaling goes: both the controller and the session, or neither.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Controller {
    pub url: String,
    pub session: String,
}

/// The HTTP proxy the VM's browsing goes through.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proxy {
    /// `guest_agent.proxy=URL`.
    Url(String),
    /// `decodo_port=N`: `http://<default gateway>:N`, the gateway read when it is used.
    GatewayPort(u16),
}

impl Proxy {
    /// The URL, given the default gateway (only [`Proxy::GatewayPort`] needs it).
    pub fn url(&self, gateway: Option<std::net::IpAddr>) -> Result<String, String> {
        match self {
            Proxy::Url(u) => Ok(u.clone()),
            Proxy::GatewayPort(port) => match gateway {
                Some(std::net::IpAddr::V6(g)) => Ok(format!("http://[{g}]:{port}")),
                Some(g) => Ok(format!("http://{g}:{port}")),
                None => Err(format!(
                    "{DECODO_PARAM}={port}: there is no default route to take the gateway from"
                )),
            },
        }
    }

    /// The proxy as the supervisor's services read it back ([`VmSettings::env`]); `None`
    /// when neither variable is set, `Err` naming the variable when one is unusable.
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Option<Proxy>, String> {
        if let Some(u) = get(PROXY_ENV).filter(|u| !u.is_empty()) {
            return check_proxy_url(&u)
                .map(|()| Some(Proxy::Url(u)))
                .map_err(|e| format!("{PROXY_ENV}: {e}"));
        }
        match get(PROXY_GATEWAY_PORT_ENV).filter(|p| !p.is_empty()) {
            Some(p) => parse_port(&p)
                .map(|p| Some(Proxy::GatewayPort(p)))
                .map_err(|e| format!("{PROXY_GATEWAY_PORT_ENV}: {e}")),
            None => Ok(None),
        }
    }
}

/// Everything per VM the agent reads from the command line (the token and the address have
/// their own parsers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmSettings {
    pub display: DisplaySize,
    pub controller: Option<Controller>,
    pub proxy: Option<Proxy>,
}

/// A parameter whose value cannot be used: named, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{param}: {message}")]
pub struct SettingError {
    pub param: &'static str,
    pub message: String,
}

/// A URL value as an error message shows it (80 characters at most, escaped), after the
/// checks every URL parameter shares: at most 2048 bytes, printable ASCII without spaces.
fn checked_shape(url: &str, shown_as: &str) -> Result<String, String> {
    let shown: String = shown_as
        .chars()
        .take(80)
        .flat_map(char::escape_default)
        .collect();
    if url.len() > 2048 {
        return Err(format!("`{shown}…` is longer than 2048 bytes"));
    }
    if !url.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("`{shown}` has spaces or control characters"));
    }
    Ok(shown)
}

/// `http://` or `https://`, printable ASCII without spaces, at most 2048 bytes.
pub fn check_controller_url(url: &str) -> Result<(), String> {
    let shown = checked_shape(url, url)?;
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("`{shown}` is not an http:// or https:// URL"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("`{shown}` has no host"));
    }
    Ok(())
}

/// `http://`, `https://` or `socks5://` with a host and a port, no credentials, no path
/// beyond `/`, printable ASCII, at most 2048 bytes.
pub fn check_proxy_url(url: &str) -> Result<(), String> {
    // Credentials are never echoed: the message goes to the console.
    let redacted = match url.rfind('@') {
        Some(j) => {
            let scheme = url
                .find("://")
                .filter(|&i| i < j)
                .map_or("", |i| &url[..i + 3]);
            format!("{scheme}***{}", &url[j..])
        }
        None => url.to_string(),
    };
    let shown = checked_shape(url, &redacted)?;
    let rest = ["http://", "https://", "socks5://"]
        .iter()
        .find_map(|p| url.strip_prefix(p))
        .ok_or_else(|| format!("`{shown}` is not an http://, https:// or socks5:// URL"))?;
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.contains('@') {
        return Err(format!(
            "`{shown}` has credentials; they are not supported (they would show in the \
             browser's process arguments)"
        ));
    }
    if authority.contains(['/', '?', '#']) {
        return Err(format!(
            "`{shown}` must be SCHEME://HOST:PORT, without a path"
        ));
    }
    let (host, port) = authority
        .rsplit_once(':')
        .filter(|(h, _)| !h.is_empty() && (!h.contains(':') || h.starts_with('[')))
        .ok_or_else(|| format!("`{shown}` has no HOST:PORT"))?;
    if host.starts_with('[') != host.ends_with(']') {
        return Err(format!(
            "`{shown}`: the host `{host}` is not a valid [IPv6] address"
        ));
    }
    parse_port(port).map_err(|e| format!("`{shown}`: {e}"))?;
    Ok(())
}

/// A TCP port, 1..=65535.
fn parse_port(p: &str) -> Result<u16, String> {
    let shown: String = p.chars().take(20).flat_map(char::escape_default).collect();
    match p.parse::<u16>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("port `{shown}` is not a number in 1..=65535")),
    }
}

/// 1 to 128 of `A-Z a-z 0-9 . _ -` (it goes into the controller's URL paths).
pub fn check_session_id(id: &str) -> Result<(), String> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        let shown: String = id.chars().take(80).flat_map(char::escape_default).collect();
        Err(format!(
            "`{shown}` must be 1-128 characters of A-Z a-z 0-9 . _ -"
        ))
    }
}

impl VmSettings {
    /// The settings, and an error per unusable parameter (whose default is then used).
    pub fn from_cmdline(cmd: &KernelCmdline) -> (VmSettings, Vec<SettingError>) {
        let mut s = VmSettings::default();
        let mut errors = Vec::new();
        if let Some(v) = cmd.get(DISPLAY_PARAM) {
            match v.parse() {
                Ok(d) => s.display = d,
                Err(message) => errors.push(SettingError {
                    param: DISPLAY_PARAM,
                    message: format!("{message}; using {}", DisplaySize::default()),
                }),
            }
        }
        let url = cmd
            .get(CONTROLLER_PARAM)
            .map(|u| (u, check_controller_url(u)));
        let session = cmd.get(SESSION_PARAM).map(|i| (i, check_session_id(i)));
        let mut bad = false;
        for (param, checked) in [
            (CONTROLLER_PARAM, url.as_ref().map(|(_, r)| r)),
            (SESSION_PARAM, session.as_ref().map(|(_, r)| r)),
        ] {
            if let Some(Err(message)) = checked {
                bad = true;
                errors.push(SettingError {
                    param,
                    message: format!("{message}; controller-mode signaling is off"),
                });
            }
        }
        match (url, session) {
            (Some((u, Ok(()))), Some((i, Ok(())))) if !bad => {
                s.controller = Some(Controller {
                    url: u.to_string(),
                    session: i.to_string(),
                })
            }
            (Some(_), None) if !bad => errors.push(SettingError {
                param: SESSION_PARAM,
                message: format!(
                    "missing: {CONTROLLER_PARAM}= needs it; controller-mode signaling is off"
                ),
            }),
            (None, Some(_)) if !bad => errors.push(SettingError {
                param: CONTROLLER_PARAM,
                message: format!(
                    "missing: {SESSION_PARAM}= needs it; controller-mode signaling is off"
                ),
            }),
            _ => {}
        }
        if let Some(u) = cmd.get(PROXY_PARAM) {
            match check_proxy_url(u) {
                Ok(()) => s.proxy = Some(Proxy::Url(u.to_string())),
                Err(message) => errors.push(SettingError {
                    param: PROXY_PARAM,
                    message: format!("{message}; logins start without a proxy"),
                }),
            }
        }
        if let Some(p) = cmd.get(DECODO_PARAM) {
            match parse_port(p) {
                Ok(port) if s.proxy.is_none() && cmd.get(PROXY_PARAM).is_none() => {
                    s.proxy = Some(Proxy::GatewayPort(port))
                }
                Ok(_) => {}
                Err(message) => errors.push(SettingError {
                    param: DECODO_PARAM,
                    message: format!("{message}; logins start without a proxy"),
                }),
            }
        }
        (s, errors)
    }

    /// The environment the supervisor gives its services.
    pub fn env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            (
                "GUESTKIT_DISPLAY_SIZE".to_string(),
                self.display.to_string(),
            ),
            (
                "GUESTKIT_DISPLAY_WIDTH".to_string(),
                self.display.width.to_string(),
            ),
            (
                "GUESTKIT_DISPLAY_HEIGHT".to_string(),
                self.display.height.to_string(),
            ),
        ];
        if let Some(c) = &self.controller {
            env.push(("GUESTKIT_WEBRTC_CONTROLLER".into(), c.url.clone()));
            env.push(("GUESTKIT_WEBRTC_SESSION".into(), c.session.clone()));
        }
        match &self.proxy {
            Some(Proxy::Url(u)) => env.push((PROXY_ENV.into(), u.clone())),
            Some(Proxy::GatewayPort(p)) => env.push((PROXY_GATEWAY_PORT_ENV.into(), p.to_string())),
            None => {}
        }
        env
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> (VmSettings, Vec<SettingError>) {
        VmSettings::from_cmdline(&KernelCmdline::parse(text))
    }

    #[test]
    fn defaults_without_parameters() {
        let (s, e) = parse("console=ttyS0 quiet");
        assert!(e.is_empty());
        assert_eq!(s.display.to_string(), "1280x720");
        assert_eq!(s.controller, None);
        assert_eq!(
            s.env(),
            vec![
                ("GUESTKIT_DISPLAY_SIZE".into(), "1280x720".into()),
                ("GUESTKIT_DISPLAY_WIDTH".into(), "1280".into()),
                ("GUESTKIT_DISPLAY_HEIGHT".into(), "720".into()),
            ]
        );
    }

    #[test]
    fn all_settings() {
        let (s, e) = parse("guest_agent.display=640x360 guest_agent.webrtc_controller=http://192.168.100.1:3000 guest_agent.webrtc_session=vm-7_a");
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(
            s.display,
            DisplaySize {
                width: 640,
                height: 360
            }
        );
        let env = s.env();
        assert!(env.contains(&(
            "GUESTKIT_WEBRTC_CONTROLLER".into(),
            "http://192.168.100.1:3000".into()
        )));
        assert!(env.contains(&("GUESTKIT_WEBRTC_SESSION".into(), "vm-7_a".into())));
    }

    #[test]
    fn bad_values_name_the_parameter_and_fall_back() {
        for (text, param) in [
            ("guest_agent.display=big", DISPLAY_PARAM),
            ("guest_agent.display=641x360", DISPLAY_PARAM),
            ("guest_agent.display=99999x2", DISPLAY_PARAM),
            ("guest_agent.display=undefinedxundefined", DISPLAY_PARAM),
            (
                "guest_agent.webrtc_controller=ftp://x guest_agent.webrtc_session=s",
                CONTROLLER_PARAM,
            ),
            (
                "guest_agent.webrtc_controller=undefined guest_agent.webrtc_session=s",
                CONTROLLER_PARAM,
            ),
            (
                "guest_agent.webrtc_controller=http:// guest_agent.webrtc_session=s",
                CONTROLLER_PARAM,
            ),
            (
                "guest_agent.webrtc_controller=http://h guest_agent.webrtc_session=a/b",
                SESSION_PARAM,
            ),
            ("guest_agent.webrtc_controller=http://h", SESSION_PARAM),
            ("guest_agent.webrtc_session=s", CONTROLLER_PARAM),
        ] {
            let (s, e) = parse(text);
            assert_eq!(e.len(), 1, "{text}: {e:?}");
            assert_eq!(e[0].param, param, "{text}: {e:?}");
            assert!(
                e[0].to_string().starts_with(&format!("{param}: ")),
                "{}",
                e[0]
            );
            assert_eq!(s.controller, None, "{text}");
            if param == DISPLAY_PARAM {
                assert_eq!(s.display, DisplaySize::default());
            }
        }
    }

    #[test]
    fn the_proxy_from_a_url_or_the_old_controllers_decodo_port() {
        let (s, e) = parse("guest_agent.proxy=http://10.0.0.1:3128");
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(s.proxy, Some(Proxy::Url("http://10.0.0.1:3128".into())));
        assert!(s
            .env()
            .contains(&(PROXY_ENV.into(), "http://10.0.0.1:3128".into())));
        let (s, e) =
            parse("ip=192.168.100.2::192.168.100.1:255.255.255.0::eth0:off decodo_port=10001");
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(s.proxy, Some(Proxy::GatewayPort(10001)));
        assert!(s
            .env()
            .contains(&(PROXY_GATEWAY_PORT_ENV.into(), "10001".into())));
        let gw = "192.168.100.1".parse().ok();
        assert_eq!(
            Proxy::GatewayPort(10001).url(gw).as_deref(),
            Ok("http://192.168.100.1:10001")
        );
        let e = Proxy::GatewayPort(10001).url(None).unwrap_err();
        assert!(e.starts_with("decodo_port=10001: "), "{e}");
        // The URL wins over decodo_port.
        let (s, e) = parse("decodo_port=1 guest_agent.proxy=socks5://[fd00::1]:1080");
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(s.proxy, Some(Proxy::Url("socks5://[fd00::1]:1080".into())));
        // Back from the environment the supervisor sets.
        for s in [
            parse("guest_agent.proxy=https://p.example:8443/").0,
            parse("decodo_port=65535").0,
        ] {
            let env = s.env();
            let get = |k: &str| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
            assert_eq!(Proxy::from_env(get), Ok(s.proxy.clone()));
        }
        assert_eq!(Proxy::from_env(|_| None), Ok(None));
        let e = Proxy::from_env(|k| (k == PROXY_GATEWAY_PORT_ENV).then(|| "x".into()));
        assert!(e.unwrap_err().starts_with(PROXY_GATEWAY_PORT_ENV));
    }

    #[test]
    fn bad_proxies_name_the_parameter_and_leave_no_proxy() {
        for (text, param, why) in [
            (
                "guest_agent.proxy=undefined",
                PROXY_PARAM,
                "is not an http://",
            ),
            (
                "guest_agent.proxy=ftp://h:1",
                PROXY_PARAM,
                "is not an http://",
            ),
            ("guest_agent.proxy=http://h", PROXY_PARAM, "no HOST:PORT"),
            (
                "guest_agent.proxy=http://:8080",
                PROXY_PARAM,
                "no HOST:PORT",
            ),
            ("guest_agent.proxy=http://h:0", PROXY_PARAM, "port `0`"),
            (
                "guest_agent.proxy=http://h:99999",
                PROXY_PARAM,
                "port `99999`",
            ),
            (
                "guest_agent.proxy=http://u:secret@h:1",
                PROXY_PARAM,
                "credentials",
            ),
            (
                "guest_agent.proxy=http://h:1/path",
                PROXY_PARAM,
                "without a path",
            ),
            (
                "guest_agent.proxy=http://u:secret@h:1\u{1}",
                PROXY_PARAM,
                "control characters",
            ),
            (
                "guest_agent.proxy=u:secret@h:1",
                PROXY_PARAM,
                "is not an http://",
            ),
            (
                "guest_agent.proxy=http:/u:secret@h:1",
                PROXY_PARAM,
                "is not an http://",
            ),
            (
                "guest_agent.proxy=http://fd00::1:1",
                PROXY_PARAM,
                "no HOST:PORT",
            ),
            ("decodo_port=undefined", DECODO_PARAM, "port `undefined`"),
            ("decodo_port=0", DECODO_PARAM, "port `0`"),
            ("decodo_port=70000", DECODO_PARAM, "port `70000`"),
        ] {
            let (s, e) = parse(text);
            assert_eq!(e.len(), 1, "{text}: {e:?}");
            assert_eq!(e[0].param, param, "{text}: {e:?}");
            let m = e[0].to_string();
            assert!(m.contains(why), "{text}: {m}");
            assert!(m.ends_with("logins start without a proxy"), "{m}");
            assert!(!m.contains("secret"), "{m}");
            assert_eq!(s.proxy, None, "{text}");
        }
    }

    #[test]
    fn control_characters_are_escaped_in_the_message() {
        let (_, e) =
            parse("guest_agent.webrtc_controller=http://a\u{1b}[2J guest_agent.webrtc_session=s");
        assert!(!e[0].message.contains('\u{1b}'), "{e:?}");
    }
}
