//! The crypto ceiling: what OpenSSL encrypts per second on one core with the
//! tunnel's AEAD ciphers. Each byte through a tunnel is encrypted once and
//! decrypted once, so a tunnel on one core per side cannot beat this figure.

use std::process::{Command, Stdio};

/// `openssl speed -evp CIPHER` at 16 KiB blocks (the largest default size,
/// close to SSH's 32 KiB packets), in MiB/s; `None` if openssl is missing.
pub fn openssl_speed(cipher: &str, seconds: u32) -> Option<f64> {
    let out = Command::new("openssl")
        .args([
            "speed",
            "-seconds",
            &seconds.to_string(),
            "-bytes",
            "16384",
            "-evp",
            cipher,
        ])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // The result line: "<cipher>  <N>k" with N in thousands of bytes per second.
    let line = text.lines().rev().find(|l| {
        l.to_ascii_lowercase()
            .starts_with(&cipher.to_ascii_lowercase())
    })?;
    let last = line.split_whitespace().last()?;
    let kbytes: f64 = last.trim_end_matches('k').parse().ok()?;
    Some(kbytes * 1000.0 / 1048576.0)
}
