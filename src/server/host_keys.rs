//! Loads the server's host keys, generating any that are missing on first start.
//!
//! Generating on first start (as distribution `sshd` packages do) means a
//! fresh install works without a setup step, while an existing key is never
//! replaced: a changed host key makes every client's known_hosts check fail.

use std::fmt;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use warren_ssh::ssh_key::private::{EcdsaKeypair, Ed25519Keypair, KeypairData, RsaKeypair};
use warren_ssh::ssh_key::{Algorithm, EcdsaCurve, HashAlg, LineEnding, PrivateKey};

/// RSA size for generated keys: OpenSSH's default, and what NIST deems
/// adequate past 2030.
const RSA_BITS: usize = 3072;

/// Comment written into generated keys, so a stray `.pub` says where it came from.
const COMMENT: &str = "warrend host key";

/// A host key ready to hand to the SSH engine.
#[derive(Clone)]
pub struct HostKey {
    /// The key itself.
    pub key: PrivateKey,
    /// Where it was loaded from or written to.
    pub path: PathBuf,
    /// `SHA256:...`, as `ssh-keygen -l` and clients' host-key prompts show it.
    pub fingerprint: String,
    /// Whether this start created it, worth telling the operator since
    /// clients will see a new host key.
    pub generated: bool,
}

// By hand, so that no secret material can reach a log through `{:?}`.
impl fmt::Debug for HostKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostKey")
            .field("algorithm", &self.key.algorithm().as_str())
            .field("path", &self.path)
            .field("fingerprint", &self.fingerprint)
            .field("generated", &self.generated)
            .finish()
    }
}

/// Loads each key in `paths`, generating the missing ones (the algorithm is
/// read from the file name, as in `ssh_host_ed25519_key`).
///
/// Refuses keys that others can read, like sshd: a leaked host key lets
/// anyone impersonate the bastion. Refuses encrypted keys too, since a
/// daemon has nobody to ask for the passphrase.
pub fn load_or_generate(paths: &[PathBuf], state_dir: &Path) -> anyhow::Result<Vec<HostKey>> {
    paths
        .iter()
        .map(|path| load_or_generate_one(path, state_dir))
        .collect()
}

/// What a start would find at one host key path, found without writing anything.
pub enum Inspected {
    /// A usable key.
    Present(Box<HostKey>),
    /// Missing: a start generates a key of this algorithm there.
    WouldGenerate(PathBuf, String),
}

/// `warrend -t`: loads each existing key with the checks a start makes (permissions,
/// format, no passphrase) and names the missing ones a start would generate, without
/// creating a file or directory.
pub fn inspect(paths: &[PathBuf]) -> anyhow::Result<Vec<Inspected>> {
    paths
        .iter()
        .map(|path| match fs::metadata(path) {
            Ok(meta) => load(path, &meta).map(|k| Inspected::Present(Box::new(k))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let algorithm = algorithm_for(path)?;
                Ok(Inspected::WouldGenerate(path.clone(), label(algorithm)))
            }
            Err(e) => Err(e).with_context(|| format!("cannot read host key {}", path.display())),
        })
        .collect()
}

/// One line per key, `ED25519 SHA256:... /path`, for the startup banner, so
/// operators can compare what clients are shown.
pub fn describe(keys: &[HostKey]) -> Vec<String> {
    keys.iter()
        .map(|k| {
            format!(
                "{} {} {}",
                label(k.key.algorithm()),
                k.fingerprint,
                k.path.display()
            )
        })
        .collect()
}

fn label(algorithm: Algorithm) -> String {
    match algorithm {
        Algorithm::Ed25519 => "ED25519".to_owned(),
        Algorithm::Rsa { .. } => "RSA".to_owned(),
        Algorithm::Ecdsa { .. } => "ECDSA".to_owned(),
        other => other.as_str().to_uppercase(),
    }
}

fn load_or_generate_one(path: &Path, state_dir: &Path) -> anyhow::Result<HostKey> {
    match fs::metadata(path) {
        Ok(meta) => load(path, &meta),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => generate(path, state_dir),
        Err(e) => Err(e).with_context(|| format!("cannot read host key {}", path.display())),
    }
}

fn load(path: &Path, meta: &fs::Metadata) -> anyhow::Result<HostKey> {
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        bail!(
            "UNPROTECTED PRIVATE KEY FILE: permissions {mode:04o} for host key {} are too open; \
             it must not be accessible by others (chmod 600)",
            path.display()
        );
    }
    let text = fs::read_to_string(path)
        .with_context(|| format!("cannot read host key {}", path.display()))?;
    // ssh-key's error is its own cause too: as a context chain it would print twice.
    let key = warren_ssh::openssh_key::from_openssh(&text)
        .map_err(|e| anyhow::anyhow!("cannot parse host key {}: {e}", path.display()))?;
    if key.is_encrypted() {
        bail!(
            "host key {} is encrypted with a passphrase; warrend cannot ask for one \
             (remove it with `ssh-keygen -p -N '' -f {}`)",
            path.display(),
            path.display()
        );
    }
    Ok(host_key(key, path, false))
}

