//! Prometheus metrics: what an operator graphs and alerts on (sessions, logins and why
//! they fail, channels, bytes, throttling, audit health), served by [`http`] when
//! `[metrics] listen` is set.
//!
//! Counting is always on and costs an atomic add per event: every label combination is
//! created up front and its counter kept in a plain array, so no event takes a lock or
//! hashes a label set. Most counters move where the audit records are produced
//! ([`Metrics::observe`], called by `AuditSink::record`), so the metrics and the audit
//! log cannot disagree about what happened. Label values come from fixed lists, never
//! from what a peer sent (user names, targets, reasons' free text), so a hostile client
//! cannot grow the number of series.

pub mod classify;
pub mod http;
pub mod traffic;

use super::audit::event::AuditEvent;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

pub use classify::{AUTH_REASONS, DENY_REASONS, KINDS, THROTTLE_REASONS};
pub use traffic::{Traffic, TrafficTotals};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AuthLabels {
    result: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DenyLabels {
    kind: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DirectionLabels {
    direction: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabels {
    version: &'static str,
}

/// The process's metrics. One per `AuditSink` family (so, one per warrend).
pub struct Metrics {
    registry: Registry,
    auth_success: Counter,
    /// Indexed like [`AUTH_REASONS`].
    auth_failure: Vec<Counter>,
    /// Indexed like [`KINDS`].
    channels_open: Vec<Gauge>,
    channels_opened: Vec<Counter>,
    /// `[kind][reason]`, indexed like [`KINDS`] and [`DENY_REASONS`].
    channels_denied: Vec<Vec<Counter>>,
    /// Indexed like [`THROTTLE_REASONS`].
    throttled: Vec<Counter>,
    /// Set from [`TrafficTotals`] at each scrape (only ever forward).
    bytes_up: Counter,
    bytes_down: Counter,
    /// Set at each scrape from the live state.
    sessions: Gauge,
    connections: Gauge,
    listeners: Gauge,
    names: Gauge,
    audit_queue_depth: Gauge,
    audit_failures: Counter,
    audit_dropped: Counter,
    /// Serialises scrapes, which move the byte counters forward to the live totals.
    scrape: Mutex<()>,
    /// Live TCP connections (authenticated or not): session_start minus session_end.
    live_connections: AtomicI64,
}

/// What the scrape reads from the running server; gauges are set from it.
pub struct Snapshot {
    pub sessions: u64,
    pub listeners: u64,
    pub names: u64,
    pub audit_queue_depth: u64,
    pub audit_failures: u64,
    pub audit_dropped: u64,
    pub bytes: (u64, u64),
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::default();
        let auth = Family::<AuthLabels, Counter>::default();
        registry.register(
            "warrend_auth",
            "Login attempts answered, by result and reason (success: \"accepted\")",
            auth.clone(),
        );
        let auth_success = auth
            .get_or_create(&AuthLabels {
                result: "success",
                reason: "accepted",
            })
            .clone();
        let auth_failure = AUTH_REASONS
            .iter()
            .map(|r| {
                auth.get_or_create(&AuthLabels {
                    result: "failure",
                    reason: r,
                })
                .clone()
            })
            .collect();

        let open = Family::<KindLabels, Gauge>::default();
        registry.register(
            "warrend_channels_open",
            "Forwarded channels relaying now, by kind",
            open.clone(),
        );
        let opened = Family::<KindLabels, Counter>::default();
        registry.register(
            "warrend_channels_opened",
            "Forwarded channels opened, by kind",
            opened.clone(),
        );
        let denied = Family::<DenyLabels, Counter>::default();
        registry.register(
            "warrend_channels_denied",
            "Channels refused or failed to open, by kind and reason",
            denied.clone(),
        );
        let channels_open = KINDS
            .iter()
            .map(|k| open.get_or_create(&KindLabels { kind: k }).clone())
            .collect();
        let channels_opened = KINDS
            .iter()
            .map(|k| opened.get_or_create(&KindLabels { kind: k }).clone())
            .collect();
        let channels_denied = KINDS
            .iter()
            .map(|k| {
                DENY_REASONS
                    .iter()
                    .map(|r| {
                        denied
                            .get_or_create(&DenyLabels { kind: k, reason: r })
                            .clone()
                    })
                    .collect()
            })
            .collect();

        let throttled_family = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "warrend_throttled",
            "Connections refused or sources penalised by the brute-force and flood limits, by reason",
            throttled_family.clone(),
        );
        let throttled = THROTTLE_REASONS
            .iter()
            .map(|r| {
                throttled_family
                    .get_or_create(&ReasonLabels { reason: r })
                    .clone()
            })
            .collect();

        let bytes = Family::<DirectionLabels, Counter>::default();
        registry.register(
            "warrend_bytes",
            "Bytes relayed by forwarded channels: up = from the channel's client side \
             towards its target, down = back (as the audit's bytes_up/bytes_down)",
            bytes.clone(),
        );
        let bytes_up = bytes
            .get_or_create(&DirectionLabels { direction: "up" })
            .clone();
        let bytes_down = bytes
            .get_or_create(&DirectionLabels { direction: "down" })
            .clone();

        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let g = Gauge::default();
            registry.register(name, help, g.clone());
            g
        };
        let sessions = gauge(&mut registry, "warrend_sessions", "Authenticated sessions");
        let connections = gauge(
            &mut registry,
            "warrend_connections",
            "TCP connections, authenticated or not",
        );
        let listeners = gauge(
            &mut registry,
            "warrend_listeners",
            "-R listeners and published rendezvous names held",
        );
        let names = gauge(
            &mut registry,
            "warrend_rendezvous_names",
            "Rendezvous names published",
        );
        let audit_queue_depth = gauge(
            &mut registry,
            "warrend_audit_queue_depth",
            "Audit records waiting to be written",
        );
        let audit_failures = Counter::default();
        registry.register(
            "warrend_audit_failures",
            "Failed attempts to write the audit log",
            audit_failures.clone(),
        );
        let audit_dropped = Counter::default();
        registry.register(
            "warrend_audit_dropped",
            "Audit records lost (queue full while the log could not be written)",
            audit_dropped.clone(),
        );
        let build = Family::<VersionLabels, Gauge>::default();
        registry.register(
            "warrend_build_info",
            "Always 1; the version label says which warrend runs",
            build.clone(),
        );
        build
            .get_or_create(&VersionLabels {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        Metrics {
            registry,
            auth_success,
            auth_failure,
            channels_open,
            channels_opened,
            channels_denied,
            throttled,
            bytes_up,
            bytes_down,
            sessions,
            connections,
            listeners,
            names,
            audit_queue_depth,
            audit_failures,
            audit_dropped,
            scrape: Mutex::new(()),
            live_connections: AtomicI64::new(0),
        }
    }

    /// Counts what an audit record says happened.
    pub fn observe(&self, event: &AuditEvent) {
        match event {
            AuditEvent::SessionStart { .. } => {
                self.live_connections.fetch_add(1, Ordering::Relaxed);
            }
            AuditEvent::SessionEnd { .. } => {
                self.live_connections.fetch_sub(1, Ordering::Relaxed);
            }
            AuditEvent::AuthSuccess { .. } => {
                self.auth_success.inc();
            }
            AuditEvent::AuthFailure { method, reason, .. } => {
                self.auth_failure[classify::auth_failure(method, reason)].inc();
            }
            AuditEvent::ChannelOpen {
                kind,
                decision,
                rule,
                reason: Some(reason),
                ..
            } => {
                let why = if decision == "allow" {
                    // Allowed, but the target could not be reached.
                    classify::UNREACHABLE
                } else {
                    classify::channel_denial(rule.is_some(), reason)
                };
                self.channels_denied[classify::kind(kind)][why].inc();
            }
            AuditEvent::Throttled { reason, .. } => {
                self.throttled[classify::throttle(reason)].inc();
            }
            _ => {}
        }
    }

    /// Counts a forwarded channel of `kind` that starts relaying; it counts as open
    /// until the guard is dropped.
    pub fn channel_relaying(&self, kind: &str) -> OpenChannel {
        let k = classify::kind(kind);
        self.channels_opened[k].inc();
        self.channels_open[k].inc();
        OpenChannel(self.channels_open[k].clone())
    }

    /// The metrics as text: OpenMetrics when `openmetrics`, else Prometheus' text
    /// format 0.0.4. Gauges and byte counters are brought up to date from `now` first.
    pub fn render(&self, now: &Snapshot, openmetrics: bool) -> String {
        let _one = self.scrape.lock().unwrap_or_else(|e| e.into_inner());
        self.sessions.set(now.sessions as i64);
        self.connections
            .set(self.live_connections.load(Ordering::Relaxed).max(0));
        self.listeners.set(now.listeners as i64);
        self.names.set(now.names as i64);
        self.audit_queue_depth.set(now.audit_queue_depth as i64);
        catch_up(&self.audit_failures, now.audit_failures);
        catch_up(&self.audit_dropped, now.audit_dropped);
        catch_up(&self.bytes_up, now.bytes.0);
        catch_up(&self.bytes_down, now.bytes.1);
        let mut out = String::new();
        let encoded = if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &self.registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        };
        // Writing to a String cannot fail; an encoder bug shows as a truncated page.
        if let Err(e) = encoded {
            tracing::warn!("encoding the metrics: {e}");
        }
        out
    }
}

/// Moves a counter forward to `total` (never back: a counter that dropped would read
/// as a restart).
fn catch_up(counter: &Counter, total: u64) {
    let have = counter.get();
    if total > have {
        counter.inc_by(total - have);
    }
}

/// A forwarded channel counted in `warrend_channels_open` until dropped.
pub struct OpenChannel(Gauge);

impl Drop for OpenChannel {
    fn drop(&mut self) {
        self.0.dec();
    }
}
