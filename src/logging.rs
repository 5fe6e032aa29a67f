//! Diagnostic logging to stderr (stdout stays free for data, as `-W` will need).
//!
//! Diagnostics quote what peers send: user names, targets, bind addresses, a server's
//! banner or errors. A hostile peer could put a newline in a user name to forge a log
//! line, or terminal escapes to rewrite the operator's screen. So every line is escaped
//! on its way out (control characters, C1 controls and bidirectional overrides become
//! visible escapes), at the one place all lines pass, rather than at each call site that
//! might forget. Colours are off for the same reason: an escaped line cannot carry them.

use std::io::{self, Write};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// `-q` shows only errors, the default warnings, `-v` progress (and the ready line),
/// `-vv` debug, `-vvv` the SSH engine's protocol traces too. `RUST_LOG` overrides all of it.
pub fn init(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "warren=info,warn",
        (false, 2) => "warren=debug,info",
        (false, _) => "debug,warren_ssh=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(EscapedStderr)
        .with_ansi(false)
        .without_time()
        .with_target(false)
        .try_init();
}

/// Hands out [`Escaping`] writers over stderr, one per event.
struct EscapedStderr;

impl<'a> MakeWriter<'a> for EscapedStderr {
    type Writer = Escaping<io::Stderr>;

    fn make_writer(&'a self) -> Self::Writer {
        Escaping(io::stderr())
    }
}

/// Writes what it is given with [`escape_line`] applied. The formatter writes each event
/// as one buffer ending in a newline, which is kept; any other newline is escaped.
pub struct Escaping<W: Write>(pub W);

impl<W: Write> Write for Escaping<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let text = String::from_utf8_lossy(buf);
        let (body, end) = match text.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (&*text, ""),
        };
        let mut out = escape_line(body);
        out.push_str(end);
        self.0.write_all(out.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

/// `s` with every character that could break a log line or steer a terminal written as
/// a Rust escape (`\n`, `\u{1b}`, `\u{202e}`); everything else as it is.
pub fn escape_line(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        let dangerous = c.is_control()
            || matches!(c, '\u{200e}' | '\u{200f}' | '\u{2028}' | '\u{2029}')
            || ('\u{202a}'..='\u{202e}').contains(&c)
            || ('\u{2066}'..='\u{2069}').contains(&c);
        if dangerous && c != '\t' {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forged_lines_and_terminal_escapes_are_made_visible() {
        assert_eq!(
            escape_line("user \"bob\n WARN forged\u{1b}[2J\r\u{202e}txt\u{85}\""),
            "user \"bob\\n WARN forged\\u{1b}[2J\\r\\u{202e}txt\\u{85}\""
        );
        assert_eq!(escape_line("ünïcode\tstays"), "ünïcode\tstays");
    }

    #[test]
    fn the_writer_keeps_the_lines_own_newline_only() {
        let mut w = Escaping(Vec::new());
        w.write_all(b"a\nb\x1b[31m\n").unwrap();
        assert_eq!(String::from_utf8(w.0).unwrap(), "a\\nb\\u{1b}[31m\n");
    }
}
