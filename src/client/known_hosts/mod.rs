//! Host-key verification against OpenSSH `known_hosts` files.
//!
//! Warren shares `~/.ssh/known_hosts` with OpenSSH, so it has to read every
//! line OpenSSH writes (hashed names, `[host]:port`, patterns, markers) and
//! write lines OpenSSH can find again. The file is parsed here rather than
//! with a library helper because the common ones split on single spaces and ignore
//! `@revoked`/`@cert-authority`, which would turn a revocation into a trust.
//!
//! [`parse`] reads lines, this module matches presented keys against them, and
//! [`write`] records new keys and words the changed-key warning.

use std::fs;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use warren_ssh::ssh_key::public::KeyData;
use warren_ssh::ssh_key::{Algorithm, HashAlg, PublicKey};

use crate::config::pattern::{PatternMatch, match_pattern_list};

mod parse;
#[cfg(test)]
mod tests;
mod write;

use parse::parse_line;
pub use write::{append, changed_key_warning};

type HmacSha1 = Hmac<Sha1>;

/// Prefix of OpenSSH's (only) hashed-host format, `|1|salt|hmac`.
const HASH_MAGIC: &str = "|1|";

/// OpenSSH rejects hashed entries whose salt or HMAC is not exactly one SHA-1
/// output long; matching that keeps us from accepting lines OpenSSH ignores.
const SHA1_LEN: usize = 20;

/// OpenSSH's base64 decoder does not insist on padding; neither do we, so a
/// hand-edited line OpenSSH accepts is not silently dropped here.
const LENIENT_B64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Result of looking a presented host key up in the known-hosts files.
///
/// File and line are carried along so that every message can point the user
/// at the exact line to inspect or delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HostKeyStatus {
    /// A plain entry for this host holds exactly this key.
    Known { file: PathBuf, line: usize },
    /// Nothing is recorded for this host.
    Unknown,
    /// The host is recorded with a different key of the same type and no entry
    /// holds the presented key: possibly a man-in-the-middle.
    Changed {
        file: PathBuf,
        line: usize,
        known: PublicKey,
    },
    /// The key appears on an `@revoked` line; it must be refused for every host.
    Revoked { file: PathBuf, line: usize },
    /// The host is recorded, but only with keys of other types. Callers must
    /// not treat this as a new host: accepting the key on first use here would
    /// let an attacker pick a key type the user never verified.
    OtherTypeKnown {
        known: Vec<(PathBuf, usize, Algorithm)>,
    },
}

/// The parsed contents of one or more known-hosts files, in lookup order.
#[derive(Debug, Clone, Default)]
pub struct KnownHosts {
    files: Vec<PathBuf>,
    entries: Vec<Entry>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    None,
    Revoked,
    CertAuthority,
}

#[derive(Debug, Clone)]
enum HostField {
    /// Comma-separated pattern list, matched case-insensitively like OpenSSH.
    Patterns(String),
    /// `|1|salt|hmac`: the name itself is not recoverable, only testable.
    Hashed { salt: Vec<u8>, hmac: Vec<u8> },
}

#[derive(Debug, Clone)]
struct Entry {
    /// Index into `KnownHosts::files`, so entries stay small.
    file: usize,
    line: usize,
    marker: Marker,
    hosts: HostField,
    key: PublicKey,
}

/// The name OpenSSH records a host under: `host` on port 22, else `[host]:port`.
///
/// The host is lowercased because `ssh` lowercases its destination before
/// consulting `known_hosts`, so OpenSSH's hashed entries are HMACs of the
/// lowercase name; hashing any other spelling would never match them.
pub fn lookup_name(host: &str, port: u16) -> String {
    let host = host.to_ascii_lowercase();
    if port == 22 {
        host
    } else {
        format!("[{host}]:{port}")
    }
}

