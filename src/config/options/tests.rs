use super::*;
use crate::config::forward::{Endpoint, Listen};
use std::path::PathBuf;

fn applied(arg: &str) -> Options {
    let mut o = Options::default();
    assert_eq!(o.apply_arg(arg), Ok(ApplyOutcome::Applied), "{arg}");
    o
}

fn s(v: &str) -> Option<String> {
    Some(v.to_owned())
}

fn local(spec: &str) -> LocalForward {
    forward::parse_local(spec).unwrap()
}

fn remote(spec: &str) -> RemoteForward {
    forward::parse_remote(spec).unwrap()
}

type Setter = fn(&mut Options);

/// Every implemented keyword, each in a form that sets it.
const SETS: &[(&str, Setter)] = &[
    ("HostName=example.com", |o| o.host_name = s("example.com")),
    ("User=bob", |o| o.user = s("bob")),
    ("Port=2222", |o| o.port = Some(2222)),
    ("Port=65535", |o| o.port = Some(65535)),
    ("IdentityFile=~/.ssh/id_ed25519", |o| {
        o.identity_files = vec!["~/.ssh/id_ed25519".into()]
    }),
    ("IdentityFile2=id", |o| o.identity_files = vec!["id".into()]),
    ("CertificateFile=~/.ssh/id_ed25519-cert.pub", |o| {
        o.certificate_files = vec!["~/.ssh/id_ed25519-cert.pub".into()]
    }),
    ("UserKnownHostsFile=/a /b", |o| {
        o.user_known_hosts_files = Some(vec!["/a".into(), "/b".into()])
    }),
    ("UserKnownHostsFile=none", |o| {
        o.user_known_hosts_files = Some(vec!["none".into()])
    }),
    ("GlobalKnownHostsFile=/etc/ssh/kh", |o| {
        o.global_known_hosts_files = Some(vec!["/etc/ssh/kh".into()])
    }),
    ("StrictHostKeyChecking=yes", |o| {
        o.strict_host_key_checking = Some(StrictHostKeyChecking::Yes)
    }),
    ("StrictHostKeyChecking=true", |o| {
        o.strict_host_key_checking = Some(StrictHostKeyChecking::Yes)
    }),
    ("StrictHostKeyChecking=no", |o| {
        o.strict_host_key_checking = Some(StrictHostKeyChecking::No)
    }),
    ("StrictHostKeyChecking=false", |o| {
        o.strict_host_key_checking = Some(StrictHostKeyChecking::No)
    }),
    ("StrictHostKeyChecking=off", |o| {
        o.strict_host_key_checking = Some(StrictHostKeyChecking::No)
    }),
    ("StrictHostKeyChecking=ask", |o| {
        o.strict_host_key_checking = Some(StrictHostKeyChecking::Ask)
    }),
    ("StrictHostKeyChecking=accept-new", |o| {
        o.strict_host_key_checking = Some(StrictHostKeyChecking::AcceptNew)
    }),
    ("StrictHostKeyChecking=Accept-New", |o| {
        o.strict_host_key_checking = Some(StrictHostKeyChecking::AcceptNew)
    }),
    ("BatchMode=yes", |o| o.batch_mode = Some(true)),
    ("BatchMode=TRUE", |o| o.batch_mode = Some(true)),
    ("BatchMode=No", |o| o.batch_mode = Some(false)),
    ("BatchMode=false", |o| o.batch_mode = Some(false)),
    ("ExitOnForwardFailure=yes", |o| {
        o.exit_on_forward_failure = Some(true)
    }),
    ("ConnectTimeout=10", |o| {
        o.connect_timeout = Some(Duration::from_secs(10))
    }),
    ("ConnectTimeout=1m30s", |o| {
        o.connect_timeout = Some(Duration::from_secs(90))
    }),
    ("ConnectTimeout=1h", |o| {
        o.connect_timeout = Some(Duration::from_secs(3600))
    }),
    ("ConnectTimeout=2.9", |o| {
        o.connect_timeout = Some(Duration::from_secs(2))
    }),
    ("ConnectTimeout=none", |_| {}),
    ("ConnectTimeout=0", |_| {}),
    ("PasswordAuthentication=no", |o| {
        o.password_authentication = Some(false)
    }),
    ("KbdInteractiveAuthentication=yes", |o| {
        o.kbd_interactive_authentication = Some(true)
    }),
    ("ChallengeResponseAuthentication=no", |o| {
        o.kbd_interactive_authentication = Some(false)
    }),
    ("PubkeyAuthentication=yes", |o| {
        o.pubkey_authentication = Some(true)
    }),
    ("PubkeyAuthentication=host-bound", |o| {
        o.pubkey_authentication = Some(true)
    }),
    ("PubkeyAuthentication=unbound", |o| {
        o.pubkey_authentication = Some(true)
    }),
    ("PubkeyAuthentication=no", |o| {
        o.pubkey_authentication = Some(false)
    }),
    ("IdentitiesOnly=yes", |o| o.identities_only = Some(true)),
    ("IdentityAgent=none", |o| {
        o.identity_agent = Some(IdentityAgent::Disabled)
    }),
    ("IdentityAgent=SSH_AUTH_SOCK", |o| {
        o.identity_agent = Some(IdentityAgent::Env("SSH_AUTH_SOCK".into()))
    }),
    ("IdentityAgent=$MY_AGENT", |o| {
        o.identity_agent = Some(IdentityAgent::Env("MY_AGENT".into()))
    }),
    ("IdentityAgent=~/.1password/agent.sock", |o| {
        o.identity_agent = Some(IdentityAgent::Path("~/.1password/agent.sock".into()))
    }),
    ("IdentityAgent=${XDG_RUNTIME_DIR}/ssh-agent", |o| {
        o.identity_agent = Some(IdentityAgent::Path("${XDG_RUNTIME_DIR}/ssh-agent".into()))
    }),
    ("HashKnownHosts=yes", |o| o.hash_known_hosts = Some(true)),
    ("GatewayPorts=yes", |o| o.gateway_ports = Some(true)),
    ("AddressFamily=inet6", |o| {
        o.address_family = Some(AddressFamily::Inet6)
    }),
    ("BindAddress=127.0.0.2", |o| o.bind_address = s("127.0.0.2")),
    ("BindInterface=lo", |o| o.bind_interface = s("lo")),
    ("RekeyLimit=1M 1h", |o| {
        o.rekey_limit = Some(RekeyLimit {
            bytes: Some(1 << 20),
            time: Some(Duration::from_secs(3600)),
        })
    }),
    ("ForwardAgent=no", |o| {
        o.forward_agent = Some(ForwardAgent::No)
    }),
    ("EscapeChar=none", |o| o.escape_char = s("none")),
    ("Tag=prod", |o| o.tag = s("prod")),
    ("SessionType=none", |o| {
        o.session_type = Some(SessionType::None)
    }),
    ("StdinNull=yes", |o| o.stdin_null = Some(true)),
    ("Tunnel=ethernet", |o| o.tunnel = Some(TunnelMode::Ethernet)),
    ("TunnelDevice=3:any", |o| {
        o.tunnel_device = TunnelDevice::parse("3:any")
    }),
    ("TCPKeepAlive=no", |o| o.tcp_keep_alive = Some(false)),
    ("ClearAllForwardings=yes", |o| {
        o.clear_all_forwardings = Some(true)
    }),
    ("StreamLocalBindUnlink=yes", |o| {
        o.stream_local_bind_unlink = Some(true)
    }),
    ("SyslogFacility=local3", |o| {
        o.syslog_facility = Some(SyslogFacility::parse("LOCAL3").unwrap())
    }),
    ("SendEnv=LANG LC_*", |o| {
        o.send_env = vec!["LANG".into(), "LC_*".into()]
    }),
    ("SetEnv=A=1 \"B=two words\"", |o| {
        o.set_env = Some(vec![
            ("A".into(), "1".into()),
            ("B".into(), "two words".into()),
        ])
    }),
    ("GSSAPIAuthentication=yes", |o| {
        o.gssapi_authentication = Some(true)
    }),
    ("IPQoS=throughput", |o| {
        o.ip_qos = Some(IpQos::parse(&["throughput".into()]).unwrap())
    }),
    ("ForkAfterAuthentication=yes", |o| {
        o.fork_after_authentication = Some(true)
    }),
    ("LogLevel=QUIET", |o| o.log_level = Some(LogLevel::Quiet)),
    ("LogLevel=fatal", |o| o.log_level = Some(LogLevel::Fatal)),
    ("LogLevel=ERROR", |o| o.log_level = Some(LogLevel::Error)),
    ("LogLevel=INFO", |o| o.log_level = Some(LogLevel::Info)),
    ("LogLevel=verbose", |o| {
        o.log_level = Some(LogLevel::Verbose)
    }),
    ("LogLevel=DEBUG", |o| o.log_level = Some(LogLevel::Debug1)),
    ("LogLevel=DEBUG1", |o| o.log_level = Some(LogLevel::Debug1)),
    ("LogLevel=debug2", |o| o.log_level = Some(LogLevel::Debug2)),
    ("LogLevel=DEBUG3", |o| o.log_level = Some(LogLevel::Debug3)),
    ("LocalForward=8080 localhost:80", |o| {
        o.local_forwards = vec![local("8080:localhost:80")]
    }),
    ("LocalForward [::1]:8080 [fe80::1]:80", |o| {
        o.local_forwards = vec![local("[::1]:8080:[fe80::1]:80")]
    }),
    ("LocalForward *:8080 db:5432", |o| {
        o.local_forwards = vec![local("*:8080:db:5432")]
    }),
    ("LocalForward 8080 /run/app.sock", |o| {
        o.local_forwards = vec![local("8080:/run/app.sock")]
    }),
    ("LocalForward /tmp/l.sock /run/r.sock", |o| {
        o.local_forwards = vec![local("/tmp/l.sock:/run/r.sock")]
    }),
    ("RemoteForward 9000 localhost:3000", |o| {
        o.remote_forwards = vec![remote("9000:localhost:3000")]
    }),
    ("RemoteForward [::]:9000 /run/app.sock", |o| {
        o.remote_forwards = vec![remote("[::]:9000:/run/app.sock")]
    }),
    ("RemoteForward 1080", |o| {
        o.remote_forwards = vec![remote("1080")]
    }),
    ("RemoteForward localhost:0", |o| {
        o.remote_forwards = vec![remote("localhost:0")]
    }),
    ("DynamicForward 1080", |o| {
        o.dynamic_forwards = vec![forward::parse_dynamic("1080").unwrap()]
    }),
    ("DynamicForward [::1]:1080", |o| {
        o.dynamic_forwards = vec![forward::parse_dynamic("[::1]:1080").unwrap()]
    }),
    ("ServerAliveInterval=15", |o| {
        o.server_alive_interval = Some(Duration::from_secs(15))
    }),
    ("ServerAliveInterval=0", |o| {
        o.server_alive_interval = Some(Duration::ZERO)
    }),
    ("ServerAliveInterval=none", |_| {}),
    ("ServerAliveCountMax=3", |o| {
        o.server_alive_count_max = Some(3)
    }),
    ("ServerAliveCountMax=0", |o| {
        o.server_alive_count_max = Some(0)
    }),
    ("ConnectionAttempts=5", |o| o.connection_attempts = Some(5)),
    ("ConnectionAttempts=2147483647", |o| {
        o.connection_attempts = Some(2_147_483_647)
    }),
    ("Compression=yes", |o| o.compression = Some(true)),
    ("Compression=NO", |o| o.compression = Some(false)),
    ("ProxyJump=bastion", |o| o.proxy_jump = s("bastion")),
    ("ProxyJump=alice@j1:2222,j2", |o| {
        o.proxy_jump = s("alice@j1:2222,j2")
    }),
    ("ProxyJump=none", |o| o.proxy_jump = s("none")),
    ("ProxyCommand=ssh -W %h:%p bastion", |o| {
        o.proxy_command = s("ssh -W %h:%p bastion")
    }),
    ("ProxyCommand \"nc %h %p\"", |o| {
        o.proxy_command = s("\"nc %h %p\"")
    }),
    (
        "Ciphers=aes256-gcm@openssh.com,chacha20-poly1305@openssh.com",
        |o| o.ciphers = s("aes256-gcm@openssh.com,chacha20-poly1305@openssh.com"),
    ),
    ("Ciphers=+aes128-cbc", |o| o.ciphers = s("+aes128-cbc")),
    ("KexAlgorithms=-mlkem*", |o| o.kex_algorithms = s("-mlkem*")),
    ("MACs=hmac-sha2-512-etm@openssh.com", |o| {
        o.macs = s("hmac-sha2-512-etm@openssh.com")
    }),
    ("HostKeyAlgorithms=^ssh-ed25519", |o| {
        o.host_key_algorithms = s("^ssh-ed25519")
    }),
    ("HostKeyAlias=myhost", |o| o.host_key_alias = s("myhost")),
];

