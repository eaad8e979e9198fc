//! One shard's event loop: mio over its listener copies and its relay sockets.
//!
//! Hot path: `recv_from` into a fixed buffer (peer datagrams land 4 bytes in, so a ChannelData
//! header is written in place), one call into the core, `send_to` of a sub-slice. No
//! allocation, lock or `.await` between receive and send. Work per socket per wake-up is
//! capped; sockets not drained are revisited before sleeping again.

use crate::proto::{Core, FiveTuple, PeerRoute, RelayOwner, RelaySockets, Transmit, Transport};
use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Registry, Token, Waker};
use slab::Slab;
use socket2::{Domain, Protocol, Socket, Type};
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

const WAKER: Token = Token(0);
const LISTENER_BASE: usize = 1;
const RELAY_BASE: usize = 1 << 20;
/// Datagrams read from one socket per wake-up before others get a turn.
const BUDGET: usize = 256;
const BUF: usize = 65_536 + 4;

struct RelaySock {
    sock: UdpSocket,
    owner: RelayOwner,
}

struct Listener {
    sock: UdpSocket,
    local: SocketAddr,
}

/// The relay sockets of this shard, handed to the core as its [`RelaySockets`].
struct Relays<'a> {
    registry: &'a Registry,
    table: &'a mut Slab<RelaySock>,
}

impl RelaySockets for Relays<'_> {
    fn bind(&mut self, addr: SocketAddr, owner: RelayOwner) -> std::io::Result<usize> {
        let s = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
        if addr.is_ipv6() {
            s.set_only_v6(true)?;
        }
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        let mut sock = UdpSocket::from_std(s.into());
        let entry = self.table.vacant_entry();
        let key = entry.key();
        self.registry
            .register(&mut sock, Token(RELAY_BASE + key), Interest::READABLE)?;
        entry.insert(RelaySock { sock, owner });
        Ok(key)
    }

    fn release(&mut self, handle: usize) {
        if let Some(mut r) = self.table.try_remove(handle) {
            let _ = self.registry.deregister(&mut r.sock);
        }
    }
}

pub(crate) struct Shard {
    id: usize,
    poll: Poll,
    waker: Arc<Waker>,
    listeners: Vec<Listener>,
    relays: Slab<RelaySock>,
    core: Core,
    stop: Arc<AtomicBool>,
    out: Vec<Transmit>,
}

impl Shard {
    pub(crate) fn new(
        id: usize,
        core: Core,
        sockets: Vec<std::net::UdpSocket>,
        stop: Arc<AtomicBool>,
    ) -> std::io::Result<Self> {
        let poll = Poll::new()?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let mut listeners = Vec::new();
        for (i, s) in sockets.into_iter().enumerate() {
            let local = s.local_addr()?;
            let mut sock = UdpSocket::from_std(s);
            poll.registry()
                .register(&mut sock, Token(LISTENER_BASE + i), Interest::READABLE)?;
            listeners.push(Listener { sock, local });
        }
        Ok(Self {
            id,
            poll,
            waker,
            listeners,
            relays: Slab::new(),
            core,
            stop,
            out: Vec::with_capacity(16),
        })
    }

    pub(crate) fn waker(&self) -> Arc<Waker> {
        self.waker.clone()
    }

    pub(crate) fn run(mut self) {
        let mut events = Events::with_capacity(1024);
        let mut buf = vec![0u8; BUF].into_boxed_slice();
        let mut again: Vec<Token> = Vec::new();
        let mut next_again: Vec<Token> = Vec::new();
        loop {
            let now = Instant::now();
            let timeout = if again.is_empty() {
                let t = self
                    .core
                    .poll_timeout()
                    .map_or(Duration::from_secs(1), |t| t.saturating_duration_since(now));
                t.min(Duration::from_secs(1))
            } else {
                Duration::ZERO
            };
            if let Err(e) = self.poll.poll(&mut events, Some(timeout)) {
                if e.kind() != ErrorKind::Interrupted {
                    tracing::error!(shard = self.id, error = %e, "poll failed; shard stops");
                    break;
                }
            }
            if self.stop.load(Ordering::Acquire) {
                let mut relays = Relays {
                    registry: self.poll.registry(),
                    table: &mut self.relays,
                };
                self.core.close_all(&mut relays);
                break;
            }
            let now = Instant::now();
            next_again.clear();
            let tokens = events.iter().map(|e| e.token()).chain(again.drain(..));
            let tokens: Vec<Token> = tokens.collect();
            for token in tokens {
                let more = match token.0 {
                    0 => false,
                    t if t >= RELAY_BASE => self.drain_relay(t - RELAY_BASE, now, &mut buf),
                    t => self.drain_listener(t - LISTENER_BASE, now, &mut buf),
                };
                if more && !next_again.contains(&token) {
                    next_again.push(token);
                }
            }
            std::mem::swap(&mut again, &mut next_again);
            let mut relays = Relays {
                registry: self.poll.registry(),
                table: &mut self.relays,
            };
            self.core.handle_timeout(Instant::now(), &mut relays);
        }
        tracing::debug!(shard = self.id, "shard stopped");
    }

    fn listener_for(&self, server: SocketAddr) -> Option<&Listener> {
        self.listeners.iter().find(|l| l.local == server)
    }

    fn flush(&mut self) {
        for t in self.out.drain(..) {
            if let Some(l) = self.listeners.iter().find(|l| l.local == t.ft.server) {
                let _ = l.sock.send_to(&t.data, t.ft.client);
            }
        }
    }

    /// Returns true when the budget ran out before the socket was drained.
    fn drain_listener(&mut self, idx: usize, now: Instant, buf: &mut [u8]) -> bool {
        let Some(l) = self.listeners.get(idx) else {
            return false;
        };
        let local = l.local;
        for _ in 0..BUDGET {
            let (n, src) = match self.listeners[idx].sock.recv_from(buf) {
                Ok(x) => x,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(_) => continue, // ICMP-induced errors on UDP: nothing to do
            };
            let ft = FiveTuple {
                transport: Transport::Udp,
                client: src,
                server: local,
            };
            let mut relays = Relays {
                registry: self.poll.registry(),
                table: &mut self.relays,
            };
            let fwd = self
                .core
                .handle_client(now, ft, &buf[..n], &mut relays, &mut self.out);
            if let Some(f) = fwd {
                if let Some(r) = self.relays.get(f.handle) {
                    let _ = r.sock.send_to(&buf[f.range], f.peer);
                }
            }
            if !self.out.is_empty() {
                self.flush();
            }
        }
        true
    }

    fn drain_relay(&mut self, key: usize, now: Instant, buf: &mut [u8]) -> bool {
        for _ in 0..BUDGET {
            let Some(r) = self.relays.get(key) else {
                return false;
            };
            let owner = r.owner;
            let (n, peer) = match r.sock.recv_from(&mut buf[4..]) {
                Ok(x) => x,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return false,
                Err(_) => continue,
            };
            match self.core.handle_peer(now, owner, peer, &buf[4..4 + n]) {
                PeerRoute::Drop => {}
                PeerRoute::Channel { ft, channel } => {
                    buf[0..2].copy_from_slice(&channel.to_be_bytes());
                    buf[2..4].copy_from_slice(&(n as u16).to_be_bytes());
                    if let Some(l) = self.listener_for(ft.server) {
                        let _ = l.sock.send_to(&buf[..4 + n], ft.client);
                    }
                }
                PeerRoute::Indication(t) => {
                    if let Some(l) = self.listener_for(t.ft.server) {
                        let _ = l.sock.send_to(&t.data, t.ft.client);
                    }
                }
            }
        }
        true
    }
}
