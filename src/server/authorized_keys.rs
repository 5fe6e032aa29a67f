//! Reads OpenSSH `authorized_keys` text into keys with their options, refusing any line warrend cannot honour exactly.
//!
//! `ssh_key::AuthorizedKeys` is not used for lexing: it strips everything
//! after a `#` even inside a quoted option, splits options at the first space
//! even inside quotes (`command="a b"`), and knows nothing of `\"`. This lexer
//! follows sshd's `sshkey_advance_past_options()` and `opt_dequote()`
//! instead, so a line means the same here as under sshd; the semantics of each
//! option live in [`super::key_options`].

use std::fmt;
use std::net::IpAddr;
use std::time::SystemTime;

use warren_ssh::ssh_key::{Algorithm, PublicKey};

pub use super::key_options::KeyOptions;
use super::key_options::{SourceList, parse_expiry, parse_permit_listen, parse_permit_open};

/// One usable key line.
#[derive(Debug, Clone)]
pub struct KeyEntry {
    /// The key; its comment is kept for log messages only.
    pub key: PublicKey,
    /// Restrictions from the line's options.
    pub options: KeyOptions,
    /// 1-based line number in `source`.
    pub line: usize,
    /// File path, or the config field for inline keys.
    pub source: String,
}

/// A line that was refused; the loader logs it and skips the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyLineError {
    /// File path, or the config field for inline keys.
    pub source: String,
    /// 1-based line number.
    pub line: usize,
    /// Why, naming the option when one is at fault.
    pub reason: String,
}

impl fmt::Display for KeyLineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.source, self.line, self.reason)
    }
}

impl std::error::Error for KeyLineError {}

/// Parses a whole `authorized_keys` text. Blank and comment lines yield
/// nothing; every other line yields a key or the reason it was refused.
pub fn parse_authorized_keys(text: &str, source: &str) -> Vec<Result<KeyEntry, KeyLineError>> {
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| parse_key_line(line, source, i + 1))
        .collect()
}

/// Parses one line; `None` for blank and comment lines.
pub fn parse_key_line(
    line: &str,
    source: &str,
    lineno: usize,
) -> Option<Result<KeyEntry, KeyLineError>> {
    let line = line.trim_start_matches([' ', '\t']);
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let origin = format!("{source}:{lineno}");
    let err = |reason: String| KeyLineError {
        source: source.to_owned(),
        line: lineno,
        reason,
    };
    Some(
        parse_line_inner(line, &origin)
            .map_err(err)
            .map(|(key, options)| KeyEntry {
                key,
                options,
                line: lineno,
                source: source.to_owned(),
            }),
    )
}

fn parse_line_inner(line: &str, origin: &str) -> Result<(PublicKey, KeyOptions), String> {
    // Like sshd, first try the line as a bare key; only if that fails is the
    // first field options.
    if let Ok(key) = parse_key(line) {
        return Ok((key, KeyOptions::unrestricted(origin)));
    }
    let first = line.split([' ', '\t']).next().unwrap_or(line);
    if is_key_type(first) {
        return parse_key(line).map(|k| (k, KeyOptions::unrestricted(origin)));
    }
    let (opts, rest) = split_options(line)?;
    let options = parse_options(opts, origin)?;
    let key = parse_key(rest.trim_start_matches([' ', '\t']))?;
    Ok((key, options))
}

/// True for the algorithm names ssh-key knows (not `Other`), so a broken
/// key is reported as a broken key rather than an unknown option.
fn is_key_type(token: &str) -> bool {
    matches!(Algorithm::new(token), Ok(alg) if !matches!(alg, Algorithm::Other(_)))
}

/// Parses `type base64 [comment]`, where fields may be separated by any
/// run of spaces and tabs and the comment may contain anything.
fn parse_key(s: &str) -> Result<PublicKey, String> {
    let mut fields = s.split([' ', '\t']).filter(|f| !f.is_empty());
    let (Some(kind), Some(blob)) = (fields.next(), fields.next()) else {
        return Err("no key found".into());
    };
    let mut key = PublicKey::from_openssh(&format!("{kind} {blob}"))
        .map_err(|e| format!("invalid {kind} key: {e}"))?;
    let comment = fields.collect::<Vec<_>>().join(" ");
    key.set_comment(comment);
    Ok(key)
}

/// Splits the options field off the line: it ends at the first space or tab
/// outside double quotes, where `\"` does not close a quote.
fn split_options(line: &str) -> Result<(&str, &str), String> {
    let bytes = line.as_bytes();
    let mut quoted = false;
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        match b {
            // sshd skips `\"` as a pair and treats any other `\` literally.
            b'\\' if bytes.get(i + 1) == Some(&b'"') => i += 1,
            b'"' => quoted = !quoted,
            b' ' | b'\t' if !quoted => {
                let (opts, rest) = line.split_at_checked(i).ok_or("bad option text")?;
                return Ok((opts, rest));
            }
            _ => {}
        }
        i += 1;
    }
    if quoted {
        Err("unterminated quote in options".into())
    } else {
        Err("no key found after options".into())
    }
}

