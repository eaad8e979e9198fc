//! Validation, one function per section of the merged [`Settings`]. Each error names the
//! key it is about; [`super::ValidConfig::load`] adds the file and line. Nothing here reads
//! certificate files: they are loaded when the server starts and when it reloads.

use super::defaults;
use super::settings::{QuotaSection, Settings};
use super::values::{ExternalIp, PortRange};
use super::{HttpConfig, HttpTls, SfuConfig};
use crate::auth::{self, Credentials, Secret};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

/// A value that parsed but does not make sense: the key path and what is wrong.
#[derive(Debug)]
pub(super) struct Invalid {
    pub key: &'static str,
    pub message: String,
}

fn invalid(key: &'static str, message: impl Into<String>) -> Invalid {
    Invalid {
        key,
        message: message.into(),
    }
}

/// Listeners, relay addresses, ports and shards.
pub(super) struct Listeners {
    pub listen: Vec<SocketAddr>,
    pub alt_listen: Option<SocketAddr>,
    pub tls_listen: Vec<SocketAddr>,
    pub tls_files: Option<(PathBuf, PathBuf)>,
    pub relay_ips: Vec<IpAddr>,
    pub external_ips: Vec<ExternalIp>,
    pub relay_ports: PortRange,
    pub threads: usize,
}

pub(super) fn listeners(s: &Settings) -> Result<Listeners, Invalid> {
    let listen = if s.listen.is_empty() {
        defaults::LISTEN.to_vec()
    } else {
        s.listen.clone()
    };
    if let Some(alt) = s.alt_listen {
        let primary = listen
            .iter()
            .find(|l| l.is_ipv4() == alt.is_ipv4() && !l.ip().is_unspecified());
        match primary {
            None => {
                return Err(invalid(
                    "alt-listen",
                    "needs a listen address of the same family that is not a wildcard",
                ));
            }
            Some(p) if p.ip() == alt.ip() || alt.ip().is_unspecified() => {
                return Err(invalid(
                    "alt-listen",
                    "must be a second IP address, different from the listen address",
                ));
            }
            Some(p) if p.port() == alt.port() && alt.port() != 0 => {
                return Err(invalid(
                    "alt-listen",
                    "must use a port other than the listen port",
                ));
            }
            Some(_) => {}
        }
    }
    let tls_files = match (s.tls_cert.clone(), s.tls_key.clone()) {
        (Some(c), Some(k)) => Some((c, k)),
        (None, None) => None,
        (Some(_), None) => return Err(invalid("tls-key", "tls-cert is set but tls-key is not")),
        (None, Some(_)) => return Err(invalid("tls-cert", "tls-key is set but tls-cert is not")),
    };
    if !s.tls_listen.is_empty() && tls_files.is_none() && s.domain.is_empty() {
        return Err(invalid(
            "tls-listen",
            "needs tls-cert and tls-key, or domain (a certificate from ACME)",
        ));
    }
    // A domain and no TLS listener: the one public port.
    let tls_listen = if s.tls_listen.is_empty() && !s.domain.is_empty() {
        vec![defaults::DOMAIN_LISTEN]
    } else {
        s.tls_listen.clone()
    };
    let threads = s.threads.unwrap_or_else(defaults::threads);
    if threads == 0 || threads > 256 {
        return Err(invalid("threads", "must be between 1 and 256"));
    }
    Ok(Listeners {
        listen,
        alt_listen: s.alt_listen,
        tls_listen,
        tls_files,
        relay_ips: s.relay_ips.clone(),
        external_ips: s.external_ips.clone(),
        relay_ports: s.relay_ports.unwrap_or(defaults::RELAY_PORTS),
        threads,
    })
}

/// Realm, users, REST secrets, nonces.
pub(super) struct Auth {
    pub realm: String,
    pub credentials: Credentials,
    pub generated_secret: bool,
    pub rest_max_ttl: u64,
    pub nonce_lifetime: u64,
}

