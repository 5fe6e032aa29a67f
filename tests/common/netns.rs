//! A network namespace owned by one test: created with loopback up, deleted on drop (also
//! when the test fails), with the `/etc/netns/NAME` files `ip netns exec` mounts over
//! `/etc`. Tests that need more than loopback use one of these, never the host's network.
//! Needs root (CI runs as root); creation fails loudly rather than skipping the test.

use std::fs;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct Netns {
    pub name: String,
    etc: PathBuf,
}

impl Netns {
    /// Creates `<prefix>-<pid>-<n>` with loopback up.
    pub fn create(prefix: &str) -> Netns {
        static SEQ: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "{prefix}-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::SeqCst)
        );
        let out = Command::new("ip")
            .args(["netns", "add", &name])
            .output()
            .expect("run `ip` (iproute2)");
        assert!(
            out.status.success(),
            "`ip netns add {name}` failed: {}\nthis test needs root (CAP_SYS_ADMIN) and \
             iproute2, as CI has; it is not skipped",
            String::from_utf8_lossy(&out.stderr).trim()
        );
        let ns = Netns {
            etc: PathBuf::from("/etc/netns").join(&name),
            name,
        };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n <name> ARGS`, which must succeed.
    pub fn ip(&self, args: &[&str]) {
        let out = Command::new("ip")
            .arg("-n")
            .arg(&self.name)
            .args(args)
            .output()
            .expect("run `ip`");
        assert!(
            out.status.success(),
            "ip -n {} {}: {}",
            self.name,
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }

    /// Writes `/etc/netns/<name>/<file>`, which `ip netns exec` shows as `/etc/<file>`
    /// (resolv.conf, hosts) to what it runs.
    pub fn etc_file(&self, file: &str, contents: &str) {
        fs::create_dir_all(&self.etc).expect("create /etc/netns/NAME");
        fs::write(self.etc.join(file), contents)
            .unwrap_or_else(|e| panic!("write /etc/netns/{}/{file}: {e}", self.name));
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        match Command::new("ip")
            .args(["netns", "del", &self.name])
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "ip netns del {}: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => eprintln!("ip netns del {}: {e}", self.name),
        }
        let _ = fs::remove_dir_all(&self.etc);
    }
}
