//! The `adaptive` strategy: as many requests in flight as the server serves
//! well, found without tuning.
//!
//! Two signals, and the limit is set by whichever is more cautious:
//! - **Loss** (hosted APIs that throttle): a 429/503 or a timeout cuts the limit
//!   once by [`LOSS_CUT`] per episode (outcomes of requests sent before the cut
//!   belong to the same episode and do not cut again), and a Retry-After pauses
//!   all admissions.
//! - **Delay** (self-hosted servers that queue): every round (as many
//!   completions as the limit) compares the round's median latency, per output
//!   token when the server reports `usage`, with a no-load baseline: the lowest
//!   round median seen, which cannot drift up under sustained overload. Above
//!   [`DELAY_HIGH`] times the baseline, the limit drops to what Little's law
//!   says the server serves at no-load latency (limit / ratio).
//!
//! Growth: slow start (+1 per completion, doubling per round trip) until the
//! first cut, then a tenth of the limit (at least one) per round trip. Growth counts only completions of requests
//! that found the window at least [`FULL`] full, so an app-limited run (a slow
//! dataset, a small tail) never inflates the limit.

use std::time::Duration;

use super::{Decision, Observation, Outcome, Strategy};

/// Multiplicative cut on throttling or timeouts.
pub const LOSS_CUT: f64 = 0.7;
/// Latency over baseline that counts as queueing.
pub const DELAY_HIGH: f64 = 1.3;
/// Fraction of the limit in flight for a completion to count towards growth.
pub const FULL: f64 = 0.8;
/// Fewest completions a round needs for a stable median.
const MIN_ROUND: usize = 8;

/// `concurrency: {strategy: adaptive, initial, min, max}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdaptiveConfig {
    pub initial: usize,
    pub min: usize,
    pub max: usize,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        AdaptiveConfig {
            initial: 4,
            min: 1,
            max: 256,
        }
    }
}

/// The controller's state.
pub struct Adaptive {
    config: AdaptiveConfig,
    limit: f64,
    slow_start: bool,
    /// No-load latency (per token where known), in seconds.
    baseline: Option<f64>,
    round: Vec<f64>,
    /// Only requests dispatched after the last cut feed the delay signal.
    round_start_seq: u64,
    /// Throttles of requests dispatched up to here belong to the last cut.
    episode_end_seq: u64,
}

impl Adaptive {
    pub fn new(config: AdaptiveConfig) -> Self {
        let initial = config.initial.clamp(config.min.max(1), config.max.max(1));
        Adaptive {
            config,
            limit: initial as f64,
            slow_start: true,
            baseline: None,
            round: Vec::with_capacity(64),
            round_start_seq: 0,
            episode_end_seq: 0,
        }
    }

    fn clamp(&self, limit: f64) -> f64 {
        limit.clamp(self.config.min.max(1) as f64, self.config.max.max(1) as f64)
    }

    /// Applies a new (fractional) limit; returns the integer limit if it changed.
    fn set(&mut self, limit: f64, current: usize) -> Option<usize> {
        self.limit = self.clamp(limit);
        let whole = self.limit.floor() as usize;
        (whole != current).then_some(whole)
    }

    /// Multiplies the limit by `factor` (never below half at once) and starts a
    /// fresh round with requests sent from now on.
    fn cut(&mut self, factor: f64, o: &Observation) -> Option<usize> {
        self.slow_start = false;
        self.round.clear();
        self.round_start_seq = o.latest_seq;
        self.set(self.limit * factor.max(0.5), o.limit)
    }

    fn on_loss(&mut self, o: &Observation) -> Option<usize> {
        if o.seq <= self.episode_end_seq {
            return None;
        }
        self.episode_end_seq = o.latest_seq;
        self.cut(LOSS_CUT, o)
    }

