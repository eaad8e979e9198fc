//! One port for the page and TURN (`http` on a `tls-listen` address, usually 443): each
//! connection is split by what it says first.
//!
//! - Plain bytes: a first byte with the two top bits clear is STUN (RFC 8489 §5: a TURN client
//!   over TCP starts with a STUN request) → TURN over TCP; anything else → HTTP.
//! - TLS (first byte 0x16, a handshake record): the handshake is done here with the one
//!   certificate (TURN's `tls-cert`, reloaded on SIGHUP), offering `h2`, `http/1.1` and RFC
//!   7443's `stun.turn` / `stun.nat-discovery` (preferred when offered). A negotiated `stun.*`
//!   → TURN. Otherwise (`h2`, `http/1.1`, or no ALPN at all: Chromium's TURN over TLS, `curl
//!   --no-alpn`) the first decrypted bytes decide, STUN → TURN, anything else → HTTP: both
//!   protocols speak first, and a TURN client may offer `http/1.1` too.
//!
//! A TURN connection leaves the web side: its socket, its TLS session and the bytes already
//! read go to a relay shard ([`crate::net::Control::adopt`]), which serves it exactly like
//! one it accepted itself. The web side's slot for it is released then; the shard counts it.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// What the shared port needs from the server.
#[derive(Clone)]
pub struct SharedPort {
    /// TURN's certificate store (the config new connections use).
    pub tls: Arc<crate::tls::TlsStore>,
    /// Where TURN connections go.
    pub turn: crate::net::Control,
    /// The HTTP side's TLS config, derived from the store's current one (ALPN changed), and
    /// the config it was made from (made again when the certificate is reloaded).
    derived: Arc<Mutex<Option<Derived>>>,
}

type Derived = (Arc<rustls::ServerConfig>, Arc<rustls::ServerConfig>);

impl std::fmt::Debug for SharedPort {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedPort").finish_non_exhaustive()
    }
}

/// ALPN offered on the shared port, in the server's order of preference: a client that offers
/// `stun.turn` is a TURN client even when it offers `http/1.1` too (turnutils_uclient does).
const ALPN: [&[u8]; 5] = [
    b"stun.turn",
    b"stun.nat-discovery",
    b"h2",
    b"http/1.1",
    crate::tls::ACME_ALPN,
];

impl SharedPort {
    /// A splitter for TURN's certificate `tls` and its shards.
    pub fn new(tls: Arc<crate::tls::TlsStore>, turn: crate::net::Control) -> Self {
        Self {
            tls,
            turn,
            derived: Arc::default(),
        }
    }

    /// The TLS config for the next connection: TURN's certificate, this port's ALPN list.
    fn config(&self) -> Arc<rustls::ServerConfig> {
        let current = self.tls.current();
        let mut d = self.derived.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((from, made)) = d.as_ref() {
            if Arc::ptr_eq(from, &current) {
                return made.clone();
            }
        }
        let mut cfg = (*current).clone();
        cfg.alpn_protocols = ALPN.iter().map(|p| p.to_vec()).collect();
        let made = Arc::new(cfg);
        *d = Some((current, made.clone()));
        made
    }
}

/// Where a connection went.
pub enum Routed<S> {
    /// Plain HTTP.
    Http(S),
    /// HTTPS, with the plaintext already read in front (boxed: a TLS session is large).
    Https(Box<Prefixed<tokio_rustls::server::TlsStream<S>>>),
    /// Handed to a relay shard (or dropped, when every shard has stopped).
    Turn,
    /// Closed: nothing arrived, the handshake failed, or the deadline passed.
    Closed,
}

/// A socket whose plain TCP stream can be taken out for a shard.
pub trait IntoStd {
    /// The socket as a non-blocking std stream (the wrapper's resources released).
    fn into_std(self) -> io::Result<std::net::TcpStream>;
    /// The underlying socket, to peek at.
    fn tcp(&self) -> &tokio::net::TcpStream;
}

/// A first byte with the two top bits clear: a STUN message (RFC 8489 §5). 0x16 is checked
/// before as a TLS handshake record.
fn is_stun(first: u8) -> bool {
    first >> 6 == 0
}

