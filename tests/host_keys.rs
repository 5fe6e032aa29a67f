//! Host-key checking against a real sshd and real known_hosts files: a changed key is
//! refused loudly and nothing is forwarded, accept-new writes entries OpenSSH reads, and
//! a host known under another key type is never taken as new.

mod common;

use common::*;
use std::fs;
use std::process::Command;

/// A public key line of a fresh key of `kind` (not the server's).
fn stranger_key(kind: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let k = UserKey::generate(dir.path(), kind, None);
    let mut parts = k.public_line.split_whitespace();
    format!("{} {}", parts.next().unwrap(), parts.next().unwrap())
}

fn run_until_ready_or_exit(cmd: Command) -> (Proc, Option<i32>) {
    let warren = Proc::spawn(cmd);
    match warren.wait_for_stderr(|l| l.contains("ready: connected to"), READY_TIMEOUT) {
        Ok(_) => (warren, None),
        Err(_) => {
            let code = warren.expect_exit(READY_TIMEOUT).code();
            (warren, code)
        }
    }
}

fn warren_to(sshd: &Sshd, user: &WarrenUser, extra: &[&str]) -> Command {
    let mut cmd = warren_client(&user.home, sshd);
    cmd.arg("-i")
        .arg(&user.key.private)
        .args(extra)
        .arg("root@127.0.0.1");
    cmd
}

#[test]
fn changed_host_key_is_refused_loudly_and_nothing_is_forwarded() {
    let sshd = Sshd::start();
    let user = warren_user(&sshd);
    let wrong = format!("[127.0.0.1]:{} {}\n", sshd.port(), stranger_key("ed25519"));
    fs::write(user.home.known_hosts(), &wrong).unwrap();
    let echo = EchoServer::start();
    let spec = format!("127.0.0.1:0:127.0.0.1:{}", echo.port());
    // Even accept-new must not overwrite a changed key.
    let cmd = warren_to(
        &sshd,
        &user,
        &["-L", &spec, "-o", "StrictHostKeyChecking=accept-new"],
    );
    let (warren, code) = run_until_ready_or_exit(cmd);
    let err = warren.stderr_text();
    assert_eq!(code, Some(4), "{err}");
    assert!(
        err.contains("REMOTE HOST IDENTIFICATION HAS CHANGED"),
        "{err}"
    );
    assert!(err.contains("Host key verification failed."), "{err}");
    assert!(
        err.contains(&format!("{}:1", user.home.known_hosts().display())),
        "{err}"
    );
    let server_fp = sshd.host_keys()[0].public_line.clone();
    let presented = fingerprint_of(&server_fp);
    assert!(
        err.contains(&presented),
        "the presented fingerprint {presented} is named: {err}"
    );
    assert!(
        !sshd.logs().contains("Accepted publickey"),
        "no authentication may happen"
    );
    assert_eq!(echo.connections(), 0);
    assert_eq!(
        fs::read_to_string(user.home.known_hosts()).unwrap(),
        wrong,
        "known_hosts untouched"
    );
}

fn fingerprint_of(public_line: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let f = dir.path().join("k.pub");
    fs::write(&f, public_line).unwrap();
    let out = run_ok({
        let mut c = Command::new("ssh-keygen");
        c.args(["-l", "-E", "sha256", "-f"]).arg(&f);
        c
    });
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .unwrap()
        .to_string()
}

#[test]
fn accept_new_records_a_line_that_openssh_finds_and_trusts() {
    for hashed in [false, true] {
        let sshd = Sshd::start();
        let user = warren_user(&sshd);
        fs::remove_file(user.home.known_hosts()).unwrap();
        let hash_opt = format!("HashKnownHosts={}", if hashed { "yes" } else { "no" });
        let cmd = warren_to(
            &sshd,
            &user,
            &["-o", "StrictHostKeyChecking=accept-new", "-o", &hash_opt],
        );
        let (warren, code) = run_until_ready_or_exit(cmd);
        assert_eq!(code, None, "{}", warren.stderr_text());
        assert!(warren.stderr_text().contains("Permanently added"));
        drop(warren);

        let text = fs::read_to_string(user.home.known_hosts()).unwrap();
        assert_eq!(text.starts_with("|1|"), hashed, "{text}");
        let found = run_ok({
            let mut c = Command::new("ssh-keygen");
            c.arg("-F")
                .arg(format!("[127.0.0.1]:{}", sshd.port()))
                .arg("-f")
                .arg(user.home.known_hosts());
            c
        });
        assert!(String::from_utf8_lossy(&found.stdout).contains("found: line 1"));

        // OpenSSH itself trusts the entry under strict checking.
        let mut ssh = openssh_client(&user.home, &sshd);
        ssh.arg("-i")
            .arg(&user.key.private)
            .args(["root@127.0.0.1", "true"]);
        let out = ssh.output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );

        // And warren does too, now with strict checking.
        let cmd = warren_to(&sshd, &user, &["-o", "StrictHostKeyChecking=yes"]);
        let (warren, code) = run_until_ready_or_exit(cmd);
        assert_eq!(code, None, "{}", warren.stderr_text());
    }
}