impl KnownHosts {
    /// Reads the given files in order (user files before global ones, as
    /// OpenSSH does). Missing files count as empty and unreadable files or
    /// malformed lines are skipped with a log message: one bad line in a
    /// shared file must not lock the user out of every host.
    pub fn load(files: &[PathBuf]) -> KnownHosts {
        let mut known = KnownHosts::default();
        for path in files {
            match fs::read(path) {
                Ok(data) => known.add_file(path, &data),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    tracing::debug!(file = %path.display(), "known_hosts file does not exist");
                }
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "cannot read known_hosts file; ignoring it");
                }
            }
        }
        known
    }

    fn add_file(&mut self, path: &Path, data: &[u8]) {
        let file = self.files.len();
        self.files.push(path.to_path_buf());
        for (index, raw) in data.split(|&b| b == b'\n').enumerate() {
            let line = index + 1;
            let Ok(text) = std::str::from_utf8(raw) else {
                tracing::debug!(file = %path.display(), line, "skipping known_hosts line: not valid UTF-8");
                continue;
            };
            match parse_line(text) {
                Ok(Some((marker, hosts, key))) => self.entries.push(Entry {
                    file,
                    line,
                    marker,
                    hosts,
                    key,
                }),
                Ok(None) => {}
                Err(reason) => {
                    tracing::debug!(file = %path.display(), line, "skipping known_hosts line: {reason}");
                }
            }
        }
    }

    /// Decides how far the presented key can be trusted for `host:port`.
    ///
    /// Order matters: revocation beats everything (a revoked key is bad no
    /// matter which host line it appears under), then an exact match beats a
    /// mismatch, because a host may legitimately be listed with several keys
    /// of one type (e.g. during key rotation).
    pub fn check(&self, host: &str, port: u16, key: &PublicKey) -> HostKeyStatus {
        let presented = plain_key_data(key);
        if let Some(e) = self
            .entries
            .iter()
            .find(|e| e.marker == Marker::Revoked && e.key.key_data() == presented)
        {
            return HostKeyStatus::Revoked {
                file: self.path(e),
                line: e.line,
            };
        }

        let name = lookup_name(host, port);
        let algorithm = normalized_algorithm(presented);
        let mut changed: Option<&Entry> = None;
        let mut other_types = Vec::new();
        for e in self.host_entries(&name) {
            if e.key.key_data() == presented {
                return HostKeyStatus::Known {
                    file: self.path(e),
                    line: e.line,
                };
            }
            let known_algorithm = normalized_algorithm(e.key.key_data());
            if known_algorithm == algorithm {
                changed.get_or_insert(e);
            } else {
                other_types.push((self.path(e), e.line, known_algorithm));
            }
        }
        match changed {
            Some(e) => HostKeyStatus::Changed {
                file: self.path(e),
                line: e.line,
                known: e.key.clone(),
            },
            None if !other_types.is_empty() => HostKeyStatus::OtherTypeKnown { known: other_types },
            None => HostKeyStatus::Unknown,
        }
    }

    /// Key types already trusted for `host:port`, in file order.
    ///
    /// Offering these first in key exchange (as OpenSSH does) makes the server
    /// present a key we can verify instead of one that would look new.
    /// Revoked keys are left out since preferring them could only fail.
    pub fn known_algorithms(&self, host: &str, port: u16) -> Vec<Algorithm> {
        let name = lookup_name(host, port);
        let mut out: Vec<Algorithm> = Vec::new();
        for e in self.host_entries(&name) {
            if self.is_revoked(e.key.key_data()) {
                continue;
            }
            let algorithm = normalized_algorithm(e.key.key_data());
            if !out.contains(&algorithm) {
                out.push(algorithm);
            }
        }
        out
    }

    /// Plain (unmarked) entries whose host field matches `name`. CA lines
    /// are excluded on purpose: a CA key vouches for certificates, it is
    /// never itself the host's key.
    fn host_entries<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'s Entry> + 's {
        self.entries
            .iter()
            .filter(move |e| e.marker == Marker::None && e.hosts.matches(name))
    }

    /// The keys of `@cert-authority` lines whose patterns match `host:port`, with where
    /// each line is. A revoked CA is listed too: the caller must refuse it, not skip it.
    pub fn authorities(&self, host: &str, port: u16) -> Vec<(PathBuf, usize, &KeyData)> {
        let name = lookup_name(host, port);
        self.entries
            .iter()
            .filter(|e| e.marker == Marker::CertAuthority && e.hosts.matches(&name))
            .map(|e| (self.path(e), e.line, e.key.key_data()))
            .collect()
    }

    /// The `@revoked` line naming `key`, if any (for a CA, a host key or the key inside
    /// a certificate alike).
    pub fn revocation(&self, key: &KeyData) -> Option<(PathBuf, usize)> {
        self.entries
            .iter()
            .find(|e| e.marker == Marker::Revoked && e.key.key_data() == key)
            .map(|e| (self.path(e), e.line))
    }

    fn is_revoked(&self, key: &KeyData) -> bool {
        self.entries
            .iter()
            .any(|e| e.marker == Marker::Revoked && e.key.key_data() == key)
    }

    fn path(&self, entry: &Entry) -> PathBuf {
        self.files.get(entry.file).cloned().unwrap_or_default()
    }
}

impl HostField {
    fn matches(&self, name: &str) -> bool {
        match self {
            HostField::Patterns(list) => {
                match_pattern_list(name, list, true) == PatternMatch::Matched
            }
            HostField::Hashed { salt, hmac } => match HmacSha1::new_from_slice(salt) {
                Ok(mut mac) => {
                    mac.update(name.as_bytes());
                    // Constant-time comparison; cheap and removes any doubt.
                    mac.verify_slice(hmac).is_ok()
                }
                Err(_) => false,
            },
        }
    }
}

/// The key a host proves possession of. For a certificate that is the
/// certified key: a certificate no `@cert-authority` line vouches for is
/// judged as its plain key, as OpenSSH does (see [`super::host_cert`]).
fn plain_key_data(key: &PublicKey) -> &KeyData {
    match key.key_data().certificate() {
        Some(cert) => cert.public_key(),
        None => key.key_data(),
    }
}

/// RSA keys are one type whatever signature hash is negotiated, so the hash
/// must not make an RSA key look like a different type.
fn normalized_algorithm(key: &KeyData) -> Algorithm {
    match key.algorithm() {
        Algorithm::Rsa { .. } => Algorithm::Rsa { hash: None },
        other => other,
    }
}