#[test]
fn every_keyword_sets_its_field() {
    for (arg, set) in SETS {
        let mut expected = Options::default();
        set(&mut expected);
        assert_eq!(applied(arg), expected, "{arg}");
    }
}

#[test]
fn syntax_forms_and_case_are_equivalent() {
    let forms = [
        "User=bob",
        "User bob",
        "User = bob",
        "User= bob",
        "User =bob",
        "User\t=\tbob",
        "  User   bob  ",
        "user=bob",
        "USER bob",
        "uSeR = bob",
        "User=\"bob\"",
        "User='bob'",
        "User bob # a comment",
        "User \"b\"ob",
    ];
    for arg in forms {
        assert_eq!(applied(arg).user, s("bob"), "{arg}");
    }
}

#[test]
fn split_option_normalizes_keys_and_keeps_quotes() {
    let cases = [
        ("Port=22", ("Port", "22")),
        ("port 22", ("Port", "22")),
        ("PORT = 22", ("Port", "22")),
        ("hostname=h", ("HostName", "h")),
        (
            "challengeresponseauthentication no",
            ("ChallengeResponseAuthentication", "no"),
        ),
        (
            "stricthostkeychecking=accept-new",
            ("StrictHostKeyChecking", "accept-new"),
        ),
        ("macs=hmac-sha2-256", ("MACs", "hmac-sha2-256")),
        (
            "IdentityFile=\"/path with/space\"",
            ("IdentityFile", "\"/path with/space\""),
        ),
        (
            "ProxyCommand=ssh -W %h:%p j",
            ("ProxyCommand", "ssh -W %h:%p j"),
        ),
        ("User==bob", ("User", "=bob")),
        ("NotAKeyword=x", ("NotAKeyword", "x")),
        (
            "LocalForward 8080 localhost:80",
            ("LocalForward", "8080 localhost:80"),
        ),
    ];
    for (arg, (key, value)) in cases {
        assert_eq!(
            split_option(arg),
            Ok((key.to_owned(), value.to_owned())),
            "{arg}"
        );
    }
    assert_eq!(
        split_option(""),
        Err(OptionError::MissingKeyword(String::new()))
    );
    assert_eq!(
        split_option("=yes"),
        Err(OptionError::MissingKeyword("=yes".into()))
    );
    assert_eq!(
        split_option("Bogus"),
        Err(OptionError::UnknownKeyword("Bogus".into()))
    );
    for arg in ["User", "User=", "user =  ", "User\t"] {
        assert_eq!(
            split_option(arg),
            Err(OptionError::MissingValue("User".into())),
            "{arg}"
        );
    }
}

