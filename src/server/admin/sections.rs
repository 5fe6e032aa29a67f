//! `[admin]` and `[metrics]` as warrend.toml spells them: plain data, so the config that
//! holds them needs nothing else of the admin side.

use serde::{Deserialize, Serialize};
use std::net::SocketAddr;

/// `[admin]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// The control socket for `warrend ctl`; unset: the default place
    /// (`settings::server_socket`); `""`: no control socket. Relative to the config file.
    pub socket: Option<String>,
}

/// `[metrics]`.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsSection {
    /// Serve Prometheus metrics at `http://ADDR/metrics`; unset: no endpoint.
    pub listen: Option<SocketAddr>,
}
