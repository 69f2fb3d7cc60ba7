//! The two estimates the controller sizes its window by: the bottleneck rate
//! (a windowed maximum over rounds) and the round-trip floor (a windowed
//! minimum over time), as BBR keeps them.

use std::collections::VecDeque;
use std::time::Duration;

/// Alone replies kept however old, so a floor is never forgotten.
pub const KEEP: usize = 5;
/// A latency this many times the lowest alone is taken for a cold start.
pub const COLD: f64 = 2.0;
/// How much alone latencies vary before three of them say (lognormal sigma
/// 0.3, ordinary for LLM servers).
pub const PRIOR_SPREAD: f64 = 0.3;

/// The highest value seen over the last `rounds` rounds (a monotonic deque:
/// O(1) amortised per update).
#[derive(Debug, Clone)]
pub struct MaxFilter {
    rounds: u64,
    /// (round, value), values strictly decreasing from the front.
    window: VecDeque<(u64, f64)>,
}

impl MaxFilter {
    pub fn new(rounds: u64) -> MaxFilter {
        MaxFilter {
            rounds,
            window: VecDeque::new(),
        }
    }

    /// Adds `value`, measured in `round`.
    pub fn update(&mut self, round: u64, value: f64) {
        while self.window.back().is_some_and(|(_, v)| *v <= value) {
            self.window.pop_back();
        }
        self.window.push_back((round, value));
        self.expire(round);
    }

    /// Forgets values older than the window, as of `round`.
    pub fn expire(&mut self, round: u64) {
        while self
            .window
            .front()
            .is_some_and(|(r, _)| r + self.rounds <= round)
        {
            self.window.pop_front();
        }
    }

    /// The maximum, if anything was seen within the window.
    pub fn get(&self) -> Option<f64> {
        self.window.front().map(|(_, v)| *v)
    }
}

/// The unloaded latency: of requests that were alone at the server, over
/// the last [`Floor::window`] of time (and at least the newest [`KEEP`]),
/// the median of those within [`COLD`] times the lowest. BBR takes the
/// lowest; LLM latencies vary by a factor from request to request, so the
/// lowest of many is far below a typical one, and Little's law needs a
/// typical one. A first request is often cold (three times slower): more
/// than [`COLD`] times the lowest is set aside as one.
#[derive(Debug, Clone)]
pub struct Floor {
    window: Duration,
    /// (when, latency), in arrival order.
    samples: VecDeque<(Duration, f64)>,
}

impl Floor {
    pub fn new(window: Duration) -> Floor {
        Floor {
            window,
            samples: VecDeque::new(),
        }
    }

    /// A latency (seconds, or seconds per token) measured alone at `now`.
    pub fn update(&mut self, now: Duration, latency: f64) {
        self.samples.push_back((now, latency));
        // Keep the newest few even when they have aged: a floor still sizes
        // the window until a fresh one is measured.
        while self.samples.len() > KEEP
            && self
                .samples
                .front()
                .is_some_and(|(t, _)| now.saturating_sub(*t) > self.window)
        {
            self.samples.pop_front();
        }
    }

    /// The samples kept that are not cold, in increasing order.
    fn warm(&self) -> Vec<f64> {
        let mut latencies: Vec<f64> = self.samples.iter().map(|s| s.1).collect();
        latencies.sort_by(f64::total_cmp);
        if let Some(lowest) = latencies.first().copied() {
            latencies.retain(|l| *l <= COLD * lowest);
        }
        latencies
    }

    /// The floor: the median of those kept, cold ones set aside.
    pub fn get(&self) -> Option<f64> {
        let warm = self.warm();
        let n = warm.len();
        (n > 0).then(|| (warm[(n - 1) / 2] + warm[n / 2]) / 2.0)
    }

    /// Alone replies kept.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// How many samples the floor rests on: the warm ones.
    pub fn warm_len(&self) -> usize {
        self.warm().len()
    }

    /// How far off the floor may be, as a factor's logarithm: the standard
    /// error of a median of the warm samples (their spread, or
    /// [`PRIOR_SPREAD`] with fewer than three to measure it).
    pub fn uncertainty(&self) -> f64 {
        let warm = self.warm();
        let n = warm.len();
        if n == 0 {
            return f64::INFINITY;
        }
        let spread = if n >= 3 {
            let logs: Vec<f64> = warm.iter().map(|l| l.max(f64::MIN_POSITIVE).ln()).collect();
            let mid = logs[n / 2];
            let mut deviations: Vec<f64> = logs.iter().map(|l| (l - mid).abs()).collect();
            deviations.sort_by(f64::total_cmp);
            1.4826 * deviations[n / 2]
        } else {
            PRIOR_SPREAD
        };
        1.2533 * spread / (n as f64).sqrt()
    }

    /// Whether the newest sample is older than `window` at `now`: time
    /// to measure it again.
    pub fn stale(&self, now: Duration, window: Duration) -> bool {
        self.samples
            .back()
            .is_none_or(|(t, _)| now.saturating_sub(*t) > window)
    }

    /// Alone replies measured since `since`.
    pub fn since(&self, since: Duration) -> usize {
        self.samples.iter().filter(|(t, _)| *t >= since).count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_filter_forgets_after_its_rounds() {
        let mut f = MaxFilter::new(3);
        f.update(0, 10.0);
        f.update(1, 5.0);
        assert_eq!(f.get(), Some(10.0));
        f.update(2, 7.0);
        assert_eq!(f.get(), Some(10.0));
        f.update(3, 6.0);
        assert_eq!(f.get(), Some(7.0), "round 0 has aged out");
        f.expire(6);
        assert_eq!(f.get(), None);
    }

    #[test]
    fn floor_takes_the_lowest_recent_and_ages() {
        let s = Duration::from_secs;
        let mut f = Floor::new(s(10));
        assert!(f.stale(s(0), s(10)));
        f.update(s(0), 0.6); // cold
        f.update(s(1), 0.2);
        assert_eq!(f.get(), Some(0.2), "the cold one is set aside");
        f.update(s(2), 0.3);
        assert_eq!(f.get(), Some(0.25), "the median of the others");
        f.update(s(3), 0.26);
        assert_eq!(f.get(), Some(0.26), "the median of the others");
        assert!(!f.stale(s(5), s(10)));
        assert!(f.stale(s(14), s(10)));
        for (t, l) in [(20, 0.4), (21, 0.45), (22, 0.5), (23, 0.42), (24, 0.41)] {
            f.update(s(t), l);
        }
        assert_eq!(f.get(), Some(0.42), "the samples of 20 s ago have aged out");

        assert_eq!(f.since(s(20)), 5);
    }
}
