//! Firefox (Debian's `firefox-esr`) as the VM's browser (issue 14 item 5). Chosen by the
//! browser command's file name (`firefox`, `firefox-esr`); Chromium needs none of this.
//!
//! - **One profile per session**: `<home>/.guestkit/firefox/session-<id>`, owned by the login
//!   user, with a `user.js` written before each start that turns off what would stand
//!   between the user and the login page (first-run and what's-new pages, the default-browser
//!   question, session restore, the safe-mode offer after kills, telemetry, updates,
//!   password saving) and what would browse on its own through the VM's (paid) proxy
//!   (prefetching, safe-browsing updates, studies). The proxy, when the login has one, is
//!   set there too (`network.proxy.*`; loopback stays direct). Profiles of other sessions
//!   idle for an hour and held by no Firefox are removed when a profile is prepared.
//! - **Kiosk**: `--kiosk` is added when the command lacks it; `--profile DIR` always.
//! - **New URLs into the running instance**: Firefox 153 ESR forwards a second
//!   `firefox --profile DIR URL` to the instance owning that profile over D-Bus only (no X11
//!   remoting any more). The VM's login user has no session bus, and without one the second
//!   start hangs on a modal "Firefox is already running, but is not responding". So each
//!   Firefox gets a private bus: it is started through `sh`, which first forks
//!   `dbus-daemon --session` on an abstract socket named after the profile (the daemon
//!   inherits the group's marker, so closing the browser closes it), then execs Firefox. A
//!   new URL of the same session is handed over with [`open_in_running`] (measured: the
//!   client exits and the page is requested ~0.1 s later, against ~1.5-2 s for a restart);
//!   when that cannot work (no `dbus-daemon` in the image: no bus listening; Firefox gone) or
//!   fails within [`REMOTE_WAIT`], the caller falls back to closing and starting again.
//!
//! Files in the login user's home are written by root here, so nothing follows a link the
//! user may have planted: every directory is opened with `O_NOFOLLOW` relative to its
//! parent, `user.js` is a fresh file (`O_EXCL`) renamed into place.

use super::browser::{Browser, Launch};
use super::procs::{self, ProcGroup};
use super::user::LoginUser;
use std::ffi::CString;
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsRawFd, FromRawFd};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

/// Where profiles live, under the login home.
pub const PROFILES_DIR: &str = ".guestkit/firefox";
/// How long a second `firefox --profile DIR URL` may take to hand its URL over (0.1-0.5 s
/// measured; it is a whole Firefox starting, so slow under emulation). Only tried when the
/// private bus is up, so an image without `dbus-daemon` does not wait for nothing.
pub const REMOTE_WAIT: Duration = Duration::from_secs(15);
/// Profiles of other sessions older than this and not in use are removed.
pub const PRUNE_AFTER: Duration = Duration::from_secs(3600);

/// Whether `command` runs Firefox (its file name is `firefox` or `firefox-esr`).
pub fn is_firefox(command: &[String]) -> bool {
    command.first().is_some_and(|c| {
        let name = Path::new(c)
            .file_name()
            .map(|n| n.to_string_lossy().to_ascii_lowercase())
            .unwrap_or_default();
        matches!(name.as_str(), "firefox" | "firefox-esr" | "firefox-bin")
    })
}

/// The profile directory of `session` (ids are `[A-Za-z0-9_.-]`, so `..` is possible: the
/// prefix keeps every id a plain name).
pub fn profile_dir(home: &Path, session: &str) -> PathBuf {
    home.join(PROFILES_DIR).join(format!("session-{session}"))
}

/// The private bus of the Firefox using `profile` (abstract socket: no path-length limit,
/// nothing left on disk; the bus lets in only its own uid).
pub fn bus_address(profile: &Path) -> String {
    format!("unix:abstract={}", bus_name(profile))
}

fn bus_name(profile: &Path) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(profile.as_os_str().as_encoded_bytes());
    let h: String = d[..8].iter().map(|b| format!("{b:02x}")).collect();
    format!("guestkit-firefox-{h}")
}

/// Whether a listener holds the private bus of `profile` (`@name` in `/proc/net/unix`).
fn bus_is_up(profile: &Path) -> bool {
    let want = format!("@{}", bus_name(profile));
    std::fs::read_to_string("/proc/net/unix").is_ok_and(|t| {
        t.lines()
            .any(|l| l.split_whitespace().last() == Some(want.as_str()))
    })
}

