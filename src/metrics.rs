//! Prometheus text exposition (format 0.0.4) of natpass's counters and gauges, from one table
//! of metric definitions. No label ever carries a username or an IP address (unbounded
//! cardinality).
//!
//! The caller gathers a [`Snapshot`] (the shards' summed [`Stats`], relay ports, stream
//! connections, signaling); [`render`] writes every metric of [`METRICS`] for it.

use crate::proto::stats::ALLOCATE_ERROR_CODES;
use crate::proto::{DropReason, EndReason, Family, Stats, Transport};
use std::fmt::Write;

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

/// Everything the metrics are read from, gathered at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Protocol counters summed over shards.
    pub stats: Stats,
    /// Relay ports in use.
    pub ports_in_use: usize,
    /// Relay ports available in all.
    pub ports_capacity: usize,
    /// Open TCP/TLS client connections.
    pub streams_open: usize,
    /// TCP/TLS connections accepted.
    pub streams_accepted: u64,
    /// TCP/TLS connections refused by the per-IP or handshake caps.
    pub streams_refused: u64,
    /// TLS handshakes in progress.
    pub tls_handshakes: usize,
    /// (rooms, participants) when the web side runs.
    pub signaling: Option<(usize, usize)>,
    /// The SFU's counters when it runs.
    pub sfu: Option<crate::sfu::core::SfuStats>,
    /// The XDP fast path's counters when it is attached.
    pub xdp: Option<crate::xdp::XdpCounters>,
}

/// Prometheus metric type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic counter.
    Counter,
    /// Value that goes up and down.
    Gauge,
}

/// Called once per sample with its labels and value.
pub type Emit<'a> = &'a mut dyn FnMut(&[(&str, &str)], i128);

