//! Configuration: a TOML file (kebab-case keys, unknown keys are errors that name the key and
//! its line) overlaid by command-line flags (the command line wins), validated into a
//! [`ValidConfig`]. `natpass serve` without `--config` uses the embedded
//! `config/default.toml`.

use crate::auth::{self, Credentials, Secret};
use crate::relay::policy::parse_net;
use ipnet::IpNet;
use serde::Deserialize;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::str::FromStr;

/// The embedded default configuration (`natpass serve` with no file).
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// A configuration error, with the file and position when it comes from a file.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// TOML syntax, an unknown key or a bad value (the message names the key and line).
    #[error("{path}: {message}")]
    Parse {
        /// Path (or `<embedded default>`, `<command line>`).
        path: String,
        /// toml's message: line, column, the offending line and what was expected.
        message: String,
    },
    /// A value that parsed but does not make sense.
    #[error("{path}: key `{key}`: {message}")]
    Invalid {
        /// Path.
        path: String,
        /// Key path, e.g. `quota.max-lifetime`.
        key: String,
        /// What is wrong.
        message: String,
    },
}

macro_rules! from_str_de {
    ($t:ty) => {
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// A CIDR range (or a bare IP).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr(pub IpNet);
impl FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        parse_net(s).map(Cidr)
    }
}
from_str_de!(Cidr);

/// `MIN-MAX` relay port range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    /// First port.
    pub min: u16,
    /// Last port (inclusive).
    pub max: u16,
}
impl FromStr for PortRange {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad = || format!("`{s}` is not a port range (expected MIN-MAX, e.g. 49152-65535)");
        let (a, b) = s.split_once('-').ok_or_else(bad)?;
        let min: u16 = a.trim().parse().map_err(|_| bad())?;
        let max: u16 = b.trim().parse().map_err(|_| bad())?;
        if min == 0 || min > max {
            return Err(format!("`{s}`: MIN must be at least 1 and not above MAX"));
        }
        Ok(Self { min, max })
    }
}
from_str_de!(PortRange);

/// `PUBLIC` or `PUBLIC/PRIVATE`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExternalIp {
    /// Advertised.
    pub public: IpAddr,
    /// Bound (when different).
    pub private: Option<IpAddr>,
}
impl FromStr for ExternalIp {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let bad =
            |p: &str| format!("`{p}` is not an IP address (expected PUBLIC or PUBLIC/PRIVATE)");
        match s.split_once('/') {
            Some((p, q)) => {
                let public: IpAddr = p.trim().parse().map_err(|_| bad(p))?;
                let private: IpAddr = q.trim().parse().map_err(|_| bad(q))?;
                if public.is_ipv4() != private.is_ipv4() {
                    return Err(format!(
                        "`{s}`: PUBLIC and PRIVATE must be of the same family"
                    ));
                }
                Ok(Self {
                    public,
                    private: Some(private),
                })
            }
            None => Ok(Self {
                public: s.trim().parse().map_err(|_| bad(s))?,
                private: None,
            }),
        }
    }
}
from_str_de!(ExternalIp);

/// A static user: `NAME:PASSWORD` or `NAME:0xKEY` (MD5 of `NAME:REALM:PASSWORD`, as coturn).
#[derive(Clone, PartialEq, Eq)]
pub struct UserSpec {
    /// User name.
    pub name: String,
    secret: String,
}
impl fmt::Debug for UserSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserSpec({}:<redacted>)", self.name)
    }
}
impl FromStr for UserSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (name, secret) = s
            .split_once(':')
            .ok_or_else(|| "a user must be NAME:PASSWORD or NAME:0xKEY".to_owned())?;
        if name.is_empty() || secret.is_empty() {
            return Err(
                "a user must be NAME:PASSWORD or NAME:0xKEY with both parts non-empty".into(),
            );
        }
        if name.len() > 512 || secret.len() > 512 {
            return Err("user name and password are limited to 512 bytes".into());
        }
        Ok(Self {
            name: name.into(),
            secret: secret.into(),
        })
    }
}
from_str_de!(UserSpec);

/// Quotas and lifetimes (`[quota]`).
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
    /// TCP/TLS connections per client IP.
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
            connections_per_ip: 16,
            first_message_timeout: 10,
            idle_timeout: 60,
            tls_handshakes: 256,
            stream_buffer: 256 * 1024,
        }
    }
}

