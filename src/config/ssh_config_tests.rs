//! Tests for the ssh_config reader, against temp files laid out like a home directory.

use super::*;
use std::os::unix::fs::PermissionsExt;
use tempfile::TempDir;

/// A fake home directory with `~/.ssh/`.
struct Home {
    dir: TempDir,
}

impl Home {
    fn new() -> Home {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join(".ssh")).unwrap();
        Home { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes a file relative to home, creating directories.
    fn write(&self, rel: &str, text: &str) -> PathBuf {
        let path = self.path().join(rel);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, text).unwrap();
        path
    }

    fn ctx(&self, host: &str) -> MatchContext {
        MatchContext {
            host: host.into(),
            original_host: host.into(),
            user: None,
            local_user: "alice".into(),
            home: self.path().to_owned(),
        }
    }

    /// `~/.ssh/config` as the only file.
    fn files(&self) -> Vec<ConfigFile> {
        ConfigFile::standard(self.path(), None)
            .into_iter()
            .filter(|f| f.scope == Scope::User)
            .collect()
    }

    fn resolve_ctx(&self, ctx: &MatchContext) -> Result<(Options, Vec<Warning>), ConfigError> {
        let mut opts = Options::default();
        let warnings = apply_config_files(&mut opts, ctx, &self.files())?;
        Ok((opts, warnings))
    }

    fn resolve(&self, host: &str) -> Options {
        let (opts, warnings) = self.resolve_ctx(&self.ctx(host)).unwrap();
        assert!(warnings.is_empty(), "{host}: {warnings:?}");
        opts
    }
}

/// `~/.ssh/config` holding `text`.
fn home_with(text: &str) -> Home {
    let home = Home::new();
    home.write(".ssh/config", text);
    home
}

fn messages(warnings: &[Warning]) -> Vec<String> {
    warnings.iter().map(ToString::to_string).collect()
}

#[test]
fn host_patterns_and_negation() {
    let home = home_with(
        "Host *.example.com !secret.example.com\n  Port 1001\n\
         Host db? web\n  Port 1002\n\
         Host \"quoted\" other # a comment\n  Port 1004\n\
         Host !nowhere\n  Port 1005\n\
         Host *\n  Port 1003\n",
    );
    let cases = [
        ("a.example.com", 1001),
        ("A.Example.COM", 1001),
        ("secret.example.com", 1003),
        ("example.com", 1003),
        ("db1", 1002),
        ("db12", 1003),
        ("web", 1002),
        ("quoted", 1004),
        ("a", 1003),
    ];
    for (host, port) in cases {
        assert_eq!(home.resolve(host).port, Some(port), "{host}");
    }
}

#[test]
fn syntax_forms() {
    let home = home_with(
        "# leading comment\n\
         \n   \t\n\
         \tuser=bob   \r\n\
         PORT = 2022\n\
         IdentityFile \"/keys/with space\"  # trailing comment\n\
         hostname\texample.org \x0c\n\
         identityfile=/keys/second\n\
         ConnectTimeout 10s\r\n\
         ProxyCommand ssh -W %h:%p \"gw\" # kept verbatim\n",
    );
    let o = home.resolve("x");
    assert_eq!(o.user.as_deref(), Some("bob"));
    assert_eq!(o.port, Some(2022));
    assert_eq!(o.identity_files, ["/keys/with space", "/keys/second"]);
    assert_eq!(o.host_name.as_deref(), Some("example.org"));
    assert_eq!(o.connect_timeout, Some(Duration::from_secs(10)));
    assert_eq!(
        o.proxy_command.as_deref(),
        Some("ssh -W %h:%p \"gw\" # kept verbatim")
    );
}