#[test]
fn quoting_follows_ssh_argv_rules() {
    assert_eq!(
        applied("IdentityFile=\"/keys/my key\"").identity_files,
        ["/keys/my key"]
    );
    assert_eq!(
        applied("IdentityFile=/keys/my\\ key").identity_files,
        ["/keys/my key"]
    );
    assert_eq!(
        applied("UserKnownHostsFile \"/a b\" '/c d' /e").user_known_hosts_files,
        Some(vec!["/a b".into(), "/c d".into(), "/e".into()])
    );
    assert_eq!(applied("User \"it's\"").user, s("it's"));
    assert_eq!(applied("User a\\\"b").user, s("a\"b"));
    assert_eq!(applied("User a\\nb").user, s("a\\nb"));
    let mut o = Options::default();
    let err = o.apply_arg("User \"bob").unwrap_err();
    assert!(err.to_string().contains("closing \" quote"), "{err}");
    assert_eq!(
        o.apply_arg("User \"\""),
        Err(OptionError::MissingValue("User".into()))
    );
    assert_eq!(
        o.apply_arg("User # only a comment"),
        Err(OptionError::MissingValue("User".into()))
    );
}

#[test]
fn first_value_wins_for_scalars() {
    let pairs = [
        ("HostName a", "HostName b"),
        ("User a", "User b"),
        ("Port 1", "Port 2"),
        ("UserKnownHostsFile /a", "UserKnownHostsFile /b"),
        ("GlobalKnownHostsFile /a", "GlobalKnownHostsFile none"),
        ("StrictHostKeyChecking yes", "StrictHostKeyChecking no"),
        ("BatchMode yes", "BatchMode no"),
        ("ExitOnForwardFailure no", "ExitOnForwardFailure yes"),
        ("ConnectTimeout 5", "ConnectTimeout 10"),
        ("PasswordAuthentication no", "PasswordAuthentication yes"),
        (
            "KbdInteractiveAuthentication no",
            "ChallengeResponseAuthentication yes",
        ),
        ("PubkeyAuthentication no", "DSAAuthentication yes"),
        ("IdentitiesOnly yes", "IdentitiesOnly no"),
        ("IdentityAgent none", "IdentityAgent /tmp/agent"),
        ("HashKnownHosts yes", "HashKnownHosts no"),
        ("GatewayPorts yes", "GatewayPorts no"),
        ("LogLevel ERROR", "LogLevel DEBUG3"),
        ("ServerAliveInterval 0", "ServerAliveInterval 30"),
        ("ServerAliveCountMax 1", "ServerAliveCountMax 9"),
        ("ConnectionAttempts 1", "ConnectionAttempts 9"),
        ("Compression no", "Compression yes"),
        ("ProxyJump a", "ProxyJump b"),
        ("ProxyCommand a", "ProxyCommand b"),
        ("Ciphers aes128-ctr", "Ciphers aes256-ctr"),
        ("HostKeyAlias a", "HostKeyAlias b"),
    ];
    for (first, second) in pairs {
        let mut o = applied(first);
        let before = o.clone();
        assert_eq!(o.apply_arg(second), Ok(ApplyOutcome::Ignored), "{second}");
        assert_eq!(o, before, "{second} changed {first}");
    }
}

