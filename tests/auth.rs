//! Authentication against a real sshd: agent keys, key files of every type (RSA with
//! SHA-2 signatures), default identity files, encrypted keys through SSH_ASKPASS, and a
//! failure that lists what was tried.

mod common;

use common::*;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::Command;

/// Runs warren with `args` until it is ready (`Ok`) or exits (`Err` with its stderr).
fn ready_or_exit(cmd: Command) -> Result<Proc, (Option<i32>, String)> {
    let warren = Proc::spawn(cmd);
    match warren.wait_for_stderr(|l| l.contains("ready: connected to"), READY_TIMEOUT) {
        Ok(_) => Ok(warren),
        Err(_) => {
            let status = warren.expect_exit(READY_TIMEOUT);
            Err((status.code(), warren.stderr_text()))
        }
    }
}

fn accepted_count(sshd: &Sshd, key: &UserKey) -> usize {
    accepted_fp(sshd, &key.fingerprint())
}

/// Logins sshd logged with this key. Called once warren is ready, when sshd has written
/// the line, though the fixture's reader thread may not have taken it in yet: wait for one.
fn accepted_fp(sshd: &Sshd, fingerprint: &str) -> usize {
    let accepted = |l: &str| l.contains("Accepted publickey") && l.contains(fingerprint);
    let _ = sshd.wait_for_log(accepted, READY_TIMEOUT);
    sshd.logs()
        .lines()
        .filter(|l| l.contains("Accepted publickey") && l.contains(fingerprint))
        .count()
}

#[test]
fn every_key_type_from_a_file_and_rsa_uses_sha2() {
    // OpenSSH 9.2 refuses SHA-1 `ssh-rsa` signatures by default; pin it anyway so the
    // test means what it says whatever the sshd version.
    let sshd = Sshd::start_with(SshdOptions {
        extra_config: vec![
            "PubkeyAcceptedAlgorithms rsa-sha2-512,rsa-sha2-256,ssh-ed25519,ecdsa-sha2-nistp256"
                .into(),
        ],
        ..Default::default()
    });
    let home = ClientHome::new();
    sshd.write_known_hosts(home.known_hosts());
    for kind in ["ed25519", "ecdsa", "rsa"] {
        let key = UserKey::generate(home.ssh_dir(), kind, None);
        sshd.authorize(&key.public_line);
        let mut cmd = warren_client(&home, &sshd);
        cmd.arg("-i").arg(&key.private).arg("root@127.0.0.1");
        let warren = ready_or_exit(cmd)
            .unwrap_or_else(|(c, e)| panic!("{kind}: exit {c:?}\n{e}\n{}", sshd.logs()));
        assert_eq!(accepted_count(&sshd, &key), 1, "{kind}");
        drop(warren);
    }
}

/// About one P-256 key in 512 that ssh-keygen makes has a private scalar of 31 bytes or
/// fewer, which ssh-key alone refuses ("length invalid"); this is such a key, plain and
/// encrypted (aes256-ctr and aes256-gcm@openssh.com, passphrase "correct horse").
#[test]
fn an_ecdsa_key_whose_scalar_is_short_authenticates() {
    let data = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("crates/ssh/src/openssh_key/testdata");
    let sshd = Sshd::start();
    let home = ClientHome::new();
    sshd.write_known_hosts(home.known_hosts());
    let public = fs::read_to_string(data.join("p256_short_scalar.pub")).unwrap();
    sshd.authorize(public.trim());
    let fingerprint = public_file_fingerprint(&data.join("p256_short_scalar.pub"));
    let dir = tempfile::tempdir().unwrap();
    let script = askpass(dir.path(), "correct horse");
    let names = [
        "p256_short_scalar",
        "p256_short_scalar_aes256_ctr",
        "p256_short_scalar_aes256_gcm",
    ];
    for name in names {
        let start = sshd.proc().stderr_line_count();
        // Copied without its .pub, so the private key itself has to be read.
        let key = home.ssh_dir().join(name);
        fs::copy(data.join(name), &key).unwrap();
        fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
        let cmd = warren_with_askpass(&home, &sshd, &script, &[&key]);
        let warren = ready_or_exit(cmd)
            .unwrap_or_else(|(c, e)| panic!("{name}: exit {c:?}\n{e}\n{}", sshd.logs()));
        let accepted = |l: &str| l.contains("Accepted publickey") && l.contains(&fingerprint);
        sshd.proc()
            .wait_for_stderr_from(start, accepted, READY_TIMEOUT)
            .unwrap_or_else(|e| panic!("{name}: sshd logged no login with the key: {e}"));
        drop(warren);
    }
}

