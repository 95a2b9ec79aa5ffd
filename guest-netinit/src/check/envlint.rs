//! Which lines of an environment file systemd's `EnvironmentFile=` (and guest-agent's parser,
//! failure F6) would skip. A validator only, no values: guest-netinit cannot depend on
//! guest-agent, and a second full parser would drift from the agent's.
//!
//! Rules: blank lines and lines starting with `#` or `;` are comments; otherwise
//! `[export ]KEY=VALUE`, KEY of letters, digits and `_`, not starting with a digit; in VALUE,
//! `'...'` and `"..."` must be closed (they may span lines), `\` escapes the next character
//! (outside single quotes) and a trailing `\` continues the line.

/// One line the parser would skip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvLineError {
    /// 1-based line where the assignment starts.
    pub line: usize,
    pub message: String,
}

/// The lines of `text` that would not parse.
pub fn lint(text: &str) -> Vec<EnvLineError> {
    let lines: Vec<&str> = text.split('\n').collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let start = i;
        let line = lines[i].trim_start();
        i += 1;
        if line.trim().is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let Some((raw_key, value)) = line.split_once('=') else {
            out.push(err(
                start,
                format!("expected KEY=VALUE, found `{}`", short(line.trim())),
            ));
            continue;
        };
        let mut key = raw_key.trim();
        if let Some(rest) = key.strip_prefix("export") {
            if rest.starts_with(char::is_whitespace) {
                key = rest.trim_start();
            }
        }
        // Scan the value, pulling in continuation lines while a quote is open or a line ends in `\`.
        let mut quote: Option<(char, usize)> = None;
        let mut v: Vec<char> = value.chars().collect();
        // the 0-based line of each character of `v`
        let mut line_of: Vec<usize> = vec![start; v.len()];
        let mut j = 0;
        loop {
            if j >= v.len() {
                let continues = quote.is_some() || ends_escaped(&v, quote);
                if continues && i < lines.len() {
                    v.push('\n');
                    line_of.push(i - 1);
                    v.extend(lines[i].chars());
                    line_of.resize(v.len(), i);
                    i += 1;
                    // the `\` before the newline consumed it: keep scanning after it
                    continue;
                }
                break;
            }
            let c = v[j];
            match (quote, c) {
                (Some(('\'', _)), '\'') | (Some(('"', _)), '"') => quote = None,
                (Some(('\'', _)), _) => {}
                (_, '\\') => j += 1,
                (None, '\'' | '"') => quote = Some((c, line_of[j] + 1)),
                _ => {}
            }
            j += 1;
        }
        if let Some((q, opened)) = quote {
            let kind = if q == '"' { "double" } else { "single" };
            out.push(err(
                start,
                format!("{kind} quote opened on line {opened} is never closed"),
            ));
        } else if !valid_key(key) {
            out.push(err(
                start,
                format!(
                    "`{}` is not a variable name (letters, digits and `_`, not starting with a digit)",
                    short(key)
                ),
            ));
        }
    }
    out
}

/// The value so far ends in an unescaped `\` outside single quotes (a line continuation).
fn ends_escaped(v: &[char], quote: Option<(char, usize)>) -> bool {
    if matches!(quote, Some(('\'', _))) {
        return false;
    }
    let n = v.iter().rev().take_while(|c| **c == '\\').count();
    n % 2 == 1
}

fn valid_key(k: &str) -> bool {
    let mut chars = k.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn err(line0: usize, message: String) -> EnvLineError {
    EnvLineError {
        line: line0 + 1,
        message,
    }
}

fn short(s: &str) -> String {
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn good_files_have_no_errors() {
        let text = "# comment\n; other comment\n\nPATH=/usr/bin:/bin\nexport LANG=C.UTF-8\n\
                    A='x y'\nB=\"a \\\" b\"\nC='multi\nline'\nD=one\\\ntwo\n  E = spaced \nF=\n_G1=x";
        assert_eq!(lint(text), vec![]);
    }

    #[test]
    fn bad_lines_are_named_with_their_number() {
        let text =
            "OK=1\njust words\n1ABC=x\nexport=3\nA-B=c\nQ=\"open\nstill open\nexport  K=v\nS='x";
        let e = lint(text);
        let lines: Vec<usize> = e.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![2, 3, 5, 6], "{e:?}");
        assert!(e[0]
            .message
            .contains("expected KEY=VALUE, found `just words`"));
        assert!(e[1].message.contains("`1ABC` is not a variable name"));
        assert!(e[2].message.contains("`A-B`"));
        assert!(e[3]
            .message
            .contains("double quote opened on line 6 is never closed"));
        // `export=3` sets a variable called `export`; systemd accepts it.
        let e = lint("S='x\ny");
        assert_eq!(e.len(), 1);
        assert!(e[0].message.contains("single quote opened on line 1"));
        // a quote opened on a continuation line is named by that line
        let e = lint("A=x\\\ny'open\nz");
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].line, 1);
        assert!(e[0].message.contains("opened on line 2"), "{e:?}");
    }
}
