//! The one place defaults live: what a setting is when neither the command line nor the
//! file sets it. (The embedded `config/default.toml` is a configuration, not a list of
//! defaults: it only turns on what `natpass serve` without a file should also run.)

use super::settings::QuotaSection;
use super::values::PortRange;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// `listen`: STUN/TURN on every IPv4 and IPv6 address (IPv6 only where the host has it).
pub const LISTEN: [SocketAddr; 2] = [
    SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 3478)),
    SocketAddr::V6(SocketAddrV6::new(Ipv6Addr::UNSPECIFIED, 3478, 0, 0)),
];
/// `realm`.
pub const REALM: &str = "natpass";
/// `relay-ports` (RFC 8656 recommends the dynamic range).
pub const RELAY_PORTS: PortRange = PortRange {
    min: 49152,
    max: 65535,
};
/// `log`.
pub const LOG: &str = "info";
/// `drain-seconds`.
pub const DRAIN_SECONDS: u64 = 5;
/// `admin-listen` when only `admin-token` is set: loopback.
pub const ADMIN_LISTEN: SocketAddr = SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 8081));
/// `credential-ttl` (seconds).
pub const CREDENTIAL_TTL: u64 = 600;
/// `room-size`.
pub const ROOM_SIZE: usize = 8;
/// `sfu`: on with the demo.
pub const SFU: bool = true;
/// `mesh-size` (Jitsi moves from peer-to-peer to its bridge at three; a mesh of four still
/// fits an ordinary uplink).
pub const MESH_SIZE: usize = 4;
/// `sfu-room-size`.
pub const SFU_ROOM_SIZE: usize = 25;
/// `sfu-timeout` (seconds).
pub const SFU_TIMEOUT: u64 = 10;
/// `sfu-tcp`: ICE-TCP on the SFU's port.
pub const SFU_TCP: bool = true;
/// `sfu-listen` when unset: this far above the first TURN listener's port.
pub const SFU_PORT_OFFSET: u16 = 2;
/// `rest-max-ttl` (seconds): one day, what the TURN REST scheme
/// (draft-uberti-behave-turn-rest §2.2) recommends and what `turnutils_uclient -W` and most web
/// apps mint, so their credentials work unchanged.
pub const REST_MAX_TTL: u64 = 86400;
/// `nonce-lifetime` (seconds).
pub const NONCE_LIFETIME: u64 = 600;
/// `strict-channel-numbers`.
pub const STRICT_CHANNEL_NUMBERS: bool = false;
/// `acme-directory`: Let's Encrypt's production directory.
pub const ACME_DIRECTORY: &str = "https://acme-v02.api.letsencrypt.org/directory";
/// `acme-renew-days`: a third of Let's Encrypt's 90 days, as certbot does.
pub const ACME_RENEW_DAYS: u64 = 30;
/// With `domain` and no `tls-listen` (and, on the embedded default, no `http`): one port.
pub const DOMAIN_LISTEN: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 443);
/// `acme-http-listen`.
pub const ACME_HTTP_LISTEN: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 80);
/// `http-self-signed`.
pub const HTTP_SELF_SIGNED: bool = false;

/// `state-dir`: systemd's `StateDirectory=` when it set one, else the XDG state directory
/// (None when not even `$HOME` is known: the certificate is then made anew each start).
pub fn state_dir() -> Option<std::path::PathBuf> {
    let env = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    if let Some(d) = env("STATE_DIRECTORY") {
        // systemd may list several, separated by colons; the first is ours.
        let first = d
            .to_string_lossy()
            .split(':')
            .next()
            .unwrap_or("")
            .to_owned();
        return Some(first.into());
    }
    if let Some(x) = env("XDG_STATE_HOME") {
        return Some(std::path::PathBuf::from(x).join("natpass"));
    }
    env("HOME").map(|h| std::path::PathBuf::from(h).join(".local/state/natpass"))
}

/// `threads`: one shard per CPU.
pub fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// `[quota]` (docs/security.md "Exhaustion").
impl Default for QuotaSection {
    fn default() -> Self {
        Self {
            allocations_per_user: 10,
            allocations_per_ip: 64,
            total_allocations: 100_000,
            permissions_per_allocation: 10,
            channels_per_allocation: 64,
            default_lifetime: 600,
            max_lifetime: 3600,
            challenges_per_second: 10.0,
            auth_failures_per_minute: 20.0,
            // Connections without an allocation: a browser joining a relay-only call opens a
            // TCP TURN connection per peer connection and local address at once.
            connections_per_ip: 64,
            first_message_timeout: 10,
            idle_timeout: 60,
            tls_handshakes: 256,
            stream_buffer: 256 * 1024,
        }
    }
}
