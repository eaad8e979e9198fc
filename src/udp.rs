//! Batched UDP I/O, in quinn-udp's spirit, for the shard loop and the probes' load generator
//! and echo peers: `recvmmsg` into a pool of slots, `sendmmsg` per destination socket, UDP GSO
//! for runs of equal-sized datagrams to one destination (fewer wake-ups and syscalls per
//! datagram).
//!
//! A shard owns one [`Pool`]: `SLOTS` buffers of `SLOT` bytes (2 MiB of address space; only
//! the pages datagrams touch become resident). Datagrams are received into free slots, handed
//! to the core in place, and what goes out (a ChannelData header written in front of a peer
//! datagram, or a client's payload forwarded to a peer) is queued as a [`Tx`] pointing into its
//! slot. The queue is flushed when the pool is full and at the end of every loop iteration,
//! grouped per socket so one `sendmmsg` carries every datagram for that socket.
//!
//! Draining: a `recvmmsg` that returns fewer datagrams than asked for found the receive queue
//! empty, so no extra `EAGAIN` read is needed; a datagram arriving afterwards raises a new
//! edge-triggered readiness event (epoll signals every arrival on a socket).
//!
//! nix's safe wrappers are used (no `unsafe` here). One quirk: `recvmmsg` does not reset
//! `msg_namelen` between calls, so each address family keeps its own headers (a socket only
//! ever reports addresses of its own family, so the length the kernel wrote back stays right).

use nix::errno::Errno;
use nix::sys::socket::{
    ControlMessage, MsgFlags, MultiHeaders, SockaddrStorage, recvmmsg, sendmmsg,
};
use std::io::{self, IoSlice, IoSliceMut};
use std::net::SocketAddr;
use std::os::fd::RawFd;

/// Slots in a shard's pool: at most this many datagrams per `recvmmsg`/`sendmmsg`.
pub(crate) const SLOTS: usize = 32;
/// One slot: the largest UDP payload plus room for a ChannelData header in front (peer
/// datagrams land at [`PEER_OFFSET`]) and stream padding behind.
pub(crate) const SLOT: usize = 65_536 + 8;
/// Where peer datagrams are received in their slot, so a ChannelData header fits in front.
pub(crate) const PEER_OFFSET: usize = 4;
/// The largest datagram sent as part of a GSO bundle: above it a segment may exceed the path
/// MTU, which the kernel refuses for GSO (it would fragment a single datagram instead).
const GSO_MAX_SEGMENT: usize = 1400;
/// Bytes in one GSO send (the kernel's limit is 64 KiB minus headers).
const GSO_MAX_BYTES: usize = 60_000;

/// Which socket a queued datagram leaves from.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub(crate) enum TxSock {
    /// A UDP listener, by index.
    Listener(usize),
    /// A relay socket: slab key and the generation it was bound with, so a datagram queued
    /// for an allocation freed (and its key reused) later in the same batch is dropped rather
    /// than sent from someone else's relay address.
    Relay { key: usize, generation: u64 },
}

/// A queued datagram: `pool[slot][start..end]` to `dest` from `sock`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tx {
    pub sock: TxSock,
    pub slot: usize,
    pub start: usize,
    pub end: usize,
    pub dest: SocketAddr,
}

/// What one receive step gave (see [`Pool::next_batch`]).
pub(crate) enum Batch {
    /// `n` datagrams in slots `first..first + n`, metadata in `meta[..n]`; `drained` when the
    /// socket's queue was empty before the pool was (no further read is needed).
    Got {
        first: usize,
        n: usize,
        drained: bool,
    },
    /// Nothing queued.
    Empty,
    /// A socket error (on UDP: an ICMP error reported by the kernel); read on.
    Failed,
}

impl Batch {
    /// `(first, n, drained)` to process, or None when the socket is empty. A failed read is an
    /// empty batch that is not drained, so the caller reads on (and counts it against its
    /// budget: `n.max(1)`).
    pub(crate) fn ready(self) -> Option<(usize, usize, bool)> {
        match self {
            Batch::Got { first, n, drained } => Some((first, n, drained)),
            Batch::Empty => None,
            Batch::Failed => Some((0, 0, false)),
        }
    }
}

