//! Paced reconnects: how long each client is told to wait before it reconnects, spread per
//! connection, so that a restarted or draining server is not hit by every client in the same
//! second.

use std::fmt;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// A reconnect delay of `base` plus a part of `spread` that differs for every call.
pub(crate) struct Pacing {
    base: Duration,
    spread: Duration,
    /// Random keys, new in every process, so that two servers started together spread apart.
    seed: RandomState,
    calls: AtomicU64,
}

impl Pacing {
    pub(crate) fn new(base: Duration, spread: Duration) -> Self {
        Self {
            base,
            spread,
            seed: RandomState::new(),
            calls: AtomicU64::new(0),
        }
    }

    /// A delay between `base` and `base + spread`.
    pub(crate) fn next_delay(&self) -> Duration {
        self.base + self.spread.mul_f64(self.next_fraction())
    }

    /// A number in `[0, 1)`, another for every call, evenly spread.
    pub(crate) fn next_fraction(&self) -> f64 {
        let call = self.calls.fetch_add(1, Ordering::Relaxed);
        // The top 53 bits of a keyed hash: a uniform fraction.
        (self.seed.hash_one(call) >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl fmt::Debug for Pacing {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pacing")
            .field("base", &self.base)
            .field("spread", &self.spread)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_stay_in_their_window_and_spread_over_it() {
        let pacing = Pacing::new(Duration::from_secs(1), Duration::from_secs(3));
        let delays: Vec<Duration> = (0..1000).map(|_| pacing.next_delay()).collect();
        assert!(
            delays
                .iter()
                .all(|d| *d >= Duration::from_secs(1) && *d < Duration::from_secs(4))
        );
        // Each second of the window gets about a third of them.
        for second in 1..4 {
            let window = Duration::from_secs(second)..Duration::from_secs(second + 1);
            let n = delays.iter().filter(|d| window.contains(d)).count();
            assert!((250..420).contains(&n), "{n} delays in second {second}");
        }
    }
}
