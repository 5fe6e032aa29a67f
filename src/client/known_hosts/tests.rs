use super::*;
use std::process::Command;
use tempfile::TempDir;
use warren_ssh::ssh_key::EcdsaCurve;

const ED_A: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAICqj/RGyzBMZbvGgRE4D4S/433xg85bKxkQ9HlFI+1lS ka";
const ED_B: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAINONN7a4IAInoPpxcBBDYal4Fv0CnYySC2LlW/Yr9OHg kb";
const ED_C: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAgOIUXI2uLd3QIl0SKrX++vlOYZtis/Tn9CcwwNuz7 kc";
const EC_A: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBOUSY07/4Vj7wffemUWTl/2Upbo8Kn4U+LfVO5GDtQkjsvEkBWhT04G9NTvp41lAptaAAOfeJ7DEtXpY3sRPmv4= ec";
const RSA_A: &str = "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDAqInjWr/9nvibOUnolYxQrkAt6zX+GVdLxQslrInCXhTaSI3CUei6cvHm4Y1vBLfokbaYkCZw9N1TOXkcI//hpgo2DNz8/ihxPx0GyAA5Bxwyrw693bU5YpO/roJ2hgDwueCQtqcG1m6ssr2D7EceS3ES1T/SFfRYAlvQDDrAkQ== rsa";

const P256: Algorithm = Algorithm::Ecdsa {
    curve: EcdsaCurve::NistP256,
};

fn key(line: &str) -> PublicKey {
    PublicKey::from_openssh(line).expect("test key parses")
}

/// The key as stored in a status: known_hosts lines carry no comment.
fn bare(key: &PublicKey) -> PublicKey {
    PublicKey::from(key.key_data().clone())
}

/// `type base64` without the comment, as it appears in known_hosts.
fn k(line: &str) -> String {
    line.split(' ').take(2).collect::<Vec<_>>().join(" ")
}

fn write_known(text: &str) -> (TempDir, PathBuf, KnownHosts) {
    let dir = TempDir::new().expect("tempdir");
    let path = dir.path().join("known_hosts");
    fs::write(&path, text).expect("write");
    let known = KnownHosts::load(std::slice::from_ref(&path));
    (dir, path, known)
}

fn known(path: &Path, line: usize) -> HostKeyStatus {
    HostKeyStatus::Known {
        file: path.to_path_buf(),
        line,
    }
}

fn ssh_keygen(args: &[&str]) -> std::process::Output {
    Command::new("ssh-keygen")
        .args(args)
        .output()
        .expect("ssh-keygen must be installed to run these tests")
}

fn generate_key(dir: &Path, name: &str, key_type: &str) -> PublicKey {
    let private = dir.join(name);
    let private = private.to_str().expect("utf-8 temp path");
    let out = ssh_keygen(&["-q", "-t", key_type, "-N", "", "-C", name, "-f", private]);
    assert!(out.status.success(), "ssh-keygen failed: {out:?}");
    PublicKey::read_openssh_file(Path::new(&format!("{private}.pub"))).expect("read .pub")
}

#[test]
fn lookup_names_follow_openssh() {
    let cases: &[(&str, u16, &str)] = &[
        ("example.com", 22, "example.com"),
        ("example.com", 2222, "[example.com]:2222"),
        ("127.0.0.1", 2222, "[127.0.0.1]:2222"),
        ("::1", 22, "::1"),
        ("::1", 8022, "[::1]:8022"),
        ("Example.COM", 22, "example.com"),
    ];
    for &(host, port, want) in cases {
        assert_eq!(lookup_name(host, port), want);
    }
}

