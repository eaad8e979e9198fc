//! The `natpass` binary: parse the command line, load and validate config, init tracing, run.

use anyhow::Context;
use clap::Parser;
use natpass::cli::{Cli, Command, ServeArgs, json_str};
use natpass::config::ValidConfig;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, reload};

/// A log filter with caps on other crates, whatever the operator asks for: stun-types logs
/// malformed wire input at warn (attackers must not write our logs), and the HTTP/WebSocket
/// stack logs whole messages and headers at trace (SDP with `a=ice-pwd`, bearer tokens).
fn filter_for(filter: &str) -> Result<EnvFilter, String> {
    let mut f = filter.to_owned();
    for (quiet, level) in [
        ("stun_types", "error"),
        ("turn_types", "error"),
        ("stun_proto", "error"),
        ("tungstenite", "info"),
        ("tokio_tungstenite", "info"),
        ("hyper", "info"),
        ("hyper_util", "info"),
        ("h2", "info"),
        ("rustls", "info"),
    ] {
        if !f.contains(quiet) {
            f.push_str(&format!(",{quiet}={level}"));
        }
    }
    EnvFilter::try_new(&f).map_err(|e| format!("`{filter}`: {e}"))
}

type LogHandle = reload::Handle<EnvFilter, tracing_subscriber::Registry>;

fn init_tracing(filter: &str, json: bool) -> LogHandle {
    let env = filter_for(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    let (layer, handle) = reload::Layer::new(env);
    use std::io::IsTerminal;
    // journald and log shippers get no ANSI colours.
    let ansi = std::io::stderr().is_terminal() && std::env::var_os("JOURNAL_STREAM").is_none();
    let registry = tracing_subscriber::registry().with(layer);
    if json {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .json()
                    .with_writer(std::io::stderr),
            )
            .init();
    } else {
        registry
            .with(
                tracing_subscriber::fmt::layer()
                    .with_ansi(ansi)
                    .with_writer(std::io::stderr),
            )
            .init();
    }
    handle
}

