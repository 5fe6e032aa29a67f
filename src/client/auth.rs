//! User authentication in OpenSSH's order: agent keys, identity files, then
//! keyboard-interactive and password when someone is there to type.
//!
//! Identity files with a `.pub` beside them are offered by their public key first, and the
//! private key is only decrypted once the server has said it would accept it, so the user
//! is asked for a passphrase only for a key that matters (as OpenSSH does).

use super::agent::Agent;
use super::error::ClientError;
use super::key_file::{self, KeyFileError};
use super::prompt::Prompter;
use std::path::{Path, PathBuf};
use tracing::{debug, info, warn};
use warren_ssh::driver::{AuthOutcome, Handle};
use warren_ssh::hostkey::{self, ParsedKey};
use warren_ssh::ssh_key::certificate::CertType;
use warren_ssh::ssh_key::{Certificate, HashAlg, PrivateKey, PublicKey};

/// Where agent keys come from (IdentityAgent / SSH_AUTH_SOCK).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AgentSource {
    None,
    Env,
    Socket(PathBuf),
}

/// A private key file to try; `explicit` ones (from -i or IdentityFile) are reported when
/// missing, default ones silently skipped, as OpenSSH does.
#[derive(Debug, Clone)]
pub struct IdentityFile {
    pub path: PathBuf,
    pub explicit: bool,
}

/// The resolved authentication settings for one connection.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    pub user: String,
    pub identity_files: Vec<IdentityFile>,
    /// CertificateFile: each is offered with the private key of the identity file or agent
    /// key it certifies (ssh pairs them by public key), after the plain keys.
    pub certificate_files: Vec<PathBuf>,
    pub identities_only: bool,
    pub agent: AgentSource,
    pub pubkey: bool,
    pub password: bool,
    pub kbd_interactive: bool,
    pub prompter: Prompter,
}

/// What was tried, for the report shown when everything fails, and what the server
/// still allows.
struct Progress {
    tried: Vec<String>,
    /// The methods the server's last failure named; `None` until it named any.
    methods: Option<Vec<String>>,
    /// Public keys already offered, so a key in the agent and on disk is offered once.
    offered: Vec<PublicKey>,
    /// The agent's plain keys (key, blob): a CertificateFile for one is signed by the agent.
    agent_keys: Vec<(PublicKey, Vec<u8>)>,
    /// Private keys decrypted so far, so a CertificateFile for one asks no passphrase again.
    loaded: Vec<PrivateKey>,
}

impl Progress {
    fn allows(&self, method: &str) -> bool {
        self.methods
            .as_ref()
            .is_none_or(|m| m.iter().any(|x| x == method))
    }

    /// Records an answer; true when it was success.
    fn outcome(&mut self, outcome: AuthOutcome, what: String) -> bool {
        match outcome {
            AuthOutcome::Success => true,
            AuthOutcome::Failure { methods, .. } => {
                self.tried.push(format!("{what} (rejected)"));
                self.methods = Some(methods);
                false
            }
            other => {
                self.tried
                    .push(format!("{what} (unexpected answer {other:?})"));
                false
            }
        }
    }
}