/// Applies the options field left to right, as sshd's `sshauthopt_parse()`.
fn parse_options(mut s: &str, origin: &str) -> Result<KeyOptions, String> {
    let mut opts = KeyOptions::unrestricted(origin);
    let mut seen_from = false;
    loop {
        let name_end = s.find([',', '=']).unwrap_or(s.len());
        let (name, rest) = s.split_at(name_end);
        let name = name.to_ascii_lowercase();
        let (value, rest) = match rest.strip_prefix('=') {
            Some(v) => {
                let (value, rest) = dequote(v).map_err(|e| format!("option {name}: {e}"))?;
                (Some(value), rest)
            }
            None => (None, rest),
        };
        apply_option(&mut opts, &name, value.as_deref(), &mut seen_from)?;
        match rest.strip_prefix(',') {
            None if rest.is_empty() => return Ok(opts),
            None => return Err(format!("bad option syntax after '{name}'")),
            Some("") => return Err("unexpected end of options after ','".into()),
            Some(next) => s = next,
        }
    }
}

/// Reads a double-quoted value where `\"` stands for `"`; returns the value
/// and the text after the closing quote.
fn dequote(s: &str) -> Result<(String, &str), String> {
    let body = s.strip_prefix('"').ok_or("missing start quote")?;
    let mut out = String::new();
    let mut chars = body.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        match c {
            '\\' if chars.peek().is_some_and(|&(_, n)| n == '"') => {
                out.push('"');
                chars.next();
            }
            '"' => return Ok((out, body.get(i + 1..).unwrap_or_default())),
            c => out.push(c),
        }
    }
    Err("missing end quote".into())
}

fn apply_option(
    opts: &mut KeyOptions,
    name: &str,
    value: Option<&str>,
    seen_from: &mut bool,
) -> Result<(), String> {
    const IGNORED_FLAGS: &[&str] = &[
        "pty",
        "no-pty",
        "agent-forwarding",
        "no-agent-forwarding",
        "x11-forwarding",
        "no-x11-forwarding",
        "user-rc",
        "no-user-rc",
        "touch-required",
    ];
    match (name, value) {
        ("restrict", None) => opts.port_forwarding = false,
        ("port-forwarding", None) => opts.port_forwarding = true,
        ("no-port-forwarding", None) => opts.port_forwarding = false,
        ("no-touch-required", None) => opts.no_touch_required = true,
        (flag, None) if IGNORED_FLAGS.contains(&flag) => {}
        ("environment" | "tunnel", Some(_)) => {}
        ("from", Some(v)) => {
            if std::mem::replace(seen_from, true) {
                return Err("multiple from= options".into());
            }
            opts.from = Some(SourceList::from_option(v)?);
        }
        ("expiry-time", Some(v)) => {
            let t = parse_expiry(v)?;
            opts.expiry = Some(opts.expiry.map_or(t, |old| old.min(t)));
        }
        ("permitopen", Some(v)) => opts.permit_open.push(parse_permit_open(v)?),
        ("permitlisten", Some(v)) => opts.permit_listen.push(parse_permit_listen(v)?),
        ("command", Some(_)) => {
            return Err("command= is refused: warrend runs no commands, so the key's restriction cannot be honoured".into());
        }
        ("cert-authority" | "principals", _) => {
            return Err(format!(
                "{name} is not supported in authorized_keys; configure [user_ca] in warrend.toml"
            ));
        }
        ("verify-required", None) => {
            return Err(
                "verify-required is refused: warrend cannot enforce FIDO user verification".into(),
            );
        }
        (_, Some(_)) => return Err(format!("unknown option '{name}=...'")),
        (_, None) => return Err(format!("unknown option '{name}'")),
    }
    Ok(())
}

/// Picks the entry that authorizes `key` for a login from `client` at
/// `now`: the first line with that key whose `from=` and `expiry-time` pass,
/// like sshd, which keeps scanning after a line whose options fail.
///
/// On failure, returns the reasons of the lines that had the key (empty if
/// no line had it), for the log.
pub fn find_key<'a>(
    entries: &'a [KeyEntry],
    key: &PublicKey,
    client: IpAddr,
    now: SystemTime,
) -> Result<&'a KeyEntry, Vec<String>> {
    let mut reasons = Vec::new();
    for entry in entries
        .iter()
        .filter(|e| e.key.key_data() == key.key_data())
    {
        match entry.options.check_login(client, now) {
            Ok(()) => return Ok(entry),
            Err(reason) => reasons.push(reason),
        }
    }
    Err(reasons)
}

#[cfg(test)]
#[path = "authorized_keys_tests.rs"]
mod tests;
