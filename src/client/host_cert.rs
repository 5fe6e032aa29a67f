//! Host certificates: a server presenting an OpenSSH certificate signed by a CA that an
//! `@cert-authority` line trusts for this host is accepted with no line for its own key,
//! so a fleet re-keyed by its CA needs no known_hosts edits (sshd(8), "SSH_KNOWN_HOSTS FILE
//! FORMAT"; PROTOCOL.certkeys).
//!
//! The checks are OpenSSH's (sshconnect.c check_host_cert): the CA is trusted for the
//! name known_hosts is searched under (`[host]:port` off port 22), neither the CA nor the
//! certified key is `@revoked`, the CA's signature verifies (never SHA-1 RSA), the
//! certificate is a host certificate, valid now, names the host (or HostKeyAlias) among
//! its principals (an empty list names every host, as in OpenSSH) and has no critical
//! options.

use super::known_hosts::{KnownHosts, lookup_name};
use std::path::PathBuf;
use warren_ssh::ssh_key::certificate::CertType;
use warren_ssh::ssh_key::{Algorithm, Certificate, HashAlg, public::KeyData};

/// What known_hosts says about a presented host certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CertStatus {
    /// Signed by a CA trusted for this host, and valid for it now.
    Trusted { file: PathBuf, line: usize },
    /// No `@cert-authority` line for this host holds the signing CA: the certified key
    /// is to be judged as a plain key (OpenSSH's fallback).
    NoAuthority,
    /// The CA or the certified key is `@revoked`: refused, whatever else vouches for it.
    Revoked(String),
    /// A trusted CA signed it, but it is not valid for this host now (expired, another
    /// host's name, a user certificate, a bad signature...).
    Invalid(String),
}

/// Judges `cert` presented by `host:port`. `principal` is the name the certificate must
/// list (the host as looked up, or HostKeyAlias); `now` is in seconds since the epoch.
pub fn check(
    known: &KnownHosts,
    host: &str,
    port: u16,
    principal: &str,
    cert: &Certificate,
    now: u64,
) -> CertStatus {
    let ca = cert.signature_key();
    let ca_fp = ca.fingerprint(HashAlg::Sha256);
    if let Some((file, line)) = known.revocation(ca) {
        return CertStatus::Revoked(format!(
            "the CA key {ca_fp} that signed the host certificate is marked @revoked in {}:{line}",
            file.display()
        ));
    }
    let key_fp = cert.public_key().fingerprint(HashAlg::Sha256);
    if let Some((file, line)) = known.revocation(cert.public_key()) {
        return CertStatus::Revoked(format!(
            "the host key {key_fp} in the certificate is marked @revoked in {}:{line}",
            file.display()
        ));
    }
    let name = lookup_name(host, port);
    let Some((file, line, _)) = known
        .authorities(host, port)
        .into_iter()
        .find(|(_, _, k)| *k == ca)
    else {
        return CertStatus::NoAuthority;
    };
    let invalid = |why: String| {
        CertStatus::Invalid(format!(
            "the host certificate of {name} (id {:?}, key {key_fp}), signed by the CA in {}:{line}, {why}",
            cert.key_id(),
            file.display()
        ))
    };
    if cert.cert_type() != CertType::Host {
        return invalid("is a user certificate, not a host certificate".into());
    }
    if matches!(cert.signature().algorithm(), Algorithm::Rsa { hash: None }) {
        return invalid("is signed with SHA-1 (ssh-rsa), which is refused".into());
    }
    if !ca_key_usable(ca) {
        return invalid(format!("is signed by a {} CA key", ca.algorithm()));
    }
    if cert.validate_at(now, [&ca_fp]).is_err() {
        // validate_at checks the signature and the window together: tell them apart.
        return if now < cert.valid_after() || now >= cert.valid_before() {
            invalid(format!(
                "is not valid now (valid from {} to {})",
                show_time(cert.valid_after()),
                show_time(cert.valid_before())
            ))
        } else {
            invalid("has a signature that does not verify".into())
        };
    }
    let principals = cert.valid_principals();
    if !principals.is_empty() && !principals.iter().any(|p| p == principal) {
        return invalid(format!(
            "is for {} and not for {principal:?}",
            principals.join(", ")
        ));
    }
    if !cert.critical_options().is_empty() {
        let names: Vec<&str> = cert.critical_options().keys().map(|k| k.as_str()).collect();
        return invalid(format!(
            "carries critical options warren does not know ({})",
            names.join(", ")
        ));
    }
    CertStatus::Trusted { file, line }
}

/// CA key types OpenSSH signs certificates with and we can verify.
fn ca_key_usable(ca: &KeyData) -> bool {
    matches!(
        ca,
        KeyData::Ed25519(_) | KeyData::Ecdsa(_) | KeyData::Rsa(_)
    )
}

/// A validity bound in UTC ("forever" for the open ends, as ssh-keygen -L says).
pub fn show_time(t: u64) -> String {
    match t {
        0 => "the beginning".into(),
        u64::MAX => "forever".into(),
        // humantime cannot show years past 9999 (its Display fails, to_string panics).
        t if t >= 253_402_300_800 => format!("{t} (Unix time)"),
        t => {
            let at = std::time::UNIX_EPOCH + std::time::Duration::from_secs(t);
            humantime::format_rfc3339_seconds(at).to_string()
        }
    }
}
