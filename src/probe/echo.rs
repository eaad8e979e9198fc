//! A UDP echo peer (what turnutils_peer does): every datagram goes back to its sender.

use crate::udp::{Pool, SLOTS, Tx, TxSock};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

/// A UDP socket for echoing: IPv6-only for IPv6 addresses, 4 MiB buffers (blocking).
pub(crate) fn bind_echo_socket(a: SocketAddr) -> std::io::Result<UdpSocket> {
    let s = socket2::Socket::new(
        socket2::Domain::for_address(a),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    if a.is_ipv6() {
        s.set_only_v6(true)?;
    }
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.bind(&a.into())?;
    Ok(s.into())
}

/// Echo whatever is queued on `fd` (non-blocking) back to its senders, batched: recvmmsg,
/// then sendmmsg/GSO per sender. Returns the datagrams echoed.
pub(crate) fn echo_pending(pool: &mut Pool, fd: std::os::fd::RawFd, v6: bool) -> usize {
    let mut total = 0;
    loop {
        pool.reset();
        let Ok(n) = pool.recv(fd, v6, 0, SLOTS) else {
            break;
        };
        queue_echoes(pool, n);
        pool.send_group(fd, 0..n, true);
        pool.reset();
        total += n;
        if n < SLOTS {
            break;
        }
    }
    total
}

/// Queue the `n` datagrams just received back to their sources, sorted for sending.
fn queue_echoes(pool: &mut Pool, n: usize) {
    for i in 0..n {
        let m = pool.meta[i];
        pool.tx.push(Tx {
            sock: TxSock::Listener(0),
            slot: i,
            start: 0,
            end: m.len,
            dest: m.src,
        });
    }
    pool.sorted_tx();
}

/// Running echo sockets; stopped when dropped.
#[derive(Debug)]
pub struct EchoPeer {
    addrs: Vec<SocketAddr>,
    stop: Arc<AtomicBool>,
    echoed: Arc<AtomicU64>,
    threads: Vec<JoinHandle<()>>,
}

impl EchoPeer {
    /// Bind each address (port 0 picks one) and echo on a thread per socket.
    pub fn start(addrs: &[SocketAddr]) -> std::io::Result<Self> {
        let stop = Arc::new(AtomicBool::new(false));
        let echoed = Arc::new(AtomicU64::new(0));
        let mut bound = Vec::new();
        let mut threads = Vec::new();
        for &a in addrs {
            let sock = bind_echo_socket(a)?;
            sock.set_read_timeout(Some(Duration::from_millis(100)))?;
            bound.push(sock.local_addr()?);
            let stop = stop.clone();
            let echoed = echoed.clone();
            threads.push(
                std::thread::Builder::new()
                    .name("natpass-echo".into())
                    .spawn(move || {
                        // Batched like the server (recvmmsg, then sendmmsg/GSO back), so the
                        // load generator's peers are not what limits a benchmark.
                        let mut pool = Pool::new();
                        let fd = sock.as_raw_fd();
                        let v6 = a.is_ipv6();
                        while !stop.load(Ordering::Relaxed) {
                            let Ok(n) = pool.recv_wait(fd, v6) else {
                                continue;
                            };
                            queue_echoes(&mut pool, n);
                            pool.send_group(fd, 0..n, true);
                            pool.reset();
                            echoed.fetch_add(n as u64, Ordering::Relaxed);
                        }
                    })?,
            );
        }
        Ok(Self {
            addrs: bound,
            stop,
            echoed,
            threads,
        })
    }

    /// The bound addresses.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Datagrams echoed so far.
    pub fn echoed(&self) -> u64 {
        self.echoed.load(Ordering::Relaxed)
    }

    /// Block until the process is stopped (for `natpass peer`).
    pub fn wait(mut self) {
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for EchoPeer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
