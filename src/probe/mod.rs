//! turnutils-style probes: check, diagnose and load any STUN/TURN server (natpass, coturn, …).
//!
//! - [`stun`]: Binding requests with retransmission; mapped address, responder, RTT.
//! - [`turn`]: allocate, permission, channel (or Send indications), echo through a peer.
//! - [`nat`]: RFC 5780 NAT behaviour discovery (mapping and filtering).
//! - [`load`]: the load generator.
//! - [`echo`]: a UDP echo peer (`natpass peer`).

pub mod echo;
pub mod load;
pub mod sfu;

use crate::client::{Client, ClientError, Incoming};
use serde::Serialize;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::time::{Duration, Instant};

static INTERRUPTED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether SIGINT or SIGTERM arrived since [`stop_on_signals`]: the probes that allocate stop,
/// delete their allocations and return [`ClientError::Interrupted`].
pub fn interrupted() -> bool {
    INTERRUPTED.load(std::sync::atomic::Ordering::Relaxed)
}

/// Catch SIGINT and SIGTERM (on a thread of its own) so that a probe holding allocations can
/// delete them before it exits; a second signal exits at once (status 130). Without this call
/// the signals keep their default action.
pub fn stop_on_signals() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    // Registered here, before the probe starts, so no signal falls between the two.
    let (mut int, mut term) = rt.block_on(async {
        Ok::<_, std::io::Error>((
            signal(SignalKind::interrupt())?,
            signal(SignalKind::terminate())?,
        ))
    })?;
    std::thread::Builder::new()
        .name("natpass-signals".into())
        .spawn(move || {
            rt.block_on(async move {
                let mut seen = false;
                loop {
                    tokio::select! {
                        _ = int.recv() => {}
                        _ = term.recv() => {}
                    }
                    if seen {
                        std::process::exit(130);
                    }
                    seen = true;
                    INTERRUPTED.store(true, std::sync::atomic::Ordering::Relaxed);
                }
            })
        })?;
    Ok(())
}

fn check_interrupted() -> Result<(), ClientError> {
    if interrupted() {
        Err(ClientError::Interrupted)
    } else {
        Ok(())
    }
}

/// The transport a probe uses to reach the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum ProbeTransport {
    /// UDP.
    Udp,
    /// TCP.
    Tcp,
    /// TLS over TCP.
    Tls,
}

impl std::fmt::Display for ProbeTransport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ProbeTransport::Udp => "udp",
            ProbeTransport::Tcp => "tcp",
            ProbeTransport::Tls => "tls",
        })
    }
}

/// A server named as `host[:port]` or a `stun:`/`turn:`/`turns:` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    /// Resolved address.
    pub addr: SocketAddr,
    /// Host as given (for TLS server names).
    pub host: String,
    /// Transport the URL implies (None: not said).
    pub transport: Option<ProbeTransport>,
}

/// Why a server name is unusable.
#[derive(Debug, thiserror::Error)]
#[error("cannot use server `{given}`: {why}")]
pub struct SpecError {
    given: String,
    why: String,
}

/// Parse `host[:port]`, `[v6]:port`, `stun:host[:port]`, `turn:host[:port]?transport=tcp`,
/// `turns:host[:port]`.
pub fn parse_server(s: &str) -> Result<ServerSpec, SpecError> {
    let err = |why: &str| SpecError {
        given: s.to_owned(),
        why: why.to_owned(),
    };
    let (scheme, rest) = match s.split_once(':') {
        Some((sch @ ("stun" | "stuns" | "turn" | "turns"), rest)) => (Some(sch), rest),
        _ => (None, s),
    };
    let (hostport, query) = match rest.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (rest, None),
    };
    let mut transport = match scheme {
        Some("turns" | "stuns") => Some(ProbeTransport::Tls),
        _ => None,
    };
    if let Some(q) = query {
        for kv in q.split('&') {
            match kv {
                "transport=udp" => transport = Some(ProbeTransport::Udp),
                "transport=tcp" if transport != Some(ProbeTransport::Tls) => {
                    transport = Some(ProbeTransport::Tcp)
                }
                "transport=tcp" => {}
                _ => return Err(err("unknown URL parameter (only transport=udp|tcp)")),
            }
        }
    }
    let default_port = if transport == Some(ProbeTransport::Tls) {
        5349
    } else {
        3478
    };
    let (host, port) =
        split_host_port(hostport, default_port).ok_or_else(|| err("expected host[:port]"))?;
    if host.is_empty() {
        return Err(err("empty host"));
    }
    let addr = (host.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| err(&format!("cannot resolve: {e}")))?
        .next()
        .ok_or_else(|| err("no address"))?;
    Ok(ServerSpec {
        addr,
        host,
        transport,
    })
}

