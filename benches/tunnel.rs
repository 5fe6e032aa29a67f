//! Tunnel benchmark (issue #6): OpenSSH ssh and warren against OpenSSH sshd
//! and warrend, and a direct connection as the upper bound, through one
//! forward on loopback.
//!
//! `cargo bench --bench tunnel` runs everything (about 17-22 minutes on two
//! cores); `cargo bench --bench tunnel -- --smoke` is a functional run in
//! well under a minute that exits non-zero only when a path does not work,
//! never because of a timing. `-- --help` lists the options. Method and
//! results: docs/benchmark.md. The report goes to stdout and to
//! target/bench-report.md.
//!
//! Every process (a private sshd, warrend, ssh, warren) is started and
//! stopped here, on 127.0.0.1 with ephemeral ports and temporary
//! directories; the target servers (echo, source, sink) run in this process.

#[path = "tunnel/ceiling.rs"]
mod ceiling;
#[path = "tunnel/clients.rs"]
mod clients;
#[path = "tunnel/cluster_rig.rs"]
mod cluster_rig;
#[path = "tunnel/engine_session.rs"]
mod engine_session;
#[path = "tunnel/env.rs"]
mod env;
#[path = "tunnel/floor.rs"]
mod floor;
#[path = "tunnel/link.rs"]
mod link;
#[path = "tunnel/netlab.rs"]
mod netlab;
#[path = "tunnel/opts.rs"]
mod opts;
#[path = "tunnel/outage.rs"]
mod outage;
#[path = "tunnel/phases/mod.rs"]
mod phases;
#[path = "tunnel/procs.rs"]
mod procs;
#[path = "tunnel/report.rs"]
mod report;
#[path = "tunnel/rig.rs"]
mod rig;
#[path = "tunnel/route.rs"]
mod route;
#[path = "tunnel/scenarios/mod.rs"]
mod scenarios;
#[path = "tunnel/servers.rs"]
mod servers;
#[path = "tunnel/stats.rs"]
mod stats;
#[path = "tunnel/targets.rs"]
mod targets;

use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};

use crate::opts::{Options, Phase, format_ms, format_size};
use crate::phases::Bench;
use crate::targets::{EchoHelper, Pattern, Targets};

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some(targets::HELPER_ARG) {
        return match targets::EchoHelper::main() {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("echo helper: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    if let Some(role) = std::env::args()
        .nth(1)
        .filter(|a| [floor::CLIENT_ARG, floor::SERVER_ARG].contains(&a.as_str()))
    {
        let args: Vec<String> = std::env::args().skip(2).collect();
        return match floor::main(&role, &args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{role}: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    match run() {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("benchmark failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Runs every phase; `Ok(false)` when some path did not work.
fn run() -> Result<bool> {
    let opts = Options::parse(std::env::args().skip(1))?;
    let started = Instant::now();
    // Set before any child starts, so that they all inherit it.
    let nofile = procs::raise_nofile(opts.fds().max(65_536));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("tokio runtime")?;
    let env = env::Env::new()?;
    eprintln!("preparing a {} payload...", format_size(opts.max_payload()));
    let pattern = Arc::new(Pattern::new(opts.max_payload()));
    let sink_capacity = opts.bulk_size.max(opts.side_bulk_size);
    let helper = EchoHelper::start().context("echo helper process")?;
    let targets = rt.block_on(Targets::start(pattern, sink_capacity, &helper))?;

    let mut bench = Bench::new(opts.clone(), env, rt, targets);
    bench.report.header = header(&opts, nofile);
    let step = |name: &str| eprintln!("[{:>5.0} s] {name}", started.elapsed().as_secs_f64());
    for phase in &opts.phases {
        step(phase.name());
        match phase {
            Phase::Openssl => bench.ceiling(),
            Phase::Startup => bench.startup(),
            Phase::Path(p) => bench.path(*p),
            Phase::Floor => bench.floor(),
            Phase::Link => bench.link(),
            Phase::Wan => bench.wan(),
            Phase::Slow => bench.slow_reader(),
            Phase::Consumer => bench.consumer(),
            Phase::Concurrency => bench.concurrency(),
            Phase::Many => bench.many(),
            Phase::Reconnect => bench.reconnect(),
            Phase::Subnet => bench.subnet(),
            Phase::Cluster => bench.cluster(),
        }
    }
    step("done");

    let elapsed = started.elapsed().as_secs_f64();
    bench
        .report
        .header
        .push(format!("\nTotal run time: {elapsed:.0} s."));
    let text = bench.report.markdown(&opts.pairs);
    println!("{text}");
    if let Some(dir) = opts.report.parent() {
        let _ = std::fs::create_dir_all(dir);
    }
    std::fs::write(&opts.report, &text)
        .with_context(|| format!("write {}", opts.report.display()))?;
    eprintln!("report written to {}", opts.report.display());
    Ok(bench.report.errors.is_empty())
}

/// What the figures were measured on.
fn header(opts: &Options, nofile: u64) -> Vec<String> {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name")?.split(':').nth(1))
                .map(|s| s.trim().to_string())
        })
        .unwrap_or_default();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    // Other work on the machine skews every figure; say how busy it was.
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    let ssh = first_line("ssh", &["-V"]);
    let rev = first_line(
        "git",
        &[
            "-C",
            env!("CARGO_MANIFEST_DIR"),
            "describe",
            "--always",
            "--dirty",
        ],
    );
    let mode = if opts.smoke { "smoke" } else { "full" };
    vec![
        format!("## Tunnel benchmark ({mode} run)"),
        String::new(),
        format!(
            "Machine: {cpu}, {cores} cores, Linux {}; {ssh}; warren {rev}; open-file limit {nofile}; load average at start {}.",
            kernel.trim(),
            load.join(" ")
        ),
        format!(
            "Sizes: -L bulk {} each way, -D/-R bulk {}, {} runs; setup {} connections; latency {} × {}-byte messages; {} client starts; link {} connections across a {} ms round trip.",
            format_size(opts.bulk_size),
            format_size(opts.side_bulk_size),
            opts.runs,
            opts.setup_conns,
            opts.latency_msgs,
            opts.msg_size,
            opts.startup_reps,
            opts.link_conns,
            format_ms(opts.link_rtt),
        ),
        "Cells: median value (×ratio to ssh→sshd of the same run). ↑ higher is better, ↓ lower is better.".to_string(),
    ]
}

/// First line a tool prints (on stdout or stderr), e.g. `ssh -V`.
fn first_line(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()
        .map(|o| {
            let mut t = String::from_utf8_lossy(&o.stdout).into_owned();
            t.push_str(&String::from_utf8_lossy(&o.stderr));
            t.lines().next().unwrap_or_default().trim().to_string()
        })
        .unwrap_or_default()
}