/// Preferences of every session's profile.
const PREFS: &[(&str, &str)] = &[
    // The login page at once: no first-run, welcome, what's-new or default-browser pages.
    ("browser.shell.checkDefaultBrowser", "false"),
    ("browser.startup.homepage_override.mstone", "\"ignore\""),
    ("startup.homepage_welcome_url", "\"\""),
    ("startup.homepage_welcome_url.additional", "\"\""),
    ("startup.homepage_override_url", "\"\""),
    ("browser.startup.firstrunSkipsHomepage", "true"),
    ("browser.aboutwelcome.enabled", "false"),
    ("trailhead.firstrun.didSeeAboutWelcome", "true"),
    ("browser.messaging-system.whatsNewPanel.enabled", "false"),
    ("browser.uitour.enabled", "false"),
    ("browser.laterrun.enabled", "false"),
    ("browser.rights.3.shown", "true"),
    ("datareporting.policy.firstRunURL", "\"\""),
    (
        "datareporting.policy.dataSubmissionPolicyBypassNotification",
        "true",
    ),
    ("browser.startup.page", "0"),
    ("browser.startup.homepage", "\"about:blank\""),
    ("browser.newtabpage.enabled", "false"),
    // A browser closed by the agent (TERM, KILL) starts again clean: no restored tabs,
    // no "start in safe mode?" after a few kills.
    ("browser.sessionstore.resume_from_crash", "false"),
    ("browser.sessionstore.max_resumed_crashes", "0"),
    ("toolkit.startup.max_resumed_crashes", "-1"),
    ("browser.warnOnQuit", "false"),
    ("browser.tabs.warnOnClose", "false"),
    ("browser.crashReports.unsubmittedCheck.autoSubmit2", "false"),
    // Nothing over the login page: no offer to save the password, no translation bar.
    ("signon.rememberSignons", "false"),
    ("browser.translations.automaticallyPopup", "false"),
    // Telemetry, studies, updates: off.
    ("datareporting.policy.dataSubmissionEnabled", "false"),
    ("datareporting.healthreport.uploadEnabled", "false"),
    ("toolkit.telemetry.enabled", "false"),
    ("toolkit.telemetry.unified", "false"),
    ("toolkit.telemetry.archive.enabled", "false"),
    ("toolkit.telemetry.reportingpolicy.firstRun", "false"),
    ("app.normandy.enabled", "false"),
    ("app.shield.optoutstudies.enabled", "false"),
    ("app.update.auto", "false"),
    ("app.update.enabled", "false"),
    ("app.update.disabledForTesting", "true"),
    ("extensions.update.enabled", "false"),
    ("extensions.systemAddon.update.enabled", "false"),
    ("extensions.getAddons.cache.enabled", "false"),
    // No browsing of its own through the VM's proxy.
    ("network.prefetch-next", "false"),
    ("network.dns.disablePrefetch", "true"),
    ("network.http.speculative-parallel-limit", "0"),
    ("browser.urlbar.speculativeConnect.enabled", "false"),
    ("network.captive-portal-service.enabled", "false"),
    ("network.connectivity-service.enabled", "false"),
    ("browser.safebrowsing.malware.enabled", "false"),
    ("browser.safebrowsing.phishing.enabled", "false"),
    ("browser.safebrowsing.downloads.enabled", "false"),
    ("browser.safebrowsing.blockedURIs.enabled", "false"),
    ("browser.region.update.enabled", "false"),
    ("browser.search.update", "false"),
    ("browser.topsites.contile.enabled", "false"),
    ("browser.newtabpage.activity-stream.feeds.topsites", "false"),
    (
        "browser.newtabpage.activity-stream.feeds.section.topstories",
        "false",
    ),
    // The profile stays small (it is per session): no disk cache.
    ("browser.cache.disk.enable", "false"),
];

