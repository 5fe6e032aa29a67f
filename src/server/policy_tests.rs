//! Table-driven tests for the forwarding policy: every row names the rule expected to decide.

use super::*;
use crate::server::address::{DEFAULT_DENY_NETWORKS, parse_net};
use crate::server::authorized_keys::parse_key_line;
use crate::server::host_addresses::{HostAddresses, HostSet};
use crate::server::rules::{parse_connect, parse_listen, parse_name_rule};

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMMmTZtHcNJo0O3IQp7dssbenGVAd8CgJ4HR7NqAx43A a";

fn user(connect: &[&str], listen: &[&str], publish: &[&str], reach: &[&str]) -> UserPolicy {
    let ids = |kind: &str, i: usize| format!("users.alice.{kind}[{i}]");
    UserPolicy {
        user: "alice".into(),
        connect: connect
            .iter()
            .enumerate()
            .map(|(i, s)| parse_connect(ids("connect", i), s).expect("valid rule"))
            .collect(),
        listen: listen
            .iter()
            .enumerate()
            .map(|(i, s)| parse_listen(ids("listen", i), s).expect("valid rule"))
            .collect(),
        publish: publish
            .iter()
            .enumerate()
            .map(|(i, s)| parse_name_rule(ids("publish", i), s).expect("valid rule"))
            .collect(),
        reach: reach
            .iter()
            .enumerate()
            .map(|(i, s)| parse_name_rule(ids("reach", i), s).expect("valid rule"))
            .collect(),
        deny_networks: DEFAULT_DENY_NETWORKS
            .iter()
            .enumerate()
            .map(|(i, s)| DenyNet {
                net: parse_net(s).expect("valid net"),
                id: format!("forwarding.deny_networks[{i}]"),
            })
            .collect(),
        deny_host_addresses: Some("default deny".into()),
        host_addresses: Default::default(),
        gateway_ports: GatewayPorts::No,
    }
}

fn open_key() -> KeyOptions {
    KeyOptions::unrestricted("k:1")
}

fn key_with(options: &str) -> KeyOptions {
    parse_key_line(&format!("{options} {KEY}"), "k", 1)
        .expect("not blank")
        .expect("valid key line")
        .options
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter()
        .map(|s| s.parse().expect("test literal"))
        .collect()
}

fn allowed_by(d: &Decision) -> Option<&str> {
    match d {
        Decision::Allow { rule } => Some(rule),
        Decision::Deny { .. } => None,
    }
}

#[test]
fn connect_table() {
    let u = user(
        &[
            "db.internal:5432",
            "*.internal:22,80,8000-8999",
            "10.0.0.0/8:*",
            "[fd00::/8]:443",
            "*.example.com:443",
        ],
        &[],
        &[],
        &[],
    );
    let r = |i: usize| Some(format!("users.alice.connect[{i}]"));
    let cases: &[(&str, u32, &[&str], Option<String>)] = &[
        ("db.internal", 5432, &["192.0.2.10"], r(0)),
        ("DB.Internal.", 5432, &["192.0.2.10"], r(0)),
        ("db.internal", 5433, &["192.0.2.10"], None),
        ("web.internal", 80, &["192.0.2.11"], r(1)),
        ("web.internal", 8500, &["192.0.2.11"], r(1)),
        ("web.internal", 9000, &["192.0.2.11"], None),
        ("a.b.internal", 22, &["192.0.2.11"], r(1)),
        ("internal", 22, &["192.0.2.11"], None),
        ("evilinternal", 22, &["192.0.2.11"], None),
        ("10.1.2.3", 1, &[], r(2)),
        ("10.255.255.255", 65535, &[], r(2)),
        ("11.0.0.1", 22, &[], None),
        // Numeric spellings of an address inside 10/8 are the same address.
        ("10.1", 22, &[], r(2)),
        ("0x0a000001", 22, &[], r(2)),
        ("[::ffff:10.0.0.1]", 22, &[], r(2)),
        // A name whose addresses all lie in 10/8 is allowed by the network rule.
        ("anything.corp", 22, &["10.9.9.9", "10.8.8.8"], r(2)),
        ("anything.corp", 22, &["10.9.9.9", "192.0.2.1"], None),
        ("[fd00::1]", 443, &[], r(3)),
        ("fd12:3456::1", 443, &[], r(3)),
        ("[fd00::1]", 80, &[], None),
        ("[fe00::1]", 443, &[], None),
        ("www.example.com", 443, &["2001:db8::1", "192.0.2.80"], r(4)),
        ("www.example.com", 80, &["192.0.2.80"], None),
        ("192.0.2.80", 443, &[], None),
        ("www.example.com", 443, &[], None),
        ("db.internal", 0, &["192.0.2.10"], None),
        ("db.internal", 70000, &["192.0.2.10"], None),
        ("db internal", 5432, &["192.0.2.10"], None),
    ];
    for (host, port, resolved, want) in cases {
        let d = u.decide_connect(&open_key(), host, *port, &ips(resolved));
        assert_eq!(
            allowed_by(&d),
            want.as_deref(),
            "{host}:{port} {resolved:?} -> {d}"
        );
    }
}

