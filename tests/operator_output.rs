//! What `natpass serve` tells the operator and what its HTTP listener tells clients: the URL
//! people should open and the self-signed certificate's fingerprint (the same certificate
//! across restarts), `Retry-After` on 429, and `/metrics` only on a loopback HTTP listener.

use std::io::{BufRead, Read, Write};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

struct Serve {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Serve {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_natpass"))
            .arg("serve")
            .args(["--listen", "127.0.0.1:0", "--user", "a:b", "--log", "warn"])
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in std::io::BufReader::new(out).lines().map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// The first stdout line containing `needle` (within 10 s).
    fn line(&self, needle: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.contains(needle) => return l,
                Ok(_) => {}
                Err(_) => panic!("no line with `{needle}` within 10 s"),
            }
        }
    }

    /// The port of the printed call demo URL.
    fn port(&self) -> u16 {
        let l = self.line("call demo at");
        l.trim_end_matches('/')
            .rsplit(':')
            .next()
            .unwrap()
            .parse()
            .unwrap()
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while self.child.try_wait().ok().flatten().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = self.child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.wait();
    }
}

fn get(addr: std::net::SocketAddr, path: &str) -> String {
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn temp_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("natpass-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn self_signed_https_prints_the_public_url_and_a_fingerprint_kept_across_restarts() {
    let dir = temp_dir("state");
    let state = dir.to_str().unwrap();
    let args = [
        "--http",
        "127.0.0.1:0",
        "--http-self-signed",
        "--public-host",
        "turn.example.test",
        "--state-dir",
        state,
    ];
    let first = Serve::start(&args);
    let url = first.line("call demo at");
    assert!(url.contains("https://turn.example.test:"), "{url}");
    let fp = first.line("fingerprint");
    let fp = fp.rsplit(' ').next().unwrap().to_owned();
    assert_eq!(fp.len(), 32 * 3 - 1, "SHA-256 as AB:CD:…: {fp}");
    let kept = std::fs::read_to_string(dir.join("http-self-signed-cert.pem")).unwrap();
    assert_eq!(natpass::web::pem_fingerprint(&kept).unwrap(), fp);
    drop(first);
    let second = Serve::start(&args);
    let again = second.line("fingerprint");
    assert!(
        again.ends_with(&fp),
        "a new certificate after a restart: {again} vs {fp}"
    );
    drop(second);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn too_many_requests_say_when_to_retry() {
    let s = Serve::start(&["--http", "127.0.0.1:0"]);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], s.port()));
    let mut refused = None;
    for _ in 0..40 {
        let r = get(addr, "/api/ice-servers");
        if r.starts_with("HTTP/1.1 429") {
            refused = Some(r);
            break;
        }
    }
    let r = refused.expect("the credential endpoint refuses a burst of 40");
    assert!(
        r.to_ascii_lowercase().contains("\r\nretry-after: 1\r\n"),
        "{r}"
    );
}

#[test]
fn metrics_are_served_on_a_loopback_http_listener_only() {
    let s = Serve::start(&["--http", "127.0.0.1:0"]);
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], s.port()));
    assert!(get(addr, "/metrics").starts_with("HTTP/1.1 200"));
    drop(s);
    // Any address of this machine that is not loopback (skipped where there is none).
    let Ok(ip) = natpass::probe::local_ip_towards("192.0.2.1:9".parse().unwrap()) else {
        return;
    };
    if ip.is_loopback() {
        return;
    }
    let http = format!("{ip}:0");
    let s = Serve::start(&["--http", &http]);
    let addr = std::net::SocketAddr::new(ip, s.port());
    let m = get(addr, "/metrics");
    assert!(m.starts_with("HTTP/1.1 404"), "{m}");
    assert!(get(addr, "/healthz").starts_with("HTTP/1.1 200"));
}

