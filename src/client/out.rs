//! Printing for commands whose whole job is their output (`status`, `-G`, `man`, ...).
//!
//! Rust ignores SIGPIPE, so a closed pipe (`warren status | head -1`) turns into EPIPE and
//! `println!` panics. Restoring SIGPIPE's default would make warren die as ssh does, but
//! warren is a long-running relay too, where a peer closing a unix socket or pipe must
//! cost one connection, not the process; so print paths go through here instead and a
//! closed stdout ends the process quietly with status 0.

use std::io::Write;

/// For a running tunnel: writes `text` to stdout if anyone still reads it. A tunnel does
/// not end because the script that started it stopped listening.
pub fn print_if_read(text: &str) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes()).and_then(|()| out.flush());
}

/// Writes `text` to stdout and flushes; a reader that went away ends the process (0).
pub fn print(text: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        if e.kind() == std::io::ErrorKind::BrokenPipe {
            std::process::exit(0);
        }
        eprintln!("warren: cannot write to stdout: {e}");
        std::process::exit(1);
    }
}