#[test]
fn first_value_wins_across_blocks_and_files() {
    let home = home_with(
        "IdentityFile ~/.ssh/general\n\
         Host web\n  User first\n  IdentityFile ~/.ssh/web\n\
         Host *\n  User second\n  Port 2200\n",
    );
    let system = home.write("system_config", "User third\nCompression yes\nPort 1\n");
    let mut files = home.files();
    files.push(ConfigFile {
        path: system,
        scope: Scope::System,
        required: false,
        check_permissions: false,
    });
    let mut o = Options::default();
    let warnings = apply_config_files(&mut o, &home.ctx("web"), &files).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    assert_eq!(o.user.as_deref(), Some("first"));
    assert_eq!(o.port, Some(2200));
    assert_eq!(o.compression, Some(true));
    assert_eq!(o.identity_files, ["~/.ssh/general", "~/.ssh/web"]);
}

#[test]
fn command_line_options_win() {
    let home = home_with("Port 22\nUser cfg\nLocalForward 1 h:1\nHostName %h.cfg\n");
    let mut o = Options::default();
    for arg in ["Port=9", "LocalForward=2 h:2", "HostName=%h.cli"] {
        o.apply_arg(arg).unwrap();
    }
    apply_config_files(&mut o, &home.ctx("db"), &home.files()).unwrap();
    assert_eq!(o.port, Some(9));
    assert_eq!(o.user.as_deref(), Some("cfg"));
    assert_eq!(o.local_forwards.len(), 2);
    assert_eq!(o.host_name.as_deref(), Some("db.cli"));
}

#[test]
fn standard_files_follow_ssh() {
    let home = Path::new("/home/a");
    assert!(ConfigFile::standard(home, Some(Path::new("none"))).is_empty());
    assert!(ConfigFile::standard(home, Some(Path::new("NONE"))).is_empty());
    let f = ConfigFile::standard(home, Some(Path::new("/tmp/cfg")));
    assert_eq!(f.len(), 1);
    assert!(f[0].required && !f[0].check_permissions && f[0].scope == Scope::User);
    let d = ConfigFile::standard(home, None);
    assert_eq!(d[0].path, Path::new("/home/a/.ssh/config"));
    assert!(!d[0].required && d[0].check_permissions);
    assert_eq!(d[1].path, Path::new("/etc/ssh/ssh_config"));
    assert_eq!(d[1].scope, Scope::System);
}

#[test]
fn missing_files() {
    let home = Home::new();
    // No ~/.ssh/config: fine.
    assert_eq!(home.resolve("x"), Options::default());
    // A missing -F file: an error naming it.
    let missing = home.path().join("nope");
    let files = ConfigFile::standard(home.path(), Some(&missing));
    let err = apply_config_files(&mut Options::default(), &home.ctx("x"), &files).unwrap_err();
    assert!(matches!(err, ConfigError::Io { .. }), "{err:?}");
    assert!(err.to_string().contains("nope"), "{err}");
}

#[test]
fn include_globs_relative_paths_and_order() {
    let home = home_with(
        "Include conf.d/*.conf\n\
         Include ~/.ssh/tilde extra/missing*\n\
         Include INCLUDE_ABS\n\
         Host *\n  IdentityFile last\n",
    );
    let abs = home.write("elsewhere/abs", "IdentityFile abs\n");
    let config = fs::read_to_string(home.path().join(".ssh/config")).unwrap();
    home.write(
        ".ssh/config",
        &config.replace("INCLUDE_ABS", abs.to_str().unwrap()),
    );
    home.write(".ssh/conf.d/b.conf", "IdentityFile b\n");
    home.write(".ssh/conf.d/a.conf", "IdentityFile a\n");
    home.write(".ssh/conf.d/.hidden.conf", "IdentityFile hidden\n");
    home.write(".ssh/conf.d/c.txt", "IdentityFile txt\n");
    fs::create_dir(home.path().join(".ssh/conf.d/dir.conf")).unwrap();
    home.write(".ssh/tilde", "IdentityFile tilde\n");
    let o = home.resolve("x");
    assert_eq!(o.identity_files, ["a", "b", "tilde", "abs", "last"]);
}

