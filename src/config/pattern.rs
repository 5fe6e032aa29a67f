//! OpenSSH-compatible wildcard pattern matching (the rules of OpenSSH's `match.c`).
//!
//! `known_hosts` host fields and `ssh_config` `Host` lines must select exactly
//! the same hosts here as they do in OpenSSH, otherwise a user's existing files
//! would silently trust (or distrust) different hosts under Warren.

/// Outcome of matching against a comma-separated pattern list.
///
/// Three states rather than a `bool` because OpenSSH distinguishes "nothing
/// matched" from "explicitly excluded": callers that combine several lists
/// (e.g. `Match` criteria later) need to know a negation fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatternMatch {
    /// A positive entry matched and no negated entry did.
    Matched,
    /// A `!`-negated entry matched; this overrides any positive match.
    NegatedMatch,
    /// No entry matched at all.
    NoMatch,
}

impl PatternMatch {
    /// Only [`PatternMatch::Matched`] means "yes"; a negated match is a firm "no".
    pub fn is_match(self) -> bool {
        self == PatternMatch::Matched
    }
}

/// OpenSSH copies each list entry into a 1024-byte buffer and rejects the whole
/// list if an entry does not fit; we mirror that so an over-long entry can
/// never match here when it would not match in OpenSSH.
const MAX_ENTRY_LEN: usize = 1023;

/// Matches `s` against a single wildcard pattern, byte by byte and
/// case-sensitively, like OpenSSH's `match_pattern()`.
///
/// `*` matches any run of bytes (including none) and `?` exactly one byte.
/// There is no escaping and no character classes, exactly as in OpenSSH.
pub fn match_pattern(s: &str, pattern: &str) -> bool {
    glob(s.as_bytes(), pattern.as_bytes(), false)
}

/// Matches `s` against a comma-separated list of patterns, each optionally
/// prefixed with `!`, like OpenSSH's `match_pattern_list()`.
///
/// A negated entry that matches wins over everything else, so `!bad,*` admits
/// every host except `bad`. With `case_insensitive`, both sides are compared
/// ASCII-case-insensitively: OpenSSH lowercases the pattern and its callers
/// (`match_hostname`) lowercase the host, so folding both here gives the same
/// answer without relying on the caller.
pub fn match_pattern_list(s: &str, list: &str, case_insensitive: bool) -> PatternMatch {
    let s = s.as_bytes();
    let list = list.as_bytes();
    let mut entries: Vec<&[u8]> = list.split(|&b| b == b',').collect();
    // OpenSSH consumes a separator after each entry, so a trailing comma (or an
    // empty list) does not introduce an extra empty entry; a leading or doubled
    // comma does.
    if entries.last().is_some_and(|e| e.is_empty()) {
        entries.pop();
    }

    let mut got_positive = false;
    for entry in entries {
        let (negated, pattern) = match entry.strip_prefix(b"!") {
            Some(rest) => (true, rest),
            None => (false, entry),
        };
        if pattern.len() >= MAX_ENTRY_LEN {
            return PatternMatch::NoMatch;
        }
        if glob(s, pattern, case_insensitive) {
            if negated {
                return PatternMatch::NegatedMatch;
            }
            got_positive = true;
        }
    }
    if got_positive {
        PatternMatch::Matched
    } else {
        PatternMatch::NoMatch
    }
}

/// Decides whether an `ssh_config` `Host` line applies to `host`.
///
/// `Host` takes whitespace-separated patterns (commas are *not* separators
/// there, unlike `known_hosts`); each item may itself hold several
/// whitespace-separated patterns, so callers can pass either pre-split
/// arguments or the raw rest of the line. At least one positive pattern must
/// match and any matching `!` pattern vetoes the block, as in OpenSSH's
/// `readconf.c`. Host names are case-insensitive in DNS, so matching folds
/// ASCII case.
pub fn match_host_patterns<'a>(host: &str, patterns: impl IntoIterator<Item = &'a str>) -> bool {
    let mut matched = false;
    for token in patterns
        .into_iter()
        .flat_map(|item| item.split_ascii_whitespace())
    {
        let (negated, pattern) = match token.strip_prefix('!') {
            Some(rest) => (true, rest),
            None => (false, token),
        };
        if glob(host.as_bytes(), pattern.as_bytes(), true) {
            if negated {
                return false;
            }
            matched = true;
        }
    }
    matched
}

