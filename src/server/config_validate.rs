//! Checks every config field and compiles user rules, collecting one [`Problem`] per bad field.

use super::*;

/// User names end up in rule ids and log lines: keep them plain.
fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

struct Problems(Vec<Problem>);

impl Problems {
    fn push(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            field: field.into(),
            message: message.into(),
        });
    }

    /// Parses each item of a list field, recording failures under `field[i]`.
    fn each<T>(
        &mut self,
        field: &str,
        items: &[String],
        parse: impl Fn(String, &str) -> Result<T, String>,
    ) -> Vec<T> {
        let mut out = Vec::new();
        for (i, item) in items.iter().enumerate() {
            let id = format!("{field}[{i}]");
            match parse(id.clone(), item) {
                Ok(v) => out.push(v),
                Err(e) => self.push(id, e),
            }
        }
        out
    }
}

impl ServerConfig {
    /// Validates everything and compiles the per-user rules.
    pub(super) fn compile(&self) -> Result<Policy, Vec<Problem>> {
        let mut p = Problems(Vec::new());
        self.check_server(&mut p);
        self.check_limits(&mut p);
        if let Some(cluster) = &self.cluster {
            for (field, message) in cluster.problems() {
                p.push(field, message);
            }
        }

        let global_deny = match &self.forwarding.deny_networks {
            Some(list) => p.each("forwarding.deny_networks", list, deny_net),
            None => DEFAULT_DENY_NETWORKS
                .iter()
                .filter_map(|s| {
                    let net = parse_net(s).ok()?;
                    Some(DenyNet {
                        net,
                        id: format!("default deny_networks {net}"),
                    })
                })
                .collect(),
        };

        let has_ca = match &self.user_ca {
            Some(ca) => {
                p.each("user_ca.keys", &ca.keys, |_, k| {
                    PublicKey::from_openssh(k)
                        .map(|_| ())
                        .map_err(|e| format!("invalid public key: {e}"))
                });
                if ca.keys.is_empty() && ca.keys_file.is_none() {
                    p.push("user_ca", "needs keys or keys_file");
                }
                true
            }
            None => false,
        };

        let mut users = BTreeMap::new();
        for (name, cfg) in &self.users {
            let base = format!("users.{name}");
            if !valid_user_name(name) {
                p.push(
                    &base,
                    "user names may contain only letters, digits, '.', '_' and '-'",
                );
            }
            for (i, line) in cfg.keys.iter().enumerate() {
                let field = format!("{base}.keys[{i}]");
                match parse_key_line(line, &field, 1) {
                    Some(Ok(_)) => {}
                    Some(Err(e)) => p.push(field, e.reason),
                    None => p.push(field, "empty key"),
                }
            }
            if cfg.keys.is_empty() && cfg.authorized_keys.paths().is_empty() && !has_ca {
                p.push(
                    &base,
                    "no keys, no authorized_keys and no [user_ca]: this user could never log in",
                );
            }
            if let Some(principals) = &cfg.principals
                && (principals.is_empty() || principals.iter().any(String::is_empty))
            {
                p.push(format!("{base}.principals"), "must list non-empty names");
            }
            let deny_networks = match &cfg.deny_networks {
                Some(list) => p.each(&format!("{base}.deny_networks"), list, deny_net),
                None => global_deny.clone(),
            };
            // The audit names where the setting came from, so an operator can tell
            // the built-in default from their own choice.
            let deny_host_addresses =
                match (cfg.deny_host_addresses, self.forwarding.deny_host_addresses) {
                    (Some(on), _) => on.then(|| format!("{base}.deny_host_addresses")),
                    (None, Some(on)) => on.then(|| "forwarding.deny_host_addresses".to_owned()),
                    (None, None) => Some("default deny".to_owned()),
                };
            let user = UserPolicy {
                user: name.clone(),
                connect: p.each(&format!("{base}.connect"), &cfg.connect, parse_connect),
                listen: p.each(&format!("{base}.listen"), &cfg.listen, parse_listen),
                publish: p.each(&format!("{base}.publish"), &cfg.publish, parse_name_rule),
                reach: p.each(&format!("{base}.reach"), &cfg.reach, parse_name_rule),
                deny_networks,
                deny_host_addresses,
                host_addresses: Default::default(),
                gateway_ports: cfg.gateway_ports.unwrap_or(self.forwarding.gateway_ports),
            };
            users.insert(name.clone(), user);
        }

        if p.0.is_empty() {
            Ok(Policy { users })
        } else {
            Err(p.0)
        }
    }

    fn check_server(&self, p: &mut Problems) {
        let s = &self.server;
        if s.listen.is_empty() {
            p.push("server.listen", "must list at least one address");
        }
        if s.audit_log.is_empty() {
            p.push("server.audit_log", "must be \"stdout\" or a file path");
        }
        for (i, key) in s.host_keys.iter().enumerate() {
            if key.as_os_str().is_empty() {
                p.push(format!("server.host_keys[{i}]"), "empty path");
            }
        }
    }

