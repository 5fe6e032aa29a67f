//! Tests for config loading: the shipped example, defaults, and error messages for invalid files.

use super::*;
use crate::server::authorized_keys::KeyOptions;
use crate::server::policy::Decision;
use std::time::Duration;

const ALICE_KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMMmTZtHcNJo0O3IQp7dssbenGVAd8CgJ4HR7NqAx43A alice@laptop";

fn example_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/warrend.toml")
}

fn parse(text: &str) -> Result<ServerConfig, ConfigError> {
    ServerConfig::from_toml(text, Path::new("/etc/warrend/warrend.toml"))
}

fn invalid(text: &str) -> String {
    match parse(text) {
        Ok(_) => panic!("config should be refused:\n{text}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn shipped_example_loads_and_means_what_it_says() {
    let config = ServerConfig::load(&example_path()).expect("examples/warrend.toml must load");
    assert_eq!(
        config.server.listen,
        vec![SocketAddr::from(([127, 0, 0, 1], 2222))]
    );
    assert_eq!(config.state_dir(), Path::new("/var/lib/warrend"));
    assert_eq!(
        config.host_key_paths(),
        vec![
            PathBuf::from("/var/lib/warrend/ssh_host_ed25519_key"),
            PathBuf::from("/var/lib/warrend/ssh_host_ecdsa_key")
        ]
    );
    assert_eq!(config.audit_destination(), AuditDestination::Stdout);
    assert_eq!(config.principals("alice"), vec!["alice", "oncall"]);
    assert_eq!(config.principals("bob"), vec!["bob"]);
    assert_eq!(config.limits.login_grace_time.0, Duration::from_secs(30));
    assert_eq!(config.limits.channel_idle_timeout.non_zero(), None);

    let policy = config.policy();
    let alice = policy.user("alice").expect("alice");
    assert_eq!(alice.gateway_ports, GatewayPorts::ClientSpecified);
    assert_eq!(
        policy.user("bob").map(|u| u.gateway_ports),
        Some(GatewayPorts::No)
    );
    let key = KeyOptions::unrestricted("test");
    let ip = |s: &str| s.parse().expect("literal");
    assert_eq!(
        alice.decide_connect(&key, "web.internal", 8080, &[ip("10.1.1.1")]),
        Decision::Allow {
            rule: "users.alice.connect[1]".into()
        }
    );
    assert!(
        !alice
            .decide_connect(&key, "db.internal", 5432, &[ip("127.0.0.1")])
            .is_allowed()
    );
    let bob = policy.user("bob").expect("bob");
    assert!(bob.decide_reach(&key, "pi-home", 22).is_allowed());
    let dba = policy.user("dbadmin").expect("dbadmin");
    assert!(
        dba.decide_connect(&key, "localhost", 5432, &[ip("127.0.0.1"), ip("::1")])
            .is_allowed()
    );

    let inline = config.users.get("alice").map(|u| u.keys.len());
    assert_eq!(inline, Some(2));
}

#[test]
fn embedded_default_is_loopback_and_empty() {
    let config = ServerConfig::default_embedded();
    assert_eq!(
        config.server.listen,
        vec![SocketAddr::from(([127, 0, 0, 1], 2222))]
    );
    assert!(config.users.is_empty() && config.policy().users.is_empty());
    assert!(config.validate().is_ok());
    assert_eq!(config.source(), None);
    assert!(config.host_key_paths()[0].ends_with("warrend/ssh_host_ed25519_key"));
    // An empty file means the same as no file.
    let empty = parse("").expect("empty config is valid");
    assert_eq!(empty.server.listen, config.server.listen);
    assert_eq!(empty.limits.max_auth_tries, 6);
}

#[test]
fn state_dir_defaults() {
    let env = |vars: &'static [(&'static str, &'static str)]| {
        move |k: &str| {
            vars.iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        }
    };
    let cases: &[(&[(&str, &str)], &str)] = &[
        (
            &[
                ("STATE_DIRECTORY", "/var/lib/warrend:/x"),
                ("HOME", "/root"),
            ],
            "/var/lib/warrend",
        ),
        (
            &[("XDG_STATE_HOME", "/home/a/.state"), ("HOME", "/home/a")],
            "/home/a/.state/warrend",
        ),
        (
            &[("XDG_STATE_HOME", "relative"), ("HOME", "/home/a")],
            "/home/a/.local/state/warrend",
        ),
        (&[("HOME", "")], "/var/lib/warrend"),
        (&[], "/var/lib/warrend"),
    ];
    for (vars, want) in cases {
        assert_eq!(
            default_state_dir(env(vars)),
            PathBuf::from(want),
            "{vars:?}"
        );
    }
}

#[test]
fn invalid_configs_name_file_and_field() {
    let f = "/etc/warrend/warrend.toml";
    let cases: &[(&str, &[&str])] = &[
        (
            "[users.alice]\nkeys = []\nconnect = ['db:22', 'db:90-80']\n[user_ca]\nkeys_file = 'ca'",
            &["/etc/warrend/warrend.toml: users.alice.connect[1]: bad port range '90-80'"],
        ),
        (
            "[users.alice]\nkeys = ['restrict,command=\"x\" ssh-ed25519 AAAA']",
            &["users.alice.keys[0]: command= is refused"],
        ),
        (
            "[users.alice]\nconnect = ['db:22']",
            &["users.alice: no keys"],
        ),
        (
            "[users.'al ice']\nauthorized_keys = 'k'\nlisten = ['example.com:80']\npublish = ['10.0.0.1:22']\nreach = ['pi']",
            &[
                "users.al ice: user names",
                "users.al ice.listen[0]: listen host 'example.com'",
                "users.al ice.publish[0]: '10.0.0.1' is an address",
                "users.al ice.reach[0]: expected HOST:PORTS",
            ],
        ),
        (
            "[forwarding]\ndeny_networks = ['10.0.0.1/8']",
            &[
                "forwarding.deny_networks[0]: \"10.0.0.1/8\" has host bits set; did you mean 10.0.0.0/8?",
            ],
        ),
        (
            "[users.a]\nauthorized_keys = 'k'\ndeny_networks = ['nope']\nprincipals = []",
            &[
                "users.a.deny_networks[0]: \"nope\" is not an IP address",
                "users.a.principals: must list",
            ],
        ),
        (
            "[limits]\nmax_auth_tries = 0\nlogin_grace_time = 0\nmax_unauthenticated = 4\nsource_netblock_v6 = 129",
            &[
                "limits.max_auth_tries: must be at least 1",
                "limits.login_grace_time: cannot be 0",
                "limits.max_unauthenticated_per_source: cannot exceed",
                "limits.source_netblock_v6: must be 0..=128",
            ],
        ),
        (
            "[limits]\nmax_session_channels = 0\nmax_buffered_per_user = '2GiB'\nmax_buffered = 1000\nmax_channels_per_user = 9000",
            &[
                "limits.max_session_channels: must be at least 1",
                "limits.max_buffered: must be at least 4MiB",
                "limits.max_buffered_per_user: cannot exceed limits.max_buffered",
                "limits.max_channels_per_user: cannot exceed limits.max_channels",
            ],
        ),
        (
            "[server]\nlisten = []\naudit_log = ''",
            &["server.listen: must list", "server.audit_log: must be"],
        ),
        (
            "[user_ca]\nkeys = ['ssh-ed25519 AAAA']",
            &["user_ca.keys[0]: invalid public key"],
        ),
        ("[user_ca]", &["user_ca: needs keys or keys_file"]),
    ];
    for (text, wants) in cases {
        let err = invalid(text);
        for want in *wants {
            assert!(err.contains(want), "missing {want:?} in:\n{err}");
        }
        assert!(
            err.lines().all(|l| l.starts_with(f)),
            "every line names the file:\n{err}"
        );
        assert_eq!(
            err.lines().count(),
            wants.len(),
            "one line per problem:\n{err}"
        );
    }
}

#[test]
fn parse_errors_name_the_file_and_line() {
    let cases: &[(&str, &str)] = &[
        (
            "[server]\nlistn = ['127.0.0.1:22']",
            "unknown field `listn`",
        ),
        ("[users.a]\nconect = []", "unknown field `conect`"),
        (
            "[limits]\nlogin_grace_time = '30x'",
            "invalid duration '30x'",
        ),
        ("[limits]\nmax_buffered = '1TB'", "invalid size '1TB'"),
        ("[server]\nlisten = ['localhost:22']", "line 2"),
        (
            "[forwarding]\ngateway_ports = 'maybe'",
            "unknown variant `maybe`",
        ),
        ("[frobnicate]", "unknown field `frobnicate`"),
    ];
    for (text, want) in cases {
        let err = invalid(text);
        assert!(err.starts_with("/etc/warrend/warrend.toml:"), "{err}");
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    let missing = ServerConfig::load(Path::new("/nonexistent/warrend.toml")).expect_err("missing");
    assert!(
        missing
            .to_string()
            .starts_with("cannot read /nonexistent/warrend.toml: ")
    );
}

#[test]
fn durations() {
    let cases: &[(&str, Option<u64>)] = &[
        ("250ms", Some(250)),
        ("30s", Some(30_000)),
        ("30", Some(30_000)),
        ("5m", Some(300_000)),
        ("1h", Some(3_600_000)),
        ("1d", Some(86_400_000)),
        ("0", Some(0)),
        ("off", Some(0)),
        ("", None),
        ("5 m", None),
        ("-1s", None),
        ("1.5s", None),
        ("99999999999999999999d", None),
    ];
    for (s, want) in cases {
        let got = parse_duration(s).ok().map(|d| d.as_millis() as u64);
        assert_eq!(got, *want, "{s:?}");
    }
}

#[test]
fn user_keys_are_read_from_files_relative_to_the_config() {
    let dir = tempfile::tempdir().expect("tempdir");
    let keys = format!(
        "# alice's keys\n{ALICE_KEY}\ncommand=\"/bin/sh\" {ALICE_KEY}\nrestrict {ALICE_KEY}\n"
    );
    std::fs::write(dir.path().join("alice.keys"), keys).expect("write keys");
    std::fs::write(dir.path().join("ca.pub"), format!("# CA\n{ALICE_KEY}\n")).expect("write ca");
    let config_path = dir.path().join("warrend.toml");
    let text = format!(
        "[user_ca]\nkeys_file = 'ca.pub'\n[users.alice]\nkeys = ['{ALICE_KEY}']\nauthorized_keys = 'alice.keys'\n[users.bob]\nauthorized_keys = ['missing.keys']\n"
    );
    std::fs::write(&config_path, text).expect("write config");

    let config = ServerConfig::load(&config_path).expect("valid config");
    let entries = config.load_user_keys("alice").expect("readable");
    // Inline key, then line 2 of the file; the command= line is skipped.
    let origins: Vec<&str> = entries.iter().map(|e| e.options.origin.as_str()).collect();
    let file = dir.path().join("alice.keys").display().to_string();
    assert_eq!(
        origins,
        vec![
            format!("{} users.alice.keys[0]", config_path.display()),
            format!("{file}:2"),
            format!("{file}:4"),
        ]
    );
    assert!(!entries[2].options.port_forwarding);

    let err = config.load_user_keys("bob").expect_err("missing file");
    assert!(err.to_string().contains("missing.keys"), "{err}");
    assert!(matches!(
        config.load_user_keys("carol"),
        Err(ConfigError::UnknownUser(_))
    ));
    assert_eq!(config.user_ca_fingerprints().map(|f| f.len()).ok(), Some(1));
}

#[test]
fn audit_on_failure_defaults_to_refuse_and_rejects_other_words() {
    let example = ServerConfig::load(&example_path()).expect("example loads");
    assert_eq!(example.server.audit_on_failure, AuditOnFailure::Refuse);
    assert_eq!(
        parse("").expect("empty").server.audit_on_failure,
        AuditOnFailure::Refuse
    );
    let go_on = parse("[server]\naudit_on_failure = \"continue\"").expect("continue");
    assert_eq!(go_on.server.audit_on_failure, AuditOnFailure::Continue);
    let err = invalid("[server]\naudit_on_failure = \"ignore\"");
    assert!(err.starts_with("/etc/warrend/warrend.toml:"), "{err}");
    for want in [
        "audit_on_failure",
        "unknown variant `ignore`",
        "`refuse`",
        "`continue`",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

#[test]
fn host_addresses_are_denied_unless_opted_out_and_the_audit_names_the_origin() {
    let keys = format!("keys = ['{ALICE_KEY}']");
    let origin = |text: &str| -> Vec<Option<String>> {
        let config = parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
        ["a", "b"]
            .iter()
            .map(|u| {
                config
                    .policy()
                    .user(u)
                    .expect("user")
                    .deny_host_addresses
                    .clone()
            })
            .collect()
    };
    let some = |s: &str| Some(s.to_owned());
    // Default, also when the operator writes their own deny_networks.
    assert_eq!(
        origin(&format!(
            "[forwarding]\ndeny_networks = []\n[users.a]\n{keys}\n[users.b]\n{keys}\ndeny_networks = ['10.0.0.0/8']"
        )),
        vec![some("default deny"), some("default deny")]
    );
    assert_eq!(
        origin(&format!(
            "[forwarding]\ndeny_host_addresses = false\n[users.a]\n{keys}\n[users.b]\n{keys}\ndeny_host_addresses = true"
        )),
        vec![None, some("users.b.deny_host_addresses")]
    );
    assert_eq!(
        origin(&format!(
            "[forwarding]\ndeny_host_addresses = true\n[users.a]\n{keys}\n[users.b]\n{keys}\ndeny_host_addresses = false"
        )),
        vec![some("forwarding.deny_host_addresses"), None]
    );
    let example = ServerConfig::load(&example_path()).expect("example loads");
    assert_eq!(
        example
            .policy()
            .user("bob")
            .map(|u| u.deny_host_addresses.clone()),
        Some(some("forwarding.deny_host_addresses"))
    );
    for text in [
        "[forwarding]\ndeny_host_addresses = 'no'",
        "[users.a]\ndeny_host_addresses = 0",
    ] {
        let err = invalid(text);
        assert!(
            err.starts_with("/etc/warrend/warrend.toml:") && err.contains("expected a boolean"),
            "{err}"
        );
    }
}

#[test]
fn a_loaded_config_reads_the_shared_host_addresses() {
    use crate::server::host_addresses::{HostAddresses, HostSet};
    let mut config = parse(&format!(
        "[users.a]\nkeys = ['{ALICE_KEY}']\nconnect = ['*:*']"
    ))
    .expect("valid");
    let key = KeyOptions::unrestricted("test");
    let a = |c: &ServerConfig| c.policy().user("a").expect("a").clone();
    assert!(
        a(&config)
            .decide_connect(&key, "10.9.9.9", 80, &[])
            .is_allowed()
    );
    let hosts = HostAddresses::with(HostSet::from_interfaces(["10.9.9.9/24"
        .parse()
        .expect("literal")]));
    config.share_host_addresses(&hosts);
    match a(&config).decide_connect(&key, "10.9.9.9", 80, &[]) {
        Decision::Deny { rule, .. } => assert_eq!(
            rule.as_deref(),
            Some("host address 10.9.9.9 (default deny)")
        ),
        d => panic!("{d}"),
    }
}

#[test]
fn dns_limits_have_safe_defaults_and_refuse_nonsense() {
    let defaults = parse("").expect("empty config").limits;
    assert_eq!(defaults.dns_timeout.0, Duration::from_secs(5));
    assert_eq!(defaults.max_dns_lookups, 32);
    assert_eq!(defaults.max_dns_lookups_per_user, 4);
    let example = ServerConfig::load(&example_path()).expect("example").limits;
    assert_eq!(example.dns_timeout, defaults.dns_timeout);
    assert_eq!(example.max_dns_lookups, defaults.max_dns_lookups);
    assert_eq!(
        example.max_dns_lookups_per_user,
        defaults.max_dns_lookups_per_user
    );
    let set =
        parse("[limits]\ndns_timeout = '750ms'\nmax_dns_lookups = 8\nmax_dns_lookups_per_user = 8")
            .expect("valid")
            .limits;
    assert_eq!(set.dns_timeout.0, Duration::from_millis(750));
    assert_eq!((set.max_dns_lookups, set.max_dns_lookups_per_user), (8, 8));

    let err = invalid("[limits]\ndns_timeout = 0\nmax_dns_lookups = 0");
    assert!(err.contains("limits.dns_timeout: cannot be 0"), "{err}");
    assert!(
        err.contains("limits.max_dns_lookups: must be at least 1"),
        "{err}"
    );
    let err = invalid("[limits]\nmax_dns_lookups_per_user = 0");
    assert!(
        err.contains("limits.max_dns_lookups_per_user: must be at least 1"),
        "{err}"
    );
    let err = invalid("[limits]\nmax_dns_lookups = 4\nmax_dns_lookups_per_user = 5");
    assert!(
        err.contains("limits.max_dns_lookups_per_user: cannot exceed limits.max_dns_lookups"),
        "{err}"
    );
    let err = invalid("[limits]\ndns_timeout = '5 minutes'");
    assert!(err.contains("invalid duration"), "{err}");
}

#[test]
fn preauth_drop_and_penalties_default_check_and_reject_bad_values() {
    let example = ServerConfig::load(&example_path()).expect("examples/warrend.toml must load");
    let d = Limits::default();
    let l = &example.limits;
    assert_eq!(l.drop_start(), 32);
    assert_eq!(d.drop_start(), 32);
    assert_eq!(l.unauthenticated_drop_rate, d.unauthenticated_drop_rate);
    assert_eq!(l.penalty_grace_exceeded, d.penalty_grace_exceeded);
    assert_eq!(l.penalty_noauth, d.penalty_noauth);
    assert_eq!(l.penalty_max, d.penalty_max);
    assert_eq!(l.penalty_exempt, d.penalty_exempt);

    // An old config with a small cap still loads: the drop starts at the cap (none).
    let small = parse("[limits]\nmax_unauthenticated = 4\nmax_unauthenticated_per_source = 2")
        .expect("old config loads");
    assert_eq!(small.limits.drop_start(), 4);
    let off =
        parse("[limits]\npenalty_grace_exceeded = 0\npenalty_noauth = 'off'\npenalty_exempt = []")
            .expect("penalties off");
    assert_eq!(off.limits.penalty_grace_exceeded.non_zero(), None);
    assert_eq!(off.limits.penalty_noauth.non_zero(), None);

    let err = invalid(
        "[limits]\nmax_unauthenticated = 8\nunauthenticated_drop_start = 9\nunauthenticated_drop_rate = 101\n\
         penalty_grace_exceeded = '20m'\npenalty_exempt = ['10.0.0.1/8']",
    );
    for want in [
        "limits.unauthenticated_drop_start: cannot exceed limits.max_unauthenticated",
        "limits.unauthenticated_drop_rate: must be a percentage from 1 to 100",
        "limits.penalty_grace_exceeded: cannot exceed limits.penalty_max",
        "limits.penalty_exempt[0]: \"10.0.0.1/8\" has host bits set",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    let err = invalid(
        "[limits]\nunauthenticated_drop_start = 0\nunauthenticated_drop_rate = 0\npenalty_max = 0\npenalty_noauth = 0\npenalty_grace_exceeded = 0",
    );
    for want in [
        "limits.unauthenticated_drop_start: must be at least 1",
        "limits.unauthenticated_drop_rate: must be a percentage",
        "limits.penalty_max: cannot be 0",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
}

/// `-T` writes durations and sizes in the largest exact unit, and they read back the same.
#[test]
fn effective_durations_and_sizes_read_back() {
    for (d, text) in [
        (Duration::from_millis(250), "250ms"),
        (Duration::from_secs(90), "90s"),
        (Duration::from_secs(600), "10m"),
        (Duration::from_secs(7200), "2h"),
        (Duration::from_secs(172_800), "2d"),
        (Duration::ZERO, "0s"),
    ] {
        let written = String::from(ConfigDuration(d));
        assert_eq!(written, text);
        assert_eq!(parse_duration(&written), Ok(d));
    }
    let text = ServerConfig::from_toml(
        "[limits]\nmax_buffered = 4294967297\nmax_buffered_per_user = \"5MiB\"\n",
        Path::new("/etc/warrend/w.toml"),
    )
    .unwrap()
    .effective_toml()
    .unwrap();
    assert!(text.contains("max_buffered = 4294967297\n"), "{text}");
    assert!(
        text.contains("max_buffered_per_user = \"5MiB\"\n"),
        "{text}"
    );
}

#[test]
fn a_toml_error_names_line_and_column() {
    let err = ServerConfig::from_toml("[server]\nlisten = [1,\n", Path::new("w.toml"))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("w.toml:2:"), "{err}");
}