/// Authenticates or explains, in one message, everything that was tried and why it failed.
pub async fn authenticate(
    handle: &Handle,
    s: &AuthSettings,
    destination: &str,
) -> Result<(), ClientError> {
    let mut p = Progress {
        tried: Vec::new(),
        methods: None,
        offered: Vec::new(),
        agent_keys: Vec::new(),
        loaded: Vec::new(),
    };
    // "none" first, as OpenSSH does: it learns which methods to try, and by its answer the
    // server's EXT_INFO (server-sig-algs, which picks the RSA signature hash) has arrived.
    match auth_call(handle.auth_none(&s.user).await)? {
        AuthOutcome::Success => return Ok(()),
        AuthOutcome::Failure { methods, .. } => p.methods = Some(methods),
        other => debug!("answer to \"none\": {other:?}"),
    }

    if s.pubkey && p.allows("publickey") {
        let file_publics: Vec<Option<PublicKey>> = s
            .identity_files
            .iter()
            .map(|f| PublicKey::read_openssh_file(pub_path(&f.path)).ok())
            .collect();
        // IdentitiesOnly lets through the agent keys of configured certificates too.
        let configured: Vec<Option<PublicKey>> = file_publics
            .iter()
            .cloned()
            .chain(s.certificate_files.iter().map(|c| {
                Certificate::read_file(c)
                    .ok()
                    .map(|c| PublicKey::new(c.public_key().clone(), ""))
            }))
            .collect();
        if try_agent(handle, s, &configured, &mut p).await? {
            return Ok(());
        }
        for (file, public) in s.identity_files.iter().zip(file_publics.iter().cloned()) {
            if try_file(handle, s, file, public, &mut p).await? {
                return Ok(());
            }
        }
        for cert in &s.certificate_files {
            if try_certificate_file(handle, s, cert, &file_publics, &mut p).await? {
                return Ok(());
            }
        }
    }

    if s.kbd_interactive
        && p.allows("keyboard-interactive")
        && s.prompter.can_prompt()
        && kbd_interactive(handle, s, &mut p).await?
    {
        return Ok(());
    }
    if s.password && p.allows("password") && s.prompter.can_prompt() {
        for _ in 0..3 {
            let prompter = s.prompter.clone();
            let prompt = format!("{}'s password: ", destination);
            let Some(pw) = blocking(move || prompter.secret(&prompt)).await? else {
                break;
            };
            let outcome = auth_call(handle.auth_password(&s.user, &pw).await)?;
            if p.outcome(outcome, "password".into()) {
                return Ok(());
            }
            if !p.allows("password") {
                break;
            }
        }
    } else if s.password && !s.prompter.can_prompt() && p.allows("password") {
        p.tried
            .push("password (skipped: no terminal to ask, or BatchMode)".into());
    }

    let offered_methods = p
        .methods
        .map(|m| m.join(","))
        .unwrap_or_else(|| "publickey".into());
    let list = if p.tried.is_empty() {
        "nothing (no agent, no identity files found)".to_string()
    } else {
        p.tried.join("\n  ")
    };
    Err(ClientError::Auth(format!(
        "{destination}: Permission denied ({offered_methods}).\nTried:\n  {list}"
    )))
}

/// The algorithm to offer a key under. RSA signs with SHA-2 (servers since OpenSSH 8.8
/// refuse SHA-1 `ssh-rsa`): the variant the server lists, else rsa-sha2-512. A certificate
/// is offered under the certificate name of the same signature algorithm.
fn offer_algorithm(
    key: &PublicKey,
    certificate: bool,
    server: Option<&[String]>,
) -> Option<String> {
    let algs = hostkey::algorithms_for(key);
    let base = algs
        .iter()
        .find(|a| server.is_some_and(|s| s.iter().any(|x| x == *a)))
        .or(algs.first())?;
    Some(match certificate {
        true => format!("{base}-cert-v01@openssh.com"),
        false => base.to_string(),
    })
}

fn describe(key: &PublicKey) -> String {
    format!("{} {}", key.algorithm(), key.fingerprint(HashAlg::Sha256))
}

fn auth_call<T>(r: std::io::Result<T>) -> Result<T, ClientError> {
    r.map_err(|e| ClientError::Auth(format!("authentication broke off: {e}")))
}

async fn connect_agent(source: &AgentSource) -> Option<std::io::Result<Agent>> {
    let path = match source {
        AgentSource::None => return None,
        AgentSource::Env => PathBuf::from(std::env::var_os("SSH_AUTH_SOCK")?),
        AgentSource::Socket(p) => p.clone(),
    };
    Some(Agent::connect(&path).await)
}

