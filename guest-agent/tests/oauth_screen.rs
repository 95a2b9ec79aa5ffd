//! The login CLI's terminal is rendered (issue 14 item 2), end to end through the PTY:
//! an Ink-like stand-in whose dialogs are answered from the screen and whose wrapped URL is
//! taken whole from it; claude's real offline screen (a recording replayed) fails the
//! session at once with readable words; a CLI at a question nobody knows is reported stuck
//! with its screen.

mod oauth_support;

use oauth_support::*;
use serde_json::json;
use std::path::Path;
use std::time::Instant;

fn support(file: &str) -> String {
    expose(Path::new(&format!(
        "{}/tests/oauth_support/{file}",
        env!("CARGO_MANIFEST_DIR")
    )))
    .display()
    .to_string()
}

fn config(fake: &FakeOAuthServer) -> String {
    let auth = fake.authorize_url();
    let ink = support("cli/ink_like.py");
    let replay = support("cli/replay.py");
    let claude = support("screens/claude-2.1-offline.bin");
    format!(
        r#"
home = "{{home}}"
display = ":4242"
browser = ["{{dir}}/no-such-browser"]
shim_command = ["{{bin}}", "open-url"]
deadline_secs = 120
stuck_secs = 2

[providers.ink]
command = ["python3", "{ink}", "--authorize", "{auth}", "--dialog", "Do you trust the files in this folder?|Trust folder", "--dialog", "How would you like to authenticate for this project?|Sign in with Google"]
credential_paths = ["~/.ink/creds.json"]
required_keys = ["tokens"]
url_patterns = ['http://127\.0\.0\.1:\d+/authorize\?[^\s]+']
prompts = [
  {{ prompt = "Do you trust the files in this folder?", answer = "\r" }},
  {{ prompt = "How would you like to authenticate for this project?", answer = "\r" }},
]

[providers.claude_code]
command = ["python3", "{replay}", "{claude}", "--exit", "1"]

[providers.unknown]
command = ["sh", "-c", "printf 'Pick a colour theme\r\n> 1. Dark\r\n  2. Light\r\n'; exec sleep 600"]
credential_paths = ["~/.unknown/creds.json"]
required_keys = ["tokens"]
prompts = [{{ prompt = "Select login method", answer = "\r" }}]
"#
    )
}

#[test]
fn an_ink_cli_is_answered_from_its_screen_and_its_wrapped_url_taken_whole() {
    let fake = FakeOAuthServer::start();
    let a = Agent::start(&config(&fake));
    let t = Instant::now();
    let (code, body) = a.post("/auth/ink", json!({"sessionId": "ink1"}));
    assert_eq!(code, 200, "{body}");
    // The URL is taken as soon as its last line is on the screen; the CLI draws its
    // "Waiting" line after it, so wait for both before reading the screen.
    let s = a.wait_session("ink1", "a URL and the CLI waiting", |s| {
        s["oauthUrl"].is_string()
            && s["lastOutput"]
                .as_str()
                .is_some_and(|l| l.contains("Waiting for authentication..."))
    });
    let url = s["oauthUrl"].as_str().unwrap();
    let want = format!(
        "{}?redirect_uri=http%3A%2F%2F127.0.0.1%3A9%2Fcb&scope={}&state=ink-st4te&client_id=stand-in",
        fake.authorize_url(),
        "s".repeat(300)
    );
    assert_eq!(url, want, "{s:#}");
    assert_eq!(s["urlSource"], "output");
    let last = s["lastOutput"].as_str().unwrap();
    assert!(last.contains("Waiting for authentication..."), "{last}");
    assert!(last.contains("Chose: Sign in with Google"), "{last}");
    assert!(!last.contains('\x1b'), "{last}");
    eprintln!(
        "ink-like stand-in: two dialogs answered, URL after {:?}",
        t.elapsed()
    );
}

#[test]
fn claude_offline_fails_at_once_with_its_words() {
    let fake = FakeOAuthServer::start();
    let a = Agent::start(&config(&fake));
    let t = Instant::now();
    let (code, body) = a.post("/auth/claude_code", json!({"sessionId": "c1"}));
    assert!(code == 200 || code == 500, "{code} {body}");
    let s = a.wait_state("c1", "failed");
    let took = t.elapsed();
    let reason = s["reason"].as_str().unwrap();
    assert_eq!(
        reason, "the CLI cannot log in: Unable to connect to Anthropic services",
        "{s:#}"
    );
    let last = s["lastOutput"].as_str().unwrap();
    assert!(
        last.contains("Failed to connect to api.anthropic.com: EAI_AGAIN"),
        "{last}"
    );
    assert!(
        last.contains("Check your internet connection and network settings."),
        "{last}"
    );
    eprintln!("claude offline screen: failed after {took:?}");
}

#[test]
fn a_cli_at_an_unknown_question_is_stuck_with_its_screen() {
    let fake = FakeOAuthServer::start();
    let a = Agent::start(&config(&fake));
    let (code, body) = a.post("/auth/unknown", json!({"sessionId": "u1"}));
    assert_eq!(code, 200, "{body}");
    let s = a.wait_session("u1", "stuck", |s| {
        s["reason"]
            .as_str()
            .is_some_and(|r| r.starts_with("stuck:"))
    });
    assert_eq!(s["state"], "starting", "{s:#}");
    let reason = s["reason"].as_str().unwrap();
    assert!(
        reason.contains("shows no prompt this agent knows"),
        "{reason}"
    );
    assert_eq!(
        s["lastOutput"], "Pick a colour theme\n> 1. Dark\n  2. Light",
        "{s:#}"
    );
}