#[test]
fn include_inside_host_block_applies_only_when_it_matches() {
    let home = home_with(
        "Host web\n  Include web.conf\n\
         Host db\n  Include db.conf\n  IdentityFile after-include\n\
         Host *\n  User fallback\n",
    );
    // The included file starts in its includer's block; its own Host line
    // does not leak back into the includer.
    home.write(
        ".ssh/web.conf",
        "Port 8080\nHost nothing-matches-this\n  User nobody\n",
    );
    home.write(".ssh/db.conf", "Host *\n  Port 5432\n");
    let cases: [(&str, Option<u16>, &str, &[&str]); 3] = [
        ("web", Some(8080), "fallback", &[]),
        ("db", Some(5432), "fallback", &["after-include"]),
        ("other", None, "fallback", &[]),
    ];
    for (host, port, user, ids) in cases {
        let o = home.resolve(host);
        assert_eq!(o.port, port, "{host}");
        assert_eq!(o.user.as_deref(), Some(user), "{host}");
        assert_eq!(o.identity_files, ids, "{host}");
    }
}

#[test]
fn include_recursion_is_an_error() {
    let home = home_with("Include loop\n");
    home.write(".ssh/loop", "Include loop\n");
    let err = home.resolve_ctx(&home.ctx("x")).unwrap_err().to_string();
    assert!(err.contains("too many nested includes"), "{err}");
    assert!(err.contains("16"), "{err}");
    assert!(err.contains("loop:1:"), "{err}");
    // 16 levels are fine.
    let home = home_with("Include l1\n");
    for i in 1..=16 {
        let next = if i < 16 {
            format!("Include l{}\n", i + 1)
        } else {
            "Port 16\n".into()
        };
        home.write(&format!(".ssh/l{i}"), &next);
    }
    assert_eq!(home.resolve("x").port, Some(16));
}

#[test]
fn include_rules_for_system_files_and_permissions() {
    let home = Home::new();
    let system = home.write("etc/ssh_config", "Include ~/.ssh/x\n");
    let files = [ConfigFile {
        path: system,
        scope: Scope::System,
        required: true,
        check_permissions: false,
    }];
    let err = apply_config_files(&mut Options::default(), &home.ctx("x"), &files).unwrap_err();
    assert!(err.to_string().contains("no ~ in system files"), "{err}");

    let home = home_with("Include open\n");
    let open = home.write(".ssh/open", "Port 1\n");
    fs::set_permissions(&open, fs::Permissions::from_mode(0o666)).unwrap();
    let err = home.resolve_ctx(&home.ctx("x")).unwrap_err();
    assert!(matches!(err, ConfigError::Permissions { .. }), "{err:?}");
    let config = home.path().join(".ssh/config");
    fs::set_permissions(&config, fs::Permissions::from_mode(0o620)).unwrap();
    let err = home.resolve_ctx(&home.ctx("x")).unwrap_err();
    assert!(
        err.to_string().contains("bad owner or permissions"),
        "{err}"
    );
}

