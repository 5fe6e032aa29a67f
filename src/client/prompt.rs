//! Asking the user for secrets and confirmations, the way OpenSSH's readpass.c does.
//!
//! Prompts go to the controlling terminal, never to stdout or stderr, so a tunnel started
//! from a script with redirected output still asks the person at the keyboard. When there
//! is no terminal, `SSH_ASKPASS` is used under the same rules as OpenSSH
//! (`SSH_ASKPASS_REQUIRE=never|prefer|force`, and a display must be set unless forced).
//! Everything here blocks, so callers run it on `spawn_blocking`.

use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};

/// Whether a controlling terminal can be opened for prompts.
pub fn tty_available() -> bool {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .is_ok()
}

/// How a secret may be obtained, decided once from the environment.
#[derive(Debug, Clone)]
pub struct Prompter {
    /// BatchMode: never ask anything.
    pub batch: bool,
    askpass: Option<String>,
    use_askpass: bool,
    allow_askpass: bool,
}

impl Prompter {
    /// Reads `SSH_ASKPASS`, `SSH_ASKPASS_REQUIRE`, `DISPLAY` and `WAYLAND_DISPLAY`.
    pub fn from_env(batch: bool) -> Prompter {
        let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
        let askpass = var("SSH_ASKPASS");
        let mut allow_askpass = var("DISPLAY").is_some() || var("WAYLAND_DISPLAY").is_some();
        let mut use_askpass = false;
        match var("SSH_ASKPASS_REQUIRE")
            .map(|s| s.to_ascii_lowercase())
            .as_deref()
        {
            Some("force") => {
                use_askpass = true;
                allow_askpass = true;
            }
            Some("prefer") => use_askpass = allow_askpass,
            Some("never") => allow_askpass = false,
            _ => {}
        }
        Prompter {
            batch,
            askpass,
            use_askpass,
            allow_askpass,
        }
    }

    /// Whether [`Prompter::secret`] could possibly obtain an answer; lets callers skip
    /// password and keyboard-interactive methods instead of failing on them.
    pub fn can_prompt(&self) -> bool {
        !self.batch && (tty_available() || (self.allow_askpass && self.askpass.is_some()))
    }

    /// Asks for a secret (echo off). `Ok(None)` means nobody can be asked.
    pub fn secret(&self, prompt: &str) -> anyhow::Result<Option<String>> {
        self.ask(prompt, false)
    }

    /// Asks for a visible answer (keyboard-interactive prompts with echo on, yes/no).
    pub fn visible(&self, prompt: &str) -> anyhow::Result<Option<String>> {
        self.ask(prompt, true)
    }

    fn ask(&self, prompt: &str, echo: bool) -> anyhow::Result<Option<String>> {
        if self.batch {
            return Ok(None);
        }
        if let Some(program) = self.askpass.as_deref()
            && (self.use_askpass || (!tty_available() && self.allow_askpass))
        {
            return run_askpass(program, prompt, echo).map(Some);
        }
        if !tty_available() {
            return Ok(None);
        }
        if echo {
            let mut tty = OpenOptions::new().read(true).write(true).open("/dev/tty")?;
            tty.write_all(prompt.as_bytes())?;
            tty.flush()?;
            let mut line = String::new();
            BufReader::new(tty).read_line(&mut line)?;
            Ok(Some(line.trim_end_matches(['\r', '\n']).to_string()))
        } else {
            Ok(Some(rpassword::prompt_password(prompt)?))
        }
    }
}

/// Runs the askpass program with the prompt as its argument; its stdout (one line) is
/// the answer, and a non-zero exit means the user cancelled.
fn run_askpass(program: &str, prompt: &str, echo: bool) -> anyhow::Result<String> {
    let mut cmd = Command::new(program);
    cmd.arg(prompt)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    if echo {
        // OpenSSH tells askpass programs that the answer may be shown.
        cmd.env("SSH_ASKPASS_PROMPT", "confirm");
    }
    let out = cmd
        .output()
        .map_err(|e| anyhow::anyhow!("cannot run SSH_ASKPASS program {program}: {e}"))?;
    if !out.status.success() {
        anyhow::bail!(
            "SSH_ASKPASS program {program} was cancelled ({})",
            out.status
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    Ok(text.trim_end_matches(['\r', '\n']).to_string())
}
