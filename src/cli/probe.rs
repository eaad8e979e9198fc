//! `natpass probe …` and `natpass peer`: argument models and output (text or JSON).

use crate::auth::Secret;
use crate::probe::{self, Creds, ProbeTransport, load};
use clap::{Args, Subcommand};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

/// Probes.
#[derive(Debug, Subcommand)]
pub enum ProbeCmd {
    /// Binding requests: mapped address, responding address, round-trip time.
    Stun(StunArgs),
    /// Allocate, permit, bind a channel and echo messages through a peer.
    Turn(TurnArgs),
    /// RFC 5780 NAT behaviour discovery (the server needs an alternate address).
    Nat(NatArgs),
    /// Load generator: many allocations relaying to echo peers.
    Load(LoadArgs),
    /// SFU load without browsers: str0m publishers and subscribers on natpass's SFU (started
    /// in this process, the same thread and socket code `natpass serve` runs) over loopback.
    Sfu(SfuArgs),
}

/// `probe sfu`.
#[derive(Debug, Args)]
pub struct SfuArgs {
    /// Participants that publish one VP8 track each (and receive every other publisher's).
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Receive-only participants.
    #[arg(long, default_value_t = 4)]
    subscribers: usize,
    /// Frames (one RTP packet each) a second per publisher.
    #[arg(long, default_value_t = 150)]
    rate: u32,
    /// Bytes per frame (at most 1,100: one packet).
    #[arg(long, default_value_t = 1000)]
    size: usize,
    /// Seconds to measure once every subscription carries frames.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// SFU,CLIENTS: run the SFU's thread on core SFU and the clients on core CLIENTS.
    #[arg(long, value_name = "SFU,CLIENTS", value_parser = parse_cores)]
    cores: Option<(usize, usize)>,
    /// Load Janus's VideoRoom at this HTTP API URL (e.g. http://127.0.0.1:8088/janus) instead
    /// of natpass's SFU: the same clients and frames, Janus's CPU per packet received.
    #[arg(long, value_name = "URL")]
    janus: Option<String>,
    /// The Janus process to measure (default: the one process named janus).
    #[arg(long, value_name = "PID", requires = "janus")]
    janus_pid: Option<u32>,
    /// The clients' address (Janus gathers no loopback candidates).
    #[arg(long, value_name = "IP", default_value = "127.0.0.1")]
    bind: std::net::IpAddr,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// Common server and output flags.
#[derive(Debug, Args)]
pub struct Target {
    /// host[:port], [v6]:port, or a stun:/turn:/turns: URL.
    pub server: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// TLS verification flags.
#[derive(Debug, Args)]
pub struct TlsArgs {
    /// Trust this PEM CA or self-signed certificate (TLS).
    #[arg(long, value_name = "FILE")]
    ca: Option<std::path::PathBuf>,
    /// Do not verify the server certificate (TLS).
    #[arg(long)]
    insecure: bool,
}

impl TlsArgs {
    fn options(&self) -> probe::TlsOptions {
        probe::TlsOptions {
            ca: self.ca.clone(),
            insecure: self.insecure,
        }
    }
}

/// `probe stun`.
#[derive(Debug, Args)]
pub struct StunArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    tls: TlsArgs,
    /// Transport (default: from the URL, else udp).
    #[arg(long, value_enum)]
    transport: Option<ProbeTransport>,
    /// Requests to send.
    #[arg(long, default_value_t = 1)]
    count: u32,
}

/// Credentials.
#[derive(Debug, Args)]
pub struct CredArgs {
    /// Long-term username (with --password), or the name to mint for (with --secret).
    #[arg(long)]
    user: Option<String>,
    /// Long-term password.
    #[arg(long)]
    password: Option<String>,
    /// TURN REST shared secret: mint a credential instead.
    #[arg(long)]
    secret: Option<Secret>,
}

impl CredArgs {
    fn creds(&self) -> Result<Creds, String> {
        match (&self.user, &self.password, &self.secret) {
            (Some(u), Some(p), None) => Ok(Creds::User(u.clone(), p.clone())),
            (u, None, Some(s)) => Ok(Creds::Secret(
                s.clone(),
                u.clone().unwrap_or_else(|| "probe".into()),
            )),
            _ => Err("no credentials: give --user and --password, or --secret (and optionally \
                      --user); a natpass started without users or auth-secrets generated a secret \
                      of its own, so start it with --auth-secret S (or --user NAME:PASS) to probe it"
                .into()),
        }
    }
}

/// `probe turn`.
#[derive(Debug, Args)]
pub struct TurnArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    tls: TlsArgs,
    #[command(flatten)]
    creds: CredArgs,
    /// Transport to the server (default: from the URL, else udp).
    #[arg(long, value_enum)]
    transport: Option<ProbeTransport>,
    /// Relayed address family.
    #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u8).range(4..=6))]
    family: u8,
    /// UDP echo peer (default: one started here when the server is local).
    #[arg(long)]
    peer: Option<SocketAddr>,
    /// Messages to send.
    #[arg(long, default_value_t = 20)]
    count: u32,
    /// Payload bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Messages per second.
    #[arg(long, default_value_t = 50.0)]
    rate: f64,
    /// Use Send/Data indications instead of a channel.
    #[arg(long)]
    no_channel: bool,
}

