//! Protocol detection and hostile input: whatever a client sends, the connection ends
//! cleanly, promptly, and without a panic.

use super::testing::*;
use super::{Failure, ProxyConfig, ProxyCredentials};
use crate::forward::OpenError;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

fn quick() -> ProxyConfig {
    ProxyConfig {
        handshake_timeout: Duration::from_millis(200),
        ..Default::default()
    }
}

#[tokio::test]
async fn unknown_first_bytes_are_closed_silently() {
    for first in [0x00u8, 0x01, 0x16, 0x7F, 0xFF, b' ', b'\r', b'1'] {
        let mut h = Harness::start(Default::default());
        h.send(&[first, 1, 2, 3]).await;
        assert!(h.read_all().await.is_empty(), "first byte {first:#x}");
        h.finished().await;
    }
}

#[tokio::test]
async fn silent_and_half_finished_clients_time_out() {
    for bytes in [
        &b""[..],
        &[4][..],
        &[5, 2, 0][..],
        &[5, 1, 0, 5, 1][..],
        &b"GET"[..],
    ] {
        let mut h = Harness::start(quick());
        h.send(bytes).await;
        let got = h.read_all().await;
        assert!(
            got.is_empty() || got == [5, 0] || got.starts_with(b"HTTP/1.1 408 "),
            "{bytes:?}: {got:?}"
        );
        assert!(h.opened().is_empty());
        h.finished().await;
    }
}

/// A tiny deterministic generator: the fuzz cases should be the same on every run.
fn xorshift(state: &mut u64) -> u64 {
    *state ^= *state << 13;
    *state ^= *state >> 7;
    *state ^= *state << 17;
    *state
}

#[tokio::test]
async fn random_garbage_never_panics_or_hangs() {
    let mut seed = 0x9E37_79B9_7F4A_7C15u64;
    let mut tasks = Vec::new();
    for case in 0..300 {
        let len = (xorshift(&mut seed) % 64) as usize;
        let mut bytes: Vec<u8> = (0..len).map(|_| xorshift(&mut seed) as u8).collect();
        // Steer a share of the cases into each protocol's parser.
        if let Some(b) = bytes.first_mut() {
            *b = match case % 4 {
                0 => 4,
                1 => 5,
                2 => b'G',
                _ => *b,
            };
        }
        if case % 8 == 1 && bytes.len() > 3 {
            bytes[1] = 1;
            bytes[2] = 0;
            bytes[3] = 5;
        }
        let auth = (case % 3 == 0).then(creds);
        tasks.push(tokio::spawn(async move {
            let mut h = Harness::start(ProxyConfig { auth, ..quick() });
            h.send(&bytes).await;
            h.client.shutdown().await.unwrap();
            let _ = h.read_all().await;
            h.finished().await;
        }));
    }
    for t in tasks {
        t.await.expect("a garbage case panicked");
    }
}

#[test]
fn failures_are_classified_from_the_reason() {
    let refused = |s: &str| Failure::of(&OpenError::Refused(s.into()));
    assert_eq!(
        refused("administratively prohibited (policy)"),
        Failure::Prohibited
    );
    assert_eq!(
        refused("connect failed (the target refused or is unreachable from the server)"),
        Failure::Refused
    );
    assert_eq!(refused("network unreachable"), Failure::Unreachable);
    assert_eq!(refused("ResourceShortage"), Failure::Refused);
    let timeout = OpenError::Timeout(Duration::from_secs(60));
    assert_eq!(Failure::of(&timeout), Failure::TimedOut);
    assert_eq!(
        Failure::of(&OpenError::Session("gone".into())),
        Failure::Broken
    );
}

#[test]
fn credentials_never_print_the_password() {
    let c = ProxyCredentials::new("user", "hunter2");
    assert!(!format!("{c:?}").contains("hunter2"));
    assert!(c.matches(b"user", b"hunter2"));
    assert!(!c.matches(b"user", b"hunter"));
    assert!(!c.matches(b"user", b"hunter22"));
    assert!(!c.matches(b"use", b"hunter2"));
}
