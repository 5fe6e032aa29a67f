//! `warrend -T`: the configuration as it will be used, every default written out and every
//! relative path resolved, so an operator sees what a start would do without reading the
//! code for defaults (as `sshd -T` does).

use super::{OneOrMany, ServerConfig};
use crate::server::address::DEFAULT_DENY_NETWORKS;

impl ServerConfig {
    /// This configuration as TOML with the defaults filled in: the state directory, host
    /// key and audit paths resolved, the built-in deny list, and each user's effective
    /// principals, gateway_ports and deny settings.
    pub fn effective_toml(&self) -> Result<String, toml::ser::Error> {
        let mut out = self.clone();
        out.server.state_dir = Some(self.state_dir.clone());
        out.server.host_keys = self.host_key_paths();
        out.server.audit_log = match self.audit_destination() {
            super::AuditDestination::Stdout => "stdout".into(),
            super::AuditDestination::File(p) => p.display().to_string(),
        };
        let deny: Vec<String> = match &self.forwarding.deny_networks {
            Some(list) => list.clone(),
            None => DEFAULT_DENY_NETWORKS
                .iter()
                .map(|s| s.to_string())
                .collect(),
        };
        let deny_host = self.forwarding.deny_host_addresses.unwrap_or(true);
        out.forwarding.deny_networks = Some(deny.clone());
        out.forwarding.deny_host_addresses = Some(deny_host);
        if let Some(ca) = &mut out.user_ca
            && let Some(file) = &ca.keys_file
        {
            ca.keys_file = Some(self.resolve(file));
        }
        for (name, user) in &mut out.users {
            user.principals = Some(self.principals(name));
            user.gateway_ports
                .get_or_insert(self.forwarding.gateway_ports);
            user.deny_networks.get_or_insert_with(|| deny.clone());
            user.deny_host_addresses.get_or_insert(deny_host);
            user.authorized_keys = match user.authorized_keys.paths() {
                [] => OneOrMany::None,
                paths => OneOrMany::Many(paths.iter().map(|p| self.resolve(p)).collect()),
            };
        }
        toml::to_string(&out)
    }
}
