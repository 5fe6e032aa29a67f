//! Free-form audit reasons mapped onto the few label values the metrics use, so that a
//! series exists per kind of cause rather than per message (messages carry user names,
//! addresses and counts, which would make one series per attacker).
//!
//! The patterns follow the texts the server produces (src/server/connection/,
//! forward/, throttle.rs, listener.rs); the tests below pin them. Anything unmatched
//! lands in the catch-all of its list, never in a new series.

/// Channel kinds. The last entry is the catch-all.
pub const KINDS: &[&str] = &[
    "direct-tcpip",
    "forwarded-tcpip",
    "rendezvous-reach",
    "session",
    "direct-streamlocal",
    "other",
];

/// Why a channel was refused or failed to open.
pub const DENY_REASONS: &[&str] = &[
    "policy",
    "limit",
    "audit",
    "dns",
    "unreachable",
    "unsupported",
    "other",
];
pub const UNREACHABLE: usize = 4;

/// Why a login failed.
pub const AUTH_REASONS: &[&str] = &[
    "key_not_authorized",
    "unknown_user",
    "key_restricted",
    "certificate",
    "bad_signature",
    "weak_algorithm",
    "method_not_offered",
    "throttled",
    "session_limit",
    "audit",
    "other",
];

/// Why a connection was throttled.
pub const THROTTLE_REASONS: &[&str] = &[
    "failed_logins",
    "per_source_unauthenticated",
    "max_unauthenticated",
    "early_drop",
    "penalised",
    "penalty_imposed",
    "other",
];

fn index(list: &[&str], name: &str) -> usize {
    list.iter()
        .position(|k| *k == name)
        .unwrap_or(list.len() - 1)
}

/// Index of `kind` in [`KINDS`].
pub fn kind(kind: &str) -> usize {
    index(KINDS, kind)
}

const AUDIT_REFUSAL: &str = "the audit log cannot be written";

/// Index in [`DENY_REASONS`] for a refused channel; `by_rule` when a configured rule
/// or key option refused it.
pub fn channel_denial(by_rule: bool, reason: &str) -> usize {
    let name = if by_rule {
        "policy"
    } else if reason.starts_with(AUDIT_REFUSAL) {
        "audit"
    } else if reason.starts_with("too many DNS lookups") {
        "limit"
    } else if reason.starts_with("cannot resolve") || reason.starts_with("resolving ") {
        "dns"
    } else if reason.starts_with("too many ")
        || reason.contains("(max_")
        || reason.contains("(limits.")
    {
        "limit"
    } else if reason.starts_with("connect failed")
        || reason.starts_with("nobody publishes")
        || reason.starts_with("the publisher of")
        || reason.starts_with("the client refused")
        || reason.starts_with("the client did not answer")
        || reason.starts_with("the session closed")
    {
        "unreachable"
    } else if reason.contains("not offered by warrend") || reason.starts_with("no shell") {
        "unsupported"
    } else if reason == "port out of range" {
        "other"
    } else {
        // Everything else comes from the policy: deny by default, denied networks, the
        // host's own addresses, key options.
        "policy"
    };
    index(DENY_REASONS, name)
}

/// Index in [`AUTH_REASONS`] for a refused login by `method`.
pub fn auth_failure(method: &str, reason: &str) -> usize {
    let name = if method != "publickey" && method != "certificate" {
        "method_not_offered"
    } else if reason.starts_with(AUDIT_REFUSAL) {
        "audit"
    } else if reason.contains(" failed logins from ") {
        "throttled"
    } else if reason.contains("(max_sessions_per_user)") {
        "session_limit"
    } else if reason.starts_with("ssh-rsa (SHA-1)") {
        "weak_algorithm"
    } else if reason == "the signature does not verify" {
        "bad_signature"
    } else if reason.starts_with("no such user") {
        "unknown_user"
    } else if method == "certificate" {
        "certificate"
    } else if reason == "key not authorized for this user" {
        "key_not_authorized"
    } else if reason.starts_with("cannot read") {
        "other"
    } else {
        // A listed key refused by its own options: expiry-time, from=.
        "key_restricted"
    };
    index(AUTH_REASONS, name)
}

