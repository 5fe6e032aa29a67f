//! Host-key verification against OpenSSH `known_hosts` files.
//!
//! Warren shares `~/.ssh/known_hosts` with OpenSSH, so it has to read every
//! line OpenSSH writes (hashed names, `[host]:port`, patterns, markers) and
//! write lines OpenSSH can find again. The file is parsed here rather than
//! with a library helper because the common ones split on single spaces and ignore
//! `@revoked`/`@cert-authority`, which would turn a revocation into a trust.

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

type ParsedLine = (Marker, HostField, PublicKey);

/// Parses one line; `Ok(None)` for blank and comment lines, `Err` with a
/// human-readable reason for lines OpenSSH would also reject.
///
/// Fields are separated by any run of spaces and tabs (OpenSSH's rule), and
/// a trailing `\r` is dropped so files edited on Windows still work.
fn parse_line(line: &str) -> Result<Option<ParsedLine>, String> {
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut fields = line.split([' ', '\t']).filter(|f| !f.is_empty());
    let Some(first) = fields.next() else {
        return Ok(None);
    };
    if first.starts_with('#') {
        return Ok(None);
    }
    let (marker, hosts) = match first {
        "@revoked" => (Marker::Revoked, fields.next()),
        "@cert-authority" => (Marker::CertAuthority, fields.next()),
        m if m.starts_with('@') => return Err(format!("unknown marker {m:?}")),
        hosts => (Marker::None, Some(hosts)),
    };
    let hosts = hosts.ok_or("marker without host patterns")?;
    let hosts = parse_host_field(hosts)?;
    let key_type = fields.next().ok_or("missing key type")?;
    let key_b64 = fields.next().ok_or("missing key data")?;
    // Anything after the key is a comment.
    let key = parse_key(key_type, key_b64)?;
    Ok(Some((marker, hosts, key)))
}

fn parse_host_field(field: &str) -> Result<HostField, String> {
    if !field.starts_with('|') {
        return Ok(HostField::Patterns(field.to_owned()));
    }
    let rest = field
        .strip_prefix(HASH_MAGIC)
        .ok_or("unsupported host hash format")?;
    let (salt, hmac) = rest.split_once('|').ok_or("hashed host without HMAC")?;
    let salt = LENIENT_B64
        .decode(salt)
        .map_err(|e| format!("bad hashed-host salt: {e}"))?;
    let hmac = LENIENT_B64
        .decode(hmac)
        .map_err(|e| format!("bad hashed-host HMAC: {e}"))?;
    if salt.len() != SHA1_LEN || hmac.len() != SHA1_LEN {
        return Err("hashed host salt or HMAC has the wrong length".into());
    }
    Ok(HostField::Hashed { salt, hmac })
}

fn parse_key(key_type: &str, key_b64: &str) -> Result<PublicKey, String> {
    let blob = LENIENT_B64
        .decode(key_b64)
        .map_err(|e| format!("bad base64 in {key_type} key: {e}"))?;
    let key = PublicKey::from_bytes(&blob).map_err(|e| format!("invalid {key_type} key: {e}"))?;
    if key.key_data().is_certificate() {
        return Err("certificates are not valid known_hosts keys".into());
    }
    // OpenSSH refuses a blob whose embedded type disagrees with the type
    // field; accepting it would make the line mean something else than it says.
    if key.algorithm().as_str() != key_type {
        return Err(format!(
            "key type field {key_type:?} does not match key data ({})",
            key.algorithm().as_str()
        ));
    }
    Ok(key)
}

/// The key a host proves possession of. For a certificate that is the
/// certified key: with no CA support yet we fall back to checking the plain
/// key, which is what OpenSSH does when no `@cert-authority` line applies.
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