#[test]
fn unset_by_none_leaves_room_for_later_values() {
    let mut o = applied("ConnectTimeout none");
    assert_eq!(o.apply_arg("ConnectTimeout 7"), Ok(ApplyOutcome::Applied));
    assert_eq!(o.connect_timeout, Some(Duration::from_secs(7)));
    let mut o = applied("ServerAliveInterval none");
    assert_eq!(
        o.apply_arg("ServerAliveInterval 7"),
        Ok(ApplyOutcome::Applied)
    );
    assert_eq!(o.server_alive_interval, Some(Duration::from_secs(7)));
}

#[test]
fn proxy_jump_and_proxy_command_exclude_each_other() {
    let mut o = applied("ProxyJump bastion");
    assert_eq!(
        o.apply_arg("ProxyCommand nc %h %p"),
        Ok(ApplyOutcome::Ignored)
    );
    assert_eq!(o.proxy_command, None);
    let mut o = applied("ProxyCommand nc %h %p");
    assert_eq!(o.apply_arg("ProxyJump bastion"), Ok(ApplyOutcome::Ignored));
    assert_eq!(o.proxy_jump, None);
    // `ProxyJump none` only disables jumping; a later command still applies.
    let mut o = applied("ProxyJump none");
    assert_eq!(
        o.apply_arg("ProxyCommand nc %h %p"),
        Ok(ApplyOutcome::Applied)
    );
}

