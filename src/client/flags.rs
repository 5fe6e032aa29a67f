//! The OpenSSH flags that are shorthands for ssh_config keywords, the ones that answer
//! and exit (-Q, -V), and the ones warren accepts without honouring. A flag becomes the
//! `-o` it stands for, ahead of the user's own `-o`: in ssh a flag overrides the option
//! whatever the order, and the first value wins here.

use super::cli::Cli;
use super::error::ClientError;
use tracing::{debug, warn};
use warren_ssh::{cipher, hostkey, kex};

/// The `-o` options the flags stand for.
pub fn as_options(cli: &Cli) -> Vec<String> {
    let mut o = Vec::new();
    match cli.control_master {
        0 => {}
        1 => o.push("ControlMaster=yes".into()),
        _ => o.push("ControlMaster=ask".into()),
    }
    if let Some(path) = &cli.control_path {
        o.push(format!("ControlPath={path}"));
    }
    if cli.gateway_ports {
        o.push("GatewayPorts=yes".to_string());
    }
    if cli.ipv4 {
        o.push("AddressFamily=inet".into());
    }
    if cli.ipv6 {
        o.push("AddressFamily=inet6".into());
    }
    if let Some(a) = &cli.bind_address {
        o.push(format!("BindAddress={a}"));
    }
    if let Some(i) = &cli.bind_interface {
        o.push(format!("BindInterface={i}"));
    }
    if let Some(c) = &cli.cipher_spec {
        o.push(format!("Ciphers={c}"));
    }
    if let Some(m) = &cli.mac_spec {
        o.push(format!("MACs={m}"));
    }
    if let Some(e) = &cli.escape_char {
        o.push(format!("EscapeChar={e}"));
    }
    if let Some(t) = &cli.tag {
        o.push(format!("Tag={t}"));
    }
    // As in ssh, -N after -s (or the other way round) is the last one given; clap cannot
    // tell, so -N, which asks for less, wins.
    if cli.no_command {
        o.push("SessionType=none".into());
    }
    if cli.subsystem {
        o.push("SessionType=subsystem".into());
    }
    if cli.null_stdin {
        o.push("StdinNull=yes".into());
    }
    if let Some(w) = &cli.tun {
        o.push(format!("TunnelDevice={w}"));
    }
    if cli.forward_agent {
        o.push("ForwardAgent=yes".into());
    }
    if cli.no_forward_agent {
        o.push("ForwardAgent=no".into());
    }
    o
}

/// -V and -Q: answered without a destination. `None`: carry on.
pub fn answer_and_exit(cli: &Cli) -> Option<u8> {
    if cli.version {
        // ssh prints its version to stderr.
        eprintln!(
            "warren {} (OpenSSH-compatible, own SSH engine)",
            env!("CARGO_PKG_VERSION")
        );
        return Some(0);
    }
    let query = cli.query.as_deref()?;
    match query_list(query) {
        Some(list) => {
            use std::io::Write;
            let mut out = std::io::stdout().lock();
            for name in list {
                if writeln!(out, "{name}").is_err() {
                    break;
                }
            }
            Some(0)
        }
        None => {
            eprintln!("warren: Unsupported query \"{query}\" (warren -Q help lists them)");
            Some(2)
        }
    }
}

/// What `ssh -Q` lists, for warren's engine. ssh also takes the keyword that holds each
/// list as its name.
fn query_list(query: &str) -> Option<Vec<String>> {
    let own = |l: &[&str]| l.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let key_plain = own(&[
        "ssh-ed25519",
        "ecdsa-sha2-nistp256",
        "ecdsa-sha2-nistp384",
        "ecdsa-sha2-nistp521",
        "ssh-rsa",
    ]);
    let certs = |l: &[String]| {
        l.iter()
            .map(|k| format!("{k}-cert-v01@openssh.com"))
            .collect::<Vec<_>>()
    };
    let sigs = own(hostkey::HOST_KEY_ALGORITHMS);
    Some(match query.to_ascii_lowercase().as_str() {
        "cipher" | "ciphers" => crate::crypto::cipher_names(),
        "cipher-auth" => crate::crypto::cipher_names()
            .into_iter()
            .filter(|c| c.contains("gcm") || c.contains("poly1305"))
            .collect(),
        "mac" | "macs" => own(cipher::MACS),
        "kex" | "kexalgorithms" => own(kex::KEX_ALGORITHMS),
        "key" => [key_plain.clone(), certs(&key_plain)].concat(),
        "key-plain" => key_plain,
        "key-cert" => certs(&key_plain),
        "sig" => sigs,
        "key-sig"
        | "hostkeyalgorithms"
        | "pubkeyacceptedalgorithms"
        | "pubkeyacceptedkeytypes"
        | "casignaturealgorithms" => [sigs.clone(), certs(&sigs)].concat(),
        "protocol-version" => own(&["2"]),
        "compression" => own(&["none", "zlib@openssh.com", "zlib"]),
        "help" => own(&[
            "cipher",
            "cipher-auth",
            "compression",
            "kex",
            "key",
            "key-cert",
            "key-plain",
            "key-sig",
            "mac",
            "protocol-version",
            "sig",
        ]),
        _ => return None,
    })
}

/// Flags warren accepts without honouring: said once, then the run goes on, as ssh does
/// when X11 forwarding cannot be set up. A bad -w is a usage error here, before any
/// config file could make it look like the file's fault.
pub fn check(cli: &Cli) -> Result<(), ClientError> {
    if let Some(tun) = &cli.tun
        && crate::config::values::TunnelDevice::parse(tun).is_none()
    {
        return Err(ClientError::Usage(format!(
            "bad tun device '{tun}': expected local_tun[:remote_tun], each a number or any"
        )));
    }
    if cli.x11 || cli.x11_trusted {
        warn!("X11 forwarding is not supported; going on without it");
    }
    if cli.gssapi {
        warn!("-K: GSSAPI authentication is not supported; going on without it");
    }
    if let Some(p) = &cli.pkcs11 {
        warn!("-I {p}: PKCS#11 tokens are not supported; going on without them");
    }
    if let Some(e) = &cli.escape_char {
        debug!("-e {e}: no interactive session, so the escape character never applies");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries() {
        assert_eq!(
            query_list("mac").unwrap(),
            query_list("MACs").unwrap(),
            "keyword aliases"
        );
        assert!(
            query_list("cipher")
                .unwrap()
                .contains(&"aes128-ctr".to_string())
        );
        assert!(
            !query_list("cipher-auth")
                .unwrap()
                .contains(&"aes128-ctr".to_string())
        );
        assert!(query_list("nope").is_none());
        for q in query_list("help").unwrap() {
            assert!(query_list(&q).is_some(), "{q}");
        }
    }
}
