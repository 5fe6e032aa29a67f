//! warrend as a service: the systemd notify protocol seen from a real notify socket
//! (READY=1 only once the port accepts, STATUS= following logins, RELOADING=1/READY=1
//! around SIGHUP, STOPPING=1, watchdog pings), the shipped unit checked by systemd's own
//! verifier, `-t`/`-T` (which bind and write nothing), the exit statuses, and the start
//! warnings for files the configuration names but that are missing.

mod common;

use common::notify::{NotifySocket, with_watchdog};
use common::warrend::*;
use common::*;
use std::fs;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A config directory: `[server]` on loopback port 0 with its state in the directory,
/// then `rest`.
fn config_dir(rest: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::Builder::new()
        .prefix("warrend-svc-")
        .tempdir()
        .unwrap();
    let config = dir.path().join("warrend.toml");
    fs::write(
        &config,
        format!(
            "[server]\nlisten = [\"127.0.0.1:0\"]\nstate_dir = {}\n\
             host_keys = [\"ssh_host_ed25519_key\"]\n\n\
             [limits]\nauth_rejection_delay = \"1ms\"\n\n{rest}",
            toml_str(&dir.path().join("state"))
        ),
    )
    .unwrap();
    (dir, config)
}

fn warrend() -> Command {
    let mut cmd = Command::new(warrend_bin());
    cmd.env_remove("RUST_LOG")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("JOURNAL_STREAM")
        .env_remove("STATE_DIRECTORY");
    cmd
}

fn run(cmd: &mut Command) -> (Option<i32>, String, String) {
    let Output {
        status,
        stdout,
        stderr,
    } = cmd.output().unwrap();
    (
        status.code(),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}

/// The address in warrend's `... warrend: listening on ADDR` line.
fn listening(proc: &Proc) -> SocketAddr {
    let line = proc
        .wait_for_stderr(|l| l.contains("warrend: listening on "), READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("warrend did not start:\n{e}"));
    line.split("warrend: listening on ")
        .nth(1)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn notify_ready_after_bind_then_status_reload_watchdog_and_stopping() {
    let client = SshClient::new();
    let users = user("alice", &[&client], "");
    let (dir, config) = config_dir(&users);
    let mut notify = NotifySocket::bind();
    let mut cmd = warrend();
    cmd.arg("-f")
        .arg(&config)
        .env("NOTIFY_SOCKET", &notify.path);
    let warrend = Proc::spawn(with_watchdog(&cmd, 400_000));

    let ready = notify.wait_for("READY=1", |l| l == "READY=1");
    // READY=1 comes after the listener is bound: the port accepts right away.
    let addr = listening(&warrend);
    TcpStream::connect_timeout(&addr, READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("READY=1 sent but {addr} does not accept: {e}"));
    assert!(
        ready.contains(&format!("STATUS=listening on {addr}; 0 sessions, 0 users")),
        "{ready:?}"
    );
    notify.wait_for("a watchdog ping", |l| l == "WATCHDOG=1");

    // A login shows in the status.
    let host_key = fs::read_to_string(dir.path().join("state/ssh_host_ed25519_key.pub")).unwrap();
    let key: Vec<&str> = host_key.split_whitespace().take(2).collect();
    client.trust(&format!("[127.0.0.1]:{} {}", addr.port(), key.join(" ")));
    let mut ssh = client.ssh();
    ssh.args(["-v", "-N", "-p", &addr.port().to_string()])
        .arg(SshClient::dest("alice"));
    let ssh = Proc::spawn(ssh);
    ssh.wait_for_stderr(|l| l.starts_with("Authenticated to"), READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("ssh did not log in:\n{e}"));
    notify.wait_for("the session in the status", |l| {
        l == "STATUS=1 sessions, 1 users"
    });

    // A reload: RELOADING=1 with the time systemd wants, then READY=1.
    warrend.signal(libc::SIGHUP);
    let reloading = notify.wait_for("RELOADING=1", |l| l == "RELOADING=1");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading:?}");
    let again = notify.wait_for("READY=1 after the reload", |l| l == "READY=1");
    assert!(again.contains("STATUS=1 sessions, 1 users"), "{again:?}");

    // A reload that fails keeps the running configuration, and the status says so.
    fs::write(&config, "[server\n").unwrap();
    warrend.signal(libc::SIGHUP);
    notify.wait_for("RELOADING=1", |l| l == "RELOADING=1");
    let failed = notify.wait_for("READY=1 after a failed reload", |l| l == "READY=1");
    assert!(
        failed.contains("STATUS=reload failed, running the previous configuration: ")
            && failed.contains("warrend.toml:1:"),
        "{failed:?}"
    );
    drop(ssh);

    warrend.signal(libc::SIGTERM);
    notify.wait_for("STOPPING=1", |l| l == "STOPPING=1");
    assert_eq!(warrend.expect_exit(READY_TIMEOUT).code(), Some(0));
    let readies = notify
        .seen
        .iter()
        .filter(|m| m.lines().any(|l| l == "READY=1"));
    assert_eq!(
        readies.count(),
        3,
        "READY=1 at start and after each reload: {:?}",
        notify.seen
    );
}

/// The unit as shipped, pointed at this build, passes `systemd-analyze verify` without a
/// complaint (an unknown key or bad value is only a warning to systemd, and would
/// silently weaken the sandbox).
#[test]
fn shipped_unit_passes_systemd_analyze_verify() {
    let analyze = Path::new("/usr/bin/systemd-analyze");
    if !analyze.exists() {
        eprintln!("SKIPPED: systemd-analyze is not installed");
        return;
    }
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd/system/warrend.service");
    let text = fs::read_to_string(&file).unwrap();
    for needed in [
        "Type=notify\n",
        "ExecStart=/usr/local/bin/warrend -f /etc/warrend/warrend.toml\n",
        "ExecReload=/bin/kill -HUP $MAINPID\n",
        "StateDirectory=warrend\n",
        "ProtectSystem=strict\n",
        "NoNewPrivileges=yes\n",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE\n",
        "RestartPreventExitStatus=1 2\n",
    ] {
        assert!(text.contains(needed), "warrend.service lacks {needed:?}");
    }
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("warrend.service");
    let bin = warrend_bin().display().to_string();
    fs::write(&unit, text.replace("/usr/local/bin/warrend", &bin)).unwrap();
    let out = Command::new(analyze)
        .args(["verify", "--man=no"])
        .arg(&unit)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && !stderr.contains("warrend.service"),
        "systemd-analyze verify: {}\n{stderr}",
        out.status
    );
}

