//! coturn's `turnserver` as a reference peer (Debian package `coturn`).

#![allow(unused_imports)]
use super::prelude::*;
use super::*;

/// Whether a program is on PATH; in CI a missing tool is a failure, elsewhere a skip.
pub fn have_tool(name: &str) -> bool {
    let found = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {name}"))
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        if std::env::var("CI").is_ok() {
            panic!("{name} is not installed (scripts/test.sh installs it)");
        }
        eprintln!("SKIP: {name} not installed");
    }
    found
}

/// A coturn `turnserver` started on loopback with its own config; killed when dropped.
pub struct Coturn {
    child: std::process::Child,
    pub port: u16,
    dir: std::path::PathBuf,
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port_pair() -> u16 {
    // A port P with P and P+1 free on 127.0.0.1 (UDP and TCP), for coturn's RFC 5780 alternate.
    for _ in 0..100 {
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let p = s.local_addr().unwrap().port();
        drop(s);
        if p < 60000
            && std::net::UdpSocket::bind(("127.0.0.1", p + 1)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", p + 1)).is_ok()
        {
            return p;
        }
    }
    panic!("no free port pair");
}

/// Start coturn (None when it is not installed outside CI). `extra` lines go into its config.
pub fn coturn(extra: &[&str]) -> Option<Coturn> {
    if !have_tool("turnserver") {
        return None;
    }
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("natpass-coturn-{}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port = free_port_pair();
    let relay_base = 41000 + (port % 200) * 100;
    let mut conf = format!(
        "listening-ip=127.0.0.1\nlistening-ip=127.0.0.2\nlistening-port={port}\nrelay-ip=127.0.0.1\n\
         min-port={relay_base}\nmax-port={}\nrealm=natpass\nno-tls\nno-dtls\nfingerprint\n\
         no-software-attribute\nallow-loopback-peers\nno-cli\nuserdb={}/turndb\n\
         log-file=stdout\npidfile={}/pid\n",
        relay_base + 99,
        dir.display(),
        dir.display()
    );
    if !extra.iter().any(|l| l.starts_with("use-auth-secret")) {
        conf.push_str("lt-cred-mech\nuser=alice:secret\n");
    }
    for l in extra {
        conf.push_str(l);
        conf.push('\n');
    }
    let path = dir.join("turnserver.conf");
    std::fs::write(&path, conf).unwrap();
    let child = std::process::Command::new("turnserver")
        .arg("-c")
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("turnserver starts");
    let c = Coturn { child, port, dir };
    // Ready when it answers a Binding.
    let probe = UdpClient::new(format!("127.0.0.1:{port}").parse().unwrap());
    for _ in 0..50 {
        probe.send(&request(stun_types::message::BINDING, |_, _| {}));
        if probe.recv_timeout(Duration::from_millis(100)).is_some() {
            return Some(c);
        }
    }
    panic!("coturn did not come up on port {port}");
}

/// turnutils_uclient's summary: (sent, received, lost, its whole output). Lost is u64::MAX
/// when the summary is missing (it failed before the end).
pub fn uclient_summary(out: &std::process::Output) -> (u64, u64, u64, String) {
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let num_after = |key: &str| -> Option<u64> {
        let i = text.rfind(key)? + key.len();
        text[i..]
            .trim_start()
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse()
            .ok()
    };
    (
        num_after("tot_send_msgs=").unwrap_or(0),
        num_after("tot_recv_msgs=").unwrap_or(0),
        num_after("Total lost packets").unwrap_or(u64::MAX),
        text,
    )
}