#[test]
fn plain_entries_known_changed_unknown() {
    let (_d, path, kh) = write_known(&format!("example.com {}\n", k(ED_A)));
    assert_eq!(kh.check("example.com", 22, &key(ED_A)), known(&path, 1));
    // Host names are case-insensitive, comments are irrelevant.
    assert_eq!(kh.check("EXAMPLE.com", 22, &key(ED_A)), known(&path, 1));
    assert_eq!(
        kh.check("example.com", 22, &key(ED_B)),
        HostKeyStatus::Changed {
            file: path.clone(),
            line: 1,
            known: bare(&key(ED_A))
        }
    );
    assert_eq!(
        kh.check("other.com", 22, &key(ED_A)),
        HostKeyStatus::Unknown
    );
    assert_eq!(
        kh.check("example.com", 2222, &key(ED_A)),
        HostKeyStatus::Unknown
    );
}

#[test]
fn pattern_table() {
    let text = format!(
        "*.example.com,10.0.0.? {a}\n\
         !bad,*.corp.net {a}\n\
         !bad.example.org,*.example.org {a}\n\
         [*.ports.net]:* {a}\n\
         alpha,BETA {a}\n",
        a = k(ED_A)
    );
    let (_d, _path, kh) = write_known(&text);
    let cases: &[(&str, u16, bool)] = &[
        ("www.example.com", 22, true),
        ("example.com", 22, false),
        ("10.0.0.7", 22, true),
        ("10.0.0.17", 22, false),
        ("x.corp.net", 22, true),
        ("bad", 22, false),
        ("good.example.org", 22, true),
        ("bad.example.org", 22, false),
        ("BAD.example.org", 22, false),
        ("a.ports.net", 2222, true),
        ("a.ports.net", 22, false),
        ("alpha", 22, true),
        ("beta", 22, true),
        ("gamma", 22, false),
        ("www.example.com", 2222, false),
    ];
    for &(host, port, want) in cases {
        let status = kh.check(host, port, &key(ED_A));
        assert_eq!(
            matches!(status, HostKeyStatus::Known { .. }),
            want,
            "{host}:{port} -> {status:?}"
        );
    }
}

#[test]
fn bracketed_port_entries() {
    let text = format!(
        "[host]:2222 {}\nhost {}\n[127.0.0.1]:2222 {}\n",
        k(ED_A),
        k(ED_B),
        k(EC_A)
    );
    let (_d, path, kh) = write_known(&text);
    assert_eq!(kh.check("host", 2222, &key(ED_A)), known(&path, 1));
    assert_eq!(kh.check("host", 22, &key(ED_B)), known(&path, 2));
    assert!(matches!(
        kh.check("host", 2222, &key(ED_B)),
        HostKeyStatus::Changed { line: 1, .. }
    ));
    assert!(matches!(
        kh.check("host", 22, &key(ED_A)),
        HostKeyStatus::Changed { line: 2, .. }
    ));
    assert_eq!(kh.check("127.0.0.1", 2222, &key(EC_A)), known(&path, 3));
    assert_eq!(
        kh.check("127.0.0.1", 22, &key(EC_A)),
        HostKeyStatus::Unknown
    );
    assert_eq!(kh.check("host", 2223, &key(ED_A)), HostKeyStatus::Unknown);
}

#[test]
fn hashed_entries_from_ssh_keygen() {
    let text = format!(
        "[127.0.0.1]:2222 {}\nfoo.example.com,bar {}\n",
        k(ED_A),
        k(ED_B)
    );
    let dir = TempDir::new().expect("tempdir");
    let path = dir.path().join("known_hosts");
    fs::write(&path, text).expect("write");
    let out = ssh_keygen(&["-H", "-f", path.to_str().expect("utf-8")]);
    assert!(out.status.success(), "ssh-keygen -H failed: {out:?}");
    let hashed = fs::read_to_string(&path).expect("read");
    assert_eq!(hashed.lines().count(), 3, "{hashed}");
    assert!(hashed.lines().all(|l| l.starts_with("|1|")), "{hashed}");

    let kh = KnownHosts::load(std::slice::from_ref(&path));
    assert_eq!(kh.check("127.0.0.1", 2222, &key(ED_A)), known(&path, 1));
    assert_eq!(kh.check("foo.example.com", 22, &key(ED_B)), known(&path, 2));
    assert_eq!(kh.check("FOO.example.com", 22, &key(ED_B)), known(&path, 2));
    assert_eq!(kh.check("bar", 22, &key(ED_B)), known(&path, 3));
    assert!(matches!(
        kh.check("bar", 22, &key(ED_C)),
        HostKeyStatus::Changed { line: 3, .. }
    ));
    assert_eq!(
        kh.check("127.0.0.1", 22, &key(ED_A)),
        HostKeyStatus::Unknown
    );
    assert_eq!(kh.check("baz", 22, &key(ED_B)), HostKeyStatus::Unknown);
    assert_eq!(kh.known_algorithms("bar", 22), vec![Algorithm::Ed25519]);
}