    fn check_limits(&self, p: &mut Problems) {
        let l = &self.limits;
        let at_least_one = [
            ("max_auth_tries", l.max_auth_tries),
            ("max_failed_auth_per_source", l.max_failed_auth_per_source),
            ("max_unauthenticated", l.max_unauthenticated),
            (
                "max_unauthenticated_per_source",
                l.max_unauthenticated_per_source,
            ),
            ("max_sessions_per_user", l.max_sessions_per_user),
            ("max_channels_per_session", l.max_channels_per_session),
            ("max_channels_per_user", l.max_channels_per_user),
            ("max_channels", l.max_channels),
            ("max_listeners_per_session", l.max_listeners_per_session),
            ("max_listeners_per_user", l.max_listeners_per_user),
            ("max_listeners", l.max_listeners),
            ("keepalive_max", l.keepalive_max),
            ("max_session_channels", l.max_session_channels),
            ("max_dns_lookups", l.max_dns_lookups),
            ("max_dns_lookups_per_user", l.max_dns_lookups_per_user),
        ];
        for (field, value) in at_least_one {
            if value == 0 {
                p.push(format!("limits.{field}"), "must be at least 1");
            }
        }
        let required = [
            ("login_grace_time", l.login_grace_time),
            ("failed_auth_window", l.failed_auth_window),
            ("connect_timeout", l.connect_timeout),
            ("dns_timeout", l.dns_timeout),
        ];
        for (field, value) in required {
            if value.0.is_zero() {
                p.push(
                    format!("limits.{field}"),
                    "cannot be 0 (there is no safe 'never')",
                );
            }
        }
        if l.max_unauthenticated_per_source > l.max_unauthenticated {
            p.push(
                "limits.max_unauthenticated_per_source",
                "cannot exceed limits.max_unauthenticated",
            );
        }
        if let Some(start) = l.unauthenticated_drop_start {
            if start == 0 {
                p.push("limits.unauthenticated_drop_start", "must be at least 1");
            } else if start > l.max_unauthenticated {
                p.push(
                    "limits.unauthenticated_drop_start",
                    "cannot exceed limits.max_unauthenticated (equal to it: no early drop)",
                );
            }
        }
        if !(1..=100).contains(&l.unauthenticated_drop_rate) {
            p.push(
                "limits.unauthenticated_drop_rate",
                "must be a percentage from 1 to 100",
            );
        }
        if l.penalty_max.0.is_zero() {
            p.push(
                "limits.penalty_max",
                "cannot be 0 (set penalty_grace_exceeded and penalty_noauth to 0 to disable penalties)",
            );
        }
        for (field, value) in [
            ("penalty_grace_exceeded", l.penalty_grace_exceeded),
            ("penalty_noauth", l.penalty_noauth),
        ] {
            if value.0 > l.penalty_max.0 {
                p.push(
                    format!("limits.{field}"),
                    "cannot exceed limits.penalty_max",
                );
            }
        }
        p.each("limits.penalty_exempt", &l.penalty_exempt, |_, n| {
            parse_net(n)
        });
        // Below one SSH window a single channel's sender could not even be paused.
        const MIN_BUFFERED: u64 = 4 << 20;
        for (field, value) in [
            ("max_buffered_per_user", l.max_buffered_per_user.0),
            ("max_buffered", l.max_buffered.0),
        ] {
            if value < MIN_BUFFERED {
                p.push(format!("limits.{field}"), "must be at least 4MiB");
            }
        }
        if l.max_buffered_per_user.0 > l.max_buffered.0 {
            p.push(
                "limits.max_buffered_per_user",
                "cannot exceed limits.max_buffered",
            );
        }
        if l.max_listeners_per_user > l.max_listeners {
            p.push(
                "limits.max_listeners_per_user",
                "cannot exceed limits.max_listeners",
            );
        }
        if l.max_channels_per_user > l.max_channels {
            p.push(
                "limits.max_channels_per_user",
                "cannot exceed limits.max_channels",
            );
        }
        if l.max_dns_lookups_per_user > l.max_dns_lookups {
            p.push(
                "limits.max_dns_lookups_per_user",
                "cannot exceed limits.max_dns_lookups",
            );
        }
        if l.source_netblock_v4 > 32 {
            p.push("limits.source_netblock_v4", "must be 0..=32");
        }
        if l.source_netblock_v6 > 128 {
            p.push("limits.source_netblock_v6", "must be 0..=128");
        }
    }
}

fn deny_net(id: String, s: &str) -> Result<DenyNet, String> {
    Ok(DenyNet {
        net: parse_net(s)?,
        id,
    })
}