/// Records `key` for `host:port` at the end of `path` and returns the line
/// written (without its newline).
///
/// The line uses OpenSSH's own layout (`name type base64`, no comment) so
/// `ssh`, `ssh-keygen -F` and `ssh-keygen -R` all handle it. With `hash`, the
/// name is stored as `|1|salt|hmac` like OpenSSH's `HashKnownHosts`, keeping
/// the list of visited hosts private. The directory is created 0700 and the
/// file 0600, matching `~/.ssh` conventions so OpenSSH's permission checks
/// stay happy.
pub fn append(
    path: &Path,
    host: &str,
    port: u16,
    key: &PublicKey,
    hash: bool,
) -> io::Result<String> {
    validate_host_for_append(host)?;
    let name = lookup_name(host, port);
    let key_data = plain_key_data(key);
    let blob = PublicKey::from(key_data.clone()).to_bytes().map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("cannot encode key: {e}"),
        )
    })?;
    let host_field = if hash { hash_name(&name)? } else { name };
    let line = format!(
        "{host_field} {} {}",
        normalized_algorithm(key_data).as_str(),
        STANDARD.encode(blob)
    );

    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(parent)?;
    }
    let mut options = fs::OpenOptions::new();
    options.read(true).append(true).create(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;

    // A last line without newline would otherwise be glued to ours, corrupting both.
    let mut buf = String::with_capacity(line.len() + 2);
    if file.metadata()?.len() > 0 {
        file.seek(SeekFrom::End(-1))?;
        let mut last = [0u8; 1];
        file.read_exact(&mut last)?;
        if last[0] != b'\n' {
            buf.push('\n');
        }
    }
    buf.push_str(&line);
    buf.push('\n');
    // One write so concurrent appenders (O_APPEND) cannot interleave within a line.
    file.write_all(buf.as_bytes())?;
    Ok(line)
}

/// A host name is written verbatim into the file, so anything that could
/// start a new line, split fields, or read back as a pattern, marker,
/// comment or hash would make the entry match other hosts (or none).
fn validate_host_for_append(host: &str) -> io::Result<()> {
    let bad = host.is_empty()
        || host.bytes().any(|b| {
            b.is_ascii_whitespace() || b.is_ascii_control() || matches!(b, b',' | b'*' | b'?')
        })
        || host.starts_with(['!', '#', '@', '|']);
    if bad {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("refusing to record a host key for the unusual host name {host:?}"),
        ));
    }
    Ok(())
}

fn hash_name(name: &str) -> io::Result<String> {
    let mut salt = [0u8; SHA1_LEN];
    rand::fill(&mut salt[..]);
    let mut mac = HmacSha1::new_from_slice(&salt)
        .map_err(|e| io::Error::other(format!("HMAC-SHA1 setup failed: {e}")))?;
    mac.update(name.as_bytes());
    let hmac = mac.finalize().into_bytes();
    Ok(format!(
        "{HASH_MAGIC}{}|{}",
        STANDARD.encode(salt),
        STANDARD.encode(hmac)
    ))
}

/// The text shown when a host presents a different key than recorded,
/// modeled on OpenSSH's so users recognise it (and search engines find it),
/// with both fingerprints so the user can compare against an out-of-band
/// source and the exact command to remove the stale entry.
pub fn changed_key_warning(
    host: &str,
    port: u16,
    presented: &PublicKey,
    file: &Path,
    line: usize,
    known: &PublicKey,
) -> String {
    let name = lookup_name(host, port);
    let presented = plain_key_data(presented);
    let known = plain_key_data(known);
    let presented_type = key_type_label(presented);
    let known_type = key_type_label(known);
    let presented_fp = presented.fingerprint(HashAlg::Sha256);
    let known_fp = known.fingerprint(HashAlg::Sha256);
    let file_shown = file.display();
    let file_quoted = shell_quote(&file.to_string_lossy());
    let name_quoted = shell_quote(&name);
    format!(
        "@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
         @    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @\n\
         @@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@\n\
         IT IS POSSIBLE THAT SOMEONE IS DOING SOMETHING NASTY!\n\
         Someone could be eavesdropping on you right now (man-in-the-middle attack)!\n\
         It is also possible that a host key has just been changed.\n\
         The fingerprint for the {presented_type} key sent by the remote host {name} is\n\
         {presented_fp}.\n\
         The {known_type} key recorded for it has fingerprint\n\
         {known_fp}.\n\
         Please contact your system administrator.\n\
         Add correct host key in {file_shown} to get rid of this message.\n\
         Offending {known_type} key in {file_shown}:{line}\n  \
         remove with:\n  \
         ssh-keygen -f {file_quoted} -R {name_quoted}"
    )
}