/// The file model. Every key is optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct FileConfig {
    /// UDP listen addresses.
    pub listen: Option<Vec<SocketAddr>>,
    /// RFC 5780 alternate address (A2:P2) for NAT behaviour discovery.
    pub alt_listen: Option<SocketAddr>,
    /// TLS listen addresses (TURN over TLS; plain TCP is accepted there too).
    pub tls_listen: Option<Vec<SocketAddr>>,
    /// PEM certificate chain.
    pub tls_cert: Option<std::path::PathBuf>,
    /// PEM private key.
    pub tls_key: Option<std::path::PathBuf>,
    /// HTTP listener for the demo page, signaling and credentials (absent: off).
    pub http: Option<SocketAddr>,
    /// HTTPS certificate chain for the HTTP listener.
    pub http_tls_cert: Option<std::path::PathBuf>,
    /// HTTPS key.
    pub http_tls_key: Option<std::path::PathBuf>,
    /// Serve HTTPS with a self-signed certificate generated at start.
    pub http_self_signed: Option<bool>,
    /// Host name put in the ICE server URLs handed to browsers (default: the page's host).
    pub public_host: Option<String>,
    /// Extra origins allowed to open the signaling WebSocket.
    pub allow_origins: Option<Vec<String>>,
    /// Lifetime of credentials handed to browsers (seconds).
    pub credential_ttl: Option<u64>,
    /// Participants per signaling room.
    pub room_size: Option<usize>,
    /// Separate listener for /metrics, /healthz, /readyz.
    pub metrics: Option<SocketAddr>,
    /// Admin API listener (default 127.0.0.1:8081 when a token is set).
    pub admin_listen: Option<SocketAddr>,
    /// Admin API bearer token (absent: admin API off).
    pub admin_token: Option<Secret>,
    /// Seconds existing allocations may keep relaying after SIGTERM/SIGINT.
    pub drain_seconds: Option<u64>,
    /// Log format: text or json.
    pub log_format: Option<String>,
    /// Realm.
    pub realm: Option<String>,
    /// Static users.
    pub users: Option<Vec<UserSpec>>,
    /// REST shared secrets.
    pub auth_secrets: Option<Vec<Secret>>,
    /// Maximum REST credential lifetime ahead of now (seconds).
    pub rest_max_ttl: Option<u64>,
    /// Nonce lifetime (seconds).
    pub nonce_lifetime: Option<u64>,
    /// Operator allow ranges (override the default deny list).
    pub allow_peers: Option<Vec<Cidr>>,
    /// Extra deny ranges.
    pub deny_peers: Option<Vec<Cidr>>,
    /// Relay IPs.
    pub relay_ips: Option<Vec<IpAddr>>,
    /// External (advertised) IPs.
    pub external_ips: Option<Vec<ExternalIp>>,
    /// Relay port range.
    pub relay_ports: Option<PortRange>,
    /// tracing filter.
    pub log: Option<String>,
    /// SOFTWARE attribute (none by default).
    pub software: Option<String>,
    /// Worker shards (default: one per CPU).
    pub threads: Option<usize>,
    /// Accept only RFC 8656 channel numbers 0x4000-0x4FFF (default: RFC 5766's 0x4000-0x7FFF).
    pub strict_channel_numbers: Option<bool>,
    /// Quotas.
    pub quota: Option<QuotaSection>,
}