#[test]
fn match_criteria() {
    let home = home_with(
        "Host alias\n  HostName real.example.com\n\
         Host tokenized\n  HostName %h.internal\n\
         Match host *.example.com\n  IdentityFile m-host\n\
         Match host tokenized.internal\n  IdentityFile m-token\n\
         Match originalhost alias\n  IdentityFile m-orig\n\
         Match user ops\n  IdentityFile m-user\n\
         Match localuser alice,bob\n  IdentityFile m-local\n\
         Match !localuser alice\n  IdentityFile m-notlocal\n\
         Match host=alias\n  IdentityFile m-alias-is-not-hostname\n\
         Match originalhost alias user root\n  IdentityFile m-and\n\
         Match !host foo*\n  IdentityFile m-negated\n\
         Match all\n  IdentityFile m-all\n\
         Match !all\n  IdentityFile m-never\n",
    );
    let mut ops = home.ctx("alias");
    ops.user = Some("ops".into());
    let mut root = home.ctx("alias");
    root.user = Some("root".into());
    let cases: [(MatchContext, &[&str]); 5] = [
        (
            home.ctx("alias"),
            &["m-host", "m-orig", "m-local", "m-negated", "m-all"],
        ),
        (
            ops,
            &[
                "m-host",
                "m-orig",
                "m-user",
                "m-local",
                "m-negated",
                "m-all",
            ],
        ),
        (
            root,
            &["m-host", "m-orig", "m-local", "m-and", "m-negated", "m-all"],
        ),
        (
            home.ctx("tokenized"),
            &["m-token", "m-local", "m-negated", "m-all"],
        ),
        (home.ctx("foo1"), &["m-local", "m-all"]),
    ];
    for (ctx, ids) in cases {
        let (o, w) = home.resolve_ctx(&ctx).unwrap();
        assert!(w.is_empty(), "{w:?}");
        assert_eq!(o.identity_files, ids, "{ctx:?}");
    }
}

#[test]
fn match_user_sees_user_set_earlier_in_config() {
    let home = home_with("Host h\n  User deploy\nMatch user deploy\n  Port 2\n");
    assert_eq!(home.resolve("h").port, Some(2));
    assert_eq!(home.resolve("other").port, None);
}

#[test]
fn match_final_runs_a_second_pass() {
    let home = home_with(
        "Match canonical\n  IdentityFile canonical\n\
         Host alias\n  HostName real.example\n\
         Match final host real.example\n  Port 2200\n\
         Host real.example\n  User via-final-pass\n\
         Match !final\n  IdentityFile first-pass\n",
    );
    let o = home.resolve("alias");
    assert_eq!(o.port, Some(2200));
    assert_eq!(o.user.as_deref(), Some("via-final-pass"));
    assert_eq!(o.identity_files, ["first-pass", "canonical"]);
    // Without `Match final`, `Match canonical` never applies (no canonicalisation).
    let home = home_with("Match canonical\n  Port 1\n");
    assert_eq!(home.resolve("x").port, None);
}

#[test]
fn unevaluated_match_criteria_warn_and_do_not_match() {
    let home = home_with(
        "Match exec \"true\"\n  Port 1\n\
         Match host x !localnetwork 10.0.0.0/8\n  User nope\n\
         Match command=x\n  Compression yes\n",
    );
    let (o, w) = home.resolve_ctx(&home.ctx("x")).unwrap();
    assert_eq!((o.port, o.user, o.compression), (None, None, None));
    let w = messages(&w);
    assert_eq!(w.len(), 3, "{w:?}");
    for (warning, (line, criterion)) in
        w.iter()
            .zip([(1, "exec"), (3, "localnetwork"), (5, "command")])
    {
        assert!(
            warning.contains(&format!("config:{line}: Match {criterion} ")),
            "{warning}"
        );
        assert!(warning.contains("treated as not matching"), "{warning}");
    }
}

#[test]
fn match_tagged_sees_the_tag_set_so_far() {
    let home = home_with("Match tagged prod\n  Port 1\nMatch !tagged prod\n  User untagged\n");
    let mut o = Options::default();
    o.apply_arg("Tag=prod").unwrap();
    let w = apply_config_files(&mut o, &home.ctx("x"), &home.files()).unwrap();
    assert!(w.is_empty(), "{w:?}");
    assert_eq!((o.port, o.user.as_deref()), (Some(1), None));
    let (o, _) = home.resolve_ctx(&home.ctx("x")).unwrap();
    assert_eq!((o.port, o.user.as_deref()), (None, Some("untagged")));
}

