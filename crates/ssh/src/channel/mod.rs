//! Per-channel flow control (RFC 4254 §5.2) and close bookkeeping, as pure state
//! machines: no I/O and no clock; every call that depends on time takes `now`.
//!
//! The receive side follows OpenSSH's rule that window is granted back only for
//! bytes the local application has consumed, so a stalled reader stops only its own
//! sender and a channel never holds more than its window in memory. On top of that
//! the window autotunes (like Linux's receive-buffer autotuning and HPN-SSH) so one
//! channel can fill a long fat link, within a [`WindowBudget`] shared by the session.

mod state;
mod window;

#[cfg(test)]
mod sim;

pub use state::ChannelState;
pub use window::{IDLE_SHRINK_AFTER, RecvWindow, SendWindow, WindowBudget, WindowPool};