const LOOPBACK_SPELLINGS: &[&str] = &[
    "localhost",
    "LOCALHOST",
    "localhost.",
    "foo.localhost",
    "127.0.0.1",
    "127.1",
    "127.0.1",
    "[::ffff:127.0.0.1]",
    "::ffff:127.0.0.1",
    "0",
    "0.0.0.0",
    "0x7f000001",
    "0x7f.1",
    "2130706433",
    "017700000001",
    "0177.0.0.1",
    "127.0.0.1.",
    "::1",
    "[::1]",
    "[::]",
    "169.254.169.254",
    "[fe80::1]",
];

#[test]
fn every_loopback_spelling_is_denied() {
    let narrow = user(&["db.internal:5432", "10.0.0.0/8:*"], &[], &[], &[]);
    let wide = user(&["*:*"], &[], &[], &[]);
    let wildcard_names = user(&["*.localhost:*", "local*:*"], &[], &[], &[]);
    let everywhere = user(&["0.0.0.0/0:*", "[::/0]:*"], &[], &[], &[]);
    for u in [&narrow, &wide, &wildcard_names, &everywhere] {
        for host in LOOPBACK_SPELLINGS {
            for port in [22, 5432] {
                // A resolver that says "localhost" is somewhere harmless
                // must not matter either.
                for resolved in [&["127.0.0.1"][..], &["192.0.2.1"][..]] {
                    let d = u.decide_connect(&open_key(), host, port, &ips(resolved));
                    assert!(!d.is_allowed(), "{host}:{port} via {:?} -> {d}", u.connect);
                }
            }
        }
    }
}

#[test]
fn names_resolving_inside_are_denied_and_name_the_deny_rule() {
    let u = user(&["db.internal:5432", "*:443"], &[], &[], &[]);
    let cases: &[(&str, u32, &[&str], &str)] = &[
        (
            "db.internal",
            5432,
            &["127.0.0.1"],
            "forwarding.deny_networks[0]",
        ),
        (
            "db.internal",
            5432,
            &["10.0.0.5", "127.0.0.1"],
            "forwarding.deny_networks[0]",
        ),
        (
            "db.internal",
            5432,
            &["::ffff:127.0.0.1"],
            "forwarding.deny_networks[0]",
        ),
        (
            "db.internal",
            5432,
            &["0.0.0.0"],
            "forwarding.deny_networks[1]",
        ),
        (
            "metadata.evil",
            443,
            &["169.254.169.254"],
            "forwarding.deny_networks[2]",
        ),
        ("rebind.evil", 443, &["::1"], "forwarding.deny_networks[3]"),
        (
            "rebind.evil",
            443,
            &["fe80::1"],
            "forwarding.deny_networks[5]",
        ),
    ];
    for (host, port, resolved, deny_id) in cases {
        match u.decide_connect(&open_key(), host, *port, &ips(resolved)) {
            Decision::Deny { rule, reason } => {
                assert_eq!(
                    rule.as_deref(),
                    Some(*deny_id),
                    "{host} {resolved:?}: {reason}"
                );
                assert!(reason.contains("denied network"), "{reason}");
            }
            d => panic!("{host} {resolved:?} should be denied, got {d}"),
        }
    }
    // Allowed when nothing resolves inside.
    assert!(
        u.decide_connect(&open_key(), "db.internal", 5432, &ips(&["10.0.0.5"]))
            .is_allowed()
    );
}

