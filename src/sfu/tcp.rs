//! ICE-TCP for the SFU (RFC 6544, passive candidates only): a participant whose network lets
//! TCP out but not UDP connects to the SFU's port over TCP; every packet on the connection is
//! framed with a two-byte length (RFC 4571). This module owns the listener and the connections
//! for the SFU's loop: it turns bytes into frames for the core and frames from the core into
//! bytes, with bounded buffers and deadlines, and knows nothing of ICE or DTLS.
//!
//! Limits: [`MAX_CONNECTIONS`] in all and [`PER_IP`] per address; a frame longer than
//! [`MAX_FRAME`] closes its connection (media packets are MTU-sized); a connection that has sent
//! no frame for [`IDLE`] ([`FIRST_FRAME`] before its first) is closed; what cannot be written
//! to a slow connection beyond [`MAX_PENDING`] bytes is dropped a whole frame at a time, as UDP
//! would lose it.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};
use slab::Slab;

/// Connections at once.
pub const MAX_CONNECTIONS: usize = 1024;
/// Connections per client address.
pub const PER_IP: usize = 32;
/// The longest frame accepted (RFC 4571 allows 65,535; media and DTLS records fit in far less).
pub const MAX_FRAME: usize = 4096;
/// The shortest: an RTP header (STUN messages and DTLS records are longer).
pub const MIN_FRAME: usize = 12;
/// Bytes read from one connection per turn of the loop: a fast sender cannot hold the loop
/// (the rest is read on the next turns).
pub const READ_PER_TURN: usize = 64 * 1024;
/// Bytes waiting to be written to one connection before frames are dropped.
pub const MAX_PENDING: usize = 256 * 1024;
/// A connection with no frame for this long is closed.
pub const IDLE: Duration = Duration::from_secs(30);
/// ... and one that has sent no frame at all since it was accepted, after this long.
pub const FIRST_FRAME: Duration = Duration::from_secs(10);

struct Conn {
    stream: TcpStream,
    peer: SocketAddr,
    /// Bytes read and not yet a whole frame.
    inbuf: Vec<u8>,
    /// Framed bytes waiting for the socket.
    outbuf: Vec<u8>,
    last_frame: Option<Instant>,
    accepted: Instant,
}

/// The SFU's TCP side.
pub struct TcpSide {
    listener: TcpListener,
    local: SocketAddr,
    conns: Slab<Conn>,
    by_peer: HashMap<SocketAddr, usize>,
    per_ip: HashMap<IpAddr, usize>,
    first_token: usize,
    /// Connections that stopped at [`READ_PER_TURN`] with more to read.
    backlog: Vec<usize>,
    /// Connections closed for breaking a limit (too many, bad frame, idle).
    pub refused: u64,
}

