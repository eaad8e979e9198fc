//! The XDP fast path for TURN channels (issue 17; `xdp-interface`, `--xdp IFACE`).
//!
//! An eBPF program (bpf/relay.bpf.c, built from source by build.rs with clang) attached at
//! XDP on the interfaces clients and peers arrive on forwards the ChannelData of established
//! channels both ways without waking natpass: client → peer (header stripped, addresses and
//! ports rewritten, checksums updated) and peer → client (header added). Everything else
//! passes to the kernel's stack and natpass's sockets as before.
//!
//! The core decides which routes may be forwarded ([`Offload`]: UDP clients, IPv4, peers the
//! policy allows, until the earlier of the channel's and the permission's end); the shards
//! apply its decisions here, under one lock (map updates are rare: a ChannelBind, a
//! CreatePermission, an expiry). Each entry carries its deadline in CLOCK_MONOTONIC
//! nanoseconds — the clock of the program's `bpf_ktime_get_ns` and of Rust's `Instant` — so
//! forwarding stops when the userspace path would, even before the shard removes the entry.
//!
//! The program also counts the payload bytes of each route it carries (in the route's map
//! value, kept across refreshes); the shards add those to the allocations' counts: read live for the admin API's list, handed
//! back to the core when a route is removed.
//!
//! When the program cannot be loaded or attached (natpass built without clang, no
//! privileges, an old kernel, an interface that does not exist) natpass says why and relays
//! in userspace.

use crate::proto::{Offload, Transport};
use aya::Ebpf;
use aya::maps::{DevMapHash, HashMap, MapData, PerCpuArray};
use aya::programs::{Xdp, XdpMode};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Mutex;
use std::time::Instant;

/// The program, or an empty object when build.rs could not build it.
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/relay.bpf.o"));

/// Why the fast path is off.
#[derive(Debug, thiserror::Error)]
pub enum XdpError {
    /// build.rs had no clang (or it failed).
    #[error("natpass was built without its XDP program ({0})")]
    NotBuilt(&'static str),
    /// The kernel refused the program or its maps.
    #[error("the kernel refused the XDP program: {0}")]
    Load(String),
    /// An interface could not take the program.
    #[error("cannot attach XDP to {iface}: {why}")]
    Attach {
        /// The interface.
        iface: String,
        /// The cause.
        why: String,
    },
}

/// The program's counters (bpf/relay.bpf.c `enum stat`), summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct XdpCounters {
    /// ChannelData forwarded to peers.
    pub to_peer_packets: u64,
    /// Payload bytes forwarded to peers.
    pub to_peer_bytes: u64,
    /// Datagrams forwarded to clients as ChannelData.
    pub to_client_packets: u64,
    /// Payload bytes forwarded to clients.
    pub to_client_bytes: u64,
    /// Passed to userspace: the route's deadline had passed.
    pub passed_expired: u64,
    /// Passed to userspace: the other side's next hop was not learned yet.
    pub passed_no_next_hop: u64,
    /// Passed to userspace: ChannelData whose length field disagrees with the datagram.
    pub passed_malformed: u64,
    /// Passed to userspace: too big for the next hop's MTU with the header added.
    pub passed_too_big: u64,
}