#[test]
fn default_identity_file_is_used_without_dash_i() {
    let sshd = Sshd::start();
    let home = ClientHome::new();
    sshd.write_known_hosts(home.known_hosts());
    let key = UserKey::generate(home.ssh_dir(), "ed25519", None);
    assert!(key.private.ends_with("id_ed25519"));
    sshd.authorize(&key.public_line);
    let mut cmd = warren_client(&home, &sshd);
    cmd.arg("root@127.0.0.1");
    let _warren = ready_or_exit(cmd).unwrap_or_else(|(c, e)| panic!("exit {c:?}\n{e}"));
    assert_eq!(accepted_count(&sshd, &key), 1);
}

#[test]
fn agent_key_authenticates_with_no_key_file() {
    let sshd = Sshd::start();
    let home = ClientHome::new();
    sshd.write_known_hosts(home.known_hosts());
    let agent = Agent::start();
    let keydir = tempfile::tempdir().unwrap();
    let key = UserKey::generate(keydir.path(), "ecdsa", Some("agent-only"));
    agent.add(&key);
    let fingerprint = key.fingerprint();
    fs::remove_file(&key.private).unwrap(); // only the agent has it now
    fs::remove_file(&key.public).unwrap();
    sshd.authorize(&key.public_line);

    let mut cmd = warren_client(&home, &sshd);
    agent.apply(&mut cmd);
    cmd.arg("root@127.0.0.1");
    let warren = ready_or_exit(cmd).unwrap_or_else(|(c, e)| panic!("exit {c:?}\n{e}"));
    assert!(
        warren.stderr_text().contains("offering agent key"),
        "{}",
        warren.stderr_text()
    );
    assert_eq!(accepted_fp(&sshd, &fingerprint), 1);
}

/// An askpass program that records that it was asked and answers `pass`.
fn askpass(dir: &std::path::Path, pass: &str) -> std::path::PathBuf {
    let script = dir.join("askpass.sh");
    let log = dir.join("askpass.log");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$1\" >> '{}'\necho '{pass}'\n",
            log.display()
        ),
    )
    .unwrap();
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    script
}

/// warren with `-i` for each key and passphrases from `askpass` (no BatchMode: prompting
/// is what these tests check), logging in as root to `sshd`.
fn warren_with_askpass(
    home: &ClientHome,
    sshd: &Sshd,
    askpass: &std::path::Path,
    keys: &[&std::path::Path],
) -> Command {
    let mut cmd = Command::new(warren_bin());
    home.apply(&mut cmd);
    cmd.env("SSH_ASKPASS", askpass)
        .env("SSH_ASKPASS_REQUIRE", "force")
        .args(["-v", "-o", "GlobalKnownHostsFile=/dev/null", "-p"])
        .arg(sshd.port().to_string());
    for key in keys {
        cmd.arg("-i").arg(key);
    }
    cmd.arg("root@127.0.0.1");
    cmd
}

#[test]
fn encrypted_key_passphrase_comes_from_ssh_askpass() {
    let sshd = Sshd::start();
    let home = ClientHome::new();
    sshd.write_known_hosts(home.known_hosts());
    let key = UserKey::generate(home.ssh_dir(), "ed25519", Some("correct horse"));
    sshd.authorize(&key.public_line);
    let dir = tempfile::tempdir().unwrap();
    let script = askpass(dir.path(), "correct horse");

    let cmd = warren_with_askpass(&home, &sshd, &script, &[&key.private]);
    let _warren = ready_or_exit(cmd).unwrap_or_else(|(c, e)| panic!("exit {c:?}\n{e}"));
    let asked = fs::read_to_string(dir.path().join("askpass.log")).unwrap();
    assert!(asked.contains("Enter passphrase for key"), "{asked}");
    assert!(
        asked.contains(&key.private.display().to_string()),
        "{asked}"
    );
    assert_eq!(accepted_count(&sshd, &key), 1);
}

