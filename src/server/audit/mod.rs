//! The audit log: one JSON object per line for every security-relevant event, kept apart from diagnostic logs.
//!
//! Diagnostic logs (`tracing`, on stderr) are for operators debugging the
//! server; their format and verbosity change freely. The audit log is for
//! reviewing who reached what through the bastion, so it has a stable,
//! machine-readable shape: JSON Lines, handed to the kernel as soon as the
//! writer thread gets to them (a burst in one write), so a crash loses at most
//! the events still queued. Every record carries the
//! connection id that the connection's tracing span also carries, so the
//! two streams can be joined.
//!
//! A log that cannot be written (full disk, vanished file) must not let the bastion go
//! on unaudited, nor stop auditing for good once the cause is fixed: the writer keeps
//! the batch it could not write, tries again (opening the file's path anew) until it
//! can, and meanwhile [`AuditSink::refusal`] tells the server to refuse new logins,
//! channels and listeners unless the operator chose `audit_on_failure = "continue"`.
//! A file never keeps half a line: what a failed write left is cut off again. Stdout
//! cannot take bytes back, so there the rest of the line follows on the next attempt.
//!
//! Records never contain secrets: keys appear only as fingerprints, and
//! warrend accepts no passwords.

pub mod event;
mod health;
mod sink;
mod writer;

#[cfg(test)]
mod tests;

pub use event::{AuditEvent, AuditRecord, Hop, SERVER_CONN, next_conn_id, now_rfc3339};
pub use sink::{AuditSink, MemoryAudit, QUEUE_CAPACITY};
pub use writer::{AuditWriter, RETRY_INTERVAL};
