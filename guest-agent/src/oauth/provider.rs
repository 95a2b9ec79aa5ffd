//! Providers are data: which CLI to run for a login, how its URL shows up, which
//! first-run questions to answer, where it writes credentials and which JSON keys prove
//! a login. The three built-ins are here; `/etc/guest-agent/oauth.toml` overrides any
//! field of them and adds new ones, so a CLI that changes its flags is a config edit.
//!
//! The old Node agent had the commands and credential paths of two of three providers
//! wrong; each built-in below says where its values come from in the CLI's behaviour.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A prompt the CLI may print, and what to type when it does.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptAnswer {
    /// Text searched for on the CLI's rendered screen (whitespace runs count as one space).
    pub prompt: String,
    /// Written to the PTY when the prompt appears (`"Y\r"`).
    pub answer: String,
}

/// One provider, complete (built-in merged with the config's override).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    pub name: String,
    /// Program and arguments.
    pub command: Vec<String>,
    /// Set in the CLI's environment (after HOME, DISPLAY, BROWSER and PATH).
    pub env: BTreeMap<String, String>,
    /// Removed from the CLI's environment (`CI` makes gemini refuse to open a browser).
    pub env_remove: Vec<String>,
    /// Fallback: regexes for the login URL in the CLI's output.
    pub url_patterns: Vec<String>,
    pub prompts: Vec<PromptAnswer>,
    /// Screen texts that mean the login cannot go on (claude offline: "Unable to connect to
    /// Anthropic services"): the session fails at once with that line as its reason,
    /// instead of sitting until its deadline.
    pub fail_on: Vec<String>,
    /// Port the CLI listens on for the OAuth redirect, when fixed; otherwise the
    /// `redirect_uri` in the URL says where it listens.
    pub callback_ports: Vec<u16>,
    /// Candidate credential files; `~`, `$VAR` and `${VAR:-default}` are expanded with
    /// the session's environment. The first that expands without an unset variable wins.
    pub credential_paths: Vec<String>,
    /// Top-level (or dotted `a.b`) JSON keys that must be present and not null.
    pub required_keys: Vec<String>,
    /// The CLI prints a URL and expects the code from the page pasted back.
    pub paste_code: bool,
    /// A command that exits 0 when the CLI is logged in (`codex login status`).
    pub status_command: Option<Vec<String>>,
}

/// How a config file may change a provider: every field optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderOverride {
    pub command: Option<Vec<String>>,
    pub env: Option<BTreeMap<String, String>>,
    pub env_remove: Option<Vec<String>>,
    pub url_patterns: Option<Vec<String>>,
    pub prompts: Option<Vec<PromptAnswer>>,
    pub fail_on: Option<Vec<String>>,
    pub callback_ports: Option<Vec<u16>>,
    pub credential_paths: Option<Vec<String>>,
    pub required_keys: Option<Vec<String>>,
    pub paste_code: Option<bool>,
    pub status_command: Option<Vec<String>>,
    /// Seconds a session of this provider may live.
    pub deadline_secs: Option<u64>,
}

/// A provider definition that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("provider `{0}`: name must be 1-64 of [a-z0-9_-]")]
    BadName(String),
    #[error("provider `{name}`: {field} is missing or empty (a new provider needs command, credential_paths and required_keys)")]
    Missing { name: String, field: &'static str },
    #[error("provider `{name}`: url_patterns[{index}] is not a valid regex: {error}")]
    BadPattern {
        name: String,
        index: usize,
        error: String,
    },
    #[error("provider `{name}`: prompts[{index}].prompt is empty")]
    EmptyPrompt { name: String, index: usize },
}

fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