#[test]
fn bad_match_lines_are_errors() {
    let cases = [
        ("Match hots x", "unsupported attribute 'hots'"),
        ("Match host", "missing argument for 'host'"),
        ("Match host=", "missing argument"),
        ("Match host x user y all", "cannot be combined"),
        ("Match all x", "cannot be combined"),
        ("Match # nothing", "one or more criteria"),
        ("Match", "no argument after keyword"),
        ("Match host \"x", "missing closing \" quote"),
        ("Host \"\"", "empty argument"),
    ];
    for (line, wanted) in cases {
        let home = home_with(&format!("Port 1\n{line}\n"));
        let err = home.resolve_ctx(&home.ctx("x")).unwrap_err().to_string();
        assert!(err.contains("config:2: "), "{line}: {err}");
        assert!(err.contains(wanted), "{line}: {err}");
    }
    // ssh allows `all` after one other criterion.
    let home = home_with("Match final all\n  Port 3\nMatch host x all\n  User u\n");
    let o = home.resolve("x");
    assert_eq!((o.port, o.user.as_deref()), (Some(3), Some("u")));
}

#[test]
fn tokens() {
    let t = Tokens {
        host: "db.internal".into(),
        original_host: "db".into(),
        port: 2222,
        remote_user: "ops".into(),
        local_user: "alice".into(),
        home: "/home/alice".into(),
    };
    let ok = [
        (
            "%d/.ssh/id_%r@%h:%p",
            "/home/alice/.ssh/id_ops@db.internal:2222",
        ),
        ("%n %u 100%%", "db alice 100%"),
        ("plain", "plain"),
        ("%%h", "%h"),
        ("ünï%hcödé", "ünïdb.internalcödé"),
    ];
    for (input, wanted) in ok {
        assert_eq!(expand_tokens(input, &t).as_deref(), Ok(wanted), "{input}");
    }
    for (input, wanted) in [("x %C", "%C"), ("x %", "lone %"), ("%é", "%é")] {
        let err = expand_tokens(input, &t).unwrap_err();
        assert!(err.contains(wanted), "{input}: {err}");
    }
}

#[test]
fn host_name_tokens() {
    let home = home_with("Host db\n  HostName %h.internal\nHost bad\n  HostName %p.x\n");
    assert_eq!(home.resolve("db").host_name.as_deref(), Some("db.internal"));
    let err = home.resolve_ctx(&home.ctx("bad")).unwrap_err().to_string();
    assert!(
        err.contains("config:4: HostName: unknown token %p"),
        "{err}"
    );
    let mut o = Options::default();
    o.apply_arg("HostName=%r").unwrap();
    let err = apply_config_files(&mut o, &home.ctx("db"), &[]).unwrap_err();
    assert!(err.to_string().contains("unknown token %r"), "{err}");
}

#[test]
fn expand_paths_after_resolution() {
    let home = home_with(
        "Host db\n  User ops\n  Port 2022\n\
         IdentityFile ~/.ssh/id_%r@%h\n\
         UserKnownHostsFile %d/kh_%p ~/kh2\n\
         IdentityAgent ~/agent-%u.sock\n\
         LocalForward /tmp/l-%h.sock h:80\n\
         RemoteForward 9000 /run/%r.sock\n",
    );
    let ctx = home.ctx("db");
    let mut o = home.resolve("db");
    let t = Tokens::resolved(&o, &ctx);
    assert_eq!((t.port, t.remote_user.as_str()), (2022, "ops"));
    expand_paths(&mut o, &t).unwrap();
    let h = home.path().display();
    assert_eq!(o.identity_files, [format!("{h}/.ssh/id_ops@db")]);
    assert_eq!(
        o.user_known_hosts_files,
        Some(vec![format!("{h}/kh_2022"), format!("{h}/kh2")])
    );
    assert_eq!(
        o.identity_agent,
        Some(IdentityAgent::Path(format!("{h}/agent-alice.sock")))
    );
    assert_eq!(
        o.local_forwards[0].listen,
        Listen::Unix("/tmp/l-db.sock".into())
    );
    assert_eq!(
        o.remote_forwards[0].connect,
        Some(Endpoint::Unix("/run/ops.sock".into()))
    );
    let mut bad = Options::default();
    bad.apply_arg("IdentityFile=%Z").unwrap();
    let err = expand_paths(&mut bad, &t).unwrap_err();
    assert!(err.contains("IdentityFile") && err.contains("%Z"), "{err}");
}

