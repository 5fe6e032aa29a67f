//! Sessions of Warren's own SSH engine, driven by the benchmark itself: for runs that
//! need more sessions, names or channels than a process per client allows (many
//! published names, more connections than a process may hold descriptors).

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use warren_ssh::driver::{self, AuthOutcome, Events, Handle, Incoming};
use warren_ssh::hostkey::ParsedKey;
use warren_ssh::proto::{Config, Role};
use warren_ssh::ssh_key::PrivateKey;

const LOGIN_TIMEOUT: Duration = Duration::from_secs(20);

/// A client's settings, with room for `channels` open at once (the engine's default,
/// 1,024, is a bound on what a server may open towards a client).
pub fn client_config(channels: usize) -> Config {
    let mut c = Config::new(Role::Client);
    c.max_channels = c.max_channels.max(channels);
    c
}

/// Logs in to the server on 127.0.0.1:`port` with `key`, refusing any host key but
/// `host_public` (an OpenSSH public key line). The session's events are the caller's.
pub async fn login(
    port: u16,
    config: Config,
    key: &PrivateKey,
    user: &str,
    host_public: &str,
) -> Result<(Handle, Events)> {
    let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    tcp.set_nodelay(true)?;
    let (handle, mut incoming, run) = driver::start(tcp, Arc::new(config));
    tokio::spawn(run);
    let shown = match tokio::time::timeout(LOGIN_TIMEOUT, incoming.recv()).await {
        Ok(Some(Incoming::HostKey(ParsedKey::Plain(k)))) => k.to_openssh().unwrap_or_default(),
        other => bail!("expected the host key, got {other:?}"),
    };
    if shown.split_whitespace().nth(1) != host_public.split_whitespace().nth(1) {
        bail!("the server on port {port} showed host key {shown}, not {host_public}");
    }
    let outcome = tokio::time::timeout(LOGIN_TIMEOUT, handle.auth_publickey(user, key))
        .await
        .context("authentication timed out")??;
    if outcome != AuthOutcome::Success {
        bail!("login refused: {outcome:?}");
    }
    Ok((handle, incoming))
}

/// Answers the session's global requests (keepalives) with a refusal, in a task, for a
/// session that expects nothing else from the server.
pub fn answer_keepalives(handle: &Handle, mut incoming: Events) {
    let h = handle.clone();
    tokio::spawn(async move {
        while let Some(ev) = incoming.recv().await {
            if let Incoming::GlobalRequest {
                request_id,
                want_reply: true,
                ..
            } = ev
            {
                h.global_reply(request_id, false, &[]);
            }
        }
    });
}
