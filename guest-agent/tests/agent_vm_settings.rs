//! Per-VM settings from the kernel command line reach the services (issue 11): one golden
//! image, no per-VM edit. The supervisor reads the command line (here a file named by
//! `GUESTKIT_CMDLINE`), exports the display size and the controller-mode settings to every
//! service, and says on the console which parameter was bad (falling back to its default).

mod common;
use common::*;

fn settings_seen(cmdline: &str) -> (String, String) {
    let d = tempfile::tempdir().unwrap();
    let cmdline_path = d.path().join("cmdline");
    std::fs::write(&cmdline_path, cmdline).unwrap();
    let agent = Agent::start_with_env(
        r#"
[services.env]
command = ["sh", "-c", "env | grep ^GUESTKIT_ | grep -v KMSG | sort > {dir}/env.out; sleep 1000"]
"#,
        &[("GUESTKIT_CMDLINE", cmdline_path.to_str().unwrap())],
    );
    let out = agent.path("env.out");
    let env = agent.wait("the service's environment", |_| {
        std::fs::read_to_string(&out)
            .ok()
            .filter(|t| t.contains("GUESTKIT_DISPLAY_SIZE"))
    });
    let stdout = agent.stdout.lock().unwrap().join("\n");
    (env, stdout)
}

#[test]
fn display_and_controller_settings_become_the_services_environment() {
    let (env, _) = settings_seen(
        "console=ttyS0 guest_agent.display=640x360 guest_agent.webrtc_controller=http://192.168.100.1:3000 guest_agent.webrtc_session=vm-7\n",
    );
    for line in [
        "GUESTKIT_DISPLAY_SIZE=640x360",
        "GUESTKIT_DISPLAY_WIDTH=640",
        "GUESTKIT_DISPLAY_HEIGHT=360",
        "GUESTKIT_WEBRTC_CONTROLLER=http://192.168.100.1:3000",
        "GUESTKIT_WEBRTC_SESSION=vm-7",
    ] {
        assert!(env.lines().any(|l| l == line), "{line} missing:\n{env}");
    }
}

#[test]
fn a_bad_setting_is_reported_naming_the_parameter_and_the_default_is_used() {
    let (env, stdout) =
        settings_seen("guest_agent.display=undefinedxundefined guest_agent.webrtc_session=s\n");
    assert!(
        env.lines().any(|l| l == "GUESTKIT_DISPLAY_SIZE=1280x720"),
        "{env}"
    );
    assert!(!env.contains("GUESTKIT_WEBRTC_SESSION"), "{env}");
    assert!(
        stdout.contains("guest_agent.display: `undefinedxundefined`"),
        "the console should name the parameter and the value:\n{stdout}"
    );
    assert!(
        stdout.contains("guest_agent.webrtc_controller: missing"),
        "{stdout}"
    );
}

#[test]
fn the_proxy_reaches_the_services_as_a_url_or_the_gateway_port() {
    let (env, _) = settings_seen("guest_agent.proxy=http://192.168.100.1:3128\n");
    assert!(
        env.lines()
            .any(|l| l == "GUESTKIT_PROXY=http://192.168.100.1:3128"),
        "{env}"
    );
    let (env, _) = settings_seen(
        "ip=192.168.100.2::192.168.100.1:255.255.255.0::eth0:off decodo_port=10001\n",
    );
    assert!(
        env.lines()
            .any(|l| l == "GUESTKIT_PROXY_GATEWAY_PORT=10001"),
        "{env}"
    );
    assert!(!env.contains("GUESTKIT_PROXY="), "{env}");
}

#[test]
fn a_bad_proxy_is_said_on_the_console_and_no_proxy_is_set() {
    let (env, stdout) = settings_seen("decodo_port=undefined\n");
    assert!(!env.contains("GUESTKIT_PROXY"), "{env}");
    assert!(
        stdout.contains("decodo_port: port `undefined` is not a number in 1..=65535; logins start without a proxy"),
        "{stdout}"
    );
    let (env, stdout) = settings_seen("guest_agent.proxy=http://user:hunter2@10.0.0.1:3128\n");
    assert!(!env.contains("GUESTKIT_PROXY"), "{env}");
    assert!(
        stdout.contains("guest_agent.proxy: `http://***@10.0.0.1:3128` has credentials"),
        "{stdout}"
    );
    assert!(!stdout.contains("hunter2"), "{stdout}");
}
