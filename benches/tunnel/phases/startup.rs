//! The crypto ceiling and the startup phase (cipher, key exchange, time to ready).

use std::collections::HashMap;

use super::Bench;
use crate::ceiling::openssl_speed;
use crate::opts::Pair;
use crate::report::Better;
use crate::scenarios::startup::{self, StartupRun};
use crate::servers::Server;
use crate::stats::median;
use crate::targets::Target;

impl Bench {
    /// `openssl speed` for the two AEAD ciphers SSH negotiates.
    pub fn ceiling(&mut self) {
        let mut lines = vec![
            "### Crypto ceiling (`openssl speed -evp CIPHER -bytes 16384 -seconds 1`, one core)"
                .to_string(),
            String::new(),
            "| cipher | MiB/s |".to_string(),
            "| --- | ---: |".to_string(),
        ];
        for c in ["aes-256-gcm", "chacha20-poly1305"] {
            match openssl_speed(c, 1) {
                Some(v) => lines.push(format!("| {c} | {v:.0} |")),
                None => lines.push(format!("| {c} | (openssl speed failed) |")),
            }
        }
        lines.push(String::new());
        self.report.notes.extend(lines);
    }

    /// Cipher and time to the first forward: one server per pair, the
    /// verbose client started `startup_reps` times against it.
    pub fn startup(&mut self) {
        let section = format!(
            "Startup: time to first -L forward ready (median of {} starts)",
            self.opts.startup_reps
        );
        let mut servers: Vec<(Pair, Server)> = Vec::new();
        for pair in self.tunnel_pairs() {
            let kind = pair.server().expect("tunnel pair");
            match Server::start(&self.env, kind, &self.targets.all_ports()) {
                Ok(s) => servers.push((pair, s)),
                Err(e) => self.error(pair, "startup: server", &e),
            }
        }
        let mut runs: HashMap<Pair, Vec<StartupRun>> = HashMap::new();
        let echo = self.targets.port(Target::Echo);
        for _ in 0..self.opts.startup_reps {
            for (pair, server) in &servers {
                let kind = pair.client().expect("tunnel pair");
                match startup::run(&self.rt, &self.env, kind, server, echo) {
                    Ok(r) => runs.entry(*pair).or_default().push(r),
                    Err(e) => {
                        let e = e.context(server.tail());
                        self.report
                            .errors
                            .push(format!("{} startup: {e:#}", pair.name()));
                    }
                }
            }
        }
        for (pair, rs) in &runs {
            let r = &mut self.report;
            let cipher = rs.iter().find_map(|r| r.cipher.clone());
            r.text(
                &section,
                "negotiated cipher",
                *pair,
                cipher.unwrap_or("?".into()),
            );
            let kex = rs.iter().find_map(|r| r.kex.clone());
            r.text(
                &section,
                "negotiated key exchange",
                *pair,
                kex.unwrap_or("?".into()),
            );
            let ready = median(rs.iter().map(|r| Some(r.ready_ms)));
            r.num(
                &section,
                "spawn → ready line, ms",
                Better::Lower,
                *pair,
                ready,
            );
            let echo = median(rs.iter().map(|r| Some(r.first_echo_ms)));
            r.num(
                &section,
                "spawn → first echo, ms",
                Better::Lower,
                *pair,
                echo,
            );
        }
    }
}
