//! Three network namespaces made for one run (client, bastion, private), joined by veth
//! pairs, for the subnet phase: the client reaches the private net only through the
//! bastion. Addresses exist only inside them; they are deleted on drop.
//!
//! ```text
//! client 10.201.0.1 ──veth── 10.201.0.2 bastion 10.202.0.1 ──veth── 10.202.0.2 private
//! ```

use std::net::Ipv4Addr;
use std::process::Command;

use anyhow::{Context, Result, bail};

pub const BASTION_ADDR: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 2);
pub const PRIVATE_ADDR: Ipv4Addr = Ipv4Addr::new(10, 202, 0, 2);
pub const PRIVATE_NET: &str = "10.202.0.0/24";

/// One namespace, deleted on drop.
pub struct Ns {
    pub name: String,
}

impl Ns {
    fn create(name: String) -> Result<Ns> {
        run(Command::new("ip").args(["netns", "add", &name]))
            .context("ip netns add (the subnet phase needs root and iproute2)")?;
        let ns = Ns { name };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn ip(&self, args: &[&str]) -> Result<()> {
        run(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }

    /// `program` run inside the namespace.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }

    /// Runs `f` on a thread of its own that has entered this namespace: every socket
    /// it makes lives there.
    pub fn thread<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<Result<T>> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            let file = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
                .with_context(|| format!("setns {path}"))?;
            Ok(f())
        })
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

pub struct Lab {
    pub client: Ns,
    pub bastion: Ns,
    pub private: Ns,
}

impl Lab {
    pub fn new() -> Result<Lab> {
        let tag = std::process::id();
        let lab = Lab {
            client: Ns::create(format!("wb-cli-{tag}"))?,
            bastion: Ns::create(format!("wb-bas-{tag}"))?,
            private: Ns::create(format!("wb-prv-{tag}"))?,
        };
        let (c, b, p) = (&lab.client, &lab.bastion, &lab.private);
        c.ip(&[
            "link", "add", "vc0", "type", "veth", "peer", "name", "vb0", "netns", &b.name,
        ])?;
        b.ip(&[
            "link", "add", "vb1", "type", "veth", "peer", "name", "vp0", "netns", &p.name,
        ])?;
        c.ip(&["addr", "add", "10.201.0.1/24", "dev", "vc0"])?;
        b.ip(&["addr", "add", "10.201.0.2/24", "dev", "vb0"])?;
        b.ip(&["addr", "add", "10.202.0.1/24", "dev", "vb1"])?;
        p.ip(&["addr", "add", "10.202.0.2/24", "dev", "vp0"])?;
        for (ns, dev) in [(c, "vc0"), (b, "vb0"), (b, "vb1"), (p, "vp0")] {
            ns.ip(&["link", "set", dev, "up"])?;
        }
        // Replies from the private host to the client when the bastion routes (direct).
        p.ip(&["route", "add", "10.201.0.0/24", "via", "10.202.0.1"])?;
        // The client has a default route, as a laptop does: transparent proxies redirect
        // packets the kernel has already routed. The bastion drops them unless routing.
        c.ip(&["route", "add", "default", "via", "10.201.0.2"])?;
        // Thousands of short connections a second leave as many in TIME_WAIT for 60 s at
        // the side that closed first (the client's, and the bastion's toward the private
        // host). Beyond ~28,000 of them to one destination, connect() runs out of ports
        // and a mode measured late in the run would be slowed by the modes before it
        // (seen: 3,300 connections/s falling to 250). Every namespace reuses them after a
        // second, as loopback already does by default. (Widening the port range instead
        // let connections take the -L and SOCKS ports of the modes after them.)
        for ns in [c, b, p] {
            run(ns
                .command("sysctl")
                .args(["-qw", "net.ipv4.tcp_tw_reuse=1"]))?;
        }
        Ok(lab)
    }

    /// The baseline: the bastion routes the client's packets (no tunnel at all). Off
    /// again before any tunnel is measured, so that only a tunnel can reach the net.
    pub fn set_routing(&self, on: bool) -> Result<()> {
        let v = if on { "1" } else { "0" };
        run(self
            .bastion
            .command("sysctl")
            .args(["-qw", &format!("net.ipv4.ip_forward={v}")]))
    }
}

fn run(cmd: &mut Command) -> Result<()> {
    let out = cmd.output().with_context(|| format!("{cmd:?}"))?;
    if !out.status.success() {
        bail!("{cmd:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}
