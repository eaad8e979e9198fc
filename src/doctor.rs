//! `natpass doctor`: what would go wrong with this configuration on this machine, each
//! finding with its fix in one line. The checks that people meet as "STUN works but TURN
//! doesn't": the config itself, certificates (valid, names, expiry), the domain's DNS against
//! the address the world sees (asked of a STUN server from this machine), relay ports that
//! cannot be bound, TURN ports browsers refuse, the realm, the web side's exposure, and UDP
//! socket buffers too small for the load.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use serde::Serialize;

use crate::config::{HttpTls, ValidConfig};

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Fine.
    Ok,
    /// Works, but something a user will meet.
    Warn,
    /// Broken: the exit status is non-zero.
    Error,
}

/// One finding.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    /// How bad.
    pub level: Level,
    /// Which check (`config`, `certificate`, `dns`, `public-address`, `relay-ports`,
    /// `ports`, `realm`, `http`, `udp-buffers`).
    pub check: &'static str,
    /// What was found.
    pub message: String,
    /// The fix, in one line (empty when nothing is to be done).
    pub fix: String,
}

fn finding(level: Level, check: &'static str, message: String, fix: &str) -> Finding {
    Finding {
        level,
        check,
        message,
        fix: fix.to_owned(),
    }
}

/// What `doctor` may reach.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The STUN server to ask which public address this machine has (None: skip that check).
    pub stun: Option<SocketAddr>,
    /// Resolve the domain names (false: skip, e.g. offline).
    pub dns: bool,
}

/// Every check, on a configuration that loaded.
pub fn check(cfg: &ValidConfig, o: &Options) -> Vec<Finding> {
    let mut out = vec![finding(
        Level::Ok,
        "config",
        "the configuration is valid".into(),
        "",
    )];
    out.extend(certificates(cfg));
    let public = o.stun.map(|s| public_address(s, &mut out)).unwrap_or(None);
    if o.dns {
        out.extend(dns(cfg, public, &|n: &str| {
            (n, 443)
                .to_socket_addrs()
                .map(|a| a.map(|a| a.ip()).collect())
                .map_err(|e| e.to_string())
        }));
    }
    out.extend(relay_ports(cfg));
    out.extend(ports(cfg));
    out.extend(realm(cfg));
    out.extend(http(cfg));
    out.extend(udp_buffers(
        read_sysctl("/proc/sys/net/core/rmem_max"),
        read_sysctl("/proc/sys/net/core/wmem_max"),
    ));
    out
}

/// The exit status: non-zero when a finding is an error.
pub fn failed(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.level == Level::Error)
}

fn certificates(cfg: &ValidConfig) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut files = Vec::new();
    if let Some((c, k)) = &cfg.tls_files {
        files.push(("tls-cert", c.clone(), k.clone()));
    }
    if let Some(HttpTls::Files(c, k)) = cfg.http.as_ref().map(|h| &h.tls) {
        files.push(("http-tls-cert", c.clone(), k.clone()));
    }
    if let Some(a) = &cfg.acme {
        let (c, k) = (a.dir.join("cert.pem"), a.dir.join("key.pem"));
        if c.exists() {
            files.push(("domain (ACME)", c, k));
        } else {
            out.push(finding(
                Level::Ok,
                "certificate",
                format!(
                    "no ACME certificate in {} yet: `natpass serve` gets one for {} at start",
                    a.dir.display(),
                    a.domains.join(", ")
                ),
                "",
            ));
        }
    }
    let wanted: Vec<String> = cfg
        .acme
        .as_ref()
        .map(|a| a.domains.clone())
        .or_else(|| {
            cfg.http
                .as_ref()
                .and_then(|h| h.public_host.clone())
                .map(|h| vec![h])
        })
        .unwrap_or_default();
    for (key, cert, keyf) in files {
        let ck = match crate::tls::load_key(&cert, &keyf) {
            Ok(k) => k,
            Err(e) => {
                out.push(finding(
                    Level::Error,
                    "certificate",
                    format!("{key}: {e}"),
                    "point tls-cert/tls-key at a readable PEM chain and its key",
                ));
                continue;
            }
        };
        let Some((names, not_after)) = crate::acme::cert_info(&ck) else {
            out.push(finding(
                Level::Warn,
                "certificate",
                format!("{key}: {} cannot be parsed as X.509", cert.display()),
                "use a PEM certificate chain",
            ));
            continue;
        };
        let days = (not_after - now_unix()) / 86_400;
        if not_after <= now_unix() {
            out.push(finding(
                Level::Error,
                "certificate",
                format!("{key}: {} has expired", cert.display()),
                "renew it (or set domain to let natpass get and renew one)",
            ));
        } else if days < 14 {
            out.push(finding(
                Level::Warn,
                "certificate",
                format!("{key}: {} expires in {days} days", cert.display()),
                "renew it, then `systemctl reload natpass`",
            ));
        } else {
            out.push(finding(
                Level::Ok,
                "certificate",
                format!(
                    "{key}: {} valid for {days} more days, names {}",
                    cert.display(),
                    names.join(", ")
                ),
                "",
            ));
        }
        for w in &wanted {
            let covered = names.iter().any(|n| {
                n == w
                    || n.strip_prefix("*.")
                        .is_some_and(|base| w.split_once('.').is_some_and(|(_, r)| r == base))
            });
            if !covered {
                out.push(finding(
                    Level::Error,
                    "certificate",
                    format!(
                        "{key}: {} is not valid for {w} (it names {})",
                        cert.display(),
                        names.join(", ")
                    ),
                    "get a certificate that names the host browsers use",
                ));
            }
        }
    }
    out
}

fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// The address a STUN server sees for this machine; compared with what natpass advertises.
fn public_address(stun: SocketAddr, out: &mut Vec<Finding>) -> Option<IpAddr> {
    let spec = crate::probe::ServerSpec {
        host: stun.ip().to_string(),
        addr: stun,
        transport: None,
    };
    let report = crate::probe::stun(
        &spec,
        crate::probe::ProbeTransport::Udp,
        1,
        &crate::probe::TlsOptions::default(),
        &mut |_, _| {},
    );
    let mapped = report
        .ok()
        .and_then(|r| r.results.first().and_then(|b| b.mapped));
    match mapped {
        Some(m) => {
            out.push(finding(
                Level::Ok,
                "public-address",
                format!("{stun} sees this machine as {}", m.ip()),
                "",
            ));
            Some(m.ip())
        }
        None => {
            out.push(finding(
                Level::Warn,
                "public-address",
                format!("no answer from the STUN server {stun}: outgoing UDP may be blocked"),
                "allow outgoing UDP, or pass --stun-server HOST:PORT",
            ));
            None
        }
    }
}

/// A name's addresses, or why it has none.
type Resolve<'a> = &'a dyn Fn(&str) -> Result<Vec<IpAddr>, String>;

fn dns(cfg: &ValidConfig, public: Option<IpAddr>, resolve: Resolve<'_>) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut names: Vec<String> = cfg
        .acme
        .as_ref()
        .map(|a| a.domains.clone())
        .unwrap_or_default();
    if let Some(h) = cfg.http.as_ref().and_then(|h| h.public_host.clone()) {
        if h.parse::<IpAddr>().is_err() && !names.contains(&h) {
            names.push(h);
        }
    }
    let external: Vec<IpAddr> = cfg.external_ips.iter().map(|e| e.public).collect();
    for n in names {
        let ips: Vec<IpAddr> = match resolve(&n) {
            Ok(a) => a,
            Err(e) => {
                out.push(finding(
                    Level::Error,
                    "dns",
                    format!("{n} does not resolve: {e}"),
                    &format!(
                        "add an A record for {n} pointing at {}",
                        public.map_or("this server's public IP".into(), |p| p.to_string())
                    ),
                ));
                continue;
            }
        };
        let shown: Vec<String> = ips.iter().map(IpAddr::to_string).collect();
        let expected: Vec<IpAddr> = public.into_iter().chain(external.iter().copied()).collect();
        // Every record must lead here: browsers (and a CA validating, IPv6 first) may pick
        // any of them. An address of this machine can be bound; the world's view of it is
        // `expected`.
        let ours =
            |ip: &IpAddr| expected.contains(ip) || std::net::UdpSocket::bind((*ip, 0)).is_ok();
        let bad: Vec<String> = ips
            .iter()
            .filter(|ip| !ours(ip))
            .map(IpAddr::to_string)
            .collect();
        if bad.is_empty() {
            out.push(finding(
                Level::Ok,
                "dns",
                format!("{n} resolves to {}", shown.join(", ")),
                "",
            ));
        } else if expected.is_empty() {
            out.push(finding(
                Level::Warn,
                "dns",
                format!(
                    "{n} resolves to {}: not an address of this machine, and with no STUN answer or external-ip there is no telling whether it leads here",
                    bad.join(", ")
                ),
                "set external-ips, or let --stun-server answer",
            ));
        } else {
            let want: Vec<String> = expected.iter().map(IpAddr::to_string).collect();
            out.push(finding(
                Level::Error,
                "dns",
                format!(
                    "{n} resolves to {} but this server is {}",
                    bad.join(", "),
                    want.join(", ")
                ),
                &format!(
                    "point {n}'s A record at {} and remove the other records (A and AAAA)",
                    want.join(" / ")
                ),
            ));
        }
    }
    if let (Some(p), true) = (public, cfg.external_ips.is_empty()) {
        let local = crate::probe::local_ip_towards(SocketAddr::new(p, 3478)).ok();
        // An address of this machine can be bound; a NAT's cannot.
        let is_local = std::net::UdpSocket::bind((p, 0)).is_ok();
        if !is_local {
            out.push(finding(
                Level::Warn,
                "public-address",
                format!(
                    "this machine is behind NAT (the world sees {p}, no local address is) and \
                     external-ip is not set: relayed addresses would be private ones"
                ),
                &format!(
                    "set external-ips = [\"{p}/{}\"]",
                    local.map_or("PRIVATE".into(), |l| l.to_string())
                ),
            ));
        }
    }
    out
}

