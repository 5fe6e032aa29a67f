//! The subnet phase (issue 15): a whole private subnet reached through one bastion, the
//! ways people do it today and warren's, side by side in one run: sshuttle, warren
//! --route (transparent: nftables redirect), ssh -D with the benchmark as SOCKS client,
//! warren -L (the same tunnel with explicit ports), and the bastion simply routing
//! (direct, no tunnel) as the upper bound.
//!
//! Three namespaces of the run's own (see [`crate::netlab`]); the targets (a source and an
//! echo) run in the private one, the measuring threads in the client one, so the client
//! reaches the targets only through whatever is being measured (checked before the
//! tunnels run: with routing off, a direct connect must fail).

use std::fmt::Write as _;
use std::fs;
use std::net::SocketAddrV4;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Bench;
use crate::env::Env;
use crate::netlab::{BASTION_ADDR, Lab, Ns, PRIVATE_ADDR, PRIVATE_NET};
use crate::procs::{Proc, Stream};
use crate::stats::median;

const SOURCE_PORT: u16 = 7100;
const ECHO_PORT: u16 = 7101;
/// -L and -D ports inside the client namespace (its own port space).
const L_SOURCE: u16 = 1100;
const L_ECHO: u16 = 1101;
const SOCKS: u16 = 1080;
const PARALLEL: usize = 100;
const START: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    Direct,
    /// sshuttle as installed (latency control on: it trades bandwidth for latency).
    Sshuttle,
    /// sshuttle --no-latency-control: its bandwidth setting (ratios are to the faster of the two).
    SshuttleFast,
    WarrenRoute,
    SshSocks,
    WarrenL,
}

impl Mode {
    const ALL: [Mode; 6] = [
        Mode::Direct,
        Mode::Sshuttle,
        Mode::SshuttleFast,
        Mode::WarrenRoute,
        Mode::SshSocks,
        Mode::WarrenL,
    ];

    /// The name `--subnet-modes` uses.
    fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Sshuttle => "sshuttle",
            Mode::SshuttleFast => "sshuttle-fast",
            Mode::WarrenRoute => "route",
            Mode::SshSocks => "socks",
            Mode::WarrenL => "L",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Mode::Direct => "direct (routed)",
            Mode::Sshuttle => "sshuttle",
            Mode::SshuttleFast => "sshuttle --no-latency-control",
            Mode::WarrenRoute => "warren --route",
            Mode::SshSocks => "ssh -D + SOCKS",
            Mode::WarrenL => "warren -L",
        }
    }

    /// How the measuring side reaches a target port.
    fn reach(self) -> Reach {
        match self {
            Mode::Direct | Mode::Sshuttle | Mode::SshuttleFast | Mode::WarrenRoute => {
                Reach::Address
            }
            Mode::SshSocks => Reach::Socks,
            Mode::WarrenL => Reach::Forwarded,
        }
    }
}

#[derive(Clone, Copy)]
enum Reach {
    /// The target's own address, as any program would (transparent modes).
    Address,
    /// SOCKS5 CONNECT to the target's address through 127.0.0.1:SOCKS.
    Socks,
    /// 127.0.0.1:L_SOURCE / L_ECHO.
    Forwarded,
}

#[derive(Clone, Copy)]
struct Sizes {
    /// Each measurement stops here even if its count is not reached (a slow mode).
    limit: Duration,
    bulk: u64,
    setups: usize,
    parallel_each: u64,
    reps: usize,
}

#[derive(Default)]
struct Figures {
    bulk: Vec<f64>,
    setup: Vec<f64>,
    parallel: Vec<f64>,
}

impl Bench {
    pub fn subnet(&mut self) {
        match self.subnet_run() {
            Ok(table) => self.report.notes.push(table),
            Err(e) => self.report.errors.push(format!("subnet: {e:#}")),
        }
    }