/// Per received datagram: length and source.
#[derive(Clone, Copy)]
pub(crate) struct RxMeta {
    pub len: usize,
    pub src: SocketAddr,
    /// A coalesced receive (UDP_GRO): the datagrams are `seg` bytes each, the last one up to
    /// that; 0 when the buffer is one datagram.
    pub seg: usize,
}

impl RxMeta {
    /// Each datagram of this receive as a range of its slot (from `offset`).
    pub(crate) fn datagrams(&self, offset: usize) -> impl Iterator<Item = std::ops::Range<usize>> {
        let (len, seg) = (
            self.len,
            if self.seg == 0 {
                self.len.max(1)
            } else {
                self.seg
            },
        );
        (0..len.max(1))
            .step_by(seg)
            .map(move |at| offset + at..offset + (at + seg).min(len))
    }
}

pub(crate) struct Pool {
    mem: Box<[u8]>,
    /// Slots `0..used` hold queued or already handled datagrams.
    used: usize,
    pub tx: Vec<Tx>,
    rx_v4: MultiHeaders<SockaddrStorage>,
    rx_v6: MultiHeaders<SockaddrStorage>,
    tx_hdrs: MultiHeaders<SockaddrStorage>,
    /// Headers with room for the UDP_SEGMENT control message (kept apart: a header with an
    /// empty control buffer would make the kernel reject a plain send).
    tx_gso: MultiHeaders<SockaddrStorage>,
    pub meta: [RxMeta; SLOTS],
    /// quinn-udp's receive metadata (GRO receives), turned into `meta`.
    rx_gro: [quinn_udp::RecvMeta; SLOTS],
}

impl Pool {
    pub(crate) fn new() -> Self {
        let unspecified = RxMeta {
            len: 0,
            src: SocketAddr::from(([0, 0, 0, 0], 0)),
            seg: 0,
        };
        Self {
            // Zeroed allocation: pages become resident only when a datagram touches them.
            mem: vec![0u8; SLOTS * SLOT].into_boxed_slice(),
            used: 0,
            tx: Vec::with_capacity(SLOTS),
            rx_v4: MultiHeaders::preallocate(SLOTS, None),
            rx_v6: MultiHeaders::preallocate(SLOTS, None),
            tx_hdrs: MultiHeaders::preallocate(SLOTS, None),
            tx_gso: MultiHeaders::preallocate(SLOTS, Some(nix::cmsg_space!(u16))),
            meta: [unspecified; SLOTS],
            rx_gro: [quinn_udp::RecvMeta::default(); SLOTS],
        }
    }

    /// Copy `data` into the next free slot (to queue it in [`Pool::tx`]): None when no slot is
    /// free or it does not fit one.
    pub(crate) fn stage(&mut self, data: &[u8]) -> Option<usize> {
        if self.used == SLOTS || data.len() > SLOT {
            return None;
        }
        let slot = self.used;
        self.mem[slot * SLOT..slot * SLOT + data.len()].copy_from_slice(data);
        self.used += 1;
        Some(slot)
    }

    /// Free slots left before a flush is needed.
    pub(crate) fn free(&self) -> usize {
        SLOTS - self.used
    }

    pub(crate) fn slot(&self, i: usize) -> &[u8] {
        &self.mem[i * SLOT..(i + 1) * SLOT]
    }

    pub(crate) fn slot_mut(&mut self, i: usize) -> &mut [u8] {
        &mut self.mem[i * SLOT..(i + 1) * SLOT]
    }

    /// Receive up to `max` datagrams (bounded by the free slots) from `fd`, each at `offset`
    /// in its slot. Their metadata is in `meta[..n]`, their slots the next n free ones
    /// ([`Pool::next_batch`] says which). Returns n ≥ 1, or `WouldBlock`.
    pub(crate) fn recv(
        &mut self,
        fd: RawFd,
        v6: bool,
        offset: usize,
        max: usize,
    ) -> io::Result<usize> {
        self.recv_with(fd, v6, offset, max, MsgFlags::MSG_DONTWAIT)
    }

