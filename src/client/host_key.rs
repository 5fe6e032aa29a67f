//! Deciding whether to trust the server's host key: known_hosts plus StrictHostKeyChecking.

use super::error::ClientError;
use super::host_cert::{self, CertStatus};
use super::known_hosts::{self, HostKeyStatus, KnownHosts};
use super::prompt::Prompter;
use crate::config::options::StrictHostKeyChecking;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};
use tracing::{debug, info, warn};
use warren_ssh::ssh_key::{Algorithm, Certificate, HashAlg, PublicKey};

/// Everything needed to judge one server's key, captured before connecting so the
/// decision, made while the handshake waits, needs no outside state.
#[derive(Debug, Clone)]
pub struct HostKeyPolicy {
    /// Name the key is recorded under (HostKeyAlias, or the host as typed).
    pub host: String,
    pub port: u16,
    /// User files first (new keys are written to the first), then global ones.
    pub user_files: Vec<PathBuf>,
    pub global_files: Vec<PathBuf>,
    pub strict: StrictHostKeyChecking,
    pub hash_new_entries: bool,
    pub prompter: Prompter,
}

impl HostKeyPolicy {
    fn load(&self) -> KnownHosts {
        let files: Vec<PathBuf> = self
            .user_files
            .iter()
            .chain(self.global_files.iter())
            .cloned()
            .collect();
        KnownHosts::load(&files)
    }

    /// Host-key algorithms in the order to offer them: types already known for this host
    /// first, as OpenSSH does, so a server with several keys presents the one we can
    /// verify instead of one that would look new.
    ///
    /// When an `@cert-authority` line covers the host, the certificate variants of the
    /// defaults come first, as ssh does: the server then presents its certificate, which
    /// the CA vouches for, rather than a plain key no line names.
    pub fn preferred_algorithms(&self, defaults: &[String]) -> Vec<String> {
        let known_hosts = self.load();
        let mut out = Vec::new();
        // A revoked CA counts too: its certificate is then refused naming the @revoked
        // line, which says more than an unknown plain key would.
        if !known_hosts.authorities(&self.host, self.port).is_empty() {
            out.extend(
                defaults
                    .iter()
                    .filter_map(|a| certificate_algorithm(a))
                    .filter(|c| !defaults.contains(c)),
            );
        }
        let known = known_hosts.known_algorithms(&self.host, self.port);
        let is_known = |name: &String| {
            known.iter().any(|k| match k {
                // A known RSA key verifies under any of its signature algorithms.
                Algorithm::Rsa { .. } => name.starts_with("rsa-sha2-") || name == "ssh-rsa",
                k => k.as_str() == name,
            })
        };
        out.extend(defaults.iter().filter(|a| is_known(a)).cloned());
        out.extend(defaults.iter().filter(|a| !is_known(a)).cloned());
        out
    }

    /// Judges a presented host certificate: trusted through an `@cert-authority` line,
    /// else (no CA for it) as its plain key, as ssh does. Blocking, like [`Self::verify`].
    ///
    /// Unlike ssh, a certificate a trusted CA signed but that is not valid for this host
    /// (expired, another host's, ...) is refused rather than treated as an unknown key
    /// that accept-new or a prompt could let in; a plain line for its key still admits it.
    pub fn verify_certificate(&self, cert: &Certificate) -> Result<(), ClientError> {
        let known_hosts = self.load();
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let principal = self.host.to_ascii_lowercase();
        let plain = PublicKey::new(cert.public_key().clone(), "");
        match host_cert::check(&known_hosts, &self.host, self.port, &principal, cert, now) {
            CertStatus::Trusted { file, line } => {
                info!(
                    "host certificate of {} (id {:?}) trusted through the CA in {}:{line}",
                    known_hosts::lookup_name(&self.host, self.port),
                    cert.key_id(),
                    file.display()
                );
                Ok(())
            }
            CertStatus::NoAuthority => {
                debug!(
                    "no @cert-authority line vouches for the host certificate; checking its key"
                );
                self.verify(&plain)
            }
            CertStatus::Revoked(why) => Err(ClientError::HostKey(why)),
            CertStatus::Invalid(why) => match known_hosts.check(&self.host, self.port, &plain) {
                HostKeyStatus::Known { file, line } => {
                    warn!("{why}; its key is known in {}:{line}", file.display());
                    Ok(())
                }
                _ => Err(ClientError::HostKey(why)),
            },
        }
    }

