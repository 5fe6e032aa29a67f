//! The command line as a user meets it: malformed input is refused with a message naming
//! the culprit and status 2, connection failures give ssh's 255, and the help text says
//! where warren differs from OpenSSH.

mod common;

use common::*;
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

fn warren(args: &[&str]) -> (Option<i32>, String) {
    let home = ClientHome::new();
    let mut cmd = Command::new(warren_bin());
    home.apply(&mut cmd);
    cmd.args(["-o", "BatchMode=yes"]).args(args);
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn malformed_forward_specs_exit_2_naming_the_spec() {
    let cases = [
        "",
        "8080",
        "8080:db",
        "70000:db:80",
        "8080:db:0",
        "8080:db:99999",
        "[::1:8080:db:80",
        "1:2:3:4:5",
        "8080:db:80 ",
        "8080:db:",
        "x:db:80",
        "8080::80",
    ];
    for spec in cases {
        let (code, err) = warren(&["-L", spec, "root@127.0.0.1"]);
        assert_eq!(code, Some(2), "{spec:?}: {err}");
        assert!(
            err.contains(&format!("'{spec}'")),
            "{spec:?} not named: {err}"
        );
        assert!(
            err.contains("[bind_address:]port:host:hostport"),
            "{spec:?}: expected form missing: {err}"
        );
    }
}

#[test]
fn bad_options_and_destinations_exit_2() {
    for (args, needle) in [
        (
            &["-o", "NoSuchOption=1", "h"][..],
            "Bad configuration option: NoSuchOption",
        ),
        (
            &["-o", "StrictHostKeyChecking=maybe", "h"][..],
            "StrictHostKeyChecking",
        ),
        (&["-o", "Port=0", "h"][..], "Port"),
        (&["user@"][..], "bad destination"),
        (&["ssh://h:99999"][..], "bad destination"),
        (&["-p", "notaport", "h"][..], "notaport"),
    ] {
        let (code, err) = warren(args);
        assert_eq!(code, Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
}

#[test]
fn real_openssh_options_warren_lacks_only_warn() {
    let closed = free_port();
    let (code, err) = warren(&[
        "-o",
        "ForwardX11=yes",
        "-p",
        &closed.to_string(),
        "root@127.0.0.1",
    ]);
    assert!(
        err.contains("ForwardX11") && err.contains("not supported"),
        "{err}"
    );
    assert_eq!(code, Some(255), "went on to connect: {err}");
}

#[test]
fn connection_refused_exits_255() {
    let closed = free_port();
    let (code, err) = warren(&["-p", &closed.to_string(), "root@127.0.0.1"]);
    assert_eq!(code, Some(255), "{err}");
    assert!(
        err.contains(&format!(
            "connect to host 127.0.0.1 port {closed}: Connection refused"
        )),
        "{err}"
    );
}

#[test]
fn connect_timeout_covers_a_server_that_never_speaks_ssh() {
    // Accepts TCP (via the backlog) but never sends a banner.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port();
    let started = std::time::Instant::now();
    let (code, err) = warren(&[
        "-o",
        "ConnectTimeout=1",
        "-p",
        &port.to_string(),
        "root@127.0.0.1",
    ]);
    assert_eq!(code, Some(255), "{err}");
    assert!(err.contains("ConnectTimeout"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(10));
}

/// `--help` stays one line per flag and points to the manual, which has the rest: each
/// flag in full, the differences from ssh and the exit statuses.
#[test]
fn help_is_short_and_the_manual_documents_differences_and_exit_statuses() {
    let out = Command::new(warren_bin()).arg("--help").output().unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        help.contains("-L <SPEC>") && help.contains("warren man"),
        "{help}"
    );
    assert!(
        help.lines().all(|l| l.chars().count() <= 130),
        "a --help line runs on:\n{help}"
    );
    assert!(help.lines().count() <= 80, "--help is long:\n{help}");
    let short = Command::new(warren_bin()).arg("-h").output().unwrap();
    assert_eq!(short.stdout, out.stdout, "-h and --help differ");

    let man = Command::new(warren_bin()).arg("man").output().unwrap();
    let man = String::from_utf8_lossy(&man.stdout);
    for needle in [
        "ExitOnForwardFailure defaults to yes",
        "Exit status:",
        "255",
        "port 0 picks a free port",
    ] {
        assert!(man.contains(needle), "the manual lacks {needle:?}:\n{man}");
    }
}