/// Index in [`THROTTLE_REASONS`] for a `throttled` record.
pub fn throttle(reason: &str) -> usize {
    let name = if reason.starts_with("penalised:") {
        "penalised"
    } else if reason.starts_with("penalty ") {
        "penalty_imposed"
    } else if reason.contains(" failed logins from ") {
        "failed_logins"
    } else if reason.contains("(max_unauthenticated)") {
        "max_unauthenticated"
    } else if reason.starts_with("random early drop") {
        "early_drop"
    } else if reason.starts_with("too many unauthenticated connections from") {
        "per_source_unauthenticated"
    } else {
        "other"
    };
    index(THROTTLE_REASONS, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deny(by_rule: bool, reason: &str) -> &'static str {
        DENY_REASONS[channel_denial(by_rule, reason)]
    }

    #[test]
    fn channel_refusals_fall_into_their_causes() {
        assert_eq!(deny(true, "connect rule says no"), "policy");
        assert_eq!(deny(false, "no connect rule allows 10.0.0.1:22"), "policy");
        assert_eq!(
            deny(
                false,
                "the audit log cannot be written (x); refused until it can"
            ),
            "audit"
        );
        assert_eq!(
            deny(false, "too many channels open: 3 of 3 already in use (x)"),
            "limit"
        );
        assert_eq!(
            deny(
                false,
                "10 session channels already open (max_session_channels)"
            ),
            "limit"
        );
        assert_eq!(
            deny(
                false,
                "too many DNS lookups in flight for user a (limits.max_dns_lookups_per_user = 4)"
            ),
            "limit"
        );
        assert_eq!(deny(false, "cannot resolve x.example: no addresses"), "dns");
        assert_eq!(
            deny(false, "resolving x timed out after 5s (limits.dns_timeout)"),
            "dns"
        );
        assert_eq!(
            deny(false, "connect failed: 127.0.0.1:1: refused"),
            "unreachable"
        );
        assert_eq!(
            deny(false, "nobody publishes pi:22 right now"),
            "unreachable"
        );
        assert_eq!(deny(false, "the client refused: x"), "unreachable");
        assert_eq!(
            deny(false, "unix-socket forwarding is not offered by warrend"),
            "unsupported"
        );
        assert_eq!(
            deny(false, "no shell, commands or subsystems on warrend"),
            "unsupported"
        );
    }

    #[test]
    fn login_failures_fall_into_their_causes() {
        let auth = |m, r| AUTH_REASONS[auth_failure(m, r)];
        assert_eq!(
            auth("publickey", "key not authorized for this user"),
            "key_not_authorized"
        );
        assert_eq!(auth("publickey", "no such user 'mallory'"), "unknown_user");
        assert_eq!(
            auth("password", "only publickey authentication is offered"),
            "method_not_offered"
        );
        assert_eq!(
            auth("publickey", "12 failed logins from 10.0.0.0/24 within 600s"),
            "throttled"
        );
        assert_eq!(
            auth(
                "publickey",
                "a already has 2 sessions (max_sessions_per_user)"
            ),
            "session_limit"
        );
        assert_eq!(
            auth("certificate", "cert: signed by untrusted CA x"),
            "certificate"
        );
        assert_eq!(
            auth("publickey", "key x has expired (expiry-time)"),
            "key_restricted"
        );
        assert_eq!(
            auth("publickey", "the signature does not verify"),
            "bad_signature"
        );
    }

    #[test]
    fn throttling_falls_into_its_causes() {
        let t = |r| THROTTLE_REASONS[throttle(r)];
        assert_eq!(
            t("penalised: 10.0.0.0/24 held connections (3s of 10s left)"),
            "penalised"
        );
        assert_eq!(
            t("penalty 10s for 10.0.0.0/24: a connection closed"),
            "penalty_imposed"
        );
        assert_eq!(
            t("too many unauthenticated connections (max_unauthenticated)"),
            "max_unauthenticated"
        );
        assert_eq!(
            t("random early drop: 40 unauthenticated connections"),
            "early_drop"
        );
        assert_eq!(
            t("too many unauthenticated connections from 127.0.0.1/32"),
            "per_source_unauthenticated"
        );
        assert_eq!(t("something new"), "other");
        assert_eq!(KINDS[kind("made-up")], "other");
    }
}
