//! The few ssh-agent requests authentication needs (draft-miller-ssh-agent): list the keys,
//! sign with one. The agent holds the private keys; we only ever see public blobs and
//! signatures, so this is all the client needs and all it should be able to ask.

use std::io;
use std::path::Path;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;
use warren_ssh::wire::{Put, Reader};

const REQUEST_IDENTITIES: u8 = 11;
const IDENTITIES_ANSWER: u8 = 12;
const SIGN_REQUEST: u8 = 13;
const SIGN_RESPONSE: u8 = 14;
const FAILURE: u8 = 5;

/// Sign flags: which SHA-2 variant an RSA key signs with (never SHA-1 `ssh-rsa`).
const RSA_SHA2_256: u32 = 2;
const RSA_SHA2_512: u32 = 4;

/// An agent answer longer than this is refused rather than buffered: OpenSSH's own agent
/// caps messages at 256 KiB, and a list of keys or a signature is far smaller.
const MAX_MESSAGE: usize = 256 * 1024;

/// One key the agent offers: its public blob (a plain key or a certificate) and comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub blob: Vec<u8>,
    pub comment: String,
}

/// A connection to an ssh-agent.
pub struct Agent<S = UnixStream> {
    stream: S,
}

impl Agent {
    pub async fn connect(path: &Path) -> io::Result<Agent> {
        Ok(Agent {
            stream: UnixStream::connect(path).await?,
        })
    }
}

fn malformed(e: warren_ssh::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("ssh-agent: {e}"))
}

impl<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin> Agent<S> {
    async fn call(&mut self, request: &[u8]) -> io::Result<Vec<u8>> {
        let mut framed = Vec::with_capacity(request.len() + 4);
        framed.put_string(request);
        self.stream.write_all(&framed).await?;
        let len = self.stream.read_u32().await? as usize;
        if len == 0 || len > MAX_MESSAGE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("ssh-agent: answer of {len} bytes refused"),
            ));
        }
        let mut answer = vec![0u8; len];
        self.stream.read_exact(&mut answer).await?;
        Ok(answer)
    }

    /// The keys the agent holds, in its order.
    pub async fn identities(&mut self) -> io::Result<Vec<Identity>> {
        let answer = self.call(&[REQUEST_IDENTITIES]).await?;
        parse_identities(&answer).map_err(malformed)
    }

    /// Has the agent sign `data` with the key `blob` as `alg` (a plain or certificate
    /// algorithm name); returns the SSH signature blob.
    pub async fn sign(&mut self, blob: &[u8], alg: &str, data: &[u8]) -> io::Result<Vec<u8>> {
        let base = alg.strip_suffix("-cert-v01@openssh.com").unwrap_or(alg);
        let flags = match base {
            "rsa-sha2-256" => RSA_SHA2_256,
            "rsa-sha2-512" => RSA_SHA2_512,
            _ => 0,
        };
        let mut req = vec![SIGN_REQUEST];
        req.put_string(blob);
        req.put_string(data);
        req.put_u32(flags);
        let answer = self.call(&req).await?;
        match answer[0] {
            SIGN_RESPONSE => {
                let mut r = Reader::new(&answer[1..], "agent signature");
                let sig = r.string().map_err(malformed)?.to_vec();
                // The agent must have signed with the algorithm we asked for: a server
                // refuses an ssh-rsa (SHA-1) signature under an rsa-sha2 name.
                let name = Reader::new(&sig, "agent signature")
                    .utf8()
                    .map_err(malformed)?
                    .to_owned();
                if name != base {
                    return Err(io::Error::other(format!(
                        "the agent signed with {name} instead of {base}"
                    )));
                }
                Ok(sig)
            }
            FAILURE => Err(io::Error::other("the agent refused to sign")),
            other => Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("ssh-agent: unexpected answer {other} to a sign request"),
            )),
        }
    }
}

