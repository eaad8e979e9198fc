//! Configuration: one model of every setting ([`Settings`]), which is both the `natpass serve`
//! flags and the TOML file (kebab-case keys; an unknown key is an error that names the key and
//! its line). The command line wins over the file, the file over the defaults (all in
//! [`defaults`]); validation, one function per section, turns the result into a
//! [`ValidConfig`]. `natpass serve` without `--config` uses the embedded
//! `config/default.toml`.

pub mod defaults;
mod sections;
mod settings;
mod values;

pub use settings::{Layer, QuotaSection, Settings};
pub use values::{Cidr, ExternalIp, PortRange, UserSpec};

use crate::auth::{Credentials, Secret};
use ipnet::IpNet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

/// The embedded default configuration (`natpass serve` with no file).
pub const DEFAULT_TOML: &str = include_str!("../../config/default.toml");

/// The file model: the same struct as the command line's.
pub type FileConfig = Settings;
/// The command line's layer: the same struct as the file's.
pub type Overrides = Settings;

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
    #[error("{path}: {}key `{key}`: {message}", line.map(|l| format!("line {l}: ")).unwrap_or_default())]
    Invalid {
        /// Path.
        path: String,
        /// Key path, e.g. `quota.max-lifetime`.
        key: String,
        /// The line of the file that sets the key, when a file does.
        line: Option<usize>,
        /// What is wrong.
        message: String,
    },
    /// More than one of the above: every error of a file at once, one per line.
    #[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
    Several(Vec<ConfigError>),
    /// A reload was asked of a configuration that was not loaded from a file or the embedded
    /// default.
    #[error("this configuration was built in code; there is no file to reload")]
    NoSource,
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
    /// Certificate and key files (both or neither); read when the server starts.
    pub tls_files: Option<(PathBuf, PathBuf)>,
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
    /// Where new Allocates are sent while draining (300 Try Alternate).
    pub alternate_servers: Vec<SocketAddr>,
    /// This process's SFU sockets: the one port of natpass's own that relays may reach
    /// (issue 15; no setting yet — the SFU joins `serve` with its signaling and page).
    pub sfu_addrs: Vec<SocketAddr>,
    /// Shards.
    pub threads: usize,
    /// Nonce lifetime.
    pub nonce_lifetime: u64,
    /// RFC 8656 channel range only.
    pub strict_channel_numbers: bool,
    /// Quotas.
    pub quota: QuotaSection,
    /// Where state kept across restarts lives (None: nowhere, made anew each start).
    pub state_dir: Option<PathBuf>,
    /// Certificates from ACME (`domain`), when no `tls-cert` is given.
    pub acme: Option<AcmeConfig>,
    /// Interfaces for the XDP fast path (empty: off).
    pub xdp_interfaces: Vec<String>,
    /// Where this config came from, to read it again on reload.
    source: Option<Source>,
}

/// A file (or the embedded default) plus the command line's layer.
#[derive(Debug, Clone)]
struct Source {
    file: Option<PathBuf>,
    cli: Settings,
}

/// HTTPS on the web listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpTls {
    /// Plain HTTP.
    Off,
    /// Certificate and key files (read when the listener starts).
    Files(PathBuf, PathBuf),
    /// A self-signed certificate made at start.
    SelfSigned,
    /// `http` is also a `tls-listen` address: one port for the page and TURN over TLS (and
    /// plain TURN over TCP), split per connection, with TURN's certificate (`tls-cert`).
    SharedWithTurn,
    /// TURN's certificate (from ACME, `domain`) on an HTTPS port of its own.
    TurnCertificate,
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
    /// Redis URL shared by the nodes of one deployment.
    pub redis: Option<String>,
    /// The SFU (None: `sfu = false`, rooms stay meshes).
    pub sfu: Option<SfuConfig>,
}

/// Certificates from an ACME CA (RFC 8555).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AcmeConfig {
    /// The names on the certificate.
    pub domains: Vec<String>,
    /// The CA's directory URL.
    pub directory: String,
    /// Account contact.
    pub email: Option<String>,
    /// A CA to trust for the directory's HTTPS.
    pub ca_root: Option<PathBuf>,
    /// Renew this long before expiry.
    pub renew_before: std::time::Duration,
    /// Where the account and certificate are kept (`state-dir/acme`).
    pub dir: PathBuf,
    /// Which challenge to answer.
    pub challenge: AcmeChallenge,
}