impl TcpSide {
    /// Take over `listener` (already registered under its own token by the caller); connections
    /// get tokens from `first_token` up.
    pub fn new(listener: TcpListener, first_token: usize) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        Ok(Self {
            listener,
            local,
            conns: Slab::new(),
            by_peer: HashMap::new(),
            per_ip: HashMap::new(),
            first_token,
            backlog: Vec::new(),
            refused: 0,
        })
    }

    /// The listener, for registration.
    pub fn listener(&mut self) -> &mut TcpListener {
        &mut self.listener
    }

    /// Where it listens.
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// Whether `token` is one of its connections.
    pub fn owns(&self, token: Token) -> bool {
        token.0 >= self.first_token && self.conns.contains(token.0 - self.first_token)
    }

    /// Accept what is waiting.
    pub fn accept(&mut self, registry: &Registry, now: Instant) {
        loop {
            let (mut stream, peer) = match self.listener.accept() {
                Ok(c) => c,
                Err(e) if e.kind() == ErrorKind::WouldBlock => return,
                // One connection gone before it was accepted: the others are still queued.
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::ConnectionAborted | ErrorKind::Interrupted
                    ) =>
                {
                    continue;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "SFU TCP: accept failed");
                    return;
                }
            };
            let from_ip = self.per_ip.get(&peer.ip()).copied().unwrap_or(0);
            if self.conns.len() >= MAX_CONNECTIONS || from_ip >= PER_IP {
                self.refused += 1;
                continue; // dropped: closed
            }
            let entry = self.conns.vacant_entry();
            let token = Token(self.first_token + entry.key());
            if registry
                .register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
                .is_err()
            {
                continue;
            }
            let _ = stream.set_nodelay(true);
            self.by_peer.insert(peer, entry.key());
            *self.per_ip.entry(peer.ip()).or_insert(0) += 1;
            entry.insert(Conn {
                stream,
                peer,
                inbuf: Vec::new(),
                outbuf: Vec::new(),
                last_frame: None,
                accepted: now,
            });
        }
    }

    /// The connection of `token` is ready: read its frames (each handed to `frame` with the
    /// peer's address; `frame` says whether a session took it) and write what waits for it.
    /// Only frames a session took count as the connection being alive.
    pub fn ready(
        &mut self,
        token: Token,
        registry: &Registry,
        now: Instant,
        frame: impl FnMut(SocketAddr, &[u8]) -> bool,
    ) {
        self.serve(token.0 - self.first_token, registry, now, frame);
    }

    /// Read on from the connections that stopped at [`READ_PER_TURN`] last turn.
    pub fn serve_backlog(
        &mut self,
        registry: &Registry,
        now: Instant,
        mut frame: impl FnMut(SocketAddr, &[u8]) -> bool,
    ) {
        for key in std::mem::take(&mut self.backlog) {
            self.serve(key, registry, now, &mut frame);
        }
    }

    fn serve(
        &mut self,
        key: usize,
        registry: &Registry,
        now: Instant,
        mut frame: impl FnMut(SocketAddr, &[u8]) -> bool,
    ) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        let mut close = false;
        let mut chunk = [0u8; 8192];
        let mut read = 0;
        loop {
            if read >= READ_PER_TURN {
                if !self.backlog.contains(&key) {
                    self.backlog.push(key);
                }
                break;
            }
            match c.stream.read(&mut chunk) {
                Ok(0) => {
                    close = true;
                    break;
                }
                Ok(n) => {
                    read += n;
                    c.inbuf.extend_from_slice(&chunk[..n]);
                    let peer = c.peer;
                    let mut taken = false;
                    let got = take_frames(&mut c.inbuf, |d| taken |= frame(peer, d));
                    if taken {
                        c.last_frame = Some(now);
                    }
                    if got.is_err() {
                        close = true;
                        self.refused += 1;
                        break;
                    }
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => {
                    close = true;
                    break;
                }
            }
        }
        if !close {
            close = flush(c).is_err();
        }
        if close {
            self.close(key, registry);
        }
    }

    /// Send `data` as one frame to the connection from `peer`; false when there is none (or it
    /// is too far behind: the frame is dropped, as UDP would).
    pub fn send(&mut self, peer: SocketAddr, data: &[u8], registry: &Registry) -> bool {
        let Some(&key) = self.by_peer.get(&peer) else {
            return false;
        };
        let Some(c) = self.conns.get_mut(key) else {
            return false;
        };
        let Ok(len) = u16::try_from(data.len()) else {
            return false;
        };
        if c.outbuf.len() + 2 + data.len() > MAX_PENDING {
            return false;
        }
        c.outbuf.extend_from_slice(&len.to_be_bytes());
        c.outbuf.extend_from_slice(data);
        if flush(c).is_err() {
            self.close(key, registry);
            return false;
        }
        true
    }

    /// Close connections past their deadlines.
    pub fn sweep(&mut self, now: Instant, registry: &Registry) {
        let stale: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| match c.last_frame {
                Some(t) => now.saturating_duration_since(t) >= IDLE,
                None => now.saturating_duration_since(c.accepted) >= FIRST_FRAME,
            })
            .map(|(k, _)| k)
            .collect();
        for k in stale {
            self.refused += 1;
            self.close(k, registry);
        }
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        self.conns.len()
    }

    fn close(&mut self, key: usize, registry: &Registry) {
        if let Some(mut c) = self.conns.try_remove(key) {
            let _ = registry.deregister(&mut c.stream);
            self.by_peer.remove(&c.peer);
            if let Some(n) = self.per_ip.get_mut(&c.peer.ip()) {
                *n -= 1;
                if *n == 0 {
                    self.per_ip.remove(&c.peer.ip());
                }
            }
        }
    }
}

