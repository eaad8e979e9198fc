//! The `natpass` binary: parse the command line, load and validate config, init logging,
//! call [`natpass::lifecycle`].

use clap::Parser;
use natpass::CancellationToken;
use natpass::cli::{Cli, Command, ServeArgs, json_str};
use natpass::config::{Settings, ValidConfig};
use natpass::lifecycle::{Server, Signals, check_certificates};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

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
            let checked = ValidConfig::load(Some(&file), Settings::default())
                .map_err(|e| e.to_string())
                .and_then(|c| {
                    check_certificates(&c).map_err(|e| format!("{}: {e}", file.display()))
                });
            match checked {
                Ok(()) => {
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
            if let Some(w) = a.ttl_warning()? {
                eprintln!("natpass: {w}");
            }
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
        Command::Serve(args) => serve(&args),
    }
}

fn serve(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let cfg = match args.to_config() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("natpass: config error: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    let set_log = natpass::logging::init(&cfg.log, cfg.log_json);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("natpass-web")
        .enable_all()
        .build()?;
    rt.block_on(async {
        let signals = Signals::new()?;
        let server = Server::start(cfg, Some(set_log)).await?;
        if let Some(url) = server.http_url() {
            println!("natpass: call demo at {url}");
        }
        let shutdown = CancellationToken::new();
        tokio::spawn(signals.forward(shutdown.clone(), server.ops()));
        server.serve(shutdown).await;
        Ok(ExitCode::SUCCESS)
    })
}
