//! Unit tests of [`super`] (Firefox profiles, prefs, proxy parsing).

use super::*;

#[test]
fn firefox_is_recognised_by_its_file_name() {
    let c = |s: &str| vec![s.to_string()];
    assert!(is_firefox(&c("/usr/bin/firefox-esr")));
    assert!(is_firefox(&c("firefox")));
    assert!(!is_firefox(&c("/usr/bin/chromium")));
    assert!(!is_firefox(&c("/opt/firefox-wrapper.sh")));
    assert!(!is_firefox(&[]));
}

#[test]
fn a_session_id_is_always_a_plain_directory_name() {
    let p = profile_dir(Path::new("/h"), "..");
    assert_eq!(p, Path::new("/h/.guestkit/firefox/session-.."));
    assert_eq!(p.parent(), Some(Path::new("/h/.guestkit/firefox")));
}

#[test]
fn proxy_prefs_keep_loopback_direct() {
    let js = user_js(Some("http://192.168.100.1:3128")).unwrap();
    for want in [
        "user_pref(\"network.proxy.type\", 1);",
        "user_pref(\"network.proxy.http\", \"192.168.100.1\");",
        "user_pref(\"network.proxy.ssl_port\", 3128);",
        "user_pref(\"network.proxy.no_proxies_on\", \"localhost,127.0.0.1,[::1]\");",
    ] {
        assert!(js.contains(want), "{want} missing in\n{js}");
    }
    let js = user_js(Some("socks5://[fd00::1]:1080/")).unwrap();
    assert!(
        js.contains("user_pref(\"network.proxy.socks\", \"fd00::1\");"),
        "{js}"
    );
    assert!(user_js(None)
        .unwrap()
        .contains("\"network.proxy.type\", 0);"));
    for bad in [
        "192.168.1.1:3128",
        "ftp://h:1",
        "http://u:p@h:1",
        "http://h:x",
        "http://\"h:1",
    ] {
        let e = user_js(Some(bad)).unwrap_err();
        assert!(e.starts_with("proxy "), "{bad}: {e}");
    }
}

#[test]
fn the_profile_is_made_without_following_links() {
    let d = tempfile::tempdir().unwrap();
    let home = d.path().join("home");
    std::fs::create_dir(&home).unwrap();
    let user = LoginUser::current();
    let p = profile_dir(&home, "s1");
    write_profile(&home, &p, "one", &user).unwrap();
    write_profile(&home, &p, "two", &user).unwrap();
    assert_eq!(std::fs::read_to_string(p.join("user.js")).unwrap(), "two");
    assert_eq!(
        std::fs::read_dir(&p).unwrap().count(),
        1,
        "no temporary file left"
    );
    // A link planted where a directory goes is refused, not followed.
    let elsewhere = d.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    std::os::unix::fs::symlink(&elsewhere, home.join(PROFILES_DIR).join("session-s2")).unwrap();
    assert!(write_profile(&home, &profile_dir(&home, "s2"), "x", &user).is_err());
    assert_eq!(std::fs::read_dir(&elsewhere).unwrap().count(), 0);
}

#[test]
fn a_profile_is_in_use_while_its_lock_names_a_live_pid() {
    let d = tempfile::tempdir().unwrap();
    assert!(!in_use(d.path()));
    let lock = d.path().join("lock");
    std::os::unix::fs::symlink(format!("127.0.1.1:+{}", std::process::id()), &lock).unwrap();
    assert!(in_use(d.path()));
    std::fs::remove_file(&lock).unwrap();
    std::os::unix::fs::symlink("127.0.1.1:+999999999", &lock).unwrap();
    assert!(!in_use(d.path()));
}

#[test]
fn a_missing_firefox_is_named() {
    let e = check_installed(&["no-such-firefox".into()], Some("/usr/bin")).unwrap_err();
    assert_eq!(e, "no-such-firefox: not found (is the browser installed?)");
    assert!(check_installed(&["sh".into()], Some("/nonexistent:/bin")).is_ok());
}

#[test]
fn idle_profiles_of_other_sessions_are_pruned() {
    let d = tempfile::tempdir().unwrap();
    let mk = |name: &str, age_secs: u64| {
        let p = d.path().join(name);
        std::fs::create_dir(&p).unwrap();
        std::fs::write(p.join("prefs.js"), "x").unwrap();
        let t = std::time::SystemTime::now() - Duration::from_secs(age_secs);
        File::open(&p).unwrap().set_modified(t).unwrap();
        p
    };
    let keep = mk("session-now", 7200);
    let old = mk("session-old", 7200);
    let fresh = mk("session-fresh", 60);
    let held = mk("session-held", 7200);
    let lock = format!("127.0.0.1:+{}", std::process::id());
    std::os::unix::fs::symlink(lock, held.join("lock")).unwrap();
    let other = mk("not-a-profile", 7200);
    prune(&keep, &LoginUser::current());
    let start = std::time::Instant::now();
    while old.exists() {
        assert!(start.elapsed() < Duration::from_secs(10), "not pruned");
        std::thread::sleep(Duration::from_millis(20));
    }
    for p in [&keep, &fresh, &held, &other] {
        assert!(p.exists(), "{} was removed", p.display());
    }
}

#[test]
fn the_private_bus_is_seen_while_something_listens_on_it() {
    use std::os::linux::net::SocketAddrExt;
    let profile = Path::new("/nonexistent/home/.guestkit/firefox/session-bus-test");
    assert!(!bus_is_up(profile));
    let name = bus_name(profile);
    assert_eq!(bus_address(profile), format!("unix:abstract={name}"));
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let l = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    assert!(bus_is_up(profile));
    drop(l);
    assert!(!bus_is_up(profile));
}