/// The built-in providers.
pub fn builtins() -> Vec<Provider> {
    vec![
        Provider {
            // Claude Code: the interactive CLI asks for a theme and a login method on first
            // run, prints the claude.ai authorize URL and also tries to open a browser; the
            // page shows a code to paste back. Credentials go to $CLAUDE_CONFIG_DIR (default
            // ~/.claude)/.credentials.json under `claudeAiOauth`.
            name: "claude_code".into(),
            command: s(&["claude"]),
            env: BTreeMap::new(),
            env_remove: Vec::new(),
            url_patterns: s(&[
                r"https://(?:claude\.ai|claude\.com/cai)/oauth/authorize\?[^\s\x07]+",
            ]),
            prompts: vec![
                PromptAnswer {
                    prompt: "Choose the text style".into(),
                    answer: "\r".into(),
                },
                PromptAnswer {
                    prompt: "Select login method".into(),
                    answer: "\r".into(),
                },
            ],
            fail_on: s(&["Unable to connect to Anthropic services"]),
            callback_ports: Vec::new(),
            credential_paths: s(&["${CLAUDE_CONFIG_DIR:-~/.claude}/.credentials.json"]),
            required_keys: s(&["claudeAiOauth"]),
            paste_code: true,
            status_command: None,
        },
        Provider {
            // Codex: `codex login` serves the redirect on localhost:1455 (1457 when taken)
            // and writes $CODEX_HOME (default ~/.codex)/auth.json with `tokens`.
            name: "codex".into(),
            command: s(&["codex", "login"]),
            env: BTreeMap::new(),
            env_remove: Vec::new(),
            url_patterns: s(&[r"https://auth\.openai\.com/oauth/authorize\?[^\s\x07]+"]),
            prompts: Vec::new(),
            fail_on: Vec::new(),
            callback_ports: vec![1455, 1457],
            credential_paths: s(&["${CODEX_HOME:-~/.codex}/auth.json"]),
            required_keys: s(&["tokens"]),
            paste_code: false,
            status_command: Some(s(&["codex", "login", "status"])),
        },
        Provider {
            // Gemini CLI: Google login only with GOOGLE_GENAI_USE_GCA=true; listens on a random
            // localhost port (OAUTH_CALLBACK_PORT pins it) named in the URL's redirect_uri;
            // refuses to open a browser when CI is set or DISPLAY is not. Asks (0.61, first
            // run) whether the folder is trusted (then restarts itself), how to authenticate
            // (without GOOGLE_GENAI_USE_GCA) and whether to open the browser; older releases
            // "Do you want to continue? [Y/n]". Prints the URL wrapped over several rows with
            // an indent. Writes ~/.gemini/oauth_creds.json.
            name: "gemini_cli".into(),
            command: s(&["gemini"]),
            env: BTreeMap::from([("GOOGLE_GENAI_USE_GCA".to_string(), "true".to_string())]),
            // Either of CI / DEBIAN_FRONTEND=noninteractive makes it skip the browser and
            // ask for a pasted code (codeassist.google.com/authcode) instead.
            env_remove: s(&["CI", "DEBIAN_FRONTEND"]),
            url_patterns: s(&[r"https://accounts\.google\.com/o/oauth2/v2/auth\?[^\s\x07]+"]),
            prompts: vec![
                PromptAnswer {
                    prompt: "Do you want to continue? [Y/n]".into(),
                    answer: "Y\r".into(),
                },
                // First run in a folder: "1. Trust folder" is the highlighted choice.
                PromptAnswer {
                    prompt: "Do you trust the files in this folder?".into(),
                    answer: "\r".into(),
                },
                // No saved auth type: "1. Sign in with Google" is the highlighted choice.
                PromptAnswer {
                    prompt: "How would you like to authenticate for this project?".into(),
                    answer: "\r".into(),
                },
                // Before it opens the browser (0.61): "1. Yes" is the highlighted choice.
                PromptAnswer {
                    prompt: "Opening authentication page in your browser. Do you want to continue?"
                        .into(),
                    answer: "\r".into(),
                },
            ],
            fail_on: Vec::new(),
            callback_ports: Vec::new(),
            credential_paths: s(&["~/.gemini/oauth_creds.json"]),
            required_keys: s(&["refresh_token"]),
            paste_code: false,
            status_command: None,
        },
    ]
}