#[test]
fn explicit_network_rules_open_denied_networks() {
    // Reaching the server's own Postgres by name needs both address families
    // named explicitly.
    let u = user(
        &["localhost:5432", "127.0.0.1:5432", "[::1]:5432"],
        &[],
        &[],
        &[],
    );
    let d = u.decide_connect(&open_key(), "localhost", 5432, &ips(&["127.0.0.1", "::1"]));
    assert_eq!(allowed_by(&d), Some("users.alice.connect[0]"));
    assert_eq!(
        allowed_by(&u.decide_connect(&open_key(), "127.1", 5432, &[])),
        Some("users.alice.connect[1]")
    );
    assert!(
        !u.decide_connect(&open_key(), "localhost", 22, &ips(&["127.0.0.1"]))
            .is_allowed()
    );
    // Network rules alone share the addresses of one name between them.
    let u = user(&["127.0.0.1:5432", "[::1]:5432"], &[], &[], &[]);
    let d = u.decide_connect(&open_key(), "localhost", 5432, &ips(&["127.0.0.1", "::1"]));
    assert_eq!(
        allowed_by(&d),
        Some("users.alice.connect[0] + users.alice.connect[1]")
    );
    // "Everywhere" is not an explicit exception for loopback.
    let u = user(&["0.0.0.0/0:443"], &[], &[], &[]);
    assert!(
        u.decide_connect(&open_key(), "www.example.com", 443, &ips(&["192.0.2.80"]))
            .is_allowed()
    );
    match u.decide_connect(&open_key(), "rebind.example", 443, &ips(&["127.0.0.1"])) {
        Decision::Deny { rule, reason } => {
            assert_eq!(rule.as_deref(), Some("forwarding.deny_networks[0]"));
            assert!(
                reason.contains("matches users.alice.connect[0]"),
                "{reason}"
            );
        }
        d => panic!("got {d}"),
    }
    // Only IPv4 named: a name that also resolves to ::1 is refused.
    let u = user(&["localhost:5432", "127.0.0.0/8:5432"], &[], &[], &[]);
    assert!(
        !u.decide_connect(&open_key(), "localhost", 5432, &ips(&["127.0.0.1"]))
            .is_allowed()
    );
}

#[test]
fn key_options_only_narrow() {
    let u = user(&["*.internal:*"], &["8000-8999"], &[], &[]);
    let k = key_with("permitopen=\"db.internal:5432\",permitopen=\"10.0.0.1:*\"");
    let d = u.decide_connect(&k, "db.internal", 5432, &ips(&["192.0.2.5"]));
    assert_eq!(
        allowed_by(&d),
        Some("users.alice.connect[0] & k:1 permitopen[0]")
    );
    match u.decide_connect(&k, "web.internal", 80, &ips(&["192.0.2.5"])) {
        Decision::Deny { rule, .. } => assert_eq!(rule.as_deref(), Some("k:1 permitopen")),
        d => panic!("got {d}"),
    }
    // The key permits 10.0.0.1 but the user's rules do not.
    assert!(!u.decide_connect(&k, "10.0.0.1", 22, &[]).is_allowed());
    // permitopen names are literal: no patterns, no aliases.
    let k = key_with("permitopen=\"a.internal:22\"");
    assert!(
        !u.decide_connect(&k, "b.internal", 22, &ips(&["192.0.2.5"]))
            .is_allowed()
    );
    assert!(
        u.decide_connect(&k, "A.Internal.", 22, &ips(&["192.0.2.5"]))
            .is_allowed()
    );

    let restricted = key_with("restrict");
    for d in [
        u.decide_connect(&restricted, "db.internal", 5432, &ips(&["192.0.2.5"])),
        u.decide_tcpip_forward(&restricted, "localhost", 8080)
            .decision,
        u.decide_publish(&restricted, "pi", 22),
        u.decide_reach(&restricted, "pi", 22),
    ] {
        assert_eq!(
            d,
            Decision::Deny {
                reason: "port forwarding is disabled for this key".into(),
                rule: Some("k:1 restrict/no-port-forwarding".into())
            }
        );
    }

    let k = key_with("permitlisten=\"localhost:8080\"");
    let d = u.decide_tcpip_forward(&k, "localhost", 8080).decision;
    assert_eq!(
        allowed_by(&d),
        Some("users.alice.listen[0] & k:1 permitlisten[0]")
    );
    assert!(!u.decide_tcpip_forward(&k, "", 8080).decision.is_allowed());
    assert!(
        !u.decide_tcpip_forward(&k, "localhost", 8081)
            .decision
            .is_allowed()
    );
    // The key allows port 9000 but the user's rules do not.
    let k = key_with("permitlisten=\"9000\"");
    assert!(
        !u.decide_tcpip_forward(&k, "localhost", 9000)
            .decision
            .is_allowed()
    );
}