#[test]
fn revoked_key_wins_regardless_of_host() {
    let text = format!(
        "host {a}\n@revoked some-other-host {a}\nhost {b}\n@revoked\t* {c}\n",
        a = k(ED_A),
        b = k(ED_B),
        c = k(EC_A)
    );
    let (_d, path, kh) = write_known(&text);
    let revoked = |line| HostKeyStatus::Revoked {
        file: path.clone(),
        line,
    };
    assert_eq!(kh.check("host", 22, &key(ED_A)), revoked(2));
    assert_eq!(kh.check("unrelated", 22, &key(ED_A)), revoked(2));
    assert_eq!(kh.check("anything", 2222, &key(EC_A)), revoked(4));
    assert_eq!(kh.check("host", 22, &key(ED_B)), known(&path, 3));
    // Revoked lines are not host keys for the hosts they name.
    assert_eq!(
        kh.check("some-other-host", 22, &key(ED_B)),
        HostKeyStatus::Unknown
    );
    assert_eq!(kh.known_algorithms("host", 22), vec![Algorithm::Ed25519]);
}

#[test]
fn cert_authority_is_never_a_host_key() {
    let text = format!("@cert-authority host,*.example.com {}\n", k(ED_A));
    let (_d, path, kh) = write_known(&text);
    assert_eq!(kh.check("host", 22, &key(ED_A)), HostKeyStatus::Unknown);
    assert_eq!(
        kh.check("a.example.com", 22, &key(ED_A)),
        HostKeyStatus::Unknown
    );
    assert!(kh.known_algorithms("host", 22).is_empty());

    // A CA line holding the presented key does not rescue a mismatch.
    let mut text2 = text.clone();
    text2.push_str(&format!("host {}\n", k(ED_B)));
    fs::write(&path, text2).expect("write");
    let kh = KnownHosts::load(std::slice::from_ref(&path));
    assert!(matches!(
        kh.check("host", 22, &key(ED_A)),
        HostKeyStatus::Changed { line: 2, .. }
    ));
}

#[test]
fn other_type_known_is_not_unknown() {
    let text = format!("host {}\nhost {}\n", k(EC_A), k(RSA_A));
    let (_d, path, kh) = write_known(&text);
    assert_eq!(
        kh.check("host", 22, &key(ED_A)),
        HostKeyStatus::OtherTypeKnown {
            known: vec![
                (path.clone(), 1, P256),
                (path.clone(), 2, Algorithm::Rsa { hash: None })
            ]
        }
    );
    assert_eq!(kh.check("other", 22, &key(ED_A)), HostKeyStatus::Unknown);
}

#[test]
fn same_key_anywhere_beats_a_mismatch() {
    let text = format!("host {}\n*.net,host {}\n", k(ED_A), k(ED_B));
    let (_d, path, kh) = write_known(&text);
    assert_eq!(kh.check("host", 22, &key(ED_B)), known(&path, 2));
    assert_eq!(
        kh.check("host", 22, &key(ED_C)),
        HostKeyStatus::Changed {
            file: path.clone(),
            line: 1,
            known: bare(&key(ED_A))
        }
    );
}

