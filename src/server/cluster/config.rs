//! `[cluster]`: what makes a warrend one node of several sharing a rendezvous namespace.
//!
//! Read once at start: the node's identity, its etcd session and its link listener live
//! as long as the process, so a reload keeps the running cluster settings (and says so
//! when the file changed them).

use super::super::limits::ConfigDuration;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use warren_ssh::ssh_key::PublicKey;

/// `[cluster]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// This node's id: unique in the cluster; in every audit record and `warrend ctl`.
    pub node: String,
    /// `host:port` the other nodes dial for this node's link (published in etcd).
    pub advertise: String,
    /// Where the link listener binds; default: `advertise`, which must then be an
    /// `ip:port`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    /// This node's private key (OpenSSH format), relative to the state directory;
    /// generated on first start. It is the node's identity on the links both ways.
    #[serde(default = "default_node_key")]
    pub key: PathBuf,
    /// Every node of the cluster (this one may be listed too, so all nodes can share
    /// one table): id -> public key line. Nothing else may open a link.
    #[serde(default)]
    pub nodes: BTreeMap<String, String>,
    /// What a publish does while etcd cannot be reached.
    #[serde(default)]
    pub when_etcd_down: WhenEtcdDown,
    /// `[cluster.etcd]`.
    pub etcd: EtcdSection,
}

fn default_node_key() -> PathBuf {
    PathBuf::from("cluster_node_ed25519_key")
}

/// `[cluster] when_etcd_down`: a publish nobody else can see is a name another node
/// might hand to someone else meanwhile, so refusing is the default; "local" keeps a
/// site's own devices reachable through this node during an etcd outage and publishes
/// the names cluster-wide once etcd is back (a name another user took meanwhile is then
/// withdrawn here, with an audit record).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum WhenEtcdDown {
    #[default]
    Refuse,
    Local,
}

/// `[cluster.etcd]`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdSection {
    /// `http://host:port` or `https://host:port`, one or more members.
    pub endpoints: Vec<String>,
    /// Every key warrend writes is under it, so clusters can share one etcd.
    #[serde(default = "default_prefix")]
    pub prefix: String,
    /// This node's lease: its names vanish this long after it dies.
    #[serde(default = "default_lease_ttl")]
    pub lease_ttl: ConfigDuration,
    /// The longest a publish waits for etcd before it is refused (or served locally).
    #[serde(default = "default_timeout")]
    pub timeout: ConfigDuration,
    /// etcd user (RBAC); the password is read from `password_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// A file holding the etcd password (never the password itself in this file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_file: Option<PathBuf>,
    /// CA certificate(s) for `https://` endpoints (PEM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// Client certificate and key (PEM), for etcd's client-cert authentication.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

fn default_prefix() -> String {
    "/warren/".into()
}

fn default_lease_ttl() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(10))
}

fn default_timeout() -> ConfigDuration {
    ConfigDuration(Duration::from_secs(2))
}

/// Node ids appear in etcd keys, audit records and log lines: keep them plain.
pub fn valid_node_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && !id.starts_with('-')
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl ClusterSection {
    /// Every problem with the section, as `(field, message)`.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        let mut push = |f: &str, m: String| p.push((format!("cluster.{f}"), m));
        if !valid_node_id(&self.node) {
            push(
                "node",
                "node ids may contain only letters, digits, '.', '_' and '-' (at most 64)".into(),
            );
        }
        match split_host_port(&self.advertise) {
            Some(_) => {}
            None => push(
                "advertise",
                format!("{:?} is not host:port", self.advertise),
            ),
        }
        if self.listen.is_none() && self.advertise.parse::<SocketAddr>().is_err() {
            push(
                "listen",
                "needed when advertise is a name rather than ip:port".into(),
            );
        }
        if self.key.as_os_str().is_empty() {
            push("key", "empty path".into());
        }
        for (id, line) in &self.nodes {
            if !valid_node_id(id) {
                push(&format!("nodes.{id}"), "not a valid node id".into());
            }
            if let Err(e) = PublicKey::from_openssh(line.trim()) {
                push(&format!("nodes.{id}"), format!("invalid public key: {e}"));
            }
        }
        if self.nodes.keys().all(|id| id == &self.node) {
            push(
                "nodes",
                "lists no other node: a cluster needs the other nodes' keys".into(),
            );
        }
        let e = &self.etcd;
        if e.endpoints.is_empty() {
            push("etcd.endpoints", "must list at least one endpoint".into());
        }
        for (i, ep) in e.endpoints.iter().enumerate() {
            let rest = ep
                .strip_prefix("http://")
                .or_else(|| ep.strip_prefix("https://"));
            if rest.and_then(split_host_port).is_none() {
                push(
                    &format!("etcd.endpoints[{i}]"),
                    format!("{ep:?} is not http://host:port or https://host:port"),
                );
            }
        }
        if !e.prefix.starts_with('/') || !e.prefix.ends_with('/') || e.prefix.len() < 2 {
            push(
                "etcd.prefix",
                "must start and end with '/' and not be the whole keyspace".into(),
            );
        }
        let ttl = e.lease_ttl.0;
        if ttl < Duration::from_secs(2) || ttl > Duration::from_secs(600) {
            push("etcd.lease_ttl", "must be between 2s and 10m".into());
        }
        if e.timeout.0.is_zero() || e.timeout.0 > ttl {
            push(
                "etcd.timeout",
                "must be more than 0 and at most lease_ttl".into(),
            );
        }
        if e.user.is_some() != e.password_file.is_some() {
            push("etcd.user", "user and password_file go together".into());
        }
        if e.cert.is_some() != e.key.is_some() {
            push("etcd.cert", "cert and key go together".into());
        }
        p
    }

    /// Where the link listener binds.
    pub fn link_listen(&self) -> Option<SocketAddr> {
        self.listen.or_else(|| self.advertise.parse().ok())
    }
}

