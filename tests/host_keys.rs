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

/// An sshd whose ed25519 host key carries a certificate from a fresh CA (`ssh-keygen -s
/// ca -h -n principals -V validity`), configured with HostCertificate; its fixture key is
/// ECDSA, so a plain ssh-ed25519 answer is the certified key. Returns the server, the
/// CA's "type base64" and the certified key's.
struct CertServer {
    sshd: Sshd,
    ca: String,
    host_key: String,
    _dir: tempfile::TempDir,
}

fn cert_server(principals: &str, validity: &str) -> CertServer {
    let dir = tempfile::tempdir().unwrap();
    let ca = UserKey::generate(dir.path(), "ed25519", None);
    let host = dir.path().join("host_ed25519");
    run_ok({
        let mut c = Command::new("ssh-keygen");
        c.args(["-q", "-N", "", "-t", "ed25519", "-C", "", "-f"])
            .arg(&host);
        c
    });
    run_ok({
        let mut c = Command::new("ssh-keygen");
        c.arg("-q")
            .arg("-s")
            .arg(&ca.private)
            .args(["-h", "-I", "test-host", "-n", principals, "-V", validity])
            .arg(host.with_extension("pub"));
        c
    });
    let cert = dir.path().join("host_ed25519-cert.pub");
    assert!(cert.exists());
    let sshd = Sshd::start_with(SshdOptions {
        host_key_types: vec!["ecdsa"],
        extra_config: vec![
            format!("HostKey {}", host.display()),
            format!("HostCertificate {}", cert.display()),
        ],
    });
    let two = |line: &str| {
        line.split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ")
    };
    CertServer {
        sshd,
        ca: two(&ca.public_line),
        host_key: two(&fs::read_to_string(host.with_extension("pub")).unwrap()),
        _dir: dir,
    }
}

/// Connects with `known_hosts` as the only trust, strict checking on.
fn connect_with_known_hosts(s: &CertServer, known_hosts: &str) -> (Proc, Option<i32>, WarrenUser) {
    let user = warren_user(&s.sshd);
    fs::write(user.home.known_hosts(), known_hosts).unwrap();
    let cmd = warren_to(&s.sshd, &user, &["-o", "StrictHostKeyChecking=yes"]);
    let (warren, code) = run_until_ready_or_exit(cmd);
    (warren, code, user)
}

#[test]
fn host_certificate_from_a_known_ca_is_accepted_without_a_key_line() {
    let s = cert_server("127.0.0.1,localhost", "-5m:+1h");
    let known = format!("@cert-authority [127.0.0.1]:{} {}\n", s.sshd.port(), s.ca);
    let (warren, code, user) = connect_with_known_hosts(&s, &known);
    let err = warren.stderr_text();
    assert_eq!(code, None, "{err}\n{}", s.sshd.logs());
    assert!(err.contains("trusted through the CA"), "{err}");
    assert_eq!(
        fs::read_to_string(user.home.known_hosts()).unwrap(),
        known,
        "nothing is added to known_hosts"
    );
    drop(warren);

    // A wildcard CA line, as fleets write it, on a hashed-free pattern list.
    let known = format!("@cert-authority *.example.com,[127.0.0.*]:* {}\n", s.ca);
    let (warren, code, _user) = connect_with_known_hosts(&s, &known);
    assert_eq!(code, None, "{}", warren.stderr_text());
}

#[test]
fn revoked_ca_or_host_key_refuses_the_certificate() {
    let s = cert_server("127.0.0.1", "-5m:+1h");
    let ca_line = format!("@cert-authority [127.0.0.1]:{} {}\n", s.sshd.port(), s.ca);
    for revoked in [&s.ca, &s.host_key] {
        let known = format!("{ca_line}@revoked * {revoked}\n");
        let (warren, code, _user) = connect_with_known_hosts(&s, &known);
        let err = warren.stderr_text();
        assert_eq!(code, Some(4), "{err}");
        assert!(err.contains("@revoked"), "{err}");
        assert!(!s.sshd.logs().contains("Accepted publickey"), "no login");
    }
}

#[test]
fn certificate_for_another_host_or_expired_is_refused() {
    for (principals, validity, why) in [
        ("db.example.com", "-5m:+1h", "not for \"127.0.0.1\""),
        ("127.0.0.1", "-2h:-1h", "is not valid now"),
    ] {
        let s = cert_server(principals, validity);
        let known = format!("@cert-authority [127.0.0.1]:{} {}\n", s.sshd.port(), s.ca);
        let (warren, code, _user) = connect_with_known_hosts(&s, &known);
        let err = warren.stderr_text();
        assert_eq!(code, Some(4), "{err}");
        assert!(err.contains(why), "{why}: {err}");
        assert!(err.contains("Host key verification failed."), "{err}");
    }
}

#[test]
fn plain_key_line_still_works_for_a_server_with_a_certificate() {
    let s = cert_server("127.0.0.1", "-5m:+1h");
    // No CA known: warren does not ask for the certificate and checks the plain key.
    let known = format!("[127.0.0.1]:{} {}\n", s.sshd.port(), s.host_key);
    let (warren, code, _user) = connect_with_known_hosts(&s, &known);
    assert_eq!(code, None, "{}", warren.stderr_text());
    drop(warren);
    // An untrusted CA's line does not stand in the way of the plain line.
    let stranger = stranger_key("ed25519");
    let known = format!(
        "@cert-authority * {stranger}\n[127.0.0.1]:{} {}\n",
        s.sshd.port(),
        s.host_key
    );
    let (warren, code, _user) = connect_with_known_hosts(&s, &known);
    assert_eq!(code, None, "{}", warren.stderr_text());
}

/// A given HostKeyAlgorithms is used as is: naming the certificate algorithm gets the
/// certificate, naming only the plain one gets a plain key no line vouches for.
#[test]
fn host_key_algorithms_may_name_certificate_algorithms() {
    let s = cert_server("127.0.0.1", "-5m:+1h");
    let known = format!("@cert-authority * {}\n", s.ca);
    for (algs, trusted) in [
        ("ssh-ed25519-cert-v01@openssh.com", true),
        ("ssh-ed25519", false),
    ] {
        let user = warren_user(&s.sshd);
        fs::write(user.home.known_hosts(), &known).unwrap();
        let cmd = warren_to(
            &s.sshd,
            &user,
            &[
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                &format!("HostKeyAlgorithms={algs}"),
            ],
        );
        let (warren, code) = run_until_ready_or_exit(cmd);
        let expected = if trusted { None } else { Some(4) };
        assert_eq!(code, expected, "{algs}: {}", warren.stderr_text());
    }
}
