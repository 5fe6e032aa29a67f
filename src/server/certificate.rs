//! Decides whether an OpenSSH user certificate may log in as a user, and turns its options into key restrictions.
//!
//! The SSH engine only checks that the client's signature was made by the
//! certified key; the CA's signature, the validity window, trusting the CA,
//! matching principals and honouring critical options are ours, so that every
//! refusal (an expired certificate too) reaches the audit with its reason.
//! The rules are sshd's (`sshkey_cert_check_authority`,
//! `sshauthopt_from_cert`): a user certificate needs at least one principal,
//! unknown critical options refuse it, and port forwarding is allowed only if
//! the certificate carries the `permit-port-forwarding` extension.

use std::time::{Duration, UNIX_EPOCH};

use warren_ssh::ssh_key::{Certificate, Fingerprint, HashAlg};

use super::key_options::{KeyOptions, SourceList};

/// Checks `cert` for a login as `user`, where `principals` are the names
/// the user may appear as in certificates and `trusted_cas` the SHA-256
/// fingerprints of `[user_ca]` keys. Returns the restrictions to apply.
pub fn check_user_certificate(
    cert: &Certificate,
    user: &str,
    principals: &[String],
    trusted_cas: &[Fingerprint],
    now_unix: u64,
) -> Result<KeyOptions, String> {
    let origin = format!(
        "certificate {:?} serial {} for {user}",
        cert.key_id(),
        cert.serial()
    );
    if !cert.cert_type().is_user() {
        return Err(format!("{origin}: not a user certificate"));
    }
    let ca = cert.signature_key().fingerprint(HashAlg::Sha256);
    if !trusted_cas.contains(&ca) {
        return Err(format!("{origin}: signed by untrusted CA {ca}"));
    }
    if now_unix < cert.valid_after() || now_unix >= cert.valid_before() {
        return Err(format!("{origin}: outside its validity period"));
    }
    cert.validate_at(now_unix, trusted_cas)
        .map_err(|e| format!("{origin}: invalid: {e}"))?;
    if cert.valid_principals().is_empty() {
        // An empty list means "any principal" to ssh-key but sshd refuses
        // such user certificates; a CA slip must not become a master key.
        return Err(format!("{origin}: certificate lacks principal list"));
    }
    if !cert
        .valid_principals()
        .iter()
        .any(|p| principals.iter().any(|allowed| allowed == p))
    {
        return Err(format!(
            "{origin}: none of its principals {:?} is allowed for {user}",
            cert.valid_principals()
        ));
    }

    let mut options = KeyOptions::unrestricted(origin.clone());
    options.port_forwarding = cert.extensions().contains_key("permit-port-forwarding");
    options.no_touch_required = cert.extensions().contains_key("no-touch-required");
    options.expiry = UNIX_EPOCH.checked_add(Duration::from_secs(cert.valid_before()));
    for (name, value) in cert.critical_options().iter() {
        match name.as_str() {
            "source-address" => {
                options.from = Some(
                    SourceList::from_certificate(value).map_err(|e| format!("{origin}: {e}"))?,
                );
            }
            "force-command" => {
                return Err(format!(
                    "{origin}: force-command is refused: warrend runs no commands"
                ));
            }
            other => {
                return Err(format!("{origin}: unsupported critical option '{other}'"));
            }
        }
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    const CA: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBNtYrWh8uaNsBh3K1aARvehbayp4lekFL+srMVB8GWDG5uiaOPAFzs7/p9SR6SckD5e/KS3pq8SriDtrj2stFPA= ca";
    /// Principals alice,ops; valid 2020..2099; default extensions.
    const OK: &str = "ssh-ed25519-cert-v01@openssh.com AAAAIHNzaC1lZDI1NTE5LWNlcnQtdjAxQG9wZW5zc2guY29tAAAAIJVRlyaGWF9xv8MfrOmdK+ylsrcwHU0TTNEo5FbhZIjuAAAAIMMmTZtHcNJo0O3IQp7dssbenGVAd8CgJ4HR7NqAx43AAAAAAAAAAAAAAAABAAAACGFsaWNlLW9rAAAAEAAAAAVhbGljZQAAAANvcHMAAAAAXgvhAAAAAAD0hQWAAAAAAAAAAIIAAAAVcGVybWl0LVgxMS1mb3J3YXJkaW5nAAAAAAAAABdwZXJtaXQtYWdlbnQtZm9yd2FyZGluZwAAAAAAAAAWcGVybWl0LXBvcnQtZm9yd2FyZGluZwAAAAAAAAAKcGVybWl0LXB0eQAAAAAAAAAOcGVybWl0LXVzZXItcmMAAAAAAAAAAAAAAGgAAAATZWNkc2Etc2hhMi1uaXN0cDI1NgAAAAhuaXN0cDI1NgAAAEEE21itaHy5o2wGHcrVoBG96FtrKniV6QUv6ysxUHwZYMbm6Jo48AXOzv+n1JHpJyQPl78pLemrxKuIO2uPay0U8AAAAGMAAAATZWNkc2Etc2hhMi1uaXN0cDI1NgAAAEgAAAAgfOcX9QNsDKEhN4zc1a1TGsp9JhlcvtQuZu88A/mCVfkAAAAgHNahDg4GwST8nYyYJgtU/KWFrOuZrAfT/pKjDCXo5Og= alice@laptop";
    /// force-command=/bin/true, source-address=10.0.0.0/8.
    const FORCE: &str = "ssh-ed25519-cert-v01@openssh.com AAAAIHNzaC1lZDI1NTE5LWNlcnQtdjAxQG9wZW5zc2guY29tAAAAIAA0o5Kg4Zr7130hH9KGb6laWhu6dfX6mKPHUirz/jooAAAAIMMmTZtHcNJo0O3IQp7dssbenGVAd8CgJ4HR7NqAx43AAAAAAAAAAAAAAAABAAAACWFsaWNlLWNtZAAAAAkAAAAFYWxpY2UAAAAAXgvhAAAAAAD0hQWAAAAARgAAAA1mb3JjZS1jb21tYW5kAAAADQAAAAkvYmluL3RydWUAAAAOc291cmNlLWFkZHJlc3MAAAAOAAAACjEwLjAuMC4wLzgAAACCAAAAFXBlcm1pdC1YMTEtZm9yd2FyZGluZwAAAAAAAAAXcGVybWl0LWFnZW50LWZvcndhcmRpbmcAAAAAAAAAFnBlcm1pdC1wb3J0LWZvcndhcmRpbmcAAAAAAAAACnBlcm1pdC1wdHkAAAAAAAAADnBlcm1pdC11c2VyLXJjAAAAAAAAAAAAAABoAAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBNtYrWh8uaNsBh3K1aARvehbayp4lekFL+srMVB8GWDG5uiaOPAFzs7/p9SR6SckD5e/KS3pq8SriDtrj2stFPAAAABlAAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAABKAAAAIQDkkhCS1b7QPeIYyU6OnQhjcCEWUc8FVUVM3Z84u5b8OQAAACEAndctBnWZQAVk5FYIlQn67VwuaELhbdY78apsNUICIBc= alice@laptop";
    /// no-port-forwarding, source-address=10.0.0.0/8.
    const SRC: &str = "ssh-ed25519-cert-v01@openssh.com AAAAIHNzaC1lZDI1NTE5LWNlcnQtdjAxQG9wZW5zc2guY29tAAAAIBthx77e1If3XDMfO5i8Ya5wutlaMpX4oTYSk1I7ECUCAAAAIMMmTZtHcNJo0O3IQp7dssbenGVAd8CgJ4HR7NqAx43AAAAAAAAAAAAAAAABAAAACWFsaWNlLXNyYwAAAAkAAAAFYWxpY2UAAAAAXgvhAAAAAAD0hQWAAAAAJAAAAA5zb3VyY2UtYWRkcmVzcwAAAA4AAAAKMTAuMC4wLjAvOAAAAGQAAAAVcGVybWl0LVgxMS1mb3J3YXJkaW5nAAAAAAAAABdwZXJtaXQtYWdlbnQtZm9yd2FyZGluZwAAAAAAAAAKcGVybWl0LXB0eQAAAAAAAAAOcGVybWl0LXVzZXItcmMAAAAAAAAAAAAAAGgAAAATZWNkc2Etc2hhMi1uaXN0cDI1NgAAAAhuaXN0cDI1NgAAAEEE21itaHy5o2wGHcrVoBG96FtrKniV6QUv6ysxUHwZYMbm6Jo48AXOzv+n1JHpJyQPl78pLemrxKuIO2uPay0U8AAAAGQAAAATZWNkc2Etc2hhMi1uaXN0cDI1NgAAAEkAAAAhAJS5nguF7E5EEv+3oUmKq3JlYJzmaJ8l6Q/3FGbhSRX8AAAAIDwxaEmEFzaj3eks6JkEMNbR9zKEPtdUiZKK3QbQ2A/8 alice@laptop";
    /// No principals.
    const NOPRINC: &str = "ssh-ed25519-cert-v01@openssh.com AAAAIHNzaC1lZDI1NTE5LWNlcnQtdjAxQG9wZW5zc2guY29tAAAAIEHyZXwwA55PYtDL7EJsjVRBCK3vVUGwujq949DR4JGSAAAAIMMmTZtHcNJo0O3IQp7dssbenGVAd8CgJ4HR7NqAx43AAAAAAAAAAAAAAAABAAAADWFsaWNlLW5vcHJpbmMAAAAAAAAAAF4L4QAAAAAA9IUFgAAAAAAAAACCAAAAFXBlcm1pdC1YMTEtZm9yd2FyZGluZwAAAAAAAAAXcGVybWl0LWFnZW50LWZvcndhcmRpbmcAAAAAAAAAFnBlcm1pdC1wb3J0LWZvcndhcmRpbmcAAAAAAAAACnBlcm1pdC1wdHkAAAAAAAAADnBlcm1pdC11c2VyLXJjAAAAAAAAAAAAAABoAAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBNtYrWh8uaNsBh3K1aARvehbayp4lekFL+srMVB8GWDG5uiaOPAFzs7/p9SR6SckD5e/KS3pq8SriDtrj2stFPAAAABkAAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAABJAAAAIEx1+cWjJRmIkgafO597hC5TfuWqDcDllGSW3cUNnzGxAAAAIQDx2OTxaZzu4EleuruWBFE7BKfUaLLbmRfpjUcW8IBE3A== alice@laptop";
    /// Signed by another key, not the CA.
    const OTHER_CA: &str = "ssh-ed25519-cert-v01@openssh.com AAAAIHNzaC1lZDI1NTE5LWNlcnQtdjAxQG9wZW5zc2guY29tAAAAINvLo507mzt+sLwledtAi1aqU1pOGx1p28GxIir+OkxQAAAAIMMmTZtHcNJo0O3IQp7dssbenGVAd8CgJ4HR7NqAx43AAAAAAAAAAAAAAAABAAAACmJvYi1zaWduZWQAAAAJAAAABWFsaWNlAAAAAF4L4QAAAAAA9IUFgAAAAAAAAACCAAAAFXBlcm1pdC1YMTEtZm9yd2FyZGluZwAAAAAAAAAXcGVybWl0LWFnZW50LWZvcndhcmRpbmcAAAAAAAAAFnBlcm1pdC1wb3J0LWZvcndhcmRpbmcAAAAAAAAACnBlcm1pdC1wdHkAAAAAAAAADnBlcm1pdC11c2VyLXJjAAAAAAAAAAAAAAAzAAAAC3NzaC1lZDI1NTE5AAAAILGjqa/JCxwmzdWv3dPJXs4NaH1Fpl+YOR4wUIkGxgK/AAAAUwAAAAtzc2gtZWQyNTUxOQAAAEDNaWbwUjWw/W4MtMmUDZF/NJIDQoeXIEHkqhPeAMJxGlEx2G5UTRENxBQNOB1bZaf22V/kUevHV1RgNZrMTIMK alice@laptop";

    /// 2025-01-01, inside every test certificate's validity.
    const NOW: u64 = 1_735_689_600;

    fn check(cert: &str, user: &str, principals: &[&str], now: u64) -> Result<KeyOptions, String> {
        let cert = Certificate::from_openssh(cert).map_err(|e| e.to_string())?;
        let ca = warren_ssh::ssh_key::PublicKey::from_openssh(CA)
            .map_err(|e| e.to_string())?
            .fingerprint(HashAlg::Sha256);
        let principals: Vec<String> = principals.iter().map(|p| p.to_string()).collect();
        check_user_certificate(&cert, user, &principals, &[ca], now)
    }

    #[test]
    fn accepts_trusted_certificate_with_matching_principal() {
        let opts = check(OK, "alice", &["alice"], NOW).expect("valid");
        assert!(opts.port_forwarding);
        assert!(check(OK, "oncall", &["ops"], NOW).is_ok());
    }

    #[test]
    fn refuses_what_sshd_refuses() {
        let cases = [
            (OK, &["bob"][..], NOW, "none of its principals"),
            (OK, &["alice"][..], 1_000, "validity"),
            (OK, &["alice"][..], 4_102_444_800 + 86_400 * 400, "validity"),
            (NOPRINC, &["alice"][..], NOW, "lacks principal list"),
            (OTHER_CA, &["alice"][..], NOW, "untrusted CA"),
            (FORCE, &["alice"][..], NOW, "force-command"),
        ];
        for (cert, principals, now, want) in cases {
            let err = check(cert, "alice", principals, now).expect_err(want);
            assert!(err.contains(want), "{err}");
        }
    }

    #[test]
    fn source_address_and_missing_forwarding_extension_restrict() {
        let opts = check(SRC, "alice", &["alice"], NOW).expect("valid");
        assert!(!opts.port_forwarding);
        let now = UNIX_EPOCH + Duration::from_secs(NOW);
        let inside: IpAddr = "10.1.2.3".parse().expect("lit");
        let outside: IpAddr = "192.0.2.1".parse().expect("lit");
        assert!(opts.check_login(inside, now).is_ok());
        assert!(opts.check_login(outside, now).is_err());
    }
}