#[test]
fn encrypted_key_is_not_decrypted_when_the_server_would_refuse_it() {
    let sshd = Sshd::start();
    let home = ClientHome::new();
    sshd.write_known_hosts(home.known_hosts());
    let refused = UserKey::generate(home.ssh_dir(), "ed25519", Some("never asked"));
    let good = UserKey::generate(home.ssh_dir(), "ecdsa", None);
    sshd.authorize(&good.public_line);
    let dir = tempfile::tempdir().unwrap();
    let script = askpass(dir.path(), "never asked");
    let cmd = warren_with_askpass(&home, &sshd, &script, &[&refused.private, &good.private]);
    let _warren = ready_or_exit(cmd).unwrap_or_else(|(c, e)| panic!("exit {c:?}\n{e}"));
    assert!(
        !dir.path().join("askpass.log").exists(),
        "asked for a passphrase the server did not need"
    );
}

#[test]
fn batch_mode_with_an_encrypted_key_fails_clearly_without_prompting() {
    let sshd = Sshd::start();
    let home = ClientHome::new();
    sshd.write_known_hosts(home.known_hosts());
    let key = UserKey::generate(home.ssh_dir(), "ed25519", Some("secret"));
    sshd.authorize(&key.public_line);
    fs::remove_file(&key.public).unwrap(); // force loading the private key
    let mut cmd = warren_client(&home, &sshd);
    cmd.env("SSH_ASKPASS", "/bin/false")
        .env("SSH_ASKPASS_REQUIRE", "force")
        .arg("-i")
        .arg(&key.private)
        .arg("root@127.0.0.1");
    let (code, err) = ready_or_exit(cmd).err().expect("must not connect");
    assert_eq!(code, Some(255), "{err}");
    assert!(err.contains("Permission denied"), "{err}");
    assert!(err.contains("encrypted"), "{err}");
}

#[test]
fn refused_authentication_exits_255_and_lists_what_was_tried() {
    let sshd = Sshd::start();
    let home = ClientHome::new();
    sshd.write_known_hosts(home.known_hosts());
    let stranger = UserKey::generate(home.ssh_dir(), "ed25519", None); // never authorized
    let mut cmd = warren_client(&home, &sshd);
    cmd.arg("-i")
        .arg(&stranger.private)
        .arg("-i")
        .arg("/nonexistent/key")
        .arg("root@127.0.0.1");
    let (code, err) = ready_or_exit(cmd).err().expect("must not connect");
    assert_eq!(code, Some(255), "{err}");
    assert!(err.contains("Permission denied (publickey)"), "{err}");
    assert!(
        err.contains(&format!("{} (rejected)", stranger.private.display())),
        "{err}"
    );
    assert!(err.contains("/nonexistent/key (not found)"), "{err}");
}

/// A certificate in the agent, signed by a CA that sshd trusts, logs in although no
/// authorized_keys line names the key: the agent's certificate is offered as a
/// certificate, as OpenSSH does.
#[test]
fn agent_certificate_authenticates_through_a_trusted_ca() {
    let cadir = tempfile::tempdir().unwrap();
    let ca = UserKey::generate(cadir.path(), "ed25519", None);
    let sshd = Sshd::start_with(SshdOptions {
        extra_config: vec![format!("TrustedUserCAKeys {}", ca.public.display())],
        ..Default::default()
    });
    let home = ClientHome::new();
    sshd.write_known_hosts(home.known_hosts());
    let agent = Agent::start();
    let keydir = tempfile::tempdir().unwrap();
    let key = UserKey::generate(keydir.path(), "ecdsa", None);
    sign_for_root(&ca, &key, "warren-cert-test");
    agent.add(&key); // ssh-add picks up <key>-cert.pub beside the key
    assert!(
        agent
            .list()
            .iter()
            .any(|l| l.contains("-cert-v01@openssh.com")),
        "the agent holds no certificate: {:?}",
        agent.list()
    );
    fs::remove_file(&key.private).unwrap();
    fs::remove_file(&key.public).unwrap();

    let mut cmd = warren_client(&home, &sshd);
    agent.apply(&mut cmd);
    cmd.arg("root@127.0.0.1");
    let warren =
        ready_or_exit(cmd).unwrap_or_else(|(c, e)| panic!("exit {c:?}\n{e}\n{}", sshd.logs()));
    assert_certificate_login(&warren, &sshd, "offering agent certificate", "ECDSA-CERT");
}

/// "SHA256:..." of a public key line, as sshd logs it.
fn line_fingerprint(dir: &std::path::Path, line: &str) -> String {
    let path = dir.join("fingerprint-me.pub");
    fs::write(&path, format!("{line}\n")).unwrap();
    public_file_fingerprint(&path)
}