impl XdpCounters {
    /// (label, value) of the forwarded packets by direction.
    pub fn packets(&self) -> [(&'static str, u64); 2] {
        [
            ("to_peer", self.to_peer_packets),
            ("to_client", self.to_client_packets),
        ]
    }

    /// (label, value) of the forwarded payload bytes by direction.
    pub fn bytes(&self) -> [(&'static str, u64); 2] {
        [
            ("to_peer", self.to_peer_bytes),
            ("to_client", self.to_client_bytes),
        ]
    }

    /// (reason, value) of the packets a matching route passed to userspace.
    pub fn passed(&self) -> [(&'static str, u64); 4] {
        [
            ("expired", self.passed_expired),
            ("no_next_hop", self.passed_no_next_hop),
            ("malformed", self.passed_malformed),
            ("too_big", self.passed_too_big),
        ]
    }
}

/// `struct chan_key`: client IP, listener IP (0: wildcard), client port, listener port,
/// channel, padding.
type ChanKey = [u8; 16];
/// `struct chan_val`: relay IP, peer IP, relay port, peer port, padding, deadline, payload
/// bytes relayed.
type ChanVal = [u8; 32];
/// `struct peer_key`: relay IP, peer IP, relay port, peer port.
type PeerKey = [u8; 12];
/// `struct peer_val`: listener IP (0: learned from the client's first ChannelData), client
/// IP, listener port, client port, channel, padding, deadline, payload bytes relayed.
type PeerVal = [u8; 32];

struct Maps {
    /// Holds the program and its links: dropping it detaches every interface.
    _ebpf: Ebpf,
    chan: HashMap<MapData, ChanKey, ChanVal>,
    peer: HashMap<MapData, PeerKey, PeerVal>,
    stats: PerCpuArray<MapData, u64>,
    /// A full map was reported once (routes past it stay on the userspace path).
    warned_full: bool,
}

/// The attached program and its maps, shared by the shards.
pub struct FastPath {
    maps: Mutex<Maps>,
    /// Routes removed so far (their counts handed back to the core): a reader of live routes'
    /// counts on another thread checks it to see whether its snapshot went stale meanwhile.
    removed: std::sync::atomic::AtomicU64,
    /// Each interface and the mode it runs in ("native" or "generic").
    pub attached: Vec<(String, &'static str)>,
}

impl std::fmt::Debug for FastPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastPath")
            .field("attached", &self.attached)
            .finish()
    }
}

/// An error and its causes on one line (aya's own messages leave out the errno).
fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    if s.contains("Operation not permitted") {
        s.push_str(" (needs root, or CAP_BPF, CAP_NET_ADMIN and CAP_PERFMON)");
    }
    s
}

fn load_err(e: impl std::error::Error) -> XdpError {
    XdpError::Load(chain(&e))
}

impl FastPath {
    /// Load the program and attach it to every interface in `ifaces`: native (driver) XDP,
    /// or generic XDP where the driver has none (e.g. `lo`).
    pub fn attach(ifaces: &[String]) -> Result<Self, XdpError> {
        if let Some(why) = option_env!("NATPASS_XDP_BUILD_ERROR") {
            return Err(XdpError::NotBuilt(why));
        }
        let mut ebpf = Ebpf::load(OBJECT).map_err(load_err)?;
        let prog: &mut Xdp = ebpf
            .program_mut("natpass_relay")
            .ok_or_else(|| XdpError::Load("no program natpass_relay in the object".into()))?
            .try_into()
            .map_err(load_err)?;
        prog.load().map_err(load_err)?;
        let mut attached = Vec::new();
        let mut indexes = Vec::new();
        for iface in ifaces {
            let index =
                nix::net::if_::if_nametoindex(iface.as_str()).map_err(|e| XdpError::Attach {
                    iface: iface.clone(),
                    why: format!("no such interface ({e})"),
                })?;
            let mode = match prog.attach(iface, XdpMode::Driver) {
                Ok(_) => "native",
                Err(native) => match prog.attach(iface, XdpMode::Skb) {
                    Ok(_) => {
                        tracing::info!(%iface, why = %chain(&native), "no native XDP on this interface; generic XDP (slower)");
                        "generic"
                    }
                    Err(e) => {
                        return Err(XdpError::Attach {
                            iface: iface.clone(),
                            why: chain(&e),
                        });
                    }
                },
            };
            attached.push((iface.clone(), mode));
            // Frames are redirected only to interfaces whose driver takes them (native XDP);
            // a generic-mode one gets its traffic the usual way.
            if mode == "native" {
                indexes.push(index);
            }
        }
        let take = |ebpf: &mut Ebpf, name: &str| {
            ebpf.take_map(name)
                .ok_or_else(|| XdpError::Load(format!("no map {name} in the object")))
        };
        let mut devs: DevMapHash<MapData> =
            DevMapHash::try_from(take(&mut ebpf, "NATPASS_DEVS")?).map_err(load_err)?;
        for i in indexes {
            devs.insert(i, i, None, 0).map_err(load_err)?;
        }
        let chan = HashMap::try_from(take(&mut ebpf, "NATPASS_CHAN")?).map_err(load_err)?;
        let peer = HashMap::try_from(take(&mut ebpf, "NATPASS_PEER")?).map_err(load_err)?;
        let stats = PerCpuArray::try_from(take(&mut ebpf, "NATPASS_STATS")?).map_err(load_err)?;
        // The program holds the devmap (and every map) in the kernel; our handle may go.
        drop(devs);
        Ok(Self {
            removed: std::sync::atomic::AtomicU64::new(0),
            maps: Mutex::new(Maps {
                _ebpf: ebpf,
                chan,
                peer,
                stats,
                warned_full: false,
            }),
            attached,
        })
    }