/// Command-line overrides (each `Some`/non-empty value wins over the file).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `--listen`.
    pub listen: Vec<SocketAddr>,
    /// `--alt-listen`.
    pub alt_listen: Option<SocketAddr>,
    /// `--tls-listen`.
    pub tls_listen: Vec<SocketAddr>,
    /// `--tls-cert`.
    pub tls_cert: Option<std::path::PathBuf>,
    /// `--tls-key`.
    pub tls_key: Option<std::path::PathBuf>,
    /// `--http`.
    pub http: Option<SocketAddr>,
    /// `--http-tls-cert`.
    pub http_tls_cert: Option<std::path::PathBuf>,
    /// `--http-tls-key`.
    pub http_tls_key: Option<std::path::PathBuf>,
    /// `--http-self-signed`.
    pub http_self_signed: bool,
    /// `--public-host`.
    pub public_host: Option<String>,
    /// `--allow-origin`.
    pub allow_origins: Vec<String>,
    /// `--metrics`.
    pub metrics: Option<SocketAddr>,
    /// `--admin-listen`.
    pub admin_listen: Option<SocketAddr>,
    /// `--admin-token`.
    pub admin_token: Option<Secret>,
    /// `--drain-seconds`.
    pub drain_seconds: Option<u64>,
    /// `--log-format`.
    pub log_format: Option<String>,
    /// `--realm`.
    pub realm: Option<String>,
    /// `--user`.
    pub users: Vec<UserSpec>,
    /// `--auth-secret`.
    pub auth_secrets: Vec<Secret>,
    /// `--allow-peer`.
    pub allow_peers: Vec<Cidr>,
    /// `--deny-peer`.
    pub deny_peers: Vec<Cidr>,
    /// `--relay-ip`.
    pub relay_ips: Vec<IpAddr>,
    /// `--external-ip`.
    pub external_ips: Vec<ExternalIp>,
    /// `--relay-ports`.
    pub relay_ports: Option<PortRange>,
    /// `--log`.
    pub log: Option<String>,
    /// `--software`.
    pub software: Option<String>,
    /// `--threads`.
    pub threads: Option<usize>,
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct ValidConfig {
    /// UDP listen addresses.
    pub listen: Vec<SocketAddr>,
    /// RFC 5780 alternate address.
    pub alt_listen: Option<SocketAddr>,
    /// TLS listen addresses.
    pub tls_listen: Vec<SocketAddr>,
    /// Certificate and key files (both or neither).
    pub tls_files: Option<(std::path::PathBuf, std::path::PathBuf)>,
    /// The web side (None: no HTTP listener).
    pub http: Option<HttpConfig>,
    /// Separate metrics listener.
    pub metrics: Option<SocketAddr>,
    /// Admin API: (listen address, token).
    pub admin: Option<(SocketAddr, Secret)>,
    /// Drain period at shutdown.
    pub drain_seconds: u64,
    /// JSON logs.
    pub log_json: bool,
    /// Realm.
    pub realm: String,
    /// Credentials (keys only).
    pub credentials: Credentials,
    /// True when no credential was configured and a secret was generated.
    pub generated_secret: bool,
    /// Allow ranges.
    pub allow_peers: Vec<IpNet>,
    /// Deny ranges.
    pub deny_peers: Vec<IpNet>,
    /// Relay IPs given explicitly (empty: choose at start).
    pub relay_ips: Vec<IpAddr>,
    /// External IPs.
    pub external_ips: Vec<ExternalIp>,
    /// Relay ports.
    pub relay_ports: PortRange,
    /// Log filter.
    pub log: String,
    /// SOFTWARE.
    pub software: Option<String>,
    /// Shards.
    pub threads: usize,
    /// Nonce lifetime.
    pub nonce_lifetime: u64,
    /// RFC 8656 channel range only.
    pub strict_channel_numbers: bool,
    /// Quotas.
    pub quota: QuotaSection,
}

/// HTTPS on the web listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpTls {
    /// Plain HTTP.
    Off,
    /// Certificate and key files.
    Files(std::path::PathBuf, std::path::PathBuf),
    /// A self-signed certificate made at start.
    SelfSigned,
}

/// The web side's settings.
#[derive(Debug, Clone)]
pub struct HttpConfig {
    /// Listen address.
    pub addr: SocketAddr,
    /// HTTPS.
    pub tls: HttpTls,
    /// Host for ICE URLs.
    pub public_host: Option<String>,
    /// Extra WebSocket origins.
    pub allow_origins: Vec<String>,
    /// Browser credential lifetime.
    pub credential_ttl: u64,
    /// Room size cap.
    pub room_size: usize,
}

/// Parse TOML text (`origin` names it in errors).
pub fn parse_toml(text: &str, origin: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: origin.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })
}

/// Read and parse a file.
pub fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_toml(&text, &path.display().to_string())
}

