//! Bounds on the HTTP listener, so the web side can never starve the relay of file
//! descriptors (threat model, "Exhaustion": slowloris, half-open connections).
//!
//! Every accepted connection first passes a [`ConnGate`]: a cap per client IP and a global cap
//! that is at most a quarter of the process's descriptor limit, so at least three quarters are
//! always left for relay sockets and TURN streams. A connection that is over either cap is
//! closed at once. An admitted connection holds a [`Slot`] inside its socket wrapper
//! ([`Guarded`]), so the slot is returned exactly when the socket closes, whether hyper still
//! owns it or it was upgraded to a signaling WebSocket.
//!
//! Deadlines (the same shape as the TURN stream rules in `net`): the TLS handshake and the
//! headers of the first request must arrive within [`HttpLimits::first_request`]; later
//! requests on a kept-alive HTTP/1.1 connection get the same header deadline from hyper; a
//! connection that has read nothing for [`HttpLimits::idle`] is closed. Upgraded WebSockets
//! leave this module's watch: signaling pings them and closes the silent ones itself.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Limits of the HTTP listener.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// Deadline from accept to the end of the first request's headers (TLS handshake included),
    /// and for each later request's headers on a kept-alive connection.
    pub first_request: Duration,
    /// Close a connection that has read nothing for this long (not applied to WebSockets).
    pub idle: Duration,
    /// Open connections per client IP. Above the signaling cap per IP (32 by default), so a
    /// client at its signaling limit can still load the page.
    pub per_ip: usize,
    /// Open connections in total; lowered to [`descriptor_budget`] when that is smaller.
    pub max_connections: usize,
    /// Largest request head (request line and headers) in bytes.
    pub max_header_bytes: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            first_request: Duration::from_secs(10),
            idle: Duration::from_secs(60),
            per_ip: 64,
            max_connections: 65_536,
            max_header_bytes: 64 * 1024,
        }
    }
}

/// The soft `RLIMIT_NOFILE` of this process (`None` when it cannot be read).
pub fn descriptor_limit() -> Option<u64> {
    use nix::sys::resource::{Resource, getrlimit};
    getrlimit(Resource::RLIMIT_NOFILE)
        .ok()
        .map(|(soft, _)| soft)
}

/// How many descriptors the HTTP side may hold at most: a quarter of the soft descriptor limit
/// (at least 16), the rest being left for relaying.
pub fn descriptor_budget() -> usize {
    let soft = descriptor_limit().unwrap_or(1024);
    usize::try_from(soft / 4).unwrap_or(usize::MAX).max(16)
}

/// Raise the soft `RLIMIT_NOFILE` to the hard limit, so the relay gets every descriptor the
/// operator allows (many systems start services with a soft limit of 1024). Returns the new
/// soft limit. Call it once at start-up, before the HTTP side is launched (its global cap is
/// derived from the limit then in force).
pub fn raise_nofile_limit() -> io::Result<u64> {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).map_err(io::Error::from)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard).map_err(io::Error::from)?;
    }
    Ok(soft.max(hard))
}

/// Why a connection was refused at accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its client IP holds [`HttpLimits::per_ip`] connections already.
    PerIp,
    /// The listener holds its global cap.
    Global,
}

/// Counts open HTTP connections per client IP and in total.
#[derive(Debug)]
pub struct ConnGate {
    per_ip: usize,
    cap: usize,
    counts: Mutex<HashMap<IpAddr, usize>>,
    open: AtomicUsize,
    refused: AtomicU64,
}

impl ConnGate {
    /// A gate for `limits`, its global cap lowered to [`descriptor_budget`] if that is smaller.
    pub fn new(limits: &HttpLimits) -> Arc<Self> {
        Self::with_cap(
            limits.per_ip,
            limits.max_connections.min(descriptor_budget()),
        )
    }

    /// A gate with exactly these caps.
    pub fn with_cap(per_ip: usize, cap: usize) -> Arc<Self> {
        Arc::new(Self {
            per_ip,
            cap,
            counts: Mutex::default(),
            open: AtomicUsize::new(0),
            refused: AtomicU64::new(0),
        })
    }