/// One metric: name, type, help, and how to read its samples from a snapshot.
pub struct Metric {
    /// Metric name.
    pub name: &'static str,
    /// Type.
    pub kind: Kind,
    /// HELP text.
    pub help: &'static str,
    /// Emit the samples (none: the metric is not shown, e.g. signaling without the web side).
    pub samples: fn(&Snapshot, Emit<'_>),
}

fn one(v: impl Into<i128>) -> impl Fn(Emit<'_>) {
    let v = v.into();
    move |out: Emit<'_>| out(&[], v)
}

/// Every metric natpass exports, in output order.
pub static METRICS: &[Metric] = &[
    Metric {
        name: "natpass_build_info",
        kind: Kind::Gauge,
        help: "Build information.",
        samples: |_, out| out(&[("version", env!("CARGO_PKG_VERSION"))], 1),
    },
    Metric {
        name: "natpass_allocations",
        kind: Kind::Gauge,
        help: "Live allocations by client transport and relayed address family.",
        samples: |s, out| {
            for t in Transport::ALL {
                for f in [Family::V4, Family::V6] {
                    let labels = [("transport", t.name()), ("family", f.name())];
                    out(&labels, s.stats.live(t, f).into());
                }
            }
        },
    },
    Metric {
        name: "natpass_allocations_created_total",
        kind: Kind::Counter,
        help: "Allocations created.",
        samples: |s, out| one(s.stats.allocations_created)(out),
    },
    Metric {
        name: "natpass_allocations_ended_total",
        kind: Kind::Counter,
        help: "Allocations ended, by reason.",
        samples: |s, out| {
            for r in EndReason::ALL {
                out(
                    &[("reason", r.name())],
                    s.stats.allocations_ended[r as usize].into(),
                );
            }
        },
    },
    Metric {
        name: "natpass_allocate_errors_total",
        kind: Kind::Counter,
        help: "Allocate requests answered with an error, by STUN error code.",
        samples: |s, out| {
            for (code, n) in ALLOCATE_ERROR_CODES.iter().zip(s.stats.allocate_errors) {
                out(&[("code", &code.to_string())], n.into());
            }
        },
    },
    Metric {
        name: "natpass_permissions",
        kind: Kind::Gauge,
        help: "Live permissions.",
        samples: |s, out| one(s.stats.permissions_live)(out),
    },
    Metric {
        name: "natpass_channels",
        kind: Kind::Gauge,
        help: "Live channel bindings.",
        samples: |s, out| one(s.stats.channels_live)(out),
    },
    Metric {
        name: "natpass_binding_requests_total",
        kind: Kind::Counter,
        help: "STUN Binding requests answered.",
        samples: |s, out| one(s.stats.bindings)(out),
    },
    Metric {
        name: "natpass_relayed_packets_total",
        kind: Kind::Counter,
        help: "Packets relayed, by direction.",
        samples: |s, out| {
            out(&[("direction", "to_peer")], s.stats.packets_to_peer.into());
            out(
                &[("direction", "to_client")],
                s.stats.packets_to_client.into(),
            );
        },
    },
    Metric {
        name: "natpass_relayed_bytes_total",
        kind: Kind::Counter,
        help: "Payload bytes relayed, by direction.",
        samples: |s, out| {
            out(&[("direction", "to_peer")], s.stats.bytes_to_peer.into());
            out(
                &[("direction", "to_client")],
                s.stats.bytes_to_client.into(),
            );
        },
    },
    Metric {
        name: "natpass_dropped_packets_total",
        kind: Kind::Counter,
        help: "Packets not relayed, by reason.",
        samples: |s, out| {
            for r in DropReason::ALL {
                out(&[("reason", r.name())], s.stats.drops[r as usize].into());
            }
        },
    },
    Metric {
        name: "natpass_auth_failures_total",
        kind: Kind::Counter,
        help: "Failed authentications (wrong credentials, unknown or expired users).",
        samples: |s, out| one(s.stats.auth_failures)(out),
    },
    Metric {
        name: "natpass_rate_limited_total",
        kind: Kind::Counter,
        help: "Answers suppressed by per-source rate limits, by kind.",
        samples: |s, out| {
            out(
                &[("kind", "challenge")],
                s.stats.challenges_suppressed.into(),
            );
            out(
                &[("kind", "auth_failure")],
                s.stats.failures_suppressed.into(),
            );
        },
    },
    Metric {
        name: "natpass_relay_ports",
        kind: Kind::Gauge,
        help: "Relay ports in use and available.",
        samples: |s, out| {
            out(&[("state", "in_use")], s.ports_in_use as i128);
            out(&[("state", "capacity")], s.ports_capacity as i128);
        },
    },
    Metric {
        name: "natpass_stream_connections",
        kind: Kind::Gauge,
        help: "Open TCP/TLS client connections.",
        samples: |s, out| out(&[], s.streams_open as i128),
    },
    Metric {
        name: "natpass_stream_connections_total",
        kind: Kind::Counter,
        help: "TCP/TLS connections, by outcome.",
        samples: |s, out| {
            out(&[("outcome", "accepted")], s.streams_accepted.into());
            out(&[("outcome", "refused")], s.streams_refused.into());
        },
    },
    Metric {
        name: "natpass_tls_handshakes",
        kind: Kind::Gauge,
        help: "TLS handshakes in progress.",
        samples: |s, out| out(&[], s.tls_handshakes as i128),
    },
    Metric {
        name: "natpass_signaling_rooms",
        kind: Kind::Gauge,
        help: "Signaling rooms.",
        samples: |s, out| {
            if let Some((rooms, _)) = s.signaling {
                out(&[], rooms as i128);
            }
        },
    },
    Metric {
        name: "natpass_signaling_participants",
        kind: Kind::Gauge,
        help: "Signaling participants (connected or within their grace period).",
        samples: |s, out| {
            if let Some((_, people)) = s.signaling {
                out(&[], people as i128);
            }
        },
    },
    Metric {
        name: "natpass_sfu_participants",
        kind: Kind::Gauge,
        help: "Participants in the SFU's sessions.",
        samples: |s, out| sfu(s, out, |x| x.participants),
    },
    Metric {
        name: "natpass_sfu_tracks",
        kind: Kind::Gauge,
        help: "Tracks published to the SFU.",
        samples: |s, out| sfu(s, out, |x| x.tracks),
    },
    Metric {
        name: "natpass_sfu_forwarded_packets_total",
        kind: Kind::Counter,
        help: "Media frames the SFU forwarded to subscribers.",
        samples: |s, out| sfu(s, out, |x| x.forwarded_packets),
    },
    Metric {
        name: "natpass_sfu_forwarded_bytes_total",
        kind: Kind::Counter,
        help: "Payload bytes the SFU forwarded to subscribers.",
        samples: |s, out| sfu(s, out, |x| x.forwarded_bytes),
    },
    Metric {
        name: "natpass_sfu_keyframe_requests_total",
        kind: Kind::Counter,
        help: "Keyframe requests (PLI/FIR) the SFU sent to publishers.",
        samples: |s, out| sfu(s, out, |x| x.keyframe_requests),
    },
    Metric {
        name: "natpass_sfu_dropped_datagrams_total",
        kind: Kind::Counter,
        help: "Datagrams on the SFU port that belonged to no session or did not parse.",
        samples: |s, out| sfu(s, out, |x| x.dropped_datagrams),
    },
    Metric {
        name: "natpass_sfu_layer_switches_total",
        kind: Kind::Counter,
        help: "Times a subscriber moved to another simulcast layer of a video (on its keyframe).",
        samples: |s, out| sfu(s, out, |x| x.layer_switches),
    },
    Metric {
        name: "natpass_sfu_chat_messages_total",
        kind: Kind::Counter,
        help: "Chat messages relayed over the SFU's data channels (once each, whatever the room's size).",
        samples: |s, out| sfu(s, out, |x| x.chat_messages),
    },
    Metric {
        name: "natpass_sfu_chat_refused_total",
        kind: Kind::Counter,
        help: "Chat messages refused on the SFU's data channels (malformed, too long, over 10/s).",
        samples: |s, out| sfu(s, out, |x| x.chat_refused),
    },
    Metric {
        name: "natpass_sfu_nacks_received_total",
        kind: Kind::Counter,
        help: "NACKs subscribers sent the SFU (answered from its resend buffer).",
        samples: |s, out| sfu(s, out, |x| x.nacks_received),
    },
    Metric {
        name: "natpass_sfu_nacks_sent_total",
        kind: Kind::Counter,
        help: "NACKs the SFU sent publishers for packets it lost from them.",
        samples: |s, out| sfu(s, out, |x| x.nacks_sent),
    },
    Metric {
        name: "natpass_sfu_tcp_connections",
        kind: Kind::Gauge,
        help: "ICE-TCP connections to the SFU open now.",
        samples: |s, out| sfu(s, out, |x| x.tcp_connections),
    },
    Metric {
        name: "natpass_sfu_tcp_refused_total",
        kind: Kind::Counter,
        help: "ICE-TCP connections closed for breaking a limit (too many, bad frame, idle).",
        samples: |s, out| sfu(s, out, |x| x.tcp_refused),
    },
    Metric {
        name: "natpass_xdp_packets_total",
        kind: Kind::Counter,
        help: "Channel packets the XDP fast path forwarded in the kernel (not in natpass_relayed_packets_total), by direction.",
        samples: |s, out| {
            for (d, n) in s.xdp.iter().flat_map(|x| x.packets()) {
                out(&[("direction", d)], n.into());
            }
        },
    },
    Metric {
        name: "natpass_xdp_bytes_total",
        kind: Kind::Counter,
        help: "Payload bytes the XDP fast path forwarded in the kernel, by direction.",
        samples: |s, out| {
            for (d, n) in s.xdp.iter().flat_map(|x| x.bytes()) {
                out(&[("direction", d)], n.into());
            }
        },
    },
    Metric {
        name: "natpass_xdp_passed_total",
        kind: Kind::Counter,
        help: "Packets of a fast-path route left to the userspace path, by reason.",
        samples: |s, out| {
            for (r, n) in s.xdp.iter().flat_map(|x| x.passed()) {
                out(&[("reason", r)], n.into());
            }
        },
    },
];

/// One SFU sample, when the SFU runs.
fn sfu(s: &Snapshot, out: Emit<'_>, f: fn(&crate::sfu::core::SfuStats) -> u64) {
    if let Some(x) = &s.sfu {
        out(&[], f(x).into());
    }
}

/// Render every metric of [`METRICS`] (and the process start time) for `s`.
pub fn render(s: &Snapshot) -> String {
    let mut o = String::with_capacity(4096);
    let start = START.get().copied().unwrap_or(0.0);
    let _ = writeln!(
        o,
        "# HELP process_start_time_seconds Start time of the process since the Unix epoch.\n\
         # TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {start}"
    );
    for m in METRICS {
        let mut body = String::new();
        (m.samples)(s, &mut |labels, value| {
            body.push_str(m.name);
            if !labels.is_empty() {
                let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
                let _ = write!(body, "{{{}}}", l.join(","));
            }
            let _ = writeln!(body, " {value}");
        });
        if body.is_empty() {
            continue;
        }
        let kind = match m.kind {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        };
        let _ = writeln!(o, "# HELP {} {}\n# TYPE {} {kind}", m.name, m.help, m.name);
        o.push_str(&body);
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_has_help_type_and_its_samples() {
        let mut s = Snapshot::default();
        s.stats.packets_to_peer = 3;
        s.stats.allocations_live[Transport::Tls.index()][Family::V6.index()] = 2;
        s.stats.drops[DropReason::DeniedPeer as usize] = 5;
        s.ports_capacity = 100;
        let text = render(&s);
        assert!(text.contains("natpass_relayed_packets_total{direction=\"to_peer\"} 3\n"));
        assert!(text.contains("natpass_allocations{transport=\"tls\",family=\"ipv6\"} 2\n"));
        assert!(text.contains("natpass_dropped_packets_total{reason=\"denied_peer\"} 5\n"));
        assert!(text.contains("natpass_relay_ports{state=\"capacity\"} 100\n"));
        assert!(text.contains("natpass_allocate_errors_total{code=\"486\"} 0\n"));
        for m in METRICS.iter().filter(|m| {
            !m.name.starts_with("natpass_signaling")
                && !m.name.starts_with("natpass_sfu")
                && !m.name.starts_with("natpass_xdp")
        }) {
            assert!(text.contains(&format!("# TYPE {} ", m.name)), "{}", m.name);
        }
        assert!(
            !text.contains("natpass_signaling_rooms"),
            "no web side, no signaling"
        );
    }

    #[test]
    fn signaling_gauges_appear_with_the_web_side() {
        let s = Snapshot {
            signaling: Some((2, 5)),
            ..Default::default()
        };
        let text = render(&s);
        assert!(text.contains("natpass_signaling_rooms 2\n"));
        assert!(text.contains("natpass_signaling_participants 5\n"));
        assert!(!text.contains("natpass_sfu_"), "no SFU, no SFU metrics");
    }

    #[test]
    fn xdp_metrics_appear_only_with_the_fast_path() {
        assert!(!render(&Snapshot::default()).contains("natpass_xdp_"));
        let s = Snapshot {
            xdp: Some(crate::xdp::XdpCounters {
                to_peer_packets: 5,
                to_client_packets: 4,
                to_peer_bytes: 500,
                passed_malformed: 2,
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = render(&s);
        assert!(text.contains("# TYPE natpass_xdp_packets_total counter\nnatpass_xdp_packets_total{direction=\"to_peer\"} 5\nnatpass_xdp_packets_total{direction=\"to_client\"} 4\n"));
        assert!(text.contains("natpass_xdp_bytes_total{direction=\"to_peer\"} 500\n"));
        assert!(text.contains("natpass_xdp_passed_total{reason=\"malformed\"} 2\n"));
    }

    #[test]
    fn sfu_metrics_appear_when_it_runs() {
        let s = Snapshot {
            sfu: Some(crate::sfu::core::SfuStats {
                forwarded_packets: 7,
                participants: 3,
                tracks: 6,
                ..Default::default()
            }),
            ..Default::default()
        };
        let text = render(&s);
        assert!(text.contains("natpass_sfu_participants 3\n"));
        assert!(text.contains("natpass_sfu_tracks 6\n"));
        assert!(text.contains("# TYPE natpass_sfu_forwarded_packets_total counter\nnatpass_sfu_forwarded_packets_total 7\n"));
        assert!(text.contains("natpass_sfu_dropped_datagrams_total 0\n"));
    }
}
