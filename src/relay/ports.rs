//! Relay port pool: which relay ports of this server are currently allocated, per relay IP.
//!
//! Shared by every shard without a lock: one atomic bit per port. Reads
//! ([`PortPool::is_allocated`]) are on the data path for relay-to-relay traffic; writes happen
//! only when allocations are made or freed.

use std::net::IpAddr;
use std::ops::RangeInclusive;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// A bitmap of allocated ports for one relay IP.
#[derive(Debug)]
struct IpPorts {
    ip: IpAddr,
    bits: Vec<AtomicU64>,
}

/// The relay port pool.
#[derive(Debug)]
pub struct PortPool {
    min: u16,
    max: u16,
    ips: Vec<IpPorts>,
    in_use: AtomicUsize,
}

impl PortPool {
    /// A pool over `range` for each of `ips`.
    pub fn new(ips: &[IpAddr], range: RangeInclusive<u16>) -> Self {
        let (min, max) = (*range.start(), *range.end());
        let words = (usize::from(max - min) + 1).div_ceil(64);
        Self {
            min,
            max,
            ips: ips
                .iter()
                .map(|&ip| IpPorts {
                    ip,
                    bits: (0..words).map(|_| AtomicU64::new(0)).collect(),
                })
                .collect(),
            in_use: AtomicUsize::new(0),
        }
    }

    /// The configured range.
    pub fn range(&self) -> RangeInclusive<u16> {
        self.min..=self.max
    }

    /// How many ports are currently reserved, over all IPs.
    pub fn in_use(&self) -> usize {
        self.in_use.load(Ordering::Relaxed)
    }

    /// How many ports the pool has, over all IPs.
    pub fn capacity(&self) -> usize {
        (usize::from(self.max - self.min) + 1) * self.ips.len()
    }

    fn slot(&self, ip: IpAddr, port: u16) -> Option<(&AtomicU64, u64)> {
        if port < self.min || port > self.max {
            return None;
        }
        let entry = self.ips.iter().find(|e| e.ip == ip)?;
        let idx = usize::from(port - self.min);
        Some((&entry.bits[idx / 64], 1u64 << (idx % 64)))
    }

    /// Whether `ip:port` is a currently reserved relay port of this server.
    pub fn is_allocated(&self, ip: IpAddr, port: u16) -> bool {
        self.slot(ip, port)
            .is_some_and(|(word, bit)| word.load(Ordering::Acquire) & bit != 0)
    }

    /// Reserve a free port on `ip`, starting the scan at a position derived from `seed`
    /// (random, injected). `even` asks for an even port (EVEN-PORT). Returns None when the
    /// pool for that IP is exhausted.
    pub fn reserve(&self, ip: IpAddr, seed: u32, even: bool) -> Option<u16> {
        let entry = self.ips.iter().find(|e| e.ip == ip)?;
        for (idx, port) in self.scan(seed) {
            if even && port % 2 != 0 {
                continue;
            }
            let word = &entry.bits[idx as usize / 64];
            let bit = 1u64 << (idx % 64);
            if word.fetch_or(bit, Ordering::AcqRel) & bit == 0 {
                self.in_use.fetch_add(1, Ordering::Relaxed);
                return Some(port);
            }
        }
        None
    }

    /// Reserve an even port P and P+1 together (EVEN-PORT with the R bit, RFC 8656 §7.2);
    /// returns P.
    pub fn reserve_pair(&self, ip: IpAddr, seed: u32) -> Option<u16> {
        let entry = self.ips.iter().find(|e| e.ip == ip)?;
        for (idx, port) in self.scan(seed) {
            if port % 2 != 0 || port == self.max {
                continue;
            }
            let bit_of = |idx: u32| (&entry.bits[idx as usize / 64], 1u64 << (idx % 64));
            let (w0, b0) = bit_of(idx);
            if w0.fetch_or(b0, Ordering::AcqRel) & b0 != 0 {
                continue;
            }
            let (w1, b1) = bit_of(idx + 1);
            if w1.fetch_or(b1, Ordering::AcqRel) & b1 != 0 {
                w0.fetch_and(!b0, Ordering::AcqRel);
                continue;
            }
            self.in_use.fetch_add(2, Ordering::Relaxed);
            return Some(port);
        }
        None
    }

    /// Every (bit index, port) of the range once, starting at a point chosen by `seed`.
    fn scan(&self, seed: u32) -> impl Iterator<Item = (u32, u16)> + use<> {
        let (min, count) = (self.min, u32::from(self.max - self.min) + 1);
        let start = seed % count;
        (0..count).map(move |i| {
            let idx = (start + i) % count;
            (idx, min + idx as u16)
        })
    }

    /// Return a port to the pool.
    pub fn release(&self, ip: IpAddr, port: u16) {
        if let Some((word, bit)) = self.slot(ip, port) {
            if word.fetch_and(!bit, Ordering::AcqRel) & bit != 0 {
                self.in_use.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reserves_every_port_once_then_reports_exhaustion_and_recovers() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let pool = PortPool::new(&[ip], 50000..=50009);
        let mut got: Vec<u16> = (0..10)
            .map(|i| pool.reserve(ip, i * 7, false).unwrap())
            .collect();
        got.sort();
        assert_eq!(got, (50000..=50009).collect::<Vec<_>>());
        assert_eq!(pool.reserve(ip, 3, false), None);
        assert!(pool.is_allocated(ip, 50004));
        pool.release(ip, 50004);
        assert!(!pool.is_allocated(ip, 50004));
        assert_eq!(pool.reserve(ip, 0, false), Some(50004));
        assert_eq!(pool.in_use(), 10);
    }

    #[test]
    fn pairs_are_even_and_adjacent() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let pool = PortPool::new(&[ip], 50001..=50005);
        let p = pool.reserve_pair(ip, 0).unwrap();
        assert!(p.is_multiple_of(2) && pool.is_allocated(ip, p) && pool.is_allocated(ip, p + 1));
        let q = pool.reserve_pair(ip, 0).unwrap();
        assert_ne!(p, q);
        assert_eq!(pool.reserve_pair(ip, 0), None);
        assert_eq!(pool.in_use(), 4);
    }

    #[test]
    fn even_port_and_unknown_ip() {
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let pool = PortPool::new(&[ip], 50001..=50003);
        assert_eq!(pool.reserve(ip, 0, true), Some(50002));
        assert_eq!(pool.reserve(ip, 0, true), None);
        assert_eq!(pool.reserve("127.0.0.2".parse().unwrap(), 0, false), None);
        assert!(!pool.is_allocated(ip, 80));
    }
}