fn host_key(key: PrivateKey, path: &Path, generated: bool) -> HostKey {
    let fingerprint = key.public_key().fingerprint(HashAlg::Sha256).to_string();
    HostKey {
        key,
        path: path.to_owned(),
        fingerprint,
        generated,
    }
}

/// The algorithm a missing key file should get, from its name.
fn algorithm_for(path: &Path) -> anyhow::Result<Algorithm> {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let candidates = [
        ("ed25519", Algorithm::Ed25519),
        (
            "ecdsa",
            Algorithm::Ecdsa {
                curve: EcdsaCurve::NistP256,
            },
        ),
        ("rsa", Algorithm::Rsa { hash: None }),
    ];
    let mut found = candidates
        .into_iter()
        .filter(|(word, _)| name.contains(word));
    match (found.next(), found.next()) {
        (Some((_, algorithm)), None) => Ok(algorithm),
        _ => bail!(
            "host key {} does not exist, and its name does not say which key to generate: \
             it must contain exactly one of `ed25519`, `ecdsa` or `rsa`",
            path.display()
        ),
    }
}

fn generate(path: &Path, state_dir: &Path) -> anyhow::Result<HostKey> {
    let algorithm = algorithm_for(path)?;
    create_private_dir(state_dir)?;
    if let Some(parent) = path.parent()
        && parent.starts_with(state_dir)
    {
        create_private_dir(parent)?;
    }

    let mut rng = rand::rng();
    let keypair = match algorithm {
        Algorithm::Ed25519 => KeypairData::from(Ed25519Keypair::random(&mut rng)),
        Algorithm::Ecdsa { curve } => KeypairData::from(EcdsaKeypair::random(&mut rng, curve)?),
        Algorithm::Rsa { .. } => KeypairData::from(RsaKeypair::random(&mut rng, RSA_BITS)?),
        other => bail!("cannot generate {other} host keys"),
    };
    let key = PrivateKey::new(keypair, COMMENT)
        .with_context(|| format!("cannot build host key {}", path.display()))?;

    let private = key
        .to_openssh(LineEnding::LF)
        .with_context(|| format!("cannot encode host key {}", path.display()))?;
    write_new(path, private.as_bytes(), 0o600)?;

    let public = key
        .public_key()
        .to_openssh()
        .with_context(|| format!("cannot encode public host key {}", path.display()))?;
    let pub_path = pub_path(path);
    write_new(&pub_path, format!("{public}\n").as_bytes(), 0o644)?;
    // umask may have narrowed it; the public half is meant to be readable.
    fs::set_permissions(&pub_path, fs::Permissions::from_mode(0o644))
        .with_context(|| format!("cannot set the mode of {}", pub_path.display()))?;

    tracing::info!(path = %path.display(), "generated host key");
    Ok(host_key(key, path, true))
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("cannot create directory {}", dir.display()))
}