#[test]
fn unknown_and_unsupported_keywords_warn() {
    let home = home_with(
        "Bogus 1\n\
         ForwardX11 yes\n\
         forwardx11 no\n\
         Host other\n  AlsoBogus x\n  ControlMaster auto\n\
         Host *\n  IgnoreUnknown usekeychain2,fancy*\n  UseKeychain2 yes\n  FancyThing 1\n  Bogus2 x\n",
    );
    let (_, w) = home.resolve_ctx(&home.ctx("x")).unwrap();
    let w = messages(&w);
    let wanted = [
        "config:1: unknown keyword 'Bogus'",
        "config:2: ForwardX11 is not supported",
        "config:5: unknown keyword 'AlsoBogus'",
        "config:11: unknown keyword 'Bogus2'",
    ];
    assert_eq!(w.len(), wanted.len(), "{w:?}");
    for (got, want) in w.iter().zip(wanted) {
        assert!(got.contains(want), "{got} vs {want}");
    }
}

#[test]
fn bad_values_are_errors_naming_file_line_keyword_and_value() {
    let home = home_with("# c\nHost x\n  Port 70000\n");
    let err = home.resolve_ctx(&home.ctx("x")).unwrap_err().to_string();
    assert!(err.contains("config:3: Port: bad value '70000'"), "{err}");
    // In a block that does not apply: a warning only.
    let (o, w) = home.resolve_ctx(&home.ctx("y")).unwrap();
    assert_eq!(o.port, None);
    assert!(
        messages(&w)[0].contains("config:3: Port: bad value '70000'"),
        "{w:?}"
    );
    let home = home_with("User\n");
    let err = home.resolve_ctx(&home.ctx("x")).unwrap_err().to_string();
    assert!(
        err.contains("config:1: no argument after keyword \"User\""),
        "{err}"
    );
    let home = Home::new();
    fs::write(home.path().join(".ssh/config"), b"Port 1\nUser \xff\n").unwrap();
    let err = home.resolve_ctx(&home.ctx("x")).unwrap_err().to_string();
    assert!(err.contains("config:2: line is not valid UTF-8"), "{err}");
    // Invalid UTF-8 in a comment is harmless.
    let home = Home::new();
    fs::write(home.path().join(".ssh/config"), b"# caf\xe9\nPort 4\n").unwrap();
    assert_eq!(home.resolve("x").port, Some(4));
}

const REALISTIC: &str = "\
# ~/.ssh/config
Host bastion
    HostName 203.0.113.10
    User ops

Host internal-db
    HostName 10.0.0.5
    ProxyJump bastion
    LocalForward 8080 localhost:8080

Host *
    ServerAliveInterval 30
    IdentityFile ~/.ssh/id_work
";

#[test]
fn realistic_user_config() {
    let home = home_with(REALISTIC);
    let o = home.resolve("internal-db");
    assert_eq!(o.host_name.as_deref(), Some("10.0.0.5"));
    assert_eq!(o.proxy_jump.as_deref(), Some("bastion"));
    assert_eq!(o.local_forwards.len(), 1);
    assert_eq!(o.local_forwards[0].spec, "8080:localhost:8080");
    assert_eq!(o.user, None);
    assert_eq!(o.server_alive_interval, Some(Duration::from_secs(30)));
    let b = home.resolve("bastion");
    assert_eq!(b.host_name.as_deref(), Some("203.0.113.10"));
    assert_eq!(b.user.as_deref(), Some("ops"));
    assert!(b.proxy_jump.is_none() && b.local_forwards.is_empty());
}