    fn subnet_run(&mut self) -> Result<String> {
        let modes: Vec<Mode> = if self.opts.subnet_modes.is_empty() {
            Mode::ALL.to_vec()
        } else {
            let mut modes = Vec::new();
            for name in &self.opts.subnet_modes {
                match Mode::ALL.iter().find(|m| m.name() == name) {
                    Some(m) => modes.push(*m),
                    None => bail!(
                        "--subnet-modes: unknown mode {name:?} (direct, sshuttle, sshuttle-fast, route, socks, L)"
                    ),
                }
            }
            modes
        };
        for tool in ["sshuttle", "nft"] {
            if which(tool).is_none() {
                bail!("{tool} is not installed (apt-get install sshuttle nftables)");
            }
        }
        let sizes = if self.opts.smoke {
            Sizes {
                limit: Duration::from_secs(5),
                bulk: 4 << 20,
                setups: 20,
                parallel_each: 64 << 10,
                reps: 1,
            }
        } else {
            Sizes {
                limit: Duration::from_secs(10),
                bulk: 512 << 20,
                setups: self.opts.setup_conns,
                parallel_each: 2 << 20,
                reps: self.opts.runs,
            }
        };
        let lab = Lab::new()?;
        let _targets = lab.private.thread(serve_targets);
        let _sshd = start_sshd(&self.env, &lab)?;
        // Rounds: one sample of every mode, then the next. On a shared 2-core machine
        // the speed of everything drifts by ×2 over minutes; taking all samples of one
        // mode before the next would turn that drift into a difference between modes.
        let mut results: Vec<(Mode, Result<Figures>)> =
            modes.iter().map(|&m| (m, Ok(Figures::default()))).collect();
        for _ in 0..sizes.reps {
            for (mode, figures) in results.iter_mut() {
                let Ok(f) = figures else { continue };
                match self.subnet_mode(&lab, *mode, sizes) {
                    Ok((b, s, p)) => {
                        f.bulk.push(b);
                        f.setup.push(s);
                        f.parallel.push(p);
                    }
                    Err(e) => {
                        self.report
                            .errors
                            .push(format!("subnet {}: {e:#}", mode.label()));
                        *figures = Err(e);
                    }
                }
            }
        }
        Ok(table(&results, sizes))
    }

    /// One sample of `mode`: its client started, bulk, setup and parallel measured, and
    /// the client stopped with its rules gone.
    fn subnet_mode(&self, lab: &Lab, mode: Mode, sizes: Sizes) -> Result<(f64, f64, f64)> {
        lab.set_routing(mode == Mode::Direct)?;
        if mode != Mode::Direct {
            // Nothing but the tunnel may reach the private net.
            let reached = on(&lab.client, async {
                tokio::time::timeout(
                    Duration::from_secs(1),
                    TcpStream::connect(SocketAddrV4::new(PRIVATE_ADDR, ECHO_PORT)),
                )
                .await
                .is_ok_and(|r| r.is_ok())
            })?;
            if reached {
                bail!(
                    "the private net is reachable without a tunnel: the run would measure nothing"
                );
            }
        }
        let client = start_client(&self.env, lab, mode)?;
        // A local port must also accept before the clock starts (ssh's "listening"
        // line has been seen a moment before its port took connections).
        let local = match mode.reach() {
            Reach::Socks => Some(SOCKS),
            Reach::Forwarded => Some(L_SOURCE),
            Reach::Address => None,
        };
        if let Some(port) = local {
            let up = on(&lab.client, async move {
                let until = Instant::now() + START;
                while Instant::now() < until {
                    if TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                        return true;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                false
            })?;
            if !up {
                bail!(
                    "{} said it was ready, but port {port} never accepted",
                    mode.label()
                );
            }
        }
        let reach = mode.reach();
        let (b, s, p) = on(&lab.client, async move {
            let b = bulk(reach, sizes.bulk, sizes.limit).await?;
            let s = setup_rate(reach, sizes.setups, sizes.limit).await?;
            let p = parallel(reach, sizes.parallel_each, sizes.limit).await?;
            anyhow::Ok((b, s, p))
        })?
        .with_context(|| match &client {
            Some(c) => c.tail(),
            None => String::new(),
        })?;
        // Each sample on stderr as it comes: the table shows medians only.
        eprintln!(
            "  subnet {}: bulk {b:.0} MiB/s, setup {s:.0}/s, parallel {p:.0} MiB/s",
            mode.label()
        );
        if let Some(c) = client {
            stop_gracefully(c, lab)?;
        }
        if mode == Mode::Direct {
            lab.set_routing(false)?;
        }
        Ok((b, s, p))
    }
}

/// SIGTERM, then waits for the whole process tree to leave and the client namespace's
/// nftables ruleset to be empty: sshuttle removes its rules from a helper process after
/// the main one exits, and a SIGKILL to that helper would leave rules redirecting the
/// next mode's connections to a dead port.
fn stop_gracefully(p: Proc, lab: &Lab) -> Result<()> {
    let mut tree = crate::procs::descendants(p.pid());
    tree.push(p.pid());
    crate::procs::signal(p.pid(), libc::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(10);
    let alive = |pid: i32| !is_zombie(pid);
    while tree.iter().any(|&pid| alive(pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(p);
    let tables = || -> Result<bool> {
        let out = lab
            .client
            .command("nft")
            .args(["list", "tables"])
            .output()?;
        Ok(!String::from_utf8_lossy(&out.stdout).trim().is_empty())
    };
    while tables()? {
        if Instant::now() >= deadline {
            let _ = lab
                .client
                .command("nft")
                .args(["flush", "ruleset"])
                .output();
            bail!("nftables rules were left behind after the client stopped");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Gone or a zombie (exited, not yet reaped): either way, done.
fn is_zombie(pid: i32) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

/// Runs `fut` on a current-thread runtime in a thread inside `ns`.
fn on<T: Send + 'static>(
    ns: &Ns,
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> Result<T> {
    ns.thread(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map(|rt| rt.block_on(fut))
    })
    .join()
    .map_err(|_| anyhow::anyhow!("measuring thread panicked"))??
    .context("runtime")
}

fn which(tool: &str) -> Option<std::path::PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .chain(["/usr/sbin".into(), "/sbin".into()])
            .map(|d| d.join(tool))
            .find(|f| f.is_file())
    })
}

/// The private host: a source (a u64 LE count in, that many bytes out) and an echo, on
/// every address of the namespace, until the process ends.
fn serve_targets() -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let source = TcpListener::bind(("0.0.0.0", SOURCE_PORT)).await?;
        let echo = TcpListener::bind(("0.0.0.0", ECHO_PORT)).await?;
        let chunk: &'static [u8] = Box::leak(vec![0x5a; 1 << 20].into_boxed_slice());
        tokio::spawn(async move {
            while let Ok((mut s, _)) = echo.accept().await {
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    let _ = tokio::io::copy(&mut r, &mut w).await;
                });
            }
        });
        while let Ok((mut s, _)) = source.accept().await {
            tokio::spawn(async move {
                let Ok(mut n) = s.read_u64_le().await else {
                    return;
                };
                while n > 0 {
                    let k = n.min(chunk.len() as u64) as usize;
                    if s.write_all(&chunk[..k]).await.is_err() {
                        return;
                    }
                    n -= k as u64;
                }
                let _ = s.shutdown().await;
            });
        }
        anyhow::Ok(())
    })
}

