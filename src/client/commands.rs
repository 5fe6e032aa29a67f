//! `warren status`, `warren stop`, `warren completions` and `warren man`: subcommands
//! recognised only as the first argument, so `warren host` and every ssh command line
//! stay as they are (a host literally named "status" is reached as `ssh://status`, or with
//! any flag before it).

use super::cli::Cli;
use super::control::{self, Request, TunnelStatus};
use super::out::print;
use clap::{CommandFactory, Parser, ValueEnum};

/// List running warren tunnels: forwards, live counts, reconnects, last error.
#[derive(Debug, Parser)]
#[command(name = "warren status")]
pub struct StatusArgs {
    /// Print JSON: an array with one object per tunnel (fields: pid, name, tag,
    /// destination, host, port, user, connected, healthy, uptime_secs, connected_secs,
    /// reconnects, last_error, control_path, forwards[kind, spec, listening, port, up,
    /// active, connections, bytes_up, bytes_down]). Fields are only ever added.
    #[arg(long)]
    pub json: bool,

    /// Health check: exit 0 if the tunnel NAME (a pid, the destination as given, host,
    /// user@host, Tag or ControlPath) is connected with every forward up, 1 if not, 2 if
    /// no such tunnel runs.
    #[arg(long, value_name = "NAME")]
    pub check: Option<String>,

    /// Only this tunnel (a pid, destination, Tag or ControlPath).
    #[arg(value_name = "NAME")]
    pub name: Option<String>,
}

/// Stop a running warren tunnel cleanly (listeners close, open connections get 5 s).
#[derive(Debug, Parser)]
#[command(name = "warren stop")]
pub struct StopArgs {
    /// The tunnel to stop: a pid, the destination as given, host, user@host, Tag or
    /// ControlPath. Without it, stops the only running tunnel; with several, lists them
    /// and exits 2.
    #[arg(value_name = "PID|NAME", conflicts_with = "all")]
    pub target: Option<String>,

    /// Stop every running tunnel.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Shell {
    Bash,
    Zsh,
    Fish,
}

/// Print a shell completion script (e.g. `warren completions bash > /etc/bash_completion.d/warren`).
#[derive(Debug, Parser)]
#[command(name = "warren completions")]
pub struct CompletionsArgs {
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Print the manual page (roff), e.g. `warren man | man -l -`; `warren man status` prints
/// warren-status(1), and so on.
#[derive(Debug, Parser)]
#[command(name = "warren man")]
pub struct ManArgs {
    #[arg(value_name = "SUBCOMMAND", value_parser = ["status", "stop", "completions", "man"])]
    pub page: Option<String>,
}

/// The full command, subcommands included, for the manual page and completions.
pub fn full_command() -> clap::Command {
    Cli::command()
        .subcommand(StatusArgs::command().name("status"))
        .subcommand(StopArgs::command().name("stop"))
        .subcommand(CompletionsArgs::command().name("completions"))
        .subcommand(ManArgs::command().name("man"))
        .subcommand_negates_reqs(true)
}

/// Runs a subcommand: `None` when `args[1]` is not one.
pub fn command(args: &[String]) -> Option<u8> {
    let verb = args.get(1)?.as_str();
    if !matches!(verb, "status" | "stop" | "completions" | "man") {
        return None;
    }
    let rest = std::iter::once(format!("warren {verb}")).chain(args[2..].iter().cloned());
    let parsed = match verb {
        "status" => StatusArgs::try_parse_from(rest).map(Sub::Status),
        "stop" => StopArgs::try_parse_from(rest).map(Sub::Stop),
        "completions" => CompletionsArgs::try_parse_from(rest).map(Sub::Completions),
        _ => ManArgs::try_parse_from(rest).map(Sub::Man),
    };
    let sub = match parsed {
        Ok(s) => s,
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return Some(code);
        }
    };
    Some(match sub {
        Sub::Completions(a) => {
            let mut cmd = full_command();
            let mut buf = Vec::new();
            match a.shell {
                Shell::Bash => clap_complete::generate(
                    clap_complete::Shell::Bash,
                    &mut cmd,
                    "warren",
                    &mut buf,
                ),
                Shell::Zsh => {
                    clap_complete::generate(clap_complete::Shell::Zsh, &mut cmd, "warren", &mut buf)
                }
                Shell::Fish => clap_complete::generate(
                    clap_complete::Shell::Fish,
                    &mut cmd,
                    "warren",
                    &mut buf,
                ),
            }
            print(&String::from_utf8_lossy(&buf));
            0
        }
        Sub::Man(a) => {
            let full = full_command();
            let page = match a.page.as_deref() {
                None => full,
                Some(name) => match full.find_subcommand(name) {
                    Some(sub) => {
                        let title: &'static str = match name {
                            "status" => "warren-status",
                            "stop" => "warren-stop",
                            "completions" => "warren-completions",
                            _ => "warren-man",
                        };
                        sub.clone().name(title)
                    }
                    None => return Some(2),
                },
            };
            let mut buf = Vec::new();
            if let Err(e) = clap_mangen::Man::new(page).render(&mut buf) {
                eprintln!("warren man: {e}");
                return Some(1);
            }
            print(&String::from_utf8_lossy(&buf));
            0
        }
        sub => {
            let runtime = match super::runtime() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("warren: cannot start the async runtime: {e}");
                    return Some(1);
                }
            };
            runtime.block_on(async {
                match sub {
                    Sub::Status(a) => status(a).await,
                    Sub::Stop(a) => stop(a).await,
                    _ => 2,
                }
            })
        }
    })
}