/// `host:port` or `[v6]:port`, with a port that is not 0.
fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port: u16 = port.parse().ok().filter(|p| *p != 0)?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty() && !host.contains(char::is_whitespace)).then_some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(toml_text: &str) -> ClusterSection {
        toml::from_str(toml_text).expect("parses")
    }

    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl";

    #[test]
    fn a_minimal_section_is_valid_and_gets_the_defaults() {
        let s = section(&format!(
            "node = \"n1\"\nadvertise = \"127.0.0.1:7001\"\n[nodes]\nn2 = \"{KEY}\"\n[etcd]\nendpoints = [\"http://127.0.0.1:2379\"]\n"
        ));
        assert_eq!(s.problems(), Vec::<(String, String)>::new());
        assert_eq!(s.etcd.prefix, "/warren/");
        assert_eq!(s.etcd.lease_ttl.0, Duration::from_secs(10));
        assert_eq!(s.when_etcd_down, WhenEtcdDown::Refuse);
        assert_eq!(s.link_listen(), Some("127.0.0.1:7001".parse().unwrap()));
    }

    #[test]
    fn every_bad_field_is_named() {
        let s = section(
            "node = \"a b\"\nadvertise = \"nohost\"\n[nodes]\nn2 = \"not a key\"\n[etcd]\nendpoints = [\"127.0.0.1:2379\"]\nprefix = \"/\"\nlease_ttl = \"1s\"\nuser = \"u\"\n",
        );
        let fields: Vec<String> = s.problems().into_iter().map(|(f, _)| f).collect();
        for f in [
            "cluster.node",
            "cluster.advertise",
            "cluster.listen",
            "cluster.nodes.n2",
            "cluster.etcd.endpoints[0]",
            "cluster.etcd.prefix",
            "cluster.etcd.lease_ttl",
            "cluster.etcd.user",
        ] {
            assert!(fields.iter().any(|x| x == f), "{f} not in {fields:?}");
        }
    }

    #[test]
    fn a_node_table_listing_only_this_node_is_refused() {
        let s = section(&format!(
            "node = \"n1\"\nadvertise = \"127.0.0.1:7001\"\n[nodes]\nn1 = \"{KEY}\"\n[etcd]\nendpoints = [\"http://127.0.0.1:2379\"]\n"
        ));
        assert!(s.problems().iter().any(|(f, _)| f == "cluster.nodes"));
    }

    /// The commented `[cluster]` block of examples/warrend.toml, uncommented, is a valid
    /// section with every field: the example cannot drift from the code.
    #[test]
    fn the_example_section_parses_and_is_valid() {
        let example = include_str!("../../../examples/warrend.toml");
        let start = example
            .find("# [cluster]\n")
            .expect("example has [cluster]");
        let block: String = example[start..]
            .lines()
            .filter(|l| !l.starts_with("# #") && l.starts_with("# ") || *l == "#")
            .map(|l| l.trim_start_matches('#').trim_start())
            .map(|l| format!("{l}\n"))
            .collect();
        #[derive(serde::Deserialize)]
        struct File {
            cluster: ClusterSection,
        }
        let file: File = toml::from_str(&block).unwrap_or_else(|e| panic!("{e}\n{block}"));
        let c = file.cluster;
        assert_eq!(c.problems(), Vec::<(String, String)>::new());
        assert_eq!(c.node, "n1");
        assert_eq!(c.nodes.len(), 2);
        assert_eq!(c.etcd.endpoints.len(), 3);
        assert_eq!(c.when_etcd_down, WhenEtcdDown::Refuse);
        assert!(c.etcd.user.is_some() && c.etcd.ca.is_some() && c.etcd.key.is_some());
    }
}