    /// Apply the core's decisions, in order. Returns what the program relayed on each route
    /// it removed (routes that carried nothing are left out), for the allocations' counts.
    pub fn apply(&self, changes: impl Iterator<Item = Offload>) -> Vec<Relayed> {
        let mut changes = changes.peekable();
        let mut relayed = Vec::new();
        if changes.peek().is_none() {
            return relayed;
        }
        let clock = Clock::now();
        let mut m = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        for c in changes {
            if let Some(r) = m.apply(c, &clock) {
                relayed.push(r);
            }
        }
        // Counted before the lock goes: a reader that read a route after this removal then
        // sees the count move.
        self.removed
            .fetch_add(relayed.len() as u64, std::sync::atomic::Ordering::SeqCst);
        drop(m);
        relayed
    }

    /// How many routes have been removed so far (see [`FastPath::route_bytes`]).
    pub fn removed(&self) -> u64 {
        self.removed.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Payload bytes the program has relayed so far on a live route: (to the peer, to the
    /// client); 0 for a direction whose entry is gone or carries another route now. A removed
    /// route's count goes back to the core, so a caller that listed the core's allocations
    /// first compares [`FastPath::removed`] from before its listing with after its reads.
    pub fn route_bytes(
        &self,
        ft: &crate::proto::FiveTuple,
        channel: crate::proto::ChannelNumber,
        relay: SocketAddr,
        peer: SocketAddr,
    ) -> (u64, u64) {
        let Some([c, s, r, p]) = addrs(ft, relay, peer) else {
            return (0, 0);
        };
        let m = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        // Each direction only while its entry is this route's (a client's 5-tuple and
        // channel, or a relay port, can belong to a newer allocation by now).
        let there = value(r, p, 0, 0);
        let to_peer = m
            .chan
            .get(&chan_key(c, s, channel.get()), 0)
            .ok()
            .filter(|v| v[..12] == there[..12]);
        let back = value(s, c, channel.get(), 0);
        let to_client = m
            .peer
            .get(&peer_key(r, p), 0)
            .ok()
            .filter(|v| v[4..16] == back[4..16]);
        (
            to_peer.map_or(0, |v| bytes_of(&v)),
            to_client.map_or(0, |v| bytes_of(&v)),
        )
    }

    /// The program's counters, summed over CPUs.
    pub fn counters(&self) -> XdpCounters {
        let m = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        let read = |i: u32| {
            m.stats
                .get(&i, 0)
                .map_or(0, |v| v.iter().copied().fold(0u64, u64::wrapping_add))
        };
        XdpCounters {
            to_peer_packets: read(0),
            to_peer_bytes: read(1),
            to_client_packets: read(2),
            to_client_bytes: read(3),
            passed_expired: read(4),
            passed_no_next_hop: read(5),
            passed_malformed: read(6),
            passed_too_big: read(7),
        }
    }

    /// Routes installed (both directions), for tests and the admin view.
    pub fn routes(&self) -> (usize, usize) {
        let m = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        (m.chan.keys().count(), m.peer.keys().count())
    }
}

/// `Instant` and CLOCK_MONOTONIC read at one moment, to turn deadlines into the program's
/// nanoseconds.
struct Clock {
    instant: Instant,
    mono_ns: u64,
}

impl Clock {
    fn now() -> Self {
        let instant = Instant::now();
        let ts = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).map_or(0, |t| {
            t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64
        });
        Self {
            instant,
            mono_ns: ts,
        }
    }

    fn ns(&self, at: Instant) -> u64 {
        let ahead = at.saturating_duration_since(self.instant).as_nanos() as u64;
        self.mono_ns.saturating_add(ahead)
    }
}

fn v4(a: SocketAddr) -> Option<(Ipv4Addr, u16)> {
    match a.ip().to_canonical() {
        IpAddr::V4(ip) => Some((ip, a.port())),
        IpAddr::V6(_) => None,
    }
}

/// The four addresses of a route when the program can forward it: IPv4 everywhere, a
/// concrete relay address (the listener may be a wildcard).
fn addrs(
    ft: &crate::proto::FiveTuple,
    relay: SocketAddr,
    peer: SocketAddr,
) -> Option<[(Ipv4Addr, u16); 4]> {
    if ft.transport != Transport::Udp {
        return None;
    }
    let r = v4(relay).filter(|(ip, _)| !ip.is_unspecified())?;
    Some([v4(ft.client)?, v4(ft.server)?, r, v4(peer)?])
}

fn put(out: &mut [u8], at: usize, ip: Ipv4Addr) {
    out[at..at + 4].copy_from_slice(&ip.octets());
}

fn chan_key(c: (Ipv4Addr, u16), s: (Ipv4Addr, u16), channel: u16) -> ChanKey {
    let mut k = [0; 16];
    put(&mut k, 0, c.0);
    put(&mut k, 4, s.0);
    k[8..10].copy_from_slice(&c.1.to_be_bytes());
    k[10..12].copy_from_slice(&s.1.to_be_bytes());
    k[12..14].copy_from_slice(&channel.to_be_bytes());
    k
}

fn peer_key(r: (Ipv4Addr, u16), p: (Ipv4Addr, u16)) -> PeerKey {
    let mut k = [0; 12];
    put(&mut k, 0, r.0);
    put(&mut k, 4, p.0);
    k[8..10].copy_from_slice(&r.1.to_be_bytes());
    k[10..12].copy_from_slice(&p.1.to_be_bytes());
    k
}

/// IP, IP, port, port, then (for peer values) the channel, then the deadline at 16.
fn value(a: (Ipv4Addr, u16), b: (Ipv4Addr, u16), channel: u16, expires: u64) -> [u8; 32] {
    let mut v = [0; 32];
    put(&mut v, 0, a.0);
    put(&mut v, 4, b.0);
    v[8..10].copy_from_slice(&a.1.to_be_bytes());
    v[10..12].copy_from_slice(&b.1.to_be_bytes());
    v[12..14].copy_from_slice(&channel.to_be_bytes());
    v[16..24].copy_from_slice(&expires.to_ne_bytes());
    v
}

/// The payload bytes a route's value says the program relayed.
fn bytes_of(v: &[u8; 32]) -> u64 {
    let mut b = [0; 8];
    b.copy_from_slice(&v[24..32]);
    u64::from_ne_bytes(b)
}

/// A value carrying `bytes` relayed already (a refresh keeps the count).
fn with_bytes(mut v: [u8; 32], bytes: u64) -> [u8; 32] {
    v[24..32].copy_from_slice(&bytes.to_ne_bytes());
    v
}

/// What the program relayed on a route before it was removed (payload bytes each way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relayed {
    /// The allocation the route was.
    pub owner: crate::proto::RelayOwner,
    /// Its channel.
    pub channel: crate::proto::ChannelNumber,
    /// Its peer.
    pub peer: SocketAddr,
    /// Bytes to the peer.
    pub to_peer: u64,
    /// Bytes to the client.
    pub to_client: u64,
}

impl Maps {
    fn apply(&mut self, change: Offload, clock: &Clock) -> Option<Relayed> {
        match change {
            Offload::Install {
                ft,
                channel,
                relay,
                peer,
                expires,
            } => {
                let [c, s, r, p] = addrs(&ft, relay, peer)?;
                let ch = channel.get();
                let deadline = clock.ns(expires);
                let ck = chan_key(c, s, ch);
                let pk = peer_key(r, p);
                let mut back = value(s, c, ch, deadline);
                // A refresh keeps the listener IP the program learned for a wildcard listener
                // and the route's byte counts (what the program adds between this read and
                // the write below is lost: a refresh's instant); another client's old way
                // back starts again at zero.
                if let Ok(old) = self.peer.get(&pk, 0) {
                    if old[4..16] == back[4..16] {
                        if back[..4] == [0; 4] {
                            back[..4].copy_from_slice(&old[..4]);
                        }
                        back = with_bytes(back, bytes_of(&old));
                    }
                }
                let there = self.chan.get(&ck, 0).map_or(0, |v| bytes_of(&v));
                let ok = self
                    .chan
                    .insert(ck, with_bytes(value(r, p, 0, deadline), there), 0)
                    .is_ok()
                    && self.peer.insert(pk, back, 0).is_ok();
                if !ok {
                    let _ = self.chan.remove(&ck);
                    if !self.warned_full {
                        self.warned_full = true;
                        tracing::warn!(
                            "XDP route maps are full (65,536 channels); further channels are relayed in userspace"
                        );
                    }
                }
                None
            }
            Offload::Remove {
                owner,
                ft,
                channel,
                relay,
                peer,
            } => {
                let [c, s, r, p] = addrs(&ft, relay, peer)?;
                let ch = channel.get();
                let ck = chan_key(c, s, ch);
                let to_peer = self.chan.get(&ck, 0).map_or(0, |v| bytes_of(&v));
                let _ = self.chan.remove(&ck);
                // The relay port may belong to another allocation by now (another shard's
                // Install came first): remove only the way back of this client and channel.
                let pk = peer_key(r, p);
                let mine = value(s, c, ch, 0);
                let mut to_client = 0;
                if let Ok(v) = self.peer.get(&pk, 0) {
                    if v[4..16] == mine[4..16] {
                        to_client = bytes_of(&v);
                        let _ = self.peer.remove(&pk);
                    }
                }
                (to_peer > 0 || to_client > 0).then_some(Relayed {
                    owner,
                    channel,
                    peer,
                    to_peer,
                    to_client,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_values_are_laid_out_as_the_program_reads_them() {
        let c = ("192.0.2.1".parse().unwrap(), 0x1234);
        let s = ("192.0.2.2".parse().unwrap(), 3478);
        let k = chan_key(c, s, 0x4001);
        assert_eq!(
            k,
            [
                192, 0, 2, 1, 192, 0, 2, 2, 0x12, 0x34, 0x0d, 0x96, 0x40, 0x01, 0, 0
            ]
        );
        let v = value(s, c, 0x4001, 7);
        assert_eq!(
            &v[..14],
            &[
                192, 0, 2, 2, 192, 0, 2, 1, 0x0d, 0x96, 0x12, 0x34, 0x40, 0x01
            ]
        );
        assert_eq!(u64::from_ne_bytes(v[16..24].try_into().unwrap()), 7);
        assert_eq!(bytes_of(&with_bytes(v, 1234)), 1234);
        assert_eq!(with_bytes(v, 1234)[..24], v[..24]);
        let pk = peer_key(s, c);
        assert_eq!(pk, [192, 0, 2, 2, 192, 0, 2, 1, 0x0d, 0x96, 0x12, 0x34]);
    }

    #[test]
    fn deadlines_convert_to_monotonic_nanoseconds() {
        let clock = Clock::now();
        let later = clock.instant + std::time::Duration::from_millis(1500);
        assert_eq!(clock.ns(later) - clock.mono_ns, 1_500_000_000);
        assert_eq!(
            clock.ns(clock.instant - std::time::Duration::from_secs(1)),
            clock.mono_ns
        );
        assert!(clock.mono_ns > 0);
    }

    #[test]
    fn only_udp_ipv4_routes_with_a_concrete_relay_address_are_forwarded() {
        use crate::proto::FiveTuple;
        let ft = FiveTuple {
            transport: Transport::Udp,
            client: "192.0.2.1:4000".parse().unwrap(),
            server: "0.0.0.0:3478".parse().unwrap(),
        };
        let relay: SocketAddr = "192.0.2.2:50000".parse().unwrap();
        let peer: SocketAddr = "198.51.100.1:9".parse().unwrap();
        assert!(
            addrs(&ft, relay, peer).is_some(),
            "a wildcard listener is fine"
        );
        let mapped = FiveTuple {
            client: "[::ffff:192.0.2.1]:4000".parse().unwrap(),
            ..ft
        };
        assert!(addrs(&mapped, relay, peer).is_some(), "v4-mapped is IPv4");
        assert!(addrs(&ft, "0.0.0.0:50000".parse().unwrap(), peer).is_none());
        assert!(addrs(&ft, relay, "[2001:db8::1]:9".parse().unwrap()).is_none());
        let tcp = FiveTuple {
            transport: Transport::Tcp,
            ..ft
        };
        assert!(addrs(&tcp, relay, peer).is_none());
    }
}
