//! The `natpass` binary: parse the command line, load and validate config, init logging,
//! call [`natpass::lifecycle`].

use clap::Parser;
use natpass::CancellationToken;
use natpass::cli::{Cli, Command, ERROR, ServeArgs, WARNING, json_str};
use natpass::config::{HttpTls, Settings, ValidConfig};
use natpass::lifecycle::{Server, Signals};
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("{ERROR}{}", chain(&e));
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes, each cause once: messages that already quote their cause (our
/// `thiserror` types do, so a bare `{}` says everything) do not repeat it.
fn chain(e: &anyhow::Error) -> String {
    let mut out = e.to_string();
    for cause in e.chain().skip(1) {
        let c = cause.to_string();
        if !out.contains(&c) {
            out.push_str(": ");
            out.push_str(&c);
        }
    }
    out
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::CheckConfig { file } => {
            // Every error at once: the file's, then its certificate files' (when it is valid).
            let errors = match ValidConfig::load(Some(&file), Settings::default()) {
                Ok(c) => certificate_errors(&c, &file),
                Err(e) => each_error(e),
            };
            if errors.is_empty() {
                println!("{}: ok", file.display());
                Ok(ExitCode::SUCCESS)
            } else {
                for e in errors {
                    eprintln!("{ERROR}{e}");
                }
                Ok(ExitCode::FAILURE)
            }
        }
        Command::Probe(p) => Ok(natpass::cli::probe::run(p)),
        Command::Peer(a) => Ok(natpass::cli::probe::peer(a)),
        Command::Credential(a) => {
            if let Some(w) = a.ttl_warning()? {
                eprintln!("{WARNING}{w}");
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
        Command::Doctor(a) => Ok(doctor(&a)),
    }
}

/// `natpass doctor`: findings, one per line (or JSON); exit 1 when one is an error.
fn doctor(a: &natpass::cli::DoctorArgs) -> ExitCode {
    use natpass::doctor::{Finding, Level};
    let findings: Vec<Finding> = match a.serve.to_config() {
        Err(e) => each_error(e)
            .into_iter()
            .map(|e| Finding {
                level: Level::Error,
                check: "config",
                message: e,
                fix: "correct the key named (natpass check-config FILE lists every error)".into(),
            })
            .collect(),
        Ok(cfg) => {
            let stun = match a.stun_server.as_str() {
                "none" => None,
                s => natpass::probe::parse_server(s).ok().map(|spec| spec.addr),
            };
            let mut f = natpass::doctor::check(
                &cfg,
                &natpass::doctor::Options {
                    stun,
                    dns: !a.no_dns,
                },
            );
            if stun.is_none() && a.stun_server != "none" {
                f.push(Finding {
                    level: Level::Warn,
                    check: "public-address",
                    message: format!("cannot resolve the STUN server {}", a.stun_server),
                    fix: "check DNS, or pass --stun-server HOST:PORT".into(),
                });
            }
            f
        }
    };
    if a.json {
        match serde_json::to_string_pretty(&serde_json::json!({
            "ok": !natpass::doctor::failed(&findings),
            "findings": findings,
        })) {
            Ok(s) => println!("{s}"),
            Err(e) => eprintln!("{ERROR}{e}"),
        }
    } else {
        for f in &findings {
            let tag = match f.level {
                Level::Ok => "ok   ",
                Level::Warn => "warn ",
                Level::Error => "ERROR",
            };
            println!("{tag} {:<14} {}", f.check, f.message);
            if f.level != Level::Ok && !f.fix.is_empty() {
                println!("      {:<14} fix: {}", "", f.fix);
            }
        }
    }
    if natpass::doctor::failed(&findings) {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}

/// One line (or block, for a TOML syntax error) per error.
fn each_error(e: natpass::config::ConfigError) -> Vec<String> {
    match e {
        natpass::config::ConfigError::Several(all) => all.iter().map(|e| e.to_string()).collect(),
        e => vec![e.to_string()],
    }
}

/// The certificate and key files `serve` would fail to load, each named by its key and line.
fn certificate_errors(c: &ValidConfig, file: &std::path::Path) -> Vec<String> {
    let http = match c.http.as_ref().map(|h| &h.tls) {
        Some(HttpTls::Files(cert, key)) => Some((cert.clone(), key.clone())),
        _ => None,
    };
    let mut out = Vec::new();
    for (keys, pair) in [
        (("tls-cert", "tls-key"), c.tls_files.clone()),
        (("http-tls-cert", "http-tls-key"), http),
    ] {
        let Some((cert, key)) = pair else { continue };
        if let Err(e) = natpass::tls::load(&cert, &key) {
            let k = match e {
                natpass::tls::TlsError::Key { .. } => keys.1,
                _ => keys.0,
            };
            let line = natpass::config::line_in_file(file, k)
                .map(|l| format!("line {l}: "))
                .unwrap_or_default();
            out.push(format!("{}: {line}key `{k}`: {e}", file.display()));
        }
    }
    out
}

/// The URLs to open the call at and, on a terminal, a QR code of the one a phone should open
/// (the public HTTPS one, else the LAN one): no tunnel needed for a phone on the same network.
fn print_urls(urls: &[(&'static str, String)]) {
    use std::io::IsTerminal;
    if urls.len() < 2 {
        return;
    }
    for (what, url) in urls {
        println!("natpass:   {what:<13} {url}");
    }
    let Some((what, url)) = natpass::cli::phone_url(urls) else {
        if urls.iter().any(|(w, _)| *w == "LAN") {
            println!(
                "natpass:   phones need HTTPS for the camera: add --http-self-signed (or --domain)"
            );
        }
        return;
    };
    if !std::io::stdout().is_terminal() {
        return;
    }
    match natpass::cli::qr_text(url) {
        Ok(art) => println!("natpass: scan to open the {what} URL on a phone:\n{art}"),
        Err(e) => eprintln!("{WARNING}no QR code for {url}: {e}"),
    }
}

fn serve(args: &ServeArgs) -> anyhow::Result<ExitCode> {
    let cfg = match args.to_config() {
        Ok(c) => c,
        Err(e) => {
            for e in each_error(e) {
                eprintln!("{ERROR}{e}");
            }
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
        print_urls(&server.http_urls());
        if let Some(fp) = server.http_fingerprint() {
            println!("natpass: its self-signed certificate's SHA-256 fingerprint is {fp}");
        }
        let shutdown = CancellationToken::new();
        tokio::spawn(signals.forward(shutdown.clone(), server.ops()));
        server.serve(shutdown).await;
        Ok(ExitCode::SUCCESS)
    })
}