#[test]
fn listen_table() {
    let mut u = user(
        &[],
        &[
            "8080",
            "localhost:9000-9100",
            "0.0.0.0:80",
            "[::]:80",
            "*:0",
            "192.0.2.0/24:443",
        ],
        &[],
        &[],
    );
    let r = |i: usize| Some(format!("users.alice.listen[{i}]"));
    let no: &[(&str, u32, Option<String>)] = &[
        ("localhost", 8080, r(0)),
        ("", 8080, r(0)),
        ("localhost", 9050, r(1)),
        ("", 9050, r(1)),
        ("127.0.0.1", 9050, r(1)),
        // gateway_ports = no binds loopback: a loopback address is not in 0.0.0.0/32.
        ("0.0.0.0", 80, None),
        ("localhost", 0, r(4)),
        ("localhost", 8081, None),
        ("localhost", 70000, None),
        ("bad host!", 8080, None),
    ];
    for (addr, port, want) in no {
        let d = u.decide_tcpip_forward(&open_key(), addr, *port);
        assert_eq!(
            allowed_by(&d.decision),
            want.as_deref(),
            "no: {addr:?}:{port} -> {}",
            d.decision
        );
        assert_eq!(d.plan.is_some(), want.is_some());
    }
    u.gateway_ports = GatewayPorts::ClientSpecified;
    let cs: &[(&str, u32, Option<String>)] = &[
        ("", 8080, r(0)),
        ("", 9050, None),
        ("0.0.0.0", 80, r(2)),
        ("::", 80, r(3)),
        // All interfaces: 0.0.0.0 by one rule, :: by the other.
        (
            "",
            80,
            Some("users.alice.listen[2] + users.alice.listen[3]".into()),
        ),
        ("192.0.2.7", 443, r(5)),
        ("198.51.100.7", 443, None),
    ];
    for (addr, port, want) in cs {
        let d = u.decide_tcpip_forward(&open_key(), addr, *port);
        assert_eq!(
            allowed_by(&d.decision),
            want.as_deref(),
            "cs: {addr:?}:{port} -> {}",
            d.decision
        );
    }
    let plan = u.decide_tcpip_forward(&open_key(), "0.0.0.0", 80).plan;
    assert_eq!(
        plan,
        Some(ForwardPlan::Bind {
            addrs: ips(&["0.0.0.0"]),
            port: 80
        })
    );
}