/// How natpass proves it holds the name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcmeChallenge {
    /// RFC 8737, on the TLS port (the CA connects to 443).
    TlsAlpn01,
    /// RFC 8555 §8.3, plain HTTP on this address (the CA connects to port 80).
    Http01(std::net::SocketAddr),
}

/// The SFU's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SfuConfig {
    /// UDP address (None: next to the first TURN listener, chosen at start).
    pub listen: Option<SocketAddr>,
    /// Rooms move to the SFU past this many participants.
    pub mesh_size: usize,
    /// Participants per SFU room.
    pub room_size: usize,
    /// A participant silent this long is removed.
    pub timeout: std::time::Duration,
    /// Whether to offer ICE-TCP on the same port number.
    pub tcp: bool,
}

/// Parse TOML text (`origin` names it in errors).
pub fn parse_toml(text: &str, origin: &str) -> Result<FileConfig, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Parse {
        path: origin.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })
}

fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })
}

/// Read and parse a file.
pub fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    parse_toml(&read(path)?, &path.display().to_string())
}

/// toml stops at the first unknown key or bad value; to report every one, each top-level key
/// (and each key of `[quota]`) is tried on its own. `first` is returned when that finds nothing
/// more precise (a syntax error, say).
fn every_key_error(text: &str, origin: &str, first: ConfigError) -> ConfigError {
    let Ok(table) = text.parse::<toml::Table>() else {
        return first;
    };
    let mut errors = Vec::new();
    let mut try_one = |key: String, value: toml::Value| {
        if let Err(e) = value.try_into::<Settings>() {
            let message = e.message().lines().next().unwrap_or("").trim().to_owned();
            errors.push(ConfigError::Invalid {
                path: origin.to_owned(),
                line: line_of(text, &key),
                key,
                message,
            });
        }
    };
    for (k, v) in table {
        match v {
            toml::Value::Table(q) if k == "quota" => {
                for (qk, qv) in q {
                    let mut inner = toml::Table::new();
                    inner.insert(qk.clone(), qv);
                    let mut outer = toml::Table::new();
                    outer.insert(k.clone(), toml::Value::Table(inner));
                    try_one(format!("quota.{qk}"), toml::Value::Table(outer));
                }
            }
            v => {
                let mut one = toml::Table::new();
                one.insert(k.clone(), v);
                try_one(k, toml::Value::Table(one));
            }
        }
    }
    match errors.len() {
        0 => first,
        1 => errors.remove(0),
        _ => {
            errors.sort_by_key(|e| match e {
                ConfigError::Invalid { line, .. } => line.unwrap_or(usize::MAX),
                _ => usize::MAX,
            });
            ConfigError::Several(errors)
        }
    }
}

/// Whether the file sets top-level `key` to an empty array (which the layers would otherwise
/// read as "not set").
fn sets_empty_list(text: &str, key: &str) -> bool {
    text.parse::<toml::Table>()
        .ok()
        .and_then(|t| t.get(key).cloned())
        .is_some_and(|v| v.as_array().is_some_and(|a| a.is_empty()))
}

/// The 1-based line of the file at `path` that sets `key` (`name` or `table.name`), if one does.
pub fn line_in_file(path: &Path, key: &str) -> Option<usize> {
    line_of(&std::fs::read_to_string(path).ok()?, key)
}

/// The 1-based line of `text` that sets `key` (`name` or `table.name`), if one does.
fn line_of(text: &str, key: &str) -> Option<usize> {
    let (table, name) = key.rsplit_once('.').unwrap_or(("", key));
    let mut current = "";
    for (i, line) in text.lines().enumerate() {
        let t = line.trim();
        if let Some(h) = t.strip_prefix('[').and_then(|r| r.strip_suffix(']')) {
            current = h.trim();
        } else if current == table
            && t.split_once('=')
                .is_some_and(|(k, _)| k.trim().trim_matches('"') == name)
        {
            return Some(i + 1);
        }
    }
    None
}

impl ValidConfig {
    /// Load `file` (None: the embedded default), put `cli` over it and validate. Errors name
    /// the key and the line that sets it. The result remembers both, for [`Self::reread`].
    pub fn load(file: Option<&Path>, cli: Settings) -> Result<Self, ConfigError> {
        Self::load_keeping(file, cli, None)
    }

