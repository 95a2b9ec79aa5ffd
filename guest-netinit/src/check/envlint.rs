//! Which lines of an environment file systemd's `EnvironmentFile=` (and guest-agent's
//! supervisor, failure F6) would skip: guest-proto's env-file parser, the one the agent uses,
//! so `check` and the running agent cannot disagree.

/// One line the parser would skip.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvLineError {
    /// 1-based line where the assignment starts.
    pub line: usize,
    pub message: String,
}

/// The lines of `text` that would not parse.
pub fn lint(text: &str) -> Vec<EnvLineError> {
    guest_proto::envfile::parse(text)
        .errors
        .into_iter()
        .map(|e| EnvLineError {
            line: e.line,
            message: e.message,
        })
        .collect()
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
