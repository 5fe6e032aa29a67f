//! Reading known_hosts lines as OpenSSH does.

use super::*;

pub(super) type ParsedLine = (Marker, HostField, PublicKey);

/// Parses one line; `Ok(None)` for blank and comment lines, `Err` with a
/// human-readable reason for lines OpenSSH would also reject.
///
/// Fields are separated by any run of spaces and tabs (OpenSSH's rule), and
/// a trailing `\r` is dropped so files edited on Windows still work.
pub(super) fn parse_line(line: &str) -> Result<Option<ParsedLine>, String> {
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