async fn dial(reach: Reach, port: u16) -> Result<TcpStream> {
    let s = match reach {
        Reach::Address => TcpStream::connect(SocketAddrV4::new(PRIVATE_ADDR, port)).await?,
        Reach::Forwarded => {
            let local = if port == SOURCE_PORT {
                L_SOURCE
            } else {
                L_ECHO
            };
            TcpStream::connect(("127.0.0.1", local)).await?
        }
        Reach::Socks => {
            let mut s = TcpStream::connect(("127.0.0.1", SOCKS))
                .await
                .context("connecting to the SOCKS port")?;
            s.write_all(&[5, 1, 0]).await?;
            let mut m = [0u8; 2];
            s.read_exact(&mut m).await?;
            let [a, b, c, d] = PRIVATE_ADDR.octets();
            let [hi, lo] = port.to_be_bytes();
            s.write_all(&[5, 1, 0, 1, a, b, c, d, hi, lo]).await?;
            let mut reply = [0u8; 10];
            s.read_exact(&mut reply)
                .await
                .context("reading the SOCKS reply")?;
            if m != [5, 0] || reply[1] != 0 {
                bail!("SOCKS5 refused: {m:?} {reply:?}");
            }
            s
        }
    };
    s.set_nodelay(true)?;
    Ok(s)
}

/// Downloads up to `n` bytes, stopping at `until`: a slow mode is measured over the time
/// limit instead of holding the run for minutes. Returns the bytes received.
async fn download(reach: Reach, n: u64, until: Instant) -> Result<u64> {
    let mut s = dial(reach, SOURCE_PORT).await?;
    s.write_u64_le(n).await?;
    let mut buf = vec![0u8; 256 << 10];
    let mut got = 0u64;
    while got < n {
        let k = match tokio::time::timeout_at(until.into(), s.read(&mut buf)).await {
            Ok(r) => r?,
            Err(_) => break,
        };
        if k == 0 {
            bail!("download ended after {got} of {n} bytes");
        }
        got += k as u64;
    }
    Ok(got)
}

