//! ProxyCommand: a local command whose stdin/stdout carry the SSH connection.

use std::process::Stdio;
use tokio::io::{Join, join};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The connection as one duplex stream: we read the command's stdout, write its stdin.
pub type ProxyStream = Join<ChildStdout, ChildStdin>;

/// Runs `command` through `sh -c` as OpenSSH does (its stderr stays ours, so its errors
/// reach the user). The child is killed when the returned handle is dropped.
pub fn spawn(command: &str) -> Result<(ProxyStream, Child), String> {
    let mut child = Command::new("/bin/sh")
        .arg("-c")
        .arg(format!("exec {command}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("cannot run ProxyCommand '{command}': {e}"))?;
    let (Some(stdout), Some(stdin)) = (child.stdout.take(), child.stdin.take()) else {
        return Err(format!("ProxyCommand '{command}': no pipes to the command"));
    };
    Ok((join(stdout, stdin), child))
}

/// Expands %h (host), %p (port), %r (remote user), %n (host as typed) and %% in a
/// ProxyCommand, as ssh_config(5) specifies for it. An unknown token is an error rather
/// than a silently wrong command line.
pub fn expand_tokens(
    template: &str,
    host: &str,
    port: u16,
    user: &str,
    original: &str,
) -> Result<String, String> {
    let mut out = String::with_capacity(template.len());
    let mut chars = template.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('h') => out.push_str(host),
            Some('p') => out.push_str(&port.to_string()),
            Some('r') => out.push_str(user),
            Some('n') => out.push_str(original),
            Some('%') => out.push('%'),
            Some(other) => {
                return Err(format!(
                    "ProxyCommand: unknown token %{other} in '{template}' (known: %h %p %r %n %%)"
                ));
            }
            None => return Err(format!("ProxyCommand: '{template}' ends with a lone %")),
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::expand_tokens;

    #[test]
    fn tokens() {
        assert_eq!(
            expand_tokens("nc -X 5 %h %p # %r %n 100%%", "db", 2222, "ops", "alias").unwrap(),
            "nc -X 5 db 2222 # ops alias 100%"
        );
        assert!(expand_tokens("x %z", "h", 1, "u", "n").is_err());
        assert!(expand_tokens("x %", "h", 1, "u", "n").is_err());
    }
}
