//! Peer address policy (docs/security.md, "Relaying to loopback, private, link-local or
//! cloud-metadata addresses"): ONE function canonicalises a peer address and then checks
//! the operator allow list, the default deny list and the operator deny list.
//!
//! Order of decisions in [`PeerPolicy::check_ip`]:
//! 1. canonicalise (IPv4-mapped, IPv4-compatible, NAT64 and 6to4 forms → embedded IPv4);
//! 2. operator deny ranges → deny;
//! 3. operator allow ranges → allow (an operator who opens a range means it);
//! 4. this server's own relay IPs, and its SFU's → [`IpVerdict::OwnRelay`] (traffic only to
//!    allocated relay ports and to the SFU's port: a relay-only browser reaches the SFU through
//!    natpass's own TURN, and nothing else of natpass);
//! 5. default deny list → deny; anything else → allow.
//!
//! The server's own listener transport addresses are denied per address (IP *and* port) by
//! [`PeerPolicy::is_listener`], whatever the allow ranges say.

use ipnet::{IpNet, Ipv4Net, Ipv6Net};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The default deny list of the threat model (docs/security.md), checked after canonicalisation.
pub const DEFAULT_DENY: &[&str] = &[
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "168.63.129.16/32",
    "::/128",
    "::1/128",
    "::ffff:0:0/96",
    "::/96",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "100::/64",
    "2001::/32",
    "2001:2::/48",
    "2001:10::/28",
    "2001:20::/28",
    "2001:db8::/32",
    "2002::/16",
    "3fff::/20",
    "5f00::/16",
    "fc00::/7",
    "fe80::/10",
    "fec0::/10",
    "ff00::/8",
];

pub use crate::proto::IpVerdict;

/// Canonical form of a peer IP: embedded IPv4 addresses are unwrapped so that
/// `::ffff:127.0.0.1`, `::127.0.0.1`, `64:ff9b::7f00:1` and `2002:7f00:1::` are all judged
/// as `127.0.0.1`.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
    }
}

fn embedded_v4(v6: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = v6.segments();
    let o = v6.octets();
    let tail = Ipv4Addr::new(o[12], o[13], o[14], o[15]);
    // IPv4-mapped ::ffff:a.b.c.d
    if s[0..5] == [0, 0, 0, 0, 0] && s[5] == 0xffff {
        return Some(tail);
    }
    // IPv4-compatible ::a.b.c.d (deprecated, but still routable by some stacks); `::` and `::1`
    // stay IPv6 so that they match their own deny entries.
    if s[0..6] == [0, 0, 0, 0, 0, 0] && (s[6] != 0 || s[7] > 1) {
        return Some(tail);
    }
    // NAT64 well-known prefix 64:ff9b::/96 and local-use 64:ff9b:1::/48 (RFC 6052 /96 layout
    // for the former; for the latter we treat the last 32 bits as the embedded address).
    if s[0] == 0x64 && s[1] == 0xff9b && (s[2..6] == [0, 0, 0, 0] || s[2] == 1) {
        return Some(tail);
    }
    // 6to4 2002:AABB:CCDD::/48
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    None
}

/// Parse a CIDR or a bare IP (as a /32 or /128).
pub fn parse_net(s: &str) -> Result<IpNet, String> {
    let s = s.trim();
    if let Ok(net) = s.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    match s.parse::<IpAddr>() {
        Ok(IpAddr::V4(v4)) => Ok(IpNet::V4(
            Ipv4Net::new(v4, 32).expect("32 is a valid prefix"),
        )),
        Ok(IpAddr::V6(v6)) => Ok(IpNet::V6(
            Ipv6Net::new(v6, 128).expect("128 is a valid prefix"),
        )),
        Err(_) => Err(format!(
            "`{s}` is not an IP range (expected e.g. 10.0.0.0/8 or ::1)"
        )),
    }
}

/// Peer address policy: immutable once built; shared by every shard.
#[derive(Debug, Clone)]
pub struct PeerPolicy {
    allow: Vec<IpNet>,
    deny: Vec<IpNet>,
    default_deny: Vec<IpNet>,
    own_relay_ips: Vec<IpAddr>,
    listeners: Vec<SocketAddr>,
    /// This server's SFU sockets (canonical IP): the one port of natpass's own that peers
    /// may be.
    sfu: Vec<SocketAddr>,
}

impl PeerPolicy {
    /// Build a policy. `own_relay_ips` are this server's relay IPs (bound and advertised);
    /// `listeners` its client-facing listener addresses (wildcards deny their port on every
    /// address that is local or would be denied by default).
    pub fn new(
        allow: Vec<IpNet>,
        deny: Vec<IpNet>,
        own_relay_ips: Vec<IpAddr>,
        listeners: Vec<SocketAddr>,
    ) -> Self {
        let default_deny = DEFAULT_DENY
            .iter()
            .map(|s| parse_net(s).expect("built-in deny list parses"))
            .collect();
        Self {
            allow,
            deny,
            default_deny,
            own_relay_ips: own_relay_ips.into_iter().map(canonical_ip).collect(),
            listeners,
            sfu: Vec::new(),
        }
    }

