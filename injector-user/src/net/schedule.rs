//! The fate of each packet of an impaired link: dropped, or let through at a moment, once or
//! twice. Pure (times in nanoseconds from any origin, a seeded generator), so every rule of the
//! model is unit-tested without a network.
use super::impairment::Impairment;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fate {
    Drop,
    Pass {
        /// When the packet goes on, in the caller's nanoseconds.
        at: u64,
        /// Sent at once, ahead of the delayed packets.
        reordered: bool,
        /// A copy goes on right after it.
        duplicate: bool,
    },
}

pub struct Schedule {
    impairment: Impairment,
    rng: fastrand::Rng,
    /// When the rate-limited link has sent everything given to it so far.
    link_free_at: u64,
}

impl Schedule {
    pub fn new(impairment: Impairment, seed: u64) -> Self {
        Schedule {
            impairment,
            rng: fastrand::Rng::with_seed(seed),
            link_free_at: 0,
        }
    }

    /// What later packets get; packets already decided keep their fate (as `tc qdisc change`).
    pub fn set_impairment(&mut self, impairment: Impairment) {
        self.impairment = impairment;
    }

    /// netem's model: a lost packet is gone; a reordered one skips the delay and the rate
    /// queue; the others queue behind each other at the link's rate (a bottleneck), then wait
    /// their delay (the propagation), jitter included.
    pub fn decide(&mut self, now: u64, length: usize) -> Fate {
        let impairment = &self.impairment;
        if impairment.loss.hits(self.rng.f64()) {
            return Fate::Drop;
        }
        let duplicate = impairment.duplicate.hits(self.rng.f64());
        if impairment.reorder.hits(self.rng.f64()) {
            return Fate::Pass {
                at: now,
                reordered: true,
                duplicate,
            };
        }
        let mut at = now;
        if let Some(rate) = impairment.rate_bits_per_second {
            let sending = (length as u128 * 8 * 1_000_000_000 / rate as u128) as u64;
            self.link_free_at = self.link_free_at.max(now) + sending;
            at = self.link_free_at;
        }
        Fate::Pass {
            at: at + self.sample_delay(),
            reordered: false,
            duplicate,
        }
    }

    fn sample_delay(&mut self) -> u64 {
        let delay = self.impairment.delay.as_nanos() as i128;
        let jitter = self.impairment.jitter.as_nanos() as i64;
        let offset = if jitter == 0 {
            0
        } else {
            self.rng.i64(-jitter..=jitter) as i128
        };
        (delay + offset).max(0) as u64
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::net::impairment::Percent;

    const MS: u64 = 1_000_000;

    fn schedule(impairment: Impairment) -> Schedule {
        Schedule::new(impairment, 7)
    }

    fn pass_at(fate: Fate) -> u64 {
        match fate {
            Fate::Pass { at, .. } => at,
            Fate::Drop => panic!("dropped"),
        }
    }

    #[test]
    fn a_fixed_delay_holds_every_packet_exactly_that_long() {
        let mut s = schedule(Impairment {
            delay: Duration::from_millis(50),
            ..Impairment::default()
        });
        for now in [0, 3 * MS, 3 * MS, 1000 * MS] {
            assert_eq!(pass_at(s.decide(now, 1500)), now + 50 * MS);
        }
    }

    #[test]
    fn jitter_stays_within_its_bounds_and_centres_on_the_delay() {
        let mut s = schedule(Impairment {
            delay: Duration::from_millis(50),
            jitter: Duration::from_millis(10),
            ..Impairment::default()
        });
        let delays: Vec<u64> = (0..20_000).map(|_| pass_at(s.decide(0, 100))).collect();
        assert!(delays.iter().all(|d| (40 * MS..=60 * MS).contains(d)));
        let mean = delays.iter().sum::<u64>() as f64 / delays.len() as f64;
        assert!((mean - 50e6).abs() < 0.3e6, "mean {mean}");
        assert!(delays.iter().any(|d| *d < 42 * MS) && delays.iter().any(|d| *d > 58 * MS));
    }

    #[test]
    fn jitter_larger_than_the_delay_never_sends_before_the_packet_came() {
        let mut s = schedule(Impairment {
            delay: Duration::from_millis(1),
            jitter: Duration::from_millis(5),
            ..Impairment::default()
        });
        assert!((0..1000).all(|_| pass_at(s.decide(10 * MS, 100)) >= 10 * MS));
    }

    #[test]
    fn loss_duplication_and_reordering_hit_their_share() {
        let mut s = schedule(Impairment {
            delay: Duration::from_millis(20),
            loss: Percent(5.0),
            duplicate: Percent(2.0),
            reorder: Percent(10.0),
            ..Impairment::default()
        });
        let fates: Vec<Fate> = (0..100_000).map(|_| s.decide(MS, 100)).collect();
        let share = |pick: fn(&Fate) -> bool| {
            fates.iter().filter(|f| pick(f)).count() as f64 / fates.len() as f64 * 100.0
        };
        let lost = share(|f| *f == Fate::Drop);
        let copied = share(|f| {
            matches!(
                f,
                Fate::Pass {
                    duplicate: true,
                    ..
                }
            )
        });
        let ahead = share(|f| {
            matches!(
                f,
                Fate::Pass {
                    reordered: true,
                    ..
                }
            )
        });
        assert!((lost - 5.0).abs() < 0.4, "lost {lost}%");
        // Of the 95% that pass.
        assert!((copied - 2.0 * 0.95).abs() < 0.3, "copied {copied}%");
        assert!((ahead - 10.0 * 0.95).abs() < 0.5, "reordered {ahead}%");
        for fate in &fates {
            if let Fate::Pass { at, reordered, .. } = *fate {
                assert_eq!(at, if reordered { MS } else { 21 * MS });
            }
        }
    }

    #[test]
    fn a_rate_queues_packets_behind_each_other_and_an_idle_link_starts_afresh() {
        // 1 mbit/s: a 1250-byte packet takes 10 ms to send.
        let mut s = schedule(Impairment {
            delay: Duration::from_millis(5),
            rate_bits_per_second: Some(1_000_000),
            ..Impairment::default()
        });
        let burst: Vec<u64> = (0..3).map(|_| pass_at(s.decide(0, 1250))).collect();
        assert_eq!(burst, [15 * MS, 25 * MS, 35 * MS]);
        assert_eq!(pass_at(s.decide(100 * MS, 1250)), 115 * MS);
    }

    #[test]
    fn the_same_seed_gives_the_same_fates() {
        let impairment = Impairment {
            delay: Duration::from_millis(20),
            jitter: Duration::from_millis(5),
            loss: Percent(30.0),
            ..Impairment::default()
        };
        let fates = |seed| {
            let mut s = Schedule::new(impairment.clone(), seed);
            (0..100).map(|i| s.decide(i * MS, 100)).collect::<Vec<_>>()
        };
        assert_eq!(fates(1), fates(1));
        assert_ne!(fates(1), fates(2));
    }
}