enum Sub {
    Status(StatusArgs),
    Stop(StopArgs),
    Completions(CompletionsArgs),
    Man(ManArgs),
}

async fn status(a: StatusArgs) -> u8 {
    let all = control::running().await;
    if let Some(name) = &a.check {
        let picked: Vec<&TunnelStatus> = all
            .iter()
            .map(|(_, s)| s)
            .filter(|s| control::matches(s, name))
            .collect();
        if picked.is_empty() {
            eprintln!("warren status --check: no running warren tunnel {name}");
            return 2;
        }
        let healthy = picked.iter().all(|s| s.healthy);
        if a.json {
            let list: Vec<&TunnelStatus> = picked.clone();
            print(&format!(
                "{}\n",
                serde_json::to_string_pretty(&list).unwrap_or_default()
            ));
        } else {
            for s in &picked {
                let down: Vec<String> = s
                    .forwards
                    .iter()
                    .filter(|f| !f.up)
                    .map(|f| format!("{} {}", f.kind.flag(), f.spec))
                    .collect();
                let verdict = match (s.connected, down.is_empty()) {
                    (true, true) => "ok".to_string(),
                    (false, _) => "not connected (reconnecting)".to_string(),
                    (true, false) => format!("forwards not up: {}", down.join(", ")),
                };
                print(&format!("warren {} {}: {verdict}\n", s.pid, s.name));
            }
        }
        return if healthy { 0 } else { 1 };
    }
    let list: Vec<&TunnelStatus> = all
        .iter()
        .map(|(_, s)| s)
        .filter(|s| a.name.as_deref().is_none_or(|n| control::matches(s, n)))
        .collect();
    if a.json {
        print(&format!(
            "{}\n",
            serde_json::to_string_pretty(&list).unwrap_or_default()
        ));
        return 0;
    }
    if list.is_empty() {
        match &a.name {
            Some(n) => eprintln!("no running warren tunnel {n}"),
            None => eprintln!("no running warren tunnel"),
        }
        return 1;
    }
    let text: String = list.iter().map(|s| control::render(s)).collect();
    print(&text);
    0
}

async fn stop(a: StopArgs) -> u8 {
    let all = control::running().await;
    let picked: Vec<&(std::path::PathBuf, TunnelStatus)> = match &a.target {
        Some(name) => all
            .iter()
            .filter(|(_, s)| control::matches(s, name))
            .collect(),
        None => all.iter().collect(),
    };
    if picked.is_empty() {
        match &a.target {
            Some(n) => eprintln!("no running warren tunnel {n}"),
            None => eprintln!("no running warren tunnel"),
        }
        return 1;
    }
    if picked.len() > 1 && !a.all {
        eprintln!(
            "{} warren tunnels are running{}; name one (pid, destination or Tag) or use --all:",
            picked.len(),
            a.target
                .as_deref()
                .map(|n| format!(" for {n}"))
                .unwrap_or_default()
        );
        for (_, s) in &picked {
            eprintln!("  {} {} -> {}", s.pid, s.name, s.destination);
        }
        return 2;
    }
    let mut status = 0;
    for (path, s) in picked {
        match control::request(
            path,
            &Request {
                op: "stop".into(),
                kind: None,
                spec: None,
            },
        )
        .await
        {
            Ok(r) if r.ok => print(&format!("stopping warren {} ({})\n", s.pid, s.name)),
            Ok(r) => {
                eprintln!("warren {}: {}", s.pid, r.error.unwrap_or_default());
                status = 1;
            }
            Err(e) => {
                eprintln!("warren {}: {e}", s.pid);
                status = 1;
            }
        }
    }
    status
}
