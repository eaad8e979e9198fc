//! The one model of every setting: the same struct is the `natpass serve` flags (clap) and the
//! TOML file (serde, kebab-case, unknown keys rejected). Each field is declared once; its
//! default lives in [`super::defaults`]. Layers merge with [`Settings::over`]: the command
//! line over the file, the file over the defaults.

use super::values::{Cidr, ExternalIp, PortRange, UserSpec};
use crate::auth::Secret;
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// One layer of configuration merged over another: a value that is set wins.
pub trait Layer {
    /// `self` where it is set, `under` elsewhere.
    fn over(self, under: Self) -> Self;
}

impl<T> Layer for Option<T> {
    fn over(self, under: Self) -> Self {
        self.or(under)
    }
}

/// A list is set when it is not empty (a repeated flag, or a non-empty array in the file).
impl<T> Layer for Vec<T> {
    fn over(self, under: Self) -> Self {
        if self.is_empty() { under } else { self }
    }
}

/// Declares [`Settings`] and its field-by-field [`Layer`] merge from one list of fields.
macro_rules! settings {
    ($(#[$outer:meta])* pub struct $name:ident { $($(#[$m:meta])* pub $f:ident: $t:ty,)* }) => {
        $(#[$outer])*
        pub struct $name {
            $($(#[$m])* pub $f: $t,)*
        }
        impl Layer for $name {
            fn over(self, under: Self) -> Self {
                Self { $($f: Layer::over(self.$f, under.$f),)* }
            }
        }
    };
}

settings! {
    /// Every setting of `natpass serve`; an unset field (None, an empty list) takes the next
    /// layer's value.
    #[derive(Debug, Clone, Default, clap::Args, Deserialize)]
    #[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
    pub struct Settings {
        /// Listen address for STUN/TURN over UDP and TCP (repeatable).
        #[arg(long, value_name = "ADDR:PORT")]
        pub listen: Vec<SocketAddr>,
        /// RFC 5780 alternate address (a second IP and port) for NAT behaviour discovery.
        #[arg(long, value_name = "ADDR:PORT")]
        pub alt_listen: Option<SocketAddr>,
        /// TURN over TLS listen address (repeatable; plain TCP is accepted there too).
        #[arg(long, value_name = "ADDR:PORT")]
        pub tls_listen: Vec<SocketAddr>,
        /// PEM certificate chain for TLS.
        #[arg(long, value_name = "FILE")]
        pub tls_cert: Option<PathBuf>,
        /// PEM private key for TLS.
        #[arg(long, value_name = "FILE")]
        pub tls_key: Option<PathBuf>,
        /// HTTP listener for the demo page, signaling and credentials (e.g. 127.0.0.1:8080).
        #[arg(long, value_name = "ADDR:PORT")]
        pub http: Option<SocketAddr>,
        /// HTTPS certificate chain for the HTTP listener.
        #[arg(long, value_name = "FILE")]
        pub http_tls_cert: Option<PathBuf>,
        /// HTTPS key for the HTTP listener.
        #[arg(long, value_name = "FILE")]
        pub http_tls_key: Option<PathBuf>,
        /// Serve HTTP over HTTPS with a self-signed certificate (phones on a LAN), made once and
        /// kept in the state directory so browsers need to accept it only once.
        #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
        pub http_self_signed: Option<bool>,
        /// Directory for what natpass keeps across restarts (the self-signed certificate).
        /// Default: $STATE_DIRECTORY (systemd), else $XDG_STATE_HOME/natpass, else
        /// ~/.local/state/natpass.
        #[arg(long, value_name = "DIR")]
        pub state_dir: Option<PathBuf>,
        /// Domain name to get a certificate for from an ACME CA, Let's Encrypt by default
        /// (repeatable). Without tls-cert it serves TURN over TLS and the HTTPS page; with no
        /// tls-listen, both share 0.0.0.0:443. Kept and renewed in state-dir.
        #[arg(long = "domain", value_name = "NAME")]
        pub domain: Vec<String>,
        /// ACME directory URL (default: Let's Encrypt's production directory).
        #[arg(long, value_name = "URL")]
        pub acme_directory: Option<String>,
        /// Contact e-mail for the ACME account (expiry warnings from the CA).
        #[arg(long, value_name = "EMAIL")]
        pub acme_email: Option<String>,
        /// Trust this PEM CA for the ACME directory's own HTTPS (a private or test CA).
        #[arg(long, value_name = "FILE")]
        pub acme_ca_root: Option<PathBuf>,
        /// ACME challenge: tls-alpn-01 (answered on the TLS port; the CA connects to 443) or
        /// http-01 (answered on acme-http-listen, port 80). Default: tls-alpn-01 when a
        /// tls-listen address is on port 443, else http-01.
        #[arg(long, value_name = "TYPE")]
        pub acme_challenge: Option<String>,
        /// Where to answer http-01 challenges (only while one is pending).
        #[arg(long, value_name = "ADDR:PORT")]
        pub acme_http_listen: Option<SocketAddr>,
        /// Renew the ACME certificate this many days before it expires.
        #[arg(long, value_name = "DAYS")]
        pub acme_renew_days: Option<u64>,
        /// Host name or IP put in the ICE server URLs handed to browsers (default: the page's host).
        #[arg(long, value_name = "NAME")]
        pub public_host: Option<String>,
        /// Extra origin allowed to open the signaling WebSocket (repeatable).
        #[arg(long = "allow-origin", value_name = "ORIGIN")]
        pub allow_origins: Vec<String>,
        /// Lifetime in seconds of the TURN credentials handed to browsers.
        #[arg(long, value_name = "N")]
        pub credential_ttl: Option<u64>,
        /// Participants per signaling room.
        #[arg(long, value_name = "N")]
        pub room_size: Option<usize>,
        /// Run the SFU for rooms larger than a mesh (needs `http`; default on).
        #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
        pub sfu: Option<bool>,
        /// UDP address of the SFU (default: the first TURN listener's address, port + 2).
        #[arg(long, value_name = "ADDR:PORT")]
        pub sfu_listen: Option<SocketAddr>,
        /// A room moves from a mesh to the SFU when it grows past this many participants.
        #[arg(long, value_name = "N")]
        pub mesh_size: Option<usize>,
        /// Participants per SFU room.
        #[arg(long, value_name = "N")]
        pub sfu_room_size: Option<usize>,
        /// Seconds the SFU keeps a participant that sends nothing before removing it.
        #[arg(long, value_name = "N")]
        pub sfu_timeout: Option<u64>,
        /// Also accept ICE over TCP on the SFU's port (RFC 6544, for networks that block UDP;
        /// default on).
        #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
        pub sfu_tcp: Option<bool>,
        /// Redis URL (redis://[:PASSWORD@]HOST:PORT[/DB]): share signaling rooms with every
        /// natpass process on the same Redis, so a call can span several nodes.
        #[arg(long, value_name = "URL")]
        pub redis: Option<String>,
        /// Separate listener for /metrics, /healthz and /readyz.
        #[arg(long, value_name = "ADDR:PORT")]
        pub metrics: Option<SocketAddr>,
        /// Admin API listener (needs admin-token; loopback by default).
        #[arg(long, value_name = "ADDR:PORT")]
        pub admin_listen: Option<SocketAddr>,
        /// Admin API bearer token (prefer the config file or NATPASS_ADMIN_TOKEN: flags show in ps).
        #[arg(long, value_name = "TOKEN", env = "NATPASS_ADMIN_TOKEN", hide_env_values = true)]
        pub admin_token: Option<Secret>,
        /// Seconds existing allocations keep relaying after SIGTERM/SIGINT.
        #[arg(long, value_name = "N")]
        pub drain_seconds: Option<u64>,
        /// Log format: text or json.
        #[arg(long, value_name = "FORMAT")]
        pub log_format: Option<String>,
        /// Realm for long-term credentials.
        #[arg(long, value_name = "NAME")]
        pub realm: Option<String>,
        /// Static user NAME:PASSWORD or NAME:0xKEY (repeatable).
        #[arg(long = "user", value_name = "NAME:PASSWORD")]
        pub users: Vec<UserSpec>,
        /// TURN REST API shared secret (repeatable, for rotation).
        #[arg(long = "auth-secret", value_name = "SECRET")]
        pub auth_secrets: Vec<Secret>,
        /// Maximum lifetime of a REST credential ahead of now (seconds).
        #[arg(long, value_name = "N")]
        pub rest_max_ttl: Option<u64>,
        /// Nonce lifetime in seconds (438 Stale Nonce after it).
        #[arg(long, value_name = "N")]
        pub nonce_lifetime: Option<u64>,
        /// Peer range to allow despite the default deny list (repeatable).
        #[arg(long = "allow-peer", value_name = "CIDR")]
        pub allow_peers: Vec<Cidr>,
        /// Extra peer range to deny (repeatable).
        #[arg(long = "deny-peer", value_name = "CIDR")]
        pub deny_peers: Vec<Cidr>,
        /// Relay IP (repeatable). Default: the address routing to the internet, or the listen IP.
        #[arg(long = "relay-ip", value_name = "IP")]
        pub relay_ips: Vec<IpAddr>,
        /// Advertised IP behind 1:1 NAT: PUBLIC or PUBLIC/PRIVATE (repeatable, one per family).
        #[arg(long = "external-ip", value_name = "IP[/IP]")]
        pub external_ips: Vec<ExternalIp>,
        /// Relay port range.
        #[arg(long, value_name = "MIN-MAX")]
        pub relay_ports: Option<PortRange>,
        /// tracing filter, e.g. `info` or `natpass=debug`.
        #[arg(long, value_name = "FILTER")]
        pub log: Option<String>,
        /// Another TURN server (ADDR:PORT, repeatable) that new Allocates are sent to with 300
        /// Try Alternate (ALTERNATE-SERVER, RFC 8489 §10) while this one drains after SIGTERM;
        /// without one they get 508. The client's address family picks among them.
        #[arg(long = "alternate-server", value_name = "ADDR:PORT")]
        pub alternate_servers: Vec<SocketAddr>,
        /// Network interface(s) to attach the XDP fast path for TURN channels to (Linux, as
        /// root; a name or a list): the kernel forwards established channels' ChannelData over
        /// IPv4/UDP both ways without waking natpass. Off by default; when the program cannot
        /// be attached natpass says why and relays in userspace.
        #[arg(long = "xdp", value_name = "IFACE")]
        #[serde(deserialize_with = "super::values::one_or_many")]
        pub xdp_interface: Vec<String>,
        /// SOFTWARE attribute to send (none by default: it only helps fingerprinting).
        #[arg(long, value_name = "TEXT")]
        pub software: Option<String>,
        /// Worker shards (default: one per CPU).
        #[arg(long, value_name = "N")]
        pub threads: Option<usize>,
        /// Accept only RFC 8656 channel numbers 0x4000-0x4FFF (default: RFC 5766's 0x4000-0x7FFF).
        #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
        pub strict_channel_numbers: Option<bool>,
        /// Quotas and lifetimes (`[quota]`, file only).
        #[arg(skip)]
        pub quota: Option<QuotaSection>,
    }
}

impl Settings {
    /// `self` over `under`: every value set in `self` wins.
    pub fn over(self, under: Self) -> Self {
        Layer::over(self, under)
    }
}

/// Quotas and lifetimes (`[quota]`); a key left out takes its default.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, rename_all = "kebab-case", default)]
pub struct QuotaSection {
    /// Allocations per username.
    pub allocations_per_user: usize,
    /// Allocations per client IP.
    pub allocations_per_ip: usize,
    /// Allocations on the server.
    pub total_allocations: usize,
    /// Peers' permissions per allocation.
    pub permissions_per_allocation: usize,
    /// Channels per allocation.
    pub channels_per_allocation: usize,
    /// Allocation lifetime granted when a client asks for less (seconds).
    pub default_lifetime: u32,
    /// Maximum allocation lifetime (seconds).
    pub max_lifetime: u32,
    /// 401/438 answers per second per source IP.
    pub challenges_per_second: f64,
    /// Authentication failures answered per minute per source IP.
    pub auth_failures_per_minute: f64,
    /// TCP/TLS connections per client IP that hold no allocation (one that holds an allocation
    /// is bounded by the allocation quotas instead).
    pub connections_per_ip: usize,
    /// Seconds a TCP/TLS connection has to send its first valid STUN message (and to finish
    /// any frame it started).
    pub first_message_timeout: u64,
    /// Seconds a TCP/TLS connection without an allocation may stay idle.
    pub idle_timeout: u64,
    /// Concurrent TLS handshakes on the server.
    pub tls_handshakes: usize,
    /// Bytes buffered towards a slow TCP/TLS client before relayed data is dropped.
    pub stream_buffer: usize,
}