fn relay_ports(cfg: &ValidConfig) -> Vec<Finding> {
    let range = cfg.relay_ports.min..=cfg.relay_ports.max;
    let span = u32::from(cfg.relay_ports.max - cfg.relay_ports.min) + 1;
    // A sample spread over the range: 32 ports (or all of a small range).
    let n = span.min(32);
    let ips: Vec<IpAddr> = if cfg.relay_ips.is_empty() {
        vec![IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED)]
    } else {
        cfg.relay_ips.clone()
    };
    let mut out = Vec::new();
    for ip in ips {
        let mut busy = Vec::new();
        let mut failed = None;
        for i in 0..n {
            let port = cfg.relay_ports.min as u32 + i * span / n;
            let Ok(port) = u16::try_from(port) else {
                continue;
            };
            if !range.contains(&port) {
                continue;
            }
            match std::net::UdpSocket::bind((ip, port)) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => busy.push(port),
                Err(e) => failed = Some(e.to_string()),
            }
        }
        if let Some(e) = failed {
            out.push(finding(
                Level::Error,
                "relay-ports",
                format!("cannot bind relay ports on {ip}: {e}"),
                "set relay-ips to an address of this machine",
            ));
        } else if busy.len() as u32 * 4 > n {
            out.push(finding(
                Level::Warn,
                "relay-ports",
                format!(
                    "{} of {n} sampled relay ports on {ip} are in use ({:?}…)",
                    busy.len(),
                    &busy[..busy.len().min(5)]
                ),
                "give natpass a relay-ports range no other program uses",
            ));
        } else {
            out.push(finding(
                Level::Ok,
                "relay-ports",
                format!(
                    "{n} sampled ports of {}-{} bind on {ip} ({} busy)",
                    cfg.relay_ports.min,
                    cfg.relay_ports.max,
                    busy.len()
                ),
                "open this UDP range in the firewall",
            ));
        }
    }
    out
}

fn ports(cfg: &ValidConfig) -> Vec<Finding> {
    let mut out = Vec::new();
    let all = cfg.listen.iter().chain(&cfg.tls_listen);
    for a in all {
        let p = a.port();
        if p != 0 && p < 1024 && ![443, 80, 53].contains(&p) {
            out.push(finding(
                Level::Warn,
                "ports",
                format!("TURN on port {p}: browsers refuse TURN servers on ports below 1024 other than 53, 80 and 443"),
                "use 3478 (and 443 for TLS)",
            ));
        }
    }
    if cfg.tls_listen.is_empty() {
        out.push(finding(
            Level::Warn,
            "ports",
            "no TURN over TLS: browsers behind firewalls that only let 443/tcp out cannot relay"
                .into(),
            "set domain (or tls-listen with tls-cert) to serve turns: on 443",
        ));
    }
    out
}

fn realm(cfg: &ValidConfig) -> Vec<Finding> {
    if cfg.realm == crate::config::defaults::REALM {
        if let Some(d) = cfg.acme.as_ref().and_then(|a| a.domains.first()) {
            return vec![finding(
                Level::Warn,
                "realm",
                format!("the realm is the default `{}`", cfg.realm),
                &format!("set realm = \"{d}\" (clients show it, long-term credentials hash it)"),
            )];
        }
    }
    vec![finding(
        Level::Ok,
        "realm",
        format!("realm `{}`", cfg.realm),
        "",
    )]
}