/// `-t` on the shipped example: exit 0, says which host keys a start would generate,
/// and creates nothing (the state directory stays empty).
#[test]
fn check_accepts_the_example_and_writes_nothing() {
    // The example as shipped, but with its state directory in a temporary one.
    let state = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/warrend.toml");
    let text = fs::read_to_string(&example).unwrap();
    let line = "state_dir = \"/var/lib/warrend\"\n";
    assert!(
        text.contains(line),
        "examples/warrend.toml: state_dir moved?"
    );
    let copy = state.path().join("warrend.toml");
    let state_dir = state.path().join("state");
    fs::write(
        &copy,
        text.replace(line, &format!("state_dir = {}\n", toml_str(&state_dir))),
    )
    .unwrap();
    let (code, stdout, stderr) = run(warrend().arg("-t").arg("-f").arg(&copy));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");
    assert!(stderr.contains("configuration OK"), "{stderr}");
    let key = state_dir.join("ssh_host_ed25519_key");
    assert!(
        stderr.contains(&format!(
            "host key {} does not exist: a start generates a new ED25519 key",
            key.display()
        )),
        "{stderr}"
    );
    assert!(!state_dir.exists(), "-t created the state directory");
}

#[test]
fn check_names_file_and_line_of_a_toml_error_and_exits_1() {
    let (_dir, config) = config_dir("[users.alice]\nkeys = [\"a\",\n\"b\" \"c\"]\n");
    let (code, _, stderr) = run(warrend().arg("-t").arg("-f").arg(&config));
    assert_eq!(code, Some(1), "{stderr}");
    let at = format!("{}:11:", config.display());
    assert!(stderr.contains(&at), "no {at} in {stderr}");
    // A start on the same file: the same error, the same status.
    let (code, _, stderr) = run(warrend().arg("-f").arg(&config));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains(&at), "{stderr}");
}

