//! HTTP/1.1 message framing (RFC 9112 §6): where a body ends, and copying exactly that
//! much so the next message on the connection starts where it should.

use super::buffered::{Buffered, READ_CHUNK};
use std::io;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// Chunk-size and trailer lines are short in practice; the cap keeps a hostile peer from
/// making us buffer a "line" without end.
const MAX_LINE: usize = 8 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Framing {
    Empty,
    Length(u64),
    Chunked,
    /// Only responses: the body ends when the server closes.
    UntilClose,
}

/// Which side of a copy failed: a reader gone is a different story from a writer gone.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CopyError {
    #[error("reading: {0}")]
    Read(io::Error),
    #[error("writing: {0}")]
    Write(io::Error),
}

type Headers = [(String, Vec<u8>)];

impl Framing {
    /// A request whose length is ambiguous is refused rather than guessed at: two parties
    /// guessing differently is how requests get smuggled.
    pub(crate) fn of_request(headers: &Headers) -> Result<Framing, String> {
        let codings = transfer_codings(headers);
        let length = content_length(headers)?;
        match (codings.last(), length) {
            (Some(_), Some(_)) => Err("both Transfer-Encoding and Content-Length are set".into()),
            (Some(c), None) if c == "chunked" => Ok(Framing::Chunked),
            (Some(c), None) => Err(format!("request body with transfer coding '{c}'")),
            (None, Some(0) | None) => Ok(Framing::Empty),
            (None, Some(n)) => Ok(Framing::Length(n)),
        }
    }

    pub(crate) fn of_response(
        status: u16,
        request_method: &str,
        headers: &Headers,
    ) -> Result<Framing, String> {
        if request_method.eq_ignore_ascii_case("HEAD")
            || (100..200).contains(&status)
            || status == 204
            || status == 304
        {
            return Ok(Framing::Empty);
        }
        match transfer_codings(headers).last() {
            Some(c) if c == "chunked" => return Ok(Framing::Chunked),
            Some(_) => return Ok(Framing::UntilClose),
            None => {}
        }
        Ok(match content_length(headers)? {
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        })
    }
}

fn transfer_codings(headers: &Headers) -> Vec<String> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("transfer-encoding"))
        .flat_map(|(_, v)| tokens(v))
        .collect()
}

/// Repeated identical values are allowed (RFC 9110 §8.6); differing ones are an error.
fn content_length(headers: &Headers) -> Result<Option<u64>, String> {
    let mut found: Option<u64> = None;
    for (_, value) in headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case("content-length"))
    {
        for part in String::from_utf8_lossy(value).split(',') {
            let part = part.trim();
            let n = Some(part)
                .filter(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|p| p.parse::<u64>().ok())
                .ok_or_else(|| format!("bad Content-Length '{part}'"))?;
            if found.is_some_and(|f| f != n) {
                return Err("conflicting Content-Length values".into());
            }
            found = Some(n);
        }
    }
    Ok(found)
}

/// Copies one body from `src` to `dst`, byte for byte (chunked framing is kept, not
/// decoded), and flushes.
pub(crate) async fn copy_body<R, W>(
    src: &mut Buffered<R>,
    dst: &mut W,
    framing: Framing,
) -> Result<(), CopyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    match framing {
        Framing::Empty => {}
        Framing::Length(n) => copy_exact(src, dst, n).await?,
        Framing::Chunked => copy_chunked(src, dst).await?,
        Framing::UntilClose => copy_to_eof(src, dst).await?,
    }
    dst.flush().await.map_err(CopyError::Write)
}

async fn copy_exact<R, W>(
    src: &mut Buffered<R>,
    dst: &mut W,
    mut left: u64,
) -> Result<(), CopyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    while left > 0 {
        if src.buffered().is_empty() && src.fill(READ_CHUNK).await.map_err(CopyError::Read)? == 0 {
            return Err(CopyError::Read(io::ErrorKind::UnexpectedEof.into()));
        }
        let n = src
            .buffered()
            .len()
            .min(usize::try_from(left).unwrap_or(usize::MAX));
        let data = src.buffered().get(..n).unwrap_or_default();
        dst.write_all(data).await.map_err(CopyError::Write)?;
        src.consume(n);
        left -= n as u64;
    }
    Ok(())
}

async fn copy_to_eof<R, W>(src: &mut Buffered<R>, dst: &mut W) -> Result<(), CopyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    loop {
        if src.buffered().is_empty() && src.fill(READ_CHUNK).await.map_err(CopyError::Read)? == 0 {
            return Ok(());
        }
        let n = src.buffered().len();
        dst.write_all(src.buffered())
            .await
            .map_err(CopyError::Write)?;
        src.consume(n);
    }
}