fn http(cfg: &ValidConfig) -> Vec<Finding> {
    let Some(h) = &cfg.http else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let public = !h.addr.ip().is_loopback();
    if public && h.tls == HttpTls::Off {
        out.push(finding(
            Level::Warn,
            "http",
            format!("the call page on {} is plain HTTP: browsers give cameras only to HTTPS pages (and localhost)", h.addr),
            "set domain (a certificate from ACME) or http-self-signed = true",
        ));
    }
    if public {
        out.push(finding(
            Level::Ok,
            "http",
            format!(
                "the web side on {} is open to the world: credentials are rate-limited per address and connections capped (built in); /metrics is served there only on loopback",
                h.addr
            ),
            "",
        ));
    }
    if cfg.metrics.is_some_and(|m| !m.ip().is_loopback()) {
        out.push(finding(
            Level::Warn,
            "http",
            "metrics listen on a non-loopback address: anyone can read the server's counters"
                .into(),
            "bind metrics to 127.0.0.1 or firewall it",
        ));
    }
    out
}

fn read_sysctl(path: &str) -> Option<u64> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Kernel UDP buffer limits: natpass asks for larger socket buffers than Linux's default
/// maximum (212,992 bytes); with the default, bursts above a few thousand packets are dropped.
fn udp_buffers(rmem: Option<u64>, wmem: Option<u64>) -> Vec<Finding> {
    const WANT: u64 = 4 * 1024 * 1024;
    match (rmem, wmem) {
        (Some(r), Some(w)) if r >= WANT && w >= WANT => vec![finding(
            Level::Ok,
            "udp-buffers",
            format!("net.core.rmem_max {r}, wmem_max {w}"),
            "",
        )],
        (Some(r), Some(w)) => vec![finding(
            Level::Warn,
            "udp-buffers",
            format!(
                "net.core.rmem_max {r} and wmem_max {w} are below {WANT}: bursts of media will be dropped at high load"
            ),
            "sysctl -w net.core.rmem_max=4194304 net.core.wmem_max=4194304 (and in /etc/sysctl.d/)",
        )],
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn domain_cfg(external: &[&str]) -> ValidConfig {
        ValidConfig::load(
            None,
            crate::config::Settings {
                domain: vec!["turn.example.org".into()],
                state_dir: Some("/tmp/natpass-doctor-test".into()),
                external_ips: external.iter().map(|e| e.parse().unwrap()).collect(),
                ..Default::default()
            },
        )
        .unwrap()
    }

    #[test]
    fn the_domain_must_resolve_to_the_address_the_world_sees() {
        let public: IpAddr = "203.0.113.5".parse().unwrap();
        let to = |ip: &'static str| move |_: &str| Ok(vec![ip.parse::<IpAddr>().unwrap()]);
        let ok = dns(&domain_cfg(&[]), Some(public), &to("203.0.113.5"));
        assert_eq!(ok[0].level, Level::Ok, "{ok:?}");
        let wrong = dns(&domain_cfg(&[]), Some(public), &to("198.51.100.9"));
        assert_eq!(wrong[0].level, Level::Error);
        assert!(
            wrong[0]
                .message
                .contains("resolves to 198.51.100.9 but this server is 203.0.113.5")
        );
        assert!(
            wrong[0].fix.contains("A record at 203.0.113.5"),
            "{wrong:?}"
        );
        // external-ip counts as this server's address (the STUN answer may be missing).
        let ext = dns(
            &domain_cfg(&["198.51.100.9/10.0.0.9"]),
            None,
            &to("198.51.100.9"),
        );
        assert_eq!(ext[0].level, Level::Ok, "{ext:?}");
        // A stale second record (an old AAAA, a second A) is an error too.
        let two = |_: &str| {
            Ok(vec![
                "203.0.113.5".parse::<IpAddr>().unwrap(),
                "2001:db8::7".parse::<IpAddr>().unwrap(),
            ])
        };
        let stale = dns(&domain_cfg(&[]), Some(public), &two);
        assert_eq!(stale[0].level, Level::Error, "{stale:?}");
        assert!(
            stale[0].message.contains("resolves to 2001:db8::7 but"),
            "{stale:?}"
        );
        let none = dns(&domain_cfg(&[]), Some(public), &|_: &str| {
            Err("no such host".into())
        });
        assert_eq!(none[0].level, Level::Error);
        assert!(
            none[0]
                .fix
                .contains("add an A record for turn.example.org pointing at 203.0.113.5"),
            "{none:?}"
        );
    }

    #[test]
    fn udp_buffers_below_four_mib_are_a_warning_with_the_sysctl() {
        let w = udp_buffers(Some(212_992), Some(212_992));
        assert_eq!(w[0].level, Level::Warn);
        assert!(w[0].fix.contains("sysctl -w net.core.rmem_max"));
        assert_eq!(
            udp_buffers(Some(8 << 20), Some(8 << 20))[0].level,
            Level::Ok
        );
        assert!(udp_buffers(None, None).is_empty());
    }
}
