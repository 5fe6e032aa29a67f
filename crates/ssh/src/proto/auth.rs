//! User authentication (RFC 4252, keyboard-interactive RFC 4256), both roles.
//!
//! The core verifies publickey signatures itself (it alone knows the session id), but every
//! decision — which key, which user, certificates and their validity — is the application's:
//! it gets the parsed key or certificate in [`Event::AuthRequest`], so an expired certificate
//! reaches the audit log instead of being dropped before anyone sees it.

use std::collections::VecDeque;

use bytes::Bytes;
use tracing::debug;

use super::config::Role;
use super::event::{AuthMethod, AuthReply, Event, RequestId};
use super::session::Session;
use crate::error::{Error, Result};
use crate::hostkey;
use crate::msg;
use crate::wire::{Put, Reader};

const SERVICE_USERAUTH: &[u8] = b"ssh-userauth";
const SERVICE_CONNECTION: &[u8] = b"ssh-connection";

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Phase {
    /// Before the first key exchange finished.
    Kex,
    /// Client: SERVICE_REQUEST sent, waiting for SERVICE_ACCEPT.
    AwaitingService,
    Ready,
    Authenticated,
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum LastMethod {
    Other,
    PublicKey,
    KeyboardInteractive,
}

pub(crate) struct AuthState {
    role: Role,
    phase: Phase,
    /// Client: requests made before SERVICE_ACCEPT, sent once it arrives.
    queued: Vec<Vec<u8>>,
    last: LastMethod,
    /// Client: signature algorithms the server announced in EXT_INFO (RFC 8308).
    pub(crate) server_sig_algs: Option<Vec<String>>,
    /// Server: auth requests waiting for the application's answer, in arrival order.
    pending: VecDeque<(RequestId, String, Option<AuthReply>)>,
}

impl AuthState {
    pub(crate) fn new(role: Role) -> Self {
        AuthState {
            role,
            phase: Phase::Kex,
            queued: Vec::new(),
            last: LastMethod::Other,
            server_sig_algs: None,
            pending: VecDeque::new(),
        }
    }

    pub(crate) fn is_authenticated(&self) -> bool {
        self.phase == Phase::Authenticated
    }
}

/// The bytes a client signs for publickey authentication (RFC 4252 §7).
pub fn publickey_signed_data(session_id: &[u8], user: &str, alg: &str, key_blob: &[u8]) -> Vec<u8> {
    let mut d = Vec::with_capacity(session_id.len() + key_blob.len() + 128);
    d.put_string(session_id);
    d.put_u8(msg::USERAUTH_REQUEST);
    d.put_string(user.as_bytes());
    d.put_string(SERVICE_CONNECTION);
    d.put_string(b"publickey");
    d.put_bool(true);
    d.put_string(alg.as_bytes());
    d.put_string(key_blob);
    d
}

impl Session {
    pub(crate) fn auth_on_kex_done(&mut self) -> Result<()> {
        if self.auth.phase != Phase::Kex {
            return Ok(());
        }
        match self.auth.role {
            Role::Client => {
                let mut p = vec![msg::SERVICE_REQUEST];
                p.put_string(SERVICE_USERAUTH);
                self.send_app(p)?;
                self.auth.phase = Phase::AwaitingService;
            }
            Role::Server => self.auth.phase = Phase::Ready,
        }
        Ok(())
    }

    pub(crate) fn on_auth_message(&mut self, p: Bytes) -> Result<()> {
        match (self.auth.role, p[0]) {
            (Role::Client, msg::SERVICE_ACCEPT) if self.auth.phase == Phase::AwaitingService => {
                self.auth.phase = Phase::Ready;
                for q in std::mem::take(&mut self.auth.queued) {
                    self.send_app(q)?;
                }
                self.events.push_back(Event::AuthReady);
                Ok(())
            }
            (Role::Client, msg::EXT_INFO) => {
                let mut r = Reader::new(&p[1..], "EXT_INFO");
                let n = r.u32()?;
                for _ in 0..n.min(64) {
                    let name = r.string()?;
                    let value = r.string()?;
                    if name == b"server-sig-algs" {
                        let v = String::from_utf8_lossy(value);
                        self.auth.server_sig_algs = Some(v.split(',').map(str::to_owned).collect());
                    }
                }
                Ok(())
            }
            (Role::Client, msg::USERAUTH_BANNER) => {
                let mut r = Reader::new(&p[1..], "USERAUTH_BANNER");
                let text = String::from_utf8_lossy(r.string()?).into_owned();
                self.events.push_back(Event::Banner(text));
                Ok(())
            }
            (Role::Client, msg::USERAUTH_SUCCESS) if self.auth.phase == Phase::Ready => {
                self.auth.phase = Phase::Authenticated;
                self.transport.set_authenticated();
                self.events.push_back(Event::AuthSuccess);
                Ok(())
            }
            (Role::Client, msg::USERAUTH_FAILURE) if self.auth.phase == Phase::Ready => {
                let mut r = Reader::new(&p[1..], "USERAUTH_FAILURE");
                let methods = r.name_list()?;
                let partial = r.bool()?;
                self.events
                    .push_back(Event::AuthFailure { methods, partial });
                Ok(())
            }
            (Role::Client, 60) if self.auth.phase == Phase::Ready => match self.auth.last {
                LastMethod::PublicKey => {
                    let mut r = Reader::new(&p[1..], "USERAUTH_PK_OK");
                    let alg = r.utf8()?.to_owned();
                    let key_blob = r.string()?.to_vec();
                    self.events.push_back(Event::AuthPkOk { alg, key_blob });
                    Ok(())
                }
                LastMethod::KeyboardInteractive => {
                    let mut r = Reader::new(&p[1..], "USERAUTH_INFO_REQUEST");
                    let name = String::from_utf8_lossy(r.string()?).into_owned();
                    let instruction = String::from_utf8_lossy(r.string()?).into_owned();
                    let _lang = r.string()?;
                    let n = r.u32()?;
                    if n > 64 {
                        return Err(Error::Protocol(
                            "too many keyboard-interactive prompts".into(),
                        ));
                    }
                    let mut prompts = Vec::new();
                    for _ in 0..n {
                        let prompt = String::from_utf8_lossy(r.string()?).into_owned();
                        prompts.push((prompt, r.bool()?));
                    }
                    self.events.push_back(Event::AuthInfoRequest {
                        name,
                        instruction,
                        prompts,
                    });
                    Ok(())
                }
                LastMethod::Other => Err(Error::Protocol("unexpected userauth message 60".into())),
            },
            // RFC 8308 §2.3: a client may send its own EXT_INFO (asyncssh does); none of its
            // extensions change what this server does.
            (Role::Server, msg::EXT_INFO) => Ok(()),
            (Role::Server, msg::SERVICE_REQUEST) => {
                let mut r = Reader::new(&p[1..], "SERVICE_REQUEST");
                if r.string()? != SERVICE_USERAUTH || self.auth.phase != Phase::Ready {
                    self.transport.disconnect(7, "service not available");
                    return Ok(());
                }
                let mut a = vec![msg::SERVICE_ACCEPT];
                a.put_string(SERVICE_USERAUTH);
                self.send_app(a)
            }
            (Role::Server, msg::USERAUTH_REQUEST) => self.on_userauth_request(&p),
            (Role::Server, msg::USERAUTH_INFO_RESPONSE) if self.auth.phase == Phase::Ready => {
                let mut r = Reader::new(&p[1..], "USERAUTH_INFO_RESPONSE");
                let n = r.u32()?;
                if n > 64 {
                    return Err(Error::Protocol(
                        "too many keyboard-interactive responses".into(),
                    ));
                }
                let mut responses = Vec::new();
                for _ in 0..n {
                    responses.push(String::from_utf8_lossy(r.string()?).into_owned());
                }
                let user = self
                    .auth
                    .pending
                    .back()
                    .map(|p| p.1.clone())
                    .unwrap_or_default();
                let id = self.next_request_id();
                self.auth.pending.push_back((id, user.clone(), None));
                let method = AuthMethod::KeyboardInteractiveResponses { responses };
                self.events
                    .push_back(Event::AuthRequest { id, user, method });
                Ok(())
            }
            (_, n) if self.auth.phase == Phase::Authenticated && (50..=79).contains(&n) => {
                // RFC 4252 §5.1: requests after success are ignored.
                Ok(())
            }
            (_, n) => Err(Error::Protocol(format!(
                "unexpected authentication message {n}"
            ))),
        }
    }

    /// Refuses a request the application need not see (wrong service, password change, a
    /// key that does not parse, an unknown method), in its place among the pending replies.
    fn refuse_at_once(&mut self, id: RequestId, user: String) -> Result<()> {
        let reject = AuthReply::Reject {
            methods: vec![],
            partial: false,
        };
        self.auth.pending.push_back((id, user, Some(reject)));
        self.flush_auth_replies()
    }

    fn on_userauth_request(&mut self, p: &[u8]) -> Result<()> {
        if self.auth.phase == Phase::Authenticated {
            return Ok(());
        }
        if self.auth.phase != Phase::Ready {
            return Err(Error::Protocol(
                "USERAUTH_REQUEST before the service was accepted".into(),
            ));
        }
        if self.auth.pending.len() >= 4 {
            return Err(Error::Protocol(
                "too many authentication requests in flight".into(),
            ));
        }
        let mut r = Reader::new(&p[1..], "USERAUTH_REQUEST");
        let user = r.utf8()?.to_owned();
        let service = r.string()?;
        let method_name = r.utf8()?;
        let id = self.next_request_id();
        if service != SERVICE_CONNECTION {
            return self.refuse_at_once(id, user);
        }
        let method = match method_name {
            "none" => AuthMethod::None,
            "password" => {
                let change = r.bool()?;
                let password = String::from_utf8_lossy(r.string()?).into_owned();
                if change {
                    // Password change is not offered; treat like a wrong password.
                    return self.refuse_at_once(id, user);
                }
                AuthMethod::Password { password }
            }
            "publickey" => {
                let signed = r.bool()?;
                let alg = r.utf8()?.to_owned();
                let key_blob = r.string()?.to_vec();
                let signature = if signed {
                    Some(r.string()?.to_vec())
                } else {
                    None
                };
                let parsed = match signature {
                    Some(sig) => {
                        let sid = self.transport.session_id().unwrap_or_default().to_vec();
                        let data = publickey_signed_data(&sid, &user, &alg, &key_blob);
                        match hostkey::verify(&alg, &key_blob, &data, &sig) {
                            Ok(k) => Some((k, Some(true))),
                            Err(e) => {
                                debug!(error = %e, "publickey signature rejected");
                                hostkey::parse_key_blob(&key_blob)
                                    .ok()
                                    .map(|k| (k, Some(false)))
                            }
                        }
                    }
                    None => hostkey::parse_key_blob(&key_blob).ok().map(|k| (k, None)),
                };
                match parsed {
                    Some((key, signature)) => AuthMethod::PublicKey {
                        alg,
                        key,
                        key_blob,
                        signature,
                    },
                    None => {
                        // A key we cannot parse can never be accepted; say so without bothering the application.
                        return self.refuse_at_once(id, user);
                    }
                }
            }
            "keyboard-interactive" => {
                let _lang = r.string()?;
                let submethods = String::from_utf8_lossy(r.string()?).into_owned();
                AuthMethod::KeyboardInteractive { submethods }
            }
            _ => {
                return self.refuse_at_once(id, user);
            }
        };
        self.auth.pending.push_back((id, user.clone(), None));
        self.events
            .push_back(Event::AuthRequest { id, user, method });
        Ok(())
    }

    /// Server: answers an [`Event::AuthRequest`]. A `Reject` with empty `methods` is filled with
    /// the methods the server config allows by the caller; the core sends what it is given.
    pub fn auth_reply(&mut self, id: RequestId, reply: AuthReply) {
        if let Some(slot) = self.auth.pending.iter_mut().find(|p| p.0 == id) {
            slot.2 = Some(reply);
        }
        if let Err(e) = self.flush_auth_replies() {
            self.fail(&e);
        }
    }

    fn flush_auth_replies(&mut self) -> Result<()> {
        while let Some((_, _, Some(_))) = self.auth.pending.front() {
            let (_, _, reply) = self.auth.pending.pop_front().expect("front exists");
            let reply = reply.expect("matched Some");
            let mut p = Vec::new();
            match reply {
                AuthReply::Accept => {
                    p.put_u8(msg::USERAUTH_SUCCESS);
                    self.send_app(p)?;
                    self.auth.phase = Phase::Authenticated;
                    self.auth.pending.clear();
                    self.transport.set_authenticated();
                    return Ok(());
                }
                AuthReply::Reject { methods, partial } => {
                    p.put_u8(msg::USERAUTH_FAILURE);
                    p.put_name_list(&methods);
                    p.put_bool(partial);
                }
                AuthReply::PkOk => {
                    // Echo alg and key from the request: the application only said yes.
                    return Err(Error::Protocol("PkOk must be sent with auth_pk_ok".into()));
                }
                AuthReply::InfoRequest {
                    name,
                    instruction,
                    prompts,
                } => {
                    p.put_u8(msg::USERAUTH_INFO_REQUEST);
                    p.put_string(name.as_bytes());
                    p.put_string(instruction.as_bytes());
                    p.put_string(b"");
                    p.put_u32(prompts.len() as u32);
                    for (text, echo) in prompts {
                        p.put_string(text.as_bytes());
                        p.put_bool(echo);
                    }
                }
            }
            self.send_app(p)?;
        }
        Ok(())
    }

    /// Server: answers a publickey probe with USERAUTH_PK_OK for this key.
    pub fn auth_pk_ok(&mut self, id: RequestId, alg: &str, key_blob: &[u8]) {
        let Some(pos) = self.auth.pending.iter().position(|p| p.0 == id) else {
            return;
        };
        if pos != 0 {
            // Only in-order answers are possible for PK_OK; probes are never pipelined by real clients.
            self.auth.pending[pos].2 = Some(AuthReply::Reject {
                methods: vec!["publickey".into()],
                partial: false,
            });
            return;
        }
        self.auth.pending.pop_front();
        let mut p = vec![msg::USERAUTH_PK_OK];
        p.put_string(alg.as_bytes());
        p.put_string(key_blob);
        self.send_app_or_fail(p);
        if let Err(e) = self.flush_auth_replies() {
            self.fail(&e);
        }
    }

    /// Server: a banner shown before authentication (sshd's Banner).
    pub fn auth_banner(&mut self, text: &str) {
        let mut p = vec![msg::USERAUTH_BANNER];
        p.put_string(text.as_bytes());
        p.put_string(b"");
        self.send_app_or_fail(p);
    }

    fn client_request(
        &mut self,
        user: &str,
        method: &str,
        last: LastMethod,
        body: impl FnOnce(&mut Vec<u8>),
    ) {
        let mut p = vec![msg::USERAUTH_REQUEST];
        p.put_string(user.as_bytes());
        p.put_string(SERVICE_CONNECTION);
        p.put_string(method.as_bytes());
        body(&mut p);
        self.auth.last = last;
        if self.auth.phase == Phase::Ready {
            self.send_app_or_fail(p);
        } else {
            self.auth.queued.push(p);
        }
    }

    pub fn auth_none(&mut self, user: &str) {
        self.client_request(user, "none", LastMethod::Other, |_| {});
    }

    pub fn auth_password(&mut self, user: &str, password: &str) {
        self.client_request(user, "password", LastMethod::Other, |p| {
            p.put_bool(false);
            p.put_string(password.as_bytes());
        });
    }

    /// Asks whether the server would accept this key, without proving possession (no agent
    /// round trip or passphrase prompt for keys the server would refuse anyway).
    pub fn auth_publickey_probe(&mut self, user: &str, alg: &str, key_blob: &[u8]) {
        self.client_request(user, "publickey", LastMethod::PublicKey, |p| {
            p.put_bool(false);
            p.put_string(alg.as_bytes());
            p.put_string(key_blob);
        });
    }

    /// What the key must sign for [`Self::auth_publickey_signed`]; None before the first kex.
    pub fn publickey_data_to_sign(
        &self,
        user: &str,
        alg: &str,
        key_blob: &[u8],
    ) -> Option<Vec<u8>> {
        let sid = self.transport.session_id()?;
        Some(publickey_signed_data(sid, user, alg, key_blob))
    }

    pub fn auth_publickey_signed(
        &mut self,
        user: &str,
        alg: &str,
        key_blob: &[u8],
        signature_blob: &[u8],
    ) {
        self.client_request(user, "publickey", LastMethod::PublicKey, |p| {
            p.put_bool(true);
            p.put_string(alg.as_bytes());
            p.put_string(key_blob);
            p.put_string(signature_blob);
        });
    }

    pub fn auth_keyboard_interactive(&mut self, user: &str) {
        self.client_request(
            user,
            "keyboard-interactive",
            LastMethod::KeyboardInteractive,
            |p| {
                p.put_string(b"");
                p.put_string(b"");
            },
        );
    }

    pub fn auth_info_response(&mut self, responses: &[String]) {
        let mut p = vec![msg::USERAUTH_INFO_RESPONSE];
        p.put_u32(responses.len() as u32);
        for r in responses {
            p.put_string(r.as_bytes());
        }
        self.send_app_or_fail(p);
    }

    /// Client: the signature algorithms the server said it accepts (EXT_INFO), if it said.
    pub fn server_sig_algs(&self) -> Option<&[String]> {
        self.auth.server_sig_algs.as_deref()
    }

    pub fn is_authenticated(&self) -> bool {
        self.auth.is_authenticated()
    }
}
