//! A small seeded random number generator (SplitMix64): the same seed gives the same
//! schedule of operations and faults on every machine, with no dependency.

use std::time::Duration;

/// SplitMix64: fast, good enough for test schedules, and fully determined by its seed.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        Self(seed)
    }

    /// An independent stream for `seed` and a path of labels (worker, task, ...), so that each
    /// part of a run draws from its own sequence whatever the others do.
    pub fn derive(seed: u64, path: &[u64]) -> Self {
        let mut rng = Self(seed ^ 0x5851_f42d_4c95_7f2d);
        for &label in path {
            rng.0 ^= label.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            rng.next_u64();
        }
        rng
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo + 1)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            return 0;
        }
        (self.next_u64() % n as u64) as usize
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.next_u64() % 100 < percent
    }

    /// Milliseconds in `lo..=hi`, skewed towards the short end (half the draws fall in the
    /// lower quarter of the range), as a [`Duration`].
    pub fn millis(&mut self, lo: u64, hi: u64) -> Duration {
        let short = self.chance(50);
        let top = if short { lo + (hi - lo) / 4 } else { hi };
        Duration::from_millis(self.range(lo, top))
    }

    /// An index chosen with the given weights (all zero: 0).
    pub fn weighted(&mut self, weights: &[u32]) -> usize {
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        if total == 0 {
            return 0;
        }
        let mut pick = self.next_u64() % total;
        for (i, &w) in weights.iter().enumerate() {
            if pick < u64::from(w) {
                return i;
            }
            pick -= u64::from(w);
        }
        weights.len() - 1
    }
}

/// The seeds a randomized test runs: `<seed_var>=<n>` replays that one, `<seeds_var>=<n>` runs
/// `n` fresh ones (from the clock, so each run differs; they are printed by the caller), else
/// the fixed `ci` seeds.
pub fn seeds_from_env(seed_var: &str, seeds_var: &str, ci: &[u64]) -> Vec<u64> {
    let var = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
    match (var(seed_var), var(seeds_var)) {
        (Some(seed), _) => vec![seed],
        (None, Some(n)) => {
            let base = crate::fuzz::history::now_us() % 1_000_000;
            (0..n).map(|i| base + i).collect()
        }
        (None, None) => ci.to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::Rng;

    #[test]
    fn a_seed_gives_the_same_sequence_and_streams_differ() {
        let a: Vec<u64> = (0..4).map(|_| Rng::derive(7, &[1, 2]).next_u64()).collect();
        assert!(a.windows(2).all(|w| w[0] == w[1]));
        assert_ne!(
            Rng::derive(7, &[1, 2]).next_u64(),
            Rng::derive(7, &[2, 1]).next_u64()
        );
        let mut r = Rng::new(3);
        for _ in 0..1000 {
            assert!((5..=9).contains(&r.range(5, 9)));
        }
    }
}