fn split_host_port(s: &str, default_port: u16) -> Option<(String, u16)> {
    if let Some(rest) = s.strip_prefix('[') {
        let (h, after) = rest.split_once(']')?;
        let port = match after.strip_prefix(':') {
            Some(p) => p.parse().ok()?,
            None if after.is_empty() => default_port,
            None => return None,
        };
        return Some((h.to_owned(), port));
    }
    if s.matches(':').count() > 1 {
        return Some((s.to_owned(), default_port)); // bare IPv6
    }
    match s.split_once(':') {
        Some((h, p)) => Some((h.to_owned(), p.parse().ok()?)),
        None => Some((s.to_owned(), default_port)),
    }
}

/// How a TLS probe checks the server certificate.
#[derive(Debug, Clone, Default)]
pub struct TlsOptions {
    /// Trust this PEM CA (or self-signed certificate) instead of the public roots.
    pub ca: Option<std::path::PathBuf>,
    /// Do not verify the certificate at all.
    pub insecure: bool,
}

#[derive(Debug)]
struct NoVerify(std::sync::Arc<rustls::crypto::CryptoProvider>);

impl rustls::client::danger::ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _: &rustls::pki_types::CertificateDer<'_>,
        _: &[rustls::pki_types::CertificateDer<'_>],
        _: &rustls::pki_types::ServerName<'_>,
        _: &[u8],
        _: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        Ok(rustls::client::danger::ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn verify_tls13_signature(
        &self,
        m: &[u8],
        c: &rustls::pki_types::CertificateDer<'_>,
        d: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A rustls client config for probes.
pub fn tls_client_config(
    o: &TlsOptions,
) -> Result<std::sync::Arc<rustls::ClientConfig>, ClientError> {
    use rustls::pki_types::pem::PemObject;
    let provider = crate::net::tls::provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| ClientError::Protocol(e.to_string()))?;
    let mut cfg = if o.insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(std::sync::Arc::new(NoVerify(provider)))
            .with_no_client_auth()
    } else {
        let mut roots = rustls::RootCertStore::empty();
        match &o.ca {
            Some(path) => {
                let bad = |e: &dyn std::fmt::Display| {
                    ClientError::Protocol(format!("--ca {}: {e}", path.display()))
                };
                for c in
                    rustls::pki_types::CertificateDer::pem_file_iter(path).map_err(|e| bad(&e))?
                {
                    roots.add(c.map_err(|e| bad(&e))?).map_err(|e| bad(&e))?;
                }
            }
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    cfg.alpn_protocols = vec![b"stun.turn".to_vec()];
    Ok(std::sync::Arc::new(cfg))
}

/// Connect a client over `transport`.
pub fn connect(spec: &ServerSpec, transport: ProbeTransport) -> Result<Client, ClientError> {
    connect_with(spec, transport, &TlsOptions::default())
}

/// Connect a client over `transport`, with TLS settings.
pub fn connect_with(
    spec: &ServerSpec,
    transport: ProbeTransport,
    tls: &TlsOptions,
) -> Result<Client, ClientError> {
    match transport {
        ProbeTransport::Udp => Ok(Client::udp(spec.addr, None)?),
        ProbeTransport::Tcp => Ok(Client::tcp(spec.addr, Duration::from_secs(5))?),
        ProbeTransport::Tls => {
            let cfg = tls_client_config(tls)?;
            Client::tls(spec.addr, &spec.host, cfg, Duration::from_secs(5))
        }
    }
}

/// One Binding result.
#[derive(Debug, Clone, Serialize)]
pub struct BindingResult {
    /// XOR-MAPPED-ADDRESS.
    pub mapped: Option<SocketAddr>,
    /// Who answered.
    pub from: SocketAddr,
    /// Round trip in milliseconds.
    pub rtt_ms: f64,
    /// Transmissions needed.
    pub tries: u32,
}

/// `probe stun` report.
#[derive(Debug, Clone, Serialize)]
pub struct StunReport {
    /// Server.
    pub server: SocketAddr,
    /// Transport.
    pub transport: ProbeTransport,
    /// Our local address.
    pub local: Option<SocketAddr>,
    /// Requests sent.
    pub sent: u32,
    /// Answers.
    pub results: Vec<BindingResult>,
    /// Errors met.
    pub errors: Vec<String>,
}

/// Send `count` Binding requests; `each` hears of every answer or error as it happens (the
/// number of the request, from 1), so a terminal shows progress while retransmissions wait.
pub fn stun(
    spec: &ServerSpec,
    transport: ProbeTransport,
    count: u32,
    tls: &TlsOptions,
    each: &mut dyn FnMut(u32, Result<&BindingResult, &str>),
) -> Result<StunReport, ClientError> {
    let mut c = connect_with(spec, transport, tls)?;
    let mut report = StunReport {
        server: spec.addr,
        transport,
        local: c.local_addr().ok(),
        sent: 0,
        results: Vec::new(),
        errors: Vec::new(),
    };
    for i in 0..count {
        report.sent += 1;
        match c.binding() {
            Ok(r) => {
                let b = BindingResult {
                    mapped: r.mapped(),
                    from: r.from,
                    rtt_ms: round_ms(r.rtt),
                    tries: r.tries,
                };
                each(i + 1, Ok(&b));
                report.results.push(b);
            }
            Err(e) => {
                let e = e.to_string();
                each(i + 1, Err(&e));
                report.errors.push(e);
            }
        }
        if i + 1 < count {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(report)
}

/// A duration in milliseconds, rounded to the microsecond (JSON without float noise).
pub fn round_ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// Credentials for the TURN probes.
#[derive(Debug, Clone)]
pub enum Creds {
    /// Long-term user and password.
    User(String, String),
    /// A REST secret and the name to mint for.
    Secret(crate::auth::Secret, String),
}

impl Creds {
    /// (username, password), minting a REST credential when needed.
    pub fn resolve(&self) -> (String, String) {
        match self {
            Creds::User(u, p) => (u.clone(), p.clone()),
            Creds::Secret(s, name) => {
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                crate::auth::mint_rest(s, name, 600, now)
            }
        }
    }
}

/// `probe turn` settings.
#[derive(Debug, Clone)]
pub struct TurnOptions {
    /// Credentials.
    pub creds: Creds,
    /// Transport to the server.
    pub transport: ProbeTransport,
    /// Relayed address family (4 or 6).
    pub family: u8,
    /// Echo peer; None starts one locally when the server is local.
    pub peer: Option<SocketAddr>,
    /// Messages.
    pub count: u32,
    /// Payload bytes (at least 12: sequence number and timestamp).
    pub size: usize,
    /// Messages per second.
    pub rate: f64,
    /// Send indications instead of a channel.
    pub no_channel: bool,
    /// TLS verification.
    pub tls: TlsOptions,
    /// Told of each step as it happens (a terminal's progress lines), if set.
    pub progress: Option<fn(&str)>,
}

/// `probe turn` report.
#[derive(Debug, Clone, Serialize)]
pub struct TurnReport {
    /// Server.
    pub server: SocketAddr,
    /// Transport.
    pub transport: ProbeTransport,
    /// Relayed addresses.
    pub relayed: Vec<SocketAddr>,
    /// Mapped address.
    pub mapped: Option<SocketAddr>,
    /// Granted lifetime.
    pub lifetime: u32,
    /// The echo peer used.
    pub peer: SocketAddr,
    /// Whether a channel carried the data (else Send/Data indications).
    pub channel: bool,
    /// Sent messages.
    pub sent: u32,
    /// Echoes received.
    pub received: u32,
    /// Lost.
    pub lost: u32,
    /// RTT min/median/p99/max in ms.
    pub rtt_ms: Option<[f64; 4]>,
}

fn is_local(ip: IpAddr) -> bool {
    ip.is_loopback() || std::net::UdpSocket::bind(SocketAddr::new(ip, 0)).is_ok()
}

/// Allocate, permit, bind, echo `count` messages through the relay, then release.
pub fn turn(spec: &ServerSpec, opts: &TurnOptions) -> Result<TurnReport, ClientError> {
    let step = |m: &str| {
        if let Some(p) = opts.progress {
            p(m)
        }
    };
    step(&format!(
        "connecting to {} over {}",
        spec.addr, opts.transport
    ));
    let mut c = connect_with(spec, opts.transport, &opts.tls)?;
    let (user, pass) = opts.creds.resolve();
    c.set_credentials(&user, &pass);
    step("allocating");
    let alloc = c.allocate(Some(opts.family), None)?;
    let relayed = alloc.relayed[0];
    step(&format!("allocated {relayed} for {} s", alloc.lifetime));
    let mut _echo = None;
    let peer = match opts.peer {
        Some(p) => p,
        None if is_local(spec.addr.ip()) => {
            let ip = if relayed.is_ipv4() {
                spec.addr.ip()
            } else {
                "::1".parse().expect("valid")
            };
            let ip = if relayed.is_ipv4() != ip.is_ipv4() {
                relayed.ip()
            } else {
                ip
            };
            let e = echo::EchoPeer::start(&[SocketAddr::new(ip, 0)])?;
            let a = e.addrs()[0];
            _echo = Some(e);
            a
        }
        None => {
            return Err(ClientError::Protocol(
                "the server is not local: give --peer ADDR of a UDP echo peer (e.g. `natpass peer`)".into(),
            ));
        }
    };
    // The probe's own echo peer is on this machine, which a server's default policy denies.
    let own_peer = _echo.is_some();
    let denied = |e: ClientError| match e {
        ClientError::Stun { code: 403, .. } if own_peer => ClientError::Advice(format!(
            "the server denies the probe's own echo peer {peer} (403; loopback and private \
             peers are denied by default): start the server with --allow-peer {} for a test on \
             this machine, or give --peer ADDR of an echo peer it may reach (`natpass peer`)",
            match peer.ip() {
                IpAddr::V4(_) => "127.0.0.0/8",
                IpAddr::V6(_) => "::1/128",
            }
        )),
        e => e,
    };
    step(&format!("permission for peer {peer}"));
    c.create_permission(&[peer]).map_err(denied)?;
    let channel = crate::proto::ChannelNumber::MIN;
    if !opts.no_channel {
        step("binding channel 0x4000");
        c.channel_bind(channel, peer).map_err(denied)?;
    }
    step(&format!("echoing {} messages", opts.count));
    let size = opts.size.max(12);
    let interval = Duration::from_secs_f64(1.0 / opts.rate.max(0.1));
    let start = Instant::now();
    let mut rtts: Vec<f64> = Vec::new();
    let mut received = 0u32;
    let mut seen = vec![false; opts.count as usize];
    let mut next = start;
    let mut sent = 0u32;
    let mut payload = vec![0u8; size];
    loop {
        check_interrupted()?;
        let now = Instant::now();
        if sent < opts.count && now >= next {
            payload[..4].copy_from_slice(&sent.to_be_bytes());
            let t = now.duration_since(start).as_nanos() as u64;
            payload[4..12].copy_from_slice(&t.to_be_bytes());
            if opts.no_channel {
                c.send_indication(peer, &payload)?;
            } else {
                c.send_channel(channel, &payload)?;
            }
            sent += 1;
            next += interval;
            continue;
        }
        let deadline = if sent < opts.count {
            next
        } else {
            // Everything sent: wait up to 2 s (or 10 RTTs) for the last echoes.
            let grace = Duration::from_secs(2);
            if received >= sent || now.duration_since(next) > grace {
                break;
            }
            now + Duration::from_millis(50)
        };
        // Short waits, so that an interrupt is seen within a fraction of a second.
        let deadline = deadline.min(Instant::now() + Duration::from_millis(200));
        if let Some(inc) = c.recv_data(deadline)? {
            let data = match inc {
                Incoming::Channel { channel: ch, data } if ch == channel => data,
                Incoming::Data { peer: p, data } if p == peer => data,
                _ => continue,
            };
            if data.len() < 12 {
                continue;
            }
            let seq = u32::from_be_bytes([data[0], data[1], data[2], data[3]]) as usize;
            let mut t = [0u8; 8];
            t.copy_from_slice(&data[4..12]);
            if seq < seen.len() && !seen[seq] {
                seen[seq] = true;
                received += 1;
                let sent_at = Duration::from_nanos(u64::from_be_bytes(t));
                rtts.push(round_ms(start.elapsed().saturating_sub(sent_at)));
            }
        }
    }
    c.release();
    rtts.sort_by(f64::total_cmp);
    let pct = |p: f64| rtts[((rtts.len() - 1) as f64 * p).round() as usize];
    Ok(TurnReport {
        server: spec.addr,
        transport: opts.transport,
        relayed: alloc.relayed.clone(),
        mapped: alloc.mapped,
        lifetime: alloc.lifetime,
        peer,
        channel: !opts.no_channel,
        sent,
        received,
        lost: sent - received,
        rtt_ms: (!rtts.is_empty()).then(|| [rtts[0], pct(0.5), pct(0.99), rtts[rtts.len() - 1]]),
    })
}

/// A peer behind a TURN relay: allocate, permit `permit`, print `relayed ADDR` on stdout, and
/// echo every Data indication or ChannelData back to its sender (Send indications), refreshing
/// the allocation and permissions as it goes. Returns the number of messages echoed.
pub fn relay_echo(
    spec: &ServerSpec,
    transport: ProbeTransport,
    creds: &Creds,
    permit: &[IpAddr],
    duration: Option<Duration>,
    tls: &TlsOptions,
) -> Result<u64, ClientError> {
    use std::io::Write;
    let mut c = connect_with(spec, transport, tls)?;
    let (user, pass) = creds.resolve();
    c.set_credentials(&user, &pass);
    let alloc = c.allocate(None, None)?;
    let peers: Vec<SocketAddr> = permit.iter().map(|ip| SocketAddr::new(*ip, 0)).collect();
    c.create_permission(&peers)?;
    println!("relayed {}", alloc.relayed[0]);
    let _ = std::io::stdout().flush();
    let start = Instant::now();
    let mut last_refresh = Instant::now();
    let mut echoed = 0u64;
    loop {
        if duration.is_some_and(|d| start.elapsed() >= d) || interrupted() {
            break;
        }
        if last_refresh.elapsed() > Duration::from_secs(120) {
            c.refresh(600)?;
            c.create_permission(&peers)?;
            last_refresh = Instant::now();
        }
        match c.recv_data(Instant::now() + Duration::from_millis(500))? {
            Some(Incoming::Data { peer, data }) => {
                c.send_indication(peer, &data)?;
                echoed += 1;
            }
            Some(Incoming::Channel { .. }) | None => {}
        }
    }
    c.release();
    Ok(echoed)
}

/// NAT mapping or filtering behaviour (RFC 4787 terms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Behaviour {
    /// Endpoint-independent.
    EndpointIndependent,
    /// Address-dependent.
    AddressDependent,
    /// Address-and-port-dependent.
    AddressAndPortDependent,
    /// Could not be determined.
    Unknown,
}

impl std::fmt::Display for Behaviour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Behaviour::EndpointIndependent => "endpoint-independent",
            Behaviour::AddressDependent => "address-dependent",
            Behaviour::AddressAndPortDependent => "address-and-port-dependent",
            Behaviour::Unknown => "unknown",
        })
    }
}

