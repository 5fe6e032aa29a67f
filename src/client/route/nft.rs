//! The nftables rules of one `warren --route`: generated as text and loaded with
//! `nft -f -`, which applies a file as one transaction, so a failure installs nothing.
//! The command rather than a netlink crate: it is what every distribution ships, its
//! errors name the offending line, and the generated ruleset is easy to read and test.

use super::cidr::Cidr;
use std::io::Write;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use tracing::{debug, info, warn};

/// The fwmark on warren's own sockets (the SSH connection, DNS fallback queries): the
/// chain lets marked packets pass, so the tunnel never captures its own traffic, whatever
/// the routes and however the server's address changes across reconnects. "WRRN".
pub const MARK: u32 = 0x5752_524e;

/// Table names start with this, then the owner's PID.
const PREFIX: &str = "warren_";

/// What to redirect where.
#[derive(Debug, Clone)]
pub struct Plan {
    pub routes: Vec<Cidr>,
    /// Never redirected (--exclude, the SSH server's addresses).
    pub excludes: Vec<Cidr>,
    /// The transparent listener's port (on 127.0.0.1 and ::1).
    pub tcp_port: u16,
    /// The DNS forwarder: the resolvers whose port 53 it takes over, and its port.
    pub dns: Option<(Vec<IpAddr>, u16)>,
}

pub fn table_name(pid: u32) -> String {
    format!("{PREFIX}{pid}")
}

fn family(ip: &IpAddr) -> &'static str {
    if ip.is_ipv4() { "ip" } else { "ip6" }
}

/// The ruleset for table `warren_<pid>`, as one `nft -f` file.
pub fn ruleset(pid: u32, plan: &Plan) -> String {
    let name = table_name(pid);
    let mut r = Vec::new();
    r.push(format!("meta mark {MARK:#x} return"));
    // DNS first: the resolver may be on loopback (127.0.0.53) or inside a routed network.
    if let Some((resolvers, port)) = &plan.dns {
        for ip in resolvers {
            for proto in ["udp", "tcp"] {
                r.push(format!(
                    "{} daddr {ip} {proto} dport 53 redirect to :{port}",
                    family(ip)
                ));
            }
        }
    }
    // Loopback is this machine: never sent anywhere, even under a 0.0.0.0/0 route.
    r.push("ip daddr 127.0.0.0/8 return".into());
    r.push("ip6 daddr ::1 return".into());
    for c in &plan.excludes {
        r.push(format!("{} daddr {c} return", family(&c.addr)));
    }
    for c in &plan.routes {
        r.push(format!(
            "{} daddr {c} meta l4proto tcp redirect to :{}",
            family(&c.addr),
            plan.tcp_port
        ));
    }
    let mut out = format!("add table inet {name}\ntable inet {name} {{\n\tchain output {{\n");
    out.push_str("\t\ttype nat hook output priority -100; policy accept;\n");
    for line in r {
        out.push_str("\t\t");
        out.push_str(&line);
        out.push('\n');
    }
    out.push_str("\t}\n}\n");
    out
}

/// Why --route cannot start; worded for the user, exit status 2.
pub fn preflight() -> Result<(), String> {
    if !has_net_admin() {
        return Err(
            "--route needs CAP_NET_ADMIN to install nftables rules: run warren as root \
             (sudo warren --route ...); nothing was changed"
                .into(),
        );
    }
    match Command::new("nft").arg("--version").output() {
        Ok(o) if o.status.success() => Ok(()),
        _ => Err("--route needs the nft command (the nftables package: \
             apt-get install nftables / dnf install nftables); nothing was changed"
            .into()),
    }
}

/// CAP_NET_ADMIN (bit 12) in our effective set, from /proc/self/status.
fn has_net_admin() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|caps| caps & (1 << 12) != 0)
}

