//! User authentication in OpenSSH's order: agent keys, identity files, then
//! keyboard-interactive and password when someone is there to type.
//!
//! Identity files with a `.pub` beside them are offered by their public key first, and the
//! private key is only decrypted once the server has said it would accept it, so the user
//! is asked for a passphrase only for a key that matters (as OpenSSH does).

use super::error::ClientError;
use super::handler::ClientHandler;
use super::prompt::Prompter;
use russh::client::{AuthResult, Handle, KeyboardInteractiveAuthResponse};
use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::signature::Signer as _;
use russh::keys::ssh_encoding::Encode;
use russh::keys::ssh_key::private::KeypairData;
use russh::keys::ssh_key::{HashAlg, PrivateKey, PublicKey, Signature};
use russh::keys::{PrivateKeyWithHashAlg, load_public_key, load_secret_key};
use russh::{MethodKind, MethodSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tracing::{debug, info, warn};

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
    pub identities_only: bool,
    pub agent: AgentSource,
    pub pubkey: bool,
    pub password: bool,
    pub kbd_interactive: bool,
    pub prompter: Prompter,
}

/// One line of the "what was tried" report shown when everything fails.
struct Attempts(Vec<String>);

/// Authenticates or explains, in one message, everything that was tried and why it failed.
pub async fn authenticate(
    handle: &mut Handle<ClientHandler>,
    s: &AuthSettings,
    destination: &str,
) -> Result<(), ClientError> {
    let mut tried = Attempts(Vec::new());
    let mut methods: Option<MethodSet> = None;
    let rsa_hash = if s.pubkey {
        rsa_hash(handle).await
    } else {
        None
    };

    if s.pubkey {
        let mut offered: Vec<PublicKey> = Vec::new();
        let file_publics: Vec<Option<PublicKey>> = s
            .identity_files
            .iter()
            .map(|f| load_public_key(pub_path(&f.path)).ok())
            .collect();
        if try_agent(
            handle,
            s,
            &file_publics,
            rsa_hash,
            &mut offered,
            &mut tried,
            &mut methods,
        )
        .await?
        {
            return Ok(());
        }
        for (file, public) in s.identity_files.iter().zip(file_publics) {
            if try_file(
                handle,
                s,
                file,
                public,
                rsa_hash,
                &mut offered,
                &mut tried,
                &mut methods,
            )
            .await?
            {
                return Ok(());
            }
        }
    }

    let allows =
        |m: &Option<MethodSet>, k: MethodKind| m.as_ref().is_none_or(|set| set.contains(&k));
    if s.kbd_interactive
        && allows(&methods, MethodKind::KeyboardInteractive)
        && s.prompter.can_prompt()
        && kbd_interactive(handle, s, &mut tried, &mut methods).await?
    {
        return Ok(());
    }
    if s.password && allows(&methods, MethodKind::Password) && s.prompter.can_prompt() {
        for _ in 0..3 {
            let prompter = s.prompter.clone();
            let prompt = format!("{}'s password: ", destination);
            let Some(pw) = blocking(move || prompter.secret(&prompt)).await? else {
                break;
            };
            match auth_call(handle.authenticate_password(&s.user, pw).await)? {
                AuthResult::Success => return Ok(()),
                AuthResult::Failure {
                    remaining_methods, ..
                } => {
                    tried.0.push("password (rejected)".into());
                    methods = Some(remaining_methods);
                }
            }
        }
    } else if s.password && !s.prompter.can_prompt() && allows(&methods, MethodKind::Password) {
        tried
            .0
            .push("password (skipped: no terminal to ask, or BatchMode)".into());
    }

    let offered_methods = methods
        .map(|m| {
            m.iter()
                .map(|k| <&str>::from(k).to_string())
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_else(|| "publickey".into());
    let list = if tried.0.is_empty() {
        "nothing (no agent, no identity files found)".to_string()
    } else {
        tried.0.join("\n  ")
    };
    Err(ClientError::Auth(format!(
        "{destination}: Permission denied ({offered_methods}).\nTried:\n  {list}"
    )))
}

/// RSA keys must be signed with rsa-sha2-512/256: servers since OpenSSH 8.8 refuse the
/// SHA-1 `ssh-rsa` that russh would use for `None`.
async fn rsa_hash(handle: &Handle<ClientHandler>) -> Option<HashAlg> {
    match handle.best_supported_rsa_hash().await {
        Ok(Some(Some(h))) => Some(h),
        // The server only speaks SHA-1 RSA signatures, or told us nothing: prefer a SHA-2
        // attempt that may fail over silently downgrading to SHA-1.
        _ => Some(HashAlg::Sha256),
    }
}

fn hash_for(key: &PublicKey, rsa: Option<HashAlg>) -> Option<HashAlg> {
    if key.algorithm().is_rsa() { rsa } else { None }
}

fn describe(key: &PublicKey) -> String {
    format!("{} {}", key.algorithm(), key.fingerprint(HashAlg::Sha256))
}

fn auth_call<T>(r: Result<T, russh::Error>) -> Result<T, ClientError> {
    r.map_err(|e| ClientError::Auth(format!("authentication broke off: {e}")))
}

#[allow(clippy::too_many_arguments)]
async fn try_agent(
    handle: &mut Handle<ClientHandler>,
    s: &AuthSettings,
    file_publics: &[Option<PublicKey>],
    rsa: Option<HashAlg>,
    offered: &mut Vec<PublicKey>,
    tried: &mut Attempts,
    methods: &mut Option<MethodSet>,
) -> Result<bool, ClientError> {
    let agent = match &s.agent {
        AgentSource::None => return Ok(false),
        AgentSource::Env => {
            if std::env::var_os("SSH_AUTH_SOCK").is_none() {
                return Ok(false);
            }
            AgentClient::connect_env().await.map(|a| a.dynamic())
        }
        AgentSource::Socket(p) => AgentClient::connect_uds(p).await.map(|a| a.dynamic()),
    };
    let mut agent = match agent {
        Ok(a) => a,
        Err(e) => {
            warn!("cannot reach the ssh-agent: {e}");
            tried.0.push(format!("ssh-agent (unreachable: {e})"));
            return Ok(false);
        }
    };
    let identities = match agent.request_identities().await {
        Ok(ids) => ids,
        Err(e) => {
            warn!("the ssh-agent did not list its keys: {e}");
            return Ok(false);
        }
    };
    for id in identities {
        let AgentIdentity::PublicKey { key, comment } = id else {
            continue; // certificates come with the certificate issue
        };
        if s.identities_only
            && !file_publics
                .iter()
                .flatten()
                .any(|p| p.key_data() == key.key_data())
        {
            continue;
        }
        info!("offering agent key {} {comment}", describe(&key));
        offered.push(key.clone());
        let result = handle
            .authenticate_publickey_with(&s.user, key.clone(), hash_for(&key, rsa), &mut agent)
            .await;
        match result {
            Ok(AuthResult::Success) => return Ok(true),
            Ok(AuthResult::Failure {
                remaining_methods, ..
            }) => {
                tried
                    .0
                    .push(format!("agent key {} {comment} (rejected)", describe(&key)));
                *methods = Some(remaining_methods);
            }
            Err(e) => tried.0.push(format!(
                "agent key {} (agent failed to sign: {e})",
                describe(&key)
            )),
        }
    }
    Ok(false)
}

#[allow(clippy::too_many_arguments)]
async fn try_file(
    handle: &mut Handle<ClientHandler>,
    s: &AuthSettings,
    file: &IdentityFile,
    public: Option<PublicKey>,
    rsa: Option<HashAlg>,
    offered: &mut Vec<PublicKey>,
    tried: &mut Attempts,
    methods: &mut Option<MethodSet>,
) -> Result<bool, ClientError> {
    let path = &file.path;
    if !path.exists() {
        if file.explicit {
            warn!("no such identity: {}", path.display());
            tried.0.push(format!("{} (not found)", path.display()));
        }
        return Ok(false);
    }
    if let Some(public) = &public
        && offered.iter().any(|k| k.key_data() == public.key_data())
    {
        return Ok(false); // already offered through the agent
    }
    let result = match public {
        Some(public) => {
            info!("offering {} ({})", path.display(), describe(&public));
            offered.push(public.clone());
            let mut signer = FileSigner {
                path: path.clone(),
                prompter: s.prompter.clone(),
            };
            let hash = hash_for(&public, rsa);
            match handle
                .authenticate_publickey_with(&s.user, public.clone(), hash, &mut signer)
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    tried.0.push(format!("{} ({e})", path.display()));
                    return Ok(false);
                }
            }
        }
        None => {
            let key = match load_private(path.clone(), s.prompter.clone()).await {
                Ok(k) => k,
                Err(e) => {
                    tried.0.push(format!("{} ({e})", path.display()));
                    return Ok(false);
                }
            };
            info!(
                "offering {} ({})",
                path.display(),
                describe(key.public_key())
            );
            offered.push(key.public_key().clone());
            let hash = hash_for(key.public_key(), rsa);
            auth_call(
                handle
                    .authenticate_publickey(
                        &s.user,
                        PrivateKeyWithHashAlg::new(Arc::new(key), hash),
                    )
                    .await,
            )?
        }
    };
    match result {
        AuthResult::Success => Ok(true),
        AuthResult::Failure {
            remaining_methods, ..
        } => {
            tried.0.push(format!("{} (rejected)", path.display()));
            *methods = Some(remaining_methods);
            Ok(false)
        }
    }
}