/// Wildcard matcher with the same results as OpenSSH's recursive
/// `match_pattern()`, but iterative with a single backtrack point, so hostile
/// patterns like `*a*a*a*a*b` (from a shared `known_hosts` file) cost
/// O(len(s) * len(p)) instead of exponential time and cannot blow the stack.
fn glob(s: &[u8], p: &[u8], fold_case: bool) -> bool {
    let eq = |a: u8, b: u8| {
        if fold_case {
            a.eq_ignore_ascii_case(&b)
        } else {
            a == b
        }
    };
    let (mut si, mut pi) = (0usize, 0usize);
    // Position just after the most recent `*`, and the input position that
    // star is currently assumed to extend to.
    let mut backtrack: Option<(usize, usize)> = None;
    while si < s.len() {
        match p.get(pi) {
            Some(b'*') => {
                pi += 1;
                backtrack = Some((pi, si));
            }
            Some(&c) if c == b'?' || eq(c, s[si]) => {
                pi += 1;
                si += 1;
            }
            _ => match backtrack {
                Some((star_p, star_s)) => {
                    pi = star_p;
                    si = star_s + 1;
                    backtrack = Some((star_p, si));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Literal port of OpenSSH's recursive `match_pattern()`, used as the
    /// oracle for the iterative matcher.
    fn openssh_match_pattern(s: &[u8], p: &[u8]) -> bool {
        let (mut s, mut p) = (s, p);
        loop {
            let Some(&pc) = p.first() else {
                return s.is_empty();
            };
            if pc == b'*' {
                while p.first() == Some(&b'*') {
                    p = &p[1..];
                }
                let Some(&next) = p.first() else {
                    return true;
                };
                if next != b'?' && next != b'*' {
                    for i in 0..s.len() {
                        if s[i] == next && openssh_match_pattern(&s[i + 1..], &p[1..]) {
                            return true;
                        }
                    }
                    return false;
                }
                for i in 0..s.len() {
                    if openssh_match_pattern(&s[i..], p) {
                        return true;
                    }
                }
                return false;
            }
            let Some(&sc) = s.first() else {
                return false;
            };
            if pc != b'?' && pc != sc {
                return false;
            }
            s = &s[1..];
            p = &p[1..];
        }
    }

    fn all_words(alphabet: &[u8], max_len: usize) -> Vec<Vec<u8>> {
        let mut out = vec![Vec::new()];
        let mut frontier = vec![Vec::new()];
        for _ in 0..max_len {
            let mut next = Vec::new();
            for w in &frontier {
                for &c in alphabet {
                    let mut w2: Vec<u8> = w.clone();
                    w2.push(c);
                    next.push(w2);
                }
            }
            out.extend(next.iter().cloned());
            frontier = next;
        }
        out
    }

    #[test]
    fn iterative_matcher_agrees_with_openssh_exhaustively() {
        let strings = all_words(b"ab", 6);
        let patterns = all_words(b"ab*?", 5);
        for p in &patterns {
            for s in &strings {
                assert_eq!(
                    glob(s, p, false),
                    openssh_match_pattern(s, p),
                    "s={:?} p={:?}",
                    String::from_utf8_lossy(s),
                    String::from_utf8_lossy(p)
                );
            }
        }
    }

    #[test]
    fn single_pattern_table() {
        let cases: &[(&str, &str, bool)] = &[
            ("", "", true),
            ("", "*", true),
            ("", "?", false),
            ("a", "", false),
            ("host", "host", true),
            ("host", "Host", false),
            ("host", "h*", true),
            ("host", "*t", true),
            ("host", "h**t", true),
            ("host", "h?st", true),
            ("host", "h?t", false),
            ("host", "????", true),
            ("host", "?????", false),
            ("a.example.com", "*.example.com", true),
            ("example.com", "*.example.com", false),
            ("a.b.example.com", "*.example.com", true),
            ("[127.0.0.1]:2222", "[127.0.0.1]:2222", true),
            ("[127.0.0.1]:2222", "[127.0.0.1]:*", true),
            ("[127.0.0.1]:2222", "127.0.0.1", false),
            ("10.1.2.3", "10.1.*", true),
            ("aaa", "*a*a*a", true),
            ("aa", "*a*a*a", false),
            // Byte-wise: `?` is one byte, so a two-byte UTF-8 char needs `??`.
            ("é", "?", false),
            ("é", "??", true),
        ];
        for &(s, p, want) in cases {
            assert_eq!(match_pattern(s, p), want, "match_pattern({s:?}, {p:?})");
        }
    }

    #[test]
    fn pathological_pattern_is_fast() {
        let s = "a".repeat(5000);
        let p = format!("{}b", "*a".repeat(40));
        let start = std::time::Instant::now();
        assert!(!match_pattern(&s, &p));
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
    }

    #[test]
    fn pattern_list_table() {
        use PatternMatch::*;
        let cases: &[(&str, &str, bool, PatternMatch)] = &[
            ("host", "host", false, Matched),
            ("host", "other,host", false, Matched),
            ("host", "other,nope", false, NoMatch),
            ("host", "", false, NoMatch),
            ("", "", false, NoMatch),
            // An explicit empty entry (leading or doubled comma) matches "".
            ("", ",", false, Matched),
            ("", "a,,b", false, Matched),
            ("", "a,", false, NoMatch),
            ("host", "host,", false, Matched),
            ("bad", "!bad,*", false, NegatedMatch),
            ("bad", "*,!bad", false, NegatedMatch),
            ("good", "!bad,*", false, Matched),
            ("x.example.com", "!bad,*.example.com", false, Matched),
            (
                "bad.example.com",
                "!bad.example.com,*.example.com",
                false,
                NegatedMatch,
            ),
            ("other.org", "!bad,*.example.com", false, NoMatch),
            // Negation alone never admits anything.
            ("good", "!bad", false, NoMatch),
            ("Host", "host", false, NoMatch),
            ("Host", "host", true, Matched),
            ("host", "HOST", true, Matched),
            ("HOST.Example.COM", "*.example.com", true, Matched),
            ("BAD", "!bad,*", true, NegatedMatch),
            // Only one leading `!` is a negation; the second is literal.
            ("!x", "!!x", false, NegatedMatch),
            ("[h]:22", "[h]:2?", false, Matched),
        ];
        for &(s, list, ci, want) in cases {
            assert_eq!(
                match_pattern_list(s, list, ci),
                want,
                "match_pattern_list({s:?}, {list:?}, {ci})"
            );
        }
        assert!(match_pattern_list("a", "a", false).is_match());
        assert!(!match_pattern_list("a", "!a,a", false).is_match());
    }

    #[test]
    fn overlong_entry_rejects_list_like_openssh() {
        let long = "a".repeat(MAX_ENTRY_LEN);
        assert_eq!(
            match_pattern_list(&long, &long, false),
            PatternMatch::NoMatch
        );
        let fits = "a".repeat(MAX_ENTRY_LEN - 1);
        assert_eq!(
            match_pattern_list(&fits, &fits, false),
            PatternMatch::Matched
        );
        // A negation seen before the over-long entry still wins.
        assert_eq!(
            match_pattern_list("x", &format!("!x,{long}"), false),
            PatternMatch::NegatedMatch
        );
    }

    #[test]
    fn host_line_table() {
        let cases: &[(&str, &[&str], bool)] = &[
            ("server", &["server"], true),
            ("server", &["*"], true),
            ("server", &[], false),
            ("SERVER", &["server"], true),
            ("server", &["SER*"], true),
            ("server", &["other", "serv?r"], true),
            ("server", &["other server"], true),
            ("server", &["  other\t server  "], true),
            ("server", &["*", "!server"], false),
            ("server", &["!server", "*"], false),
            ("other", &["!server", "*"], true),
            ("other", &["!server"], false),
            ("a.example.com", &["*.example.com !b.example.com"], true),
            ("b.example.com", &["*.example.com !b.example.com"], false),
            // Commas are literal on Host lines, unlike known_hosts.
            ("a", &["a,b"], false),
            ("a,b", &["a,b"], true),
        ];
        for &(host, pats, want) in cases {
            assert_eq!(
                match_host_patterns(host, pats.iter().copied()),
                want,
                "match_host_patterns({host:?}, {pats:?})"
            );
        }
    }
}
