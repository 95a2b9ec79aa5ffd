//! Environment files parsed like systemd's `EnvironmentFile=` (failure F6: the old
//! supervisor died on a comment in `/etc/environment`).
//!
//! Grammar (systemd `load_env_file`): `#`/`;` at line start are comments; blank lines are
//! skipped; `KEY=VALUE` with whitespace around the key and before the value ignored; an
//! optional `export ` prefix; unquoted values have trailing whitespace removed and `\x`
//! → `x`, a trailing `\` continues the line; `'...'` is literal (may span lines);
//! `"..."` honours `\"`, `\\`, `\$`, `` \` `` and backslash-newline, other backslashes stay.
//! Quoted and unquoted pieces concatenate (`A="x"y` → `xy`). A bad line is reported with
//! its number and skipped; parsing never fails as a whole.

/// One skipped line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line where the bad assignment starts.
    pub line: usize,
    pub message: String,
}

impl std::fmt::Display for LineError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

/// The result of parsing one file: assignments in order (later ones win) and skipped lines.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EnvFile {
    pub vars: Vec<(String, String)>,
    pub errors: Vec<LineError>,
}

/// Parses env-file text. Never fails: bad lines land in `errors`.
pub fn parse(text: &str) -> EnvFile {
    let chars: Vec<char> = text.chars().collect();
    let mut p = Parser {
        c: &chars,
        i: 0,
        line: 1,
    };
    let mut out = EnvFile::default();
    loop {
        p.skip_blanks();
        let Some(c) = p.peek() else { break };
        let start_line = p.line;
        match c {
            '\n' => p.newline(),
            '#' | ';' => p.skip_line(),
            _ => match p.assignment() {
                Ok(Some(kv)) => out.vars.push(kv),
                Ok(None) => {}
                Err(message) => {
                    out.errors.push(LineError {
                        line: start_line,
                        message,
                    });
                    p.skip_line();
                }
            },
        }
    }
    out
}

struct Parser<'a> {
    c: &'a [char],
    i: usize,
    line: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.c.get(self.i).copied()
    }
    fn newline(&mut self) {
        self.i += 1;
        self.line += 1;
    }
    fn skip_blanks(&mut self) {
        while matches!(self.peek(), Some(c) if c != '\n' && c.is_whitespace()) {
            self.i += 1;
        }
    }
    /// Skips to the end of the line (the newline itself is left for the main loop).
    fn skip_line(&mut self) {
        while matches!(self.peek(), Some(c) if c != '\n') {
            self.i += 1;
        }
    }

    fn assignment(&mut self) -> Result<Option<(String, String)>, String> {
        let start = self.i;
        while matches!(self.peek(), Some(c) if c != '=' && c != '\n') {
            self.i += 1;
        }
        let raw_key: String = self.c[start..self.i].iter().collect();
        if self.peek() != Some('=') {
            return Err(format!(
                "expected KEY=VALUE, found `{}`",
                shorten(raw_key.trim())
            ));
        }
        self.i += 1;
        let mut key = raw_key.trim();
        if let Some(rest) = key.strip_prefix("export") {
            if rest.starts_with(char::is_whitespace) {
                key = rest.trim_start();
            }
        }
        let key = key.to_string();
        let value = self.value()?;
        if !valid_key(&key) {
            return Err(format!(
                "`{}` is not a variable name (letters, digits and `_`, not starting with a digit)",
                shorten(&key)
            ));
        }
        Ok(Some((key, value)))
    }

    fn value(&mut self) -> Result<String, String> {
        self.skip_blanks();
        let mut v = String::new();
        // Length of `v` up to the last character that trailing-whitespace trimming keeps.
        let mut keep = 0;
        while let Some(c) = self.peek() {
            match c {
                '\n' => break,
                '\\' => {
                    self.i += 1;
                    match self.peek() {
                        Some('\n') => self.newline(),
                        Some(n) => {
                            v.push(n);
                            self.i += 1;
                            keep = v.len();
                        }
                        None => {}
                    }
                }
                '\'' => {
                    let opened = self.line;
                    self.i += 1;
                    loop {
                        match self.peek() {
                            None => {
                                return Err(format!(
                                    "single quote opened on line {opened} is never closed"
                                ))
                            }
                            Some('\'') => {
                                self.i += 1;
                                break;
                            }
                            Some(ch) => {
                                if ch == '\n' {
                                    self.line += 1;
                                }
                                v.push(ch);
                                self.i += 1;
                            }
                        }
                    }
                    keep = v.len();
                }
                '"' => {
                    let opened = self.line;
                    self.i += 1;
                    loop {
                        match self.peek() {
                            None => {
                                return Err(format!(
                                    "double quote opened on line {opened} is never closed"
                                ))
                            }
                            Some('"') => {
                                self.i += 1;
                                break;
                            }
                            Some('\\') => {
                                self.i += 1;
                                match self.peek() {
                                    Some('\n') => self.newline(),
                                    Some(n @ ('"' | '\\' | '$' | '`')) => {
                                        v.push(n);
                                        self.i += 1;
                                    }
                                    Some(n) => {
                                        v.push('\\');
                                        v.push(n);
                                        if n == '\n' {
                                            self.line += 1;
                                        }
                                        self.i += 1;
                                    }
                                    None => {
                                        return Err(format!(
                                            "double quote opened on line {opened} is never closed"
                                        ))
                                    }
                                }
                            }
                            Some(ch) => {
                                if ch == '\n' {
                                    self.line += 1;
                                }
                                v.push(ch);
                                self.i += 1;
                            }
                        }
                    }
                    keep = v.len();
                }
                c => {
                    v.push(c);
                    self.i += 1;
                    if !c.is_whitespace() {
                        keep = v.len();
                    }
                }
            }
        }
        v.truncate(keep);
        if v.contains('\0') {
            return Err("value contains a NUL byte".into());
        }
        Ok(v)
    }
}