fn mib_per_s(bytes: u64, since: Instant) -> f64 {
    bytes as f64 / (1 << 20) as f64 / since.elapsed().as_secs_f64()
}

/// One download, MiB/s.
async fn bulk(reach: Reach, n: u64, limit: Duration) -> Result<f64> {
    let t = Instant::now();
    let got = download(reach, n, t + limit).await?;
    Ok(mib_per_s(got, t))
}

/// New connections per second, one after another, each carrying one echoed byte.
async fn setup_rate(reach: Reach, count: usize, limit: Duration) -> Result<f64> {
    let t = Instant::now();
    let mut done = 0;
    while done < count && t.elapsed() < limit {
        let mut s = dial(reach, ECHO_PORT).await?;
        s.write_all(b"x").await?;
        let mut b = [0u8; 1];
        s.read_exact(&mut b).await?;
        done += 1;
    }
    Ok(done as f64 / t.elapsed().as_secs_f64())
}

/// [`PARALLEL`] downloads at once, MiB/s over all of them.
async fn parallel(reach: Reach, each: u64, limit: Duration) -> Result<f64> {
    let t = Instant::now();
    let mut set = tokio::task::JoinSet::new();
    for _ in 0..PARALLEL {
        set.spawn(download(reach, each, t + limit));
    }
    let mut total = 0;
    while let Some(r) = set.join_next().await {
        total += r??;
    }
    Ok(mib_per_s(total, t))
}

/// OpenSSH's sshd on the bastion, its SSH port reachable from the client namespace.
fn start_sshd(env: &Env, lab: &Lab) -> Result<Proc> {
    let dir = env.subdir("subnet-sshd")?;
    fs::create_dir_all("/run/sshd").context("create /run/sshd")?;
    let authorized = dir.join("authorized_keys");
    fs::write(&authorized, format!("{}\n", env.public_line))?;
    let config = dir.join("sshd_config");
    fs::write(
        &config,
        format!(
            "ListenAddress {BASTION_ADDR}:22\nHostKey {}\nPidFile none\nAuthorizedKeysFile {}\n\
             StrictModes no\nUsePAM no\nPermitRootLogin yes\nPasswordAuthentication no\n\
             AllowTcpForwarding yes\nMaxSessions 10000\nMaxStartups 10000\nLogLevel INFO\n",
            env.sshd_host_key.display(),
            authorized.display()
        ),
    )?;
    let mut cmd = lab.bastion.command("/usr/sbin/sshd");
    cmd.arg("-D").arg("-e").arg("-f").arg(&config);
    let proc = Proc::spawn(cmd)?;
    proc.wait_line(Stream::Stderr, START, |l| {
        l.starts_with("Server listening on")
    })
    .context("the bastion's sshd did not start")?;
    Ok(proc)
}

/// The ssh options every client here uses: the run's key, no host key prompts (and for
/// sshuttle's ssh, quiet).
fn ssh_options(env: &Env, quiet: bool) -> Vec<String> {
    let mut o = vec![
        "-i".into(),
        env.key.display().to_string(),
        "-o".into(),
        "StrictHostKeyChecking=no".into(),
        "-o".into(),
        "UserKnownHostsFile=/dev/null".into(),
        "-o".into(),
        "BatchMode=yes".into(),
    ];
    if quiet {
        o.extend(["-o".into(), "LogLevel=ERROR".into()]);
    }
    o
}

/// What says a client is up.
type ReadyLine = Box<dyn Fn(&str) -> bool>;

