//! What warren knows about particular servers, keyed by their identification line, as
//! OpenSSH's own compat flags are.

/// Whether the server sends small packets without waiting for earlier ones to be
/// acknowledged. sshd leaves Nagle's algorithm on for sessions without a terminal; warrend
/// sets TCP_NODELAY. Only servers known to do so are named: assuming it wrongly costs a
/// round trip (see `forward::spare`), assuming it not costs only a missed speed-up.
pub fn sends_at_once(server_id: &str) -> bool {
    server_id
        .strip_prefix("SSH-2.0-")
        .is_some_and(|software| software.starts_with("warrend_"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_warrend_is_known_to_send_at_once() {
        assert!(sends_at_once("SSH-2.0-warrend_0.1.0"));
        assert!(!sends_at_once("SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3"));
        assert!(!sends_at_once("SSH-2.0-russh_0.65.1"));
        assert!(!sends_at_once("SSH-2.0-dropbear_2022.83"));
        assert!(!sends_at_once("SSH-2.0-OpenSSH warrend_1"));
        assert!(!sends_at_once(""));
    }
}
