//! ~/.ssh/config driving real connections: a user's usual config with a ProxyJump and a
//! LocalForward block just works (`warren internal-db`), `-o` beats the file, and `-G`
//! prints what was resolved.

mod common;

use common::*;
use std::process::Command;

fn warren_plain(user: &WarrenUser) -> Command {
    let mut cmd = Command::new(warren_bin());
    user.home.apply(&mut cmd);
    cmd.env_remove("RUST_LOG").args([
        "-v",
        "-o",
        "BatchMode=yes",
        "-o",
        "GlobalKnownHostsFile=/dev/null",
    ]);
    cmd
}

fn write_config(user: &WarrenUser, bastion: &Sshd, db: &Sshd, echo_port: u16) {
    user.home.write_ssh_config(&format!(
        "# a user's usual config\n\
         Host bastion\n    HostName 127.0.0.1\n    Port {}\n    User root\n\n\
         Host internal-db\n    HostName 127.0.0.1\n    Port {}\n    User root\n    ProxyJump bastion\n    \
         LocalForward 127.0.0.1:0 127.0.0.1:{echo_port}\n    ServerAliveInterval 5\n\n\
         Host *\n    IdentityFile ~/.ssh/id_ed25519\n    StrictHostKeyChecking yes\n",
        bastion.port(),
        db.port()
    ));
}

