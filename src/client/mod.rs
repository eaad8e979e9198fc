//! A small blocking STUN/TURN client for the probes (and tests): Binding with RFC 8489
//! retransmission, and the TURN requests with the long-term credential dance (401/438 → retry
//! with REALM/NONCE). Works over UDP and TCP (RFC 8656 stream framing).

use crate::auth::long_term_key;
use crate::proto::channel_data::{self, ChannelData, ChannelNumber};
use crate::proto::framing;
use crate::proto::integrity::{self, Algo};
use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};
use stun_types::attribute::{ErrorCode, Nonce, Realm, Username, XorMappedAddress};
use stun_types::message::{
    BINDING, Message, MessageClass, MessageType, MessageWrite, MessageWriteExt, MessageWriteVec,
    Method, TransactionId,
};
use turn_types::attribute::{
    ChannelNumber as ChannelNumberAttr, Data, Lifetime, RequestedAddressFamily, RequestedTransport,
    XorPeerAddress, XorRelayedAddress,
};
use turn_types::message::{ALLOCATE, CHANNEL_BIND, CREATE_PERMISSION, DATA, REFRESH, SEND};

/// A client-side failure, phrased for operators.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No answer at all.
    #[error("no response from {server} after {tries} tries ({:.1} s): is the server up and the port open?", .waited.as_secs_f64())]
    Timeout {
        /// Server.
        server: SocketAddr,
        /// Requests sent.
        tries: u32,
        /// Time waited.
        waited: Duration,
    },
    /// Socket error.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// An error response.
    #[error("{method} failed: {code} {reason} ({hint})")]
    Stun {
        /// Request method name.
        method: &'static str,
        /// STUN error code.
        code: u16,
        /// Reason phrase sent by the server.
        reason: String,
        /// What the code usually means here ([`explain`], or a sharper reading of a 401 to a
        /// REST credential).
        hint: String,
    },
    /// A response we cannot use.
    #[error("protocol error: {0}")]
    Protocol(String),
    /// A failure whose cause is known, with what to do about it (one line).
    #[error("{0}")]
    Advice(String),
    /// SIGINT or SIGTERM arrived; what was allocated has been released.
    #[error("interrupted (what was allocated has been released)")]
    Interrupted,
}

/// The standard reason phrase of a STUN/TURN error code (RFC 8489 §14.8, RFC 8656 §19,
/// RFC 6062 §6.3), printed when a server sends none (natpass keeps its 401 challenge minimal).
pub fn code_name(code: u16) -> &'static str {
    match code {
        300 => "Try Alternate",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        405 => "Mobility Forbidden",
        420 => "Unknown Attribute",
        437 => "Allocation Mismatch",
        438 => "Stale Nonce",
        440 => "Address Family not Supported",
        441 => "Wrong Credentials",
        442 => "Unsupported Transport Protocol",
        443 => "Peer Address Family Mismatch",
        446 => "Connection Already Exists",
        447 => "Connection Timeout or Failure",
        486 => "Allocation Quota Reached",
        487 => "Role Conflict",
        500 => "Server Error",
        508 => "Insufficient Capacity",
        _ => "Error",
    }
}

/// What a STUN/TURN error code usually means, for humans.
pub fn explain(code: u16) -> &'static str {
    match code {
        300 => "try the alternate server it names",
        400 => "the server found the request malformed",
        401 => "wrong username/password, wrong realm, or an expired REST credential",
        403 => "the peer address is denied by the server's policy",
        420 => "the server does not understand an attribute we sent",
        437 => "allocation mismatch: no allocation on this 5-tuple, or one exists already",
        438 => "stale nonce: the server wants a fresh one",
        440 => "the server has no relay address of that family",
        441 => "wrong credentials for this allocation",
        442 => "the server does not relay that transport",
        443 => "peer address family does not match the allocation",
        486 => "allocation quota reached (per user, per IP or server-wide)",
        500 => "server error",
        508 => "insufficient capacity: no relay port free, or too many permissions/channels",
        _ => "see RFC 8656 / RFC 8489",
    }
}