#[test]
fn list_keywords_accumulate_without_duplicates() {
    let mut o = Options::default();
    let steps = [
        ("IdentityFile ~/.ssh/a", ApplyOutcome::Applied),
        ("IdentityFile ~/.ssh/b", ApplyOutcome::Applied),
        ("identityfile ~/.ssh/a", ApplyOutcome::Ignored),
        ("LocalForward 8080 h:80", ApplyOutcome::Applied),
        ("LocalForward 8081 h:80", ApplyOutcome::Applied),
        ("LocalForward 8080 h:80", ApplyOutcome::Ignored),
        ("RemoteForward 9000 h:80", ApplyOutcome::Applied),
        ("RemoteForward 1080", ApplyOutcome::Applied),
        ("RemoteForward 1080", ApplyOutcome::Ignored),
        ("DynamicForward 1080", ApplyOutcome::Applied),
        ("DynamicForward localhost:1081", ApplyOutcome::Applied),
        ("DynamicForward 1080", ApplyOutcome::Ignored),
    ];
    for (arg, outcome) in steps {
        assert_eq!(o.apply_arg(arg), Ok(outcome), "{arg}");
    }
    assert_eq!(o.identity_files, ["~/.ssh/a", "~/.ssh/b"]);
    let listens: Vec<_> = o.local_forwards.iter().map(|f| f.listen.clone()).collect();
    assert_eq!(
        listens,
        [
            Listen::Tcp {
                bind: None,
                port: 8080
            },
            Listen::Tcp {
                bind: None,
                port: 8081
            }
        ]
    );
    assert_eq!(o.remote_forwards.len(), 2);
    assert_eq!(o.remote_forwards[1].connect, None);
    assert_eq!(o.dynamic_forwards.len(), 2);
    assert_eq!(o.dynamic_forwards[1].bind, s("localhost"));
}