#[test]
fn dump_like_ssh_g() {
    let home = home_with(REALISTIC);
    let ctx = home.ctx("internal-db");
    let o = home.resolve("internal-db");
    let out = dump(&o, &ctx, &Defaults::default());
    let lines: Vec<&str> = out.lines().collect();
    for wanted in [
        "host internal-db",
        "user alice",
        "hostname 10.0.0.5",
        "port 22",
        "batchmode no",
        "stricthostkeychecking ask",
        "serveraliveinterval 30",
        "serveralivecountmax 3",
        "connecttimeout none",
        "localforward 8080 [localhost]:8080",
        "identityfile ~/.ssh/id_work",
        "userknownhostsfile ~/.ssh/known_hosts ~/.ssh/known_hosts2",
        "proxyjump bastion",
        "loglevel INFO",
    ] {
        assert!(lines.contains(&wanted), "{wanted} missing from\n{out}");
    }
    assert!(!out.contains("proxycommand"));
    assert!(lines.iter().all(|l| {
        l.split_once(' ')
            .is_some_and(|(k, _)| k == k.to_lowercase())
    }));
    // Defaults fill in where nothing is set.
    let bare = home.ctx("plain");
    let out = dump(&Options::default(), &bare, &Defaults::default());
    for wanted in [
        "hostname plain",
        "identityfile ~/.ssh/id_ed25519",
        "identityfile ~/.ssh/id_ecdsa",
        "identityfile ~/.ssh/id_rsa",
        "serveraliveinterval 15",
    ] {
        assert!(
            out.lines().any(|l| l == wanted),
            "{wanted} missing from\n{out}"
        );
    }
    let mut o = Options::default();
    for arg in [
        "StrictHostKeyChecking=yes",
        "ConnectTimeout=5",
        "ProxyCommand=nc %h %p",
        "DynamicForward=127.0.0.1:1080",
        "RemoteForward=2222",
    ] {
        o.apply_arg(arg).unwrap();
    }
    let out = dump(&o, &bare, &Defaults::default());
    for wanted in [
        "stricthostkeychecking true",
        "connecttimeout 5",
        "proxycommand nc %h %p",
        "dynamicforward [127.0.0.1]:1080",
        "remoteforward 2222",
    ] {
        assert!(
            out.lines().any(|l| l == wanted),
            "{wanted} missing from\n{out}"
        );
    }
}

/// Random bytes, and random mixes of config syntax: errors are fine, panics are not.
#[test]
fn never_panics_on_garbage() {
    let home = Home::new();
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let pieces: [&[u8]; 16] = [
        b"Host ",
        b"Match ",
        b"Include ",
        b"!",
        b"*",
        b"\"",
        b"'",
        b"\\",
        b"=",
        b"#",
        b"\n",
        b"%",
        b"all ",
        b"final ",
        b"Port 1",
        b"\xff",
    ];
    for round in 0..400 {
        let mut data = Vec::new();
        for _ in 0..(next() % 200) {
            if round % 2 == 0 {
                data.push(next() as u8);
            } else {
                data.extend_from_slice(pieces[(next() % 16) as usize]);
            }
        }
        fs::write(home.path().join(".ssh/config"), &data).unwrap();
        let _ = home.resolve_ctx(&home.ctx("x"));
    }
}

#[test]
fn big_files_parse_in_linear_time() {
    let mut text = String::new();
    for i in 0..50_000 {
        text.push_str(&format!(
            "Host h{i} alias{i}\n  HostName 10.0.{}.{}\n  Port {}\n",
            i / 256 % 256,
            i % 256,
            i % 60000 + 1
        ));
    }
    let home = home_with(&text);
    let start = std::time::Instant::now();
    assert_eq!(home.resolve("alias49999").port, Some(50000));
    assert!(
        start.elapsed() < Duration::from_secs(20),
        "{:?}",
        start.elapsed()
    );
}