fn parse_identities(answer: &[u8]) -> warren_ssh::Result<Vec<Identity>> {
    let mut r = Reader::new(answer, "agent identities");
    if r.u8()? != IDENTITIES_ANSWER {
        return Err(warren_ssh::Error::Malformed("agent identities"));
    }
    let n = r.u32()?;
    // Each entry takes at least 8 bytes: a count beyond that is a lie, not an allocation.
    if n as usize > r.remaining().len() / 8 {
        return Err(warren_ssh::Error::Malformed("agent identities"));
    }
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let blob = r.string()?.to_vec();
        let comment = String::from_utf8_lossy(r.string()?).into_owned();
        out.push(Identity { blob, comment });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::duplex;

    /// A scripted agent: reads one framed request, checks it, writes `reply` (raw bytes).
    async fn scripted(expect: Vec<u8>, reply: Vec<u8>) -> Agent<tokio::io::DuplexStream> {
        let (ours, mut theirs) = duplex(1 << 20);
        tokio::spawn(async move {
            let len = theirs.read_u32().await.unwrap() as usize;
            let mut req = vec![0u8; len];
            theirs.read_exact(&mut req).await.unwrap();
            assert_eq!(req, expect);
            theirs.write_all(&reply).await.unwrap();
        });
        Agent { stream: ours }
    }

    fn framed(payload: &[u8]) -> Vec<u8> {
        let mut v = Vec::new();
        v.put_string(payload);
        v
    }

    #[tokio::test]
    async fn lists_identities_as_the_agent_sends_them() {
        let mut answer = vec![IDENTITIES_ANSWER];
        answer.put_u32(2);
        answer.put_string(b"blob-one");
        answer.put_string(b"alice@laptop");
        answer.put_string(b"blob-two");
        answer.put_string(b"");
        let mut agent = scripted(vec![REQUEST_IDENTITIES], framed(&answer)).await;
        let ids = agent.identities().await.unwrap();
        assert_eq!(
            ids,
            vec![
                Identity {
                    blob: b"blob-one".to_vec(),
                    comment: "alice@laptop".into()
                },
                Identity {
                    blob: b"blob-two".to_vec(),
                    comment: String::new()
                },
            ]
        );
    }

    #[tokio::test]
    async fn hostile_counts_and_lengths_are_refused() {
        let mut lying = vec![IDENTITIES_ANSWER];
        lying.put_u32(u32::MAX);
        let mut agent = scripted(vec![REQUEST_IDENTITIES], framed(&lying)).await;
        assert!(agent.identities().await.is_err());

        let mut truncated = vec![IDENTITIES_ANSWER];
        truncated.put_u32(1);
        truncated.put_u32(100);
        truncated.extend_from_slice(b"short");
        let mut agent = scripted(vec![REQUEST_IDENTITIES], framed(&truncated)).await;
        assert!(agent.identities().await.is_err());

        let mut huge = Vec::new();
        huge.put_u32(u32::MAX);
        let mut agent = scripted(vec![REQUEST_IDENTITIES], huge).await;
        let e = agent.identities().await.unwrap_err();
        assert!(e.to_string().contains("refused"), "{e}");
    }

    #[tokio::test]
    async fn rsa_sign_requests_ask_for_sha2_and_check_the_answer() {
        let mut req = vec![SIGN_REQUEST];
        req.put_string(b"rsa-blob");
        req.put_string(b"to sign");
        req.put_u32(RSA_SHA2_512);
        let mut sig = Vec::new();
        sig.put_string(b"rsa-sha2-512");
        sig.put_string(b"raw");
        let mut answer = vec![SIGN_RESPONSE];
        answer.put_string(&sig);
        let mut agent = scripted(req.clone(), framed(&answer)).await;
        assert_eq!(
            agent
                .sign(b"rsa-blob", "rsa-sha2-512", b"to sign")
                .await
                .unwrap(),
            sig
        );

        // An agent that downgrades to SHA-1 is caught here, not by the server.
        let mut sha1 = Vec::new();
        sha1.put_string(b"ssh-rsa");
        sha1.put_string(b"raw");
        let mut answer = vec![SIGN_RESPONSE];
        answer.put_string(&sha1);
        let mut agent = scripted(req, framed(&answer)).await;
        assert!(
            agent
                .sign(b"rsa-blob", "rsa-sha2-512", b"to sign")
                .await
                .is_err()
        );

        let mut req = vec![SIGN_REQUEST];
        req.put_string(b"cert-blob");
        req.put_string(b"x");
        req.put_u32(0);
        let mut agent = scripted(req, framed(&[FAILURE])).await;
        let e = agent
            .sign(b"cert-blob", "ssh-ed25519-cert-v01@openssh.com", b"x")
            .await
            .unwrap_err();
        assert!(e.to_string().contains("refused"), "{e}");
    }
}