fn start_client(env: &Env, lab: &Lab, mode: Mode) -> Result<Option<Proc>> {
    let dest = format!("{}@{BASTION_ADDR}", env.user);
    let (mut cmd, ready): (std::process::Command, ReadyLine) = match mode {
        Mode::Direct => return Ok(None),
        Mode::Sshuttle | Mode::SshuttleFast => {
            let mut c = lab.client.command("sshuttle");
            let ssh = format!("ssh {}", ssh_options(env, true).join(" "));
            c.args(["--method", "nft", "-e", &ssh, "-r", &dest, PRIVATE_NET]);
            if mode == Mode::SshuttleFast {
                c.arg("--no-latency-control");
            }
            (c, Box::new(|l: &str| l.contains("Connected to server")))
        }
        Mode::WarrenRoute | Mode::WarrenL => {
            let mut c = lab.client.command(&env.warren);
            c.env("HOME", &env.home).env_remove("RUST_LOG").arg("-v");
            c.args(ssh_options(env, false));
            if mode == Mode::WarrenRoute {
                c.args(["--route", PRIVATE_NET]);
            } else {
                c.arg("-L")
                    .arg(format!("127.0.0.1:{L_SOURCE}:{PRIVATE_ADDR}:{SOURCE_PORT}"))
                    .arg("-L")
                    .arg(format!("127.0.0.1:{L_ECHO}:{PRIVATE_ADDR}:{ECHO_PORT}"));
            }
            c.arg(&dest);
            (c, Box::new(|l: &str| l.contains("ready: connected to")))
        }
        Mode::SshSocks => {
            let mut c = lab.client.command("ssh");
            c.env("HOME", &env.home).arg("-v").arg("-N");
            c.args(ssh_options(env, false));
            c.arg("-D").arg(format!("127.0.0.1:{SOCKS}")).arg(&dest);
            let want = format!("listening on 127.0.0.1 port {SOCKS}");
            (c, Box::new(move |l: &str| l.contains(&want)))
        }
    };
    cmd.stdin(std::process::Stdio::null());
    let proc = Proc::spawn(cmd)?;
    proc.wait_line(Stream::Stderr, START, ready)
        .with_context(|| format!("{} did not come up", mode.label()))?;
    Ok(Some(proc))
}

fn table(results: &[(Mode, Result<Figures>)], sizes: Sizes) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "\n### Subnet: client → bastion → private net (network namespaces; ratios vs the faster sshuttle setting of each row)\n"
    );
    let _ = write!(out, "| metric |");
    for (m, _) in results {
        let _ = write!(out, " {} |", m.label());
    }
    let _ = write!(out, "\n| --- |");
    for _ in results {
        let _ = write!(out, " ---: |");
    }
    out.push('\n');
    type Pick = fn(&Figures) -> &Vec<f64>;
    let rows: [(String, Pick); 3] = [
        (
            format!(
                "one download (up to {} MiB or {} s), MiB/s ↑",
                sizes.bulk >> 20,
                sizes.limit.as_secs()
            ),
            |f| &f.bulk,
        ),
        (
            format!(
                "connection setup (up to {} in a row), per s ↑",
                sizes.setups
            ),
            |f| &f.setup,
        ),
        (
            format!(
                "{PARALLEL} parallel downloads (up to {} KiB each), MiB/s ↑",
                sizes.parallel_each >> 10
            ),
            |f| &f.parallel,
        ),
    ];
    let value = |m: Mode, pick: Pick| -> Option<f64> {
        results.iter().find(|(x, _)| *x == m).and_then(|(_, r)| {
            r.as_ref()
                .ok()
                .and_then(|f| median(pick(f).iter().map(|v| Some(*v))))
        })
    };
    for (name, pick) in &rows {
        let pick = *pick;
        let _ = write!(out, "| {name} |");
        // The faster of sshuttle's two settings in this row: the harder baseline.
        let reference = [Mode::Sshuttle, Mode::SshuttleFast]
            .into_iter()
            .filter_map(|m| value(m, pick).map(|v| (m, v)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        for (m, _) in results {
            let cell = match (value(*m, pick), reference) {
                (Some(v), Some((rm, r))) if *m != rm && r > 0.0 => {
                    format!("{} (×{:.2})", crate::report::format_num(v), v / r)
                }
                (Some(v), _) => crate::report::format_num(v),
                (None, _) => "–".into(),
            };
            let _ = write!(out, " {cell} |");
        }
        out.push('\n');
    }
    // The issue's second target: transparent routing within 10 % of explicit -L.
    let mut vs_l = Vec::new();
    for (name, pick) in &rows {
        if let (Some(route), Some(l)) =
            (value(Mode::WarrenRoute, *pick), value(Mode::WarrenL, *pick))
        {
            let short = name.split(',').next().unwrap_or(name);
            vs_l.push(format!("{short} ×{:.2}", route / l));
        }
    }
    if !vs_l.is_empty() {
        let _ = writeln!(
            out,
            "\nwarren --route relative to warren -L: {}.",
            vs_l.join("; ")
        );
    }
    out
}
