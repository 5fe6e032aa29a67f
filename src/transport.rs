//! How the SSH connection's own socket is read, shared by the client and the server.
//!
//! russh reads every packet with two `read_exact` calls straight on the stream: the
//! length block, then the rest. On a bulk transfer that is two `recvfrom` system calls
//! per 32 KiB packet, and each one usually returns as soon as part of the packet has
//! arrived, so the receiving side wakes up far more often than the data warrants.
//! OpenSSH reads whatever the socket holds (often 100+ KiB) in one call. Putting a read
//! buffer between russh and the socket does the same: one system call fills the buffer
//! with several packets and russh's small reads are served from memory. Measured on
//! loopback (2 GiB through `-L` from sshd): 131,611 `recvfrom` calls without it.

use tokio::io::{AsyncRead, BufReader};

/// Read buffer per SSH connection. A few packets' worth: large enough that one system
/// call drains what a loopback or LAN socket typically holds, small enough not to matter
/// per connection (the pages are only touched once that much data arrives at once).
pub const READ_BUFFER: usize = 256 * 1024;

/// Wraps an SSH connection's byte stream (TCP, a proxy command's pipes, a jump host's
/// channel) so russh's reads are batched. Writes pass straight through.
pub fn buffered<S: AsyncRead>(stream: S) -> BufReader<S> {
    BufReader::with_capacity(READ_BUFFER, stream)
}