/// Offers each agent key (plain keys and certificates) in the agent's order; the agent
/// signs only when the server asks for proof.
async fn try_agent(
    handle: &Handle,
    s: &AuthSettings,
    file_publics: &[Option<PublicKey>],
    p: &mut Progress,
) -> Result<bool, ClientError> {
    let mut agent = match connect_agent(&s.agent).await {
        None => return Ok(false),
        Some(Ok(a)) => a,
        Some(Err(e)) => {
            warn!("cannot reach the ssh-agent: {e}");
            p.tried.push(format!("ssh-agent (unreachable: {e})"));
            return Ok(false);
        }
    };
    let identities = match agent.identities().await {
        Ok(ids) => ids,
        Err(e) => {
            warn!("the ssh-agent did not list its keys: {e}");
            return Ok(false);
        }
    };
    for id in identities {
        let mut note = String::new();
        let (key, certificate) = match hostkey::parse_key_blob(&id.blob) {
            Ok(ParsedKey::Plain(k)) => {
                p.agent_keys.push((k.clone(), id.blob.clone()));
                (k, false)
            }
            Ok(ParsedKey::Certificate(c)) => {
                note = validity_note(&c);
                (PublicKey::new(c.public_key().clone(), ""), true)
            }
            Err(e) => {
                debug!(
                    "skipping an agent key we cannot parse ({}): {e}",
                    id.comment
                );
                continue;
            }
        };
        if s.identities_only
            && !file_publics
                .iter()
                .flatten()
                .any(|f| f.key_data() == key.key_data())
        {
            continue;
        }
        let Some(alg) = offer_algorithm(&key, certificate, handle.server_sig_algs().as_deref())
        else {
            debug!(
                "skipping agent key {} of a type we do not sign with",
                describe(&key)
            );
            continue;
        };
        let kind = if certificate { "certificate" } else { "key" };
        info!("offering agent {kind} {} {}", describe(&key), id.comment);
        p.offered.push(key.clone());
        let agent = &mut agent;
        let (blob, sign_alg) = (id.blob.clone(), alg.clone());
        let result = handle
            .auth_publickey_with(&s.user, &alg, &id.blob, move |data| async move {
                agent.sign(&blob, &sign_alg, &data).await
            })
            .await;
        let what = format!("agent {kind} {} {}{note}", describe(&key), id.comment);
        match result {
            Ok(outcome) => {
                if p.outcome(outcome, what) {
                    return Ok(true);
                }
            }
            Err(e) if handle.ended().is_some() => return auth_call(Err(e)),
            Err(e) => p.tried.push(format!("{what} (agent failed to sign: {e})")),
        }
    }
    Ok(false)
}

