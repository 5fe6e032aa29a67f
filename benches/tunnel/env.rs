//! What every process of the run shares: one temporary directory, the user
//! key every client logs in with, the host keys, and the binaries.

use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use tempfile::TempDir;

/// The private world of one benchmark run; removed when dropped.
pub struct Env {
    dir: TempDir,
    /// The local user name: sshd logs in as this user, warrend has a
    /// `[users.NAME]` section of the same name, so both clients run the
    /// same command line against either server.
    pub user: String,
    /// Client private key (ed25519, no passphrase).
    pub key: PathBuf,
    /// Its public line, for authorized_keys and warrend's `keys`.
    pub public_line: String,
    /// sshd's host key, generated once and reused by every sshd start.
    pub sshd_host_key: PathBuf,
    /// HOME for warren, so it never reads the real ~/.ssh.
    pub home: PathBuf,
    /// Copies of the binaries cargo built, taken at the start: a rebuild in
    /// target/ during the run must not change what later phases measure.
    pub warren: PathBuf,
    pub warrend: PathBuf,
}

impl Env {
    pub fn new() -> Result<Env> {
        let dir = tempfile::Builder::new()
            .prefix("warren-bench-")
            .tempdir()
            .context("create temp dir")?;
        let home = dir.path().join("home");
        fs::create_dir_all(home.join(".ssh")).context("create HOME/.ssh")?;
        fs::set_permissions(home.join(".ssh"), fs::Permissions::from_mode(0o700))?;
        let key = home.join(".ssh/id_ed25519");
        let public_line = keygen(&key)?;
        let sshd_host_key = dir.path().join("ssh_host_ed25519_key");
        keygen(&sshd_host_key)?;
        let bin = dir.path().join("bin");
        fs::create_dir_all(&bin)?;
        let warren = snapshot(env!("CARGO_BIN_EXE_warren"), &bin)?;
        let warrend = snapshot(env!("CARGO_BIN_EXE_warrend"), &bin)?;
        Ok(Env {
            user: whoami::username(),
            key,
            public_line,
            sshd_host_key,
            home,
            warren,
            warrend,
            dir,
        })
    }

    /// A fresh subdirectory of the run's temp dir.
    pub fn subdir(&self, name: &str) -> Result<PathBuf> {
        let mut n = 0;
        loop {
            let p = self.dir.path().join(format!("{name}-{n}"));
            if !p.exists() {
                fs::create_dir_all(&p)?;
                return Ok(p);
            }
            n += 1;
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Copies `binary` into `dir` (keeping its name and mode).
fn snapshot(binary: &str, dir: &Path) -> Result<PathBuf> {
    let from = Path::new(binary);
    let to = dir.join(from.file_name().context("binary name")?);
    fs::copy(from, &to).with_context(|| format!("copy {binary}"))?;
    Ok(to)
}

/// A fresh ed25519 key (no passphrase) at `path`; returns its public line.
pub fn keygen(path: &Path) -> Result<String> {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "warren-bench", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .context("run ssh-keygen")?;
    if !out.status.success() {
        bail!(
            "ssh-keygen failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let public = fs::read_to_string(path.with_extension("pub")).context("read the public key")?;
    Ok(public.trim().to_string())
}

/// A port free on 127.0.0.1 right now (for listeners whose port must be
/// given up front: sshd's, ssh's -L). Whoever binds it retries on a clash.
pub fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}