/// Applies `o` to `base` (or builds a new provider from `o` alone) and checks the result.
pub fn merge(
    name: &str,
    base: Option<Provider>,
    o: &ProviderOverride,
) -> Result<Provider, ProviderError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
    {
        return Err(ProviderError::BadName(name.to_string()));
    }
    let mut p = base.unwrap_or_else(|| Provider {
        name: name.to_string(),
        command: Vec::new(),
        env: BTreeMap::new(),
        env_remove: Vec::new(),
        url_patterns: Vec::new(),
        prompts: Vec::new(),
        fail_on: Vec::new(),
        callback_ports: Vec::new(),
        credential_paths: Vec::new(),
        required_keys: Vec::new(),
        paste_code: false,
        status_command: None,
    });
    macro_rules! take {
        ($f:ident) => {
            if let Some(v) = &o.$f {
                p.$f = v.clone();
            }
        };
    }
    take!(command);
    take!(env);
    take!(env_remove);
    take!(url_patterns);
    take!(prompts);
    take!(fail_on);
    take!(callback_ports);
    take!(credential_paths);
    take!(required_keys);
    take!(paste_code);
    if let Some(c) = &o.status_command {
        p.status_command = (!c.is_empty()).then(|| c.clone());
    }
    validate(&p)?;
    Ok(p)
}

/// A provider that cannot run or cannot prove a login is an error, with the field named.
pub fn validate(p: &Provider) -> Result<(), ProviderError> {
    let missing = |field| ProviderError::Missing {
        name: p.name.clone(),
        field,
    };
    if p.command.first().is_none_or(|c| c.is_empty()) {
        return Err(missing("command"));
    }
    if p.credential_paths.is_empty() {
        return Err(missing("credential_paths"));
    }
    if p.required_keys.is_empty() {
        return Err(missing("required_keys"));
    }
    for (index, pat) in p.url_patterns.iter().enumerate() {
        if let Err(e) = regex::Regex::new(pat) {
            return Err(ProviderError::BadPattern {
                name: p.name.clone(),
                index,
                error: e.to_string(),
            });
        }
    }
    for (index, pa) in p.prompts.iter().enumerate() {
        if pa.prompt.is_empty() {
            return Err(ProviderError::EmptyPrompt {
                name: p.name.clone(),
                index,
            });
        }
    }
    Ok(())
}

/// Expands `~` (at the start), `$VAR` and `${VAR:-default}` with `env` (`HOME` for `~`).
/// `None` when a variable without a default is unset: that candidate path does not apply.
pub fn expand(template: &str, env: &BTreeMap<String, String>) -> Option<PathBuf> {
    let home = || env.get("HOME").cloned();
    let mut out = String::new();
    let mut rest = template;
    if let Some(r) = rest.strip_prefix('~') {
        if r.is_empty() || r.starts_with('/') {
            out.push_str(&home()?);
            rest = r;
        }
    }
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(inner) = after.strip_prefix('{') {
            let end = inner.find('}')?;
            let body = &inner[..end];
            let (var, default) = match body.split_once(":-") {
                Some((v, d)) => (v, Some(d)),
                None => (body, None),
            };
            match env.get(var).filter(|v| !v.is_empty()) {
                Some(v) => out.push_str(v),
                None => {
                    let d = default?;
                    out.push_str(&expand(d, env)?.display().to_string());
                }
            }
            rest = &inner[end + 1..];
        } else {
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if len == 0 {
                out.push('$');
            } else {
                out.push_str(env.get(&after[..len])?);
            }
            rest = &after[len..];
        }
    }
    out.push_str(rest);
    Some(PathBuf::from(out))
}

/// The credential file of `p` for a session with environment `env`.
pub fn credential_path(p: &Provider, env: &BTreeMap<String, String>) -> Option<PathBuf> {
    p.credential_paths.iter().find_map(|t| expand(t, env))
}

