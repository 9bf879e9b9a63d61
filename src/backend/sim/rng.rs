//! The simulator's random numbers: one seed, split into independent streams
//! (latencies and tie-breaks, faults, crashes), so what one stream draws
//! never shifts another. Imports nothing.
//!
//! Hand-written on purpose: a seed reported by a failing run must replay the
//! same run on every machine and every later version of this crate, and the
//! `rand` crate promises no value stability for its standard generators.
//! SplitMix64 (Steele, Lea and Flood, 2014) is ten lines, passes BigCrush,
//! and has no bad seeds.

/// What a stream is for; each gets its own sequence from the same seed.
#[derive(Debug, Clone, Copy)]
pub(super) enum Stream {
    /// Latencies and same-instant tie-breaks, drawn in submission order.
    Schedule = 1,
    /// Random faults, drawn in completion order.
    Faults = 2,
    /// Crash instants, torn-write prefixes, surviving unsynced writes.
    Crash = 3,
    /// The order of things that happen at once (a batch's members), drawn
    /// in completion order.
    Order = 4,
}

/// A SplitMix64 generator.
#[derive(Debug, Clone)]
pub(super) struct Rng {
    state: u64,
}

impl Rng {
    pub(super) fn new(seed: u64, stream: Stream) -> Rng {
        let mut rng = Rng {
            state: seed ^ (stream as u64).wrapping_mul(0xD1B5_4A32_D192_ED03),
        };
        // Mix once, so seeds 0, 1, 2... start far apart.
        rng.next_u64();
        rng
    }

    pub(super) fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..=max`, uniformly (up to a bias of `max / 2^64`).
    pub(super) fn up_to(&mut self, max: u64) -> u64 {
        match max.checked_add(1) {
            Some(n) => ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64,
            None => self.next_u64(),
        }
    }

    /// `true` once in `n` draws on average; never for `n == 0`.
    pub(super) fn one_in(&mut self, n: u32) -> bool {
        n != 0 && self.up_to(u64::from(n) - 1) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::{Rng, Stream};

    #[test]
    fn streams_of_one_seed_differ_and_repeat() {
        let draw = |stream| {
            let mut rng = Rng::new(7, stream);
            (0..4).map(|_| rng.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(draw(Stream::Faults), draw(Stream::Faults));
        assert_ne!(draw(Stream::Faults), draw(Stream::Crash));
        assert_ne!(draw(Stream::Schedule), draw(Stream::Crash));
    }

    #[test]
    fn up_to_stays_in_range_and_reaches_both_ends() {
        let mut rng = Rng::new(1, Stream::Schedule);
        let draws: Vec<u64> = (0..1000).map(|_| rng.up_to(3)).collect();
        assert!(draws.iter().all(|&d| d <= 3));
        assert!(draws.contains(&0) && draws.contains(&3));
        assert!((0..100).all(|_| !rng.one_in(0)));
        assert!((0..100).all(|_| rng.one_in(1)));
    }
}