    /// Read the same file with the same command line again (a reload). A secret this config
    /// generated is kept, so credentials minted from it stay valid.
    pub fn reread(&self) -> Result<Self, ConfigError> {
        let src = self.source.as_ref().ok_or(ConfigError::NoSource)?;
        let keep = self
            .generated_secret
            .then(|| self.credentials.secrets().first().cloned())
            .flatten();
        Self::load_keeping(src.file.as_deref(), src.cli.clone(), keep)
    }

    fn load_keeping(
        file: Option<&Path>,
        cli: Settings,
        keep: Option<Secret>,
    ) -> Result<Self, ConfigError> {
        let (text, origin) = match file {
            Some(p) => (read(p)?, p.display().to_string()),
            None => (DEFAULT_TOML.to_owned(), "<embedded default>".to_owned()),
        };
        // `natpass serve --domain NAME` on the embedded default: the page and TURN over TLS on
        // one public port, not the demo's loopback HTTP port.
        let mut cli = cli;
        if file.is_none() && !cli.domain.is_empty() && cli.http.is_none() {
            cli.http = Some(defaults::DOMAIN_LISTEN);
        }
        let parsed = parse_toml(&text, &origin).map_err(|e| every_key_error(&text, &origin, e))?;
        let with_line = |e: ConfigError| match e {
            ConfigError::Invalid {
                path, key, message, ..
            } => ConfigError::Invalid {
                line: line_of(&text, &key),
                path,
                key,
                message,
            },
            e => e,
        };
        let empty_listen = cli.listen.is_empty() && sets_empty_list(&text, "listen");
        let mut v = Self::validate(parsed, cli.clone(), &origin, keep);
        if empty_listen {
            let e = ConfigError::Invalid {
                path: origin.clone(),
                key: "listen".into(),
                line: None,
                message: "an empty list would listen nowhere (remove the key to listen on \
                          0.0.0.0:3478 and [::]:3478)"
                    .into(),
            };
            v = Err(match v {
                Ok(_) => e,
                Err(ConfigError::Several(mut all)) => {
                    all.insert(0, e);
                    ConfigError::Several(all)
                }
                Err(other) => ConfigError::Several(vec![e, other]),
            });
        }
        let mut v = v.map_err(|e| match e {
            ConfigError::Several(all) => {
                ConfigError::Several(all.into_iter().map(with_line).collect())
            }
            e => with_line(e),
        })?;
        v.source = Some(Source {
            file: file.map(Path::to_path_buf),
            cli,
        });
        Ok(v)
    }

    /// Put `cli` over `file` and validate (`origin` names the file in errors).
    pub fn build(file: FileConfig, cli: Overrides, origin: &str) -> Result<Self, ConfigError> {
        Self::validate(file, cli, origin, None)
    }

    /// The embedded default with these overrides.
    pub fn embedded(cli: Overrides) -> Result<Self, ConfigError> {
        Self::load(None, cli)
    }

