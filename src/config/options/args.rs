//! Parsing a keyword's value, with errors that name the keyword and say what was expected.

use super::*;

/// A keyword's value plus the context every error message needs.
pub(super) struct Args<'a> {
    pub(super) name: &'static str,
    pub(super) value: &'a str,
}

impl Args<'_> {
    pub(super) fn bad(&self, expected: impl Into<String>) -> OptionError {
        OptionError::BadValue {
            keyword: self.name.to_owned(),
            value: self.value.to_owned(),
            expected: expected.into(),
        }
    }

    pub(super) fn bad_forward(&self, err: &SpecError) -> OptionError {
        self.bad(forward_expected(err.kind, &err.reason))
    }

    pub(super) fn extra_arguments(&self, kind: ForwardKind) -> OptionError {
        self.bad(forward_expected(kind, "extra arguments at end of line"))
    }

    /// ssh's `argv_split()`: whitespace separates, single or double quotes
    /// group, `\` escapes quotes, backslashes and (unquoted) spaces, and an
    /// unquoted `#` starting an argument ends the line.
    pub(super) fn split(&self) -> Result<Vec<String>, OptionError> {
        let mut args = Vec::new();
        let mut chars = self.value.chars().peekable();
        loop {
            while chars.next_if(|&c| c == ' ' || c == '\t').is_some() {}
            if matches!(chars.peek(), None | Some('#')) {
                break;
            }
            let mut arg = String::new();
            let mut quote = None;
            while let Some(c) = chars.next() {
                match c {
                    '\\' => match chars.peek() {
                        Some(&next)
                            if matches!(next, '\'' | '"' | '\\')
                                || (quote.is_none() && next == ' ') =>
                        {
                            arg.push(next);
                            chars.next();
                        }
                        _ => arg.push('\\'),
                    },
                    ' ' | '\t' if quote.is_none() => break,
                    '"' | '\'' if quote.is_none() => quote = Some(c),
                    c if Some(c) == quote => quote = None,
                    c => arg.push(c),
                }
            }
            if let Some(q) = quote {
                return Err(self.bad(format!("a closing {q} quote")));
            }
            args.push(arg);
        }
        if args.is_empty() {
            return Err(OptionError::MissingValue(self.name.to_owned()));
        }
        Ok(args)
    }

    /// Most keywords take exactly one argument; ssh rejects trailing words
    /// rather than guessing which one was meant.
    pub(super) fn single(&self) -> Result<String, OptionError> {
        match <[String; 1]>::try_from(self.split()?) {
            Ok([arg]) if !arg.is_empty() => Ok(arg),
            Ok(_) => Err(OptionError::MissingValue(self.name.to_owned())),
            Err(_) => Err(self.bad("a single argument; quote values containing spaces")),
        }
    }
}

pub(super) fn set_once<T>(slot: &mut Option<T>, value: T) -> ApplyOutcome {
    if slot.is_some() {
        ApplyOutcome::Ignored
    } else {
        *slot = Some(value);
        ApplyOutcome::Applied
    }
}

pub(super) fn push_new<T>(
    list: &mut Vec<T>,
    item: T,
    same: impl Fn(&T, &T) -> bool,
) -> ApplyOutcome {
    if list.iter().any(|existing| same(existing, &item)) {
        ApplyOutcome::Ignored
    } else {
        list.push(item);
        ApplyOutcome::Applied
    }
}

/// ssh's flag values, case-insensitive.
pub(super) fn parse_flag(v: &Args<'_>) -> Result<bool, OptionError> {
    match v.single()?.to_ascii_lowercase().as_str() {
        "yes" | "true" => Ok(true),
        "no" | "false" => Ok(false),
        _ => Err(v.bad("yes or no")),
    }
}

pub(super) fn parse_port(v: &Args<'_>) -> Result<u16, OptionError> {
    let arg = v.single()?;
    let expected = "a port number 1..=65535";
    if !arg.bytes().all(|b| b.is_ascii_digit()) {
        return Err(v.bad(expected));
    }
    match arg.parse::<u16>() {
        Ok(port) if port != 0 => Ok(port),
        _ => Err(v.bad(expected)),
    }
}

/// ssh's `atoi_err()` range: 0..=INT_MAX.
pub(super) fn parse_int(v: &Args<'_>) -> Result<u32, OptionError> {
    let arg = v.single()?;
    let expected = "a whole number 0..=2147483647";
    if !arg.bytes().all(|b| b.is_ascii_digit()) {
        return Err(v.bad(expected));
    }
    match arg.parse::<u32>() {
        Ok(n) if i32::try_from(n).is_ok() => Ok(n),
        _ => Err(v.bad(expected)),
    }
}

pub(super) fn parse_log_level(v: &Args<'_>) -> Result<LogLevel, OptionError> {
    Ok(match v.single()?.to_ascii_uppercase().as_str() {
        "QUIET" => LogLevel::Quiet,
        "FATAL" => LogLevel::Fatal,
        "ERROR" => LogLevel::Error,
        "INFO" => LogLevel::Info,
        "VERBOSE" => LogLevel::Verbose,
        "DEBUG" | "DEBUG1" => LogLevel::Debug1,
        "DEBUG2" => LogLevel::Debug2,
        "DEBUG3" => LogLevel::Debug3,
        _ => {
            return Err(
                v.bad("QUIET, FATAL, ERROR, INFO, VERBOSE, DEBUG, DEBUG1, DEBUG2 or DEBUG3")
            );
        }
    })
}

