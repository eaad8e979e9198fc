//! Relayed transport addresses (RFC 8656 §7.2, "choosing a relayed transport address"; RFC
//! 6156 §4 for IPv6 and dual-stack): which relay IP (round robin within a family), which port
//! (any, even, or an even pair with the next one held for a RESERVATION-TOKEN, §14.6 and
//! §14.9), and binding it through the shell. A port that will not bind (another program holds
//! it) goes back to the pool and another is tried, 16 times at most.

use super::Family;
use super::allocation::{AllocateRequest, Relay};
use super::core::Core;
use super::resources::{PortChoice, RelayAddr, RelayOwner, RelayResources, RelaySockets};
use rand::Rng;
use std::net::SocketAddr;
use std::time::Instant;

/// Relays bound for a new allocation.
pub(crate) struct Bound {
    pub relays: [Option<Relay>; 2],
    /// The port held for the RESERVATION-TOKEN we hand out (EVEN-PORT R).
    pub reserved: Option<u16>,
    /// IPv6 was asked for in addition but is not available (ADDRESS-ERROR-CODE 440).
    pub v6_refused: bool,
}

impl<R: RelayResources> Core<R> {
    /// Bind the relay sockets an Allocate asks for, or none (everything given back).
    pub(crate) fn bind_relays(
        &mut self,
        now: Instant,
        ask: &AllocateRequest,
        owner: RelayOwner,
        relays: &mut dyn RelaySockets,
    ) -> Option<Bound> {
        let (first, reserved) = match ask.token {
            Some(t) => (self.bind_reserved(t, owner, relays, now)?, None),
            None => self.bind_relay(ask.family, ask.port, owner, relays)?,
        };
        let v6_refused = ask.also_v6 && !self.has_family(Family::V6);
        let mut pair: [Option<Relay>; 2] = [None, None];
        if ask.also_v6 && !v6_refused {
            match self.bind_relay(Family::V6, PortChoice::Any, owner, relays) {
                Some((second, _)) => pair[Family::V6.index()] = Some(second),
                None => {
                    self.release_relay(&first, relays);
                    if let Some(p) = reserved {
                        self.res.release_port(first.bind.ip(), p);
                    }
                    return None;
                }
            }
        }
        let primary = Family::of(first.bind.ip()).index();
        pair[primary] = Some(first);
        Some(Bound {
            relays: pair,
            reserved,
            v6_refused,
        })
    }

    pub(crate) fn has_family(&self, family: Family) -> bool {
        self.cfg.relays.iter().any(|r| Family::of(r.bind) == family)
    }

    fn pick_relay(&mut self, family: Family) -> Option<RelayAddr> {
        let candidates: Vec<RelayAddr> = self
            .cfg
            .relays
            .iter()
            .filter(|r| Family::of(r.bind) == family)
            .copied()
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let rr = &mut self.relay_rr[family.index()];
        *rr = rr.wrapping_add(1);
        Some(candidates[*rr % candidates.len()])
    }

    /// Bind a relay socket of `family` on a port chosen as asked; for an even pair, the next
    /// port is held too and returned as the second value.
    fn bind_relay(
        &mut self,
        family: Family,
        choice: PortChoice,
        owner: RelayOwner,
        relays: &mut dyn RelaySockets,
    ) -> Option<(Relay, Option<u16>)> {
        let ra = self.pick_relay(family)?;
        for _ in 0..16 {
            let seed: u32 = self.rng.random();
            let port = self.res.reserve_port(ra.bind, seed, choice)?;
            let held = (choice == PortChoice::EvenPair).then(|| port + 1);
            // The held port must be free on the host too, not only in our pool: another
            // program's socket on it would make the RESERVATION-TOKEN's Allocate fail (508).
            // Bound and let go at once: this checks it now; the pool keeps it ours.
            if let Some(h) = held {
                match relays.bind(SocketAddr::new(ra.bind, h), owner) {
                    Ok(handle) => relays.release(handle),
                    Err(e) => {
                        tracing::debug!(port = h, error = %e, "reserved relay port taken on the host");
                        self.res.release_port(ra.bind, port);
                        self.res.release_port(ra.bind, h);
                        continue;
                    }
                }
            }
            match self.bind_port(ra, port, owner, relays) {
                Some(r) => return Some((r, held)),
                None => {
                    if let Some(h) = held {
                        self.res.release_port(ra.bind, h);
                    }
                }
            }
        }
        None
    }

    /// Bind an already reserved port; on failure the port goes back to the pool.
    fn bind_port(
        &mut self,
        ra: RelayAddr,
        port: u16,
        owner: RelayOwner,
        relays: &mut dyn RelaySockets,
    ) -> Option<Relay> {
        let bind = SocketAddr::new(ra.bind, port);
        match relays.bind(bind, owner) {
            Ok(handle) => Some(Relay {
                handle,
                bind,
                advertise: SocketAddr::new(ra.advertise, port),
            }),
            Err(e) => {
                tracing::debug!(%bind, error = %e, "relay port unavailable");
                self.res.release_port(ra.bind, port);
                None
            }
        }
    }

    /// Bind the port held for a RESERVATION-TOKEN (508 when unknown or expired).
    fn bind_reserved(
        &mut self,
        token: u64,
        owner: RelayOwner,
        relays: &mut dyn RelaySockets,
        now: Instant,
    ) -> Option<Relay> {
        let (ip, port) = self.res.take_reservation(token, now)?;
        let Some(ra) = self.cfg.relays.iter().find(|r| r.bind == ip).copied() else {
            self.res.release_port(ip, port);
            return None;
        };
        self.bind_port(ra, port, owner, relays)
    }

    pub(crate) fn release_relay(&mut self, relay: &Relay, relays: &mut dyn RelaySockets) {
        relays.release(relay.handle);
        self.res.release_port(relay.bind.ip(), relay.bind.port());
    }
}