#[test]
fn rendezvous_publish_and_reach() {
    let alice = user(&[], &[], &["pi-*:22"], &[]);
    let bob = user(&["*:*"], &[], &[], &["pi-home:22", "web-*:*"]);

    let d = alice.decide_tcpip_forward(&open_key(), "pi-home", 22);
    assert_eq!(allowed_by(&d.decision), Some("users.alice.publish[0]"));
    assert_eq!(
        d.plan,
        Some(ForwardPlan::Publish {
            name: "pi-home".into(),
            port: 22
        })
    );
    for (name, port) in [("pi-home", 23), ("web", 22), ("pi-home", 0)] {
        assert!(
            !alice
                .decide_tcpip_forward(&open_key(), name, port)
                .decision
                .is_allowed(),
            "{name}:{port}"
        );
    }
    // Bob may not publish at all.
    assert!(
        !bob.decide_tcpip_forward(&open_key(), "pi-home", 22)
            .decision
            .is_allowed()
    );
    // permitlisten narrows publishing too.
    let k = key_with("permitlisten=\"pi-office:22\"");
    assert!(
        !alice
            .decide_tcpip_forward(&k, "pi-home", 22)
            .decision
            .is_allowed()
    );
    assert!(
        alice
            .decide_tcpip_forward(&k, "pi-office", 22)
            .decision
            .is_allowed()
    );

    // Routing is decided by the reach patterns, never by DNS.
    assert_eq!(
        bob.route_direct("PI-HOME"),
        Ok(DirectRoute::Rendezvous {
            name: "pi-home".into()
        })
    );
    assert_eq!(
        bob.route_direct("pi-other"),
        Ok(DirectRoute::Network(Host::Name("pi-other".into())))
    );
    assert_eq!(
        bob.route_direct("10.0.0.1"),
        Ok(DirectRoute::Network(Host::Ip(
            "10.0.0.1".parse().expect("lit")
        )))
    );
    assert!(bob.route_direct("bad name").is_err());
    assert_eq!(
        allowed_by(&bob.decide_reach(&open_key(), "pi-home", 22)),
        Some("users.alice.reach[0]")
    );
    assert_eq!(
        allowed_by(&bob.decide_reach(&open_key(), "web-1", 8080)),
        Some("users.alice.reach[1]")
    );
    assert!(!bob.decide_reach(&open_key(), "pi-home", 80).is_allowed());
    assert!(!bob.decide_reach(&open_key(), "127.0.0.1", 22).is_allowed());
    assert!(!alice.decide_reach(&open_key(), "pi-home", 22).is_allowed());
    let k = key_with("permitopen=\"pi-home:22\"");
    assert!(bob.decide_reach(&k, "pi-home", 22).is_allowed());
    assert!(!bob.decide_reach(&k, "web-1", 22).is_allowed());
}

#[test]
fn decisions_render_for_the_audit_log() {
    let allow = Decision::Allow {
        rule: "users.alice.connect[2]".into(),
    };
    assert_eq!(allow.to_string(), "allowed by users.alice.connect[2]");
    assert_eq!(
        serde_json::to_string(&allow).expect("serializable"),
        r#"{"decision":"allow","rule":"users.alice.connect[2]"}"#
    );
    let u = user(&[], &[], &[], &[]);
    let d = u.decide_connect(&open_key(), "db.internal", 5432, &ips(&["192.0.2.1"]));
    assert_eq!(
        d.to_string(),
        "denied: no connect rule for user alice allows db.internal:5432"
    );
}

/// Every rule set against the three ways `ssh -R` asks for a listener (`-R '*:P'` sends
/// "", `-R 0.0.0.0:P` sends "0.0.0.0", a bare `-R P` sends "localhost") under each
/// `gateway_ports`. The bound addresses must be covered by the rules together, each
/// address by some rule; the decision names every rule used.
#[test]
fn all_interface_binds_are_allowed_when_the_rules_together_cover_them() {
    use GatewayPorts::*;
    let sets: &[(&str, &[&str])] = &[
        ("any", &["8080"]),
        ("v4+v6 all", &["0.0.0.0:8080", "[::]:8080"]),
        ("v4 all", &["0.0.0.0:8080"]),
        ("localhost", &["localhost:8080"]),
        ("v4+v6 loopback", &["127.0.0.1:8080", "[::1]:8080"]),
    ];
    let r = |i: usize| format!("users.alice.listen[{i}]");
    let both = format!("{} + {}", r(0), r(1));
    // (set, gateway_ports, [star, 0.0.0.0, bare]) -> the deciding rules, or None.
    let rows: Vec<(&str, GatewayPorts, [Option<String>; 3])> = vec![
        ("any", No, [Some(r(0)), Some(r(0)), Some(r(0))]),
        ("any", Yes, [Some(r(0)), Some(r(0)), Some(r(0))]),
        ("any", ClientSpecified, [Some(r(0)), Some(r(0)), Some(r(0))]),
        // `no` binds loopback, which 0.0.0.0/32 and ::/128 do not contain.
        ("v4+v6 all", No, [None, None, None]),
        (
            "v4+v6 all",
            Yes,
            [Some(both.clone()), Some(both.clone()), Some(both.clone())],
        ),
        (
            "v4+v6 all",
            ClientSpecified,
            [Some(both.clone()), Some(r(0)), None],
        ),
        ("v4 all", No, [None, None, None]),
        // `*` binds :: too, which nothing allows.
        ("v4 all", Yes, [None, None, None]),
        ("v4 all", ClientSpecified, [None, Some(r(0)), None]),
        ("localhost", No, [Some(r(0)), Some(r(0)), Some(r(0))]),
        ("localhost", Yes, [None, None, None]),
        ("localhost", ClientSpecified, [None, None, Some(r(0))]),
        (
            "v4+v6 loopback",
            No,
            [Some(both.clone()), Some(both.clone()), Some(both.clone())],
        ),
        ("v4+v6 loopback", Yes, [None, None, None]),
        (
            "v4+v6 loopback",
            ClientSpecified,
            [None, None, Some(both.clone())],
        ),
    ];
    for (set, mode, want) in rows {
        let rules = sets.iter().find(|(n, _)| *n == set).expect("known set").1;
        let mut u = user(&[], rules, &[], &[]);
        u.gateway_ports = mode;
        for (requested, want) in ["", "0.0.0.0", "localhost"].iter().zip(want) {
            let d = u.decide_tcpip_forward(&open_key(), requested, 8080);
            assert_eq!(
                allowed_by(&d.decision),
                want.as_deref(),
                "{set} {mode:?} -R {requested:?}:8080 -> {}",
                d.decision
            );
            assert_eq!(d.plan.is_some(), want.is_some());
        }
    }
    // A refusal says which address no rule covers.
    let mut u = user(&[], &["0.0.0.0:8080"], &[], &[]);
    u.gateway_ports = ClientSpecified;
    let d = u.decide_tcpip_forward(&open_key(), "*", 8080).decision;
    assert!(d.to_string().contains("(nothing allows ::)"), "{d}");
}