/// `probe nat`.
#[derive(Debug, Args)]
pub struct NatArgs {
    #[command(flatten)]
    target: Target,
}

/// `probe load`.
#[derive(Debug, Args)]
pub struct LoadArgs {
    #[command(flatten)]
    target: Target,
    #[command(flatten)]
    creds: CredArgs,
    /// Transport to the server.
    #[arg(long, value_enum, default_value = "udp")]
    transport: ProbeTransport,
    #[command(flatten)]
    tls: TlsArgs,
    /// Pace like calls instead of --rate: per allocation, a video frame 30 times a second of
    /// --size-byte packets adding up to MBIT Mbit/s, and a 100-byte audio packet every 20 ms
    /// (e.g. --media 1.5 --size 1100); Mbit/s in the report are the payload echoed.
    #[arg(long, value_name = "MBIT", conflicts_with_all = ["raw", "binding", "no_channel", "window"])]
    media: Option<f64>,
    /// Concurrent allocations.
    #[arg(long, default_value_t = 10)]
    allocations: usize,
    /// Payload bytes.
    #[arg(long, default_value_t = 100)]
    size: usize,
    /// Total messages per second (0: as fast as the window allows).
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Seconds of sending.
    #[arg(long, default_value_t = 5.0)]
    duration: f64,
    /// Stop after this many messages.
    #[arg(long)]
    count: Option<u64>,
    /// Worker threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// In-flight messages per allocation when --rate 0.
    #[arg(long, default_value_t = 16)]
    window: u32,
    /// Use Send/Data indications instead of channels.
    #[arg(long)]
    no_channel: bool,
    /// Echo peers (repeatable; default: local ones).
    #[arg(long)]
    peer: Vec<SocketAddr>,
    /// No TURN: plain UDP to SERVER, which must echo (measures the floor for comparisons).
    #[arg(long, conflicts_with = "binding")]
    raw: bool,
    /// No TURN: STUN Binding requests to SERVER, each answer counted (measures a STUN
    /// server's Binding throughput and CPU per answer).
    #[arg(long, conflicts_with = "no_channel")]
    binding: bool,
}

fn fail(json: bool, e: impl std::fmt::Display) -> ExitCode {
    if json {
        println!("{}", serde_json::json!({ "error": e.to_string() }));
    }
    eprintln!("{}{e}", crate::cli::ERROR);
    if probe::interrupted() {
        // The shell's convention for "ended by SIGINT".
        ExitCode::from(130)
    } else {
        ExitCode::FAILURE
    }
}

/// Progress lines go to stderr, and only on a terminal (a pipe gets the report alone).
fn on_tty() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stderr())
}

fn step(m: &str) {
    eprintln!("natpass probe: {m}");
}

/// One status line rewritten in place (a terminal), ended before the report.
fn live_line(m: &str) {
    eprint!("\r\x1b[2Knatpass probe load: {m}");
}

