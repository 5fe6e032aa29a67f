//! What ships around the binaries: the Dockerfile and its config, the compose example of
//! the port proxy (run natively, with real ssh clients, since CI has no container
//! engine), the .deb metadata and the licence files. The image itself is built only
//! where `docker info` succeeds.

mod common;

use common::warrend::*;
use common::*;
use std::fs;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// One Dockerfile instruction: its keyword (upper case) and the rest of its line, with
/// `\` continuations joined and comment lines dropped, as docker reads them.
#[derive(Debug)]
struct Instruction {
    keyword: String,
    args: String,
}

fn parse_dockerfile(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_empty()) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                let (keyword, args) = current.split_once(' ').unwrap_or((&current, ""));
                out.push(Instruction {
                    keyword: keyword.to_uppercase(),
                    args: args.split_whitespace().collect::<Vec<_>>().join(" "),
                });
                current.clear();
            }
        }
    }
    assert!(current.is_empty(), "Dockerfile ends inside a continuation");
    out
}

/// The instructions of each stage (from one FROM to the next).
fn stages(instructions: &[Instruction]) -> Vec<&[Instruction]> {
    let starts: Vec<usize> = instructions
        .iter()
        .enumerate()
        .filter(|(_, i)| i.keyword == "FROM")
        .map(|(n, _)| n)
        .collect();
    assert_eq!(starts.first(), Some(&0), "a Dockerfile starts with FROM");
    starts
        .iter()
        .enumerate()
        .map(|(k, &s)| &instructions[s..*starts.get(k + 1).unwrap_or(&instructions.len())])
        .collect()
}

fn only<'a>(stage: &'a [Instruction], keyword: &str) -> &'a str {
    let found: Vec<&Instruction> = stage.iter().filter(|i| i.keyword == keyword).collect();
    assert_eq!(found.len(), 1, "one {keyword} expected in {stage:?}");
    &found[0].args
}

fn json_array(args: &str) -> Vec<String> {
    serde_json::from_str(args).unwrap_or_else(|e| panic!("exec form expected, {args}: {e}"))
}

