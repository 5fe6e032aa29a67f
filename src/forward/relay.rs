//! Moving bytes between a local stream and a tunnel stream until both directions end.

use tokio::io::{AsyncRead, AsyncWrite, copy_bidirectional_with_sizes};

/// Each direction's copy buffer. One SSH packet carries at most 32 KiB of data, so 64 KiB
/// lets a read fill two packets without growing memory per connection much.
const BUF: usize = 64 * 1024;

/// Copies both ways until both directions have seen EOF, and returns the bytes moved
/// (local to tunnel, tunnel to local).
///
/// Half-close is preserved: EOF from one side becomes a shutdown (TCP FIN or SSH
/// CHANNEL_EOF) on the other while the opposite direction keeps flowing, which is what
/// request/response protocols that signal "done" with EOF rely on. Memory stays bounded
/// by the two buffers: a slow reader stops our reads, which stops the peer's window.
pub async fn relay<L, T>(local: &mut L, tunnel: &mut T) -> std::io::Result<(u64, u64)>
where
    L: AsyncRead + AsyncWrite + Unpin + ?Sized,
    T: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    copy_bidirectional_with_sizes(local, tunnel, BUF, BUF).await
}
