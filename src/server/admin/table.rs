//! `warrend ctl`'s human output: aligned columns, sizes in binary units.

use super::protocol::Reply;
use crate::server::state::InUse;
use std::fmt::Write as _;

/// The reply as text for a terminal.
pub fn render(reply: &Reply) -> String {
    match reply {
        Reply::Sessions { sessions } => {
            let rows = sessions
                .iter()
                .map(|s| {
                    vec![
                        s.id.to_string(),
                        s.user.clone(),
                        s.source.clone(),
                        s.since.clone(),
                        s.channels.to_string(),
                        s.listeners.to_string(),
                        bytes(s.bytes_up),
                        bytes(s.bytes_down),
                        s.key_fp.clone(),
                    ]
                })
                .collect();
            columns(
                &[
                    "ID",
                    "USER",
                    "SOURCE",
                    "SINCE",
                    "CHANNELS",
                    "LISTENERS",
                    "UP",
                    "DOWN",
                    "KEY",
                ],
                rows,
            )
        }
        Reply::Listeners { listeners } => {
            let rows = listeners
                .iter()
                .map(|l| {
                    vec![
                        l.session.to_string(),
                        l.user.clone(),
                        format!("{}:{}", l.address, l.port),
                        l.bound.join(" "),
                    ]
                })
                .collect();
            columns(&["SESSION", "USER", "LISTEN", "BOUND"], rows)
        }
        Reply::Names { names } if names.iter().any(|n| n.node.is_some()) => {
            let rows = names
                .iter()
                .map(|n| {
                    vec![
                        format!("{}:{}", n.name, n.port),
                        n.user.clone(),
                        n.node.clone().unwrap_or_default(),
                        n.session.to_string(),
                        n.key_fp.clone(),
                    ]
                })
                .collect();
            columns(&["NAME", "USER", "NODE", "SESSION", "KEY"], rows)
        }
        Reply::Names { names } => {
            let rows = names
                .iter()
                .map(|n| {
                    vec![
                        format!("{}:{}", n.name, n.port),
                        n.user.clone(),
                        n.session.to_string(),
                        n.key_fp.clone(),
                    ]
                })
                .collect();
            columns(&["NAME", "USER", "SESSION", "KEY"], rows)
        }
        Reply::Cluster { cluster } => {
            let mut out = format!("node {}; etcd: {}\n", cluster.node, cluster.etcd);
            let rows = cluster
                .members
                .iter()
                .map(|m| {
                    vec![
                        m.node.clone(),
                        m.link.clone(),
                        m.started.clone(),
                        m.link_state.clone(),
                    ]
                })
                .collect();
            out.push_str(&columns(&["NODE", "LINK", "STARTED", "LINK STATE"], rows));
            out
        }
        Reply::Kicked { kicked } => {
            let ids: Vec<String> = kicked.iter().map(u64::to_string).collect();
            format!("kicked session(s) {}\n", ids.join(", "))
        }
        Reply::Reloaded { .. } => "ok: configuration reloaded\n".into(),
        Reply::Limits(l) => {
            let row = |name: &str, u: &InUse, size: bool| {
                let show = |n| if size { bytes(n) } else { n.to_string() };
                let limit = if u.limit == 0 {
                    "-".to_string()
                } else {
                    show(u.limit)
                };
                vec![name.to_string(), show(u.used), limit]
            };
            let mut out = columns(
                &["BUDGET", "IN USE", "LIMIT"],
                vec![
                    row("sessions", &l.sessions, false),
                    row("unauthenticated", &l.unauthenticated, false),
                    row("channels", &l.channels, false),
                    row("listeners", &l.listeners, false),
                    row("buffered", &l.buffered, true),
                    row("dns_lookups", &l.dns_lookups, false),
                    row("penalised_sources", &l.penalised_sources, false),
                    row("audit_queue", &l.audit_queue, false),
                ],
            );
            if !l.users.is_empty() {
                out.push('\n');
                let pair = |u: &InUse, size: bool| {
                    if size {
                        format!("{}/{}", bytes(u.used), bytes(u.limit))
                    } else {
                        format!("{}/{}", u.used, u.limit)
                    }
                };
                let rows = l
                    .users
                    .iter()
                    .map(|u| {
                        vec![
                            u.user.clone(),
                            pair(&u.sessions, false),
                            pair(&u.channels, false),
                            pair(&u.listeners, false),
                            pair(&u.buffered, true),
                        ]
                    })
                    .collect();
                out.push_str(&columns(
                    &["USER", "SESSIONS", "CHANNELS", "LISTENERS", "BUFFERED"],
                    rows,
                ));
            }
            out
        }
    }
}

fn columns(head: &[&str], rows: Vec<Vec<String>>) -> String {
    let mut widths: Vec<usize> = head.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let mut line = |cells: Vec<&str>| {
        let mut text = String::new();
        for (i, (cell, w)) in cells.iter().zip(&widths).enumerate() {
            if i + 1 == cells.len() {
                text.push_str(cell);
            } else {
                let _ = write!(text, "{cell:<w$}  ");
            }
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(head.to_vec());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
    out
}

/// `1.5 MiB`-style sizes; plain bytes below 1 KiB.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_and_sizes_read_well() {
        let text = columns(
            &["A", "BB"],
            vec![
                vec!["long".into(), "x".into()],
                vec!["s".into(), "y".into()],
            ],
        );
        assert_eq!(text, "A     BB\nlong  x\ns     y\n");
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(3 << 30), "3.0 GiB");
    }
}
