//! Algorithm preferences shared by the client and the server.

/// Cipher order: AES-GCM costs a quarter of chacha20's CPU where the CPU has AES
/// instructions, and throughput is what a tunnel is for. Without them chacha20 is faster.
pub fn cipher_names() -> Vec<String> {
    let mut names: Vec<String> = warren_ssh::cipher::CIPHERS
        .iter()
        .map(|s| s.to_string())
        .collect();
    if has_aes_instructions() {
        // Stable: the GCM pair moves ahead of chacha20, everything else keeps its place.
        names.sort_by_key(|n| !n.contains("-gcm@"));
    }
    names
}

/// Applies an OpenSSH algorithm list option (`Ciphers`) to `defaults`: a plain list
/// replaces them, `+list` appends, `-list` removes, `^list` puts first; `-` and the plain
/// form take `*`/`?` wildcards. Names we do not implement are an error, as in ssh, rather
/// than silently dropped: a typo would otherwise leave no cipher at all or a weaker one.
pub fn algorithm_list(
    what: &str,
    spec: &str,
    defaults: &[String],
    supported: &[&str],
) -> Result<Vec<String>, String> {
    let (op, list) = match spec.chars().next() {
        Some(c @ ('+' | '-' | '^')) => (Some(c), &spec[1..]),
        _ => (None, spec),
    };
    let names: Vec<&str> = list.split(',').map(str::trim).collect();
    if names.iter().any(|n| n.is_empty()) {
        return Err(format!("{what}: empty name in '{spec}'"));
    }
    let expand = |wild: bool| -> Result<Vec<String>, String> {
        let mut out: Vec<String> = Vec::new();
        for n in &names {
            let matched: Vec<&str> = supported
                .iter()
                .copied()
                .filter(|s| if wild { glob(n, s) } else { s == n })
                .collect();
            if matched.is_empty() && !(wild && op == Some('-')) {
                return Err(format!(
                    "{what}: unsupported algorithm '{n}' (supported: {})",
                    supported.join(",")
                ));
            }
            for m in matched {
                if !out.iter().any(|o| o == m) {
                    out.push(m.to_string());
                }
            }
        }
        Ok(out)
    };
    let result = match op {
        None => expand(true)?,
        Some('+') => {
            let mut out = defaults.to_vec();
            out.extend(expand(false)?.into_iter().filter(|n| !defaults.contains(n)));
            out
        }
        Some('-') => {
            let gone = expand(true)?;
            defaults
                .iter()
                .filter(|d| !gone.contains(d))
                .cloned()
                .collect()
        }
        _ => {
            let mut out = expand(false)?;
            out.extend(
                defaults
                    .iter()
                    .filter(|d| !out.contains(d))
                    .cloned()
                    .collect::<Vec<_>>(),
            );
            out
        }
    };
    if result.is_empty() {
        return Err(format!("{what}: '{spec}' leaves no algorithm to use"));
    }
    Ok(result)
}

/// ssh_config pattern match: `*` any run, `?` one character.
fn glob(pattern: &str, name: &str) -> bool {
    fn go(p: &[u8], n: &[u8]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), name.as_bytes())
}

fn has_aes_instructions() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SUPPORTED: &[&str] = &[
        "chacha20-poly1305@openssh.com",
        "aes256-gcm@openssh.com",
        "aes128-ctr",
    ];

    fn defaults() -> Vec<String> {
        SUPPORTED.iter().map(|s| s.to_string()).collect()
    }

    fn apply(spec: &str) -> Result<Vec<String>, String> {
        algorithm_list("Ciphers", spec, &defaults(), SUPPORTED)
    }

    #[test]
    fn openssh_list_forms_apply_to_the_defaults() {
        assert_eq!(apply("aes128-ctr").unwrap(), ["aes128-ctr"]);
        assert_eq!(
            apply("aes*").unwrap(),
            ["aes256-gcm@openssh.com", "aes128-ctr"]
        );
        assert_eq!(
            apply("-chacha20*").unwrap(),
            ["aes256-gcm@openssh.com", "aes128-ctr"]
        );
        assert_eq!(
            apply("^aes128-ctr").unwrap(),
            [
                "aes128-ctr",
                "chacha20-poly1305@openssh.com",
                "aes256-gcm@openssh.com"
            ]
        );
        assert_eq!(apply("+aes128-ctr").unwrap(), defaults());
    }

    #[test]
    fn unknown_or_empty_lists_are_errors() {
        assert!(apply("aes128-cbc").unwrap_err().contains("aes128-cbc"));
        assert!(apply("+3des-cbc").is_err());
        assert!(apply("-*").unwrap_err().contains("no algorithm"));
        assert!(apply("aes128-ctr,").is_err());
        // Removing something we never had is fine, as in ssh.
        assert_eq!(apply("-aes128-cbc").unwrap(), defaults());
    }

    #[test]
    fn gcm_leads_only_where_aes_is_fast_and_nothing_is_lost() {
        let names = cipher_names();
        let mut sorted = names.clone();
        sorted.sort();
        let mut all: Vec<String> = warren_ssh::cipher::CIPHERS
            .iter()
            .map(|s| s.to_string())
            .collect();
        all.sort();
        assert_eq!(sorted, all);
        assert_eq!(names[0].contains("-gcm@"), has_aes_instructions());
    }
}
