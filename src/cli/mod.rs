//! Command line: `natpass serve`, `check-config`, `credential`, `probe …`, `peer`.

pub mod probe;

use crate::config::{self, Cidr, ExternalIp, Overrides, PortRange, UserSpec, ValidConfig};
use clap::{Args, Parser, Subcommand};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// natpass: STUN/TURN NAT-traversal server.
#[derive(Debug, Parser)]
#[command(name = "natpass", version, about)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the STUN/TURN server.
    Serve(Box<ServeArgs>),
    /// Validate a config file and print its errors (exit 1 on error).
    CheckConfig {
        /// The TOML file.
        file: PathBuf,
    },
    /// Print a TURN REST API credential minted from a shared secret.
    Credential(CredentialArgs),
    /// Check, diagnose and load any STUN/TURN server.
    #[command(subcommand)]
    Probe(probe::ProbeCmd),
    /// A UDP echo peer (like turnutils_peer).
    Peer(probe::PeerArgs),
}

/// `natpass serve` flags; every one overrides the config file.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// TOML config file (default: the embedded default).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Listen address for STUN/TURN (repeatable).
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Vec<SocketAddr>,
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
    /// HTTPS certificate chain for --http.
    #[arg(long, value_name = "FILE")]
    pub http_tls_cert: Option<PathBuf>,
    /// HTTPS key for --http.
    #[arg(long, value_name = "FILE")]
    pub http_tls_key: Option<PathBuf>,
    /// Serve --http over HTTPS with a self-signed certificate made at start (phones on a LAN).
    #[arg(long)]
    pub http_self_signed: bool,
    /// Host name or IP put in the ICE server URLs handed to browsers.
    #[arg(long, value_name = "NAME")]
    pub public_host: Option<String>,
    /// Extra origin allowed to open the signaling WebSocket (repeatable).
    #[arg(long, value_name = "ORIGIN")]
    pub allow_origin: Vec<String>,
    /// Separate listener for /metrics, /healthz and /readyz.
    #[arg(long, value_name = "ADDR:PORT")]
    pub metrics: Option<SocketAddr>,
    /// Admin API listener (default 127.0.0.1:8081 when a token is set).
    #[arg(long, value_name = "ADDR:PORT")]
    pub admin_listen: Option<SocketAddr>,
    /// Admin API bearer token (prefer the config file or NATPASS_ADMIN_TOKEN: flags show in ps).
    #[arg(
        long,
        value_name = "TOKEN",
        env = "NATPASS_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<crate::auth::Secret>,
    /// Seconds existing allocations keep relaying after SIGTERM/SIGINT (default 5).
    #[arg(long, value_name = "N")]
    pub drain_seconds: Option<u64>,
    /// Log format: text or json.
    #[arg(long, value_name = "FORMAT")]
    pub log_format: Option<String>,
    /// RFC 5780 alternate address (a second IP and port) for NAT behaviour discovery.
    #[arg(long, value_name = "ADDR:PORT")]
    pub alt_listen: Option<SocketAddr>,
    /// Realm for long-term credentials.
    #[arg(long, value_name = "NAME")]
    pub realm: Option<String>,
    /// Static user NAME:PASSWORD or NAME:0xKEY (repeatable).
    #[arg(long, value_name = "NAME:PASSWORD")]
    pub user: Vec<UserSpec>,
    /// TURN REST API shared secret (repeatable, for rotation).
    #[arg(long, value_name = "SECRET")]
    pub auth_secret: Vec<crate::auth::Secret>,
    /// Peer range to allow despite the default deny list (repeatable).
    #[arg(long, value_name = "CIDR")]
    pub allow_peer: Vec<Cidr>,
    /// Extra peer range to deny (repeatable).
    #[arg(long, value_name = "CIDR")]
    pub deny_peer: Vec<Cidr>,
    /// Relay IP (repeatable). Default: the address routing to the internet, or the listen IP.
    #[arg(long, value_name = "IP")]
    pub relay_ip: Vec<IpAddr>,
    /// Advertised IP behind 1:1 NAT: PUBLIC or PUBLIC/PRIVATE (repeatable, one per family).
    #[arg(long, value_name = "IP[/IP]")]
    pub external_ip: Vec<ExternalIp>,
    /// Relay port range.
    #[arg(long, value_name = "MIN-MAX")]
    pub relay_ports: Option<PortRange>,
    /// tracing filter, e.g. `info` or `natpass=debug`.
    #[arg(long, value_name = "FILTER")]
    pub log: Option<String>,
    /// SOFTWARE attribute to send (none by default).
    #[arg(long, value_name = "TEXT")]
    pub software: Option<String>,
    /// Worker shards (default: one per CPU).
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

/// `natpass credential` flags.
#[derive(Debug, Args)]
pub struct CredentialArgs {
    /// The shared secret (as configured with --auth-secret).
    #[arg(long)]
    pub secret: crate::auth::Secret,
    /// The user name part of the REST username.
    #[arg(long)]
    pub user: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 600)]
    pub ttl: u64,
    /// Print an RTCIceServer JSON entry (needs --uri) instead of two lines.
    #[arg(long)]
    pub json: bool,
    /// TURN URI(s) for --json, e.g. turn:turn.example.org:3478.
    #[arg(long)]
    pub uri: Vec<String>,
}

impl ServeArgs {
    /// Load the config file (or the embedded default) and apply these flags.
    pub fn to_config(&self) -> Result<ValidConfig, config::ConfigError> {
        let cli = Overrides {
            listen: self.listen.clone(),
            alt_listen: self.alt_listen,
            tls_listen: self.tls_listen.clone(),
            tls_cert: self.tls_cert.clone(),
            tls_key: self.tls_key.clone(),
            http: self.http,
            http_tls_cert: self.http_tls_cert.clone(),
            http_tls_key: self.http_tls_key.clone(),
            http_self_signed: self.http_self_signed,
            public_host: self.public_host.clone(),
            allow_origins: self.allow_origin.clone(),
            metrics: self.metrics,
            admin_listen: self.admin_listen,
            admin_token: self.admin_token.clone(),
            drain_seconds: self.drain_seconds,
            log_format: self.log_format.clone(),
            realm: self.realm.clone(),
            users: self.user.clone(),
            auth_secrets: self.auth_secret.clone(),
            allow_peers: self.allow_peer.clone(),
            deny_peers: self.deny_peer.clone(),
            relay_ips: self.relay_ip.clone(),
            external_ips: self.external_ip.clone(),
            relay_ports: self.relay_ports,
            log: self.log.clone(),
            software: self.software.clone(),
            threads: self.threads,
        };
        match &self.config {
            Some(path) => {
                let file = config::load_file(path)?;
                ValidConfig::build(file, cli, &path.display().to_string())
            }
            None => ValidConfig::embedded(cli),
        }
    }
}

/// JSON string escaping for the few strings we print.
pub fn json_str(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => o.push_str(&format!("\\u{:04x}", c as u32)),
            c => o.push(c),
        }
    }
    o.push('"');
    o
}
