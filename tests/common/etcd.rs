//! A real etcd (`/usr/bin/etcd`, Debian's etcd-server) for the cluster tests: one member on
//! 127.0.0.1, free client and peer ports, its own temporary data dir, killed on drop.
//!
//! `stop()` then `start()` restarts it on the same ports and data dir, which is what an etcd
//! outage looks like to warrend (same cluster, same revisions, leases kept).
//!
//! ```ignore
//! let etcd = common::etcd::Etcd::start();
//! let endpoint = etcd.endpoint();          // "http://127.0.0.1:PORT"
//! etcd.stop();                             // outage
//! etcd.start_again();                      // back, same data
//! ```

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use super::{Proc, free_port};

pub const ETCD: &str = "/usr/bin/etcd";

/// etcd starts in well under a second here; the margin is for a loaded CI machine.
const START_TIMEOUT: Duration = Duration::from_secs(20);
/// Attempts at a fresh start when a chosen free port was taken before etcd bound it.
const START_ATTEMPTS: usize = 5;

pub struct Etcd {
    dir: TempDir,
    client_port: u16,
    peer_port: u16,
    proc: Mutex<Option<Proc>>,
    /// Server certificate, key and the CA that client certificates must chain to.
    tls: Option<Tls>,
}

/// PEM files for [`Etcd::start_tls`].
#[derive(Clone)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub client_ca: PathBuf,
}

impl Etcd {
    /// Starts etcd and waits until `/health` says so.
    pub fn start() -> Etcd {
        Self::start_with(None)
    }

    /// Serves clients over TLS only and requires a client certificate signed by
    /// `tls.client_ca`; ready once the client port accepts connections.
    pub fn start_tls(tls: Tls) -> Etcd {
        Self::start_with(Some(tls))
    }

    fn start_with(tls: Option<Tls>) -> Etcd {
        let mut last = String::new();
        for _ in 0..START_ATTEMPTS {
            let etcd = Etcd {
                dir: tempfile::tempdir().expect("etcd temp dir"),
                client_port: free_port(),
                peer_port: free_port(),
                proc: Mutex::new(None),
                tls: tls.clone(),
            };
            match etcd.launch() {
                Ok(()) => return etcd,
                Err(e) => last = e,
            }
        }
        panic!("etcd did not start in {START_ATTEMPTS} attempts: {last}");
    }

    /// `http://127.0.0.1:PORT` (`https://` with TLS), what `EtcdSettings::endpoints` wants.
    pub fn endpoint(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        format!("{scheme}://127.0.0.1:{}", self.client_port)
    }

    pub fn client_port(&self) -> u16 {
        self.client_port
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// SIGKILL (an outage, not a clean shutdown); returns once the process is gone, so the
    /// port refuses connections.
    pub fn stop(&self) {
        if let Some(p) = self.proc.lock().unwrap().take() {
            p.kill();
        }
    }

    /// Starts it again on the same ports and data dir after [`Etcd::stop`].
    pub fn start_again(&self) {
        if let Err(e) = self.launch() {
            panic!("etcd did not come back: {e}");
        }
    }

    fn launch(&self) -> Result<(), String> {
        let client = self.endpoint();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let mut cmd = Command::new(ETCD);
        cmd.arg("--name=test")
            .arg(format!("--data-dir={}", self.data_dir().display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .arg("--initial-cluster-state=new")
            // Its log goes to stderr, which failure reports print.
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .env_remove("ETCD_DATA_DIR");
        if let Some(tls) = &self.tls {
            cmd.arg(format!("--cert-file={}", tls.cert.display()))
                .arg(format!("--key-file={}", tls.key.display()))
                .arg(format!("--trusted-ca-file={}", tls.client_ca.display()))
                .arg("--client-cert-auth");
        }
        let proc = Proc::spawn(cmd);
        let deadline = Instant::now() + START_TIMEOUT;
        let mut pause = Duration::from_millis(10);
        loop {
            if let Some(status) = proc.try_wait() {
                return Err(proc.report(&format!("etcd exited early ({status})")));
            }
            if self.healthy() {
                *self.proc.lock().unwrap() = Some(proc);
                return Ok(());
            }
            if Instant::now() > deadline {
                let report = proc.report("etcd not healthy in time");
                proc.kill();
                return Err(report);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// `GET /health` answers `{"health":"true"}` once etcd has a leader and serves requests.
    /// With TLS (no HTTP client here) a connectable port has to do.
    fn healthy(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.client_port)) else {
            return false;
        };
        if self.tls.is_some() {
            return true;
        }
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let req = "GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut body = String::new();
        let _ = s.read_to_string(&mut body);
        body.contains("\"health\":\"true\"")
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}