/// `probe nat` report.
#[derive(Debug, Clone, Serialize)]
pub struct NatReport {
    /// Server.
    pub server: SocketAddr,
    /// Our local address.
    pub local: SocketAddr,
    /// Mapped address from the primary address.
    pub mapped: Option<SocketAddr>,
    /// The server's OTHER-ADDRESS (RFC 5780), if any.
    pub other_address: Option<SocketAddr>,
    /// Whether a NAT changes our address (mapped != local).
    pub behind_nat: Option<bool>,
    /// Mapping behaviour.
    pub mapping: Behaviour,
    /// Filtering behaviour.
    pub filtering: Behaviour,
    /// One-line verdict.
    pub verdict: String,
}

const OTHER_ADDRESS: u16 = 0x802C;

fn other_address(r: &crate::client::Response) -> Option<SocketAddr> {
    let m = r.message();
    let raw = m.raw_attribute(stun_types::attribute::AttributeType::new(OTHER_ADDRESS))?;
    stun_types::attribute::MappedSocketAddr::from_raw(&raw)
        .ok()
        .map(|a| a.addr())
}

fn binding_to(
    sock: &std::net::UdpSocket,
    to: SocketAddr,
    change: u8,
    wait: Duration,
) -> Option<crate::client::Response> {
    use stun_types::message::{BINDING, MessageClass, MessageWriteExt};
    let req = crate::client::build(MessageClass::Request, BINDING, |w, _| {
        if change != 0 {
            let v = [0, 0, 0, change];
            let _ = w.add_attribute(&stun_types::attribute::RawAttribute::new(
                stun_types::attribute::AttributeType::new(0x0003),
                &v,
            ));
        }
    });
    let mut buf = [0u8; 1500];
    let mut rto = Duration::from_millis(200);
    let start = Instant::now();
    while start.elapsed() < wait {
        let sent = Instant::now();
        let _ = sock.send_to(&req, to);
        let deadline = sent + rto;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            let _ = sock.set_read_timeout(Some(left));
            let Ok((n, from)) = sock.recv_from(&mut buf) else {
                break;
            };
            if n >= 20 && buf[8..20] == req[8..20] {
                if let Ok(m) = stun_types::message::Message::from_bytes(&buf[..n]) {
                    if m.has_class(MessageClass::Success) {
                        return Some(crate::client::Response {
                            bytes: buf[..n].to_vec(),
                            from,
                            rtt: sent.elapsed(),
                            tries: 1,
                        });
                    }
                }
            }
        }
        rto = (rto * 2).min(Duration::from_secs(1));
    }
    None
}