#[test]
fn proxy_jump_and_local_forward_from_the_config_just_work() {
    let (bastion, db) = (Sshd::start(), Sshd::start());
    let user = warren_user_for(&[&bastion, &db]);
    let echo = EchoServer::start();
    write_config(&user, &bastion, &db, echo.port());
    let mut cmd = warren_plain(&user);
    cmd.arg("internal-db");
    let warren = Proc::spawn(cmd);
    warren
        .wait_for_stderr(|l| l.contains("ready: connected to"), READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    let addr = forward_addrs(&warren, "-L")
        .into_iter()
        .next()
        .expect("the config's LocalForward is up");
    let conn = connect_with_retry(addr, READY_TIMEOUT).unwrap();
    assert_eq!(
        exchange(conn, b"from config", IO_TIMEOUT).unwrap(),
        b"from config"
    );
    assert_eq!(
        bastion.logs().matches("Accepted publickey").count(),
        1,
        "went through the bastion"
    );
    assert_eq!(db.logs().matches("Accepted publickey").count(), 1);
}

#[test]
fn command_line_options_beat_the_config_file() {
    let (bastion, db) = (Sshd::start(), Sshd::start());
    let user = warren_user_for(&[&bastion, &db]);
    write_config(&user, &bastion, &db, 9);
    // The file says ProxyJump bastion; -o ProxyJump=none wins, so this connects directly.
    let mut cmd = warren_plain(&user);
    cmd.args(["-o", "ProxyJump=none", "internal-db"]);
    let warren = Proc::spawn(cmd);
    warren
        .wait_for_stderr(|l| l.contains("ready: connected to"), READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(bastion.logs().matches("Accepted publickey").count(), 0);
    assert_eq!(db.logs().matches("Accepted publickey").count(), 1);
}

#[test]
fn dash_g_prints_the_resolved_settings() {
    let (bastion, db) = (Sshd::start(), Sshd::start());
    let user = warren_user_for(&[&bastion, &db]);
    write_config(&user, &bastion, &db, 4242);
    let mut cmd = warren_plain(&user);
    let out = cmd.args(["-G", "internal-db"]).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for line in [
        "hostname 127.0.0.1".to_string(),
        format!("port {}", db.port()),
        "user root".to_string(),
        "proxyjump bastion".to_string(),
        "serveraliveinterval 5".to_string(),
        "stricthostkeychecking true".to_string(),
        "exitonforwardfailure yes".to_string(),
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "missing {line:?} in:\n{text}"
        );
    }
    assert!(text.contains("localforward"), "{text}");
}

#[test]
fn a_broken_config_is_an_error_naming_file_and_line() {
    let user = warren_user_for(&[]);
    user.home.write_ssh_config("Host x\n    Port notaport\n");
    let mut cmd = warren_plain(&user);
    let out = cmd.args(["-G", "x"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("config:2") && err.contains("notaport"),
        "{err}"
    );
}

/// `Ciphers` reaches the key exchange: with a server that speaks only aes128-ctr, a list
/// without it cannot connect, one with it can, and a name warren does not implement is a
/// usage error before anything is dialed.
#[test]
fn ciphers_option_decides_the_negotiation() {
    let sshd = Sshd::start_with(SshdOptions {
        extra_config: vec!["Ciphers aes128-ctr".into()],
        ..Default::default()
    });
    let user = warren_user(&sshd);
    let run = |spec: &str| {
        let mut cmd = warren_client(&user.home, &sshd);
        cmd.arg("-i")
            .arg(&user.key.private)
            .args([
                "-o",
                &format!("Ciphers={spec}"),
                "root@127.0.0.1",
                "echo through",
            ])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let out = run("-aes128-ctr");
    assert_eq!(
        out.status.code(),
        Some(255),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run("aes128-ctr");
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        sshd.logs()
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through\n");
    let out = run("aes128-cbc");
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("aes128-cbc"));
}

/// `KexAlgorithms`, `MACs` and `HostKeyAlgorithms` reach the negotiation too: against an
/// sshd restricted to a few, a list sharing one of them connects, a list that leaves
/// nothing in common cannot (so the list is what was offered), and a name
/// warren does not implement is a usage error (exit 2) before anything is dialed.
#[test]
fn kex_mac_and_host_key_options_decide_the_negotiation() {
    let sshd = Sshd::start_with(SshdOptions {
        extra_config: vec![
            "Ciphers aes128-ctr".into(),
            "KexAlgorithms curve25519-sha256".into(),
            "MACs hmac-sha2-512-etm@openssh.com,hmac-sha2-256".into(),
        ],
        ..Default::default()
    });
    let user = warren_user(&sshd);
    let run = |opts: &[&str]| {
        let mut cmd = warren_client(&user.home, &sshd);
        cmd.arg("-i").arg(&user.key.private);
        for o in opts {
            cmd.args(["-o", o]);
        }
        cmd.args(["root@127.0.0.1", "echo through"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let text = |o: &std::process::Output| String::from_utf8_lossy(&o.stderr).into_owned();
    let out = run(&["MACs=hmac-sha2-256", "KexAlgorithms=curve25519-sha256"]);
    assert!(out.status.success(), "{}\n{}", text(&out), sshd.logs());
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through\n");

    for nothing_in_common in [
        "MACs=hmac-sha2-256-etm@openssh.com",
        "KexAlgorithms=mlkem768x25519-sha256",
        // The fixture's sshd has only an Ed25519 host key.
        "HostKeyAlgorithms=ecdsa-sha2-nistp256",
    ] {
        let out = run(&[nothing_in_common]);
        assert_eq!(
            out.status.code(),
            Some(255),
            "{nothing_in_common}: {}",
            text(&out)
        );
    }
    let out = run(&["HostKeyAlgorithms=ecdsa-sha2-nistp256,ssh-ed25519"]);
    assert!(out.status.success(), "{}", text(&out));

    for (option, bad) in [
        (
            "KexAlgorithms=diffie-hellman-group1-sha1",
            "diffie-hellman-group1-sha1",
        ),
        ("MACs=hmac-md5", "hmac-md5"),
        ("HostKeyAlgorithms=ssh-dss", "ssh-dss"),
    ] {
        let out = run(&[option]);
        assert_eq!(out.status.code(), Some(2), "{option}: {}", text(&out));
        assert!(text(&out).contains(bad), "{option}: {}", text(&out));
    }
}