/// systemd readiness protocol (sd_notify) without a library: one datagram to NOTIFY_SOCKET.
fn sd_notify(state: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let Ok(sock) = std::os::unix::net::UnixDatagram::unbound() else {
        return;
    };
    let p = path.to_string_lossy();
    let res = if let Some(name) = p.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes())
            .and_then(|a| sock.send_to_addr(state.as_bytes(), &a))
    } else {
        sock.send_to(state.as_bytes(), &*p)
    };
    if let Err(e) = res {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("natpass: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::CheckConfig { file } => {
            let res = natpass::config::load_file(&file).and_then(|f| {
                ValidConfig::build(f, Default::default(), &file.display().to_string())
            });
            match res {
                Ok(_) => {
                    println!("{}: ok", file.display());
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    eprintln!("{e}");
                    Ok(ExitCode::FAILURE)
                }
            }
        }
        Command::Probe(p) => Ok(natpass::cli::probe::run(p)),
        Command::Peer(a) => Ok(natpass::cli::probe::peer(a)),
        Command::Credential(a) => {
            let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
            let (u, p) = natpass::auth::mint_rest(&a.secret, &a.user, a.ttl, now);
            if a.json {
                let urls: Vec<String> = a.uri.iter().map(|u| json_str(u)).collect();
                println!(
                    "{{\"urls\":[{}],\"username\":{},\"credential\":{}}}",
                    urls.join(","),
                    json_str(&u),
                    json_str(&p)
                );
            } else {
                println!("username: {u}\npassword: {p}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Serve(args) => serve(*args),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<ExitCode> {
    let cfg = match args.to_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("natpass: config error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    natpass::metrics::mark_start();
    let log = init_tracing(&cfg.log, cfg.log_json);
    if cfg.generated_secret {
        tracing::warn!(
            "no auth-secrets configured: generated an in-memory TURN REST secret that only this \
             process's credential endpoint uses. Set `auth-secrets` (or --auth-secret) for a \
             permanent one"
        );
    }
    let server = natpass::net::start(&cfg).context("starting the server")?;
    let control = server.control();
    let stopper = server.stopper();
    let current = Arc::new(Mutex::new(cfg.clone()));

    // Reload: re-read the config file with the same command-line overrides; apply atomically
    // or keep the running config.
    let reload_fn: natpass::web::admin::ReloadFn = {
        let control = control.clone();
        let current = current.clone();
        let log = log.clone();
        let args = Arc::new(args);
        Arc::new(move || {
            let new = args.to_config().map_err(|e| e.to_string())?;
            let mut cur = current.lock().unwrap_or_else(|e| e.into_inner());
            let mut notes = control.apply(&cur, &new)?;
            if new.log != cur.log {
                match filter_for(&new.log) {
                    Ok(f) => {
                        let _ = log.reload(f);
                    }
                    Err(e) => notes.push(format!("log filter not changed: {e}")),
                }
            }
            *cur = new;
            Ok(notes)
        })
    };
    let set_log: natpass::web::admin::LogFn = {
        let log = log.clone();
        Arc::new(move |f: &str| {
            let filter = filter_for(f)?;
            log.reload(filter).map_err(|e| e.to_string())
        })
    };

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("natpass-web")
        .enable_all()
        .build()?;
    let code = rt.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let shutdown = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let ttl = cfg.http.as_ref().map_or(600, |h| h.credential_ttl);
        let ops = natpass::web::admin::OpsState {
            control: control.clone(),
            hub: None,
            token: cfg.admin.as_ref().map(|(_, t)| t.clone()),
            reload: Some(reload_fn.clone()),
            set_log: Some(set_log),
            ttl,
        };
        let mut tasks = Vec::new();
        let mut hub = None;
        if let Some(http) = &cfg.http {
            let l = natpass::web::launch_with(http, &server, Some(ops.clone()), shutdown(stop_rx.clone()))
                .await
                .with_context(|| format!("starting HTTP on {}", http.addr))?;
            let scheme = if http.tls == natpass::config::HttpTls::Off { "http" } else { "https" };
            let host = if l.addr.ip().is_loopback() || l.addr.ip().is_unspecified() {
                "localhost".to_owned()
            } else {
                l.addr.ip().to_string()
            };
            let url = format!("{scheme}://{host}:{}/", l.addr.port());
            tracing::info!(addr = %l.addr, "call demo: open {url} in two tabs or on two devices");
            println!("natpass: call demo at {url}");
            hub = Some(l.hub.clone());
            tasks.push(l.task);
        }
        let ops = natpass::web::admin::OpsState { hub, ..ops };
        if let Some(addr) = cfg.metrics {
            let l = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("metrics listener {addr}"))?;
            tracing::info!(addr = %l.local_addr()?, "metrics at /metrics, health at /healthz and /readyz");
            let router = natpass::web::admin::ops_router(Arc::new(ops.clone()));
            tasks.push(tokio::spawn(natpass::web::admin::serve_router(l, router, shutdown(stop_rx.clone()))));
        }
        if let Some((addr, _)) = &cfg.admin {
            let l = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("admin listener {addr}"))?;
            tracing::info!(addr = %l.local_addr()?, "admin API listening (bearer token required)");
            let st = Arc::new(ops.clone());
            let router = natpass::web::admin::admin_router(st.clone()).merge(natpass::web::admin::ops_router(st));
            tasks.push(tokio::spawn(natpass::web::admin::serve_router(l, router, shutdown(stop_rx.clone()))));
        }
        sd_notify("READY=1");
        let mut term = signal(SignalKind::terminate())?;
        let mut int = signal(SignalKind::interrupt())?;
        let mut hup = signal(SignalKind::hangup())?;
        loop {
            tokio::select! {
                _ = term.recv() => { tracing::info!("SIGTERM: draining"); break; }
                _ = int.recv() => { tracing::info!("SIGINT: draining"); break; }
                _ = hup.recv() => {
                    let f = reload_fn.clone();
                    match tokio::task::spawn_blocking(move || f()).await {
                        Ok(Ok(notes)) => {
                            tracing::info!("SIGHUP: configuration reloaded");
                            for n in notes {
                                tracing::warn!("reload: {n}");
                            }
                        }
                        Ok(Err(e)) => tracing::error!(error = %e, "SIGHUP: the new configuration is invalid; the running one stays"),
                        Err(_) => {}
                    }
                }
            }
        }
        // Drain: refuse new allocations, let existing ones relay until they end or the drain
        // period is over; a second signal exits at once.
        sd_notify("STOPPING=1");
        control.set_draining(true);
        let drain = Duration::from_secs(cfg.drain_seconds);
        let start = Instant::now();
        let mut exit_now = false;
        while start.elapsed() < drain && control.live_allocations() > 0 {
            tokio::select! {
                _ = term.recv() => { exit_now = true; break; }
                _ = int.recv() => { exit_now = true; break; }
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        if exit_now {
            tracing::warn!("second signal: exiting now");
        } else {
            tracing::info!(left = control.live_allocations(), "drain over; stopping");
        }
        let _ = stop_tx.send(true);
        for t in tasks {
            let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
        }
        anyhow::Ok(ExitCode::SUCCESS)
    })?;
    stopper.stop();
    server.join();
    Ok(code)
}