/// `ssh-keygen -m PEM` RSA key at DIR/NAME with `passphrase` ("" for none): its path and
/// its public line (the .pub file is removed, as with the keys AWS EC2 hands out).
fn pem_rsa_key(
    dir: &std::path::Path,
    name: &str,
    passphrase: &str,
) -> (std::path::PathBuf, String) {
    let key = dir.join(name);
    let mut keygen = Command::new("ssh-keygen");
    keygen
        .args([
            "-q", "-t", "rsa", "-b", "2048", "-m", "PEM", "-N", passphrase, "-f",
        ])
        .arg(&key);
    run_ok(keygen);
    let public = dir.join(format!("{name}.pub"));
    let line = fs::read_to_string(&public).unwrap().trim().to_string();
    fs::remove_file(&public).unwrap();
    (key, line)
}

/// Keys not in OpenSSH's own format log in: a `-m PEM` (PKCS#1) RSA key with no `.pub`
/// beside it, as AWS EC2 hands them out, and an OpenSSL PKCS#8 Ed25519 key whose `.pub` is
/// offered first. The authorized_keys lines come from ssh-keygen and OpenSSL, not from warren.
#[test]
fn pem_rsa_and_pkcs8_ed25519_key_files_log_in() {
    use base64::Engine as _;
    let sshd = Sshd::start();
    let home = ClientHome::new();
    sshd.write_known_hosts(home.known_hosts());
    let dir = tempfile::tempdir().unwrap();

    let (rsa, rsa_line) = pem_rsa_key(dir.path(), "ec2.pem", "");
    assert!(
        fs::read_to_string(&rsa)
            .unwrap()
            .starts_with("-----BEGIN RSA PRIVATE KEY-----")
    );

    let ed = dir.path().join("ed25519.p8");
    let mut genpkey = Command::new("openssl");
    genpkey
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&ed);
    run_ok(genpkey);
    fs::set_permissions(&ed, fs::Permissions::from_mode(0o600)).unwrap();
    assert!(
        fs::read_to_string(&ed)
            .unwrap()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
    let mut pubout = Command::new("openssl");
    pubout
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(&ed);
    let spki = run_ok(pubout).stdout;
    let mut blob = Vec::new();
    for part in [&b"ssh-ed25519"[..], &spki[spki.len() - 32..]] {
        blob.extend_from_slice(&(part.len() as u32).to_be_bytes());
        blob.extend_from_slice(part);
    }
    let ed_line = format!(
        "ssh-ed25519 {} openssl",
        base64::engine::general_purpose::STANDARD.encode(&blob)
    );
    fs::write(dir.path().join("ed25519.p8.pub"), format!("{ed_line}\n")).unwrap();

    for (key, line) in [(&rsa, &rsa_line), (&ed, &ed_line)] {
        sshd.authorize(line);
        let fingerprint = line_fingerprint(dir.path(), line);
        let mut cmd = warren_client(&home, &sshd);
        cmd.arg("-i").arg(key).arg("root@127.0.0.1");
        let warren = ready_or_exit(cmd)
            .unwrap_or_else(|(c, e)| panic!("{}: exit {c:?}\n{e}\n{}", key.display(), sshd.logs()));
        assert_eq!(accepted_fp(&sshd, &fingerprint), 1, "{}", key.display());
        drop(warren);
    }
}

/// The key OpenSSH before 7.8 made by default: `ssh-keygen -m PEM -N ...`, legacy OpenSSL
/// encryption (AES-128-CBC, MD5-derived key); the passphrase comes from SSH_ASKPASS.
#[test]
fn legacy_encrypted_pem_key_logs_in_with_its_passphrase() {
    let sshd = Sshd::start();
    let home = ClientHome::new();
    sshd.write_known_hosts(home.known_hosts());
    let dir = tempfile::tempdir().unwrap();
    let (key, line) = pem_rsa_key(dir.path(), "id_rsa", "old secret");
    let text = fs::read_to_string(&key).unwrap();
    assert!(text.contains("Proc-Type: 4,ENCRYPTED"), "{text}");
    sshd.authorize(&line);
    let fingerprint = line_fingerprint(dir.path(), &line);
    let script = askpass(dir.path(), "old secret");

    let cmd = warren_with_askpass(&home, &sshd, &script, &[&key]);
    let _warren = ready_or_exit(cmd).unwrap_or_else(|(c, e)| panic!("exit {c:?}\n{e}"));
    let asked = fs::read_to_string(dir.path().join("askpass.log")).unwrap();
    assert!(asked.contains("Enter passphrase for key"), "{asked}");
    assert_eq!(accepted_fp(&sshd, &fingerprint), 1);
}

