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

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use warren_ssh::ssh_key::certificate::Builder;
    use warren_ssh::ssh_key::{PrivateKey, PublicKey};

    const NOW: u64 = 1_800_000_000;

    fn ed25519() -> PrivateKey {
        PrivateKey::random(&mut rand::rng(), Algorithm::Ed25519).unwrap()
    }

    /// A certificate for `host_key` signed by `ca`; an empty `principals` is the
    /// all-hosts certificate.
    fn cert(
        ca: &PrivateKey,
        host_key: &PrivateKey,
        kind: CertType,
        principals: &[&str],
        window: (u64, u64),
        critical: Option<(&str, &str)>,
    ) -> Certificate {
        let mut b = Builder::new(
            [7u8; 32].to_vec(),
            host_key.public_key().key_data().clone(),
            window.0,
            window.1,
        )
        .unwrap();
        b.cert_type(kind).unwrap().key_id("t").unwrap();
        if principals.is_empty() {
            b.all_principals_valid().unwrap();
        }
        for p in principals {
            b.valid_principal(*p).unwrap();
        }
        if let Some((k, v)) = critical {
            b.critical_option(k, v).unwrap();
        }
        b.sign(ca).unwrap()
    }

    fn line(key: &PrivateKey) -> String {
        PublicKey::from(key.public_key().key_data().clone())
            .to_openssh()
            .unwrap()
    }

    fn known(text: &str) -> (tempfile::TempDir, KnownHosts) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("known_hosts");
        fs::write(&path, text).unwrap();
        let kh = KnownHosts::load(std::slice::from_ref(&path));
        (dir, kh)
    }

    #[test]
    fn a_valid_host_certificate_from_a_ca_for_the_host_is_trusted() {
        let (ca, host) = (ed25519(), ed25519());
        let good = cert(&ca, &host, CertType::Host, &["db"], (0, u64::MAX), None);
        let (_d, kh) = known(&format!("@cert-authority db,[db]:2222 {}\n", line(&ca)));
        assert!(matches!(
            check(&kh, "db", 22, "db", &good, NOW),
            CertStatus::Trusted { line: 1, .. }
        ));
        // Off port 22 the CA line must name [host]:port; the principal stays the host.
        assert!(matches!(
            check(&kh, "DB", 2222, "db", &good, NOW),
            CertStatus::Trusted { .. }
        ));
        assert_eq!(
            check(&kh, "db", 2200, "db", &good, NOW),
            CertStatus::NoAuthority
        );
        // Another CA's line vouches for nothing; a CA for other hosts neither.
        let (_d, kh2) = known(&format!("@cert-authority * {}\n", line(&ed25519())));
        assert_eq!(
            check(&kh2, "db", 22, "db", &good, NOW),
            CertStatus::NoAuthority
        );
        let (_d, kh3) = known(&format!("@cert-authority web {}\n", line(&ca)));
        assert_eq!(
            check(&kh3, "db", 22, "db", &good, NOW),
            CertStatus::NoAuthority
        );
        // A plain line holding the CA key is not a CA line.
        let (_d, kh4) = known(&format!("db {}\n", line(&ca)));
        assert_eq!(
            check(&kh4, "db", 22, "db", &good, NOW),
            CertStatus::NoAuthority
        );
        // No principals: every host, as in OpenSSH.
        let any = cert(&ca, &host, CertType::Host, &[], (0, u64::MAX), None);
        assert!(matches!(
            check(&kh, "db", 22, "db", &any, NOW),
            CertStatus::Trusted { .. }
        ));
    }

    #[test]
    fn invalid_certificates_from_a_trusted_ca_are_explained() {
        let (ca, host) = (ed25519(), ed25519());
        let (_d, kh) = known(&format!("@cert-authority * {}\n", line(&ca)));
        let invalid = |c: &Certificate, needle: &str| match check(&kh, "db", 22, "db", c, NOW) {
            CertStatus::Invalid(why) => assert!(why.contains(needle), "{needle}: {why}"),
            other => panic!("{needle}: {other:?}"),
        };
        let all = (0, u64::MAX);
        invalid(
            &cert(&ca, &host, CertType::Host, &["web"], all, None),
            "is for web and not for \"db\"",
        );
        invalid(
            &cert(&ca, &host, CertType::User, &["db"], all, None),
            "user certificate",
        );
        invalid(
            &cert(&ca, &host, CertType::Host, &["db"], (0, NOW), None),
            "not valid now (valid from the beginning to 2027-01-15T08:00:00Z)",
        );
        invalid(
            &cert(
                &ca,
                &host,
                CertType::Host,
                &["db"],
                (NOW + 1, u64::MAX),
                None,
            ),
            "not valid now",
        );
        invalid(
            &cert(
                &ca,
                &host,
                CertType::Host,
                &["db"],
                all,
                Some(("force-command", "x")),
            ),
            "critical options",
        );
        // The signature covers every field: a changed principal list breaks it.
        let good = cert(&ca, &host, CertType::Host, &["database-one"], all, None);
        let mut blob = good.to_bytes().unwrap();
        let at = blob.windows(12).position(|w| w == b"database-one").unwrap();
        blob[at + 11] = b'2';
        let forged = Certificate::from_bytes(&blob).unwrap();
        match check(&kh, "database-on2", 22, "database-on2", &forged, NOW) {
            CertStatus::Invalid(why) => assert!(why.contains("does not verify"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn revoked_ca_or_host_key_wins_over_everything() {
        let (ca, host) = (ed25519(), ed25519());
        let good = cert(&ca, &host, CertType::Host, &["db"], (0, u64::MAX), None);
        for revoked in [&ca, &host] {
            let (_d, kh) = known(&format!(
                "@cert-authority * {ca}\ndb {h}\n@revoked * {r}\n",
                ca = line(&ca),
                h = line(&host),
                r = line(revoked)
            ));
            match check(&kh, "db", 22, "db", &good, NOW) {
                CertStatus::Revoked(why) => assert!(why.contains("@revoked"), "{why}"),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn validity_bounds_read_as_dates() {
        assert_eq!(show_time(0), "the beginning");
        assert_eq!(show_time(u64::MAX), "forever");
        assert_eq!(show_time(NOW), "2027-01-15T08:00:00Z");
        assert!(show_time(u64::MAX - 1).contains("Unix time"));
    }
}
