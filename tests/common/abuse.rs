//! The frame of abuse tests: a control allocation that must keep relaying throughout, and
//! resource baselines that must be back at the end.

#![allow(unused_imports)]
use super::prelude::*;
use super::*;

/// The frame of an abuse test: a running server, a control allocation that must keep relaying
/// throughout, and resource baselines that must be back at the end.
pub struct Abuse {
    pub server: natpass::net::ServerHandle,
    control: UdpClient,
    control_peer: std::net::UdpSocket,
    fds: usize,
    rss: u64,
}

impl Abuse {
    pub fn new(o: natpass::config::Overrides) -> Self {
        Self::with(o, |_| {})
    }

    pub fn with(
        o: natpass::config::Overrides,
        tweak: impl FnOnce(&mut natpass::config::ValidConfig),
    ) -> Self {
        let server = start_server_with(o, tweak);
        let control = UdpClient::new(server.udp_addrs[0]);
        let (nonce, _) = control.allocate("bob", "bobsecret");
        // The control peer lives on 127.0.0.3 (tests with a strict policy allow just that).
        let control_peer = std::net::UdpSocket::bind("127.0.0.3:0").unwrap();
        control_peer
            .set_read_timeout(Some(Duration::from_secs(2)))
            .unwrap();
        let pa = control_peer.local_addr().unwrap().to_string();
        assert_eq!(
            error_code(&control.ask(&channel_bind("bob", "bobsecret", &nonce, 0x4000, &pa))),
            None
        );
        let a = Self {
            server,
            control,
            control_peer,
            fds: 0,
            rss: 0,
        };
        a.check_control();
        Self {
            fds: fd_count(),
            rss: rss_kib(),
            ..a
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.server.udp_addrs[0]
    }

    /// The control allocation still relays.
    pub fn check_control(&self) {
        self.control.send(&channel_data(0x4000, b"control"));
        let mut b = [0u8; 32];
        let (n, _) = self
            .control_peer
            .recv_from(&mut b)
            .expect("control allocation still relays");
        assert_eq!(&b[..n], b"control");
    }

    /// Control relays, the server's relay sockets and connections are back to the baseline,
    /// the process's file descriptors too (give or take the test's own few client sockets),
    /// and memory did not run away.
    pub fn finish(self, max_rss_growth_kib: u64) {
        self.check_control();
        let c = self.server.control();
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while (c.shared.ports.in_use() > 1 || c.limits.open() > 0 || fd_count() > self.fds + 8)
            && std::time::Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(50));
        }
        assert_eq!(
            c.shared.ports.in_use(),
            1,
            "only the control allocation's relay port"
        );
        assert_eq!(c.shared.quotas.total(), 1, "only the control allocation");
        assert_eq!(c.limits.open(), 0, "no TCP/TLS connection left");
        assert!(
            fd_count() <= self.fds + 8,
            "file descriptors back to baseline: {} vs {}",
            fd_count(),
            self.fds
        );
        let grown = rss_kib().saturating_sub(self.rss);
        assert!(grown <= max_rss_growth_kib, "memory grew by {grown} KiB");
        eprintln!(
            "abuse: control relayed throughout; fds {} (baseline {}); RSS +{} KiB",
            fd_count(),
            self.fds,
            grown
        );
    }
}