    /// The same policy, letting relays reach this server's SFU at `addrs` (exact IP and port;
    /// the SFU's IP is otherwise as closed as any address of ours).
    pub fn with_sfu(mut self, addrs: impl IntoIterator<Item = SocketAddr>) -> Self {
        self.sfu = addrs
            .into_iter()
            .map(|a| SocketAddr::new(canonical_ip(a.ip()), a.port()))
            .collect();
        self
    }

    /// True when `addr` is this server's SFU socket.
    pub fn is_sfu(&self, addr: SocketAddr) -> bool {
        let ip = canonical_ip(addr.ip());
        self.sfu
            .iter()
            .any(|s| s.ip() == ip && s.port() == addr.port())
    }

    /// The decision for a peer IP (CreatePermission, ChannelBind, Send).
    pub fn check_ip(&self, ip: IpAddr) -> IpVerdict {
        let ip = canonical_ip(ip);
        if self.deny.iter().any(|n| n.contains(&ip)) {
            return IpVerdict::Deny;
        }
        if self.allow.iter().any(|n| n.contains(&ip)) {
            return IpVerdict::Allow;
        }
        if self.own_relay_ips.contains(&ip) || self.sfu.iter().any(|s| s.ip() == ip) {
            return IpVerdict::OwnRelay;
        }
        if self.default_deny.iter().any(|n| n.contains(&ip)) {
            return IpVerdict::Deny;
        }
        IpVerdict::Allow
    }

    /// True when `addr` is (or, for wildcard listeners, may be) one of this server's own
    /// client-facing listeners: never a valid peer, whatever the allow ranges say.
    pub fn is_listener(&self, addr: SocketAddr) -> bool {
        let ip = canonical_ip(addr.ip());
        self.listeners.iter().any(|l| {
            if l.port() != addr.port() {
                return false;
            }
            let lip = canonical_ip(l.ip());
            if lip.is_unspecified() {
                // A wildcard listener answers on every local address: deny its port on any
                // address that is ours or that only an operator allow range opened.
                self.own_relay_ips.contains(&ip)
                    || ip.is_loopback()
                    || ip.is_unspecified()
                    || self.default_deny.iter().any(|n| n.contains(&ip))
            } else {
                lip == ip
            }
        })
    }