#[test]
fn a_port_in_use_is_named_once_and_natpass_exits() {
    // Another program's UDP socket on the port natpass is told to use.
    let holder = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = holder.local_addr().unwrap().port();
    let out = Command::new(env!("CARGO_BIN_EXE_natpass"))
        .arg("serve")
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .args(["--user", "a:b", "--log", "warn"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    let what = format!("UDP port {port} on 127.0.0.1 is already in use");
    assert_eq!(err.matches(&what).count(), 1, "named exactly once: {err}");
    assert!(
        err.contains("natpass: error: starting the server: "),
        "{err}"
    );
}

/// The URL a phone should open is the public HTTPS one, else the LAN one; its QR code decodes
/// (with rqrr, a decoder nobody here wrote) to exactly that URL.
#[test]
fn the_phone_url_and_its_qr_code() {
    let urls = vec![
        ("this machine", "https://localhost:8443/".to_owned()),
        ("LAN", "https://192.168.1.20:8443/".to_owned()),
        ("public", "https://turn.example.org/".to_owned()),
    ];
    assert_eq!(
        natpass::cli::phone_url(&urls),
        Some(("public", "https://turn.example.org/"))
    );
    assert_eq!(
        natpass::cli::phone_url(&urls[..2]),
        Some(("LAN", "https://192.168.1.20:8443/"))
    );
    let plain = vec![
        ("this machine", "http://localhost:8080/".to_owned()),
        ("LAN", "http://192.168.1.20:8080/".to_owned()),
    ];
    assert_eq!(
        natpass::cli::phone_url(&plain),
        None,
        "a camera needs HTTPS"
    );

    let url = "https://turn.example.org/";
    let code = natpass::cli::qr(url).unwrap();
    let w = code.width();
    let colors = code.to_colors();
    // Pixels: 4 per module, 4 modules of quiet zone.
    let (scale, quiet) = (4usize, 4usize);
    let side = (w + 2 * quiet) * scale;
    let mut img = rqrr::PreparedImage::prepare_from_greyscale(side, side, |x, y| {
        let (mx, my) = (x / scale, y / scale);
        if mx < quiet || my < quiet || mx >= w + quiet || my >= w + quiet {
            return 255;
        }
        match colors[(my - quiet) * w + (mx - quiet)] {
            qrcode::Color::Dark => 0,
            qrcode::Color::Light => 255,
        }
    });
    let grids = img.detect_grids();
    assert_eq!(grids.len(), 1);
    let (_, content) = grids[0].decode().unwrap();
    assert_eq!(content, url);
    let text = natpass::cli::qr_text(url).unwrap();
    assert!(text.lines().count() > w / 2, "two modules per line: {text}");
}

/// `natpass serve` prints where to open the call and, on a terminal (`script` gives it one),
/// the QR code of the URL for a phone; without a terminal, the URLs only.
#[test]
fn serve_prints_the_urls_and_a_qr_code_on_a_terminal() {
    let bin = env!("CARGO_BIN_EXE_natpass");
    let dir = std::env::temp_dir().join(format!("natpass-qr-{}", std::process::id()));
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let cmd = format!(
        "timeout 4 {bin} serve --listen 127.0.0.1:0 --http 127.0.0.1:{port} --http-self-signed \
         --state-dir {} --public-host turn.example.org --sfu false --log error",
        dir.display()
    );
    let tty = std::process::Command::new("script")
        .args(["-qc", &cmd, "/dev/null"])
        .output()
        .expect("script (util-linux) runs");
    let out = String::from_utf8_lossy(&tty.stdout);
    assert!(
        out.contains(&format!("this machine  https://localhost:{port}/")),
        "{out}"
    );
    assert!(
        out.contains(&format!("public        https://turn.example.org:{port}/")),
        "{out}"
    );
    assert!(
        out.contains("scan to open the public URL") && out.contains('▀'),
        "{out}"
    );
    let piped = std::process::Command::new("sh")
        .args(["-c", &cmd])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&piped.stdout);
    assert!(out.contains("https://turn.example.org"), "{out}");
    assert!(
        !out.contains("scan to open"),
        "no QR code without a terminal: {out}"
    );
    let _ = std::fs::remove_dir_all(dir);
}