    fn validate(
        file: Settings,
        cli: Settings,
        origin: &str,
        keep: Option<Secret>,
    ) -> Result<Self, ConfigError> {
        let bad = |e: sections::Invalid| ConfigError::Invalid {
            path: origin.to_owned(),
            key: e.key.to_owned(),
            line: None,
            message: e.message,
        };
        let s = cli.over(file);
        // Every section is checked, so one run reports every error.
        let mut errors = Vec::new();
        let mut keep_err = |e: sections::Invalid| errors.push(bad(e));
        let l = sections::listeners(&s).map_err(&mut keep_err).ok();
        let auth = sections::auth(&s, keep).map_err(&mut keep_err).ok();
        let rest_max_ttl = auth
            .as_ref()
            .map_or(defaults::REST_MAX_TTL, |a| a.rest_max_ttl);
        let http = sections::http(&s, rest_max_ttl).map_err(&mut keep_err).ok();
        let quota = sections::quota(s.quota.clone().unwrap_or_default())
            .map_err(&mut keep_err)
            .ok();
        let ops = sections::operations(&s).map_err(&mut keep_err).ok();
        let xdp_interfaces = sections::xdp(&s).map_err(&mut keep_err).ok();
        let state_dir = s.state_dir.clone().or_else(defaults::state_dir);
        let acme = sections::acme(&s, state_dir.as_deref())
            .map_err(&mut keep_err)
            .ok()
            .flatten();
        if let (Some(l), Some(http), Some(ops)) = (&l, &http, &ops) {
            for e in sections::listener_clashes(l, http.as_ref(), ops) {
                keep_err(e);
            }
        }
        let (Some(l), Some(auth), Some(http), Some(quota), Some(ops)) = (l, auth, http, quota, ops)
        else {
            return Err(if errors.len() == 1 {
                errors.remove(0)
            } else {
                ConfigError::Several(errors)
            });
        };
        if !errors.is_empty() {
            return Err(if errors.len() == 1 {
                errors.remove(0)
            } else {
                ConfigError::Several(errors)
            });
        }
        let nets = |v: Vec<Cidr>| v.into_iter().map(|c| c.0).collect();
        Ok(Self {
            listen: l.listen,
            alt_listen: l.alt_listen,
            tls_listen: l.tls_listen,
            tls_files: l.tls_files,
            relay_ips: l.relay_ips,
            external_ips: l.external_ips,
            relay_ports: l.relay_ports,
            threads: l.threads,
            http,
            metrics: ops.metrics,
            admin: ops.admin,
            drain_seconds: ops.drain_seconds,
            log: ops.log,
            log_json: ops.log_json,
            realm: auth.realm,
            credentials: auth.credentials,
            generated_secret: auth.generated_secret,
            nonce_lifetime: auth.nonce_lifetime,
            allow_peers: nets(s.allow_peers),
            deny_peers: nets(s.deny_peers),
            software: s.software.filter(|s| !s.is_empty()),
            alternate_servers: s.alternate_servers,
            sfu_addrs: Vec::new(),
            strict_channel_numbers: s
                .strict_channel_numbers
                .unwrap_or(defaults::STRICT_CHANNEL_NUMBERS),
            quota,
            state_dir: s.state_dir.clone().or_else(defaults::state_dir),
            acme,
            xdp_interfaces: xdp_interfaces.unwrap_or_default(),
            source: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth;

    #[test]
    fn xdp_interface_takes_a_name_or_a_list_and_names_a_bad_one() {
        let one = parse_toml("xdp-interface = \"eth0\"\n", "t.toml").unwrap();
        let v = ValidConfig::build(one, Overrides::default(), "t.toml").unwrap();
        assert_eq!(v.xdp_interfaces, vec!["eth0"]);
        let many = parse_toml("xdp-interface = [\"xc\", \"xp\", \"xc\"]\n", "t.toml").unwrap();
        let v = ValidConfig::build(many, Overrides::default(), "t.toml").unwrap();
        assert_eq!(v.xdp_interfaces, vec!["xc", "xp"]);
        let none = ValidConfig::embedded(Overrides::default()).unwrap();
        assert!(none.xdp_interfaces.is_empty(), "off by default");
        let bad = parse_toml("xdp-interface = \"a-name-far-too-long\"\n", "t.toml").unwrap();
        let e = ValidConfig::build(bad, Overrides::default(), "t.toml")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("xdp-interface") && e.contains("a-name-far-too-long"),
            "{e}"
        );
        let e = parse_toml("\nxdp-interface = 7\n", "t.toml")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 2"), "{e}");
    }

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

    fn temp_file(tag: &str, text: &str) -> PathBuf {
        let p =
            std::env::temp_dir().join(format!("natpass-config-{tag}-{}.toml", std::process::id()));
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn the_sfu_runs_with_the_demo_and_its_keys_are_checked() {
        let cfg = |text: &str| {
            ValidConfig::build(parse_toml(text, "f").unwrap(), Overrides::default(), "f")
        };
        let on = cfg("http = \"127.0.0.1:8080\"\n").unwrap();
        let sfu = on.http.unwrap().sfu.expect("on by default with the demo");
        assert_eq!((sfu.listen, sfu.mesh_size, sfu.room_size), (None, 4, 25));
        assert_eq!(sfu.timeout, std::time::Duration::from_secs(10));
        assert!(sfu.tcp, "ICE-TCP on by default");
        let off = cfg("http = \"127.0.0.1:8080\"\nsfu = false\n").unwrap();
        assert_eq!(off.http.unwrap().sfu, None);
        let set = cfg(
            "http = \"127.0.0.1:8080\"\nsfu-listen = \"127.0.0.1:4000\"\nmesh-size = 3\nsfu-room-size = 50\nsfu-timeout = 30\nsfu-tcp = false\n",
        )
        .unwrap();
        let small = cfg("http = \"127.0.0.1:8080\"\nroom-size = 2\n").unwrap();
        assert_eq!(
            small.http.unwrap().sfu.unwrap().mesh_size,
            2,
            "room-size caps the default"
        );
        let sfu = set.http.unwrap().sfu.unwrap();
        assert_eq!(sfu.listen, Some("127.0.0.1:4000".parse().unwrap()));
        assert_eq!((sfu.mesh_size, sfu.room_size), (3, 50));
        assert!(!sfu.tcp);
        for (text, key) in [
            ("mesh-size = 1\n", "mesh-size"),
            ("mesh-size = 9\n", "mesh-size"),
            ("sfu-room-size = 1000\n", "sfu-room-size"),
            ("sfu-timeout = 0\n", "sfu-timeout"),
            (
                "listen = [\"127.0.0.1:3478\"]\nsfu-listen = \"127.0.0.1:3478\"\n",
                "sfu-listen",
            ),
        ] {
            let e = cfg(&format!("http = \"127.0.0.1:8080\"\n{text}"))
                .unwrap_err()
                .to_string();
            assert!(e.contains(key), "{text}: {e}");
        }
    }

    #[test]
    fn validation_errors_name_the_key_and_its_line() {
        let p = temp_file(
            "line",
            "realm = \"r\"\n\n[quota]\nmax-lifetime = 7200\ndefault-lifetime = 9000\n",
        );
        let e = ValidConfig::load(Some(&p), Settings::default())
            .unwrap_err()
            .to_string();
        std::fs::remove_file(&p).unwrap();
        assert!(
            e.contains("quota.default-lifetime") && e.contains("line 5"),
            "{e}"
        );
        assert_eq!(line_of("a = 1\n[quota]\na = 2\n", "quota.a"), Some(3));
        assert_eq!(line_of("a = 1\n[quota]\na = 2\n", "a"), Some(1));
        assert_eq!(line_of("a = 1\n", "b"), None);
    }

    #[test]
    fn command_line_over_file_over_defaults() {
        let file = parse_toml("drain-seconds = 9\nlog = \"warn\"\n", "f").unwrap();
        let cli = Settings {
            log: Some("debug".into()),
            ..Default::default()
        };
        let v = ValidConfig::build(file, cli, "f").unwrap();
        assert_eq!((v.drain_seconds, v.log.as_str()), (9, "debug"));
        assert_eq!(v.relay_ports, defaults::RELAY_PORTS);
        assert_eq!(v.listen, defaults::LISTEN.to_vec());
        assert_eq!(v.quota, QuotaSection::default());
    }

    #[test]
    fn reread_keeps_the_generated_secret_and_takes_the_new_users() {
        let p = temp_file("reread", "users = [\"alice:pw\"]\nhttp = \"127.0.0.1:0\"\n");
        let old = ValidConfig::load(Some(&p), Settings::default()).unwrap();
        assert!(old.generated_secret);
        std::fs::write(
            &p,
            "users = [\"alice:pw\", \"carol:pw\"]\nhttp = \"127.0.0.1:0\"\n",
        )
        .unwrap();
        let new = old.reread().unwrap();
        std::fs::remove_file(&p).unwrap();
        assert!(new.credentials.keys_for("carol", 0).is_ok(), "the new user");
        assert_eq!(
            new.credentials.secrets()[0].expose(),
            old.credentials.secrets()[0].expose(),
            "the secret browsers hold credentials from"
        );
        assert_eq!(new.credentials.secrets().len(), 1);
    }

    #[test]
    fn http_on_a_tls_listen_address_shares_the_port_and_its_certificate() {
        let cfg = |text: &str| {
            ValidConfig::build(parse_toml(text, "f").unwrap(), Overrides::default(), "f")
        };
        let base = "tls-cert = \"c.pem\"\ntls-key = \"k.pem\"\ntls-listen = [\"0.0.0.0:443\"]\n";
        let shared = cfg(&format!("{base}http = \"0.0.0.0:443\"\n")).unwrap();
        assert_eq!(shared.http.unwrap().tls, HttpTls::SharedWithTurn);
        // One certificate on that port: a second one for the page is an error naming the key.
        let e = cfg(&format!(
            "{base}http = \"0.0.0.0:443\"\nhttp-tls-cert = \"h.pem\"\nhttp-tls-key = \"hk.pem\"\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(e.contains("http-tls-cert") && e.contains("shares"), "{e}");
        // Overlapping but not the same address is still a conflict, as before.
        let e = cfg(&format!("{base}http = \"127.0.0.1:443\"\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("TCP port of the TURN listener"), "{e}");
        // Port 0 is a fresh port each time: never shared.
        let fresh = cfg(
            "tls-cert = \"c.pem\"\ntls-key = \"k.pem\"\ntls-listen = [\"127.0.0.1:0\"]\nhttp = \"127.0.0.1:0\"\nhttp-self-signed = false\n",
        )
        .unwrap();
        assert_eq!(fresh.http.unwrap().tls, HttpTls::Off);
    }

    #[test]
    fn domain_gets_its_certificate_from_acme_on_one_port() {
        let dir = std::path::Path::new("/tmp/natpass-state");
        let cli = |args: Settings| ValidConfig::load(None, args);
        // On the embedded default, a domain alone means the page and TURN on 0.0.0.0:443.
        let c = cli(Settings {
            domain: vec!["Turn.Example.org".into()],
            state_dir: Some(dir.into()),
            ..Default::default()
        })
        .unwrap();
        let a = c.acme.expect("acme on");
        assert_eq!(a.domains, vec!["turn.example.org"]);
        assert_eq!(a.directory, defaults::ACME_DIRECTORY);
        assert!(
            a.dir.starts_with(dir.join("acme"))
                && a.dir
                    .to_string_lossy()
                    .contains("acme-v02.api.letsencrypt.org-"),
            "one state directory per CA: {}",
            a.dir.display()
        );
        assert_eq!(a.challenge, AcmeChallenge::TlsAlpn01, "on 443");
        assert_eq!(a.renew_before, std::time::Duration::from_secs(30 * 86_400));
        assert_eq!(c.tls_listen, vec![defaults::DOMAIN_LISTEN]);
        let http = c.http.unwrap();
        assert_eq!(http.addr, defaults::DOMAIN_LISTEN);
        assert_eq!(http.tls, HttpTls::SharedWithTurn);
        // The HTTPS page on a port of its own gets the ACME certificate too.
        let c = cli(Settings {
            domain: vec!["turn.example.org".into()],
            http: Some("127.0.0.1:8443".parse().unwrap()),
            state_dir: Some(dir.into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.http.unwrap().tls, HttpTls::TurnCertificate);
        // tls-cert wins over ACME.
        let c = cli(Settings {
            domain: vec!["turn.example.org".into()],
            tls_cert: Some("c.pem".into()),
            tls_key: Some("k.pem".into()),
            state_dir: Some(dir.into()),
            ..Default::default()
        })
        .unwrap();
        assert!(c.acme.is_none());
        // Names sorted and deduplicated (the kept certificate is compared with them).
        let c = cli(Settings {
            domain: vec![
                "b.example.org".into(),
                "a.example.org".into(),
                "b.example.org".into(),
            ],
            state_dir: Some(dir.into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            c.acme.unwrap().domains,
            vec!["a.example.org", "b.example.org"]
        );
        // TURN over TLS on 5349 only: http-01 on port 80.
        let c = cli(Settings {
            domain: vec!["turn.example.org".into()],
            tls_listen: vec!["0.0.0.0:5349".parse().unwrap()],
            http: Some("127.0.0.1:8080".parse().unwrap()),
            state_dir: Some(dir.into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            c.acme.unwrap().challenge,
            AcmeChallenge::Http01(defaults::ACME_HTTP_LISTEN)
        );
        // Bad values name their key.
        for (s, key) in [
            (
                Settings {
                    domain: vec!["turn.example.org".into()],
                    tls_listen: vec!["0.0.0.0:5349".parse().unwrap()],
                    http: Some("0.0.0.0:80".parse().unwrap()),
                    state_dir: Some(dir.into()),
                    ..Default::default()
                },
                "acme-http-listen",
            ),
            (
                Settings {
                    domain: vec!["localhost".into()],
                    ..Default::default()
                },
                "domain",
            ),
            (
                Settings {
                    domain: vec!["a..b".into()],
                    ..Default::default()
                },
                "domain",
            ),
            (
                Settings {
                    domain: vec!["turn.example.org".into()],
                    acme_directory: Some("http://ca.example/dir".into()),
                    ..Default::default()
                },
                "acme-directory",
            ),
            (
                Settings {
                    domain: vec!["turn.example.org".into()],
                    acme_email: Some("nobody".into()),
                    ..Default::default()
                },
                "acme-email",
            ),
            (
                Settings {
                    domain: vec!["turn.example.org".into()],
                    acme_renew_days: Some(0),
                    ..Default::default()
                },
                "acme-renew-days",
            ),
        ] {
            let e = cli(s).unwrap_err().to_string();
            assert!(e.contains(key), "{key}: {e}");
        }
    }
}