#[test]
fn identity_files_are_capped_like_ssh() {
    let mut o = Options::default();
    for i in 0..MAX_IDENTITY_FILES {
        assert_eq!(
            o.apply_arg(&format!("IdentityFile k{i}")),
            Ok(ApplyOutcome::Applied)
        );
    }
    assert!(o.apply_arg("IdentityFile one-too-many").is_err());
    assert_eq!(o.apply_arg("IdentityFile k0"), Ok(ApplyOutcome::Ignored));
}

#[test]
fn forward_arguments_join_carefully() {
    let o = applied("LocalForward /tmp/odd:name.sock host:80");
    assert_eq!(
        o.local_forwards[0].listen,
        Listen::Unix(PathBuf::from("/tmp/odd:name.sock"))
    );
    let o = applied("LocalForward 8080 /run/a:b.sock");
    assert_eq!(
        o.local_forwards[0].connect,
        Endpoint::Unix(PathBuf::from("/run/a:b.sock"))
    );
    let o = applied("LocalForward [/tmp/x:y] [::1]:22");
    assert_eq!(
        o.local_forwards[0].listen,
        Listen::Unix(PathBuf::from("/tmp/x:y"))
    );
    assert_eq!(
        o.local_forwards[0].connect,
        Endpoint::Tcp {
            host: "::1".into(),
            port: 22
        }
    );
    let o = applied("LocalForward \"127.0.0.1:8080\" \"db:5432\"");
    assert_eq!(o.local_forwards[0].spec, "127.0.0.1:8080:db:5432");
    let o = applied("RemoteForward /tmp/r\\\\:x.sock /tmp/l.sock");
    assert_eq!(
        o.remote_forwards[0].listen,
        Listen::Unix(PathBuf::from("/tmp/r:x.sock"))
    );
}

#[test]
fn unsupported_keywords_are_reported_not_rejected() {
    for arg in [
        "forwardx11=no",
        "AddKeysToAgent yes",
        "CheckHostIP no",
        "Protocol 2",
        "UseRoaming no",
        "PubkeyAcceptedKeyTypes +ssh-rsa",
        "GSSAPIKeyExchange no",
        "UseKeychain yes",
        "NoHostAuthenticationForLocalhost yes",
        "XAuthLocation /usr/bin/xauth",
    ] {
        let mut o = Options::default();
        assert_eq!(o.apply_arg(arg), Ok(ApplyOutcome::Unsupported), "{arg}");
        assert_eq!(o, Options::default(), "{arg}");
    }
}

#[test]
fn unknown_keywords_and_directives_are_errors() {
    let mut o = Options::default();
    let err = o.apply_arg("Bogus=1").unwrap_err();
    assert_eq!(err, OptionError::UnknownKeyword("Bogus".into()));
    assert_eq!(err.to_string(), "Bad configuration option: Bogus");
    for arg in [
        "ServerAliveCountMax2 1",
        "User-Name bob",
        "Users bob",
        "\"User\" bob",
    ] {
        assert!(
            matches!(o.apply_arg(arg), Err(OptionError::UnknownKeyword(_))),
            "{arg}"
        );
    }
    for (arg, name) in [
        ("Host foo", "Host"),
        ("match all", "Match"),
        ("Include ~/x", "Include"),
    ] {
        let err = o.apply_arg(arg).unwrap_err();
        assert_eq!(err, OptionError::Directive(name.into()));
        assert_eq!(
            err.to_string(),
            format!("{name} directive not supported as a command-line option")
        );
    }
    assert_eq!(o, Options::default());
}