    /// One receive step of a drain loop: into every free slot (the pool must have one).
    pub(crate) fn next_batch(&mut self, fd: RawFd, v6: bool, offset: usize) -> Batch {
        let want = self.free();
        let got = self.recv(fd, v6, offset, want);
        self.batch(want, got)
    }

    /// [`Pool::next_batch`] on a socket with UDP_GRO on (`gro`, which turned it on): a
    /// receive may be several datagrams of one sender, their segment size in
    /// [`RxMeta::seg`]. quinn-udp's receive gives each call fresh headers on the stack, so
    /// the segment size is never lost after a receive without one (which nix's reused
    /// headers do: the kernel shrinks their control length) and nothing is allocated.
    pub(crate) fn next_batch_gro(
        &mut self,
        gro: &quinn_udp::UdpSocketState,
        sock: &impl std::os::fd::AsFd,
        offset: usize,
    ) -> Batch {
        let want = self.free();
        let got = self.recv_gro(gro, sock, offset, want);
        self.batch(want, got)
    }

    fn batch(&self, want: usize, got: io::Result<usize>) -> Batch {
        match got {
            Ok(n) => Batch::Got {
                first: self.used - n,
                n,
                drained: n < want,
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Batch::Empty,
            Err(_) => Batch::Failed,
        }
    }

    /// [`Pool::recv`] on a blocking socket: waits (up to the socket's receive timeout) for the
    /// first datagram, then takes what else is queued.
    pub(crate) fn recv_wait(&mut self, fd: RawFd, v6: bool) -> io::Result<usize> {
        self.recv_with(fd, v6, 0, SLOTS, MsgFlags::MSG_WAITFORONE)
    }

    fn recv_gro(
        &mut self,
        gro: &quinn_udp::UdpSocketState,
        sock: &impl std::os::fd::AsFd,
        offset: usize,
        max: usize,
    ) -> io::Result<usize> {
        let first = self.used;
        let k = max.min(SLOTS - first);
        if k == 0 {
            return Ok(0);
        }
        let mut iovs = slot_iovs(&mut self.mem, first, k, offset);
        let n = gro.recv(sock.into(), &mut iovs[..k], &mut self.rx_gro[..k])?;
        for (m, q) in self.meta.iter_mut().zip(&self.rx_gro[..n]) {
            *m = RxMeta {
                len: q.len,
                seg: if q.stride > 0 && q.stride < q.len {
                    q.stride
                } else {
                    0
                },
                src: q.addr,
            };
        }
        self.used += n;
        Ok(n)
    }

    fn recv_with(
        &mut self,
        fd: RawFd,
        v6: bool,
        offset: usize,
        max: usize,
        flags: MsgFlags,
    ) -> io::Result<usize> {
        let first = self.used;
        let k = max.min(SLOTS - first);
        if k == 0 {
            return Ok(0);
        }
        // nix takes each message's buffers as a slice of its own.
        let mut iovs = slot_iovs(&mut self.mem, first, k, offset).map(|s| [s]);
        let hdrs = if v6 { &mut self.rx_v6 } else { &mut self.rx_v4 };
        let res = recvmmsg(fd, hdrs, iovs[..k].iter_mut(), flags, None).map_err(io::Error::from)?;
        let mut n = 0;
        for m in res {
            let src = m.address.as_ref().and_then(to_std);
            let seg = m.cmsgs().ok().and_then(|mut c| {
                c.find_map(|c| match c {
                    nix::sys::socket::ControlMessageOwned::UdpGroSegments(s) => {
                        usize::try_from(s).ok().filter(|s| *s > 0 && *s < m.bytes)
                    }
                    _ => None,
                })
            });
            self.meta[n] = RxMeta {
                len: m.bytes,
                seg: seg.unwrap_or(0),
                // A datagram without a usable source (never on a bound UDP socket) keeps
                // the unspecified address and is dropped by the core's policy.
                src: src.unwrap_or(SocketAddr::from(([0, 0, 0, 0], 0))),
            };
            n += 1;
        }
        self.used += n;
        Ok(n)
    }

    /// Sort the queue by socket, then destination (stable: a flow keeps its order), so each
    /// socket's datagrams are one run and each destination's a run within it.
    pub(crate) fn sorted_tx(&mut self) {
        self.tx.sort_by_key(|t| (t.sock, t.dest));
    }

    /// Send `self.tx[range]` (all for the same socket `fd`, sorted by destination) with as
    /// few syscalls as the kernel allows: a run of equal-sized datagrams to one destination
    /// goes out as one UDP GSO send when `gso` (the kernel splits it again, so the receiver
    /// sees the same datagrams), and consecutive sends of the same kind share one `sendmmsg`.
    /// Order is kept. A datagram the kernel refuses (an ICMP error pending, an address it
    /// cannot reach) is skipped; a full send buffer drops the rest, as UDP would.
    pub(crate) fn send_group(&mut self, fd: RawFd, range: std::ops::Range<usize>, gso: bool) {
        let base = range.start;
        // Plan: units (start, end, segment size; 0 = a single datagram), in order.
        let mut units = [(0usize, 0usize, 0u16); SLOTS];
        let mut n_units = 0;
        {
            let group = &self.tx[range];
            let len = |t: &Tx| t.end - t.start;
            let mut i = 0;
            while i < group.len() {
                let seg = len(&group[i]);
                let mut j = i + 1;
                if gso && seg <= GSO_MAX_SEGMENT {
                    let mut total = seg;
                    while j < group.len()
                        && group[j].dest == group[i].dest
                        && len(&group[j]) <= seg
                        && total + len(&group[j]) <= GSO_MAX_BYTES
                    {
                        total += len(&group[j]);
                        j += 1;
                        // Only the last segment of a GSO send may be shorter.
                        if len(&group[j - 1]) < seg {
                            break;
                        }
                    }
                }
                let seg = if j - i >= 2 { seg as u16 } else { 0 };
                units[n_units] = (base + i, base + j, seg);
                n_units += 1;
                i = j;
            }
        }
        // Consecutive units of the same kind go out together.
        let mut u = 0;
        while u < n_units {
            let seg = units[u].2;
            let mut v = u + 1;
            while v < n_units && units[v].2 == seg {
                v += 1;
            }
            let mut from = u;
            while from < v {
                let done = from + self.send_units(fd, &units[from..v], seg);
                if done >= v {
                    break;
                }
                // A GSO send refused as a whole (no GSO on the route, a segment above the
                // path MTU): its datagrams go out one by one, still in order.
                let (s, e, _) = units[done];
                let singles: [(usize, usize, u16); SLOTS] =
                    std::array::from_fn(|k| (s + k, s + k + 1, 0));
                self.send_units(fd, &singles[..e - s], 0);
                from = done + 1;
            }
            u = v;
        }
    }

    /// One `sendmmsg` (or `sendto` for a lone datagram) for `units`, all single datagrams
    /// (`seg` 0) or all GSO bundles of segment size `seg`. Returns how many units went out
    /// before a GSO refusal (`units.len()` when none).
    fn send_units(&mut self, fd: RawFd, units: &[(usize, usize, u16)], seg: u16) -> usize {
        let mem = &self.mem;
        let tx = &self.tx;
        let data = |t: &Tx| &mem[t.slot * SLOT + t.start..t.slot * SLOT + t.end];
        if let ([(s, _, _)], 0) = (units, seg) {
            let one = &tx[*s];
            let _ = nix::sys::socket::sendto(
                fd,
                data(one),
                &SockaddrStorage::from(one.dest),
                MsgFlags::MSG_DONTWAIT,
            );
            return 1;
        }
        // Segments of every unit, back to back; each message is its units' slice of them.
        let first = units.first().map_or(0, |u| u.0);
        let iovs: [IoSlice<'_>; SLOTS] =
            std::array::from_fn(|k| IoSlice::new(tx.get(first + k).map_or(&[][..], data)));
        let mut msgs: [&[IoSlice<'_>]; SLOTS] = [&[]; SLOTS];
        let mut addrs: [Option<SockaddrStorage>; SLOTS] = [None; SLOTS];
        for (k, &(s, e, _)) in units.iter().enumerate() {
            msgs[k] = &iovs[(s - first).min(SLOTS)..(e - first).min(SLOTS)];
            addrs[k] = Some(SockaddrStorage::from(tx[s].dest));
        }
        let n = units.len();
        let gso_cmsg = [ControlMessage::UdpGsoSegments(&seg)];
        // Plain sends use headers without a control buffer (an empty one makes the kernel
        // reject the send), GSO sends the ones with room for UDP_SEGMENT.
        let (hdrs, cmsgs): (_, &[ControlMessage<'_>]) = if seg == 0 {
            (&mut self.tx_hdrs, &[])
        } else {
            (&mut self.tx_gso, &gso_cmsg)
        };
        let mut start = 0;
        while start < n {
            let r = sendmmsg(
                fd,
                hdrs,
                msgs[start..n].iter(),
                &addrs[start..n],
                cmsgs,
                MsgFlags::MSG_DONTWAIT,
            )
            .map(|r| r.count());
            match r {
                Ok(0) | Err(Errno::EAGAIN) => break,
                Ok(sent) => start += sent,
                Err(Errno::EINTR) => {}
                Err(_) if seg != 0 => return start,
                Err(_) => start += 1,
            }
        }
        n
    }

    /// Everything queued went out: all slots are free again.
    pub(crate) fn reset(&mut self) {
        self.tx.clear();
        self.used = 0;
    }
}

fn to_std(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    a.as_sockaddr_in6().map(|v6| SocketAddr::V6((*v6).into()))
}

/// Receive buffers for slots `first..first + k` (the rest empty), each from `offset` to 4
/// bytes before its slot's end (room for a ChannelData header in front, see `PEER_OFFSET`).
fn slot_iovs(mem: &mut [u8], first: usize, k: usize, offset: usize) -> [IoSliceMut<'_>; SLOTS] {
    let mut chunks = mem[first * SLOT..(first + k) * SLOT].chunks_exact_mut(SLOT);
    std::array::from_fn(|_| {
        IoSliceMut::new(
            chunks
                .next()
                .map_or(&mut [][..], |c| &mut c[offset..SLOT - 4]),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::UdpSocket;
    use std::os::fd::AsRawFd;

    fn pair(ip: &str) -> (UdpSocket, UdpSocket) {
        let a = UdpSocket::bind(format!("{ip}:0")).unwrap();
        let b = UdpSocket::bind(format!("{ip}:0")).unwrap();
        a.set_nonblocking(true).unwrap();
        (a, b)
    }

    #[test]
    fn receives_a_batch_with_sources_and_reports_would_block_when_empty() {
        for ip in ["127.0.0.1", "[::1]"] {
            let (a, b) = pair(ip);
            let mut pool = Pool::new();
            assert_eq!(
                pool.recv(a.as_raw_fd(), ip.starts_with('['), 0, SLOTS)
                    .unwrap_err()
                    .kind(),
                io::ErrorKind::WouldBlock
            );
            for i in 0..5u8 {
                b.send_to(&[i; 10], a.local_addr().unwrap()).unwrap();
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
            let first = pool.used;
            let n = pool
                .recv(a.as_raw_fd(), ip.starts_with('['), PEER_OFFSET, SLOTS)
                .unwrap();
            assert_eq!(n, 5);
            for i in 0..n {
                assert_eq!(pool.meta[i].len, 10);
                assert_eq!(pool.meta[i].src, b.local_addr().unwrap());
                let s = pool.slot(first + i);
                assert_eq!(&s[PEER_OFFSET..PEER_OFFSET + 10], &[i as u8; 10]);
            }
            assert_eq!(pool.free(), SLOTS - 5);
        }
    }

    #[test]
    fn a_group_goes_out_in_order_and_a_full_pool_stops_receiving() {
        let (a, b) = pair("127.0.0.1");
        let mut pool = Pool::new();
        for i in 0..SLOTS as u8 {
            pool.slot_mut(i as usize)[..3].copy_from_slice(&[i, i, i]);
            pool.tx.push(Tx {
                sock: TxSock::Listener(0),
                slot: i as usize,
                start: 0,
                end: 3,
                dest: b.local_addr().unwrap(),
            });
        }
        pool.used = SLOTS;
        pool.sorted_tx();
        pool.send_group(a.as_raw_fd(), 0..SLOTS, false);
        b.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 16];
        for i in 0..SLOTS as u8 {
            let (n, from) = b.recv_from(&mut buf).unwrap();
            assert_eq!(from, a.local_addr().unwrap());
            assert_eq!(&buf[..n], &[i, i, i]);
        }
        assert_eq!(pool.recv(a.as_raw_fd(), false, 0, SLOTS).unwrap(), 0);
        pool.reset();
        assert_eq!(pool.free(), SLOTS);
    }

    #[test]
    fn a_refused_datagram_in_a_group_does_not_stop_the_rest() {
        let (a, b) = pair("127.0.0.1");
        let mut pool = Pool::new();
        let dests = [
            b.local_addr().unwrap(),
            // Port 0 cannot be sent to: the kernel refuses this one datagram.
            SocketAddr::from(([127, 0, 0, 1], 0)),
            b.local_addr().unwrap(),
        ];
        for (i, d) in dests.iter().enumerate() {
            pool.slot_mut(i)[0] = i as u8;
            pool.tx.push(Tx {
                sock: TxSock::Listener(0),
                slot: i,
                start: 0,
                end: 1,
                dest: *d,
            });
        }
        pool.send_group(a.as_raw_fd(), 0..3, false);
        b.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 4];
        assert_eq!(b.recv_from(&mut buf).unwrap().0, 1);
        assert_eq!(buf[0], 0);
        assert_eq!(b.recv_from(&mut buf).unwrap().0, 1);
        assert_eq!(buf[0], 2);
    }

    /// A GSO send of `n` datagrams of `seg` bytes (the last `last` bytes) from `from` to `to`.
    fn gso_burst(from: &UdpSocket, to: SocketAddr, seg: u16, n: usize, last: usize, fill: u8) {
        use nix::sys::socket::{ControlMessage, SockaddrStorage, sendmsg};
        let mut burst = vec![fill; usize::from(seg) * (n - 1) + last];
        for (k, chunk) in burst.chunks_mut(usize::from(seg)).enumerate() {
            chunk[0] = k as u8;
        }
        let iov = [IoSlice::new(&burst)];
        let cm = [ControlMessage::UdpGsoSegments(&seg)];
        let to = SockaddrStorage::from(to);
        sendmsg(from.as_raw_fd(), &iov, &cm, MsgFlags::empty(), Some(&to)).expect("GSO send");
    }

    /// quinn-udp's set-up forbids fragmentation; natpass puts the socket back as it was.
    #[test]
    fn gro_set_up_leaves_fragmentation_as_it_was() {
        for ip in ["127.0.0.1", "[::1]"] {
            let (a, _) = pair(ip);
            let local = a.local_addr().unwrap();
            let before = crate::net::fragmentation(&a, local.is_ipv6());
            assert!(before.ip.is_some(), "{ip}: IP_MTU_DISCOVER readable");
            assert_eq!(before.ipv6.is_some(), local.is_ipv6());
            let _ = crate::net::gro_state(&a, local);
            assert_eq!(
                crate::net::fragmentation(&a, local.is_ipv6()),
                before,
                "{ip}"
            );
        }
    }

    /// GRO receives keep their segment size after a receive without one (nix's reused headers
    /// lost it: the kernel shrinks a header's control length to what it used), on both
    /// families, and a coalesced receive splits into the datagrams that were sent.
    #[test]
    fn gro_receives_keep_the_segment_size_after_a_plain_one() {
        for ip in ["127.0.0.1", "[::1]"] {
            let (a, b) = pair(ip);
            let local = a.local_addr().unwrap();
            let Some(gro) = crate::net::gro_state(&a, local) else {
                eprintln!("skipped: no UDP GRO on this kernel");
                return;
            };
            let mut pool = Pool::new();
            let settle = || std::thread::sleep(std::time::Duration::from_millis(20));
            for round in 0..3u8 {
                // A plain datagram, received alone first.
                b.send_to(&[0xaa; 33], local).unwrap();
                settle();
                let Batch::Got { first, n: 1, .. } = pool.next_batch_gro(&gro, &a, 0) else {
                    panic!("{ip} round {round}: one plain datagram");
                };
                assert_eq!((pool.meta[0].len, pool.meta[0].seg), (33, 0));
                assert_eq!(pool.meta[0].src, b.local_addr().unwrap());
                assert_eq!(pool.slot(first)[0], 0xaa);
                // Then a burst of 5 × 100 + 40 bytes: one coalesced receive.
                gso_burst(&b, local, 100, 6, 40, round);
                settle();
                let Batch::Got { first, n, .. } = pool.next_batch_gro(&gro, &a, 0) else {
                    panic!("{ip} round {round}: the burst");
                };
                let mut got = Vec::new();
                for i in 0..n {
                    let slot = pool.slot(first + i);
                    for r in pool.meta[i].datagrams(0) {
                        got.push((r.len(), slot[r.start], slot[r.end - 1]));
                    }
                }
                let want: Vec<_> = (0..6u8)
                    .map(|k| (if k == 5 { 40 } else { 100 }, k, round))
                    .collect();
                assert_eq!(got, want, "{ip} round {round}");
                assert_eq!(n, 1, "{ip} round {round}: coalesced into one receive");
                pool.reset();
            }
        }
    }

    #[test]
    fn gso_bundles_arrive_as_the_same_datagrams_in_order() {
        let (a, b) = pair("127.0.0.1");
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut pool = Pool::new();
        // To b: five of 100 bytes, one of 40 (may close a bundle), one of 100 again;
        // to c: two of 7 interleaved. Sizes and order per destination must survive.
        let plan: [(usize, &UdpSocket); 9] = [
            (100, &b),
            (7, &c),
            (100, &b),
            (100, &b),
            (100, &b),
            (7, &c),
            (100, &b),
            (40, &b),
            (100, &b),
        ];
        for (i, (n, to)) in plan.iter().enumerate() {
            pool.slot_mut(i)[..*n].fill(i as u8);
            pool.tx.push(Tx {
                sock: TxSock::Listener(0),
                slot: i,
                start: 0,
                end: *n,
                dest: to.local_addr().unwrap(),
            });
        }
        pool.used = plan.len();
        pool.sorted_tx();
        pool.send_group(a.as_raw_fd(), 0..plan.len(), true);
        for r in [&b, &c] {
            r.set_read_timeout(Some(std::time::Duration::from_secs(2)))
                .unwrap();
            let mut buf = [0u8; 256];
            for (i, (n, to)) in plan.iter().enumerate() {
                if to.local_addr().unwrap() != r.local_addr().unwrap() {
                    continue;
                }
                let (got, from) = r.recv_from(&mut buf).unwrap();
                assert_eq!(from, a.local_addr().unwrap());
                assert_eq!(got, *n, "datagram {i}");
                assert!(buf[..got].iter().all(|&x| x == i as u8), "datagram {i}");
            }
        }
    }

    #[test]
    fn a_refused_gso_bundle_does_not_stop_the_next_one() {
        let (a, b) = pair("127.0.0.1");
        let mut pool = Pool::new();
        // Two bundles of the same segment size share one sendmmsg: the first goes to an
        // address the IPv4 socket cannot reach (refused as a whole, then datagram by datagram),
        // the second must still arrive, whole and in order.
        let bad: SocketAddr = "[::1]:9".parse().unwrap();
        let dests = [bad, bad, b.local_addr().unwrap(), b.local_addr().unwrap()];
        for (i, d) in dests.iter().enumerate() {
            pool.slot_mut(i)[..50].fill(i as u8);
            pool.tx.push(Tx {
                sock: TxSock::Listener(0),
                slot: i,
                start: 0,
                end: 50,
                dest: *d,
            });
        }
        pool.used = 4;
        pool.send_group(a.as_raw_fd(), 0..4, true);
        b.set_read_timeout(Some(std::time::Duration::from_secs(2)))
            .unwrap();
        let mut buf = [0u8; 64];
        for i in 2..4u8 {
            let (n, _) = b.recv_from(&mut buf).expect("the second bundle arrives");
            assert_eq!(n, 50);
            assert!(buf[..n].iter().all(|&x| x == i));
        }
    }
}