#[test]
fn known_algorithms_in_file_order_deduplicated() {
    let text = format!(
        "host {ec}\nhost {a}\n@cert-authority host {rsa}\nhost {b}\nhost {rsa}\nother {a}\n",
        ec = k(EC_A),
        a = k(ED_A),
        b = k(ED_B),
        rsa = k(RSA_A)
    );
    let (_d, _path, kh) = write_known(&text);
    assert_eq!(
        kh.known_algorithms("host", 22),
        vec![P256, Algorithm::Ed25519, Algorithm::Rsa { hash: None }]
    );
    assert!(kh.known_algorithms("nobody", 22).is_empty());
}

#[test]
fn tolerates_whitespace_comments_and_garbage() {
    let ed_a_b64 = k(ED_A).split(' ').nth(1).unwrap_or_default().to_owned();
    let ec_b64 = k(EC_A).split(' ').nth(1).unwrap_or_default().to_owned();
    let ec_unpadded = ec_b64.trim_end_matches('=').to_owned();
    assert_ne!(ec_b64, ec_unpadded);
    let mut text = String::new();
    let lines = [
        "# a comment".to_owned(),
        String::new(),
        "   \t ".to_owned(),
        "garbage".to_owned(),
        "host".to_owned(),
        "host ssh-ed25519".to_owned(),
        "host ssh-ed25519 !!!notbase64!!!".to_owned(),
        "host ssh-ed25519 AAAA".to_owned(),
        // Type field lies about the blob.
        format!("host ssh-rsa {ed_a_b64}"),
        format!("@bogus host ssh-ed25519 {ed_a_b64}"),
        "@revoked".to_owned(),
        format!("|1|notbase64|xx ssh-ed25519 {ed_a_b64}"),
        format!("|1|AAAA|AAAA ssh-ed25519 {ed_a_b64}"),
        format!(
            "|2|AiSCl/yt6LVEFUDmR/UutfBPlBY=|GXsTyn7x6VmZ4upCfPsjuPuG2X8= ssh-ed25519 {ed_a_b64}"
        ),
        format!("|1|AiSCl/yt6LVEFUDmR/UutfBPlBY= ssh-ed25519 {ed_a_b64}"),
        // Certificates are not plain host keys.
        "host ssh-ed25519-cert-v01@openssh.com AAAAIHNzaC1lZDI1NTE5LWNlcnQtdjAxQG9wZW5zc2guY29t"
            .to_owned(),
        // Valid: tabs, several spaces, trailing comment with spaces, CRLF.
        format!("\t host,alias\t\tssh-ed25519   {ed_a_b64}   my comment\there\r"),
        format!("  # indented comment {ed_a_b64}"),
        format!("unpadded ecdsa-sha2-nistp256 {ec_unpadded}"),
    ];
    for l in &lines {
        text.push_str(l);
        text.push('\n');
    }
    let dir = TempDir::new().expect("tempdir");
    let path = dir.path().join("known_hosts");
    let mut bytes = text.into_bytes();
    bytes.extend_from_slice(b"host ssh-ed25519 \xff\xfe\n");
    bytes.extend_from_slice(format!("last {ed_a_b64}").as_bytes()); // no newline, key type missing
    fs::write(&path, bytes).expect("write");
    let kh = KnownHosts::load(std::slice::from_ref(&path));

    assert_eq!(kh.entries.len(), 2, "{:#?}", kh.entries);
    assert_eq!(kh.check("host", 22, &key(ED_A)), known(&path, 17));
    assert_eq!(kh.check("alias", 22, &key(ED_A)), known(&path, 17));
    assert_eq!(kh.check("unpadded", 22, &key(EC_A)), known(&path, 19));
}