/// The local IP the route to `server` leaves from (a connected UDP socket sends nothing).
pub fn local_ip_towards(server: SocketAddr) -> std::io::Result<std::net::IpAddr> {
    let any: SocketAddr = if server.is_ipv4() {
        "0.0.0.0:0"
    } else {
        "[::]:0"
    }
    .parse()
    .expect("valid");
    let probe = std::net::UdpSocket::bind(any)?;
    probe.connect(server)?;
    Ok(probe.local_addr()?.ip())
}

/// RFC 5780 §4.3 (mapping) and §4.4 (filtering) over UDP.
pub fn nat(spec: &ServerSpec) -> Result<NatReport, ClientError> {
    let wait = Duration::from_secs(3);
    let local_ip = local_ip_towards(spec.addr)?;
    let sock = std::net::UdpSocket::bind(SocketAddr::new(local_ip, 0))?;
    let local = sock.local_addr()?;
    let t1 = binding_to(&sock, spec.addr, 0, wait).ok_or(ClientError::Timeout {
        server: spec.addr,
        tries: 5,
        waited: wait,
    })?;
    let m1 = t1.mapped();
    let other = other_address(&t1);
    let mut report = NatReport {
        server: spec.addr,
        local,
        mapped: m1,
        other_address: other,
        behind_nat: m1.map(|m| m != local),
        mapping: Behaviour::Unknown,
        filtering: Behaviour::Unknown,
        verdict: String::new(),
    };
    let Some(other) = other else {
        report.mapping = if m1 == Some(local) {
            Behaviour::EndpointIndependent
        } else {
            Behaviour::Unknown
        };
        report.verdict = format!(
            "the server does not support RFC 5780 (no OTHER-ADDRESS): {}",
            if m1 == Some(local) {
                "you are not behind a NAT"
            } else {
                "behind a NAT of unknown behaviour"
            }
        );
        return Ok(report);
    };
    // Mapping (§4.3): not NATed means the effective mapping is endpoint-independent.
    report.mapping = if m1 == Some(local) {
        Behaviour::EndpointIndependent
    } else {
        let t2 = binding_to(
            &sock,
            SocketAddr::new(other.ip(), spec.addr.port()),
            0,
            wait,
        );
        match t2.and_then(|r| r.mapped()) {
            None => Behaviour::Unknown,
            Some(m2) if Some(m2) == m1 => Behaviour::EndpointIndependent,
            Some(m2) => match binding_to(&sock, other, 0, wait).and_then(|r| r.mapped()) {
                Some(m3) if m3 == m2 => Behaviour::AddressDependent,
                Some(_) => Behaviour::AddressAndPortDependent,
                None => Behaviour::Unknown,
            },
        }
    };
    // Filtering (§4.4): change IP and port, then port only.
    let short = Duration::from_millis(1500);
    report.filtering = if binding_to(&sock, spec.addr, 0x06, short).is_some() {
        Behaviour::EndpointIndependent
    } else if binding_to(&sock, spec.addr, 0x02, short).is_some() {
        Behaviour::AddressDependent
    } else {
        Behaviour::AddressAndPortDependent
    };
    let natted = report.behind_nat == Some(true);
    report.verdict = match (report.mapping, report.filtering) {
        (_, Behaviour::EndpointIndependent) if !natted => {
            "not behind a NAT: direct calls work".into()
        }
        (_, f) if !natted => {
            format!(
                "not behind a NAT, but a firewall filters ({f}): direct calls mostly work, TURN helps"
            )
        }
        (Behaviour::EndpointIndependent, Behaviour::EndpointIndependent) => {
            "full-cone NAT: direct calls work with STUN".into()
        }
        (Behaviour::EndpointIndependent, f) => {
            format!(
                "endpoint-independent mapping with {f} filtering: hole punching works with STUN"
            )
        }
        (Behaviour::AddressAndPortDependent | Behaviour::AddressDependent, _) => {
            "symmetric NAT: direct calls will need TURN".into()
        }
        _ => "NAT behaviour could not be determined".into(),
    };
    Ok(report)
}