    fn on_success(
        &mut self,
        latency: Duration,
        tokens: Option<u64>,
        o: &Observation,
    ) -> Option<usize> {
        let full = o.in_flight_at_start as f64 >= FULL * o.limit as f64;
        let mut limit = self.limit;
        if full {
            limit += if self.slow_start {
                1.0
            } else {
                1.0 / self.limit.max(1.0)
            };
        }
        if o.seq > self.round_start_seq {
            let per = latency.as_secs_f64() / tokens.filter(|t| *t > 0).map_or(1.0, |t| t as f64);
            self.round.push(per);
            if self.round.len() >= (o.limit).max(MIN_ROUND) {
                let median = median(&mut self.round);
                self.round.clear();
                let baseline = self.baseline.map_or(median, |b| b.min(median));
                self.baseline = Some(baseline);
                let ratio = median / baseline;
                if ratio > DELAY_HIGH {
                    self.limit = limit;
                    return self.cut(1.0 / ratio, o);
                }
            }
        }
        self.set(limit, o.limit)
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

impl Strategy for Adaptive {
    fn initial_limit(&self) -> usize {
        self.limit as usize
    }

    fn observe(&mut self, o: &Observation) -> Decision {
        match &o.outcome {
            Outcome::Success {
                latency,
                completion_tokens,
            } => Decision {
                limit: self.on_success(*latency, *completion_tokens, o),
                pause: None,
            },
            Outcome::Throttled { retry_after } => Decision {
                limit: self.on_loss(o),
                pause: *retry_after,
            },
            Outcome::Timeout => Decision {
                limit: self.on_loss(o),
                pause: None,
            },
            // A 5xx or a broken reply says nothing about load.
            Outcome::Failed => Decision::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An outcome of request `seq`, admitted with the window full at `limit`.
    fn full(outcome: Outcome, seq: u64, limit: usize, latest_seq: u64) -> Observation {
        Observation {
            outcome,
            seq,
            in_flight_at_start: limit,
            limit_at_start: limit,
            latest_seq,
            limit,
        }
    }

    /// Drives the controller as the limiter would: each call completes one
    /// request, numbered in dispatch order, that saw `in_flight` when admitted.
    struct Drive {
        a: Adaptive,
        limit: usize,
        seq: u64,
    }

    impl Drive {
        fn new(initial: usize) -> Drive {
            let a = Adaptive::new(AdaptiveConfig {
                initial,
                min: 1,
                max: 256,
            });
            Drive {
                limit: a.initial_limit(),
                a,
                seq: 0,
            }
        }

        fn complete(&mut self, outcome: Outcome, in_flight: usize) -> Decision {
            self.seq += 1;
            let o = Observation {
                outcome,
                seq: self.seq,
                in_flight_at_start: in_flight,
                limit_at_start: self.limit,
                latest_seq: self.seq + self.limit as u64,
                limit: self.limit,
            };
            let d = self.a.observe(&o);
            if let Some(l) = d.limit {
                self.limit = l;
            }
            d
        }

        /// `n` successes of `ms` latency (and `tokens` output tokens), window full.
        fn ok(&mut self, n: usize, ms: u64, tokens: Option<u64>) {
            for _ in 0..n {
                let full = self.limit;
                self.complete(
                    Outcome::Success {
                        latency: Duration::from_millis(ms),
                        completion_tokens: tokens,
                    },
                    full,
                );
            }
        }
    }

    #[test]
    fn slow_start_doubles_per_round_trip_while_latency_holds() {
        let mut d = Drive::new(4);
        d.ok(4, 100, None);
        assert_eq!(d.limit, 8);
        d.ok(8, 100, None);
        assert_eq!(d.limit, 16);
    }

    #[test]
    fn no_growth_while_the_window_is_not_full() {
        // App-limited: the dataset feeds one request at a time.
        let mut d = Drive::new(8);
        for _ in 0..200 {
            d.complete(
                Outcome::Success {
                    latency: Duration::from_millis(100),
                    completion_tokens: None,
                },
                1,
            );
        }
        assert_eq!(d.limit, 8);
    }

    #[test]
    fn queueing_cuts_to_what_the_server_serves_at_no_load_latency() {
        let mut d = Drive::new(32);
        d.a.slow_start = false;
        d.ok(64, 100, None); // baseline 100 ms
        let before = d.limit;
        // Rounds at twice the latency: the first full one cuts the limit in half
        // (Little's law: the server serves `limit / 2` at no-load latency).
        let mut lowest = before;
        for _ in 0..2 * before {
            d.ok(1, 200, None);
            lowest = lowest.min(d.limit);
        }
        assert!(lowest <= before / 2 + 1, "{before} -> {lowest}");
    }

    #[test]
    fn long_answers_are_not_mistaken_for_queueing() {
        let mut d = Drive::new(16);
        d.a.slow_start = false;
        d.ok(32, 100, Some(10)); // 10 ms per token
        let before = d.limit;
        // Ten times the latency, ten times the tokens: the same speed per token.
        d.ok(before * 3, 1000, Some(100));
        assert!(d.limit >= before, "{before} -> {}", d.limit);
    }

    #[test]
    fn the_baseline_does_not_drift_up_under_sustained_overload() {
        let mut d = Drive::new(64);
        d.a.slow_start = false;
        d.ok(64, 100, None);
        // The server stays overloaded: every round is slow, so the limit keeps
        // falling instead of the slow rounds becoming the new normal.
        for _ in 0..30 {
            let limit = d.limit.max(MIN_ROUND);
            d.ok(limit, 300, None);
        }
        assert_eq!(d.a.baseline, Some(0.1));
        assert!(
            d.limit <= 4,
            "the limit stays pinned low, not back at 64: {}",
            d.limit
        );
    }

    #[test]
    fn one_cut_per_throttling_episode_and_the_pause_is_passed_on() {
        let mut d = Drive::new(40);
        d.a.slow_start = false;
        let latest = d.seq + 40;
        let mut cuts = 0;
        // Forty requests sent before the first 429 all come back throttled.
        for i in 0..40 {
            let throttled = Outcome::Throttled {
                retry_after: Some(Duration::from_secs(2)),
            };
            let decision = d.a.observe(&full(throttled, i + 1, d.limit, latest));
            assert_eq!(decision.pause, Some(Duration::from_secs(2)));
            if let Some(l) = decision.limit {
                d.limit = l;
                cuts += 1;
            }
        }
        assert_eq!(cuts, 1);
        assert_eq!(d.limit, 28);
        // A request sent after the cut that is throttled again starts a new episode.
        let again = full(
            Outcome::Throttled { retry_after: None },
            latest + 1,
            d.limit,
            latest + 30,
        );
        assert_eq!(d.a.observe(&again).limit, Some(19));
    }

    #[test]
    fn server_errors_do_not_move_the_limit() {
        let mut d = Drive::new(10);
        for _ in 0..50 {
            assert_eq!(d.complete(Outcome::Failed, 10), Decision::default());
        }
        assert_eq!(d.limit, 10);
    }

    #[test]
    fn stays_within_min_and_max() {
        let mut a = Adaptive::new(AdaptiveConfig {
            initial: 4,
            min: 2,
            max: 6,
        });
        let mut limit = a.initial_limit();
        let fast = Outcome::Success {
            latency: Duration::from_millis(10),
            completion_tokens: None,
        };
        for (seqs, outcome, expected) in [(1..200u64, fast, 6), (200..260, Outcome::Timeout, 2)] {
            for seq in seqs {
                if let Some(l) = a.observe(&full(outcome.clone(), seq, limit, seq)).limit {
                    limit = l;
                }
            }
            assert_eq!(limit, expected);
        }
    }
}