    /// Count a new connection from `ip`, or say which cap it hits.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refused> {
        let mut counts = self.counts.lock().unwrap_or_else(|e| e.into_inner());
        let refused = if self.open.load(Ordering::Relaxed) >= self.cap {
            Some(Refused::Global)
        } else if counts.get(&ip).copied().unwrap_or(0) >= self.per_ip {
            Some(Refused::PerIp)
        } else {
            None
        };
        if let Some(r) = refused {
            self.refused.fetch_add(1, Ordering::Relaxed);
            return Err(r);
        }
        *counts.entry(ip).or_default() += 1;
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(Slot {
            gate: self.clone(),
            ip,
        })
    }

    /// Open connections now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// The global cap in force.
    pub fn cap(&self) -> usize {
        self.cap
    }

    /// Connections refused so far.
    pub fn refused(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }
}

/// One admitted connection; returned to its [`ConnGate`] when dropped.
#[derive(Debug)]
pub struct Slot {
    gate: Arc<ConnGate>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut counts = self.gate.counts.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = counts.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                counts.remove(&self.ip);
            }
        }
        self.gate.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// When a connection last read something, as milliseconds since it was accepted.
#[derive(Debug)]
struct Activity {
    start: Instant,
    last_read_ms: AtomicU64,
}

impl Activity {
    fn touch(&self) {
        let ms = u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_read_ms.store(ms, Ordering::Relaxed);
    }
    fn last_read(&self) -> Instant {
        self.start + Duration::from_millis(self.last_read_ms.load(Ordering::Relaxed))
    }
}

/// A client socket that holds its connection slot and records when it last read.
#[derive(Debug)]
pub struct Guarded<S> {
    io: S,
    activity: Arc<Activity>,
    _slot: Slot,
}

impl<S: AsyncRead + Unpin> AsyncRead for Guarded<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Guarded<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

impl super::shared_port::IntoStd for Guarded<tokio::net::TcpStream> {
    fn into_std(self) -> io::Result<std::net::TcpStream> {
        self.io.into_std()
    }
    fn tcp(&self) -> &tokio::net::TcpStream {
        &self.io
    }
}

/// What is in front of HTTP on a listener.
#[derive(Clone)]
#[allow(missing_debug_implementations)] // TlsAcceptor has no Debug
pub enum Front {
    /// Plain HTTP.
    Plain,
    /// HTTPS.
    Tls(tokio_rustls::TlsAcceptor),
    /// A port shared with TURN: each connection is split (see `shared_port`).
    Shared(super::shared_port::SharedPort),
}

/// Set when a connection's first request head has been parsed.
#[derive(Debug, Clone, Default)]
struct RequestSeen(Arc<AtomicBool>);