fn pub_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// Writes `bytes` to `path` via a temporary file in the same directory,
/// created with `mode` from the start (no moment where a private key is
/// readable by others) and renamed into place once complete, so a crash
/// never leaves a truncated key that would stop the next start.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let mut tmp_name = path.as_os_str().to_owned();
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = PathBuf::from(tmp_name);
    // A leftover from a crashed start with our pid; we are its only writer.
    let _ = fs::remove_file(&tmp);

    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    /// `ssh-keygen -l -f` output: `BITS SHA256:... COMMENT (TYPE)`.
    fn keygen_fingerprint(path: &Path) -> String {
        let out = Command::new("ssh-keygen")
            .arg("-l")
            .arg("-f")
            .arg(path)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn generate_and_check(name: &str, bits: &str, label: &str) {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let path = state.join(name);

        let keys = load_or_generate(std::slice::from_ref(&path), &state).unwrap();
        assert_eq!(keys.len(), 1);
        let key = &keys[0];
        assert!(key.generated);
        assert_eq!(key.path, path);
        assert!(
            key.fingerprint.starts_with("SHA256:"),
            "{}",
            key.fingerprint
        );
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&pub_path(&path)), 0o644);

        let listing = keygen_fingerprint(&pub_path(&path));
        assert!(
            listing.starts_with(&format!("{bits} {} ", key.fingerprint)),
            "{listing}"
        );
        assert!(
            listing.trim_end().ends_with(&format!("({label})")),
            "{listing}"
        );
        assert!(keygen_fingerprint(&path).contains(&key.fingerprint));

        let again = load_or_generate(std::slice::from_ref(&path), &state).unwrap();
        assert!(!again[0].generated);
        assert_eq!(again[0].fingerprint, key.fingerprint);

        assert_eq!(
            describe(&again),
            [format!("{label} {} {}", key.fingerprint, path.display())]
        );
    }

    #[test]
    fn generates_ed25519_and_reloads_it() {
        generate_and_check("ssh_host_ed25519_key", "256", "ED25519");
    }

    #[test]
    fn generates_ecdsa_p256() {
        generate_and_check("ssh_host_ecdsa_key", "256", "ECDSA");
    }

    #[test]
    fn generates_rsa_3072() {
        generate_and_check("ssh_host_rsa_key", "3072", "RSA");
    }

    #[test]
    fn generates_into_a_subdirectory_of_the_state_dir() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keys").join("host_ed25519");
        let keys = load_or_generate(std::slice::from_ref(&path), dir.path()).unwrap();
        assert!(keys[0].generated);
        assert_eq!(mode(&dir.path().join("keys")), 0o700);
    }

    #[test]
    fn loads_a_key_made_by_ssh_keygen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("custom_key");
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "", "-f"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());
        let keys = load_or_generate(std::slice::from_ref(&path), dir.path()).unwrap();
        assert!(!keys[0].generated);
        assert!(keygen_fingerprint(&path).contains(&keys[0].fingerprint));
    }

    /// ssh-key alone refuses this P-256 key (its scalar is a 31-byte mpint, as about one
    /// ssh-keygen key in 512 is); warrend must load it like any other.
    #[test]
    fn loads_an_ecdsa_key_whose_scalar_is_short() {
        let data =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("crates/ssh/src/openssh_key/testdata");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ssh_host_ecdsa_key");
        fs::copy(data.join("p256_short_scalar"), &path).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let keys = load_or_generate(std::slice::from_ref(&path), dir.path()).unwrap();
        assert!(!keys[0].generated);
        let public = data.join("p256_short_scalar.pub");
        assert!(keygen_fingerprint(&public).contains(&keys[0].fingerprint));
    }

    #[test]
    fn a_damaged_key_names_its_file_and_says_why_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ssh_host_ed25519_key");
        load_or_generate(std::slice::from_ref(&path), dir.path()).unwrap();
        let text = fs::read_to_string(&path).unwrap();
        fs::write(&path, &text[..text.len() / 2]).unwrap();
        let err = load_or_generate(std::slice::from_ref(&path), dir.path()).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.starts_with("cannot parse host key "), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
        let reason = msg.rsplit(": ").next().unwrap();
        assert_eq!(msg.matches(reason).count(), 1, "{msg}");
    }

    #[test]
    fn refuses_a_key_others_can_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ssh_host_ed25519_key");
        load_or_generate(std::slice::from_ref(&path), dir.path()).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();

        let err = load_or_generate(std::slice::from_ref(&path), dir.path()).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("UNPROTECTED PRIVATE KEY FILE"), "{msg}");
        assert!(msg.contains("0640"), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }

    #[test]
    fn refuses_an_encrypted_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ssh_host_ed25519_key");
        let status = Command::new("ssh-keygen")
            .args(["-q", "-t", "ed25519", "-N", "secret", "-f"])
            .arg(&path)
            .status()
            .unwrap();
        assert!(status.success());

        let err = load_or_generate(std::slice::from_ref(&path), dir.path()).unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("encrypted"), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }

    #[test]
    fn refuses_to_guess_an_algorithm() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        for name in ["host_key", "rsa_or_ed25519_key"] {
            let path = state.join(name);
            let err = load_or_generate(std::slice::from_ref(&path), &state).unwrap_err();
            let msg = format!("{err:#}");
            assert!(msg.contains(&path.display().to_string()), "{msg}");
            assert!(msg.contains("ed25519"), "{msg}");
        }
        assert!(!state.exists(), "nothing is created for a refused name");
    }

    #[test]
    fn debug_shows_no_key_material() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ssh_host_ed25519_key");
        let keys = load_or_generate(std::slice::from_ref(&path), dir.path()).unwrap();
        let text = format!("{:?}", keys[0]);
        assert!(text.contains(&keys[0].fingerprint), "{text}");
        let private = keys[0].key.to_openssh(LineEnding::LF).unwrap();
        let body: String = private.lines().nth(2).unwrap().chars().take(20).collect();
        assert!(!text.contains(&body), "{text}");
    }
}