/// Every keyword in OpenSSH's readconf.c table must be known, so real
/// options never turn into "Bad configuration option" errors.
#[test]
fn knows_every_openssh_keyword() {
    let readconf = "protocol cipher fallbacktorsh globalknownhostsfile2 \
        rhostsauthentication userknownhostsfile2 useroaming usersh useprivilegedport \
        afstokenpassing kerberosauthentication kerberostgtpassing rsaauthentication \
        rhostsrsaauthentication compressionlevel gssapiauthentication \
        gssapidelegatecredentials pkcs11provider smartcarddevice forwardagent forwardx11 \
        forwardx11trusted forwardx11timeout exitonforwardfailure xauthlocation \
        gatewayports passwordauthentication kbdinteractiveauthentication \
        kbdinteractivedevices challengeresponseauthentication skeyauthentication \
        tisauthentication pubkeyauthentication dsaauthentication hostbasedauthentication \
        identityfile identityfile2 identitiesonly certificatefile addkeystoagent \
        identityagent hostname hostkeyalias proxycommand port ciphers macs remoteforward \
        localforward permitremoteopen user host match tag escapechar globalknownhostsfile \
        userknownhostsfile connectionattempts batchmode checkhostip stricthostkeychecking \
        compression tcpkeepalive keepalive numberofpasswordprompts syslogfacility loglevel \
        logverbose dynamicforward preferredauthentications hostkeyalgorithms \
        casignaturealgorithms bindaddress bindinterface clearallforwardings \
        enablesshkeysign verifyhostkeydns nohostauthenticationforlocalhost rekeylimit \
        connecttimeout addressfamily serveraliveinterval serveralivecountmax sendenv setenv \
        controlpath controlmaster controlpersist hashknownhosts include tunnel \
        tunneldevice localcommand permitlocalcommand remotecommand visualhostkey \
        kexalgorithms ipqos requesttty sessiontype stdinnull forkafterauthentication \
        proxyusefdpass canonicaldomains canonicalizefallbacklocal canonicalizehostname \
        canonicalizemaxdots canonicalizepermittedcnames streamlocalbindmask \
        streamlocalbindunlink revokedhostkeys fingerprinthash updatehostkeys \
        hostbasedacceptedalgorithms hostbasedkeytypes pubkeyacceptedalgorithms \
        pubkeyacceptedkeytypes ignoreunknown proxyjump securitykeyprovider \
        knownhostscommand requiredrsasize enableescapecommandline obscurekeystroketiming \
        channeltimeout versionaddendum refuseconnection warnweakcrypto";
    for word in readconf.split_whitespace() {
        assert!(lookup(word).is_some(), "{word} missing");
    }
    // No keyword is listed twice under different spellings.
    for (i, (a, _)) in KEYWORDS.iter().enumerate() {
        for (b, _) in &KEYWORDS[i + 1..] {
            assert!(!a.eq_ignore_ascii_case(b), "{a} listed twice");
        }
    }
}