fn toml_table(rel: &str) -> toml::Table {
    read(rel).parse().unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// The image as the Dockerfile describes it agrees with itself, with the config it
/// ships and with the README, and warrend accepts that config.
#[test]
fn dockerfile_stages_agree_with_the_config_and_the_readme() {
    let instructions = parse_dockerfile(&read("Dockerfile"));
    let stages = stages(&instructions);
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage");
    let (build, runtime) = (stages[0], stages[1]);

    // Build: a Rust image no older than the crate's rust-version, the README's command.
    let from = only(build, "FROM");
    let (image, alias) = from.split_once(" AS ").expect("FROM rust:... AS build");
    let version = image
        .strip_prefix("rust:")
        .and_then(|t| t.split('-').next())
        .expect("a rust:VERSION-... image");
    let manifest: toml::Table = read("Cargo.toml").parse().unwrap();
    let minimum = manifest["package"]["rust-version"].as_str().unwrap();
    let parse = |v: &str| -> Vec<u32> { v.split('.').map(|n| n.parse().unwrap()).collect() };
    assert!(
        parse(version) >= parse(minimum),
        "rust {version} < {minimum}"
    );
    let workdir = only(build, "WORKDIR");
    let runs: Vec<&str> = build
        .iter()
        .filter(|i| i.keyword == "RUN")
        .map(|i| i.args.as_str())
        .collect();
    let command = "cargo build --release --locked --bin warrend";
    // Before it, only the build tools from Debian (protoc for the etcd client).
    let (last, before) = runs.split_last().expect("the build stage runs the build");
    assert_eq!(*last, command, "the build stage ends with the build");
    for run in before {
        assert!(
            run.starts_with("apt-get update && apt-get install "),
            "the build stage runs more than build-tool installs and the build: {run}"
        );
    }
    assert!(
        read("README.md").contains(command),
        "the README does not document the image's build command {command:?}"
    );
    assert!(
        repo().join("Cargo.lock").exists(),
        "--locked needs Cargo.lock"
    );

    // Runtime: the binary from the build stage, the config, a non-root user.
    let from = only(runtime, "FROM");
    assert!(
        from.starts_with("debian:") && from.ends_with("-slim"),
        "{from}"
    );
    let copies: Vec<&str> = runtime
        .iter()
        .filter(|i| i.keyword == "COPY")
        .map(|i| i.args.as_str())
        .collect();
    let binary = format!("--from={alias} {workdir}/target/release/warrend /usr/local/bin/warrend");
    assert!(copies.contains(&binary.as_str()), "{copies:?}");
    let config_copy = "contrib/docker/default.toml /etc/warrend/warrend.toml";
    assert!(copies.contains(&config_copy), "{copies:?}");
    let user = only(runtime, "USER");
    let uid = user.split(':').next().unwrap();
    assert!(uid != "0" && uid != "root", "runs as root: {user}");
    let useradd = runtime
        .iter()
        .find(|i| i.keyword == "RUN" && i.args.contains("useradd"))
        .expect("the runtime user is created");
    assert!(
        useradd.args.contains(&format!("--uid {uid} ")),
        "{}",
        useradd.args
    );

    // The image's config listens on the exposed port on all of the container's
    // interfaces, keeps its state in the volume, and audits to stdout.
    let config = toml_table("contrib/docker/default.toml");
    let server = config["server"].as_table().unwrap();
    assert_eq!(server["listen"].as_array().unwrap().len(), 1);
    let listen: SocketAddr = server["listen"][0].as_str().unwrap().parse().unwrap();
    assert!(listen.ip().is_unspecified(), "{listen}");
    assert_eq!(only(runtime, "EXPOSE"), listen.port().to_string());
    let state = server["state_dir"].as_str().unwrap();
    assert_eq!(only(runtime, "VOLUME"), state);
    assert!(
        useradd.args.contains(&format!("-m 0700 {state}")),
        "{}",
        useradd.args
    );
    assert_eq!(server["audit_log"].as_str(), Some("stdout"));
    assert!(
        config.get("users").is_none(),
        "the image's default lets someone in"
    );

    // ENTRYPOINT + CMD is warrend -f <the copied config>; warrend -t accepts that file.
    let mut argv = json_array(only(runtime, "ENTRYPOINT"));
    argv.extend(json_array(only(runtime, "CMD")));
    assert_eq!(
        argv,
        ["/usr/local/bin/warrend", "-f", "/etc/warrend/warrend.toml"]
    );
    for rel in ["contrib/docker/default.toml", "contrib/docker/warrend.toml"] {
        let out = Command::new(warrend_bin())
            .env_remove("RUST_LOG")
            .arg("-t")
            .arg("-f")
            .arg(repo().join(rel))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "warrend -t {rel}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    let ignore = read(".dockerignore");
    for needed in ["target", ".git"] {
        assert!(
            ignore.lines().any(|l| l == needed),
            ".dockerignore lacks {needed}"
        );
    }
}

/// The compose example exposes warrend's port and nothing else, and mounts the config
/// and keys where the image and the config expect them.
#[test]
fn compose_publishes_only_the_ssh_port() {
    let compose = read("contrib/docker/compose.yaml");
    let ports: Vec<&str> = compose
        .lines()
        .skip_while(|l| l.trim() != "ports:")
        .skip(1)
        .take_while(|l| l.trim_start().starts_with("- "))
        .map(|l| l.trim().trim_start_matches("- ").trim_matches('"'))
        .collect();
    assert_eq!(ports, ["2222:2222"], "{compose}");
    assert_eq!(compose.matches("ports:").count(), 1);
    assert!(!compose.contains("network_mode"), "{compose}");
    for mount in [
        "./warrend.toml:/etc/warrend/warrend.toml:ro",
        "./keys:/etc/warrend/keys:ro",
        ":/var/lib/warrend",
    ] {
        assert!(compose.contains(mount), "compose.yaml lacks {mount}");
    }
}

/// The compose example's warrend.toml, run natively on loopback: `dev` publishes the name
/// `demo` with `ssh -R`, `reviewer` reaches it with `ssh -L`, and reviewer may not use
/// the session for anything else.
#[test]
fn compose_config_carries_the_port_proxy_pattern() {
    let dir = tempfile::Builder::new()
        .prefix("warrend-compose-")
        .tempdir()
        .unwrap();
    let text = read("contrib/docker/warrend.toml");
    let state_line = "state_dir = \"/var/lib/warrend\"\n";
    assert!(text.contains(state_line));
    let state = dir.path().join("state");
    let config = dir.path().join("warrend.toml");
    fs::write(
        &config,
        text.replace(state_line, &format!("state_dir = {}\n", toml_str(&state))),
    )
    .unwrap();
    let dev = SshClient::new();
    let reviewer = SshClient::new();
    fs::create_dir(dir.path().join("keys")).unwrap();
    for (name, client) in [("dev", &dev), ("reviewer", &reviewer)] {
        let path = dir.path().join(format!("keys/{name}.pub"));
        fs::write(path, format!("{}\n", client.key.public_line)).unwrap();
    }

    let mut cmd = Command::new(warrend_bin());
    cmd.env_remove("RUST_LOG")
        .arg("-f")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0"]);
    let warrend = Proc::spawn(cmd);
    let line = warrend
        .wait_for_stderr(|l| l.contains("warrend: listening on "), READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("warrend did not start:\n{e}"));
    let port: u16 = line.rsplit(':').next().unwrap().trim().parse().unwrap();
    let mut host_key = None;
    for entry in fs::read_dir(&state).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().ends_with("ed25519_key.pub") {
            host_key = Some(fs::read_to_string(path).unwrap());
        }
    }
    let host_key = host_key.expect("an ed25519 host key");
    let key: Vec<&str> = host_key.split_whitespace().take(2).collect();
    for c in [&dev, &reviewer] {
        c.trust(&format!("[127.0.0.1]:{port} {}", key.join(" ")));
    }

    let service = EchoServer::start();
    let mut publish = dev.ssh();
    publish
        .args(["-v", "-N", "-p", &port.to_string(), "-R"])
        .arg(format!("demo:80:127.0.0.1:{}", service.port()))
        .arg(SshClient::dest("dev"));
    let publish = Proc::spawn(publish);
    publish
        .wait_for_stderr(
            |l| l.contains("remote forward success for: listen demo:80"),
            READY_TIMEOUT,
        )
        .unwrap_or_else(|e| panic!("dev could not publish demo:\n{e}"));

    let local = free_port();
    let mut reach = reviewer.ssh();
    reach
        .args(["-v", "-N", "-p", &port.to_string(), "-L"])
        .arg(format!("127.0.0.1:{local}:demo:80"))
        .arg(SshClient::dest("reviewer"));
    let reach = Proc::spawn(reach);
    reach
        .wait_for_stderr(|l| l == local_forward_ready(local), READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("reviewer's -L not ready:\n{e}"));
    let data = pattern_bytes(32 * 1024, 7);
    let conn = connect_with_retry(SocketAddr::from(([127, 0, 0, 1], local)), READY_TIMEOUT)
        .unwrap_or_else(|e| panic!("{e}\n{}", reach.stderr_text()));
    assert!(
        exchange(conn, &data, IO_TIMEOUT).unwrap() == data,
        "demo did not echo"
    );

    // reviewer may not reach the service's real address: deny by default.
    let mut direct = reviewer.ssh();
    direct
        .args(["-p", &port.to_string(), "-W"])
        .arg(format!("127.0.0.1:{}", service.port()))
        .arg(SshClient::dest("reviewer"))
        .stdin(std::process::Stdio::null());
    let out = direct.output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(255),
        "reviewer reached the service directly"
    );
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("administratively prohibited"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    warrend.signal(libc::SIGTERM);
    assert_eq!(warrend.expect_exit(READY_TIMEOUT).code(), Some(0));
}

/// Every file the .deb metadata installs exists (or is built by the documented
/// commands), and the drop-ins that point the units at /usr/bin change nothing else.
#[test]
fn deb_assets_exist_and_drop_ins_match_the_units() {
    let manifest: toml::Table = read("Cargo.toml").parse().unwrap();
    let deb = manifest["package"]["metadata"]["deb"].as_table().unwrap();
    let mut built = Vec::new();
    for asset in deb["assets"].as_array().unwrap() {
        let source = asset[0].as_str().unwrap();
        if let Some(name) = source.strip_prefix("target/release/") {
            built.push(name.to_owned());
        } else {
            assert!(
                repo().join(source).is_file(),
                "deb asset {source} is missing"
            );
        }
    }
    built.sort();
    assert_eq!(built, ["warren", "warren.1", "warrend", "warrend.8"]);
    let readme = read("README.md");
    assert!(readme.contains("target/release/warren man > target/release/warren.1"));
    assert!(readme.contains("target/release/warrend --man > target/release/warrend.8"));
    let man = Command::new(warrend_bin()).arg("--man").output().unwrap();
    let page = String::from_utf8_lossy(&man.stdout);
    assert!(man.status.success() && page.starts_with(".ie"), "{page}");
    assert!(
        page.contains(".TH warrend 8") && page.contains("Exit status"),
        "{page}"
    );

    for (unit, drop_in) in [
        (
            "contrib/systemd/system/warrend.service",
            "contrib/debian/warrend.service.d/usr-bin.conf",
        ),
        (
            "contrib/systemd/system/warren@.service",
            "contrib/debian/warren@.service.d/usr-bin.conf",
        ),
    ] {
        let unit = read(unit);
        let exec: Vec<String> = unit
            .lines()
            .filter(|l| l.starts_with("ExecStart=") || l.starts_with("ExecReload="))
            .map(|l| l.replace("/usr/local/bin/", "/usr/bin/"))
            .collect();
        let replaced: Vec<String> = read(drop_in)
            .lines()
            .filter(|l| l.starts_with("Exec") && !l.ends_with('='))
            .map(str::to_owned)
            .collect();
        assert_eq!(exec, replaced, "{drop_in}");
    }
}

#[test]
fn licence_files_match_the_declared_licence() {
    let manifest: toml::Table = read("Cargo.toml").parse().unwrap();
    assert_eq!(
        manifest["package"]["license"].as_str(),
        Some("MIT OR Apache-2.0")
    );
    let mit = read("LICENSE-MIT");
    assert!(mit.starts_with("MIT License\n\nCopyright (c) The Warren developers\n"));
    let apache = read("LICENSE-APACHE");
    assert!(
        apache.contains("Apache License\n                           Version 2.0, January 2004")
    );
    assert!(apache.contains("END OF TERMS AND CONDITIONS"));
}

/// Where a container engine runs, the image builds and its warrend accepts its config.
/// CI has none (no Docker daemon): the test says so and checks nothing more.
#[test]
fn image_builds_where_a_container_engine_runs() {
    let engine = Command::new("docker")
        .arg("info")
        .output()
        .map(|o| o.status.success());
    if !matches!(engine, Ok(true)) {
        eprintln!("SKIPPED: `docker info` failed (no container engine): the image is not built");
        return;
    }
    let tag = "warrend-packaging-test";
    let status = Command::new("docker")
        .args(["build", "-t", tag, "."])
        .current_dir(repo())
        .status()
        .unwrap();
    assert!(status.success(), "docker build failed");
    let out = Command::new("docker")
        .args(["run", "--rm", tag, "-t", "-f", "/etc/warrend/warrend.toml"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