/// `user.js` of a profile: [`PREFS`] and the proxy (`None`: direct, whatever the
/// environment says). `Err` names what is wrong with the proxy URL.
pub fn user_js(proxy: Option<&str>) -> Result<String, String> {
    let mut text = String::from("// Written by guest-agent before each start; edits are lost.\n");
    let mut pref = |k: &str, v: &str| text.push_str(&format!("user_pref(\"{k}\", {v});\n"));
    for (k, v) in PREFS {
        pref(k, v);
    }
    match proxy.map(parse_proxy).transpose()? {
        None => pref("network.proxy.type", "0"),
        Some(p) => {
            pref("network.proxy.type", "1");
            let host = format!("\"{}\"", p.host);
            if p.socks {
                pref("network.proxy.socks", &host);
                pref("network.proxy.socks_port", &p.port.to_string());
                pref("network.proxy.socks_version", if p.v4 { "4" } else { "5" });
                pref("network.proxy.socks_remote_dns", "true");
            } else {
                for k in ["http", "ssl"] {
                    pref(&format!("network.proxy.{k}"), &host);
                    pref(&format!("network.proxy.{k}_port"), &p.port.to_string());
                }
            }
            pref(
                "network.proxy.no_proxies_on",
                "\"localhost,127.0.0.1,[::1]\"",
            );
            pref("network.proxy.allow_hijacking_localhost", "false");
            // No WebRTC UDP around the proxy: a page must not learn the VM's own address.
            pref(
                "media.peerconnection.ice.proxy_only_if_behind_proxy",
                "true",
            );
        }
    }
    Ok(text)
}

struct ProxyPrefs {
    host: String,
    port: u16,
    socks: bool,
    v4: bool,
}

/// `http://host:port`, `socks5://…`, `socks4://…` (`https://` and user:password are refused)
/// (prefs cannot carry it), the host must be a plain name or address.
fn parse_proxy(url: &str) -> Result<ProxyPrefs, String> {
    let bad = |why: &str| format!("proxy {url:?}: {why}");
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| bad("no scheme (http://host:port)"))?;
    let (socks, v4, default_port) =
        match scheme.to_ascii_lowercase().as_str() {
            "http" => (false, false, 80),
            "https" => return Err(bad(
                "an https:// proxy cannot be given to Firefox (its proxy prefs speak plain HTTP \
                 to the proxy)",
            )),
            "socks" | "socks5" | "socks5h" => (true, false, 1080),
            "socks4" | "socks4a" => (true, true, 1080),
            _ => return Err(bad("scheme is not http, https, socks5 or socks4")),
        };
    let authority = rest.split('/').next().unwrap_or("");
    if authority.contains('@') {
        return Err(bad("credentials in the URL cannot be given to Firefox"));
    }
    let (host, port) = match authority.strip_prefix('[') {
        Some(v6) => {
            let (h, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
            (h, after.strip_prefix(':'))
        }
        None => match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        },
    };
    let port = match port {
        Some(p) => p.parse().map_err(|_| bad("port is not a number"))?,
        None => default_port,
    };
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '_');
    if host.is_empty() || !host.chars().all(plain) {
        return Err(bad("host is empty or not a plain name or address"));
    }
    Ok(ProxyPrefs {
        host: host.to_string(),
        port,
        socks,
        v4,
    })
}

/// What the browser's start needs for Firefox.
pub struct Plan {
    pub profile: PathBuf,
}

/// Makes the session's profile and its `user.js` (before each start, so a new proxy
/// applies); `Err` is the session's browser error.
pub fn prepare(l: &Launch) -> Result<Plan, String> {
    let profile = profile_dir(l.home, l.session);
    let js = match user_js(l.proxy) {
        Ok(js) => js,
        Err(e) => {
            // Never stops a login: it goes direct, as for the CLIs (oauth::proxy).
            tracing::error!(
                session = l.session,
                "firefox: {e}; this browser starts without a proxy"
            );
            user_js(None)?
        }
    };
    write_profile(l.home, &profile, &js, l.user)
        .map_err(|e| format!("firefox profile {}: {e}", profile.display()))?;
    prune(&profile, l.user);
    Ok(Plan { profile })
}

/// Profiles of earlier sessions (tens of MB each) untouched for [`PRUNE_AFTER`] and held by
/// no running Firefox are removed, by `rm -rf` run as the login user in the background (so
/// a link planted in its home can only lead to what that user may delete anyway).
fn prune(keep: &Path, user: &LoginUser) {
    let Some(parent) = keep.parent() else { return };
    let Ok(entries) = std::fs::read_dir(parent) else {
        return;
    };
    let stale: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p != keep
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("session-"))
                && std::fs::symlink_metadata(p).is_ok_and(|m| {
                    m.is_dir()
                        && m.modified()
                            .ok()
                            .and_then(|t| t.elapsed().ok())
                            .is_some_and(|age| age > PRUNE_AFTER)
                })
                && !in_use(p)
        })
        .collect();
    if stale.is_empty() {
        return;
    }
    let mut cmd = Command::new("rm");
    cmd.arg("-rf")
        .arg("--")
        .args(&stale)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    user.apply(&mut cmd);
    let _ = std::thread::Builder::new()
        .name("firefox-prune".into())
        .spawn(move || match cmd.status() {
            Ok(st) if st.success() => {
                tracing::info!(
                    profiles = stale.len(),
                    "firefox: old session profiles removed"
                )
            }
            r => tracing::warn!(result = ?r, "firefox: removing old session profiles failed"),
        });
}