/// `<key>-cert.pub` beside an identity file (ssh-keygen -s, step-ca, Vault) logs in through
/// a CA sshd trusts, with no authorized_keys line for the key and no agent: the certificate
/// is offered before the plain key, and an encrypted key's passphrase is asked only after
/// the server took the certificate.
#[test]
fn certificate_file_beside_the_identity_file_authenticates() {
    let cadir = tempfile::tempdir().unwrap();
    let ca = UserKey::generate(cadir.path(), "ed25519", None);
    let sshd = Sshd::start_with(SshdOptions {
        extra_config: vec![format!("TrustedUserCAKeys {}", ca.public.display())],
        ..Default::default()
    });
    let home = ClientHome::new();
    sshd.write_known_hosts(home.known_hosts());
    let keydir = tempfile::tempdir().unwrap();
    let key = UserKey::generate(keydir.path(), "ed25519", Some("cert pass"));
    sign_for_root(&ca, &key, "warren-cert-file");
    let script = askpass(keydir.path(), "cert pass");

    let mut cmd = warren_with_askpass(&home, &sshd, &script, &[&key.private]);
    cmd.env_remove("SSH_AUTH_SOCK");
    let warren =
        ready_or_exit(cmd).unwrap_or_else(|(c, e)| panic!("exit {c:?}\n{e}\n{}", sshd.logs()));
    assert_certificate_login(&warren, &sshd, "offering certificate", "ED25519-CERT");
}

/// `ssh-keygen -s`: certifies `key` for principal root, valid from 5 minutes ago for an hour;
/// the certificate lands in `<key>-cert.pub`.
fn sign_for_root(ca: &UserKey, key: &UserKey, id: &str) {
    sign_for_root_valid(ca, key, id, "-5m:+1h");
}

/// [`sign_for_root`] with an `ssh-keygen -V` validity interval.
fn sign_for_root_valid(ca: &UserKey, key: &UserKey, id: &str, validity: &str) {
    let mut sign = Command::new("ssh-keygen");
    sign.arg("-q")
        .arg("-s")
        .arg(&ca.private)
        .args(["-I", id, "-n", "root", "-V", validity])
        .arg(&key.public);
    run_ok(sign);
}

/// `<key>-cert.pub`, moved to `to` so that only CertificateFile can find it.
fn move_certificate(key: &UserKey, to: &std::path::Path) {
    let beside = std::path::PathBuf::from(format!("{}-cert.pub", key.private.display()));
    fs::create_dir_all(to.parent().unwrap()).unwrap();
    fs::rename(beside, to).unwrap();
}

/// An sshd that trusts a fresh user CA (TrustedUserCAKeys) and has no authorized_keys
/// line for anyone; returns it, the CA and the CA's directory.
fn ca_sshd() -> (Sshd, UserKey, tempfile::TempDir) {
    let cadir = tempfile::tempdir().unwrap();
    let ca = UserKey::generate(cadir.path(), "ed25519", None);
    let sshd = Sshd::start_with(SshdOptions {
        extra_config: vec![format!("TrustedUserCAKeys {}", ca.public.display())],
        ..Default::default()
    });
    (sshd, ca, cadir)
}

/// CertificateFile from ssh_config, with `~` and `%r` expanded, is offered with the
/// identity file whose key it certifies.
#[test]
fn certificate_file_with_its_key_in_a_file_authenticates() {
    let (sshd, ca, _cadir) = ca_sshd();
    let home = ClientHome::new();
    sshd.write_known_hosts(home.known_hosts());
    let keydir = tempfile::tempdir().unwrap();
    let key = UserKey::generate(keydir.path(), "ed25519", None);
    sign_for_root(&ca, &key, "warren-certificate-file");
    move_certificate(&key, &home.path().join("certs/root-cert.pub"));
    home.write_ssh_config(&format!(
        "Host *\n  IdentityFile {}\n  CertificateFile ~/certs/%r-cert.pub\n",
        key.private.display()
    ));
    let mut cmd = warren_client(&home, &sshd);
    cmd.arg("root@127.0.0.1");
    let warren =
        ready_or_exit(cmd).unwrap_or_else(|(c, e)| panic!("exit {c:?}\n{e}\n{}", sshd.logs()));
    assert!(
        warren.stderr_text().contains("certs/root-cert.pub"),
        "{}",
        warren.stderr_text()
    );
    assert_certificate_login(&warren, &sshd, "offering certificate", "ED25519-CERT");
}