fn valid_key(k: &str) -> bool {
    let mut cs = k.chars();
    matches!(cs.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && cs.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 40 {
        format!("{}…", s.chars().take(40).collect::<String>())
    } else {
        s.to_string()
    }
}

/// Quotes a value so that [`parse`] gives it back unchanged (used by tests and dev tools).
pub fn quote(value: &str) -> String {
    let mut s = String::with_capacity(value.len() + 2);
    s.push('"');
    for c in value.chars() {
        if matches!(c, '"' | '\\' | '$' | '`') {
            s.push('\\');
        }
        s.push(c);
    }
    s.push('"');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn vars(e: &EnvFile) -> Vec<(&str, &str)> {
        e.vars
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    #[test]
    fn etc_environment_with_comments() {
        let text = "# Ubuntu's /etc/environment\n\
                    PATH=\"/usr/local/sbin:/usr/bin\"\n\
                    ; another comment\n\
                    \n   # indented comment\n\
                    LANG=en_US.UTF-8   \n";
        let e = parse(text);
        assert_eq!(
            vars(&e),
            [
                ("PATH", "/usr/local/sbin:/usr/bin"),
                ("LANG", "en_US.UTF-8")
            ]
        );
        assert!(e.errors.is_empty());
    }

    #[test]
    fn quotes_escapes_export_and_continuations() {
        let text = "export A='single $HOME \\n'\n\
                    B=\"dq \\\"x\\\" \\$y \\n\"\n\
                    C = spaced value  \n\
                    D=one\\\ntwo\n\
                    E=\"multi\nline\"\n\
                    F=\"x\"y'z'\n\
                    G=\n\
                    H=a#notacomment\n";
        let e = parse(text);
        assert_eq!(
            vars(&e),
            [
                ("A", "single $HOME \\n"),
                ("B", "dq \"x\" $y \\n"),
                ("C", "spaced value"),
                ("D", "onetwo"),
                ("E", "multi\nline"),
                ("F", "xyz"),
                ("G", ""),
                ("H", "a#notacomment"),
            ]
        );
        assert!(e.errors.is_empty(), "{:?}", e.errors);
    }

    #[test]
    fn garbage_lines_are_reported_with_numbers_and_skipped() {
        let text = "GOOD=1\nthis is garbage\n9BAD=x\nALSO_GOOD=2\nQ=\"never closed\nMORE=3\n";
        let e = parse(text);
        assert_eq!(vars(&e), [("GOOD", "1"), ("ALSO_GOOD", "2")]);
        let lines: Vec<usize> = e.errors.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 3, 5], "{:?}", e.errors);
        assert!(e.errors[2].message.contains("never closed"));
    }

    #[test]
    fn line_numbers_count_continuations() {
        let e = parse("A=x\\\ny\nB='a\nb'\nbroken\n");
        assert_eq!(
            e.errors,
            [LineError {
                line: 5,
                message: "expected KEY=VALUE, found `broken`".into()
            }]
        );
    }

    proptest! {
        #[test]
        fn quoted_values_round_trip(key in "[A-Za-z_][A-Za-z0-9_]{0,12}", value in "[^\\x00]{0,40}") {
            let text = format!("# c\n{key}={}\n", quote(&value));
            let e = parse(&text);
            prop_assert!(e.errors.is_empty(), "{:?}", e.errors);
            prop_assert_eq!(vars(&e), [(key.as_str(), value.as_str())]);
        }

        #[test]
        fn never_panics_and_lines_are_in_range(text in "\\PC{0,200}") {
            let e = parse(&text);
            let n = text.split('\n').count();
            for err in &e.errors {
                prop_assert!(err.line >= 1 && err.line <= n);
            }
        }

        #[test]
        fn comments_and_blanks_do_not_change_the_result(
            pairs in proptest::collection::vec(("[A-Z_]{1,6}", "[a-z0-9 ]{0,10}"), 0..6)
        ) {
            let plain: String = pairs.iter().map(|(k, v)| format!("{k}={}\n", quote(v))).collect();
            let noisy: String = pairs.iter().map(|(k, v)| format!("# note\n\n  ; x\n{k}={}\n", quote(v))).collect();
            prop_assert_eq!(parse(&plain), parse(&noisy));
        }
    }
}