/// Offers one identity file. With its `.pub` beside it, the public key is offered first and
/// the private key opened (and its passphrase asked for) only if the server would take it.
async fn try_file(
    handle: &Handle,
    s: &AuthSettings,
    file: &IdentityFile,
    public: Option<PublicKey>,
    p: &mut Progress,
) -> Result<bool, ClientError> {
    let path = &file.path;
    if !path.exists() {
        if file.explicit {
            warn!("no such identity: {}", path.display());
            p.tried.push(format!("{} (not found)", path.display()));
        }
        return Ok(false);
    }
    if try_file_certificate(handle, s, path, public.as_ref(), p).await? {
        return Ok(true);
    }
    if let Some(public) = &public
        && p.offered.iter().any(|k| k.key_data() == public.key_data())
    {
        return Ok(false); // already offered through the agent
    }
    let what = path.display().to_string();
    let sig_algs = handle.server_sig_algs();
    let key = match public {
        Some(public) => {
            let Some(alg) = offer_algorithm(&public, false, sig_algs.as_deref()) else {
                p.tried.push(format!(
                    "{what} (a {} key, which warren cannot sign with)",
                    public.algorithm()
                ));
                return Ok(false);
            };
            info!("offering {what} ({})", describe(&public));
            p.offered.push(public.clone());
            let blob = public
                .to_bytes()
                .map_err(|e| ClientError::Auth(format!("{what}: {e}")))?;
            match auth_call(handle.auth_publickey_probe(&s.user, &alg, &blob).await)? {
                AuthOutcome::PkOk => {}
                other => return Ok(p.outcome(other, what)),
            }
            match load_private(path.clone(), s.prompter.clone()).await {
                Ok(k) if k.public_key().key_data() == public.key_data() => {
                    p.loaded.push(k.clone());
                    k
                }
                Ok(_) => {
                    p.tried.push(format!(
                        "{what} (the private key does not match {what}.pub)"
                    ));
                    return Ok(false);
                }
                Err(e) => {
                    p.tried.push(format!("{what} ({e:#})"));
                    return Ok(false);
                }
            }
        }
        None => match load_private(path.clone(), s.prompter.clone()).await {
            Ok(k) => {
                info!("offering {what} ({})", describe(k.public_key()));
                p.offered.push(k.public_key().clone());
                p.loaded.push(k.clone());
                k
            }
            Err(e) => {
                p.tried.push(format!("{what} ({e:#})"));
                return Ok(false);
            }
        },
    };
    let Some(alg) = offer_algorithm(key.public_key(), false, sig_algs.as_deref()) else {
        p.tried.push(format!(
            "{what} (a {} key, which warren cannot sign with)",
            key.algorithm()
        ));
        return Ok(false);
    };
    let blob = key
        .public_key()
        .to_bytes()
        .map_err(|e| ClientError::Auth(format!("{what}: {e}")))?;
    let sign_alg = alg.clone();
    let outcome = auth_call(
        handle
            .auth_publickey_with(&s.user, &alg, &blob, |data| async move {
                hostkey::sign(&key, &sign_alg, &data).map_err(std::io::Error::other)
            })
            .await,
    )?;
    Ok(p.outcome(outcome, what))
}

/// `<file>-cert.pub` beside an identity file, where `ssh-keygen -s`, step-ca and Vault put
/// a certificate, is offered before the plain key, as ssh does. The private key is opened
/// only once the server said it would take the certificate. Returns true on success; a
/// refused or unusable certificate leaves the plain key to be tried.
async fn try_file_certificate(
    handle: &Handle,
    s: &AuthSettings,
    path: &Path,
    public: Option<&PublicKey>,
    p: &mut Progress,
) -> Result<bool, ClientError> {
    let mut cert_path = path.as_os_str().to_owned();
    cert_path.push("-cert.pub");
    let cert_path = PathBuf::from(cert_path);
    if !cert_path.exists() {
        return Ok(false);
    }
    let what = cert_path.display().to_string();
    let cert = match Certificate::read_file(&cert_path) {
        Ok(c) => c,
        Err(e) => {
            p.tried
                .push(format!("{what} (not a certificate warren can read: {e})"));
            return Ok(false);
        }
    };
    let what = format!("{what}{}", validity_note(&cert));
    let key = PublicKey::new(cert.public_key().clone(), "");
    if let Some(public) = public
        && public.key_data() != key.key_data()
    {
        p.tried.push(format!(
            "{what} (certifies another key than {}.pub)",
            path.display()
        ));
        return Ok(false);
    }
    let (alg, blob) = match probe_certificate(handle, s, p, &cert, &key, &what).await? {
        CertProbe::Accepted { alg, blob } => (alg, blob),
        CertProbe::Over(done) => return Ok(done),
    };
    let private = match load_private(path.to_path_buf(), s.prompter.clone()).await {
        Ok(k) if k.public_key().key_data() == key.key_data() => {
            p.loaded.push(k.clone());
            k
        }
        Ok(_) => {
            p.tried.push(format!(
                "{what} (certifies another key than {})",
                path.display()
            ));
            return Ok(false);
        }
        Err(e) => {
            p.tried.push(format!("{what} ({e:#})"));
            return Ok(false);
        }
    };
    let sign_alg = alg.clone();
    let outcome = auth_call(
        handle
            .auth_publickey_with(&s.user, &alg, &blob, |data| async move {
                hostkey::sign(&private, &sign_alg, &data).map_err(std::io::Error::other)
            })
            .await,
    )?;
    Ok(p.outcome(outcome, what))
}