/// CertificateFile whose key only the agent holds: the agent signs for the certificate.
#[test]
fn certificate_file_with_its_key_in_the_agent_authenticates() {
    let (sshd, ca, _cadir) = ca_sshd();
    let home = ClientHome::new();
    sshd.write_known_hosts(home.known_hosts());
    let keydir = tempfile::tempdir().unwrap();
    let key = UserKey::generate(keydir.path(), "ecdsa", None);
    let agent = Agent::start();
    agent.add(&key); // before signing: the agent holds the plain key only
    sign_for_root(&ca, &key, "warren-certificate-agent");
    let cert = keydir.path().join("elsewhere/cert.pub");
    move_certificate(&key, &cert);
    fs::remove_file(&key.private).unwrap();
    assert!(
        !agent.list().iter().any(|l| l.contains("-cert-v01@")),
        "{:?}",
        agent.list()
    );
    let mut cmd = warren_client(&home, &sshd);
    agent.apply(&mut cmd);
    cmd.arg("-o")
        .arg(format!("CertificateFile={}", cert.display()))
        .arg("root@127.0.0.1");
    let warren =
        ready_or_exit(cmd).unwrap_or_else(|(c, e)| panic!("exit {c:?}\n{e}\n{}", sshd.logs()));
    assert_certificate_login(&warren, &sshd, "offering certificate", "ECDSA-CERT");
}

/// An expired certificate is refused by sshd, and the failure says it expired; with the
/// plain key authorized as well, warren falls back to it.
#[test]
fn expired_certificate_is_refused_with_a_clear_error_and_the_key_falls_back() {
    let (sshd, ca, _cadir) = ca_sshd();
    let home = ClientHome::new();
    sshd.write_known_hosts(home.known_hosts());
    let keydir = tempfile::tempdir().unwrap();
    let key = UserKey::generate(keydir.path(), "ed25519", None);
    sign_for_root_valid(&ca, &key, "warren-expired", "-2h:-1h");
    let cert = keydir.path().join("expired-cert.pub");
    move_certificate(&key, &cert);
    let command = || {
        let mut cmd = warren_client(&home, &sshd);
        cmd.arg("-i")
            .arg(&key.private)
            .arg("-o")
            .arg(format!("CertificateFile={}", cert.display()))
            .arg("root@127.0.0.1");
        cmd
    };
    let (code, err) = match ready_or_exit(command()) {
        Ok(_) => panic!("an expired certificate logged in\n{}", sshd.logs()),
        Err(failure) => failure,
    };
    assert_eq!(code, Some(255), "{err}");
    assert!(err.contains("Permission denied"), "{err}");
    assert!(
        err.lines()
            .any(|l| l.contains("expired-cert.pub") && l.contains("certificate expired at")),
        "{err}"
    );
    assert!(
        !sshd.logs().contains("Accepted publickey"),
        "{}",
        sshd.logs()
    );

    // Beside the key, the certificate is offered first; refused, the plain key follows.
    sshd.authorize(&key.public_line);
    fs::copy(&cert, format!("{}-cert.pub", key.private.display())).unwrap();
    let mut cmd = warren_client(&home, &sshd);
    cmd.arg("-i").arg(&key.private).arg("root@127.0.0.1");
    let warren =
        ready_or_exit(cmd).unwrap_or_else(|(c, e)| panic!("exit {c:?}\n{e}\n{}", sshd.logs()));
    let err = warren.stderr_text();
    let cert_offer = err.find("offering certificate").expect(&err);
    let key_offer = err.rfind("offering ").unwrap();
    assert!(cert_offer < key_offer, "{err}");
    assert_eq!(accepted_count(&sshd, &key), 1, "{err}");
    assert!(
        !sshd
            .logs()
            .lines()
            .any(|l| l.contains("Accepted publickey") && l.contains("CERT")),
        "{}",
        sshd.logs()
    );
}

/// warren said it offered a certificate (`offered`), and sshd logged a login by one of
/// type `cert_type` (e.g. "ED25519-CERT").
fn assert_certificate_login(warren: &Proc, sshd: &Sshd, offered: &str, cert_type: &str) {
    assert!(
        warren.stderr_text().contains(offered),
        "{}",
        warren.stderr_text()
    );
    // Waited for: warren may be ready before the fixture has read sshd's line.
    let logged = sshd.wait_for_log(
        |l| l.contains("Accepted publickey") && l.contains(cert_type),
        READY_TIMEOUT,
    );
    assert!(logged.is_ok(), "{}", sshd.logs());
}