fn method_name(m: Method) -> &'static str {
    match m {
        BINDING => "Binding",
        ALLOCATE => "Allocate",
        REFRESH => "Refresh",
        CREATE_PERMISSION => "CreatePermission",
        CHANNEL_BIND => "ChannelBind",
        _ => "request",
    }
}

/// The transport to the server.
#[derive(Debug)]
enum Conn {
    Udp(UdpSocket),
    Tcp {
        stream: TcpStream,
        rbuf: Vec<u8>,
    },
    Tls {
        stream: Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>,
        rbuf: Vec<u8>,
    },
    /// Handed to another loop ([`Client::take_tls`]): closing it ends the allocation.
    Handed,
}

/// Something the server sent that is not a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// A Data indication.
    Data {
        /// The peer.
        peer: SocketAddr,
        /// The payload.
        data: Vec<u8>,
    },
    /// ChannelData.
    Channel {
        /// Channel number.
        channel: ChannelNumber,
        /// The payload.
        data: Vec<u8>,
    },
}

/// A successful response.
#[derive(Debug, Clone)]
pub struct Response {
    /// The message bytes.
    pub bytes: Vec<u8>,
    /// Who answered (UDP source address; the server for TCP).
    pub from: SocketAddr,
    /// Time from the last transmission to the answer.
    pub rtt: Duration,
    /// Requests sent (1 = no retransmission).
    pub tries: u32,
}

impl Response {
    /// Parse the response.
    pub fn message(&self) -> Message<'_> {
        Message::from_bytes(&self.bytes).expect("validated on receipt")
    }
    /// XOR-MAPPED-ADDRESS.
    pub fn mapped(&self) -> Option<SocketAddr> {
        let m = self.message();
        m.attribute::<XorMappedAddress>()
            .ok()
            .map(|a| a.addr(m.transaction_id()))
    }
}

/// A successful allocation.
#[derive(Debug, Clone)]
pub struct Allocation {
    /// Relayed transport addresses (two for a dual allocation).
    pub relayed: Vec<SocketAddr>,
    /// Our address as the server sees it.
    pub mapped: Option<SocketAddr>,
    /// Granted lifetime.
    pub lifetime: u32,
    /// Round-trip time of the successful Allocate.
    pub rtt: Duration,
}

/// Blocking STUN/TURN client.
#[derive(Debug)]
pub struct Client {
    conn: Conn,
    server: SocketAddr,
    user: Option<(String, String)>,
    realm: Option<String>,
    nonce: Option<String>,
    key: Option<[u8; 16]>,
    /// Initial retransmission timeout (UDP).
    pub rto: Duration,
    /// Transmissions per request (UDP).
    pub max_tries: u32,
    pending: VecDeque<Incoming>,
    buf: Vec<u8>,
    /// An allocation of ours is (probably) alive on the server: [`Client::release`] and the
    /// drop delete it.
    allocated: bool,
}

impl Client {
    /// A UDP client bound to `bind` (use an unspecified address of the server's family).
    pub fn udp(server: SocketAddr, bind: Option<SocketAddr>) -> std::io::Result<Self> {
        let bind = bind.unwrap_or(if server.is_ipv4() {
            "0.0.0.0:0".parse().expect("valid")
        } else {
            "[::]:0".parse().expect("valid")
        });
        let sock = UdpSocket::bind(bind)?;
        Ok(Self::with_conn(Conn::Udp(sock), server))
    }

    /// A TCP client.
    pub fn tcp(server: SocketAddr, timeout: Duration) -> std::io::Result<Self> {
        let stream = connect_tcp(server, timeout)?;
        stream.set_nodelay(true)?;
        Ok(Self::with_conn(
            Conn::Tcp {
                stream,
                rbuf: Vec::new(),
            },
            server,
        ))
    }