impl ValidConfig {
    /// Merge `file` with `cli` and validate.
    pub fn build(file: FileConfig, cli: Overrides, origin: &str) -> Result<Self, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            path: origin.to_owned(),
            key: key.to_owned(),
            message,
        };
        fn pick<T>(cli: Vec<T>, file: Option<Vec<T>>) -> Vec<T> {
            if cli.is_empty() {
                file.unwrap_or_default()
            } else {
                cli
            }
        }
        let listen = pick(cli.listen, file.listen);
        let listen = if listen.is_empty() {
            vec![
                "0.0.0.0:3478".parse().expect("valid"),
                "[::]:3478".parse().expect("valid"),
            ]
        } else {
            listen
        };
        let alt_listen = cli.alt_listen.or(file.alt_listen);
        if let Some(alt) = alt_listen {
            let primary = listen
                .iter()
                .find(|l| l.is_ipv4() == alt.is_ipv4() && !l.ip().is_unspecified());
            match primary {
                None => {
                    return Err(invalid(
                        "alt-listen",
                        "needs a listen address of the same family that is not a wildcard".into(),
                    ));
                }
                Some(p) if p.ip() == alt.ip() || alt.ip().is_unspecified() => {
                    return Err(invalid(
                        "alt-listen",
                        "must be a second IP address, different from the listen address".into(),
                    ));
                }
                Some(p) if p.port() == alt.port() && alt.port() != 0 => {
                    return Err(invalid(
                        "alt-listen",
                        "must use a port other than the listen port".into(),
                    ));
                }
                Some(_) => {}
            }
        }
        let tls_listen = pick(cli.tls_listen, file.tls_listen);
        let tls_files = match (cli.tls_cert.or(file.tls_cert), cli.tls_key.or(file.tls_key)) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(invalid(
                    "tls-key",
                    "tls-cert is set but tls-key is not".into(),
                ));
            }
            (None, Some(_)) => {
                return Err(invalid(
                    "tls-cert",
                    "tls-key is set but tls-cert is not".into(),
                ));
            }
        };
        if !tls_listen.is_empty() && tls_files.is_none() {
            return Err(invalid("tls-listen", "needs tls-cert and tls-key".into()));
        }
        if let Some((c, k)) = &tls_files {
            crate::net::tls::load(c, k).map_err(|e| invalid("tls-cert", e.to_string()))?;
        }
        let rest_max_ttl = file.rest_max_ttl.unwrap_or(3600);
        let http = match cli.http.or(file.http) {
            None => None,
            Some(addr) => {
                let tls = match (
                    cli.http_tls_cert.or(file.http_tls_cert),
                    cli.http_tls_key.or(file.http_tls_key),
                ) {
                    (Some(c), Some(k)) => {
                        crate::net::tls::load(&c, &k)
                            .map_err(|e| invalid("http-tls-cert", e.to_string()))?;
                        HttpTls::Files(c, k)
                    }
                    (None, None) if cli.http_self_signed || file.http_self_signed == Some(true) => {
                        HttpTls::SelfSigned
                    }
                    (None, None) => HttpTls::Off,
                    _ => {
                        return Err(invalid(
                            "http-tls-cert",
                            "set both http-tls-cert and http-tls-key".into(),
                        ));
                    }
                };
                let public_host = cli.public_host.or(file.public_host);
                if let Some(h) = &public_host {
                    if h.is_empty()
                        || h.len() > 253
                        || !h
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b".-:".contains(&b))
                    {
                        return Err(invalid(
                            "public-host",
                            format!("`{h}` is not a host name or IP address"),
                        ));
                    }
                }
                let credential_ttl = file.credential_ttl.unwrap_or(600);
                if credential_ttl == 0 || credential_ttl > rest_max_ttl {
                    return Err(invalid(
                        "credential-ttl",
                        format!("must be between 1 and rest-max-ttl ({rest_max_ttl})"),
                    ));
                }
                let room_size = file.room_size.unwrap_or(8);
                if !(2..=64).contains(&room_size) {
                    return Err(invalid("room-size", "must be between 2 and 64".into()));
                }
                Some(HttpConfig {
                    addr,
                    tls,
                    public_host,
                    allow_origins: pick(cli.allow_origins, file.allow_origins),
                    credential_ttl,
                    room_size,
                })
            }
        };
        let realm = cli.realm.or(file.realm).unwrap_or_else(|| "natpass".into());
        if realm.is_empty() || realm.len() > 127 || realm.contains(['"', '\\']) {
            return Err(invalid(
                "realm",
                "must be 1–127 characters without quotes or backslashes".into(),
            ));
        }
        let quota = file.quota.unwrap_or_default();
        if quota.default_lifetime == 0 || quota.default_lifetime > quota.max_lifetime {
            return Err(invalid(
                "quota.default-lifetime",
                format!(
                    "must be between 1 and quota.max-lifetime ({})",
                    quota.max_lifetime
                ),
            ));
        }
        for (k, v) in [
            ("quota.allocations-per-user", quota.allocations_per_user),
            ("quota.allocations-per-ip", quota.allocations_per_ip),
            ("quota.total-allocations", quota.total_allocations),
            (
                "quota.permissions-per-allocation",
                quota.permissions_per_allocation,
            ),
            (
                "quota.channels-per-allocation",
                quota.channels_per_allocation,
            ),
        ] {
            if v == 0 {
                return Err(invalid(k, "must be at least 1".into()));
            }
        }
        if quota.channels_per_allocation > 4096 {
            return Err(invalid(
                "quota.channels-per-allocation",
                "at most 4096 channel numbers exist".into(),
            ));
        }
        for (k, v) in [
            ("quota.challenges-per-second", quota.challenges_per_second),
            (
                "quota.auth-failures-per-minute",
                quota.auth_failures_per_minute,
            ),
        ] {
            if !(v.is_finite() && v > 0.0) {
                return Err(invalid(k, "must be a positive number".into()));
            }
        }
        let rest_max_ttl = file.rest_max_ttl.unwrap_or(3600);
        if rest_max_ttl == 0 {
            return Err(invalid("rest-max-ttl", "must be at least 1 second".into()));
        }
        let nonce_lifetime = file.nonce_lifetime.unwrap_or(600);
        if !(10..=86_400).contains(&nonce_lifetime) {
            return Err(invalid(
                "nonce-lifetime",
                "must be between 10 and 86400 seconds".into(),
            ));
        }
        let mut credentials = Credentials::new(realm.clone(), rest_max_ttl);
        for u in pick(cli.users, file.users) {
            match auth::parse_hex_key(&u.secret) {
                Some(key) => credentials.add_user_key(&u.name, key),
                None if u.secret.starts_with("0x") && u.secret.len() == 34 => {
                    return Err(invalid(
                        "users",
                        format!("user `{}`: key is not 32 hex digits", u.name),
                    ));
                }
                None => credentials.add_user(&u.name, &u.secret),
            }
        }
        for s in pick(cli.auth_secrets, file.auth_secrets) {
            credentials.add_secret(s);
        }
        if credentials.secrets().len() > 8 {
            return Err(invalid(
                "auth-secrets",
                "at most 8 secrets may be active at once".into(),
            ));
        }
        // A secret is generated when nothing is configured, and when the web side is on
        // without one (it mints browser credentials from it; nothing else knows it).
        let generated_secret = credentials.is_empty()
            || (credentials.secrets().is_empty() && cli.http.or(file.http).is_some());
        if generated_secret {
            credentials.add_secret(Secret::generate());
        }
        let relay_ports = cli.relay_ports.or(file.relay_ports).unwrap_or(PortRange {
            min: 49152,
            max: 65535,
        });
        let threads = cli
            .threads
            .or(file.threads)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        if threads == 0 || threads > 256 {
            return Err(invalid("threads", "must be between 1 and 256".into()));
        }
        let log = cli.log.or(file.log).unwrap_or_else(|| "info".into());
        if tracing_subscriber::EnvFilter::try_new(&log).is_err() {
            return Err(invalid(
                "log",
                format!("`{log}` is not a tracing filter (e.g. info, natpass=debug)"),
            ));
        }
        for (k, v) in [
            ("quota.connections-per-ip", quota.connections_per_ip as u64),
            ("quota.first-message-timeout", quota.first_message_timeout),
            ("quota.idle-timeout", quota.idle_timeout),
            ("quota.tls-handshakes", quota.tls_handshakes as u64),
        ] {
            if v == 0 {
                return Err(invalid(k, "must be at least 1".into()));
            }
        }
        if quota.stream_buffer < 70_000 {
            return Err(invalid(
                "quota.stream-buffer",
                "must hold at least one full frame (70000 bytes)".into(),
            ));
        }
        let admin = match (
            cli.admin_token.or(file.admin_token),
            cli.admin_listen.or(file.admin_listen),
        ) {
            (Some(t), l) => {
                if t.expose().len() < 16 {
                    return Err(invalid(
                        "admin-token",
                        "must be at least 16 characters".into(),
                    ));
                }
                Some((
                    l.unwrap_or_else(|| "127.0.0.1:8081".parse().expect("valid")),
                    t,
                ))
            }
            (None, Some(_)) => return Err(invalid("admin-listen", "needs admin-token".into())),
            (None, None) => None,
        };
        let drain_seconds = cli.drain_seconds.or(file.drain_seconds).unwrap_or(5);
        if drain_seconds > 3600 {
            return Err(invalid("drain-seconds", "must be at most 3600".into()));
        }
        let log_json = match cli.log_format.or(file.log_format).as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => {
                return Err(invalid(
                    "log-format",
                    format!("`{other}`: expected text or json"),
                ));
            }
        };
        Ok(Self {
            metrics: cli.metrics.or(file.metrics),
            admin,
            drain_seconds,
            log_json,
            listen,
            alt_listen,
            tls_listen,
            tls_files,
            http,
            realm,
            credentials,
            generated_secret,
            allow_peers: pick(cli.allow_peers, file.allow_peers)
                .into_iter()
                .map(|c| c.0)
                .collect(),
            deny_peers: pick(cli.deny_peers, file.deny_peers)
                .into_iter()
                .map(|c| c.0)
                .collect(),
            relay_ips: pick(cli.relay_ips, file.relay_ips),
            external_ips: pick(cli.external_ips, file.external_ips),
            relay_ports,
            log,
            software: cli.software.or(file.software).filter(|s| !s.is_empty()),
            threads,
            nonce_lifetime,
            strict_channel_numbers: file.strict_channel_numbers.unwrap_or(false),
            quota,
        })
    }

    /// The embedded default with these overrides.
    pub fn embedded(cli: Overrides) -> Result<Self, ConfigError> {
        let file = parse_toml(DEFAULT_TOML, "<embedded default>")?;
        Self::build(file, cli, "<embedded default>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_key_is_an_error_naming_key_and_line() {
        let e = parse_toml("realm = \"x\"\n\nlistne = [\"1.2.3.4:5\"]\n", "t.toml").unwrap_err();
        let m = e.to_string();
        assert!(m.contains("listne") && m.contains("line 3"), "{m}");
    }

    #[test]
    fn bad_values_name_their_line() {
        let e = parse_toml("relay-ports = \"9-3\"\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 1") && e.contains("MIN"), "{e}");
        let e = parse_toml("\nallow-peers = [\"10.0.0.0/40\"]\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2") && e.contains("10.0.0.0/40"), "{e}");
        let e = parse_toml("[quota]\nmax-lifetime = \"x\"\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
    }

    #[test]
    fn command_line_wins_and_validation_names_key_path() {
        let file = parse_toml("realm = \"file\"\nlisten = [\"127.0.0.1:1\"]\n", "f").unwrap();
        let cli = Overrides {
            realm: Some("cli".into()),
            ..Default::default()
        };
        let v = ValidConfig::build(file, cli, "f").unwrap();
        assert_eq!(v.realm, "cli");
        assert_eq!(v.listen, vec!["127.0.0.1:1".parse::<SocketAddr>().unwrap()]);
        assert!(v.generated_secret);
        let file = parse_toml("[quota]\ndefault-lifetime = 7200\n", "f").unwrap();
        let e = ValidConfig::build(file, Overrides::default(), "f")
            .unwrap_err()
            .to_string();
        assert!(e.contains("quota.default-lifetime"), "{e}");
    }

    #[test]
    fn users_by_password_and_by_key_and_secrets() {
        let file = parse_toml(
            "users = [\"alice:pw\", \"bob:0x00112233445566778899aabbccddeeff\"]\nauth-secrets = [\"s1\"]\n",
            "f",
        )
        .unwrap();
        let v = ValidConfig::build(file, Overrides::default(), "f").unwrap();
        assert!(!v.generated_secret);
        let (k, _) = v.credentials.keys_for("alice", 0).unwrap();
        assert_eq!(
            k.as_slice()[0],
            auth::long_term_key("alice", "natpass", "pw")
        );
        let (k, _) = v.credentials.keys_for("bob", 0).unwrap();
        assert_eq!(k.as_slice()[0][0], 0x00);
        assert_eq!(k.as_slice()[0][15], 0xff);
        assert!(format!("{:?}", v).find("pw\"").is_none());
    }

    #[test]
    fn external_ip_forms() {
        let e: ExternalIp = "203.0.113.5/10.0.0.5".parse().unwrap();
        assert_eq!(e.private, Some("10.0.0.5".parse().unwrap()));
        assert!("203.0.113.5/::1".parse::<ExternalIp>().is_err());
        assert!("nope".parse::<ExternalIp>().is_err());
    }
}