impl RequestSeen {
    fn mark(&self) {
        self.0.store(true, Ordering::Relaxed);
    }
    fn seen(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Serve `app` on `listener` (HTTPS when `tls` is set) under `limits` until `shutdown`
/// resolves; then open connections are asked to finish and given a few seconds.
pub async fn serve_bounded(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    front: Front,
    limits: HttpLimits,
    gate: Arc<ConnGate>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut conns = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            _ = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => continue,
        };
        let (stream, peer) = match accepted {
            Ok(x) => x,
            Err(e) => {
                // Out of descriptors (EMFILE/ENFILE) or a connection reset before accept: keep
                // serving; a short pause stops a busy loop while descriptors are short.
                tracing::debug!(error = %e, "HTTP accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let slot = match gate.admit(peer.ip()) {
            Ok(s) => s,
            Err(why) => {
                tracing::debug!(client = %peer, ?why, "HTTP connection refused: connection cap");
                drop(stream);
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let activity = Arc::new(Activity {
            start: Instant::now(),
            last_read_ms: AtomicU64::new(0),
        });
        let io = Guarded {
            io: stream,
            activity: activity.clone(),
            _slot: slot,
        };
        let conn = Conn {
            app: app.clone(),
            peer,
            limits: limits.clone(),
            activity,
            stop: stop_rx.clone(),
        };
        let front = front.clone();
        conns.spawn(async move {
            let deadline = tokio::time::Instant::now() + conn.limits.first_request;
            match front {
                Front::Plain => conn.drive(io, deadline).await,
                Front::Tls(acceptor) => {
                    let Ok(Ok(tls)) = tokio::time::timeout_at(deadline, acceptor.accept(io)).await
                    else {
                        return;
                    };
                    if tls.get_ref().1.alpn_protocol() == Some(crate::tls::ACME_ALPN) {
                        return; // a TLS-ALPN-01 validation: the handshake was all
                    }
                    conn.drive(tls, deadline).await;
                }
                Front::Shared(port) => {
                    use super::shared_port::{Routed, split};
                    match split(io, &port, deadline).await {
                        Routed::Http(io) => conn.drive(io, deadline).await,
                        Routed::Https(tls) => conn.drive(tls, deadline).await,
                        Routed::Turn | Routed::Closed => {}
                    }
                }
            }
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        while conns.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

/// HTTP/2 carries the host in the `:authority` pseudo-header, which hyper puts in the URI, not
/// in a `Host` header: copy it there, so the origin check and the ICE host read one place
/// (without it every Socket.IO request of a browser on HTTPS/2 was refused as cross-origin).
fn host_from_authority(req: &mut axum::extract::Request) {
    use axum::http::header::HOST;
    if req.headers().contains_key(HOST) {
        return;
    }
    let Some(v) = req
        .uri()
        .authority()
        .and_then(|a| axum::http::HeaderValue::from_str(a.as_str()).ok())
    else {
        return;
    };
    req.headers_mut().insert(HOST, v);
}

/// One connection's settings while hyper serves it.
struct Conn {
    app: axum::Router,
    peer: SocketAddr,
    limits: HttpLimits,
    activity: Arc<Activity>,
    stop: tokio::sync::watch::Receiver<bool>,
}

impl Conn {
    /// Serve HTTP/1.1 or HTTP/2 on `io` until it closes, upgrades, or breaks a deadline.
    async fn drive<S>(mut self, io: S, first_deadline: tokio::time::Instant)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
        use hyper_util::service::TowerToHyperService;
        let seen = RequestSeen::default();
        let mark = seen.clone();
        let app = self
            .app
            .layer(axum::Extension(axum::extract::ConnectInfo(self.peer)))
            .layer(axum::middleware::from_fn(
                move |mut req: axum::extract::Request, next: axum::middleware::Next| {
                    mark.mark();
                    host_from_authority(&mut req);
                    next.run(req)
                },
            ));
        let mut builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(self.limits.first_request)
            .max_buf_size(self.limits.max_header_bytes.max(8192));
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_header_list_size(u32::try_from(self.limits.max_header_bytes).unwrap_or(u32::MAX));
        let conn =
            builder.serve_connection_with_upgrades(TokioIo::new(io), TowerToHyperService::new(app));
        tokio::pin!(conn);
        let mut stopping = false;
        let check =
            (self.limits.first_request.min(self.limits.idle) / 4).max(Duration::from_millis(50));
        let mut tick = tokio::time::interval(check);
        loop {
            tokio::select! {
                _ = conn.as_mut() => return,
                _ = self.stop.changed(), if !stopping => {
                    stopping = true;
                    conn.as_mut().graceful_shutdown();
                }
                _ = tick.tick() => {
                    let now = Instant::now();
                    if !seen.seen() && tokio::time::Instant::now() >= first_deadline {
                        tracing::debug!(client = %self.peer, "HTTP connection closed: no complete request in time");
                        return;
                    }
                    if now.duration_since(self.activity.last_read()) >= self.limits.idle {
                        tracing::debug!(client = %self.peer, "HTTP connection closed: idle");
                        return;
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_caps_per_ip_and_in_total_and_returns_slots_on_drop() {
        let gate = ConnGate::with_cap(2, 3);
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let s1 = gate.admit(a).unwrap();
        let _s2 = gate.admit(a).unwrap();
        assert_eq!(gate.admit(a).unwrap_err(), Refused::PerIp);
        let _s3 = gate.admit(b).unwrap();
        assert_eq!(gate.admit(b).unwrap_err(), Refused::Global);
        assert_eq!(gate.open(), 3);
        drop(s1);
        assert_eq!(gate.open(), 2);
        let _s4 = gate.admit(a).expect("a slot came back");
        assert_eq!(gate.refused(), 2);
    }

    #[test]
    fn raising_the_descriptor_limit_reaches_the_hard_limit() {
        use nix::sys::resource::{Resource, getrlimit};
        let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
        assert_eq!(raise_nofile_limit().unwrap(), hard);
        assert_eq!(getrlimit(Resource::RLIMIT_NOFILE).unwrap(), (hard, hard));
    }

    #[test]
    fn the_global_cap_leaves_most_descriptors_for_relaying() {
        let soft = descriptor_limit().expect("RLIMIT_NOFILE readable");
        let gate = ConnGate::new(&HttpLimits {
            max_connections: usize::MAX,
            ..HttpLimits::default()
        });
        assert!(
            gate.cap() as u64 <= (soft / 4).max(16),
            "{} of {soft}",
            gate.cap()
        );
    }
}
