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