/// Split one connection (see the module docs) within `deadline`.
pub async fn split<S>(io: S, port: &SharedPort, deadline: tokio::time::Instant) -> Routed<S>
where
    S: AsyncRead + AsyncWrite + Unpin + IntoStd,
{
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout_at(deadline, io.tcp().peek(&mut first)).await;
    // A dual-stack listener gives IPv4 clients as ::ffff:a.b.c.d: the shards key caps,
    // quotas and XOR-MAPPED-ADDRESS by the address as it is on the wire.
    let canon =
        |a: std::net::SocketAddr| std::net::SocketAddr::new(a.ip().to_canonical(), a.port());
    let (peer, local) = match (io.tcp().peer_addr(), io.tcp().local_addr()) {
        (Ok(p), Ok(l)) => (canon(p), canon(l)),
        _ => return Routed::Closed,
    };
    match peeked {
        Ok(Ok(1..)) => {}
        _ => return Routed::Closed,
    }
    if first[0] != 0x16 {
        if !is_stun(first[0]) {
            return Routed::Http(io);
        }
        // Nothing read: the shard reads the whole stream from its first byte.
        return match io.into_std() {
            Ok(stream) => adopt(port, stream, peer, local, None, Vec::new()),
            Err(_) => Routed::Closed,
        };
    }
    let acceptor = tokio_rustls::TlsAcceptor::from(port.config());
    let Ok(Ok(mut tls)) = tokio::time::timeout_at(deadline, acceptor.accept(io)).await else {
        return Routed::Closed;
    };
    let alpn = tls.get_ref().1.alpn_protocol();
    if alpn == Some(crate::tls::ACME_ALPN) {
        // A TLS-ALPN-01 validation: the handshake (with the challenge certificate) was all.
        return Routed::Closed;
    }
    let alpn_turn = alpn.is_some_and(|p| p.starts_with(b"stun."));
    let mut buf = Vec::new();
    if !alpn_turn {
        // HTTP (1.1 or 2) speaks first, and so does TURN: what comes first decides, whatever
        // ALPN said (turnutils_uclient offers http/1.1 next to stun.turn).
        buf = vec![0u8; 4096];
        let n = match tokio::time::timeout_at(deadline, tls.read(&mut buf)).await {
            Ok(Ok(n)) if n > 0 => n,
            _ => return Routed::Closed,
        };
        buf.truncate(n);
        if !is_stun(buf[0]) {
            return Routed::Https(Box::new(Prefixed::new(buf, tls)));
        }
    }
    let (io, conn) = tls.into_inner();
    match io.into_std() {
        Ok(stream) => adopt(port, stream, peer, local, Some(Box::new(conn)), buf),
        Err(_) => Routed::Closed,
    }
}

fn adopt<S>(
    port: &SharedPort,
    stream: std::net::TcpStream,
    peer: std::net::SocketAddr,
    local: std::net::SocketAddr,
    tls: Option<Box<rustls::ServerConnection>>,
    prefix: Vec<u8>,
) -> Routed<S> {
    let handed = port.turn.adopt(crate::net::Adopted {
        stream,
        peer,
        local,
        tls,
        prefix,
    });
    if !handed {
        tracing::debug!(client = %peer, "TURN connection on the shared port dropped: relay stopped");
    }
    Routed::Turn
}

/// A stream with bytes already read from it put back in front.
pub struct Prefixed<S> {
    prefix: Vec<u8>,
    at: usize,
    inner: S,
}

impl<S> Prefixed<S> {
    fn new(prefix: Vec<u8>, inner: S) -> Self {
        Self {
            prefix,
            at: 0,
            inner,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Prefixed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.at < self.prefix.len() {
            let n = (self.prefix.len() - self.at).min(buf.remaining());
            let at = self.at;
            buf.put_slice(&self.prefix[at..at + n]);
            self.at += n;
            if self.at == self.prefix.len() {
                self.prefix = Vec::new();
                self.at = 0;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Prefixed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn prefixed_reads_the_prefix_then_the_stream() {
        let (mut a, b) = tokio::io::duplex(64);
        tokio::io::AsyncWriteExt::write_all(&mut a, b" world")
            .await
            .unwrap();
        drop(a);
        let mut p = Prefixed::new(b"hello".to_vec(), b);
        let mut out = String::new();
        p.read_to_string(&mut out).await.unwrap();
        assert_eq!(out, "hello world");
    }

    #[test]
    fn stun_is_told_from_http_and_tls_by_its_first_byte() {
        assert!(is_stun(0x00) && is_stun(0x01)); // Binding / Allocate requests
        for http in [b'G', b'P', b'H', b'O', b'D', b'C'] {
            assert!(!is_stun(http), "{}", http as char);
        }
    }
}