#[test]
fn bad_values_name_keyword_value_and_choices() {
    let cases = [
        (
            "StrictHostKeyChecking=maybe",
            "StrictHostKeyChecking: bad value 'maybe' (expected yes, no, ask, accept-new)",
        ),
        (
            "BatchMode=on",
            "BatchMode: bad value 'on' (expected yes or no)",
        ),
        (
            "BatchMode=1",
            "BatchMode: bad value '1' (expected yes or no)",
        ),
        ("GatewayPorts=clientspecified", "expected yes or no"),
        (
            "Compression=true",
            "Compression: bad value 'true' (expected yes or no)",
        ),
        (
            "PubkeyAuthentication=maybe",
            "expected yes, no, unbound, host-bound",
        ),
        (
            "Port=0",
            "Port: bad value '0' (expected a port number 1..=65535)",
        ),
        ("Port=65536", "a port number"),
        ("Port=ssh", "a port number"),
        ("Port=-22", "a port number"),
        ("Port=22 23", "a single argument"),
        (
            "User=a b",
            "User: bad value 'a b' (expected a single argument",
        ),
        (
            "LogLevel=LOUD",
            "expected QUIET, FATAL, ERROR, INFO, VERBOSE, DEBUG",
        ),
        (
            "ConnectTimeout=soon",
            "ConnectTimeout: bad value 'soon' (expected a time",
        ),
        ("ConnectTimeout=-1", "expected a time"),
        ("ConnectTimeout=1.5m", "expected a time"),
        ("ConnectTimeout=5.", "expected a time"),
        ("ConnectTimeout=1s1s", "expected a time"),
        ("ConnectTimeout=1x", "expected a time"),
        ("ConnectTimeout=99999999999", "expected a time"),
        ("ConnectTimeout=NONE", "expected a time"),
        ("ServerAliveInterval=1y", "expected a time"),
        ("ServerAliveCountMax=-1", "a whole number"),
        ("ServerAliveCountMax=2147483648", "a whole number"),
        ("ConnectionAttempts=many", "a whole number"),
        ("IdentityAgent=$1BAD", "$VARIABLE"),
        ("IdentityAgent=$", "$VARIABLE"),
        ("UserKnownHostsFile=/a none", "none on its own"),
        ("ProxyJump=a,,b", "[user@]host[:port]"),
        ("ProxyJump=a b", "[user@]host[:port]"),
        ("LocalForward=8080", "the connect argument is missing"),
        (
            "LocalForward=8080:localhost:80",
            "the connect argument is missing",
        ),
        ("LocalForward=8080 h:80 extra", "extra arguments"),
        ("LocalForward=x h:80", "listen port 'x'"),
        ("LocalForward=8080 h:0", "port 0"),
        ("LocalForward=8080 h", "too few fields"),
        (
            "LocalForward=8080 [::1:80",
            "LocalForward: bad value '8080 [::1:80' (expected [bind_address:]port host:hostport",
        ),
        ("RemoteForward=8080:h:80", "separated by whitespace"),
        ("RemoteForward=8080 h:80 x", "extra arguments"),
        ("RemoteForward=8080 h:http", "service names"),
        ("DynamicForward=x", "listen port 'x'"),
        ("DynamicForward=1080 1081", "a single argument"),
        ("DynamicForward=h:1080:x", "1 or 2"),
    ];
    for (arg, wanted) in cases {
        let mut o = Options::default();
        let err = o.apply_arg(arg).expect_err(arg);
        assert!(
            matches!(err, OptionError::BadValue { .. }),
            "{arg}: {err:?}"
        );
        let msg = err.to_string();
        assert!(msg.contains(wanted), "{arg}: {msg}");
        assert_eq!(o, Options::default(), "{arg} changed options");
    }
}

#[test]
fn bad_values_are_rejected_even_when_already_set() {
    let mut o = applied("BatchMode yes");
    assert!(o.apply_arg("BatchMode maybe").is_err());
    let mut o = applied("Port 22");
    assert!(o.apply_arg("Port 0").is_err());
}

/// Short strings over the characters that matter to the syntax: errors
/// are fine, panics are not.
#[test]
fn never_panics_on_odd_values() {
    const ALPHABET: [char; 8] = ['"', '\'', '\\', ' ', '#', '=', '1', '$'];
    let mut values = vec![String::new()];
    for _ in 0..4 {
        let longer: Vec<String> = values
            .iter()
            .filter(|s| s.len() == values.last().map_or(0, String::len))
            .flat_map(|s| ALPHABET.iter().map(move |&c| format!("{s}{c}")))
            .collect();
        values.extend(longer);
    }
    for keyword in [
        "User",
        "UserKnownHostsFile",
        "ConnectTimeout",
        "IdentityAgent",
    ] {
        for value in &values {
            let _ = Options::default().apply(keyword, value);
            let _ = Options::default().apply_arg(&format!("{keyword}{value}"));
        }
    }
}

#[test]
fn apply_takes_key_and_value_separately() {
    let mut o = Options::default();
    assert_eq!(o.apply("port", " 2222 "), Ok(ApplyOutcome::Applied));
    assert_eq!(o.port, Some(2222));
    assert_eq!(
        o.apply("User", "  "),
        Err(OptionError::MissingValue("User".into()))
    );
    assert_eq!(
        o.apply("ForwardAgent", ""),
        Err(OptionError::MissingValue("ForwardAgent".into()))
    );
}