async fn kbd_interactive(
    handle: &mut Handle<ClientHandler>,
    s: &AuthSettings,
    tried: &mut Attempts,
    methods: &mut Option<MethodSet>,
) -> Result<bool, ClientError> {
    let mut step = auth_call(
        handle
            .authenticate_keyboard_interactive_start(&s.user, None)
            .await,
    )?;
    loop {
        match step {
            KeyboardInteractiveAuthResponse::Success => return Ok(true),
            KeyboardInteractiveAuthResponse::Failure {
                remaining_methods, ..
            } => {
                tried.0.push("keyboard-interactive (rejected)".into());
                *methods = Some(remaining_methods);
                return Ok(false);
            }
            KeyboardInteractiveAuthResponse::InfoRequest {
                name,
                instructions,
                prompts,
            } => {
                if !name.is_empty() || !instructions.is_empty() {
                    eprintln!("{name}\n{instructions}");
                }
                let mut answers = Vec::with_capacity(prompts.len());
                for p in prompts {
                    let prompter = s.prompter.clone();
                    let answer = blocking(move || {
                        if p.echo {
                            prompter.visible(&p.prompt)
                        } else {
                            prompter.secret(&p.prompt)
                        }
                    })
                    .await?;
                    let Some(answer) = answer else {
                        tried
                            .0
                            .push("keyboard-interactive (nobody to answer)".into());
                        return Ok(false);
                    };
                    answers.push(answer);
                }
                step = auth_call(
                    handle
                        .authenticate_keyboard_interactive_respond(answers)
                        .await,
                )?;
            }
        }
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

/// Loads a private key, asking for its passphrase (up to three times) when it is
/// encrypted. Errors read like "wrong passphrase" or "encrypted and BatchMode is on".
async fn load_private(path: PathBuf, prompter: Prompter) -> anyhow::Result<PrivateKey> {
    tokio::task::spawn_blocking(move || {
        match load_secret_key(&path, None) {
            Ok(k) => return Ok(k),
            Err(russh::keys::Error::KeyIsEncrypted) => {}
            Err(e) => anyhow::bail!("cannot read key: {e}"),
        }
        for _ in 0..3 {
            let prompt = format!("Enter passphrase for key '{}': ", path.display());
            let Some(pass) = prompter.secret(&prompt)? else {
                anyhow::bail!("key is encrypted and there is no terminal or SSH_ASKPASS to ask for its passphrase");
            };
            match load_secret_key(&path, Some(&pass)) {
                Ok(k) => return Ok(k),
                Err(e) => debug!("passphrase for {} not accepted: {e}", path.display()),
            }
        }
        anyhow::bail!("wrong passphrase")
    })
    .await?
}

/// Signs with a key file that is only opened (and decrypted) when the server asks for a
/// signature, i.e. after it has accepted the public key.
struct FileSigner {
    path: PathBuf,
    prompter: Prompter,
}

#[derive(Debug, thiserror::Error)]
enum SignError {
    #[error("{0}")]
    Key(String),
    #[error("session closed while signing")]
    Send(#[from] russh::SendError),
}

impl russh::Signer for FileSigner {
    type Error = SignError;

    async fn auth_sign(
        &mut self,
        _key: &AgentIdentity,
        hash_alg: Option<HashAlg>,
        mut to_sign: Vec<u8>,
    ) -> Result<Vec<u8>, SignError> {
        let key = load_private(self.path.clone(), self.prompter.clone())
            .await
            .map_err(|e| SignError::Key(format!("{e:#}")))?;
        let sig: Signature = match key.key_data() {
            KeypairData::Rsa(rsa) => (rsa, hash_alg).try_sign(&to_sign),
            other => other.try_sign(&to_sign),
        }
        .map_err(|e| SignError::Key(format!("cannot sign: {e}")))?;
        let blob = sig
            .encode_vec()
            .map_err(|e| SignError::Key(format!("cannot encode signature: {e}")))?;
        blob.encode(&mut to_sign)
            .map_err(|e| SignError::Key(format!("cannot encode signature: {e}")))?;
        Ok(to_sign)
    }
}