async fn copy_chunked<R, W>(src: &mut Buffered<R>, dst: &mut W) -> Result<(), CopyError>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let invalid = |what: &str| CopyError::Read(io::Error::new(io::ErrorKind::InvalidData, what));
    loop {
        let line = src.take_line(MAX_LINE).await.map_err(CopyError::Read)?;
        let size = chunk_size(&line).ok_or_else(|| invalid("bad chunk size line"))?;
        dst.write_all(&line).await.map_err(CopyError::Write)?;
        if size == 0 {
            // Trailer fields, then the blank line that ends the message.
            loop {
                let line = src.take_line(MAX_LINE).await.map_err(CopyError::Read)?;
                dst.write_all(&line).await.map_err(CopyError::Write)?;
                if is_blank(&line) {
                    return Ok(());
                }
            }
        }
        copy_exact(src, dst, size).await?;
        let end = src.take_line(MAX_LINE).await.map_err(CopyError::Read)?;
        if !is_blank(&end) {
            return Err(invalid("chunk data longer than its size"));
        }
        dst.write_all(&end).await.map_err(CopyError::Write)?;
    }
}

fn is_blank(line: &[u8]) -> bool {
    line == b"\r\n" || line == b"\n"
}

/// The size from `1a;ext=v\r\n`; at most 16 hex digits so it cannot overflow.
fn chunk_size(line: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(line).ok()?;
    let text = text.trim_end_matches(['\r', '\n']);
    let digits = text.split(';').next()?.trim_matches([' ', '\t']);
    if digits.is_empty() || digits.len() > 16 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(digits, 16).ok()
}

/// Comma-separated header tokens, lowercased.
pub(crate) fn tokens(value: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(value)
        .split(',')
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, Vec<u8>)> {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
            .collect()
    }

    #[test]
    fn request_framing() {
        assert_eq!(Framing::of_request(&h(&[])), Ok(Framing::Empty));
        assert_eq!(
            Framing::of_request(&h(&[("content-length", "5, 5")])),
            Ok(Framing::Length(5))
        );
        assert_eq!(
            Framing::of_request(&h(&[("Transfer-Encoding", "gzip, Chunked")])),
            Ok(Framing::Chunked)
        );
        assert!(Framing::of_request(&h(&[("Content-Length", "-1")])).is_err());
        assert!(Framing::of_request(&h(&[("Content-Length", "+1")])).is_err());
        assert!(Framing::of_request(&h(&[("Content-Length", "99999999999999999999999")])).is_err());
    }

    #[test]
    fn response_framing() {
        let cl = h(&[("Content-Length", "10")]);
        assert_eq!(Framing::of_response(200, "HEAD", &cl), Ok(Framing::Empty));
        assert_eq!(Framing::of_response(304, "GET", &cl), Ok(Framing::Empty));
        assert_eq!(Framing::of_response(204, "GET", &cl), Ok(Framing::Empty));
        assert_eq!(
            Framing::of_response(200, "GET", &cl),
            Ok(Framing::Length(10))
        );
        assert_eq!(
            Framing::of_response(200, "GET", &h(&[])),
            Ok(Framing::UntilClose)
        );
        let gz = h(&[("Transfer-Encoding", "gzip"), ("Content-Length", "3")]);
        assert_eq!(
            Framing::of_response(200, "GET", &gz),
            Ok(Framing::UntilClose)
        );
    }

    async fn copy(input: &[u8], framing: Framing) -> (Result<(), CopyError>, Vec<u8>, Vec<u8>) {
        let mut src = Buffered::new(input);
        let mut out = Vec::new();
        let r = copy_body(&mut src, &mut out, framing).await;
        (r, out, src.buffered().to_vec())
    }

    #[tokio::test]
    async fn chunked_is_copied_verbatim_and_stops_at_its_end() {
        let body = b"4;x=y\r\nWiki\r\n5\r\npedia\r\n0\r\nTrailer: t\r\n\r\n";
        let mut input = body.to_vec();
        input.extend_from_slice(b"GET next");
        let (r, out, rest) = copy(&input, Framing::Chunked).await;
        r.unwrap();
        assert_eq!(out, body);
        assert_eq!(rest, b"GET next");
    }

    #[tokio::test]
    async fn bad_chunking_is_an_error() {
        for input in [
            &b"zz\r\n"[..],
            b"4\r\ntoolong\r\n",
            b"fffffffffffffffff\r\n",
            b"5\r\nab",
        ] {
            assert!(copy(input, Framing::Chunked).await.0.is_err(), "{input:?}");
        }
    }

    #[tokio::test]
    async fn length_and_close_framing() {
        let (r, out, rest) = copy(b"helloGET", Framing::Length(5)).await;
        r.unwrap();
        assert_eq!(
            (out.as_slice(), rest.as_slice()),
            (&b"hello"[..], &b"GET"[..])
        );
        assert!(copy(b"hel", Framing::Length(5)).await.0.is_err());
        let (r, out, _) = copy(b"all of it", Framing::UntilClose).await;
        r.unwrap();
        assert_eq!(out, b"all of it");
    }
}