/// Probes that allocate catch SIGINT/SIGTERM to delete their allocations before exiting.
fn catch_signals() {
    if let Err(e) = probe::stop_on_signals() {
        eprintln!(
            "{}cannot catch SIGINT/SIGTERM ({e}); an interrupt leaves allocations to expire",
            crate::cli::WARNING
        );
    }
}

fn print_json<T: serde::Serialize>(v: &T) {
    println!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

/// Run a probe.
pub fn run(cmd: ProbeCmd) -> ExitCode {
    let (server, json) = match &cmd {
        ProbeCmd::Stun(a) => (&a.target.server, a.target.json),
        ProbeCmd::Turn(a) => (&a.target.server, a.target.json),
        ProbeCmd::Nat(a) => (&a.target.server, a.target.json),
        ProbeCmd::Load(a) => (&a.target.server, a.target.json),
        // It starts its own SFU: no server to parse.
        ProbeCmd::Sfu(a) => return sfu(a),
    };
    let spec = match probe::parse_server(server) {
        Ok(s) => s,
        Err(e) => return fail(json, e),
    };
    if matches!(cmd, ProbeCmd::Turn(_) | ProbeCmd::Load(_)) {
        catch_signals();
    }
    match cmd {
        ProbeCmd::Stun(a) => {
            let t = a
                .transport
                .or(spec.transport)
                .unwrap_or(ProbeTransport::Udp);
            let (server, count) = (spec.addr, a.count.max(1));
            let mut each = |i: u32, r: Result<&probe::BindingResult, &str>| {
                if json {
                    return;
                }
                match r {
                    Ok(b) => println!(
                        "binding {i}/{count} to {server} over {t}: mapped {}, answered by {}, rtt {:.2} ms{}",
                        b.mapped.map_or("-".into(), |m| m.to_string()),
                        b.from,
                        b.rtt_ms,
                        if b.tries > 1 {
                            format!(" ({} tries)", b.tries)
                        } else {
                            String::new()
                        }
                    ),
                    Err(e) => println!("binding {i}/{count} to {server} over {t}: {e}"),
                }
                let _ = std::io::Write::flush(&mut std::io::stdout());
            };
            match probe::stun(&spec, t, count, &a.tls.options(), &mut each) {
                Err(e) => fail(json, e),
                Ok(r) => {
                    if json {
                        print_json(&r);
                    } else {
                        println!("{} of {} answered", r.results.len(), r.sent);
                    }
                    if r.results.is_empty() {
                        ExitCode::FAILURE
                    } else {
                        ExitCode::SUCCESS
                    }
                }
            }
        }
        ProbeCmd::Turn(a) => {
            let creds = match a.creds.creds() {
                Ok(c) => c,
                Err(e) => return fail(json, e),
            };
            let opts = probe::TurnOptions {
                creds,
                transport: a
                    .transport
                    .or(spec.transport)
                    .unwrap_or(ProbeTransport::Udp),
                family: a.family,
                peer: a.peer,
                count: a.count,
                size: a.size,
                rate: a.rate,
                no_channel: a.no_channel,
                tls: a.tls.options(),
                progress: on_tty().then_some(step as fn(&str)),
            };
            match probe::turn(&spec, &opts) {
                Err(e) => fail(json, e),
                Ok(r) => {
                    if json {
                        print_json(&r);
                    } else {
                        let relayed: Vec<String> =
                            r.relayed.iter().map(|a| a.to_string()).collect();
                        println!("server        {} ({})", r.server, r.transport);
                        println!("relayed       {}", relayed.join(", "));
                        println!(
                            "mapped        {}",
                            r.mapped.map_or("-".into(), |m| m.to_string())
                        );
                        println!("lifetime      {} s", r.lifetime);
                        println!(
                            "peer          {} via {}",
                            r.peer,
                            if r.channel {
                                "channel 0x4000"
                            } else {
                                "Send/Data indications"
                            }
                        );
                        println!(
                            "messages      sent {}, received {}, lost {} ({:.1}%)",
                            r.sent,
                            r.received,
                            r.lost,
                            if r.sent == 0 {
                                0.0
                            } else {
                                r.lost as f64 * 100.0 / r.sent as f64
                            }
                        );
                        if let Some([min, med, p99, max]) = r.rtt_ms {
                            println!(
                                "rtt           min {min:.2} / median {med:.2} / p99 {p99:.2} / max {max:.2} ms"
                            );
                        }
                    }
                    if r.lost == 0 {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
            }
        }
        ProbeCmd::Nat(_) => match probe::nat(&spec) {
            Err(e) => fail(json, e),
            Ok(r) => {
                if json {
                    print_json(&r);
                } else {
                    println!("local         {}", r.local);
                    println!(
                        "mapped        {}",
                        r.mapped.map_or("-".into(), |m| m.to_string())
                    );
                    println!(
                        "other address {}",
                        r.other_address
                            .map_or("- (no RFC 5780 support)".into(), |m| m.to_string())
                    );
                    println!("mapping       {}", r.mapping);
                    println!("filtering     {}", r.filtering);
                    println!("verdict       {}", r.verdict);
                }
                ExitCode::SUCCESS
            }
        },
        ProbeCmd::Load(a) => {
            let creds = match (a.raw || a.binding, a.creds.creds()) {
                (_, Ok(c)) => c,
                (true, Err(_)) => Creds::User(String::new(), String::new()),
                (false, Err(e)) => return fail(json, e),
            };
            if !(a.duration > 0.0 && a.duration <= 3600.0) {
                return fail(json, "--duration must be between 0 and 3600 seconds");
            }
            let o = load::LoadOptions {
                creds,
                transport: a.transport,
                allocations: a.allocations.max(1),
                size: a.size,
                rate: a.rate.max(0.0),
                duration: Duration::from_secs_f64(a.duration),
                count: a.count,
                threads: a.threads.clamp(1, 64),
                no_channel: a.no_channel,
                peers: a.peer,
                window: a.window,
                bind_ip: None,
                raw: a.raw,
                binding: a.binding,
                tls: a.tls.options(),
                media: a.media.filter(|m| *m > 0.0),
                progress: on_tty().then_some(live_line as fn(&str)),
            };
            let result = load::run(&spec, &o);
            if o.progress.is_some() {
                eprintln!();
            }
            match result {
                Err(e) => fail(json, e),
                Ok(r) => {
                    if json {
                        print_json(&r);
                    } else {
                        println!(
                            "server      {}  allocations {} (setup {:.2} s, {:.0}/s)  {} B via {}",
                            r.server,
                            r.allocations,
                            r.setup_seconds,
                            r.setup_rate,
                            r.size,
                            if r.channel {
                                "channels"
                            } else {
                                "Send indications"
                            }
                        );
                        println!(
                            "offered     {}",
                            if let Some(m) = r.media_mbit {
                                format!(
                                    "{:.0} msg/s as calls: per allocation {m} Mbit/s of video (30 frames/s) and audio every 20 ms",
                                    r.offered_rate
                                )
                            } else if r.offered_rate > 0.0 {
                                format!("{:.0} msg/s", r.offered_rate)
                            } else {
                                "unpaced".into()
                            }
                        );
                        println!(
                            "achieved    {:.0} msg/s, {:.2} Mbit/s over {:.1} s",
                            r.achieved_rate, r.achieved_mbit, r.duration_seconds
                        );
                        println!(
                            "messages    sent {}, received {}, lost {} ({:.3}%)",
                            r.sent, r.received, r.lost, r.loss_percent
                        );
                        println!(
                            "latency     p50 {} µs, p90 {} µs, p99 {} µs, max {} µs",
                            r.latency_us.p50, r.latency_us.p90, r.latency_us.p99, r.latency_us.max
                        );
                    }
                    ExitCode::SUCCESS
                }
            }
        }
        ProbeCmd::Sfu(_) => unreachable!("answered before the server is parsed"),
    }
}

/// `natpass peer`.
#[derive(Debug, Args)]
pub struct PeerArgs {
    /// Address to echo on (repeatable; default 127.0.0.1:3480).
    #[arg(long, value_name = "ADDR:PORT")]
    listen: Vec<SocketAddr>,
    /// Echo behind a TURN relay instead: allocate on this server and echo what arrives there
    /// (a peer behind NAT). Prints `relayed ADDR` first.
    #[arg(long, value_name = "SERVER")]
    turn: Option<String>,
    #[command(flatten)]
    creds: CredArgs,
    /// Transport to the TURN server.
    #[arg(long, value_enum, default_value = "udp")]
    transport: ProbeTransport,
    /// IPs allowed to reach the relayed address (repeatable; default: the server's IP, which is
    /// where other allocations of the same server send from).
    #[arg(long, value_name = "IP")]
    permit: Vec<std::net::IpAddr>,
    /// Stop after this many seconds (default: run until killed).
    #[arg(long)]
    duration: Option<f64>,
    #[command(flatten)]
    tls: TlsArgs,
}

/// `natpass peer`: echo until killed (or for `--duration`).
pub fn peer(a: PeerArgs) -> ExitCode {
    if let Some(server) = &a.turn {
        let spec = match probe::parse_server(server) {
            Ok(s) => s,
            Err(e) => return fail(false, e),
        };
        let creds = match a.creds.creds() {
            Ok(c) => c,
            Err(e) => return fail(false, e),
        };
        let permit = if a.permit.is_empty() {
            vec![spec.addr.ip()]
        } else {
            a.permit.clone()
        };
        let duration = a.duration.map(Duration::from_secs_f64);
        catch_signals();
        return match probe::relay_echo(
            &spec,
            a.transport,
            &creds,
            &permit,
            duration,
            &a.tls.options(),
        ) {
            Ok(n) => {
                eprintln!("natpass peer: echoed {n} messages");
                ExitCode::SUCCESS
            }
            Err(e) => fail(false, e),
        };
    }
    let listen = a.listen;
    let addrs: Vec<SocketAddr> = if listen.is_empty() {
        vec!["127.0.0.1:3480".parse().expect("valid")]
    } else {
        listen
    };
    match probe::echo::EchoPeer::start(&addrs) {
        Ok(e) => {
            for a in e.addrs() {
                println!("echo peer listening on {a} (udp)");
            }
            e.wait();
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("{}{err}", crate::cli::ERROR);
            ExitCode::FAILURE
        }
    }
}

/// `probe sfu`: see [`probe::sfu`].
fn sfu(a: &SfuArgs) -> ExitCode {
    if !(a.duration > 0.0 && a.duration <= 600.0) {
        return fail(a.json, "--duration must be between 0 and 600 seconds");
    }
    let o = probe::sfu::SfuLoadOptions {
        publishers: a.publishers,
        subscribers: a.subscribers,
        rate: a.rate,
        size: a.size,
        duration: Duration::from_secs_f64(a.duration),
        setup_timeout: Duration::from_secs(30),
        cores: a.cores,
        janus: a.janus.clone().map(|url| probe::sfu::JanusTarget {
            url,
            pid: a.janus_pid,
        }),
        bind: a.bind,
    };
    match probe::sfu::run(&o) {
        Ok(r) if a.json => {
            print_json(&r);
            ExitCode::SUCCESS
        }
        Ok(r) => {
            println!(
                "SFU ({}, {} peer connections): {} publisher(s) x {} other participant(s), {} \
                 frames/s of {} B each: forwarded {:.0} packets/s, loss {:.3}%, SFU CPU {:.2} us \
                 per forwarded packet (setup {:.1} s)",
                r.server,
                r.peer_connections,
                r.publishers,
                r.publishers + r.subscribers - 1,
                r.rate,
                r.size,
                r.forwarded_per_second,
                r.loss_percent,
                r.cpu_us_per_forwarded,
                r.setup_seconds
            );
            ExitCode::SUCCESS
        }
        Err(e) => fail(a.json, e),
    }
}

fn parse_cores(s: &str) -> Result<(usize, usize), String> {
    let (a, b) = s
        .split_once(',')
        .ok_or_else(|| format!("expected SFU,CLIENTS (two core numbers), got {s:?}"))?;
    let core = |x: &str| {
        x.trim()
            .parse::<usize>()
            .map_err(|_| format!("not a core number: {x:?}"))
    };
    Ok((core(a)?, core(b)?))
}