/// How far offering a certificate got before any private key is touched.
enum CertProbe {
    /// The server would take it: sign with `alg` over `blob`.
    Accepted { alg: String, blob: Vec<u8> },
    /// The attempt is over (recorded in the progress): whether it authenticated.
    Over(bool),
}

/// Asks the server whether it would accept `cert` (certifying `key`), without signing:
/// a passphrase or agent confirmation is only asked for a certificate that can succeed.
async fn probe_certificate(
    handle: &Handle,
    s: &AuthSettings,
    p: &mut Progress,
    cert: &Certificate,
    key: &PublicKey,
    what: &str,
) -> Result<CertProbe, ClientError> {
    let Some(alg) = offer_algorithm(key, true, handle.server_sig_algs().as_deref()) else {
        p.tried.push(format!(
            "{what} (a {} key, which warren cannot sign with)",
            key.algorithm()
        ));
        return Ok(CertProbe::Over(false));
    };
    let blob = cert
        .to_bytes()
        .map_err(|e| ClientError::Auth(format!("{what}: {e}")))?;
    info!(
        "offering certificate {what} ({}, id {:?})",
        describe(key),
        cert.key_id()
    );
    match auth_call(handle.auth_publickey_probe(&s.user, &alg, &blob).await)? {
        AuthOutcome::PkOk => Ok(CertProbe::Accepted { alg, blob }),
        other => Ok(CertProbe::Over(p.outcome(other, what.to_owned()))),
    }
}

/// Who holds the private key of a CertificateFile.
enum CertSigner {
    Agent(Vec<u8>),
    Key(Box<PrivateKey>),
    File(PathBuf),
}