/// Whether a Firefox runs on `profile`: its `lock` is a link to `IP:+PID` while it does.
fn in_use(profile: &Path) -> bool {
    std::fs::read_link(profile.join("lock"))
        .ok()
        .and_then(|t| {
            let t = t.to_string_lossy().into_owned();
            t.rsplit_once('+')
                .and_then(|(_, pid)| pid.parse::<u32>().ok())
        })
        .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
}

impl Plan {
    /// `sh -c` starting the private bus and then Firefox with `command`'s arguments,
    /// `--kiosk` when missing and `--profile`; the URL is appended by the caller.
    pub fn command(&self, command: &[String]) -> Command {
        const SCRIPT: &str = r#"bus="$1"; shift
if command -v dbus-daemon >/dev/null 2>&1 &&
   dbus-daemon --session --fork --nopidfile --address="$bus" </dev/null >/dev/null 2>&1; then
  export DBUS_SESSION_BUS_ADDRESS="$bus"
fi
exec "$@""#;
        let mut cmd = Command::new("/bin/sh");
        cmd.args([
            "-c",
            SCRIPT,
            "guestkit-firefox",
            &bus_address(&self.profile),
        ])
        .args(self.firefox_args(command));
        cmd
    }

    fn firefox_args(&self, command: &[String]) -> Vec<String> {
        let mut args = command.to_vec();
        if !args.iter().any(|a| a == "--kiosk" || a == "-kiosk") {
            args.push("--kiosk".into());
        }
        args.push("--profile".into());
        args.push(self.profile.display().to_string());
        args
    }

    /// Variables Firefox gets beside the login user's.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        // No crash reporter dialog over the login page after a kill. Nothing else: the
        // content sandbox works as the unprivileged login user (no MOZ_DISABLE_*).
        vec![("MOZ_CRASHREPORTER_DISABLE", "1".into())]
    }
}

/// The program `command` names is there (searched in `PATH` when it has no `/`): `Err` is
/// the same reason a direct start would give, since `sh` hides a missing program.
pub fn check_installed(command: &[String], path: Option<&str>) -> Result<(), String> {
    let name = command.first().cloned().unwrap_or_default();
    let found = if name.contains('/') {
        Path::new(&name).is_file()
    } else {
        path.unwrap_or("/usr/local/bin:/usr/bin:/bin")
            .split(':')
            .any(|d| !d.is_empty() && Path::new(d).join(&name).is_file())
    };
    if found {
        Ok(())
    } else {
        Err(format!("{name}: not found (is the browser installed?)"))
    }
}

/// Hands `url` to the Firefox `running` of the same session (its profile and bus): a
/// second `firefox --profile DIR URL`, which exits once the running one has it. `false`
/// when it did not within [`REMOTE_WAIT`] (the caller restarts the browser).
pub async fn open_in_running(
    running: &Browser,
    command: &[String],
    url: &str,
    l: &Launch<'_>,
) -> bool {
    if running.exited().is_some() || !running.group.alive() {
        return false;
    }
    let plan = Plan {
        profile: profile_dir(l.home, l.session),
    };
    if !bus_is_up(&plan.profile) {
        tracing::info!(
            session = l.session,
            "firefox: no private bus (is dbus-daemon installed?): the browser is started again"
        );
        return false;
    }
    let mut cmd = Command::new(command.first().map(String::as_str).unwrap_or(""));
    cmd.args(&plan.firefox_args(command)[1..])
        .arg(url)
        .env_clear()
        .envs(super::user::child_env(l.user, l.home))
        .envs(plan.env())
        .env("DBUS_SESSION_BUS_ADDRESS", bus_address(&plan.profile))
        .env("DISPLAY", l.display)
        .current_dir(l.home)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // Its own marker: if it starts a browser of its own instead, that is killed, not the
    // running one.
    let marker = format!("{}-remote", l.track.marker);
    cmd.env(procs::MARK_ENV, &marker);
    l.user.apply(&mut cmd);
    procs::own_session_dying_with_us(&mut cmd);
    let started = std::time::Instant::now();
    let mut child = match procs::spawn(cmd) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(session = l.session, error = %e, "firefox: cannot start the remote client");
            return false;
        }
    };
    let group = ProcGroup::adopt(child.id(), l.user.uid, &marker, "browser-remote", None);
    let until = tokio::time::Instant::now() + REMOTE_WAIT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(st)) => break Some(st),
            Ok(None) if tokio::time::Instant::now() < until => {
                tokio::time::sleep(Duration::from_millis(20)).await
            }
            _ => break None,
        }
    };
    let ok = status.is_some_and(|s| s.success());
    if !ok {
        group.close(Duration::from_millis(500)).await;
        let _ = child.wait();
    }
    tracing::info!(
        session = l.session,
        ok,
        ms = started.elapsed().as_millis() as u64,
        "firefox: new URL handed to the running instance"
    );
    ok
}