#[test]
fn files_in_order_and_missing_files_ignored() {
    let dir = TempDir::new().expect("tempdir");
    let user = dir.path().join("user_known_hosts");
    let global = dir.path().join("global_known_hosts");
    let missing = dir.path().join("nope").join("known_hosts");
    fs::write(&user, format!("\nhost {}\n", k(ED_A))).expect("write");
    fs::write(&global, format!("host {}\nhost {}\n", k(ED_A), k(EC_A))).expect("write");
    let kh = KnownHosts::load(&[
        missing.clone(),
        user.clone(),
        global.clone(),
        dir.path().to_path_buf(),
    ]);
    assert_eq!(kh.check("host", 22, &key(ED_A)), known(&user, 2));
    assert_eq!(kh.check("host", 22, &key(EC_A)), known(&global, 2));
    assert!(matches!(
        kh.check("host", 22, &key(ED_B)),
        HostKeyStatus::Changed { ref file, line: 2, .. } if *file == user
    ));
    assert_eq!(
        KnownHosts::load(&[missing]).check("host", 22, &key(ED_A)),
        HostKeyStatus::Unknown
    );
}

#[test]
fn append_is_found_by_ssh_keygen_and_by_check() {
    let dir = TempDir::new().expect("tempdir");
    let server = generate_key(dir.path(), "server", "ed25519");
    let impostor = generate_key(dir.path(), "impostor", "ed25519");
    let server_ec = generate_key(dir.path(), "server_ec", "ecdsa");
    for hash in [false, true] {
        let ssh_dir = dir.path().join(format!("home-{hash}")).join(".ssh");
        let path = ssh_dir.join("known_hosts");
        let line = append(&path, "127.0.0.1", 2222, &server, hash).expect("append");
        let line2 = append(&path, "127.0.0.1", 2222, &server_ec, hash).expect("append");
        assert!(!line.contains('\n'));
        assert_eq!(line.starts_with("|1|"), hash, "{line}");
        if !hash {
            assert!(
                line.starts_with("[127.0.0.1]:2222 ssh-ed25519 AAAA"),
                "{line}"
            );
            assert!(
                line2.starts_with("[127.0.0.1]:2222 ecdsa-sha2-nistp256 AAAA"),
                "{line2}"
            );
        }
        assert_eq!(
            fs::read_to_string(&path).expect("read"),
            format!("{line}\n{line2}\n")
        );

        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = |p: &Path| fs::metadata(p).expect("stat").permissions().mode() & 0o777;
            assert_eq!(mode(&path), 0o600);
            assert_eq!(mode(&ssh_dir), 0o700);
        }

        let out = ssh_keygen(&[
            "-F",
            "[127.0.0.1]:2222",
            "-f",
            path.to_str().expect("utf-8"),
        ]);
        assert!(out.status.success(), "ssh-keygen -F failed: {out:?}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(stdout.contains("found: line 1"), "{stdout}");
        assert!(stdout.contains("found: line 2"), "{stdout}");
        let out = ssh_keygen(&["-F", "127.0.0.1", "-f", path.to_str().expect("utf-8")]);
        assert!(!out.status.success(), "port 22 must not match: {out:?}");

        let kh = KnownHosts::load(std::slice::from_ref(&path));
        assert_eq!(kh.check("127.0.0.1", 2222, &server), known(&path, 1));
        assert_eq!(kh.check("127.0.0.1", 2222, &server_ec), known(&path, 2));
        assert_eq!(
            kh.check("127.0.0.1", 2222, &impostor),
            HostKeyStatus::Changed {
                file: path.clone(),
                line: 1,
                known: bare(&server)
            }
        );
        assert_eq!(kh.check("127.0.0.1", 22, &server), HostKeyStatus::Unknown);
        assert_eq!(
            kh.known_algorithms("127.0.0.1", 2222),
            vec![Algorithm::Ed25519, P256]
        );
    }
}