/// OpenSSH's short type names (`sshkey_type()`), used in its messages.
fn key_type_label(key: &KeyData) -> String {
    match key.algorithm() {
        Algorithm::Dsa => "DSA".into(),
        Algorithm::Ecdsa { .. } => "ECDSA".into(),
        Algorithm::Ed25519 => "ED25519".into(),
        Algorithm::Rsa { .. } => "RSA".into(),
        Algorithm::SkEcdsaSha2NistP256 => "ECDSA-SK".into(),
        Algorithm::SkEd25519 => "ED25519-SK".into(),
        other => other.as_str().to_owned(),
    }
}

/// Quotes for POSIX shells so the suggested command can be pasted as is;
/// `[host]:port` would otherwise be a glob.
fn shell_quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@%+=:,./_-".contains(&b));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use tempfile::TempDir;
    use warren_ssh::ssh_key::EcdsaCurve;

    const ED_A: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICqj/RGyzBMZbvGgRE4D4S/433xg85bKxkQ9HlFI+1lS ka";
    const ED_B: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINONN7a4IAInoPpxcBBDYal4Fv0CnYySC2LlW/Yr9OHg kb";
    const ED_C: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAgOIUXI2uLd3QIl0SKrX++vlOYZtis/Tn9CcwwNuz7 kc";
    const EC_A: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBOUSY07/4Vj7wffemUWTl/2Upbo8Kn4U+LfVO5GDtQkjsvEkBWhT04G9NTvp41lAptaAAOfeJ7DEtXpY3sRPmv4= ec";
    const RSA_A: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDAqInjWr/9nvibOUnolYxQrkAt6zX+GVdLxQslrInCXhTaSI3CUei6cvHm4Y1vBLfokbaYkCZw9N1TOXkcI//hpgo2DNz8/ihxPx0GyAA5Bxwyrw693bU5YpO/roJ2hgDwueCQtqcG1m6ssr2D7EceS3ES1T/SFfRYAlvQDDrAkQ== rsa";

    const P256: Algorithm = Algorithm::Ecdsa {
        curve: EcdsaCurve::NistP256,
    };

    fn key(line: &str) -> PublicKey {
        PublicKey::from_openssh(line).expect("test key parses")
    }

    /// The key as stored in a status: known_hosts lines carry no comment.
    fn bare(key: &PublicKey) -> PublicKey {
        PublicKey::from(key.key_data().clone())
    }

    /// `type base64` without the comment, as it appears in known_hosts.
    fn k(line: &str) -> String {
        line.split(' ').take(2).collect::<Vec<_>>().join(" ")
    }

    fn write_known(text: &str) -> (TempDir, PathBuf, KnownHosts) {
        let dir = TempDir::new().expect("tempdir");
        let path = dir.path().join("known_hosts");
        fs::write(&path, text).expect("write");
        let known = KnownHosts::load(std::slice::from_ref(&path));
        (dir, path, known)
    }

    fn known(path: &Path, line: usize) -> HostKeyStatus {
        HostKeyStatus::Known {
            file: path.to_path_buf(),
            line,
        }
    }

    fn ssh_keygen(args: &[&str]) -> std::process::Output {
        Command::new("ssh-keygen")
            .args(args)
            .output()
            .expect("ssh-keygen must be installed to run these tests")
    }

    fn generate_key(dir: &Path, name: &str, key_type: &str) -> PublicKey {
        let private = dir.join(name);
        let private = private.to_str().expect("utf-8 temp path");
        let out = ssh_keygen(&["-q", "-t", key_type, "-N", "", "-C", name, "-f", private]);
        assert!(out.status.success(), "ssh-keygen failed: {out:?}");
        PublicKey::read_openssh_file(Path::new(&format!("{private}.pub"))).expect("read .pub")
    }

    #[test]
    fn lookup_names_follow_openssh() {
        let cases: &[(&str, u16, &str)] = &[
            ("example.com", 22, "example.com"),
            ("example.com", 2222, "[example.com]:2222"),
            ("127.0.0.1", 2222, "[127.0.0.1]:2222"),
            ("::1", 22, "::1"),
            ("::1", 8022, "[::1]:8022"),
            ("Example.COM", 22, "example.com"),
        ];
        for &(host, port, want) in cases {
            assert_eq!(lookup_name(host, port), want);
        }
    }

    #[test]
    fn plain_entries_known_changed_unknown() {
        let (_d, path, kh) = write_known(&format!("example.com {}\n", k(ED_A)));
        assert_eq!(kh.check("example.com", 22, &key(ED_A)), known(&path, 1));
        // Host names are case-insensitive, comments are irrelevant.
        assert_eq!(kh.check("EXAMPLE.com", 22, &key(ED_A)), known(&path, 1));
        assert_eq!(
            kh.check("example.com", 22, &key(ED_B)),
            HostKeyStatus::Changed {
                file: path.clone(),
                line: 1,
                known: bare(&key(ED_A))
            }
        );
        assert_eq!(
            kh.check("other.com", 22, &key(ED_A)),
            HostKeyStatus::Unknown
        );
        assert_eq!(
            kh.check("example.com", 2222, &key(ED_A)),
            HostKeyStatus::Unknown
        );
    }

    #[test]
    fn pattern_table() {
        let text = format!(
            "*.example.com,10.0.0.? {a}\n\
             !bad,*.corp.net {a}\n\
             !bad.example.org,*.example.org {a}\n\
             [*.ports.net]:* {a}\n\
             alpha,BETA {a}\n",
            a = k(ED_A)
        );
        let (_d, _path, kh) = write_known(&text);
        let cases: &[(&str, u16, bool)] = &[
            ("www.example.com", 22, true),
            ("example.com", 22, false),
            ("10.0.0.7", 22, true),
            ("10.0.0.17", 22, false),
            ("x.corp.net", 22, true),
            ("bad", 22, false),
            ("good.example.org", 22, true),
            ("bad.example.org", 22, false),
            ("BAD.example.org", 22, false),
            ("a.ports.net", 2222, true),
            ("a.ports.net", 22, false),
            ("alpha", 22, true),
            ("beta", 22, true),
            ("gamma", 22, false),
            ("www.example.com", 2222, false),
        ];
        for &(host, port, want) in cases {
            let status = kh.check(host, port, &key(ED_A));
            assert_eq!(
                matches!(status, HostKeyStatus::Known { .. }),
                want,
                "{host}:{port} -> {status:?}"
            );
        }
    }

    #[test]
    fn bracketed_port_entries() {
        let text = format!(
            "[host]:2222 {}\nhost {}\n[127.0.0.1]:2222 {}\n",
            k(ED_A),
            k(ED_B),
            k(EC_A)
        );
        let (_d, path, kh) = write_known(&text);
        assert_eq!(kh.check("host", 2222, &key(ED_A)), known(&path, 1));
        assert_eq!(kh.check("host", 22, &key(ED_B)), known(&path, 2));
        assert!(matches!(
            kh.check("host", 2222, &key(ED_B)),
            HostKeyStatus::Changed { line: 1, .. }
        ));
        assert!(matches!(
            kh.check("host", 22, &key(ED_A)),
            HostKeyStatus::Changed { line: 2, .. }
        ));
        assert_eq!(kh.check("127.0.0.1", 2222, &key(EC_A)), known(&path, 3));
        assert_eq!(
            kh.check("127.0.0.1", 22, &key(EC_A)),
            HostKeyStatus::Unknown
        );
        assert_eq!(kh.check("host", 2223, &key(ED_A)), HostKeyStatus::Unknown);
    }

    #[test]
    fn hashed_entries_from_ssh_keygen() {
        let text = format!(
            "[127.0.0.1]:2222 {}\nfoo.example.com,bar {}\n",
            k(ED_A),
            k(ED_B)
        );
        let dir = TempDir::new().expect("tempdir");
        let path = dir.path().join("known_hosts");
        fs::write(&path, text).expect("write");
        let out = ssh_keygen(&["-H", "-f", path.to_str().expect("utf-8")]);
        assert!(out.status.success(), "ssh-keygen -H failed: {out:?}");
        let hashed = fs::read_to_string(&path).expect("read");
        assert_eq!(hashed.lines().count(), 3, "{hashed}");
        assert!(hashed.lines().all(|l| l.starts_with("|1|")), "{hashed}");

        let kh = KnownHosts::load(std::slice::from_ref(&path));
        assert_eq!(kh.check("127.0.0.1", 2222, &key(ED_A)), known(&path, 1));
        assert_eq!(kh.check("foo.example.com", 22, &key(ED_B)), known(&path, 2));
        assert_eq!(kh.check("FOO.example.com", 22, &key(ED_B)), known(&path, 2));
        assert_eq!(kh.check("bar", 22, &key(ED_B)), known(&path, 3));
        assert!(matches!(
            kh.check("bar", 22, &key(ED_C)),
            HostKeyStatus::Changed { line: 3, .. }
        ));
        assert_eq!(
            kh.check("127.0.0.1", 22, &key(ED_A)),
            HostKeyStatus::Unknown
        );
        assert_eq!(kh.check("baz", 22, &key(ED_B)), HostKeyStatus::Unknown);
        assert_eq!(kh.known_algorithms("bar", 22), vec![Algorithm::Ed25519]);
    }

    #[test]
    fn revoked_key_wins_regardless_of_host() {
        let text = format!(
            "host {a}\n@revoked some-other-host {a}\nhost {b}\n@revoked\t* {c}\n",
            a = k(ED_A),
            b = k(ED_B),
            c = k(EC_A)
        );
        let (_d, path, kh) = write_known(&text);
        let revoked = |line| HostKeyStatus::Revoked {
            file: path.clone(),
            line,
        };
        assert_eq!(kh.check("host", 22, &key(ED_A)), revoked(2));
        assert_eq!(kh.check("unrelated", 22, &key(ED_A)), revoked(2));
        assert_eq!(kh.check("anything", 2222, &key(EC_A)), revoked(4));
        assert_eq!(kh.check("host", 22, &key(ED_B)), known(&path, 3));
        // Revoked lines are not host keys for the hosts they name.
        assert_eq!(
            kh.check("some-other-host", 22, &key(ED_B)),
            HostKeyStatus::Unknown
        );
        assert_eq!(kh.known_algorithms("host", 22), vec![Algorithm::Ed25519]);
    }

    #[test]
    fn cert_authority_is_never_a_host_key() {
        let text = format!("@cert-authority host,*.example.com {}\n", k(ED_A));
        let (_d, path, kh) = write_known(&text);
        assert_eq!(kh.check("host", 22, &key(ED_A)), HostKeyStatus::Unknown);
        assert_eq!(
            kh.check("a.example.com", 22, &key(ED_A)),
            HostKeyStatus::Unknown
        );
        assert!(kh.known_algorithms("host", 22).is_empty());

        // A CA line holding the presented key does not rescue a mismatch.
        let mut text2 = text.clone();
        text2.push_str(&format!("host {}\n", k(ED_B)));
        fs::write(&path, text2).expect("write");
        let kh = KnownHosts::load(std::slice::from_ref(&path));
        assert!(matches!(
            kh.check("host", 22, &key(ED_A)),
            HostKeyStatus::Changed { line: 2, .. }
        ));
    }

    #[test]
    fn other_type_known_is_not_unknown() {
        let text = format!("host {}\nhost {}\n", k(EC_A), k(RSA_A));
        let (_d, path, kh) = write_known(&text);
        assert_eq!(
            kh.check("host", 22, &key(ED_A)),
            HostKeyStatus::OtherTypeKnown {
                known: vec![
                    (path.clone(), 1, P256),
                    (path.clone(), 2, Algorithm::Rsa { hash: None })
                ]
            }
        );
        assert_eq!(kh.check("other", 22, &key(ED_A)), HostKeyStatus::Unknown);
    }

    #[test]
    fn same_key_anywhere_beats_a_mismatch() {
        let text = format!("host {}\n*.net,host {}\n", k(ED_A), k(ED_B));
        let (_d, path, kh) = write_known(&text);
        assert_eq!(kh.check("host", 22, &key(ED_B)), known(&path, 2));
        assert_eq!(
            kh.check("host", 22, &key(ED_C)),
            HostKeyStatus::Changed {
                file: path.clone(),
                line: 1,
                known: bare(&key(ED_A))
            }
        );
    }

    #[test]
    fn known_algorithms_in_file_order_deduplicated() {
        let text = format!(
            "host {ec}\nhost {a}\n@cert-authority host {rsa}\nhost {b}\nhost {rsa}\nother {a}\n",
            ec = k(EC_A),
            a = k(ED_A),
            b = k(ED_B),
            rsa = k(RSA_A)
        );
        let (_d, _path, kh) = write_known(&text);
        assert_eq!(
            kh.known_algorithms("host", 22),
            vec![P256, Algorithm::Ed25519, Algorithm::Rsa { hash: None }]
        );
        assert!(kh.known_algorithms("nobody", 22).is_empty());
    }

    #[test]
    fn tolerates_whitespace_comments_and_garbage() {
        let ed_a_b64 = k(ED_A).split(' ').nth(1).unwrap_or_default().to_owned();
        let ec_b64 = k(EC_A).split(' ').nth(1).unwrap_or_default().to_owned();
        let ec_unpadded = ec_b64.trim_end_matches('=').to_owned();
        assert_ne!(ec_b64, ec_unpadded);
        let mut text = String::new();
        let lines = [
            "# a comment".to_owned(),
            String::new(),
            "   \t ".to_owned(),
            "garbage".to_owned(),
            "host".to_owned(),
            "host ssh-ed25519".to_owned(),
            "host ssh-ed25519 !!!notbase64!!!".to_owned(),
            "host ssh-ed25519 AAAA".to_owned(),
            // Type field lies about the blob.
            format!("host ssh-rsa {ed_a_b64}"),
            format!("@bogus host ssh-ed25519 {ed_a_b64}"),
            "@revoked".to_owned(),
            format!("|1|notbase64|xx ssh-ed25519 {ed_a_b64}"),
            format!("|1|AAAA|AAAA ssh-ed25519 {ed_a_b64}"),
            format!("|2|AiSCl/yt6LVEFUDmR/UutfBPlBY=|GXsTyn7x6VmZ4upCfPsjuPuG2X8= ssh-ed25519 {ed_a_b64}"),
            format!("|1|AiSCl/yt6LVEFUDmR/UutfBPlBY= ssh-ed25519 {ed_a_b64}"),
            // Certificates are not plain host keys.
            "host ssh-ed25519-cert-v01@openssh.com AAAAIHNzaC1lZDI1NTE5LWNlcnQtdjAxQG9wZW5zc2guY29t".to_owned(),
            // Valid: tabs, several spaces, trailing comment with spaces, CRLF.
            format!("\t host,alias\t\tssh-ed25519   {ed_a_b64}   my comment\there\r"),
            format!("  # indented comment {ed_a_b64}"),
            format!("unpadded ecdsa-sha2-nistp256 {ec_unpadded}"),
        ];
        for l in &lines {
            text.push_str(l);
            text.push('\n');
        }
        let dir = TempDir::new().expect("tempdir");
        let path = dir.path().join("known_hosts");
        let mut bytes = text.into_bytes();
        bytes.extend_from_slice(b"host ssh-ed25519 \xff\xfe\n");
        bytes.extend_from_slice(format!("last {ed_a_b64}").as_bytes()); // no newline, key type missing
        fs::write(&path, bytes).expect("write");
        let kh = KnownHosts::load(std::slice::from_ref(&path));

        assert_eq!(kh.entries.len(), 2, "{:#?}", kh.entries);
        assert_eq!(kh.check("host", 22, &key(ED_A)), known(&path, 17));
        assert_eq!(kh.check("alias", 22, &key(ED_A)), known(&path, 17));
        assert_eq!(kh.check("unpadded", 22, &key(EC_A)), known(&path, 19));
    }

    #[test]
    fn files_in_order_and_missing_files_ignored() {
        let dir = TempDir::new().expect("tempdir");
        let user = dir.path().join("user_known_hosts");
        let global = dir.path().join("global_known_hosts");
        let missing = dir.path().join("nope").join("known_hosts");
        fs::write(&user, format!("\nhost {}\n", k(ED_A))).expect("write");
        fs::write(&global, format!("host {}\nhost {}\n", k(ED_A), k(EC_A))).expect("write");
        let kh = KnownHosts::load(&[
            missing.clone(),
            user.clone(),
            global.clone(),
            dir.path().to_path_buf(),
        ]);
        assert_eq!(kh.check("host", 22, &key(ED_A)), known(&user, 2));
        assert_eq!(kh.check("host", 22, &key(EC_A)), known(&global, 2));
        assert!(matches!(
            kh.check("host", 22, &key(ED_B)),
            HostKeyStatus::Changed { ref file, line: 2, .. } if *file == user
        ));
        assert_eq!(
            KnownHosts::load(&[missing]).check("host", 22, &key(ED_A)),
            HostKeyStatus::Unknown
        );
    }

    #[test]
    fn append_is_found_by_ssh_keygen_and_by_check() {
        let dir = TempDir::new().expect("tempdir");
        let server = generate_key(dir.path(), "server", "ed25519");
        let impostor = generate_key(dir.path(), "impostor", "ed25519");
        let server_ec = generate_key(dir.path(), "server_ec", "ecdsa");
        for hash in [false, true] {
            let ssh_dir = dir.path().join(format!("home-{hash}")).join(".ssh");
            let path = ssh_dir.join("known_hosts");
            let line = append(&path, "127.0.0.1", 2222, &server, hash).expect("append");
            let line2 = append(&path, "127.0.0.1", 2222, &server_ec, hash).expect("append");
            assert!(!line.contains('\n'));
            assert_eq!(line.starts_with("|1|"), hash, "{line}");
            if !hash {
                assert!(
                    line.starts_with("[127.0.0.1]:2222 ssh-ed25519 AAAA"),
                    "{line}"
                );
                assert!(
                    line2.starts_with("[127.0.0.1]:2222 ecdsa-sha2-nistp256 AAAA"),
                    "{line2}"
                );
            }
            assert_eq!(
                fs::read_to_string(&path).expect("read"),
                format!("{line}\n{line2}\n")
            );

            #[cfg(unix)]
            {
                use std::os::unix::fs::PermissionsExt;
                let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
                assert_eq!(mode(&path), 0o600);
                assert_eq!(mode(&ssh_dir), 0o700);
            }

            let out = ssh_keygen(&[
                "-F",
                "[127.0.0.1]:2222",
                "-f",
                path.to_str().expect("utf-8"),
            ]);
            assert!(out.status.success(), "ssh-keygen -F failed: {out:?}");
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(stdout.contains("found: line 1"), "{stdout}");
            assert!(stdout.contains("found: line 2"), "{stdout}");
            let out = ssh_keygen(&["-F", "127.0.0.1", "-f", path.to_str().expect("utf-8")]);
            assert!(!out.status.success(), "port 22 must not match: {out:?}");

            let kh = KnownHosts::load(std::slice::from_ref(&path));
            assert_eq!(kh.check("127.0.0.1", 2222, &server), known(&path, 1));
            assert_eq!(kh.check("127.0.0.1", 2222, &server_ec), known(&path, 2));
            assert_eq!(
                kh.check("127.0.0.1", 2222, &impostor),
                HostKeyStatus::Changed {
                    file: path.clone(),
                    line: 1,
                    known: bare(&server)
                }
            );
            assert_eq!(kh.check("127.0.0.1", 22, &server), HostKeyStatus::Unknown);
            assert_eq!(
                kh.known_algorithms("127.0.0.1", 2222),
                vec![Algorithm::Ed25519, P256]
            );
        }
    }

    #[test]
    fn append_repairs_missing_final_newline() {
        let dir = TempDir::new().expect("tempdir");
        let path = dir.path().join("known_hosts");
        let first = format!("old.example.com {}", k(ED_B));
        fs::write(&path, &first).expect("write");
        let line = append(&path, "new.example.com", 22, &key(ED_A), false).expect("append");
        assert_eq!(
            fs::read_to_string(&path).expect("read"),
            format!("{first}\n{line}\n")
        );
        let out = ssh_keygen(&["-F", "new.example.com", "-f", path.to_str().expect("utf-8")]);
        assert!(out.status.success(), "{out:?}");
        assert!(String::from_utf8_lossy(&out.stdout).contains("found: line 2"));
        let kh = KnownHosts::load(std::slice::from_ref(&path));
        assert_eq!(kh.check("old.example.com", 22, &key(ED_B)), known(&path, 1));
        assert_eq!(kh.check("new.example.com", 22, &key(ED_A)), known(&path, 2));
    }

    #[test]
    fn append_rejects_hosts_that_would_corrupt_the_file() {
        let dir = TempDir::new().expect("tempdir");
        let path = dir.path().join("known_hosts");
        for host in [
            "",
            "a b",
            "a\tb",
            "evil\n* ssh-ed25519 AAAA",
            "a,b",
            "*",
            "h?st",
            "!host",
            "#host",
            "@revoked",
            "|1|x|y",
        ] {
            let err = append(&path, host, 22, &key(ED_A), false).expect_err(host);
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        }
        assert!(!path.exists());
    }

    #[test]
    fn presented_certificate_is_checked_by_its_plain_key() {
        let dir = TempDir::new().expect("tempdir");
        let host_key = generate_key(dir.path(), "host", "ed25519");
        generate_key(dir.path(), "ca", "ed25519");
        let ca = dir.path().join("ca");
        let host_pub = dir.path().join("host.pub");
        let out = ssh_keygen(&[
            "-q",
            "-s",
            ca.to_str().expect("utf-8"),
            "-h",
            "-I",
            "host",
            "-n",
            "host",
            host_pub.to_str().expect("utf-8"),
        ]);
        assert!(out.status.success(), "{out:?}");
        let cert_text = fs::read_to_string(dir.path().join("host-cert.pub")).expect("read cert");
        let cert_b64 = cert_text.split(' ').nth(1).expect("cert base64 field");
        let cert = PublicKey::from_bytes(&STANDARD.decode(cert_b64).expect("cert base64"))
            .expect("parse cert");
        assert!(cert.key_data().is_certificate());

        let path = dir.path().join("known_hosts");
        append(&path, "host", 22, &cert, false).expect("append");
        let kh = KnownHosts::load(std::slice::from_ref(&path));
        assert_eq!(kh.check("host", 22, &host_key), known(&path, 1));
        assert_eq!(kh.check("host", 22, &cert), known(&path, 1));
        // The certificate itself in known_hosts is not a valid line.
        fs::write(&path, format!("host {cert_text}")).expect("write");
        let kh = KnownHosts::load(std::slice::from_ref(&path));
        assert_eq!(kh.check("host", 22, &host_key), HostKeyStatus::Unknown);
    }

    #[test]
    fn changed_key_warning_names_keys_file_and_fix() {
        let presented = key(ED_B);
        let recorded = key(ED_A);
        let file = Path::new("/home/u/.ssh/known_hosts");
        let text = changed_key_warning("127.0.0.1", 2222, &presented, file, 3, &recorded);
        let presented_fp = presented.fingerprint(HashAlg::Sha256).to_string();
        let recorded_fp = recorded.fingerprint(HashAlg::Sha256).to_string();
        assert!(presented_fp.starts_with("SHA256:"));
        assert_ne!(presented_fp, recorded_fp);
        for needle in [
            "WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!",
            presented_fp.as_str(),
            recorded_fp.as_str(),
            "Offending ED25519 key in /home/u/.ssh/known_hosts:3",
            "ssh-keygen -f /home/u/.ssh/known_hosts -R '[127.0.0.1]:2222'",
            "remote host [127.0.0.1]:2222",
        ] {
            assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
        }
        assert!(text.find(&presented_fp) < text.find(&recorded_fp));

        let text = changed_key_warning(
            "example.com",
            22,
            &presented,
            Path::new("/tmp/it's"),
            1,
            &recorded,
        );
        assert!(
            text.contains(r"ssh-keygen -f '/tmp/it'\''s' -R example.com"),
            "{text}"
        );
    }
}