/// `keep` is the secret a running server generated earlier: a reload reuses it, so
/// credentials minted from it stay valid.
pub(super) fn auth(s: &Settings, keep: Option<Secret>) -> Result<Auth, Invalid> {
    let realm = s.realm.clone().unwrap_or_else(|| defaults::REALM.into());
    if realm.is_empty() || realm.len() > 127 || realm.contains(['"', '\\']) {
        return Err(invalid(
            "realm",
            "must be 1–127 characters without quotes or backslashes",
        ));
    }
    let rest_max_ttl = s.rest_max_ttl.unwrap_or(defaults::REST_MAX_TTL);
    if rest_max_ttl == 0 {
        return Err(invalid("rest-max-ttl", "must be at least 1 second"));
    }
    let nonce_lifetime = s.nonce_lifetime.unwrap_or(defaults::NONCE_LIFETIME);
    if !(10..=86_400).contains(&nonce_lifetime) {
        return Err(invalid(
            "nonce-lifetime",
            "must be between 10 and 86400 seconds",
        ));
    }
    let mut credentials = Credentials::new(realm.clone(), rest_max_ttl);
    for u in &s.users {
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
    for secret in &s.auth_secrets {
        credentials.add_secret(secret.clone());
    }
    if credentials.secrets().len() > 8 {
        return Err(invalid(
            "auth-secrets",
            "at most 8 secrets may be active at once",
        ));
    }
    // A secret is generated when nothing is configured, and when the web side is on
    // without one (it mints browser credentials from it; nothing else knows it).
    let generated_secret =
        credentials.is_empty() || (credentials.secrets().is_empty() && s.http.is_some());
    if generated_secret {
        credentials.add_secret(keep.unwrap_or_else(Secret::generate));
    }
    Ok(Auth {
        realm,
        credentials,
        generated_secret,
        rest_max_ttl,
        nonce_lifetime,
    })
}

/// The web side: page, signaling, browser credentials.
pub(super) fn http(s: &Settings, rest_max_ttl: u64) -> Result<Option<HttpConfig>, Invalid> {
    // Checked with or without `http`: a value that is wrong stays wrong when HTTP is turned on.
    let credential_ttl = s.credential_ttl.unwrap_or(defaults::CREDENTIAL_TTL);
    if credential_ttl == 0 || credential_ttl > rest_max_ttl {
        return Err(invalid(
            "credential-ttl",
            format!("must be between 1 and rest-max-ttl ({rest_max_ttl})"),
        ));
    }
    let room_size = s.room_size.unwrap_or(defaults::ROOM_SIZE);
    if !(2..=64).contains(&room_size) {
        return Err(invalid("room-size", "must be between 2 and 64"));
    }
    if let Some(url) = &s.redis {
        crate::web::cluster::check_url(url)
            .map_err(|e| invalid("redis", format!("not a Redis URL: {e}")))?;
        if s.http.is_none() {
            return Err(invalid("redis", "shares the signaling rooms: set http too"));
        }
    }
    let sfu = sfu(s, room_size)?;
    let Some(addr) = s.http else {
        return Ok(None);
    };
    let self_signed = s.http_self_signed.unwrap_or(defaults::HTTP_SELF_SIGNED);
    // One port for the page and TURN over TLS: the same address (a port of its own, not 0).
    let tls_listen: &[SocketAddr] = if s.tls_listen.is_empty() && !s.domain.is_empty() {
        &[defaults::DOMAIN_LISTEN]
    } else {
        &s.tls_listen
    };
    let shared = addr.port() != 0 && tls_listen.contains(&addr);
    let tls = match (s.http_tls_cert.clone(), s.http_tls_key.clone()) {
        (Some(_), _) | (_, Some(_)) if shared => {
            return Err(invalid(
                "http-tls-cert",
                format!(
                    "http shares {addr} with tls-listen: that port serves tls-cert and tls-key \
                     to both; remove http-tls-cert and http-tls-key"
                ),
            ));
        }
        _ if shared => HttpTls::SharedWithTurn,
        (Some(c), Some(k)) => HttpTls::Files(c, k),
        (None, None) if !s.domain.is_empty() && s.tls_cert.is_none() => HttpTls::TurnCertificate,
        (None, None) if self_signed => HttpTls::SelfSigned,
        (None, None) => HttpTls::Off,
        _ => {
            return Err(invalid(
                "http-tls-cert",
                "set both http-tls-cert and http-tls-key",
            ));
        }
    };
    if let Some(h) = &s.public_host {
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
    Ok(Some(HttpConfig {
        addr,
        tls,
        public_host: s.public_host.clone(),
        allow_origins: s.allow_origins.clone(),
        credential_ttl,
        room_size,
        redis: s.redis.clone(),
        sfu,
    }))
}

/// The SFU's keys (checked with or without `http`, like the rest of the web side).
fn sfu(s: &Settings, room_size: usize) -> Result<Option<SfuConfig>, Invalid> {
    // A room-size below the default mesh-size caps it (the mesh is full before it would move);
    // a mesh-size set above room-size is an error.
    let mesh_size = s.mesh_size.unwrap_or(defaults::MESH_SIZE.min(room_size));
    if !(2..=room_size).contains(&mesh_size) {
        return Err(invalid(
            "mesh-size",
            format!("must be between 2 and room-size ({room_size})"),
        ));
    }
    let sfu_room_size = s.sfu_room_size.unwrap_or(defaults::SFU_ROOM_SIZE);
    if !(2..=100).contains(&sfu_room_size) {
        return Err(invalid("sfu-room-size", "must be between 2 and 100"));
    }
    let timeout = s.sfu_timeout.unwrap_or(defaults::SFU_TIMEOUT);
    if !(2..=300).contains(&timeout) {
        return Err(invalid("sfu-timeout", "must be between 2 and 300 seconds"));
    }
    if let Some(l) = s.sfu_listen {
        if s.listen.contains(&l) || s.alt_listen == Some(l) {
            return Err(invalid(
                "sfu-listen",
                format!("{l} is a TURN listener already: give the SFU a port of its own"),
            ));
        }
    }
    if !s.sfu.unwrap_or(defaults::SFU) {
        return Ok(None);
    }
    Ok(Some(SfuConfig {
        listen: s.sfu_listen,
        mesh_size,
        room_size: sfu_room_size,
        timeout: std::time::Duration::from_secs(timeout),
        tcp: s.sfu_tcp.unwrap_or(defaults::SFU_TCP),
    }))
}

/// `[quota]`.
pub(super) fn quota(q: QuotaSection) -> Result<QuotaSection, Invalid> {
    if q.max_lifetime == 0 {
        return Err(invalid("quota.max-lifetime", "must be at least 1"));
    }
    if q.default_lifetime == 0 || q.default_lifetime > q.max_lifetime {
        return Err(invalid(
            "quota.default-lifetime",
            format!(
                "must be between 1 and quota.max-lifetime ({})",
                q.max_lifetime
            ),
        ));
    }
    for (k, v) in [
        ("quota.allocations-per-user", q.allocations_per_user),
        ("quota.allocations-per-ip", q.allocations_per_ip),
        ("quota.total-allocations", q.total_allocations),
        (
            "quota.permissions-per-allocation",
            q.permissions_per_allocation,
        ),
        ("quota.channels-per-allocation", q.channels_per_allocation),
        ("quota.connections-per-ip", q.connections_per_ip),
        ("quota.tls-handshakes", q.tls_handshakes),
    ] {
        if v == 0 {
            return Err(invalid(k, "must be at least 1"));
        }
    }
    for (k, v) in [
        ("quota.first-message-timeout", q.first_message_timeout),
        ("quota.idle-timeout", q.idle_timeout),
    ] {
        if v == 0 {
            return Err(invalid(k, "must be at least 1"));
        }
    }
    if q.channels_per_allocation > 4096 {
        return Err(invalid(
            "quota.channels-per-allocation",
            "at most 4096 channel numbers exist",
        ));
    }
    for (k, v) in [
        ("quota.challenges-per-second", q.challenges_per_second),
        ("quota.auth-failures-per-minute", q.auth_failures_per_minute),
    ] {
        if !(v.is_finite() && v > 0.0) {
            return Err(invalid(k, "must be a positive number"));
        }
    }
    if q.stream_buffer < 70_000 {
        return Err(invalid(
            "quota.stream-buffer",
            "must hold at least one full frame (70000 bytes)",
        ));
    }
    Ok(q)
}

/// Metrics, admin API, drain, logging.
pub(super) struct Operations {
    pub metrics: Option<SocketAddr>,
    pub admin: Option<(SocketAddr, Secret)>,
    pub drain_seconds: u64,
    pub log: String,
    pub log_json: bool,
}

pub(super) fn operations(s: &Settings) -> Result<Operations, Invalid> {
    let admin = match (s.admin_token.clone(), s.admin_listen) {
        (Some(t), l) => {
            if t.expose().len() < 16 {
                return Err(invalid("admin-token", "must be at least 16 characters"));
            }
            Some((l.unwrap_or(defaults::ADMIN_LISTEN), t))
        }
        (None, Some(_)) => return Err(invalid("admin-listen", "needs admin-token")),
        (None, None) => None,
    };
    let drain_seconds = s.drain_seconds.unwrap_or(defaults::DRAIN_SECONDS);
    if drain_seconds > 3600 {
        return Err(invalid("drain-seconds", "must be at most 3600"));
    }
    let log = s.log.clone().unwrap_or_else(|| defaults::LOG.into());
    if tracing_subscriber::EnvFilter::try_new(&log).is_err() {
        return Err(invalid(
            "log",
            format!("`{log}` is not a tracing filter (e.g. info, natpass=debug)"),
        ));
    }
    let log_json = match s.log_format.as_deref() {
        None | Some("text") => false,
        Some("json") => true,
        Some(other) => {
            return Err(invalid(
                "log-format",
                format!("`{other}`: expected text or json"),
            ));
        }
    };
    Ok(Operations {
        metrics: s.metrics,
        admin,
        drain_seconds,
        log,
        log_json,
    })
}

/// Listeners `serve` could not bind together: the same address twice, or a TCP listener
/// (HTTP, metrics, admin) on the port of a TURN listener (TURN listens on TCP as well as UDP at
/// every `listen` address, and on TCP at every `tls-listen` address).
pub(super) fn listener_clashes(
    l: &Listeners,
    http: Option<&HttpConfig>,
    ops: &Operations,
) -> Vec<Invalid> {
    let overlap = |a: &SocketAddr, b: &SocketAddr| {
        a.port() != 0
            && a.port() == b.port()
            && (a.ip() == b.ip()
                || (a.ip().is_unspecified() && (a.is_ipv4() == b.is_ipv4() || a.is_ipv6()))
                || (b.ip().is_unspecified() && (a.is_ipv4() == b.is_ipv4() || b.is_ipv6())))
    };
    let mut out = Vec::new();
    let mut turn: Vec<(&'static str, SocketAddr)> = Vec::new();
    for (key, addrs) in [("listen", &l.listen), ("tls-listen", &l.tls_listen)] {
        for a in addrs {
            // Port 0 asks for a fresh port each time, so it can be given twice.
            if let Some((other, _)) = turn.iter().find(|(_, b)| b == a && a.port() != 0) {
                out.push(invalid(
                    key,
                    format!("{a} is given twice (also in {other}): it can be bound only once"),
                ));
            } else {
                turn.push((key, *a));
            }
        }
    }
    if let Some(alt) = l.alt_listen {
        if let Some((other, _)) = turn.iter().find(|(_, b)| overlap(b, &alt)) {
            out.push(invalid(
                "alt-listen",
                format!("{alt} is also a {other} address"),
            ));
        }
    }
    let tcp: [(&'static str, Option<SocketAddr>); 3] = [
        ("http", http.map(|h| h.addr)),
        ("metrics", ops.metrics),
        ("admin-listen", ops.admin.as_ref().map(|(a, _)| *a)),
    ];
    for (i, (key, addr)) in tcp.iter().enumerate() {
        let Some(a) = addr else { continue };
        // `http` on exactly a `tls-listen` address shares that port (HttpTls::SharedWithTurn).
        let shared =
            |other: &str, b: &SocketAddr| *key == "http" && other == "tls-listen" && b == a;
        if let Some((other, b)) = turn
            .iter()
            .find(|(other, b)| overlap(b, a) && !shared(other, b))
        {
            out.push(invalid(
                key,
                format!("{a} is on the TCP port of the TURN listener {b} ({other})"),
            ));
        }
        for (other, b) in &tcp[..i] {
            if b.is_some_and(|b| overlap(&b, a)) {
                out.push(invalid(key, format!("{a} is also the {other} address")));
            }
        }
    }
    out
}

/// `domain` and the ACME keys: None when no domain is set, or when `tls-cert` is (the files
/// win).
/// `xdp-interface`: interface names as the kernel spells them.
pub(super) fn xdp(s: &Settings) -> Result<Vec<String>, Invalid> {
    let mut out: Vec<String> = Vec::new();
    for i in &s.xdp_interface {
        let ok = !i.is_empty()
            && i.len() < 16
            && i.bytes()
                .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
        if !ok {
            return Err(invalid(
                "xdp-interface",
                format!("`{i}` is not a network interface name (e.g. eth0; up to 15 characters)"),
            ));
        }
        if !out.contains(i) {
            out.push(i.clone());
        }
    }
    Ok(out)
}

pub(super) fn acme(
    s: &Settings,
    state_dir: Option<&std::path::Path>,
) -> Result<Option<crate::config::AcmeConfig>, Invalid> {
    for d in &s.domain {
        let ok = !d.is_empty()
            && d.len() <= 253
            && d.split('.').count() >= 2
            && d.split('.').all(|l| {
                !l.is_empty()
                    && l.len() <= 63
                    && !l.starts_with('-')
                    && !l.ends_with('-')
                    && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            });
        if !ok {
            return Err(invalid(
                "domain",
                format!("`{d}` is not a DNS name a CA can issue for (e.g. turn.example.org)"),
            ));
        }
    }
    let directory = s
        .acme_directory
        .clone()
        .unwrap_or_else(|| defaults::ACME_DIRECTORY.to_owned());
    if !directory.starts_with("https://") {
        return Err(invalid(
            "acme-directory",
            format!("`{directory}` is not an https:// URL"),
        ));
    }
    if let Some(e) = &s.acme_email {
        if !e.contains('@') || e.contains(char::is_whitespace) {
            return Err(invalid(
                "acme-email",
                format!("`{e}` is not an e-mail address"),
            ));
        }
    }
    let days = s.acme_renew_days.unwrap_or(defaults::ACME_RENEW_DAYS);
    if days == 0 {
        return Err(invalid("acme-renew-days", "must be at least 1"));
    }
    if s.domain.is_empty() || s.tls_cert.is_some() {
        return Ok(None);
    }
    let Some(dir) = state_dir else {
        return Err(invalid(
            "domain",
            "needs state-dir (where the ACME account and certificate are kept)",
        ));
    };
    let on_443 = s.tls_listen.is_empty() || s.tls_listen.iter().any(|a| a.port() == 443);
    let http_listen = s.acme_http_listen.unwrap_or(defaults::ACME_HTTP_LISTEN);
    let challenge = match s.acme_challenge.as_deref() {
        // Chosen explicitly, it may be off 443: a private CA can validate elsewhere (pebble's
        // tlsPort); public CAs connect to 443 only, which the default choice follows.
        Some("tls-alpn-01") => crate::config::AcmeChallenge::TlsAlpn01,
        Some("http-01") => crate::config::AcmeChallenge::Http01(http_listen),
        Some(other) => {
            return Err(invalid(
                "acme-challenge",
                format!("`{other}`: expected tls-alpn-01 or http-01"),
            ));
        }
        None if on_443 => crate::config::AcmeChallenge::TlsAlpn01,
        None => crate::config::AcmeChallenge::Http01(http_listen),
    };
    if let crate::config::AcmeChallenge::Http01(a) = challenge {
        let taken = [
            ("http", s.http),
            ("metrics", s.metrics),
            ("admin-listen", s.admin_listen),
        ];
        if let Some((key, _)) = taken.iter().find(|(_, b)| {
            b.is_some_and(|b| {
                b.port() == a.port()
                    && (b.ip() == a.ip() || b.ip().is_unspecified() || a.ip().is_unspecified())
            })
        }) {
            return Err(invalid(
                "acme-http-listen",
                format!(
                    "{a} is also the {key} address: http-01 needs a port of its own (or acme-challenge = tls-alpn-01)"
                ),
            ));
        }
    }
    let ca_dir = directory_dir(&directory);
    let mut domains: Vec<String> = s.domain.iter().map(|d| d.to_ascii_lowercase()).collect();
    domains.sort();
    domains.dedup();
    Ok(Some(crate::config::AcmeConfig {
        domains,
        directory,
        email: s.acme_email.clone(),
        ca_root: s.acme_ca_root.clone(),
        renew_before: std::time::Duration::from_secs(days.saturating_mul(86_400)),
        // One account and certificate per CA: moving from a staging to a production directory
        // must not keep serving (and renewing with) the staging ones.
        dir: dir.join("acme").join(ca_dir),
        challenge,
    }))
}

/// A directory name for an ACME directory URL: its host and a short hash of the whole URL.
fn directory_dir(url: &str) -> String {
    use sha2::Digest;
    let host: String = url
        .trim_start_matches("https://")
        .split(['/', ':'])
        .next()
        .unwrap_or("ca")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '.' || *c == '-')
        .collect();
    let h = sha2::Sha256::digest(url.as_bytes());
    format!("{host}-{:02x}{:02x}{:02x}{:02x}", h[0], h[1], h[2], h[3])
}