/// Offers one CertificateFile, signed by the agent key or identity file it certifies (as
/// ssh pairs them, by public key). Without either, it is skipped with the reason.
async fn try_certificate_file(
    handle: &Handle,
    s: &AuthSettings,
    path: &Path,
    file_publics: &[Option<PublicKey>],
    p: &mut Progress,
) -> Result<bool, ClientError> {
    let what = path.display().to_string();
    if !path.exists() {
        warn!("no such certificate: {what}");
        p.tried.push(format!("{what} (certificate not found)"));
        return Ok(false);
    }
    let cert = match Certificate::read_file(path) {
        Ok(c) => c,
        Err(e) => {
            p.tried
                .push(format!("{what} (not a certificate warren can read: {e})"));
            return Ok(false);
        }
    };
    if cert.cert_type() != CertType::User {
        p.tried.push(format!(
            "{what} (a host certificate, not a user certificate)"
        ));
        return Ok(false);
    }
    let key = PublicKey::new(cert.public_key().clone(), "");
    let same = |k: &PublicKey| k.key_data() == key.key_data();
    let signer = if let Some((_, blob)) = p.agent_keys.iter().find(|(k, _)| same(k)) {
        CertSigner::Agent(blob.clone())
    } else if let Some(k) = p.loaded.iter().find(|k| same(k.public_key())) {
        CertSigner::Key(Box::new(k.clone()))
    } else if let Some((file, _)) = s
        .identity_files
        .iter()
        .zip(file_publics)
        .find(|(f, public)| f.path.exists() && public.as_ref().is_some_and(same))
    {
        CertSigner::File(file.path.clone())
    } else {
        p.tried.push(format!(
            "{what} (no identity file or agent key holds its private key {}; \
             name the key with IdentityFile or add it with ssh-add)",
            describe(&key)
        ));
        return Ok(false);
    };
    let what = format!("{what}{}", validity_note(&cert));
    let (alg, blob) = match probe_certificate(handle, s, p, &cert, &key, &what).await? {
        CertProbe::Accepted { alg, blob } => (alg, blob),
        CertProbe::Over(done) => return Ok(done),
    };
    let sign_alg = alg.clone();
    let result = match signer {
        CertSigner::Agent(key_blob) => {
            let mut agent = match connect_agent(&s.agent).await {
                Some(Ok(a)) => a,
                _ => {
                    p.tried.push(format!("{what} (the ssh-agent went away)"));
                    return Ok(false);
                }
            };
            let agent = &mut agent;
            handle
                .auth_publickey_with(&s.user, &alg, &blob, move |data| async move {
                    agent.sign(&key_blob, &sign_alg, &data).await
                })
                .await
        }
        CertSigner::Key(private) => {
            handle
                .auth_publickey_with(&s.user, &alg, &blob, |data| async move {
                    hostkey::sign(&private, &sign_alg, &data).map_err(std::io::Error::other)
                })
                .await
        }
        CertSigner::File(file) => {
            let private = match load_private(file.clone(), s.prompter.clone()).await {
                Ok(k) if same(k.public_key()) => k,
                Ok(_) => {
                    p.tried.push(format!(
                        "{what} (the private key {} does not match its .pub)",
                        file.display()
                    ));
                    return Ok(false);
                }
                Err(e) => {
                    p.tried.push(format!("{what} ({}: {e:#})", file.display()));
                    return Ok(false);
                }
            };
            handle
                .auth_publickey_with(&s.user, &alg, &blob, |data| async move {
                    hostkey::sign(&private, &sign_alg, &data).map_err(std::io::Error::other)
                })
                .await
        }
    };
    match result {
        Ok(outcome) => Ok(p.outcome(outcome, what)),
        Err(e) if handle.ended().is_some() => auth_call(Err(e)),
        Err(e) => {
            p.tried.push(format!("{what} (could not sign: {e})"));
            Ok(false)
        }
    }
}

/// " (expired at ...)" or " (not valid until ...)" for a certificate outside its window
/// by our clock, so a refusal explains itself. It is still offered: the server's clock
/// is the one that counts, as with ssh.
fn validity_note(cert: &Certificate) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    if now >= cert.valid_before() {
        format!(
            " (certificate expired at {})",
            super::host_cert::show_time(cert.valid_before())
        )
    } else if now < cert.valid_after() {
        format!(
            " (certificate not valid until {})",
            super::host_cert::show_time(cert.valid_after())
        )
    } else {
        String::new()
    }
}

async fn kbd_interactive(
    handle: &Handle,
    s: &AuthSettings,
    p: &mut Progress,
) -> Result<bool, ClientError> {
    let mut step = auth_call(handle.auth_keyboard_interactive(&s.user).await)?;
    loop {
        let AuthOutcome::Prompts {
            name,
            instruction,
            prompts,
        } = step
        else {
            return Ok(p.outcome(step, "keyboard-interactive".into()));
        };
        if !name.is_empty() || !instruction.is_empty() {
            eprintln!("{name}\n{instruction}");
        }
        let mut answers = Vec::with_capacity(prompts.len());
        for (prompt, echo) in prompts {
            let prompter = s.prompter.clone();
            let answer = blocking(move || {
                if echo {
                    prompter.visible(&prompt)
                } else {
                    prompter.secret(&prompt)
                }
            })
            .await?;
            let Some(answer) = answer else {
                p.tried
                    .push("keyboard-interactive (nobody to answer)".into());
                return Ok(false);
            };
            answers.push(answer);
        }
        step = auth_call(handle.auth_info_response(&answers).await)?;
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> anyhow::Result<T> + Send + 'static,
) -> Result<T, ClientError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ClientError::Other(e.into()))?
        .map_err(|e| ClientError::Auth(format!("{e:#}")))
}

