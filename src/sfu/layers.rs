//! Simulcast layer choice (pure): which layer of each publisher's video a receiver gets, and
//! when a switch may happen. The page publishes three layers (`sendEncodings` rids, lowest
//! first). Per receiver: the pinned tile and the active speaker want the high layer, everything
//! else the low one; all of it must fit in 85 % of the receiver's bandwidth estimate, so the
//! low layers are granted first and upgrades go to the pinned track, then the speaker, until
//! the budget is spent. A receiver only changes layer on a keyframe of the new layer (anything
//! else would not decode); until one arrives it keeps getting the old layer.

/// What a receiver wants of one video track.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Want {
    /// A tile among many.
    Low,
    /// The active speaker.
    Speaker,
    /// The tile the receiver pinned.
    Pinned,
}

/// One track to allocate: what the receiver wants and what each layer costs now (bits per
/// second, lowest layer first; a layer the publisher does not send is absent).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Track {
    /// Importance for this receiver.
    pub want: Want,
    /// Bitrate of each layer the publisher sends, lowest first.
    pub layers: Vec<u64>,
}

/// The share of the bandwidth estimate media may use (the rest absorbs estimate errors and
/// audio).
pub const HEADROOM: f64 = 0.85;

/// Choose a layer (index into `layers`) for every track, or `None` for a track with no layer
/// at all. With no estimate yet (`bwe` None) everyone gets what they want.
pub fn allocate(tracks: &[Track], bwe: Option<u64>) -> Vec<Option<usize>> {
    let wanted = |t: &Track| {
        if t.layers.is_empty() {
            None
        } else if t.want == Want::Low {
            Some(0)
        } else {
            Some(t.layers.len() - 1)
        }
    };
    let Some(bwe) = bwe else {
        return tracks.iter().map(wanted).collect();
    };
    let budget = (bwe as f64 * HEADROOM) as u64;
    // Everyone's lowest layer first: a tile that freezes is worse than one that is soft.
    let mut chosen: Vec<Option<usize>> = tracks
        .iter()
        .map(|t| (!t.layers.is_empty()).then_some(0))
        .collect();
    let mut spent: u64 = tracks.iter().filter_map(|t| t.layers.first()).sum();
    // Then upgrades, most important first (pinned, then speaker), one step at a time so a
    // tight budget gives the pinned tile a middle layer before the speaker gets anything.
    let mut order: Vec<usize> = (0..tracks.len())
        .filter(|&i| tracks[i].want != Want::Low)
        .collect();
    order.sort_by(|&a, &b| tracks[b].want.cmp(&tracks[a].want));
    loop {
        let mut upgraded = false;
        for &i in &order {
            let (Some(cur), Some(target)) = (chosen[i], wanted(&tracks[i])) else {
                continue;
            };
            if cur >= target {
                continue;
            }
            let extra = tracks[i].layers[cur + 1].saturating_sub(tracks[i].layers[cur]);
            if spent + extra <= budget {
                spent += extra;
                chosen[i] = Some(cur + 1);
                upgraded = true;
                break; // start again from the most important
            }
        }
        if !upgraded {
            return chosen;
        }
    }
}

/// One video track as one receiver may get it: what the receiver wants, how many layers the
/// publisher offers, and which of them it is sending now with their bitrates (layer index,
/// bits per second; lowest first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offered {
    /// Importance for this receiver.
    pub want: Want,
    /// Layers the publisher negotiated (1 without simulcast).
    pub layers: usize,
    /// The layers arriving now.
    pub sent: Vec<(usize, u64)>,
}

/// The layer to forward of each track: [`allocate`] over the layers being sent, within the
/// receiver's bandwidth estimate. A track with nothing arriving yet waits for the layer its
/// receiver wants (the lowest, or the highest for the pinned tile and the speaker).
pub fn choose(tracks: &[Offered], bwe: Option<u64>) -> Vec<usize> {
    let sent: Vec<Track> = tracks
        .iter()
        .map(|t| Track {
            want: t.want,
            layers: t.sent.iter().map(|&(_, rate)| rate).collect(),
        })
        .collect();
    allocate(&sent, bwe)
        .into_iter()
        .zip(tracks)
        .map(|(chosen, t)| match chosen {
            Some(k) => t.sent[k].0,
            None if t.want == Want::Low => 0,
            None => t.layers.saturating_sub(1),
        })
        .collect()
}

/// What a receiver should be able to take to get every track at the layer it wants: the BWE
/// probes up to this (with some headroom), so an estimate that started low can grow.
pub fn desired(tracks: &[Offered]) -> u64 {
    tracks
        .iter()
        .filter_map(|t| match t.want {
            Want::Low => t.sent.first(),
            _ => t.sent.last(),
        })
        .map(|&(_, rate)| rate)
        .sum()
}

/// One receiver's view of one simulcast track: the layer it gets now and the one it should get.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Switcher {
    current: Option<usize>,
    target: Option<usize>,
}

impl Switcher {
    /// Set the layer this receiver should get (from [`allocate`]); true when a keyframe of it
    /// is needed (ask the publisher).
    pub fn retarget(&mut self, target: Option<usize>) -> bool {
        self.target = target;
        target.is_some() && target != self.current
    }