#[test]
fn privileged_listen_ports_need_a_rule_that_names_them() {
    let k = open_key();
    let any = user(&[], &["localhost:*"], &[], &[]);
    let d = any.decide_tcpip_forward(&k, "localhost", 80).decision;
    match &d {
        Decision::Deny { reason, .. } => assert!(reason.contains("below 1024"), "{reason}"),
        d => panic!("'*' opened port 80: {d}"),
    }
    assert!(
        any.decide_tcpip_forward(&k, "localhost", 1024)
            .decision
            .is_allowed()
    );
    assert!(
        any.decide_tcpip_forward(&k, "localhost", 0)
            .decision
            .is_allowed()
    );
    let named = user(&[], &["localhost:80", "localhost:440-450"], &[], &[]);
    assert!(
        named
            .decide_tcpip_forward(&k, "localhost", 80)
            .decision
            .is_allowed()
    );
    assert!(
        named
            .decide_tcpip_forward(&k, "localhost", 443)
            .decision
            .is_allowed()
    );
    assert!(
        !named
            .decide_tcpip_forward(&k, "localhost", 22)
            .decision
            .is_allowed()
    );
}

/// A host with a LAN address in a /24, a v6 address in a /64 and loopback.
fn host_set() -> HostSet {
    HostSet::from_interfaces(
        ["10.9.9.9/24", "fd00:7::1/64", "127.0.0.1/8", "::1/128"]
            .iter()
            .map(|s| s.parse().expect("test literal")),
    )
}

fn denied_as_host(d: &Decision) -> Option<(&str, &str)> {
    match d {
        Decision::Deny {
            rule: Some(rule),
            reason,
        } if rule.starts_with("host address ") => Some((rule, reason)),
        _ => None,
    }
}

