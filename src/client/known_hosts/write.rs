//! Recording host keys in lines OpenSSH reads back, and the changed-key warning.

use super::*;

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
pub(super) fn validate_host_for_append(host: &str) -> io::Result<()> {
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

pub(super) fn hash_name(name: &str) -> io::Result<String> {
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
