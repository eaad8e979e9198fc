//! Prometheus text exposition (format 0.0.4) of natpass's live counters and gauges. No label
//! ever carries a username or an IP address (unbounded cardinality).

use crate::net::Control;
use crate::proto::server::{ALLOCATE_ERROR_CODES, DROP_REASONS, END_REASONS};
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

/// Process start time (Unix seconds), set once at start.
static START: std::sync::OnceLock<f64> = std::sync::OnceLock::new();

/// Record the process start time (first call wins).
pub fn mark_start() {
    START.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64())
    });
}

fn metric(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
}

/// Render every metric. `signaling` is (rooms, participants) when the web side runs.
pub fn render(c: &Control, signaling: Option<(usize, usize)>) -> String {
    let st = &c.shared.stats;
    let mut o = String::with_capacity(4096);
    metric(&mut o, "natpass_build_info", "gauge", "Build information.");
    let _ = writeln!(
        o,
        "natpass_build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    metric(
        &mut o,
        "process_start_time_seconds",
        "gauge",
        "Start time of the process since the Unix epoch.",
    );
    let _ = writeln!(
        o,
        "process_start_time_seconds {}",
        START.get().copied().unwrap_or(0.0)
    );

    metric(
        &mut o,
        "natpass_allocations",
        "gauge",
        "Live allocations by client transport and relayed address family.",
    );
    for (ti, t) in ["udp", "tcp", "tls"].iter().enumerate() {
        for (fi, f) in ["ipv4", "ipv6"].iter().enumerate() {
            let _ = writeln!(
                o,
                "natpass_allocations{{transport=\"{t}\",family=\"{f}\"}} {}",
                st.allocations_live[ti][fi].load(Relaxed)
            );
        }
    }
    metric(
        &mut o,
        "natpass_allocations_created_total",
        "counter",
        "Allocations created.",
    );
    let _ = writeln!(
        o,
        "natpass_allocations_created_total {}",
        st.allocations_created.load(Relaxed)
    );
    metric(
        &mut o,
        "natpass_allocations_ended_total",
        "counter",
        "Allocations ended, by reason.",
    );
    for (i, r) in END_REASONS.iter().enumerate() {
        let _ = writeln!(
            o,
            "natpass_allocations_ended_total{{reason=\"{r}\"}} {}",
            st.allocations_ended_by[i].load(Relaxed)
        );
    }
    metric(
        &mut o,
        "natpass_allocate_errors_total",
        "counter",
        "Allocate requests answered with an error, by STUN error code.",
    );
    for (i, code) in ALLOCATE_ERROR_CODES.iter().enumerate() {
        let _ = writeln!(
            o,
            "natpass_allocate_errors_total{{code=\"{code}\"}} {}",
            st.allocate_errors[i].load(Relaxed)
        );
    }
    metric(&mut o, "natpass_permissions", "gauge", "Live permissions.");
    let _ = writeln!(
        o,
        "natpass_permissions {}",
        st.permissions_live.load(Relaxed)
    );
    metric(
        &mut o,
        "natpass_channels",
        "gauge",
        "Live channel bindings.",
    );
    let _ = writeln!(o, "natpass_channels {}", st.channels_live.load(Relaxed));
    metric(
        &mut o,
        "natpass_binding_requests_total",
        "counter",
        "STUN Binding requests answered.",
    );
    let _ = writeln!(
        o,
        "natpass_binding_requests_total {}",
        st.bindings.load(Relaxed)
    );
    metric(
        &mut o,
        "natpass_relayed_packets_total",
        "counter",
        "Packets relayed, by direction.",
    );
    let _ = writeln!(
        o,
        "natpass_relayed_packets_total{{direction=\"to_peer\"}} {}",
        st.packets_to_peer()
    );
    let _ = writeln!(
        o,
        "natpass_relayed_packets_total{{direction=\"to_client\"}} {}",
        st.packets_to_client()
    );
    metric(
        &mut o,
        "natpass_relayed_bytes_total",
        "counter",
        "Payload bytes relayed, by direction.",
    );
    let _ = writeln!(
        o,
        "natpass_relayed_bytes_total{{direction=\"to_peer\"}} {}",
        st.bytes_to_peer()
    );
    let _ = writeln!(
        o,
        "natpass_relayed_bytes_total{{direction=\"to_client\"}} {}",
        st.bytes_to_client()
    );
    metric(
        &mut o,
        "natpass_dropped_packets_total",
        "counter",
        "Packets not relayed, by reason.",
    );
    for (i, r) in DROP_REASONS.iter().enumerate() {
        let _ = writeln!(
            o,
            "natpass_dropped_packets_total{{reason=\"{r}\"}} {}",
            st.drops[i].load(Relaxed)
        );
    }
    metric(
        &mut o,
        "natpass_auth_failures_total",
        "counter",
        "Failed authentications (wrong credentials, unknown or expired users).",
    );
    let _ = writeln!(
        o,
        "natpass_auth_failures_total {}",
        st.auth_failures.load(Relaxed)
    );
    metric(
        &mut o,
        "natpass_rate_limited_total",
        "counter",
        "Answers suppressed by per-source rate limits, by kind.",
    );
    let _ = writeln!(
        o,
        "natpass_rate_limited_total{{kind=\"challenge\"}} {}",
        st.challenges_suppressed.load(Relaxed)
    );
    let _ = writeln!(
        o,
        "natpass_rate_limited_total{{kind=\"auth_failure\"}} {}",
        st.failures_suppressed.load(Relaxed)
    );
    metric(
        &mut o,
        "natpass_relay_ports",
        "gauge",
        "Relay ports in use and available.",
    );
    let _ = writeln!(
        o,
        "natpass_relay_ports{{state=\"in_use\"}} {}",
        c.shared.ports.in_use()
    );
    let _ = writeln!(
        o,
        "natpass_relay_ports{{state=\"capacity\"}} {}",
        c.shared.ports.capacity()
    );
    metric(
        &mut o,
        "natpass_stream_connections",
        "gauge",
        "Open TCP/TLS client connections.",
    );
    let _ = writeln!(o, "natpass_stream_connections {}", c.limits.open());
    metric(
        &mut o,
        "natpass_stream_connections_total",
        "counter",
        "TCP/TLS connections, by outcome.",
    );
    let _ = writeln!(
        o,
        "natpass_stream_connections_total{{outcome=\"accepted\"}} {}",
        c.limits.accepted.load(Relaxed)
    );
    let _ = writeln!(
        o,
        "natpass_stream_connections_total{{outcome=\"refused\"}} {}",
        c.limits.refused.load(Relaxed)
    );
    metric(
        &mut o,
        "natpass_tls_handshakes",
        "gauge",
        "TLS handshakes in progress.",
    );
    let _ = writeln!(
        o,
        "natpass_tls_handshakes {}",
        c.limits.handshakes_in_progress()
    );
    if let Some((rooms, people)) = signaling {
        metric(
            &mut o,
            "natpass_signaling_rooms",
            "gauge",
            "Signaling rooms.",
        );
        let _ = writeln!(o, "natpass_signaling_rooms {rooms}");
        metric(
            &mut o,
            "natpass_signaling_participants",
            "gauge",
            "Signaling participants (connected or within their grace period).",
        );
        let _ = writeln!(o, "natpass_signaling_participants {people}");
    }
    o
}