#[test]
fn wide_rules_do_not_reach_the_host_itself() {
    let hosts = host_set();
    for rules in [&["*:*"][..], &["0.0.0.0/0:*", "[::/0]:*"], &["*:5432"]] {
        let u = user(rules, &[], &[], &[]);
        let cases: &[(&str, &[&str], &str)] = &[
            ("10.9.9.9", &[], "10.9.9.9"),
            ("0x0a090909", &[], "10.9.9.9"),
            ("[::ffff:10.9.9.9]", &[], "10.9.9.9"),
            ("[fd00:7::1]", &[], "fd00:7::1"),
            // A DNS name pointing at the host, alone or among others.
            ("me.example", &["10.9.9.9"], "10.9.9.9"),
            ("me.example", &["192.0.2.1", "fd00:7::1"], "fd00:7::1"),
        ];
        for (host, resolved, addr) in cases {
            let d = u.decide_connect_with_hosts(&open_key(), host, 5432, &ips(resolved), &hosts);
            let (rule, reason) =
                denied_as_host(&d).unwrap_or_else(|| panic!("{rules:?} {host}: got {d}"));
            assert_eq!(rule, format!("host address {addr} (default deny)"));
            assert!(
                reason.contains("is an address of this host")
                    && reason.contains("matches users.alice.connect["),
                "{reason}"
            );
        }
        // Neighbours in the same networks are not the host.
        for (host, resolved) in [("10.9.9.10", &[][..]), ("peer.example", &["fd00:7::2"])] {
            let d = u.decide_connect_with_hosts(&open_key(), host, 5432, &ips(resolved), &hosts);
            assert!(d.is_allowed(), "{rules:?} {host}: {d}");
        }
    }
}

#[test]
fn the_unspecified_address_is_the_host_even_with_no_deny_networks() {
    let mut u = user(&["*:*"], &[], &[], &[]);
    u.deny_networks.clear();
    let none = HostSet::default();
    for (host, addr) in [("0.0.0.0", "0.0.0.0"), ("0", "0.0.0.0"), ("[::]", "::")] {
        let d = u.decide_connect_with_hosts(&open_key(), host, 22, &[], &none);
        assert_eq!(
            denied_as_host(&d).map(|(r, _)| r.to_owned()),
            Some(format!("host address {addr} (default deny)")),
            "{host}: {d}"
        );
    }
    // Loopback is a host address too, so an operator's empty deny list does not open it.
    let d = u.decide_connect_with_hosts(&open_key(), "127.0.0.1", 22, &[], &host_set());
    assert!(denied_as_host(&d).is_some(), "{d}");
}

#[test]
fn explicit_rules_inside_the_host_network_open_host_addresses() {
    let hosts = host_set();
    let cases: &[(&str, &str, bool)] = &[
        ("10.9.9.9:5432", "10.9.9.9", true),
        ("10.9.9.0/24:*", "10.9.9.9", true),
        ("10.9.9.0/25:5432", "10.9.9.9", true),
        ("[fd00:7::1]:5432", "[fd00:7::1]", true),
        ("[fd00:7::/64]:*", "[fd00:7::1]", true),
        // Wider than the network the address is configured in: not deliberate.
        ("10.0.0.0/8:*", "10.9.9.9", false),
        ("[fd00::/8]:*", "[fd00:7::1]", false),
        // Another port only.
        ("10.9.9.9:22", "10.9.9.9", false),
        // Loopback: the deny network already has its own exception.
        ("127.0.0.1:5432", "127.0.0.1", true),
        ("[::1]:5432", "[::1]", true),
    ];
    for (rule, host, open) in cases {
        let u = user(&["*:*", rule], &[], &[], &[]);
        let d = u.decide_connect_with_hosts(&open_key(), host, 5432, &[], &hosts);
        if *open {
            assert_eq!(
                allowed_by(&d),
                Some("users.alice.connect[0]"),
                "{rule}: {d}"
            );
        } else {
            assert!(!d.is_allowed(), "{rule} must not open {host}: {d}");
        }
    }
    // A name with one host address needs that address opened too.
    let u = user(&["*:*", "10.9.9.9:5432"], &[], &[], &[]);
    let both = ips(&["10.9.9.9", "fd00:7::1"]);
    let d = u.decide_connect_with_hosts(&open_key(), "me.example", 5432, &both, &hosts);
    assert_eq!(
        denied_as_host(&d).map(|(r, _)| r),
        Some("host address fd00:7::1 (default deny)")
    );
}

#[test]
fn opting_out_and_the_audit_origin() {
    let hosts = host_set();
    let mut u = user(&["*:*"], &[], &[], &[]);
    u.deny_host_addresses = None;
    assert!(
        u.decide_connect_with_hosts(&open_key(), "10.9.9.9", 80, &[], &hosts)
            .is_allowed()
    );
    // The default deny networks still hold without the host addresses.
    assert!(
        !u.decide_connect_with_hosts(&open_key(), "127.0.0.1", 80, &[], &hosts)
            .is_allowed()
    );
    u.deny_host_addresses = Some("forwarding.deny_host_addresses".into());
    let d = u.decide_connect_with_hosts(&open_key(), "10.9.9.9", 80, &[], &hosts);
    assert_eq!(
        denied_as_host(&d).map(|(r, _)| r),
        Some("host address 10.9.9.9 (forwarding.deny_host_addresses)")
    );
}

