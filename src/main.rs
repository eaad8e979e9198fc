//! The `natpass` binary: parse the command line, load and validate config, init tracing, run.

use anyhow::Context;
use clap::Parser;
use natpass::cli::{Cli, Command, json_str};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

fn init_tracing(filter: &str) {
    // stun-types logs malformed wire input at warn: keep attackers from writing our logs.
    let mut f = filter.to_owned();
    for quiet in ["stun_types", "turn_types", "stun_proto"] {
        if !f.contains(quiet) {
            f.push_str(&format!(",{quiet}=error"));
        }
    }
    let env = tracing_subscriber::EnvFilter::try_new(&f)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(env)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .init();
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
                natpass::config::ValidConfig::build(
                    f,
                    Default::default(),
                    &file.display().to_string(),
                )
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
        Command::Serve(args) => {
            let cfg = match args.to_config() {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("natpass: config error: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            init_tracing(&cfg.log);
            if cfg.generated_secret {
                tracing::warn!(
                    "no users and no auth-secrets configured: generated an in-memory TURN REST secret \
                     that only this process's credential endpoint uses. Set `auth-secrets` (or \
                     --auth-secret) for a permanent one"
                );
            }
            let server = natpass::net::start(&cfg).context("starting the server")?;
            let stopper = server.stopper();
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .thread_name("natpass-web")
                .enable_all()
                .build()?;
            rt.block_on(async {
                use tokio::signal::unix::{SignalKind, signal};
                let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
                let web = match &cfg.http {
                    Some(http) => {
                        let mut rx = stop_rx.clone();
                        let shutdown = async move {
                            let _ = rx.wait_for(|s| *s).await;
                        };
                        let (addr, task) = natpass::web::launch(http, &server, shutdown)
                            .await
                            .with_context(|| format!("starting HTTP on {}", http.addr))?;
                        let scheme = if http.tls == natpass::config::HttpTls::Off { "http" } else { "https" };
                        let host = if addr.ip().is_loopback() || addr.ip().is_unspecified() {
                            "localhost".to_owned()
                        } else {
                            addr.ip().to_string()
                        };
                        let url = format!("{scheme}://{host}:{}/", addr.port());
                        tracing::info!(%addr, "call demo: open {url} in two tabs or on two devices");
                        println!("natpass: call demo at {url}");
                        Some(task)
                    }
                    None => None,
                };
                let mut term = signal(SignalKind::terminate())?;
                let mut int = signal(SignalKind::interrupt())?;
                let mut hup = signal(SignalKind::hangup())?;
                loop {
                    tokio::select! {
                        _ = term.recv() => { tracing::info!("SIGTERM: shutting down"); break; }
                        _ = int.recv() => { tracing::info!("SIGINT: shutting down"); break; }
                        _ = hup.recv() => match server.reload_tls() {
                            Ok(()) if server.tls.is_some() => tracing::info!("SIGHUP: TLS certificate reloaded"),
                            Ok(()) => tracing::info!("SIGHUP: nothing to reload"),
                            Err(e) => tracing::error!(error = %e, "SIGHUP: TLS reload failed; the previous certificate keeps serving"),
                        },
                    }
                }
                let _ = stop_tx.send(true);
                if let Some(t) = web {
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), t).await;
                }
                anyhow::Ok(())
            })?;
            stopper.stop();
            server.join();
            Ok(ExitCode::SUCCESS)
        }
    }
}