    /// This server's own relay IPs (canonical).
    pub fn own_relay_ips(&self) -> &[IpAddr] {
        &self.own_relay_ips
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn policy() -> PeerPolicy {
        PeerPolicy::new(
            vec![],
            vec![],
            vec!["127.0.0.2".parse().unwrap()],
            vec![
                "127.0.0.1:3478".parse().unwrap(),
                "0.0.0.0:8080".parse().unwrap(),
            ],
        )
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn default_policy_denies_loopback_private_metadata_in_every_form() {
        let p = policy();
        for s in [
            "127.0.0.1",
            "::ffff:127.0.0.1",
            "::127.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b:1::7f00:1",
            "2002:7f00:1::1",
            "169.254.169.254",
            "::ffff:169.254.169.254",
            "0.0.0.0",
            "::",
            "::1",
            "10.1.2.3",
            "192.168.1.1",
            "172.31.255.255",
            "100.64.0.1",
            "168.63.129.16",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "2001:db8::1",
            "224.0.0.1",
            "255.255.255.255",
        ] {
            assert_eq!(p.check_ip(ip(s)), IpVerdict::Deny, "{s}");
        }
    }

    #[test]
    fn public_addresses_are_allowed() {
        let p = policy();
        for s in [
            "8.8.8.8",
            "1.1.1.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "172.32.0.1",
        ] {
            assert_eq!(p.check_ip(ip(s)), IpVerdict::Allow, "{s}");
        }
    }

    #[test]
    fn the_sfu_port_is_the_one_own_address_a_peer_may_be() {
        let sfu: SocketAddr = "127.0.0.1:3479".parse().unwrap();
        let plain = || PeerPolicy::new(vec![], vec![], vec![], vec![]);
        let p = plain().with_sfu([sfu]);
        // Loopback is denied by default; the SFU's IP becomes "ours" (port-checked) …
        assert_eq!(
            plain().check_ip("127.0.0.1".parse().unwrap()),
            IpVerdict::Deny
        );
        assert_eq!(
            p.check_ip("127.0.0.1".parse().unwrap()),
            IpVerdict::OwnRelay
        );
        assert_eq!(
            p.check_ip("::ffff:127.0.0.1".parse().unwrap()),
            IpVerdict::OwnRelay
        );
        // … and only its exact port is the SFU, in every form of the address.
        assert!(p.is_sfu(sfu));
        assert!(p.is_sfu("[::ffff:127.0.0.1]:3479".parse().unwrap()));
        assert!(!p.is_sfu("127.0.0.1:3478".parse().unwrap()));
        assert!(!p.is_sfu("127.0.0.2:3479".parse().unwrap()));
        // Other loopback addresses stay denied.
        assert_eq!(p.check_ip("127.0.0.2".parse().unwrap()), IpVerdict::Deny);
        // An operator deny range still wins.
        let denied = PeerPolicy::new(
            vec![],
            vec![parse_net("127.0.0.0/8").unwrap()],
            vec![],
            vec![],
        )
        .with_sfu([sfu]);
        assert_eq!(
            denied.check_ip("127.0.0.1".parse().unwrap()),
            IpVerdict::Deny
        );
    }

    #[test]
    fn own_relay_ip_is_special_in_every_form() {
        let p = policy();
        assert_eq!(p.check_ip(ip("127.0.0.2")), IpVerdict::OwnRelay);
        assert_eq!(p.check_ip(ip("::ffff:127.0.0.2")), IpVerdict::OwnRelay);
    }

    #[test]
    fn allow_ranges_override_default_deny_but_not_operator_deny() {
        let p = PeerPolicy::new(
            vec![parse_net("127.0.0.0/8").unwrap()],
            vec![parse_net("127.0.0.9").unwrap()],
            vec![],
            vec!["127.0.0.1:3478".parse().unwrap()],
        );
        assert_eq!(p.check_ip(ip("127.0.0.1")), IpVerdict::Allow);
        assert_eq!(p.check_ip(ip("::ffff:127.0.0.5")), IpVerdict::Allow);
        assert_eq!(p.check_ip(ip("127.0.0.9")), IpVerdict::Deny);
        assert!(p.is_listener("127.0.0.1:3478".parse().unwrap()));
        assert!(p.is_listener("[::ffff:127.0.0.1]:3478".parse().unwrap()));
        assert!(!p.is_listener("127.0.0.1:3479".parse().unwrap()));
    }

    #[test]
    fn wildcard_listener_port_is_denied_on_local_addresses() {
        let p = policy();
        assert!(p.is_listener("127.0.0.5:8080".parse().unwrap()));
        assert!(p.is_listener("127.0.0.2:8080".parse().unwrap()));
        assert!(!p.is_listener("8.8.8.8:8080".parse().unwrap()));
    }

    #[test]
    fn parse_net_accepts_bare_ips_and_rejects_garbage() {
        assert_eq!(parse_net("10.1.2.3").unwrap().prefix_len(), 32);
        assert_eq!(parse_net("::1").unwrap().prefix_len(), 128);
        assert_eq!(parse_net("10.1.2.3/8").unwrap().to_string(), "10.0.0.0/8");
        assert!(parse_net("10.0.0.0/33").is_err());
        assert!(parse_net("nope").is_err());
    }

    proptest! {
        /// Every IPv4 address gets the same verdict in each of its IPv6 wrappings.
        #[test]
        fn canonical_forms_agree(a in any::<u32>()) {
            let p = policy();
            let v4 = Ipv4Addr::from(a);
            let verdict = p.check_ip(IpAddr::V4(v4));
            let o = v4.octets();
            let mapped = v4.to_ipv6_mapped();
            let nat64 = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, u16::from_be_bytes([o[0], o[1]]), u16::from_be_bytes([o[2], o[3]]));
            let sixto4 = Ipv6Addr::new(0x2002, u16::from_be_bytes([o[0], o[1]]), u16::from_be_bytes([o[2], o[3]]), 0, 0, 0, 0, 1);
            prop_assert_eq!(p.check_ip(IpAddr::V6(mapped)), verdict);
            prop_assert_eq!(p.check_ip(IpAddr::V6(nat64)), verdict);
            prop_assert_eq!(p.check_ip(IpAddr::V6(sixto4)), verdict);
        }

        /// Range boundaries: the first and last address of every default IPv4 deny range are
        /// denied, and the addresses just outside are judged by the other ranges only.
        #[test]
        fn deny_ranges_hold_at_their_boundaries(idx in 0usize..16) {
            let p = policy();
            let net = match parse_net(DEFAULT_DENY[idx]).unwrap() { IpNet::V4(n) => n, IpNet::V6(_) => unreachable!() };
            prop_assert_eq!(p.check_ip(IpAddr::V4(net.network())), IpVerdict::Deny);
            prop_assert_eq!(p.check_ip(IpAddr::V4(net.broadcast())), IpVerdict::Deny);
            let after = u32::from(net.broadcast()).checked_add(1).map(Ipv4Addr::from);
            if let Some(after) = after {
                let inside_other = p.default_deny.iter().any(|n| n.contains(&IpAddr::V4(after)));
                prop_assert_eq!(p.check_ip(IpAddr::V4(after)) == IpVerdict::Deny, inside_other);
            }
        }

        /// Never panics on any IPv6 input, and a denied canonical IPv4 stays denied wrapped.
        #[test]
        fn any_ipv6_is_judged(a in any::<u128>()) {
            let p = policy();
            let v6 = Ipv6Addr::from(a);
            let _ = p.check_ip(IpAddr::V6(v6));
            if let IpAddr::V4(v4) = canonical_ip(IpAddr::V6(v6)) {
                prop_assert_eq!(p.check_ip(IpAddr::V6(v6)), p.check_ip(IpAddr::V4(v4)));
            }
        }
    }
}