#[test]
fn append_repairs_missing_final_newline() {
    let dir = TempDir::new().expect("tempdir");
    let path = dir.path().join("known_hosts");
    let first = format!("old.example.com {}", k(ED_B));
    fs::write(&path, &first).expect("write");
    let line = append(&path, "new.example.com", 22, &key(ED_A), false).expect("append");
    assert_eq!(
        fs::read_to_string(&path).expect("read"),
        format!("{first}\n{line}\n")
    );
    let out = ssh_keygen(&["-F", "new.example.com", "-f", path.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("found: line 2"));
    let kh = KnownHosts::load(std::slice::from_ref(&path));
    assert_eq!(kh.check("old.example.com", 22, &key(ED_B)), known(&path, 1));
    assert_eq!(kh.check("new.example.com", 22, &key(ED_A)), known(&path, 2));
}

#[test]
fn append_rejects_hosts_that_would_corrupt_the_file() {
    let dir = TempDir::new().expect("tempdir");
    let path = dir.path().join("known_hosts");
    for host in [
        "",
        "a b",
        "a\tb",
        "evil\n* ssh-ed25519 AAAA",
        "a,b",
        "*",
        "h?st",
        "!host",
        "#host",
        "@revoked",
        "|1|x|y",
    ] {
        let err = append(&path, host, 22, &key(ED_A), false).expect_err(host);
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
    }
    assert!(!path.exists());
}

#[test]
fn presented_certificate_is_checked_by_its_plain_key() {
    let dir = TempDir::new().expect("tempdir");
    let host_key = generate_key(dir.path(), "host", "ed25519");
    generate_key(dir.path(), "ca", "ed25519");
    let ca = dir.path().join("ca");
    let host_pub = dir.path().join("host.pub");
    let out = ssh_keygen(&[
        "-q",
        "-s",
        ca.to_str().expect("utf-8"),
        "-h",
        "-I",
        "host",
        "-n",
        "host",
        host_pub.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{out:?}");
    let cert_text = fs::read_to_string(dir.path().join("host-cert.pub")).expect("read cert");
    let cert_b64 = cert_text.split(' ').nth(1).expect("cert base64 field");
    let cert = PublicKey::from_bytes(&STANDARD.decode(cert_b64).expect("cert base64"))
        .expect("parse cert");
    assert!(cert.key_data().is_certificate());

    let path = dir.path().join("known_hosts");
    append(&path, "host", 22, &cert, false).expect("append");
    let kh = KnownHosts::load(std::slice::from_ref(&path));
    assert_eq!(kh.check("host", 22, &host_key), known(&path, 1));
    assert_eq!(kh.check("host", 22, &cert), known(&path, 1));
    // The certificate itself in known_hosts is not a valid line.
    fs::write(&path, format!("host {cert_text}")).expect("write");
    let kh = KnownHosts::load(std::slice::from_ref(&path));
    assert_eq!(kh.check("host", 22, &host_key), HostKeyStatus::Unknown);
}

#[test]
fn changed_key_warning_names_keys_file_and_fix() {
    let presented = key(ED_B);
    let recorded = key(ED_A);
    let file = Path::new("/home/u/.ssh/known_hosts");
    let text = changed_key_warning("127.0.0.1", 2222, &presented, file, 3, &recorded);
    let presented_fp = presented.fingerprint(HashAlg::Sha256).to_string();
    let recorded_fp = recorded.fingerprint(HashAlg::Sha256).to_string();
    assert!(presented_fp.starts_with("SHA256:"));
    assert_ne!(presented_fp, recorded_fp);
    for needle in [
        "WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!",
        presented_fp.as_str(),
        recorded_fp.as_str(),
        "Offending ED25519 key in /home/u/.ssh/known_hosts:3",
        "ssh-keygen -f /home/u/.ssh/known_hosts -R '[127.0.0.1]:2222'",
        "remote host [127.0.0.1]:2222",
    ] {
        assert!(text.contains(needle), "missing {needle:?} in:\n{text}");
    }
    assert!(text.find(&presented_fp) < text.find(&recorded_fp));

    let text = changed_key_warning(
        "example.com",
        22,
        &presented,
        Path::new("/tmp/it's"),
        1,
        &recorded,
    );
    assert!(
        text.contains(r"ssh-keygen -f '/tmp/it'\''s' -R example.com"),
        "{text}"
    );
}