    /// The layer it waits to switch to (a keyframe of it has not come yet).
    pub fn waiting(&self) -> Option<usize> {
        self.target.filter(|_| self.target != self.current)
    }

    /// The layer being forwarded.
    pub fn current(&self) -> Option<usize> {
        self.current
    }

    /// A packet of `layer` arrived (`keyframe`: it starts a keyframe): whether to forward it.
    /// The switch to the target happens on the target's keyframe; until then the current
    /// layer keeps flowing.
    pub fn forward(&mut self, layer: usize, keyframe: bool) -> bool {
        if Some(layer) == self.target && self.current != self.target && keyframe {
            self.current = self.target;
        }
        Some(layer) == self.current
    }
}

/// The active speaker from audio levels (RFC 6464: 0 dBov loudest … 127 silence). A speaker
/// keeps the floor until someone else has been louder for [`Speaker::HOLD`] consecutive
/// samples, so a cough does not flip every tile.
#[derive(Debug, Clone, Default)]
pub struct Speaker {
    /// Smoothed loudness per participant (higher = louder).
    level: Vec<(String, f64)>,
    current: Option<String>,
    challenger: Option<(String, u32)>,
}

impl Speaker {
    /// Samples (one per ~20 ms packet of the loudest other participant) to take the floor.
    pub const HOLD: u32 = 50;
    /// Loudness below which nobody speaks (dBov 60 ≈ background noise).
    pub const SILENCE: f64 = 127.0 - 60.0;

