//! Retransmissions (RFC 8489 §6.3.4; RFC 8656 §7.2 on Allocate): a request retransmitted on
//! the same 5-tuple with the same transaction id gets the answer already sent, not a second
//! allocation or a second side effect.
//!
//! An allocation keeps its last answer itself; answers to 5-tuples without an allocation (a
//! refused Allocate, a Refresh that deleted it) are kept here for 40 s, bounded in number.

use super::FiveTuple;
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// At most this many 5-tuples without an allocation are remembered.
const MAX_RECENT: usize = 4096;
/// How long such an answer is kept (longer than a client's retransmission schedule).
const RECENT_TTL: Duration = Duration::from_secs(40);

/// The answer last sent for a transaction.
#[derive(Debug, Clone)]
pub(crate) struct CachedAnswer {
    pub txid: u128,
    pub bytes: Vec<u8>,
}

/// Answers to 5-tuples that hold no allocation.
#[derive(Debug, Default)]
pub(crate) struct RecentAnswers {
    by_ft: HashMap<FiveTuple, (CachedAnswer, Instant)>,
}

impl RecentAnswers {
    /// The answer to resend if `txid` was already answered on `ft` (`last`: the allocation's
    /// own last answer, when `ft` has one).
    pub fn retransmitted(
        &self,
        last: Option<&CachedAnswer>,
        ft: &FiveTuple,
        txid: u128,
    ) -> Option<Vec<u8>> {
        let cached = last.or_else(|| self.by_ft.get(ft).map(|(c, _)| c));
        cached.filter(|c| c.txid == txid).map(|c| c.bytes.clone())
    }

    /// Keep the answer sent on `ft`, which holds no allocation.
    pub fn remember(&mut self, now: Instant, ft: FiveTuple, answer: CachedAnswer) {
        if self.by_ft.len() >= MAX_RECENT {
            self.expire(now);
            if self.by_ft.len() >= MAX_RECENT {
                self.by_ft.clear();
            }
        }
        self.by_ft.insert(ft, (answer, now + RECENT_TTL));
    }

    /// `ft` now holds an allocation (which keeps its own answers) or is gone.
    pub fn forget(&mut self, ft: &FiveTuple) {
        self.by_ft.remove(ft);
    }

    /// Drop answers older than their keep time; give memory back after a burst.
    pub fn expire(&mut self, now: Instant) {
        if !self.by_ft.is_empty() {
            self.by_ft.retain(|_, (_, exp)| *exp > now);
        }
        if self.by_ft.capacity() > 4 * self.by_ft.len() + 1024 {
            self.by_ft.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Transport;

    fn ft(port: u16) -> FiveTuple {
        FiveTuple {
            transport: Transport::Udp,
            client: std::net::SocketAddr::new([203, 0, 113, 9].into(), port),
            server: "192.0.2.1:3478".parse().expect("literal"),
        }
    }

    #[test]
    fn same_transaction_gets_the_same_answer_for_40_seconds() {
        let t0 = Instant::now();
        let mut r = RecentAnswers::default();
        let answer = CachedAnswer {
            txid: 7,
            bytes: vec![1, 2, 3],
        };
        r.remember(t0, ft(1), answer);
        assert_eq!(r.retransmitted(None, &ft(1), 7), Some(vec![1, 2, 3]));
        assert_eq!(
            r.retransmitted(None, &ft(1), 8),
            None,
            "another transaction"
        );
        assert_eq!(r.retransmitted(None, &ft(2), 7), None, "another 5-tuple");
        r.expire(t0 + Duration::from_secs(41));
        assert_eq!(r.retransmitted(None, &ft(1), 7), None);
    }

    #[test]
    fn an_allocations_own_answer_wins_and_the_table_stays_bounded() {
        let t0 = Instant::now();
        let mut r = RecentAnswers::default();
        for p in 0..(MAX_RECENT as u16 + 10) {
            r.remember(
                t0,
                ft(p),
                CachedAnswer {
                    txid: 1,
                    bytes: vec![],
                },
            );
        }
        assert!(r.by_ft.len() <= MAX_RECENT);
        let own = CachedAnswer {
            txid: 1,
            bytes: vec![9],
        };
        assert_eq!(r.retransmitted(Some(&own), &ft(5000), 1), Some(vec![9]));
    }
}