/// `none` and `SSH_AUTH_SOCK` are matched case-sensitively, as ssh does.
pub(super) fn parse_identity_agent(v: &Args<'_>) -> Result<IdentityAgent, OptionError> {
    let arg = v.single()?;
    if arg == "none" {
        return Ok(IdentityAgent::Disabled);
    }
    if arg == "SSH_AUTH_SOCK" {
        return Ok(IdentityAgent::Env(arg));
    }
    if let Some(name) = arg.strip_prefix('$')
        && !name.starts_with('{')
    {
        if !is_env_name(name) {
            return Err(v.bad("a socket path, none, SSH_AUTH_SOCK or $VARIABLE"));
        }
        return Ok(IdentityAgent::Env(name.to_owned()));
    }
    Ok(IdentityAgent::Path(arg))
}

pub(super) fn is_env_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Known-hosts lists: several files at once, with `none` only on its own.
pub(super) fn parse_file_list(v: &Args<'_>) -> Result<Vec<String>, OptionError> {
    let args = v.split()?;
    if args.iter().any(String::is_empty) {
        return Err(v.bad("non-empty file names"));
    }
    if args.len() > 1 && args.iter().any(|a| a.eq_ignore_ascii_case("none")) {
        return Err(v.bad("file names, or none on its own"));
    }
    if args.len() > MAX_HOSTS_FILES {
        return Err(v.bad(format!("at most {MAX_HOSTS_FILES} files")));
    }
    Ok(args)
}

/// ssh's `convtime()`: `none`, or a sequence of numbers with optional units
/// (`90`, `1h30m`, `1.5s`); fractions only for seconds, and truncated to
/// whole seconds like ssh. `Ok(None)` is `none`.
pub(super) fn parse_time(v: &Args<'_>) -> Result<Option<Duration>, OptionError> {
    let arg = v.single()?;
    if arg == "none" {
        return Ok(None);
    }
    let bad = || v.bad("a time such as 30, 30s, 5m or 1h30m, or none");
    let mut total = 0.0_f64;
    let mut seen_seconds = false;
    let mut rest = arg.as_str();
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(digits);
        let mut tail = tail.chars();
        let multiplier = match tail.next() {
            None | Some('s' | 'S') if !seen_seconds => {
                seen_seconds = true;
                1.0
            }
            Some('m' | 'M') => 60.0,
            Some('h' | 'H') => 3_600.0,
            Some('d' | 'D') => 86_400.0,
            Some('w' | 'W') => 604_800.0,
            _ => return Err(bad()),
        };
        if number.contains('.')
            && (multiplier > 1.0 || !number.ends_with(|c: char| c.is_ascii_digit()))
        {
            return Err(bad());
        }
        let value: f64 = number.parse().map_err(|_| bad())?;
        total += value * multiplier;
        rest = tail.as_str();
    }
    if total > f64::from(i32::MAX) {
        return Err(bad());
    }
    // Truncating to whole seconds is ssh's behaviour; the bound check above
    // keeps the conversion exact.
    Ok(Some(Duration::from_secs(total as u64)))
}

/// Light syntax check only: ssh's full `[user@]host[:port]` and `ssh://`
/// parsing belongs with the code that makes the connections.
pub(super) fn parse_jump(v: &Args<'_>) -> Result<String, OptionError> {
    let value = v.value;
    let valid = !value.contains(char::is_whitespace)
        && (value.eq_ignore_ascii_case("none") || value.split(',').all(|hop| !hop.is_empty()));
    if valid {
        Ok(value.to_owned())
    } else {
        Err(v.bad("[user@]host[:port][,...] or none"))
    }
}

/// The config-file form puts listen and connect in separate arguments; ssh
/// joins them with `:` for the `-L` parser. A socket path may itself contain
/// `:` (it is a single argument here), so its colons are escaped to keep it
/// one field; bracketed fields are left as they are.
pub(super) fn join_forward(listen: &str, connect: &str) -> String {
    format!("{}:{}", escape_path(listen), escape_path(connect))
}

pub(super) fn escape_path(arg: &str) -> Cow<'_, str> {
    if arg.starts_with('[') || !arg.contains('/') || !arg.contains(':') {
        return Cow::Borrowed(arg);
    }
    let mut out = String::with_capacity(arg.len() + 4);
    let mut chars = arg.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                out.push(c);
                out.extend(chars.next());
            }
            ':' => out.push_str("\\:"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

pub(super) fn forward_expected(kind: ForwardKind, reason: &str) -> String {
    let form = match kind {
        ForwardKind::Local => "[bind_address:]port host:hostport (or unix-socket forms)",
        ForwardKind::Remote => "[bind_address:]port [host:hostport] (or unix-socket forms)",
        ForwardKind::Dynamic => "[bind_address:]port",
    };
    format!("{form}; {reason}")
}