    /// A TLS client (`name` is the server name to verify; an IP address works too).
    pub fn tls(
        server: SocketAddr,
        name: &str,
        config: std::sync::Arc<rustls::ClientConfig>,
        timeout: Duration,
    ) -> Result<Self, ClientError> {
        let stream = connect_tcp(server, timeout)?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(timeout))?;
        let sni = rustls::pki_types::ServerName::try_from(name.to_owned())
            .map_err(|e| ClientError::Protocol(format!("TLS server name `{name}`: {e}")))?;
        let conn = rustls::ClientConnection::new(config, sni)
            .map_err(|e| ClientError::Protocol(format!("TLS: {e}")))?;
        let mut s = rustls::StreamOwned::new(conn, stream);
        // Complete the handshake now so certificate problems are reported as such.
        while s.conn.is_handshaking() {
            s.conn
                .complete_io(&mut s.sock)
                .map_err(|e| ClientError::Protocol(format!("TLS handshake with {server}: {e}")))?;
        }
        Ok(Self::with_conn(
            Conn::Tls {
                stream: Box::new(s),
                rbuf: Vec::new(),
            },
            server,
        ))
    }

    /// The TLS peer certificate chain (end entity first), for TLS clients.
    pub fn peer_certificates(&self) -> Option<Vec<Vec<u8>>> {
        match &self.conn {
            Conn::Tls { stream, .. } => stream
                .conn
                .peer_certificates()
                .map(|c| c.iter().map(|d| d.to_vec()).collect()),
            _ => None,
        }
    }

    fn with_conn(conn: Conn, server: SocketAddr) -> Self {
        Self {
            conn,
            server,
            user: None,
            realm: None,
            nonce: None,
            key: None,
            rto: Duration::from_millis(250),
            max_tries: 4,
            pending: VecDeque::new(),
            buf: vec![0; 65_536 + 4],
            allocated: false,
        }
    }

    /// Use these long-term credentials for TURN requests.
    pub fn set_credentials(&mut self, user: &str, password: &str) {
        self.user = Some((user.to_owned(), password.to_owned()));
    }

    /// The realm and nonce learnt from the server, to start another client signed right away
    /// (natpass binds nonces to the client IP, not the port).
    pub fn realm_nonce(&self) -> Option<(String, String)> {
        Some((self.realm.clone()?, self.nonce.clone()?))
    }

    /// Start with a known realm and nonce (after [`Client::set_credentials`]); a stale nonce
    /// is replaced by the usual 438 dance.
    pub fn set_realm_nonce(&mut self, realm: &str, nonce: &str) {
        if let Some((user, pass)) = &self.user {
            self.key = Some(long_term_key(user, realm, pass));
            self.realm = Some(realm.to_owned());
            self.nonce = Some(nonce.to_owned());
        }
    }

    /// The local socket address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        match &self.conn {
            Conn::Udp(s) => s.local_addr(),
            Conn::Tcp { stream, .. } => stream.local_addr(),
            Conn::Tls { stream, .. } => stream.sock.local_addr(),
            Conn::Handed => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    /// The UDP socket (None over TCP), e.g. to drive it from another loop.
    pub fn udp_socket(&self) -> Option<&UdpSocket> {
        match &self.conn {
            Conn::Udp(s) => Some(s),
            _ => None,
        }
    }

    /// The TCP stream (plain TCP only).
    pub fn tcp_stream(&self) -> Option<&TcpStream> {
        match &self.conn {
            Conn::Tcp { stream, .. } => Some(stream),
            _ => None,
        }
    }

    /// Take a TLS client's session, socket and unread plaintext to drive them from another
    /// loop (a TLS session cannot be shared). The client keeps nothing: dropping what was
    /// taken closes the connection, which ends its allocation.
    pub fn take_tls(&mut self) -> Option<(rustls::ClientConnection, TcpStream, Vec<u8>)> {
        if !matches!(self.conn, Conn::Tls { .. }) {
            return None;
        }
        match std::mem::replace(&mut self.conn, Conn::Handed) {
            Conn::Tls { stream, rbuf } => {
                self.allocated = false;
                let s = *stream;
                Some((s.conn, s.sock, rbuf))
            }
            _ => None,
        }
    }

    /// The server.
    pub fn server(&self) -> SocketAddr {
        self.server
    }

    fn send_raw(&mut self, data: &[u8]) -> std::io::Result<()> {
        match &mut self.conn {
            Conn::Udp(s) => s.send_to(data, self.server).map(|_| ()),
            Conn::Tcp { stream, .. } => stream.write_all(data),
            Conn::Tls { stream, .. } => {
                stream.write_all(data)?;
                stream.flush()
            }
            Conn::Handed => Err(std::io::ErrorKind::NotConnected.into()),
        }
    }

    /// Receive one frame until `deadline`: (bytes, from). None on timeout.
    fn recv_frame(
        &mut self,
        deadline: Instant,
    ) -> Result<Option<(Vec<u8>, SocketAddr)>, ClientError> {
        let server = self.server;
        match &mut self.conn {
            Conn::Udp(s) => loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Ok(None);
                }
                s.set_read_timeout(Some(left))?;
                match s.recv_from(&mut self.buf) {
                    Ok((n, from)) => return Ok(Some((self.buf[..n].to_vec(), from))),
                    Err(e) if is_timeout(&e) => return Ok(None),
                    // ICMP port unreachable surfaces as ECONNREFUSED on some stacks: keep waiting.
                    Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => continue,
                    Err(e) => return Err(e.into()),
                }
            },
            Conn::Tls { stream, rbuf } => {
                read_frame(stream.as_mut(), rbuf, &mut self.buf, deadline, server)
            }
            Conn::Tcp { stream, rbuf } => read_frame(stream, rbuf, &mut self.buf, deadline, server),
            Conn::Handed => Err(std::io::Error::from(std::io::ErrorKind::NotConnected).into()),
        }
    }

    /// Classify a non-response frame and queue it.
    fn stash(&mut self, frame: &[u8]) {
        if let Some(i) = parse_incoming(frame) {
            self.pending.push_back(i);
        }
    }

    /// Send `req` (already built) and wait for the response with its transaction id.
    pub fn transact(&mut self, req: &[u8]) -> Result<Response, ClientError> {
        let txid = &req[8..20];
        let udp = matches!(self.conn, Conn::Udp(_));
        let tries = if udp { self.max_tries.max(1) } else { 1 };
        let started = Instant::now();
        let mut rto = if udp {
            self.rto
        } else {
            Duration::from_secs(10)
        };
        for attempt in 1..=tries {
            let sent = Instant::now();
            self.send_raw(req)?;
            // The last transmission waits longer (RFC 8489 §6.2.1: Rm × RTO).
            let wait = if attempt == tries && udp {
                rto * 2
            } else {
                rto
            };
            let deadline = sent + wait;
            while let Some((frame, from)) = self.recv_frame(deadline)? {
                if frame.len() >= 20 && frame[0] >> 6 == 0 && &frame[8..20] == txid {
                    let Ok(m) = Message::from_bytes(&frame) else {
                        continue;
                    };
                    if !m.is_response() {
                        continue;
                    }
                    return Ok(Response {
                        rtt: sent.elapsed(),
                        bytes: frame,
                        from,
                        tries: attempt,
                    });
                }
                self.stash(&frame);
            }
            rto *= 2;
        }
        Err(ClientError::Timeout {
            server: self.server,
            tries,
            waited: started.elapsed(),
        })
    }

    /// A Binding request (RFC 8489 §6.2.1 retransmission over UDP).
    pub fn binding(&mut self) -> Result<Response, ClientError> {
        let req = build(MessageClass::Request, BINDING, |w, _| {
            let _ = w.add_fingerprint();
        });
        let r = self.transact(&req)?;
        check(&r, "Binding", None)?;
        Ok(r)
    }

    /// A TURN request with long-term credentials: on 401/438 the realm and nonce are taken
    /// from the answer and the request is sent again (at most twice).
    pub fn request(
        &mut self,
        method: Method,
        attrs: impl Fn(&mut MessageWriteVec, TransactionId),
    ) -> Result<Response, ClientError> {
        let mut last = None;
        let mut retried = false;
        for _ in 0..3 {
            let req = build(MessageClass::Request, method, |w, txid| {
                attrs(w, txid);
                if let (Some((user, _)), Some(realm), Some(nonce), Some(key)) =
                    (&self.user, &self.realm, &self.nonce, &self.key)
                {
                    if let (Ok(u), Ok(r), Ok(n)) =
                        (Username::new(user), Realm::new(realm), Nonce::new(nonce))
                    {
                        let _ = w.add_attribute(&u);
                        let _ = w.add_attribute(&r);
                        let _ = w.add_attribute(&n);
                        integrity::sign(w, Algo::Sha1, key);
                    }
                }
                let _ = w.add_fingerprint();
            });
            let r = self.transact(&req)?;
            let m = r.message();
            if m.has_class(MessageClass::Error) {
                let code = m.attribute::<ErrorCode>().map(|e| e.code()).unwrap_or(0);
                // A 401 to a request signed after a challenge means the credentials are wrong.
                if (code == 401 && !retried) || code == 438 {
                    let realm = m.attribute::<Realm>().ok().map(|r| r.realm().to_owned());
                    let nonce = m.attribute::<Nonce>().ok().map(|n| n.nonce().to_owned());
                    if let (Some(realm), Some(nonce), Some((user, pass))) =
                        (realm, nonce, &self.user)
                    {
                        self.key = Some(long_term_key(user, &realm, pass));
                        self.realm = Some(realm);
                        self.nonce = Some(nonce);
                        retried = true;
                        last = Some(r);
                        continue;
                    }
                }
            }
            last = Some(r);
            break;
        }
        let r = last.ok_or_else(|| ClientError::Protocol("no response".into()))?;
        check(
            &r,
            method_name(method),
            self.user.as_ref().map(|(u, _)| u.as_str()),
        )?;
        Ok(r)
    }

    /// Allocate a UDP relay (`family` 6 asks for IPv6).
    pub fn allocate(
        &mut self,
        family: Option<u8>,
        lifetime: Option<u32>,
    ) -> Result<Allocation, ClientError> {
        let r = self.request(ALLOCATE, |w, _| {
            let _ = w.add_attribute(&RequestedTransport::new(RequestedTransport::UDP));
            if family == Some(6) {
                let _ = w.add_attribute(&RequestedAddressFamily::new(
                    stun_types::AddressFamily::IPV6,
                ));
            }
            if let Some(l) = lifetime {
                let _ = w.add_attribute(&Lifetime::new(l));
            }
        })?;
        let m = r.message();
        let txid = m.transaction_id();
        let relayed: Vec<SocketAddr> = (0..2)
            .filter_map(|n| m.nth_attribute::<XorRelayedAddress>(n).ok())
            .map(|a| a.addr(txid))
            .collect();
        self.allocated = true;
        if relayed.is_empty() {
            return Err(ClientError::Protocol(
                "Allocate success without XOR-RELAYED-ADDRESS".into(),
            ));
        }
        Ok(Allocation {
            relayed,
            mapped: m.attribute::<XorMappedAddress>().ok().map(|a| a.addr(txid)),
            lifetime: m.attribute::<Lifetime>().map(|l| l.seconds()).unwrap_or(0),
            rtt: r.rtt,
        })
    }

    /// Refresh; 0 deletes the allocation.
    pub fn refresh(&mut self, lifetime: u32) -> Result<u32, ClientError> {
        let r = self.request(REFRESH, |w, _| {
            let _ = w.add_attribute(&Lifetime::new(lifetime));
        });
        if lifetime == 0 && matches!(r, Ok(_) | Err(ClientError::Stun { code: 437, .. })) {
            self.allocated = false;
        }
        let r = r?;
        Ok(r.message()
            .attribute::<Lifetime>()
            .map(|l| l.seconds())
            .unwrap_or(0))
    }

    /// Whether an allocation made by this client may still be alive on the server.
    pub fn has_allocation(&self) -> bool {
        self.allocated
    }

    /// Delete our allocation (Refresh with LIFETIME 0), if there is one, with a short
    /// retransmission budget; true when the server confirmed it (or none was left). Dropping
    /// the client does the same, so a probe that fails part-way leaves nothing allocated.
    pub fn release(&mut self) -> bool {
        if !self.allocated {
            return true;
        }
        self.max_tries = self.max_tries.min(2);
        // A caller may have shared the socket with an event loop that made it non-blocking.
        if let Some(s) = self.udp_socket() {
            let _ = s.set_nonblocking(false);
        }
        if let Some(s) = self.tcp_stream() {
            let _ = s.set_nonblocking(false);
        }
        let ok = self.refresh(0).is_ok();
        // Whatever the answer, one attempt is all a client makes: a server that does not
        // answer will expire the allocation itself.
        self.allocated = false;
        ok
    }

    /// CreatePermission for these peers.
    pub fn create_permission(&mut self, peers: &[SocketAddr]) -> Result<(), ClientError> {
        self.request(CREATE_PERMISSION, |w, txid| {
            for p in peers {
                let _ = w.add_attribute(&XorPeerAddress::new(*p, txid));
            }
        })
        .map(|_| ())
    }

    /// ChannelBind.
    pub fn channel_bind(
        &mut self,
        channel: ChannelNumber,
        peer: SocketAddr,
    ) -> Result<(), ClientError> {
        self.request(CHANNEL_BIND, |w, txid| {
            let _ = w.add_attribute(&ChannelNumberAttr::new(channel.get()));
            let _ = w.add_attribute(&XorPeerAddress::new(peer, txid));
        })
        .map(|_| ())
    }

    /// Send indication.
    pub fn send_indication(&mut self, peer: SocketAddr, data: &[u8]) -> Result<(), ClientError> {
        let ind = send_indication_bytes(peer, data);
        self.send_raw(&ind)?;
        Ok(())
    }

    /// ChannelData (padded on streams).
    pub fn send_channel(&mut self, channel: ChannelNumber, data: &[u8]) -> Result<(), ClientError> {
        let stream = !matches!(self.conn, Conn::Udp(_));
        let frame = channel_data_bytes(channel, data, stream);
        self.send_raw(&frame)?;
        Ok(())
    }

    /// Next Data indication or ChannelData until `deadline`.
    pub fn recv_data(&mut self, deadline: Instant) -> Result<Option<Incoming>, ClientError> {
        if let Some(i) = self.pending.pop_front() {
            return Ok(Some(i));
        }
        while let Some((frame, _)) = self.recv_frame(deadline)? {
            if let Some(i) = parse_incoming(&frame) {
                return Ok(Some(i));
            }
        }
        Ok(None)
    }
}