/// A length prefix below [`MIN_FRAME`] or above [`MAX_FRAME`]: not a media packet; the
/// connection goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadFrame;

/// Hand every whole RFC 4571 frame at the start of `buf` to `frame` and remove it; what is
/// left is the start of the next one. The number of frames, or [`BadFrame`].
pub fn take_frames(buf: &mut Vec<u8>, mut frame: impl FnMut(&[u8])) -> Result<usize, BadFrame> {
    let mut at = 0;
    let mut n = 0;
    let result = loop {
        let Some(head) = buf.get(at..at + 2) else {
            break Ok(n);
        };
        let len = usize::from(u16::from_be_bytes([head[0], head[1]]));
        if !(MIN_FRAME..=MAX_FRAME).contains(&len) {
            break Err(BadFrame);
        }
        let Some(body) = buf.get(at + 2..at + 2 + len) else {
            break Ok(n);
        };
        frame(body);
        n += 1;
        at += 2 + len;
    };
    buf.drain(..at);
    result
}

/// Write what the connection can take now.
fn flush(c: &mut Conn) -> std::io::Result<()> {
    let mut written = 0;
    while written < c.outbuf.len() {
        match c.stream.write(&c.outbuf[written..]) {
            Ok(0) => return Err(ErrorKind::WriteZero.into()),
            Ok(n) => written += n,
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    c.outbuf.drain(..written);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_frames_come_out_and_a_partial_one_waits() {
        let a = [b'a'; 12];
        let b = [b'b'; 13];
        let mut buf = vec![0, 12];
        buf.extend_from_slice(&a);
        buf.extend_from_slice(&[0, 13]);
        buf.extend_from_slice(&b);
        buf.extend_from_slice(&[0, 14, b'y']);
        let mut got: Vec<Vec<u8>> = Vec::new();
        assert_eq!(take_frames(&mut buf, |d| got.push(d.to_vec())), Ok(2));
        assert_eq!(got, vec![a.to_vec(), b.to_vec()]);
        assert_eq!(buf, vec![0, 14, b'y'], "the next frame's start stays");
        buf.extend_from_slice(&[b'z'; 13]);
        assert_eq!(take_frames(&mut buf, |d| got.push(d.to_vec())), Ok(1));
        assert_eq!(got[2].len(), 14);
        assert!(buf.is_empty());
    }

    #[test]
    fn a_short_or_oversized_length_is_refused() {
        assert_eq!(take_frames(&mut vec![0, 0, 1], |_| {}), Err(BadFrame));
        assert_eq!(take_frames(&mut vec![0, 11, 1], |_| {}), Err(BadFrame));
        let big = (MAX_FRAME as u16 + 1).to_be_bytes();
        assert_eq!(
            take_frames(&mut vec![big[0], big[1]], |_| {}),
            Err(BadFrame)
        );
    }

    proptest::proptest! {
        /// Any bytes, cut anywhere: frames out or a refusal, never a panic; a frame handed out
        /// is never longer than MAX_FRAME; the buffer never holds more than it was given.
        #[test]
        fn any_byte_stream_is_framed_or_refused(
            data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..20_000),
            cut in 0usize..20_000,
        ) {
            let cut = cut.min(data.len());
            let mut buf = data[..cut].to_vec();
            let mut total = 0;
            let mut ok = take_frames(&mut buf, |d| { assert!(d.len() <= MAX_FRAME); total += 2 + d.len(); });
            if ok.is_ok() {
                buf.extend_from_slice(&data[cut..]);
                ok = take_frames(&mut buf, |d| { assert!(d.len() <= MAX_FRAME); total += 2 + d.len(); });
            }
            if ok.is_ok() {
                proptest::prop_assert_eq!(total + buf.len(), data.len());
            }
        }
    }
}
