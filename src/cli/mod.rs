//! Command line: `natpass serve`, `check-config`, `credential`, `probe …`, `peer`.

pub mod probe;

use crate::config::{self, Settings, ValidConfig};
use clap::{Args, Parser, Subcommand};
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
    /// Check a configuration on this machine: config, certificates, DNS against the public
    /// address, relay ports, browser-refused ports, realm, web exposure, UDP buffers; each
    /// finding with its fix (exit 1 when something is wrong).
    Doctor(Box<DoctorArgs>),
}

/// `natpass doctor` flags: the same as `serve`'s, plus what the checks may reach.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// The configuration to check (file and flags, as `natpass serve` takes them).
    #[command(flatten)]
    pub serve: ServeArgs,
    /// STUN server asked which public address this machine has ("none": skip).
    #[arg(
        long,
        value_name = "HOST:PORT",
        default_value = "stun.l.google.com:19302"
    )]
    pub stun_server: String,
    /// Do not resolve the domain names.
    #[arg(long)]
    pub no_dns: bool,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `natpass serve` flags: a config file plus the settings, every one of which overrides the file.
#[derive(Debug, Args, Default)]
pub struct ServeArgs {
    /// TOML config file (default: the embedded default).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Every setting (the same model as the file's keys).
    #[command(flatten)]
    pub settings: Settings,
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
    /// The server's config file, to warn when --ttl is above its `rest-max-ttl` (without it,
    /// the default limit is assumed).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print an RTCIceServer JSON entry (needs --uri) instead of two lines.
    #[arg(long, requires = "uri")]
    pub json: bool,
    /// TURN URI(s) for --json, e.g. turn:turn.example.org:3478.
    #[arg(long)]
    pub uri: Vec<String>,
}

impl CredentialArgs {
    /// A warning when the credential would be refused for being valid longer than the server's
    /// `rest-max-ttl` (read from `--config`, else the default).
    pub fn ttl_warning(&self) -> Result<Option<String>, config::ConfigError> {
        let (limit, whose) = match &self.config {
            Some(path) => (
                ValidConfig::load(Some(path), Settings::default())?
                    .credentials
                    .rest_max_ttl(),
                format!("{}'s rest-max-ttl", path.display()),
            ),
            None => (
                config::defaults::REST_MAX_TTL,
                "the default rest-max-ttl".to_owned(),
            ),
        };
        Ok((self.ttl > limit).then(|| {
            format!(
                "--ttl {} is above {whose} ({limit} s): a natpass server with that \
                 limit refuses this credential (401) until it expires in less than {limit} s",
                self.ttl
            )
        }))
    }
}

impl ServeArgs {
    /// Load the config file (or the embedded default) and apply these flags.
    pub fn to_config(&self) -> Result<ValidConfig, config::ConfigError> {
        ValidConfig::load(self.config.as_deref(), self.settings.clone())
    }
}

/// The URL a phone should open, of those `serve` prints: the public HTTPS one, else the LAN
/// HTTPS one (a camera needs HTTPS off localhost).
pub fn phone_url<'a>(urls: &'a [(&'static str, String)]) -> Option<(&'static str, &'a str)> {
    urls.iter()
        .rev()
        .find(|(w, u)| *w != "this machine" && u.starts_with("https://"))
        .map(|(w, u)| (*w, u.as_str()))
}

/// A QR code of `url` drawn with Unicode half blocks (two rows per line), quiet zone included.
pub fn qr_text(url: &str) -> Result<String, String> {
    qr(url).map(|code| {
        code.render::<qrcode::render::unicode::Dense1x2>()
            .quiet_zone(true)
            .build()
    })
}

/// The QR code [`qr_text`] draws.
pub fn qr(url: &str) -> Result<qrcode::QrCode, String> {
    qrcode::QrCode::new(url.as_bytes()).map_err(|e| e.to_string())
}

/// How every command begins an error line on stderr.
pub const ERROR: &str = "natpass: error: ";
/// How every command begins a warning line on stderr.
pub const WARNING: &str = "natpass: warning: ";

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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn serve(args: &[&str]) -> ServeArgs {
        let mut argv = vec!["natpass", "serve"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv).unwrap().command {
            Command::Serve(a) => *a,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn flags_fill_the_same_settings_as_the_file() {
        let a = serve(&[
            "--http-self-signed",
            "--user",
            "a:b",
            "--user",
            "c:d",
            "--relay-ports",
            "50000-50010",
            "--strict-channel-numbers",
            "false",
            "--credential-ttl",
            "60",
        ]);
        let s = &a.settings;
        assert_eq!(s.http_self_signed, Some(true), "a bare switch means true");
        assert_eq!(s.users.len(), 2);
        assert_eq!(s.relay_ports.map(|r| (r.min, r.max)), Some((50000, 50010)));
        assert_eq!(s.strict_channel_numbers, Some(false));
        assert_eq!(s.credential_ttl, Some(60));
        assert!(
            s.listen.is_empty() && s.realm.is_none(),
            "unset stays unset"
        );
        let file = config::parse_toml(
            "users = [\"a:b\", \"c:d\"]\nrelay-ports = \"50000-50010\"\nhttp-self-signed = true\n",
            "f",
        )
        .unwrap();
        assert_eq!(file.users, s.users);
        assert_eq!(file.relay_ports, s.relay_ports);
        assert_eq!(file.http_self_signed, s.http_self_signed);
    }
}