    /// Judges the presented key. Blocking (may prompt or write known_hosts).
    pub fn verify(&self, key: &PublicKey) -> Result<(), ClientError> {
        let name = known_hosts::lookup_name(&self.host, self.port);
        let fp = key.fingerprint(HashAlg::Sha256);
        let algo = key.algorithm();
        match self.load().check(&self.host, self.port, key) {
            HostKeyStatus::Known { .. } => Ok(()),
            HostKeyStatus::Revoked { file, line } => Err(ClientError::HostKey(format!(
                "the {algo} host key {fp} presented by {name} is marked @revoked in {}:{line}",
                file.display()
            ))),
            HostKeyStatus::Changed { file, line, known } => Err(ClientError::HostKey(
                known_hosts::changed_key_warning(&self.host, self.port, key, &file, line, &known),
            )),
            HostKeyStatus::OtherTypeKnown { known } => {
                let list: Vec<String> = known
                    .iter()
                    .map(|(f, l, a)| format!("{a} key in {}:{l}", f.display()))
                    .collect();
                Err(ClientError::HostKey(format!(
                    "{name} presented a {algo} host key ({fp}), but it is known only under another key type: {}.\n\
                     This can be a server reconfiguration or an attacker; warren will not accept it as new.\n\
                     If you trust it, verify the fingerprint out of band and add it with ssh-keyscan or by removing the old entry (ssh-keygen -R '{name}').",
                    list.join(", ")
                )))
            }
            HostKeyStatus::Unknown => self.unknown(key, &name, &fp.to_string()),
        }
    }

    fn unknown(&self, key: &PublicKey, name: &str, fp: &str) -> Result<(), ClientError> {
        let algo = key.algorithm();
        let accept = match self.strict {
            StrictHostKeyChecking::Yes => {
                return Err(ClientError::HostKey(format!(
                    "no {algo} host key is known for {name} and you have requested strict checking ({fp})"
                )));
            }
            StrictHostKeyChecking::AcceptNew | StrictHostKeyChecking::No => true,
            StrictHostKeyChecking::Ask => self.ask(name, &algo, fp)?,
        };
        if !accept {
            return Err(ClientError::HostKey(format!(
                "the {algo} host key of {name} ({fp}) was not accepted"
            )));
        }
        let Some(file) = self.user_files.first() else {
            warn!("no UserKnownHostsFile to record the key of {name} in");
            return Ok(());
        };
        match known_hosts::append(file, &self.host, self.port, key, self.hash_new_entries) {
            Ok(_) => warn!(
                "Permanently added '{name}' ({algo}) to the list of known hosts ({}).",
                file.display()
            ),
            Err(e) => warn!(
                "could not record the host key of {name} in {}: {e}",
                file.display()
            ),
        }
        Ok(())
    }

    fn ask(&self, name: &str, algo: &Algorithm, fp: &str) -> Result<bool, ClientError> {
        let unavailable = || {
            ClientError::HostKey(format!(
                "no {algo} host key is known for {name} ({fp}) and there is no terminal to ask \
                 (BatchMode, or no TTY); add it to known_hosts first or use -o StrictHostKeyChecking=accept-new"
            ))
        };
        if self.prompter.batch {
            return Err(unavailable());
        }
        let question = format!(
            "The authenticity of host '{name}' can't be established.\n\
             {algo} key fingerprint is {fp}.\n\
             This key is not known by any other names.\n\
             Are you sure you want to continue connecting (yes/no/[fingerprint])? "
        );
        for _ in 0..3 {
            let answer = self
                .prompter
                .visible(&question)
                .map_err(|e| ClientError::HostKey(format!("cannot ask about the host key: {e}")))?
                .ok_or_else(unavailable)?;
            let answer = answer.trim();
            if answer.eq_ignore_ascii_case("yes") || answer == fp {
                return Ok(true);
            }
            if answer.eq_ignore_ascii_case("no") || answer.is_empty() {
                return Ok(false);
            }
            if answer.starts_with("SHA256:") {
                return Ok(false);
            }
        }
        Ok(false)
    }
}

/// `name-cert-v01@openssh.com` for a plain host key algorithm we have a certificate
/// variant of.
fn certificate_algorithm(plain: &str) -> Option<String> {
    use warren_ssh::hostkey::{HOST_CERT_ALGORITHMS, HOST_KEY_ALGORITHMS};
    let i = HOST_KEY_ALGORITHMS.iter().position(|a| *a == plain)?;
    Some(HOST_CERT_ALGORITHMS[i].to_string())
}
