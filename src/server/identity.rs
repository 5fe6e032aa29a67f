//! Who a session logged in as and what that allows: what every channel of the session
//! is judged and charged by. Kept apart from the connection handler so the data path
//! (`forward/`) can read it without depending on the handler.

use super::config::ServerConfig;
use super::key_options::KeyOptions;
use super::policy::UserPolicy;
use crate::forward::budget::Budget;
use std::sync::Arc;

/// The authenticated identity and what its key allows.
#[derive(Clone)]
pub struct Identity {
    pub user: String,
    pub key_fp: String,
    pub options: KeyOptions,
    pub policy: UserPolicy,
    pub config: Arc<ServerConfig>,
    /// `publickey` or `certificate`.
    pub method: String,
    /// This session's open forwarded channels (`max_channels_per_session`), inside the
    /// user's and the server's.
    pub channels: Arc<Budget>,
    /// This session's -R listeners and names (`max_listeners_per_session`), inside the
    /// user's and the server's.
    pub listeners: Arc<Budget>,
}