fn nft(args: &[&str], stdin: Option<&str>) -> Result<String, String> {
    let mut child = Command::new("nft")
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot run nft: {e}"))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| format!("cannot write to nft: {e}"))?;
    }
    let out = child.wait_with_output().map_err(|e| format!("nft: {e}"))?;
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        false => Err(String::from_utf8_lossy(&out.stderr).trim().to_string()),
    }
}

/// The PIDs of `warren_<pid>` tables in `nft list tables` output.
pub fn warren_tables(listing: &str) -> Vec<u32> {
    listing
        .lines()
        .filter_map(|l| l.trim().strip_prefix("table inet "))
        .filter_map(|n| n.strip_prefix(PREFIX))
        .filter_map(|pid| pid.parse().ok())
        .collect()
}

/// Removes the tables of warren processes that are gone (killed with SIGKILL, which
/// cannot be caught): their redirects would point at a port nobody listens on.
pub fn remove_stale() {
    let Ok(listing) = nft(&["list", "tables", "inet"], None) else {
        return;
    };
    for pid in warren_tables(&listing) {
        if std::path::Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        match nft(&["delete", "table", "inet", &table_name(pid)], None) {
            Ok(_) => info!(
                "removed the stale nftables table {} (its warren is gone)",
                table_name(pid)
            ),
            Err(e) => warn!("cannot remove stale table {}: {e}", table_name(pid)),
        }
    }
}

/// The installed table; dropping it removes the table (every exit path that unwinds).
#[derive(Debug)]
pub struct Installed {
    name: String,
}

/// Loads the plan as table `warren_<our pid>`, all or nothing.
pub fn install(plan: &Plan) -> Result<Installed, String> {
    let pid = std::process::id();
    let text = ruleset(pid, plan);
    debug!("nft ruleset:\n{text}");
    nft(&["-f", "-"], Some(&text)).map_err(|e| format!("nft refused the rules: {e}"))?;
    Ok(Installed {
        name: table_name(pid),
    })
}

impl Drop for Installed {
    fn drop(&mut self) {
        match nft(&["delete", "table", "inet", &self.name], None) {
            Ok(_) => debug!("removed nftables table {}", self.name),
            Err(e) => warn!("cannot remove nftables table {}: {e}", self.name),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ruleset_orders_mark_dns_loopback_excludes_then_routes() {
        let plan = Plan {
            routes: vec!["10.0.1.0/24".parse().unwrap(), "fd00::/64".parse().unwrap()],
            excludes: vec!["10.0.1.1".parse().unwrap()],
            tcp_port: 4000,
            dns: Some((
                vec!["127.0.0.53".parse().unwrap(), "::1".parse().unwrap()],
                5300,
            )),
        };
        let text = ruleset(42, &plan);
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        assert_eq!(lines[0], "add table inet warren_42");
        assert_eq!(lines[1], "table inet warren_42 {");
        assert_eq!(
            lines[3],
            "type nat hook output priority -100; policy accept;"
        );
        assert_eq!(lines[4], "meta mark 0x5752524e return");
        assert_eq!(
            lines[5],
            "ip daddr 127.0.0.53 udp dport 53 redirect to :5300"
        );
        assert_eq!(lines[8], "ip6 daddr ::1 tcp dport 53 redirect to :5300");
        assert_eq!(lines[9], "ip daddr 127.0.0.0/8 return");
        assert_eq!(lines[10], "ip6 daddr ::1 return");
        assert_eq!(lines[11], "ip daddr 10.0.1.1/32 return");
        assert_eq!(
            lines[12],
            "ip daddr 10.0.1.0/24 meta l4proto tcp redirect to :4000"
        );
        assert_eq!(
            lines[13],
            "ip6 daddr fd00::/64 meta l4proto tcp redirect to :4000"
        );
        assert_eq!(lines[14..], ["}", "}"]);
    }

    #[test]
    fn finds_only_warren_tables() {
        let listing = "table inet warren_12\ntable ip nat\ntable inet warren_x\ntable inet other_3\n\
                       table inet warren_99\n";
        assert_eq!(warren_tables(listing), vec![12, 99]);
    }
}