/// `true` when `path` is absolute (credential paths must be, after expansion).
pub fn is_usable(path: &Path) -> bool {
    path.is_absolute()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn builtins_are_valid_and_have_the_documented_paths() {
        let e = env(&[("HOME", "/home/u")]);
        let by = |n: &str| builtins().into_iter().find(|p| p.name == n).unwrap();
        for p in builtins() {
            validate(&p).unwrap();
        }
        assert_eq!(
            credential_path(&by("claude_code"), &e).unwrap(),
            PathBuf::from("/home/u/.claude/.credentials.json")
        );
        assert_eq!(
            credential_path(&by("codex"), &e).unwrap(),
            PathBuf::from("/home/u/.codex/auth.json")
        );
        assert_eq!(
            credential_path(&by("gemini_cli"), &e).unwrap(),
            PathBuf::from("/home/u/.gemini/oauth_creds.json")
        );
        let e2 = env(&[("HOME", "/home/u"), ("CLAUDE_CONFIG_DIR", "/cfg/claude")]);
        assert_eq!(
            credential_path(&by("claude_code"), &e2).unwrap(),
            PathBuf::from("/cfg/claude/.credentials.json")
        );
        let e3 = env(&[("HOME", "/home/u"), ("CODEX_HOME", "/x")]);
        assert_eq!(
            credential_path(&by("codex"), &e3).unwrap(),
            PathBuf::from("/x/auth.json")
        );
        assert_eq!(by("codex").command, vec!["codex", "login"]);
        assert_eq!(by("codex").callback_ports, vec![1455, 1457]);
        assert_eq!(by("gemini_cli").env_remove, vec!["CI", "DEBIAN_FRONTEND"]);
    }

    #[test]
    fn url_patterns_match_real_shaped_urls_only() {
        let check = |n: &str, url: &str| {
            let p = builtins().into_iter().find(|p| p.name == n).unwrap();
            p.url_patterns
                .iter()
                .any(|r| regex::Regex::new(r).unwrap().find(url).map(|m| m.as_str()) == Some(url))
        };
        assert!(check(
            "claude_code",
            "https://claude.ai/oauth/authorize?code=true&client_id=x"
        ));
        assert!(check(
            "claude_code",
            "https://claude.com/cai/oauth/authorize?code=true&client_id=x"
        ));
        assert!(!check("claude_code", "https://evil.ai/oauth/authorize?x=1"));
        assert!(check(
            "codex",
            "https://auth.openai.com/oauth/authorize?response_type=code"
        ));
        assert!(check(
            "gemini_cli",
            "https://accounts.google.com/o/oauth2/v2/auth?redirect_uri=http%3A%2F%2Flocalhost%3A4242"
        ));
    }

    #[test]
    fn expansion() {
        let e = env(&[("HOME", "/h"), ("A", "/a"), ("EMPTY", "")]);
        assert_eq!(expand("~/x", &e).unwrap(), PathBuf::from("/h/x"));
        assert_eq!(expand("$A/x", &e).unwrap(), PathBuf::from("/a/x"));
        assert_eq!(expand("${A}/x", &e).unwrap(), PathBuf::from("/a/x"));
        assert_eq!(expand("${B:-~/d}/x", &e).unwrap(), PathBuf::from("/h/d/x"));
        assert_eq!(expand("${EMPTY:-/d}", &e).unwrap(), PathBuf::from("/d"));
        assert_eq!(expand("$B/x", &e), None);
        assert_eq!(expand("${B}/x", &e), None);
        assert_eq!(expand("${A", &e), None);
        assert_eq!(expand("/p/$", &e).unwrap(), PathBuf::from("/p/$"));
    }

    #[test]
    fn overrides_replace_fields_and_new_providers_need_the_essentials() {
        let base = builtins().into_iter().find(|p| p.name == "codex");
        let o = ProviderOverride {
            command: Some(vec!["/opt/codex".into(), "login".into()]),
            ..Default::default()
        };
        let p = merge("codex", base, &o).unwrap();
        assert_eq!(p.command[0], "/opt/codex");
        assert_eq!(p.required_keys, vec!["tokens"]);
        let e = merge("new", None, &o).unwrap_err();
        assert_eq!(
            e,
            ProviderError::Missing {
                name: "new".into(),
                field: "credential_paths"
            }
        );
        let bad = ProviderOverride {
            url_patterns: Some(vec!["(".into()]),
            ..Default::default()
        };
        let base = builtins().into_iter().find(|p| p.name == "codex");
        assert!(matches!(
            merge("codex", base, &bad),
            Err(ProviderError::BadPattern { index: 0, .. })
        ));
        assert!(matches!(
            merge("Bad Name", None, &o),
            Err(ProviderError::BadName(_))
        ));
    }
}