/// Creates `profile` (under `home`) and writes `user.js` in it, as described in the module
/// doc; directories made here are given to `user`.
fn write_profile(home: &Path, profile: &Path, js: &str, user: &LoginUser) -> std::io::Result<()> {
    let rel = profile
        .strip_prefix(home)
        .map_err(|_| std::io::Error::other("not under the login home"))?;
    let mut dir = open_dir(libc::AT_FDCWD, home)?;
    for part in rel.components() {
        dir = subdir(&dir, part.as_os_str(), user)?;
    }
    let tmp = format!(".user.js.{:016x}", fastrand::u64(..));
    let ctmp = cstr(tmp.as_ref())?;
    // SAFETY: valid descriptor and NUL-terminated name.
    let fd = unsafe {
        libc::openat(
            dir.as_raw_fd(),
            ctmp.as_ptr(),
            libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW | libc::O_CLOEXEC,
            0o600,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor we just opened and own.
    let mut f = unsafe { File::from_raw_fd(fd) };
    let written = f.write_all(js.as_bytes()).and_then(|()| {
        if user.switch {
            std::os::unix::fs::fchown(&f, Some(user.uid), Some(user.gid))?;
        }
        Ok(())
    });
    let cjs = cstr("user.js".as_ref())?;
    // SAFETY: valid descriptors and NUL-terminated names.
    let renamed = written.and_then(|()| {
        match unsafe {
            libc::renameat(
                dir.as_raw_fd(),
                ctmp.as_ptr(),
                dir.as_raw_fd(),
                cjs.as_ptr(),
            )
        } {
            0 => Ok(()),
            _ => Err(std::io::Error::last_os_error()),
        }
    });
    if renamed.is_err() {
        // SAFETY: as above.
        unsafe { libc::unlinkat(dir.as_raw_fd(), ctmp.as_ptr(), 0) };
    }
    renamed
}

fn cstr(p: &std::ffi::OsStr) -> std::io::Result<CString> {
    CString::new(p.as_encoded_bytes()).map_err(|_| std::io::Error::other("NUL in a path"))
}

fn open_dir(at: i32, name: &Path) -> std::io::Result<File> {
    let c = cstr(name.as_os_str())?;
    // SAFETY: NUL-terminated name; the result is checked.
    let fd = unsafe {
        libc::openat(
            at,
            c.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: a descriptor we just opened and own.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// `parent/name`, made (0700, given to `user`) when missing; an existing one must be the
/// user's own (not a link: `O_NOFOLLOW`).
fn subdir(parent: &File, name: &std::ffi::OsStr, user: &LoginUser) -> std::io::Result<File> {
    use std::os::unix::fs::MetadataExt;
    let c = cstr(name)?;
    // SAFETY: valid descriptor and NUL-terminated name.
    let made = unsafe { libc::mkdirat(parent.as_raw_fd(), c.as_ptr(), 0o700) } == 0;
    if !made {
        let e = std::io::Error::last_os_error();
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            return Err(e);
        }
    }
    let dir = open_dir(parent.as_raw_fd(), Path::new(name))?;
    if user.switch {
        if made {
            std::os::unix::fs::fchown(&dir, Some(user.uid), Some(user.gid))?;
        } else if dir.metadata()?.uid() != user.uid {
            return Err(std::io::Error::other(format!(
                "{} is not owned by {}",
                name.to_string_lossy(),
                user.name
            )));
        }
    }
    Ok(dir)
}

#[cfg(test)]
#[path = "firefox_tests.rs"]
mod tests;