#[test]
fn decide_connect_reads_the_shared_host_addresses() {
    let shared = HostAddresses::with(HostSet::default());
    let mut u = user(&["*:*"], &[], &[], &[]);
    u.host_addresses = shared.clone();
    assert!(
        u.decide_connect(&open_key(), "10.9.9.9", 80, &[])
            .is_allowed()
    );
    shared.replace(host_set());
    assert!(
        !u.decide_connect(&open_key(), "10.9.9.9", 80, &[])
            .is_allowed()
    );
}

#[test]
fn cloud_metadata_addresses_are_denied_by_default() {
    let u = user(&["*:*", "0.0.0.0/0:*", "[::/0]:*"], &[], &[], &[]);
    for addr in [
        "169.254.169.254",
        "100.100.100.200",
        "192.0.0.192",
        "168.63.129.16",
        "[fd00:ec2::254]",
        "[fd00:ec2::23]",
        "[fe80::a9fe:a9fe]",
    ] {
        let d = u.decide_connect_with_hosts(&open_key(), addr, 80, &[], &HostSet::default());
        match d {
            Decision::Deny { rule: Some(r), .. } => {
                assert!(r.starts_with("forwarding.deny_networks["), "{addr}: {r}")
            }
            d => panic!("{addr}: {d}"),
        }
        let d = u.decide_connect_with_hosts(
            &open_key(),
            "metadata.example",
            80,
            &ips(&[addr.trim_matches(['[', ']'])]),
            &HostSet::default(),
        );
        assert!(!d.is_allowed(), "a name resolving to {addr}: {d}");
    }
}

#[test]
fn names_go_to_dns_only_when_a_rule_could_allow_them() {
    let refused = |u: &UserPolicy, host: &str, port: u32| {
        u.refuse_before_resolving(&open_key(), host, port)
            .map(|d| d.to_string())
    };
    // Address rules only: no name is worth a DNS query, or the user could make the
    // server look up anything (an oracle, and a way out through the resolvers).
    let u = user(
        &["10.0.0.0/8:*", "[fd00::/8]:443", "192.0.2.7:22"],
        &[],
        &[],
        &[],
    );
    for (host, port) in [
        ("exfil.example", 22),
        ("anything.corp", 443),
        ("db.internal", 5432),
    ] {
        let why = refused(&u, host, port).unwrap_or_else(|| panic!("{host}:{port} goes to DNS"));
        assert!(
            why.contains("no connect rule for user alice allows"),
            "{why}"
        );
    }
    // localhost resolves without a query, so network rules may still judge it.
    assert_eq!(refused(&u, "localhost", 22), None);
    assert_eq!(refused(&u, "LocalHost.", 22), None);
    // A whole address family is "anywhere": names may go to DNS for its ports only.
    let u = user(&["0.0.0.0/0:443", "[::/0]:8443"], &[], &[], &[]);
    assert_eq!(refused(&u, "www.example.com", 443), None);
    assert_eq!(refused(&u, "www.example.com", 8443), None);
    assert!(refused(&u, "www.example.com", 80).is_some());
    // Name rules and `*` let names through, for their ports; the resolved addresses
    // are judged later.
    let u = user(&["*.internal:22", "*:443", "10.0.0.0/8:*"], &[], &[], &[]);
    assert_eq!(refused(&u, "db.internal", 22), None);
    assert_eq!(refused(&u, "anything.example", 443), None);
    assert!(refused(&u, "db.internal", 5432).is_some());
    assert!(refused(&u, "anything.example", 22).is_some());
    // Addresses are never refused here: there is nothing to resolve.
    assert_eq!(refused(&u, "10.1.2.3", 5432), None);
    // The key and the port are checked before anything else.
    let k = key_with("restrict");
    assert!(u.refuse_before_resolving(&k, "db.internal", 22).is_some());
    assert!(refused(&u, "db.internal", 0).is_some());
}
