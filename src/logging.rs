//! Diagnostic logging to stderr (stdout stays free for data, as `-W` will need).
//!
//! Diagnostics quote what peers send: user names, targets, bind addresses, a server's
//! banner or errors. A hostile peer could put a newline in a user name to forge a log
//! line, or terminal escapes to rewrite the operator's screen. So every line is escaped
//! on its way out (control characters, C1 controls and bidirectional overrides become
//! visible escapes), at the one place all lines pass, rather than at each call site that
//! might forget. Colours are off for the same reason: an escaped line cannot carry them.

use std::io::{self, Write};
use std::sync::OnceLock;
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::MakeWriter;

/// Where diagnostics go: stderr, a file (`-E`, appended), or syslog (`-y`).
pub enum Sink {
    Stderr,
    File(std::fs::File),
    /// syslog(3)'s facility number (USER is 1).
    Syslog(u8),
}

/// `-q` shows only errors, the default warnings, `-v` progress (and the ready line),
/// `-vv` debug, `-vvv` the SSH engine's protocol traces too. `RUST_LOG` overrides all of it.
pub fn init(verbose: u8, quiet: bool) {
    init_to(verbose, quiet, Sink::Stderr);
}

/// Whether diagnostics carry a timestamp: warrend's do (a daemon's stderr often ends up
/// in a file), unless journald records them, which stamps every line itself. warren's
/// lines are read as they appear, so they have none.
static TIMESTAMPS: OnceLock<bool> = OnceLock::new();

/// [`init`] for a daemon: every line starts with an RFC 3339 UTC timestamp, except when
/// stderr is journald's stream (`JOURNAL_STREAM` names it).
pub fn init_daemon(verbose: u8, quiet: bool) {
    let _ = TIMESTAMPS.set(!stderr_is_journal());
    init_to(verbose, quiet, Sink::Stderr);
}

/// `"2026-01-02T03:04:05.678901Z "` when lines are stamped ([`init_daemon`]), else `""`:
/// for the lines a daemon prints without tracing (the ready line tests and scripts read).
pub fn stamp() -> String {
    if *TIMESTAMPS.get().unwrap_or(&false) {
        format!(
            "{} ",
            humantime::format_rfc3339_micros(std::time::SystemTime::now())
        )
    } else {
        String::new()
    }
}

/// systemd sets `JOURNAL_STREAM=DEV:INODE` for a service whose stderr is the journal; a
/// child whose stderr was redirected elsewhere inherits the variable, hence the check
/// against stderr's own device and inode.
fn stderr_is_journal() -> bool {
    use std::os::unix::fs::MetadataExt;
    let Some(var) = std::env::var_os("JOURNAL_STREAM") else {
        return false;
    };
    let Ok(meta) = std::fs::metadata("/proc/self/fd/2") else {
        return false;
    };
    var.to_string_lossy() == format!("{}:{}", meta.dev(), meta.ino())
}

/// Writes the time as [`stamp`] does.
struct Rfc3339;

impl tracing_subscriber::fmt::time::FormatTime for Rfc3339 {
    fn format_time(&self, w: &mut tracing_subscriber::fmt::format::Writer<'_>) -> std::fmt::Result {
        write!(
            w,
            "{}",
            humantime::format_rfc3339_micros(std::time::SystemTime::now())
        )
    }
}

/// [`init`], writing to `sink`.
pub fn init_to(verbose: u8, quiet: bool, sink: Sink) {
    let level = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "warren=info,warn",
        (false, 2) => "warren=debug,info",
        (false, _) => "debug,warren_ssh=trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let writer = match sink {
        Sink::Stderr => Writers::Stderr,
        Sink::File(f) => Writers::File(f),
        Sink::Syslog(facility) => match syslog::Syslog::connect(facility) {
            Ok(s) => Writers::Syslog(s),
            Err(e) => {
                eprintln!("warren: -y: cannot reach syslog ({e}); logging to stderr");
                Writers::Stderr
            }
        },
    };
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(false)
        .with_target(false);
    let _ = if *TIMESTAMPS.get().unwrap_or(&false) {
        fmt.with_timer(Rfc3339).try_init()
    } else {
        fmt.without_time().try_init()
    };
}

/// One writer per event, escaped, to wherever [`Sink`] said.
enum Writers {
    Stderr,
    File(std::fs::File),
    Syslog(syslog::Syslog),
}

impl<'a> MakeWriter<'a> for Writers {
    type Writer = Escaping<Box<dyn Write + 'a>>;

    fn make_writer(&'a self) -> Self::Writer {
        match self {
            Writers::Stderr => Escaping(Box::new(io::stderr())),
            Writers::File(f) => Escaping(Box::new(f)),
            Writers::Syslog(s) => Escaping(Box::new(s.event(&tracing::Level::INFO))),
        }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        match self {
            Writers::Syslog(s) => Escaping(Box::new(s.event(meta.level()))),
            _ => self.make_writer(),
        }
    }
}

/// syslog(3)'s wire form without libc: one datagram per line to /dev/log.
mod syslog {
    use std::io::{self, Write};
    use std::os::unix::net::UnixDatagram;

    pub struct Syslog(UnixDatagram, u8);

    impl Syslog {
        pub fn connect(facility: u8) -> io::Result<Syslog> {
            let socket = UnixDatagram::unbound()?;
            socket.connect("/dev/log")?;
            Ok(Syslog(socket, facility))
        }

        pub fn event(&self, level: &tracing::Level) -> Event<'_> {
            // Severities err, warning, info, debug.
            let severity = match *level {
                tracing::Level::ERROR => 3,
                tracing::Level::WARN => 4,
                tracing::Level::INFO => 6,
                _ => 7,
            };
            Event {
                socket: &self.0,
                priority: u16::from(self.1) * 8 + severity,
            }
        }
    }

    pub struct Event<'a> {
        socket: &'a UnixDatagram,
        priority: u16,
    }

    impl Write for Event<'_> {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let line = String::from_utf8_lossy(buf);
            let msg = format!(
                "<{}>warren[{}]: {}",
                self.priority,
                std::process::id(),
                line.trim_end_matches('\n')
            );
            // A full or vanished syslog loses the line, as syslog(3) does.
            let _ = self.socket.send(msg.as_bytes());
            Ok(buf.len())
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
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