#[test]
fn unknown_host_is_refused_under_strict_checking_and_in_batch_mode() {
    let sshd = Sshd::start();
    let user = warren_user(&sshd);
    fs::remove_file(user.home.known_hosts()).unwrap();
    for extra in [&["-o", "StrictHostKeyChecking=yes"][..], &[][..]] {
        let (warren, code) = run_until_ready_or_exit(warren_to(&sshd, &user, extra));
        let err = warren.stderr_text();
        assert_eq!(code, Some(4), "{extra:?}: {err}");
        assert!(err.contains("Host key verification failed."), "{err}");
        assert!(!user.home.known_hosts().exists(), "nothing recorded");
    }
}

#[test]
fn host_known_only_under_another_key_type_is_not_accepted_as_new() {
    let sshd = Sshd::start(); // ed25519 host key only
    let user = warren_user(&sshd);
    let other = format!("[127.0.0.1]:{} {}\n", sshd.port(), stranger_key("ecdsa"));
    fs::write(user.home.known_hosts(), &other).unwrap();
    let cmd = warren_to(&sshd, &user, &["-o", "StrictHostKeyChecking=accept-new"]);
    let (warren, code) = run_until_ready_or_exit(cmd);
    let err = warren.stderr_text();
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("known only under another key type"), "{err}");
    assert_eq!(fs::read_to_string(user.home.known_hosts()).unwrap(), other);
}

#[test]
fn known_key_type_is_preferred_in_negotiation() {
    let sshd = Sshd::start_with(SshdOptions {
        host_key_types: vec!["ed25519", "rsa"],
        ..Default::default()
    });
    let user = warren_user(&sshd);
    // Only the RSA key is known: warren must ask for RSA rather than meet ed25519 as new.
    let rsa_line = sshd
        .known_hosts_lines()
        .into_iter()
        .find(|l| l.contains("ssh-rsa"))
        .expect("rsa host key");
    fs::write(user.home.known_hosts(), format!("{rsa_line}\n")).unwrap();
    let cmd = warren_to(&sshd, &user, &["-o", "StrictHostKeyChecking=yes"]);
    let (warren, code) = run_until_ready_or_exit(cmd);
    assert_eq!(code, None, "{}", warren.stderr_text());
}

#[test]
fn revoked_key_is_refused() {
    let sshd = Sshd::start();
    let user = warren_user(&sshd);
    let line = sshd.known_hosts_line();
    let key = line.split_once(' ').unwrap().1;
    let text = format!("@revoked * {key}\n{line}\n");
    fs::write(user.home.known_hosts(), text).unwrap();
    let (warren, code) = run_until_ready_or_exit(warren_to(&sshd, &user, &[]));
    let err = warren.stderr_text();
    assert_eq!(code, Some(4), "{err}");
    assert!(err.contains("revoked"), "{err}");
}

#[test]
fn hashed_and_wildcard_entries_match() {
    let sshd = Sshd::start();
    let user = warren_user(&sshd);
    // Hashed by OpenSSH's own ssh-keygen -H.
    run_ok({
        let mut c = Command::new("ssh-keygen");
        c.arg("-H").arg("-f").arg(user.home.known_hosts());
        c
    });
    assert!(
        fs::read_to_string(user.home.known_hosts())
            .unwrap()
            .starts_with("|1|")
    );
    let (warren, code) = run_until_ready_or_exit(warren_to(
        &sshd,
        &user,
        &["-o", "StrictHostKeyChecking=yes"],
    ));
    assert_eq!(code, None, "{}", warren.stderr_text());
    drop(warren);

    // A pattern with negation, as people write for whole subnets.
    let line = sshd.known_hosts_line();
    let key = line.split_once(' ').unwrap().1;
    fs::write(
        user.home.known_hosts(),
        format!("!*.example.com,[127.0.0.?]:{} {key}\n", sshd.port()),
    )
    .unwrap();
    let (warren, code) = run_until_ready_or_exit(warren_to(
        &sshd,
        &user,
        &["-o", "StrictHostKeyChecking=yes"],
    ));
    assert_eq!(code, None, "{}", warren.stderr_text());
}