/// A byte stream whose underlying TCP socket takes a read timeout.
trait TimedRead: Read {
    fn set_timeout(&self, d: Duration) -> std::io::Result<()>;
}

impl TimedRead for TcpStream {
    fn set_timeout(&self, d: Duration) -> std::io::Result<()> {
        self.set_read_timeout(Some(d))
    }
}

impl TimedRead for rustls::StreamOwned<rustls::ClientConnection, TcpStream> {
    fn set_timeout(&self, d: Duration) -> std::io::Result<()> {
        self.sock.set_read_timeout(Some(d))
    }
}

/// Read one frame from a byte stream (plain or TLS) into `rbuf` until `deadline`.
fn read_frame(
    stream: &mut dyn TimedRead,
    rbuf: &mut Vec<u8>,
    buf: &mut [u8],
    deadline: Instant,
    server: SocketAddr,
) -> Result<Option<(Vec<u8>, SocketAddr)>, ClientError> {
    loop {
        match framing::frame_len(rbuf) {
            Err(e) => return Err(ClientError::Protocol(format!("stream: {e}"))),
            Ok(Some(n)) if rbuf.len() >= n => {
                let frame: Vec<u8> = rbuf.drain(..n).collect();
                return Ok(Some((frame, server)));
            }
            _ => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        stream.set_timeout(left)?;
        match stream.read(buf) {
            Ok(0) => return Err(ClientError::Protocol("server closed the connection".into())),
            Ok(n) => rbuf.extend_from_slice(&buf[..n]),
            Err(e) if is_timeout(&e) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

/// A read that ran into its deadline (blocking sockets report either kind).
fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Build a message with a random transaction id.
pub fn build(
    class: MessageClass,
    method: Method,
    f: impl FnOnce(&mut MessageWriteVec, TransactionId),
) -> Vec<u8> {
    let txid = TransactionId::generate();
    let mut w = Message::builder(
        MessageType::from_class_method(class, method),
        txid,
        MessageWriteVec::with_capacity(128),
    );
    f(&mut w, txid);
    w.finish()
}

/// A Send indication.
pub fn send_indication_bytes(peer: SocketAddr, data: &[u8]) -> Vec<u8> {
    build(MessageClass::Indication, SEND, |w, txid| {
        let _ = w.add_attribute(&XorPeerAddress::new(peer, txid));
        let _ = w.add_attribute(&Data::new(data));
    })
}

/// A ChannelData frame (`padded` for streams).
pub fn channel_data_bytes(channel: ChannelNumber, data: &[u8], padded: bool) -> Vec<u8> {
    channel_data::encode(channel, data, padded)
}

/// Parse a Data indication or ChannelData frame.
pub fn parse_incoming(frame: &[u8]) -> Option<Incoming> {
    match frame.first()? >> 6 {
        1 => {
            let cd = ChannelData::parse(frame).ok()?;
            Some(Incoming::Channel {
                channel: cd.channel,
                data: cd.payload.to_vec(),
            })
        }
        0 => {
            let m = Message::from_bytes(frame).ok()?;
            if !(m.has_class(MessageClass::Indication) && m.has_method(DATA)) {
                return None;
            }
            let peer = m
                .attribute::<XorPeerAddress>()
                .ok()?
                .addr(m.transaction_id());
            let data = m.attribute::<Data>().ok()?.data().to_vec();
            Some(Incoming::Data { peer, data })
        }
        _ => None,
    }
}

/// A TCP connection whose failure names the address ("connection refused" alone does not say
/// which server refused).
fn connect_tcp(server: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    TcpStream::connect_timeout(&server, timeout)
        .map_err(|e| std::io::Error::new(e.kind(), format!("TCP connection to {server}: {e}")))
}

impl Drop for Client {
    fn drop(&mut self) {
        self.release();
    }
}

fn check(r: &Response, method: &'static str, user: Option<&str>) -> Result<(), ClientError> {
    let m = r.message();
    if m.has_class(MessageClass::Error) {
        let (code, reason) = m
            .attribute::<ErrorCode>()
            .map(|e| (e.code(), e.reason().trim().to_owned()))
            .unwrap_or((0, "error response without ERROR-CODE".into()));
        let reason = if reason.is_empty() {
            code_name(code).to_owned()
        } else {
            reason
        };
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        return Err(ClientError::Stun {
            method,
            code,
            reason,
            hint: hint(code, user, now),
        });
    }
    Ok(())
}

/// [`explain`], except that a 401 to a TURN REST username (`EXPIRY:NAME`) says which of its
/// failures it most likely is: expired, too far in the future, or the wrong secret.
pub fn hint(code: u16, user: Option<&str>, unix_now: u64) -> String {
    let expiry = user
        .and_then(|u| u.split_once(':'))
        .and_then(|(e, _)| e.parse::<u64>().ok());
    match (code, expiry) {
        (401, Some(expiry)) if expiry <= unix_now => format!(
            "the REST credential expired {} s ago: mint a fresh one",
            unix_now - expiry
        ),
        (401, Some(expiry)) => format!(
            "the REST credential is valid for {} s more: either the server's shared secret or \
             realm differs, or the credential is too far in the future for its limit (natpass: \
             rest-max-ttl, {} s by default)",
            expiry - unix_now,
            crate::config::defaults::REST_MAX_TTL
        ),
        _ => explain(code).to_owned(),
    }
}