    /// `pid`'s audio level from a packet (`dbov` as in the header extension). Returns the new
    /// active speaker when it changed.
    pub fn sample(&mut self, pid: &str, dbov: u8) -> Option<String> {
        let loudness = 127.0 - f64::from(dbov.min(127));
        let l = match self.level.iter_mut().find(|(p, _)| p == pid) {
            Some((_, l)) => l,
            None => {
                self.level.push((pid.to_owned(), 0.0));
                &mut self.level.last_mut().expect("pushed").1
            }
        };
        *l = 0.8 * *l + 0.2 * loudness;
        let loudest = self
            .level
            .iter()
            .filter(|(_, l)| *l > Self::SILENCE)
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(p, _)| p.clone());
        let Some(loudest) = loudest else {
            self.challenger = None;
            return None;
        };
        if self.current.as_deref() == Some(loudest.as_str()) {
            self.challenger = None;
            return None;
        }
        if self.current.is_none() {
            self.current = Some(loudest.clone());
            return Some(loudest);
        }
        let n = match &mut self.challenger {
            Some((p, n)) if *p == loudest => {
                *n += 1;
                *n
            }
            _ => {
                self.challenger = Some((loudest.clone(), 1));
                1
            }
        };
        if n >= Self::HOLD {
            self.current = Some(loudest.clone());
            self.challenger = None;
            return Some(loudest);
        }
        None
    }

    /// A participant left.
    pub fn remove(&mut self, pid: &str) {
        self.level.retain(|(p, _)| p != pid);
        if self.current.as_deref() == Some(pid) {
            self.current = None;
        }
        if self.challenger.as_ref().is_some_and(|(p, _)| p == pid) {
            self.challenger = None;
        }
    }

    /// The active speaker.
    pub fn current(&self) -> Option<&str> {
        self.current.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offered(want: Want, sent: &[(usize, u64)]) -> Offered {
        Offered {
            want,
            layers: 3,
            sent: sent.to_vec(),
        }
    }

    const ALL: [(usize, u64); 3] = [(0, 150_000), (1, 500_000), (2, 1_500_000)];

    #[test]
    fn a_pinned_tile_gets_the_high_layer_when_the_estimate_carries_it() {
        let t = [offered(Want::Pinned, &ALL), offered(Want::Low, &ALL)];
        assert_eq!(choose(&t, Some(3_000_000)), vec![2, 0]);
        assert_eq!(
            choose(&t, None),
            vec![2, 0],
            "no estimate yet: what they want"
        );
    }

    #[test]
    fn a_pinned_tile_drops_to_the_middle_layer_when_the_estimate_cannot_carry_the_high_one() {
        let t = [offered(Want::Pinned, &ALL), offered(Want::Low, &ALL)];
        // 0.85 × 1 M = 850 k: low + low = 300 k, the pinned tile's middle layer +350 k fits,
        // its high layer (+1 M more) does not.
        assert_eq!(choose(&t, Some(1_000_000)), vec![1, 0]);
        // Below everyone's low layers: still the low layers (a soft tile beats a frozen one).
        assert_eq!(choose(&t, Some(100_000)), vec![0, 0]);
    }

    #[test]
    fn layers_not_being_sent_are_skipped_and_a_silent_track_waits_for_what_it_wants() {
        // The high layer stopped: the pinned tile gets the middle one even on a wide link; the
        // low one stopped: the low tile gets the middle one.
        let t = [
            offered(Want::Pinned, &ALL[..2]),
            offered(Want::Low, &ALL[1..]),
            offered(Want::Speaker, &[]),
            offered(Want::Low, &[]),
        ];
        assert_eq!(choose(&t, Some(10_000_000)), vec![1, 1, 2, 0]);
    }

    #[test]
    fn the_desired_rate_is_what_every_tile_wants() {
        let t = [
            offered(Want::Pinned, &ALL),
            offered(Want::Low, &ALL),
            offered(Want::Low, &[]),
        ];
        assert_eq!(desired(&t), 1_500_000 + 150_000);
    }

    /// l/m/h at 150 k, 500 k, 1.5 M.
    fn track(want: Want) -> Track {
        Track {
            want,
            layers: vec![150_000, 500_000, 1_500_000],
        }
    }

    #[test]
    fn without_an_estimate_everyone_gets_what_they_want() {
        let t = [track(Want::Pinned), track(Want::Speaker), track(Want::Low)];
        assert_eq!(allocate(&t, None), vec![Some(2), Some(2), Some(0)]);
    }

    #[test]
    fn a_wide_link_gives_the_pinned_and_the_speaker_the_high_layer() {
        let t = [
            track(Want::Low),
            track(Want::Speaker),
            track(Want::Pinned),
            track(Want::Low),
        ];
        // 4 × 150 k + 2 × 1.35 M = 3.3 M ≤ 0.85 × 4 M.
        assert_eq!(
            allocate(&t, Some(4_000_000)),
            vec![Some(0), Some(2), Some(2), Some(0)]
        );
    }

    #[test]
    fn a_narrow_link_upgrades_the_pinned_tile_first_one_step_at_a_time() {
        let t = [track(Want::Speaker), track(Want::Pinned), track(Want::Low)];
        // Base 450 k; budget 0.85 × 1.5 M = 1.275 M: pinned → m (+350 k = 800 k), speaker → m
        // (+350 k = 1.15 M), pinned → h would need +1 M: no.
        assert_eq!(
            allocate(&t, Some(1_500_000)),
            vec![Some(1), Some(1), Some(0)]
        );
        // Budget 0.85 × 2.2 M = 1.87 M: pinned m, speaker m (1.15 M), pinned h (+1 M = 2.15 M):
        // no; so the same. At 3 M (2.55 M): pinned h (2.15 M) fits, speaker h does not.
        assert_eq!(
            allocate(&t, Some(3_000_000)),
            vec![Some(1), Some(2), Some(0)]
        );
    }

    #[test]
    fn below_the_low_layers_everyone_keeps_the_low_layer_and_absent_tracks_get_none() {
        let mut t = vec![track(Want::Pinned), track(Want::Low)];
        t.push(Track {
            want: Want::Speaker,
            layers: vec![],
        });
        assert_eq!(allocate(&t, Some(100_000)), vec![Some(0), Some(0), None]);
        // A publisher that sends only one layer.
        let single = [Track {
            want: Want::Pinned,
            layers: vec![300_000],
        }];
        assert_eq!(allocate(&single, Some(10_000_000)), vec![Some(0)]);
    }

    #[test]
    fn a_switch_waits_for_a_keyframe_of_the_new_layer() {
        let mut s = Switcher::default();
        assert!(s.retarget(Some(0)), "first layer: ask for a keyframe");
        assert!(!s.forward(0, false), "nothing decodes before a keyframe");
        assert!(s.forward(0, true));
        assert!(s.forward(0, false));
        assert!(!s.forward(2, false), "other layers are not forwarded");
        assert!(s.retarget(Some(2)), "up: ask for a keyframe of h");
        assert!(s.forward(0, false), "l keeps flowing until h's keyframe");
        assert!(!s.forward(2, false));
        assert!(s.forward(2, true), "switched on the keyframe");
        assert!(!s.forward(0, true), "l stops at once");
        assert_eq!(s.current(), Some(2));
        assert!(!s.retarget(Some(2)), "no change, no keyframe request");
        assert_eq!(s.waiting(), None);
        s.retarget(Some(0));
        assert_eq!(s.waiting(), Some(0), "until l's keyframe");
    }

    #[test]
    fn the_floor_changes_only_after_someone_else_is_louder_for_a_while() {
        let mut sp = Speaker::default();
        let mut first = None;
        for _ in 0..20 {
            first = sp.sample("ann", 20).or(first);
            sp.sample("ben", 127);
        }
        assert_eq!(first.as_deref(), Some("ann"));
        // Ben coughs: 10 loud packets, Ann goes on.
        for _ in 0..10 {
            assert_eq!(sp.sample("ben", 5), None);
            sp.sample("ann", 20);
        }
        assert_eq!(sp.current(), Some("ann"));
        // Ann stops, Ben talks: the floor moves after HOLD samples, once.
        let mut changes = Vec::new();
        for _ in 0..(Speaker::HOLD * 3) {
            changes.extend(sp.sample("ann", 127));
            changes.extend(sp.sample("ben", 10));
        }
        assert_eq!(changes, vec!["ben".to_owned()]);
        sp.remove("ben");
        assert_eq!(sp.current(), None);
        // Silence names nobody.
        let mut quiet = Speaker::default();
        for _ in 0..100 {
            assert_eq!(quiet.sample("cy", 100), None);
        }
    }
}