/// A missing authorized_keys file is no error (it is re-read at each login), but both
/// `-t` and a start say so; a missing audit directory is one (a start could not open it).
#[test]
fn missing_files_are_warned_about_by_check_and_at_start() {
    let (dir, config) = config_dir("[users.bob]\nauthorized_keys = \"keys/bob\"\n");
    let missing = dir.path().join("keys/bob");
    let warning = format!(
        "users.bob.authorized_keys: {}: does not exist",
        missing.display()
    );
    let (code, _, stderr) = run(warrend().arg("-t").arg("-f").arg(&config));
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains(&format!("warning: {warning}")), "{stderr}");
    assert!(
        !dir.path().join("state").exists(),
        "-t created the state directory"
    );

    let started = Proc::spawn({
        let mut cmd = warrend();
        cmd.arg("-f").arg(&config);
        cmd
    });
    listening(&started);
    assert!(
        started
            .stderr_lines()
            .iter()
            .any(|l| l.contains("WARN") && l.contains(&warning)),
        "{}",
        started.stderr_text()
    );
    // A reload says it again: the file may have gone since the start.
    let from = started.stderr_line_count();
    started.signal(libc::SIGHUP);
    started
        .wait_for_stderr_from(
            from,
            |l| l.contains("WARN") && l.contains(&warning),
            READY_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("no warning at the reload:\n{e}"));
    started.signal(libc::SIGTERM);
    assert_eq!(started.expect_exit(READY_TIMEOUT).code(), Some(0));

    let text = fs::read_to_string(&config).unwrap();
    fs::write(
        &config,
        text.replace("[server]\n", "[server]\naudit_log = \"logs/audit.jsonl\"\n"),
    )
    .unwrap();
    let (code, _, stderr) = run(warrend().arg("-t").arg("-f").arg(&config));
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("server.audit_log: directory"), "{stderr}");
    assert!(!dir.path().join("logs").exists());
}

#[test]
fn print_config_writes_the_effective_config_which_checks_back() {
    let (dir, config) = config_dir("[users.bob]\nauthorized_keys = \"bob.keys\"\n");
    let (code, stdout, stderr) = run(warrend().arg("-T").arg("-f").arg(&config));
    assert_eq!(code, Some(0), "{stderr}");
    for default in [
        "max_auth_tries = 6",
        "login_grace_time = \"30s\"",
        "max_buffered = \"1GiB\"",
        "deny_host_addresses = true",
        "audit_on_failure = \"refuse\"",
        "principals = [\"bob\"]",
    ] {
        assert!(stdout.contains(default), "no {default} in\n{stdout}");
    }
    let bob = dir.path().join("bob.keys").display().to_string();
    assert!(
        stdout.contains(&format!("authorized_keys = [{bob:?}]")),
        "{stdout}"
    );
    let again = dir.path().join("effective.toml");
    fs::write(&again, &stdout).unwrap();
    let (code, stdout2, stderr) = run(warrend().arg("-T").arg("-f").arg(&again));
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(
        stdout.lines().skip(1).collect::<Vec<_>>(),
        stdout2.lines().skip(1).collect::<Vec<_>>(),
        "-T of -T's output differs"
    );
}

#[test]
fn exit_status_tells_a_taken_port_from_a_usage_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let (_dir, config) = config_dir("");
    let (code, _, stderr) = run(warrend()
        .arg("-f")
        .arg(&config)
        .arg("--listen")
        .arg(addr.to_string()));
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {addr}")),
        "{stderr}"
    );
    let (code, _, stderr) = run(warrend().arg("--no-such-flag"));
    assert_eq!(code, Some(2), "{stderr}");
    let (_, help, _) = run(warrend().arg("--help"));
    assert!(
        help.starts_with("A tunnel-only SSH server and bastion"),
        "{help}"
    );
    assert!(help.contains("3  cannot listen"), "{help}");
}

/// Diagnostics carry a timestamp, except when stderr is journald's stream, which stamps
/// every line itself (systemd says which stream in JOURNAL_STREAM=DEV:INODE).
#[test]
fn diagnostics_are_timestamped_unless_stderr_is_the_journal() {
    use std::os::unix::fs::MetadataExt;
    let (dir, config) = config_dir("");
    fs::write(&config, "[server\n").unwrap();
    let log = dir.path().join("stderr");
    let mut stamped = None;
    for journal in [false, true] {
        let file = fs::File::create(&log).unwrap();
        let meta = file.metadata().unwrap();
        let mut cmd = warrend();
        cmd.arg("-f").arg(&config).stderr(file);
        if journal {
            cmd.env("JOURNAL_STREAM", format!("{}:{}", meta.dev(), meta.ino()));
        }
        assert_eq!(cmd.status().unwrap().code(), Some(1));
        let text = fs::read_to_string(&log).unwrap();
        let first = text.lines().next().unwrap_or_default().to_owned();
        if journal {
            assert!(first.starts_with("warrend: "), "under journald: {first:?}");
        } else {
            stamped = Some(first);
        }
    }
    let stamped = stamped.unwrap();
    let (time, rest) = stamped.split_once(' ').unwrap();
    assert!(
        time.len() == 27 && time.ends_with('Z') && rest.starts_with("warrend: "),
        "{stamped:?}"
    );
}
