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

use crate::KernelCmdline;
use std::fmt;

pub const DISPLAY_PARAM: &str = "guest_agent.display";
pub const CONTROLLER_PARAM: &str = "guest_agent.webrtc_controller";
pub const SESSION_PARAM: &str = "guest_agent.webrtc_session";

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
            if !(16..=max).contains(&n) || n % 2 != 0 {
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

/// Everything per VM the agent reads from the command line (the token and the address have
/// their own parsers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VmSettings {
    pub display: DisplaySize,
    pub controller: Option<Controller>,
}

/// A parameter whose value cannot be used: named, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{param}: {message}")]
pub struct SettingError {
    pub param: &'static str,
    pub message: String,
}

/// `http://` or `https://`, printable ASCII without spaces, at most 2048 bytes.
pub fn check_controller_url(url: &str) -> Result<(), String> {
    let shown: String = url
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
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
        .ok_or_else(|| format!("`{shown}` is not an http:// or https:// URL"))?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err(format!("`{shown}` has no host"));
    }
    Ok(())
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
    fn control_characters_are_escaped_in_the_message() {
        let (_, e) =
            parse("guest_agent.webrtc_controller=http://a\u{1b}[2J guest_agent.webrtc_session=s");
        assert!(!e[0].message.contains('\u{1b}'), "{e:?}");
    }
}