fn pub_path(path: &Path) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(".pub");
    PathBuf::from(s)
}

/// Loads a private key in any format OpenSSH's ssh reads ([`key_file`]), asking for its
/// passphrase (up to three times) only when it is encrypted. Errors read like "wrong
/// passphrase" or "encrypted and BatchMode is on".
async fn load_private(path: PathBuf, prompter: Prompter) -> anyhow::Result<PrivateKey> {
    tokio::task::spawn_blocking(move || {
        let text = std::fs::read(&path).map_err(|e| anyhow::anyhow!("cannot read key: {e}"))?;
        let explain = |e: KeyFileError| match e {
            KeyFileError::LegacyEncrypted { cipher } => anyhow::anyhow!(
                "the key uses legacy OpenSSL PEM encryption with {cipher}, which warren cannot \
                 decrypt; run `ssh-keygen -p -f {}` to rewrite it in OpenSSH format",
                path.display()
            ),
            other => anyhow::anyhow!("cannot read key: {other}"),
        };
        match key_file::decode_private_key(&text, None) {
            Err(KeyFileError::NeedsPassphrase) => {}
            other => return other.map_err(explain),
        }
        for _ in 0..3 {
            let prompt = format!("Enter passphrase for key '{}': ", path.display());
            let Some(pass) = prompter.secret(&prompt)? else {
                anyhow::bail!("key is encrypted and there is no terminal or SSH_ASKPASS to ask for its passphrase");
            };
            match key_file::decode_private_key(&text, Some(pass.as_bytes())) {
                Ok(k) => return Ok(k),
                Err(KeyFileError::WrongPassphrase) => {
                    debug!("passphrase for {} not accepted", path.display())
                }
                Err(e) => return Err(explain(e)),
            }
        }
        anyhow::bail!("wrong passphrase")
    })
    .await?
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A public key only (a 1024-bit one: nothing is signed with it, and generating RSA
    /// keys in a debug build is slow).
    const RSA_PUB: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDYqzBhuTVDZML+Zwv0hTHBR/d/8CvItfqSX2dRiJfLF04iwpHGWCagtPI8s7uj2G5h0QzInu36Nz3Ytf2XZ4/5AThjX8amsewVdHjFmFqF3xPvFZZFU+zmJEEiqsdW16GNgiX6AEglKURvIOfwS9WlWtRbir1PJsd+lmN/rpaUow== t";

    const ED25519_PUB: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICkyhZtHyOcgR1G4e21GQV4lv58CG19PZtAB2dwU3hFX t";

    #[test]
    fn rsa_is_offered_with_the_sha2_variant_the_server_lists() {
        let rsa = PublicKey::from_openssh(RSA_PUB).unwrap();
        let both = vec!["rsa-sha2-256".to_string(), "rsa-sha2-512".to_string()];
        let only256 = vec!["ssh-ed25519".to_string(), "rsa-sha2-256".to_string()];
        assert_eq!(
            offer_algorithm(&rsa, false, Some(&both)).unwrap(),
            "rsa-sha2-512"
        );
        assert_eq!(
            offer_algorithm(&rsa, false, Some(&only256)).unwrap(),
            "rsa-sha2-256"
        );
        assert_eq!(offer_algorithm(&rsa, false, None).unwrap(), "rsa-sha2-512");
        assert_eq!(
            offer_algorithm(&rsa, true, Some(&only256)).unwrap(),
            "rsa-sha2-256-cert-v01@openssh.com"
        );
    }

    #[test]
    fn certificates_are_offered_under_their_certificate_name() {
        let ed = PublicKey::from_openssh(ED25519_PUB).unwrap();
        assert_eq!(offer_algorithm(&ed, false, None).unwrap(), "ssh-ed25519");
        assert_eq!(
            offer_algorithm(&ed, true, None).unwrap(),
            "ssh-ed25519-cert-v01@openssh.com"
        );
    }
}
