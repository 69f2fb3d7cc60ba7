//! The `adaptive` strategy: the most throughput, at the lowest limit that
//! reaches it (the knee of the throughput curve), found without tuning.
//!
//! By Little's law, throughput = requests at the server / latency. Raising the
//! limit pays while latency rises more slowly than the limit (a server with
//! free slots, or a batching GPU server that serves a fuller batch a little
//! slower), and stops paying when latency rises in proportion (pure queueing,
//! or a server that runs one request at a time). Every reply gives one sample
//! of that curve: `n / latency`, where `n` is the number of requests at the
//! server when it was sent (at a first-come-first-served server, what decides
//! its latency) and latency is per output token when the server reports
//! `usage`, so long answers are not mistaken for queueing. That ratio is the
//! reply's *speed*; a *round* is the median speed of enough replies sent at
//! one limit (at least the limit: about a round trip).
//!
//! - **Probe and ramp**: start at 2 in flight; the first request goes out
//!   alone, so its latency is the unloaded reference. Then, like TCP's slow start,
//!   every reply that found the window full adds [`RAMP_STEP`] to the limit
//!   (the limit quadruples per round trip, with no round trip spent
//!   measuring; never more than a step above the count really at the
//!   server), until the median speed of the last [`RECENT`] replies is within
//!   [`RAMP_GAIN`] of the [`RECENT`] before them, or their median latency
//!   passes [`RAMP_EXIT`] times the reference (a queue: three replies say it).
//! - **Search**: from twice the count at the server of the replies that
//!   ended a flat ramp (they went out a round trip earlier), or from the
//!   bandwidth-delay product when a queue ended it, measure rounds: double
//!   while doubling pays at least [`GROWTH_GAIN`] of
//!   its growth; then try below the lowest good limit what Little's law says
//!   the best speed needs at unloaded latency (best speed x reference, the
//!   bandwidth-delay product BBR sizes TCP windows by), and bisect between
//!   the highest limit that fell short and the lowest that did not, for the
//!   lowest limit whose speed is within [`TOLERANCE`] of the best measured.
//! - **Hold and probe**: every [`PROBE_EVERY`] rounds, try a limit one
//!   [`PROBE_STEP`] up or down (alternately) for [`PROBE_ROUNDS`] rounds. Up is kept if it
//!   gained more than [`TOLERANCE`] over the mean of the rounds held (the
//!   server freed up; excess is cheaper than lost throughput and the next
//!   probe down takes it back),
//!   down if it lost less than half its share
//!   (the server slowed down: latency grew with in-flight at flat
//!   throughput). A round whose latency passes [`LATENCY_ALARM`] times the
//!   held level's starts a new base and probes down after a few rounds.
//! - **Loss** (hosted APIs that throttle): a 429/503 or a timeout cuts the
//!   limit once by [`LOSS_CUT`] per episode (outcomes of requests sent before
//!   the cut belong to the same episode), holds it, and probes up again
//!   after [`PROBE_AFTER_LOSS`] rounds, staying below the limit that drew the
//!   loss until [`PROBE_EVERY`] rounds have passed.
//!
//! Only replies of requests that really waited on the server count: sent with
//! at least [`FULL`] of their limit at the server. A run fed slowly by its
//! dataset or held back by the client's own rate limiter never grows its
//! limit on the strength of an idle window.

use std::time::Duration;

use super::{Decision, Observation, Outcome, Strategy};

/// Multiplicative cut on throttling or timeouts.
pub const LOSS_CUT: f64 = 0.7;
/// Largest `initial` that still starts with the probe and ramp: the first
/// request goes out alone, so its reply measures the unloaded latency.
pub const PROBE_LIMIT: usize = 2;
/// Most replies kept for the unloaded reference latency.
const REFERENCE: usize = 16;
/// Added to the limit per reply that found the window full, while ramping.
pub const RAMP_STEP: usize = 3;
/// Latency over the reference that ends the ramp at once.
pub const RAMP_EXIT: f64 = 3.0;
/// Speed gain between two groups of replies below which the ramp ends.
pub const RAMP_GAIN: f64 = 0.15;
/// Replies per group compared while ramping.
pub const RECENT: usize = 8;
/// Share of a doubling's growth that speed must show for it to pay.
pub const GROWTH_GAIN: f64 = 0.25;
/// How far below the best speed the settled limit may be.
pub const TOLERANCE: f64 = 0.05;
/// Bisection stops once the bracket is this tight.
pub const BRACKET: f64 = 1.25;
/// Rounds held between two probes.
pub const PROBE_EVERY: u32 = 20;
/// Rounds a probe is measured for before it is judged.
pub const PROBE_ROUNDS: u32 = 2;
/// Rounds held after a loss cut, or after the search settles, before probing up.
pub const PROBE_AFTER_LOSS: u32 = 4;
/// Size of a probe step (at least one request).
pub const PROBE_STEP: f64 = 0.2;
/// Latency over the held level's that triggers a probe down at once.
pub const LATENCY_ALARM: f64 = 1.5;
/// Share of its limit at the server for a reply to count.
pub const FULL: f64 = 0.8;
/// A round is this many times the limit in replies (about as many round
/// trips): one round trip's worth leaves ~7% of noise at sigma 0.3, more than
/// the tolerance it is judged by. Doubling rounds are one round trip.
const ROUND_FACTOR: usize = 2;
/// Fewest replies in a round.
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
            initial: 2,
            min: 1,
            max: 256,
        }
    }
}

/// One measured limit.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Level {
    limit: usize,
    /// Mean requests at the server / mean latency over the round (Little's law).
    speed: f64,
    /// Median latency (per token where known), seconds.
    latency: f64,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Ramp,
    /// Measuring levels; `up` while doublings still pay.
    Search {
        up: bool,
    },
    Hold {
        /// The first level measured here (its latency is the alarm's reference).
        level: Option<Level>,
        /// Sum and count of the speeds measured here: probes are judged
        /// against their mean, steadier than any one round.
        speeds: (f64, u32),
        rounds: u32,
        next_up: bool,
    },
    /// [`PROBE_ROUNDS`] rounds at a probe limit, judged on their mean speed
    /// against `base` (the level held); `speeds` sums those measured so far.
    Probe {
        base: Level,
        up: bool,
        speeds: (f64, u32),
    },
}

impl Phase {
    /// Holding `level`, with the next probe (up or not) after `PROBE_EVERY - rounds` rounds.
    fn hold(level: Option<Level>, rounds: u32, next_up: bool) -> Phase {
        Phase::Hold {
            level,
            speeds: (0.0, 0),
            rounds,
            next_up,
        }
    }
}

/// Why the ramp ended.
enum RampEnd {
    /// Speed stopped growing; the median count at the server of the last replies.
    Flat(f64),
    /// Latency passed [`RAMP_EXIT`] times the reference; the bandwidth-delay product.
    Slow(f64),
    /// The limit reached `max`.
    Max,
}

/// The replies of one cohort: the next requests sent at the current limit.
/// All of them, not the first to come back: those are the fast ones, and a
/// round of them would make a limit look faster than it is.
struct Round {
    /// The cohort is the requests dispatched after `start_seq`, up to `end_seq`.
    start_seq: u64,
    end_seq: u64,
    /// (latency, at_server) of each reply of a request sent with the window full.
    samples: Vec<(f64, usize)>,
    /// Replies of the cohort passed over: the window was not full when they went.
    idle: usize,
    /// Replies of later requests: enough of them and a straggler is given up on.
    later: usize,
}

/// The controller's state.
pub struct Adaptive {
    config: AdaptiveConfig,
    limit: usize,
    phase: Phase,
    round: Round,
    /// Latencies of replies that had the server to themselves.
    reference: Vec<f64>,
    /// The last replies while ramping: (latency, at_server).
    recent: Vec<(f64, usize)>,
    /// Limits measured since the search began.
    levels: Vec<Level>,
    /// Throttles of requests dispatched up to here belong to the last cut.
    episode_end_seq: u64,
    /// The limit that drew the last loss, and rounds measured since.
    loss: Option<(usize, u32)>,
}

impl Adaptive {
    pub fn new(config: AdaptiveConfig) -> Self {
        let mut a = Adaptive {
            config,
            limit: 1,
            phase: Phase::Ramp,
            round: Round {
                start_seq: 0,
                end_seq: 0,
                samples: Vec::with_capacity(64),
                idle: 0,
                later: 0,
            },
            reference: Vec::with_capacity(REFERENCE),
            recent: Vec::with_capacity(2 * RECENT),
            levels: Vec::new(),
            episode_end_seq: 0,
            loss: None,
        };
        a.set(config.initial, 0);
        if a.limit > PROBE_LIMIT {
            // Told where to start: measure from there instead of probing.
            a.phase = Phase::Search { up: true };
        }
        a
    }

    fn clamp(&self, limit: usize) -> usize {
        limit.clamp(self.config.min.max(1), self.config.max.max(1))
    }

    /// Moves to `limit` and starts a fresh round with requests sent from now on.
    fn set(&mut self, limit: usize, latest_seq: u64) {
        self.limit = self.clamp(limit);
        let r = &mut self.round;
        r.samples.clear();
        r.idle = 0;
        r.later = 0;
        r.start_seq = latest_seq;
        // Doubling asks a coarse question (did speed grow a quarter of the
        // limit's growth?): one round trip answers it, and above the knee a
        // longer round only keeps latency high for longer.
        let factor = match self.phase {
            Phase::Search { up: true } => 1,
            _ => ROUND_FACTOR,
        };
        r.end_seq = latest_seq + (factor * self.limit).max(MIN_ROUND) as u64;
    }

    /// The round's measurement once every reply of its cohort is in: Little's
    /// law on means (a median would read a queue, whose waits add up toward
    /// the mean, as slower than the free slots below it by the gap between
    /// median and mean), each latency capped at 4 times the round's median so
    /// one stuck reply cannot decide it.
    fn measure(&mut self) -> Option<Level> {
        let size = (self.round.end_seq - self.round.start_seq) as usize;
        let samples = &self.round.samples;
        if samples.len() + self.round.idle < size && self.round.later < size {
            return None;
        }
        if samples.is_empty() {
            return None;
        }
        let mut latencies: Vec<f64> = samples.iter().map(|s| s.0).collect();
        let latency = median(&mut latencies);
        let cap = 4.0 * latency;
        let n = samples.len() as f64;
        let mean_latency = samples.iter().map(|s| s.0.min(cap)).sum::<f64>() / n;
        let mean_at_server = samples.iter().map(|s| s.1 as f64).sum::<f64>() / n;
        (mean_latency > 0.0).then(|| Level {
            limit: self.limit,
            speed: mean_at_server / mean_latency,
            latency,
        })
    }

    /// While ramping: grows on a full window; says when and why to stop.
    fn ramp(&mut self, latency: f64, o: &Observation) -> Option<RampEnd> {
        if o.seq > self.round.start_seq {
            if self.recent.len() == 2 * RECENT {
                self.recent.remove(0);
            }
            self.recent.push((latency, o.at_server));
        }
        let speeds = |r: &[(f64, usize)]| {
            let mut v: Vec<f64> = r.iter().map(|(l, n)| *n as f64 / l.max(1e-9)).collect();
            median(&mut v)
        };
        // Latency far over the unloaded reference is plain: a few replies say it.
        let last = &self.recent[self.recent.len().saturating_sub(RECENT)..];
        if last.len() >= 3 {
            let mut latencies: Vec<f64> = last.iter().map(|r| r.0).collect();
            if let Some(reference) = self.reference() {
                if median(&mut latencies) > RAMP_EXIT * reference {
                    return Some(RampEnd::Slow(speeds(last) * reference));
                }
            }
        }
        if self.recent.len() == 2 * RECENT {
            let (earlier, last) = self.recent.split_at(RECENT);
            if speeds(last) < (1.0 + RAMP_GAIN) * speeds(earlier) {
                let mut at: Vec<f64> = last.iter().map(|r| r.1 as f64).collect();
                return Some(RampEnd::Flat(median(&mut at)));
            }
        }
        if o.at_server as f64 >= FULL * o.limit_at_start as f64 {
            // Never more than a step above what is really at the server: a
            // burst let through by a rate limiter does not open the window.
            let cap = o.at_server_now + 1 + RAMP_STEP;
            self.limit = self.clamp((self.limit + RAMP_STEP).min(cap).max(self.limit));
        }
        (self.limit >= self.config.max).then_some(RampEnd::Max)
    }

    /// The latency of replies that had the server alone (at first, one reply).
    fn reference(&self) -> Option<f64> {
        (!self.reference.is_empty()).then(|| median(&mut self.reference.clone()))
    }

    /// The unloaded latency for Little's law: the median of a measured round
    /// that ran within 1.5 times the reference. Never the reference itself:
    /// it may be one reply, and one slow reply would size the limit.
    fn unloaded(&self) -> Option<f64> {
        let reference = self.reference()?;
        let measured = self
            .levels
            .iter()
            .map(|l| l.latency)
            .filter(|l| *l <= 1.5 * reference)
            .fold(f64::INFINITY, f64::min);
        measured.is_finite().then_some(measured)
    }

    /// The next limit after a measured round.
    fn next(&mut self, level: Level) -> usize {
        match self.phase {
            // The ramp measures reply by reply, not in rounds (see `ramp`).
            Phase::Ramp => self.limit,
            Phase::Search { .. } => {
                self.levels.push(level);
                self.search()
            }
            Phase::Hold {
                level: held,
                speeds: (sum, n),
                rounds,
                next_up,
            } => {
                // The level first measured here stays the reference, so a
                // slow creep of latency still trips the alarm.
                let held = held.unwrap_or(level);
                if level.latency > LATENCY_ALARM * held.latency {
                    // The server slowed down. This round straddles the change:
                    // measure a few steady ones as the new base, then probe down.
                    self.phase = Phase::hold(Some(level), PROBE_EVERY - PROBE_AFTER_LOSS, false);
                    return self.limit;
                }
                let speeds = (sum + level.speed, n + 1);
                let (rounds, next_up) = if rounds + 1 >= PROBE_EVERY {
                    let probe = self.probe_limit(next_up);
                    if probe != self.limit {
                        let base = Level {
                            speed: speeds.0 / f64::from(speeds.1),
                            ..level
                        };
                        self.phase = Phase::Probe {
                            base,
                            up: next_up,
                            speeds: (0.0, 0),
                        };
                        return probe;
                    }
                    // At min or max: the other way next time.
                    (0, !next_up)
                } else {
                    (rounds + 1, next_up)
                };
                self.phase = Phase::Hold {
                    level: Some(held),
                    speeds,
                    rounds,
                    next_up,
                };
                self.limit
            }
            Phase::Probe {
                base,
                up,
                speeds: (sum, n),
            } => {
                let (sum, n) = (sum + level.speed, n + 1);
                if n < PROBE_ROUNDS {
                    self.phase = Phase::Probe {
                        base,
                        up,
                        speeds: (sum, n),
                    };
                    return self.limit;
                }
                let level = Level {
                    speed: sum / f64::from(n),
                    ..level
                };
                let keep = if up {
                    // Worth keeping when it gains more than the tolerance the
                    // search settles within.
                    level.speed >= base.speed * (1.0 + TOLERANCE)
                } else {
                    // Down is kept when it lost less than half its share.
                    let share = 1.0 - level.limit as f64 / base.limit as f64;
                    level.speed >= base.speed * (1.0 - 0.5 * share)
                };
                if keep {
                    // Keep going the same way while it keeps paying.
                    let probe = self.probe_limit(up);
                    if probe != self.limit {
                        self.phase = Phase::Probe {
                            base: level,
                            up,
                            speeds: (0.0, 0),
                        };
                        return probe;
                    }
                    // It moved: check the other way soon, so a move that only
                    // noise paid for is taken back within seconds.
                    self.hold(level, !up);
                    self.probe_soon();
                    self.limit
                } else {
                    self.hold(base, !up);
                    base.limit
                }
            }
        }
    }

    fn hold(&mut self, level: Level, next_up: bool) {
        self.levels.clear();
        self.phase = Phase::hold(Some(level), 0, next_up);
    }

    /// Makes the next probe come after [`PROBE_AFTER_LOSS`] rounds.
    fn probe_soon(&mut self) {
        if let Phase::Hold { rounds, .. } = &mut self.phase {
            *rounds = PROBE_EVERY - PROBE_AFTER_LOSS;
        }
    }

    /// Holds what the search found, probing up early: one noisy round can
    /// pass a limit below the knee as good, and the next probe would
    /// otherwise be [`PROBE_EVERY`] rounds away. Returns the limit to hold.
    fn settle(&mut self, level: Level) -> usize {
        self.levels.clear();
        self.phase = Phase::hold(Some(level), PROBE_EVERY - PROBE_AFTER_LOSS, true);
        level.limit
    }

    fn probe_limit(&self, up: bool) -> usize {
        let step = ((self.limit as f64 * PROBE_STEP).round() as usize).max(1);
        if up {
            let up = self.clamp(self.limit.saturating_add(step));
            match self.loss {
                // Soon after a loss, stay below the limit that drew it.
                Some((at, rounds)) if rounds < PROBE_EVERY => up.min(at - 1).max(self.limit),
                _ => up,
            }
        } else {
            self.clamp(self.limit.saturating_sub(step))
        }
    }

    /// Doubles while it pays, then bisects for the lowest good limit; holds
    /// it once the bracket is tight.
    fn search(&mut self) -> usize {
        self.levels.sort_by_key(|l| l.limit);
        if let Phase::Search { up: true } = self.phase {
            let top = self.levels[self.levels.len() - 1];
            let paid = self.levels.len() < 2
                || pays(&self.levels[self.levels.len() - 2], &top, GROWTH_GAIN);
            if paid && top.limit < self.config.max {
                return top.limit.saturating_mul(2);
            }
            self.phase = Phase::Search { up: false };
        }
        let best = self.levels.iter().map(|l| l.speed).fold(0.0, f64::max);
        let good_enough = |l: &Level| l.speed >= (1.0 - TOLERANCE) * best;
        let Some(good) = self.levels.iter().copied().find(good_enough) else {
            return self.limit;
        };
        let bad = self
            .levels
            .iter()
            .filter(|l| l.limit < good.limit)
            .map(|l| l.limit)
            .max();
        match bad {
            // Nothing measured below: try what Little's law says the best
            // speed needs at unloaded latency (the bandwidth-delay product),
            // but no lower than 0.7 of the good limit: a batching server's
            // latency rises before its knee, so its product falls short.
            None if good.limit > self.clamp(1) => {
                let bdp = self.unloaded().map_or(0, |r| (best * r).round() as usize);
                if bdp >= good.limit {
                    // Little's law says the lowest good limit is the knee.
                    return self.settle(good);
                }
                bdp.max(good.limit * 7 / 10)
            }
            Some(bad) if good.limit > bad + 1 && good.limit as f64 > BRACKET * bad as f64 => {
                let mid = ((bad * good.limit) as f64).sqrt().round() as usize;
                mid.clamp(bad + 1, good.limit - 1)
            }
            _ => self.settle(good),
        }
    }

    fn on_loss(&mut self, o: &Observation) -> Option<usize> {
        if o.seq <= self.episode_end_seq {
            return None;
        }
        self.episode_end_seq = o.latest_seq;
        self.levels.clear();
        // Probe up again soon: a cut can overshoot, and the quota or the
        // server's queue may free up within seconds.
        self.phase = Phase::hold(None, PROBE_EVERY - PROBE_AFTER_LOSS, true);
        self.loss = Some((self.limit, 0));
        let cut = ((self.limit as f64) * LOSS_CUT).round() as usize;
        self.set(cut.min(self.limit - 1), o.latest_seq);
        self.changed(o)
    }

    fn on_success(
        &mut self,
        latency: Duration,
        tokens: Option<u64>,
        o: &Observation,
    ) -> Option<usize> {
        let per = latency.as_secs_f64() / tokens.filter(|t| *t > 0).map_or(1.0, |t| t as f64);
        if o.at_server == 1 && self.reference.len() < REFERENCE {
            self.reference.push(per);
        }
        if self.phase == Phase::Ramp {
            let start = match self.ramp(per, o) {
                None => return self.changed(o),
                // The replies that ended the ramp were sent a round trip ago,
                // at about a quarter of today's limit: measure from twice
                // their count, so the server stays as full as when speed
                // stopped growing.
                Some(RampEnd::Flat(at_server)) => (2.0 * at_server).round() as usize,
                // Queueing: what Little's law says the speed seen needs at
                // unloaded latency.
                Some(RampEnd::Slow(bdp)) => bdp.round() as usize,
                Some(RampEnd::Max) => self.limit,
            };
            let start = start.clamp(1, self.limit);
            self.phase = Phase::Search { up: true };
            self.set(start, o.latest_seq);
            return self.changed(o);
        }
        if o.seq <= self.round.start_seq {
            return None;
        }
        if o.seq > self.round.end_seq {
            self.round.later += 1;
        } else if (o.at_server as f64) < FULL * o.limit_at_start as f64 {
            self.round.idle += 1;
        } else {
            self.round.samples.push((per, o.at_server));
        }
        let size = (self.round.end_seq - self.round.start_seq) as usize;
        if self.round.idle > size / 2 {
            // App-limited: nothing learnt; measure again at the same limit.
            self.set(self.limit, o.latest_seq);
            return None;
        }
        let level = self.measure()?;
        if let Some((_, rounds)) = &mut self.loss {
            *rounds += 1;
        }
        let next = self.next(level);
        let next = self.within_demand(next, o);
        self.set(next, o.latest_seq);
        self.changed(o)
    }

    /// Caps a raise at one step over the count really at the server unless
    /// the window is full there now: a round filled by a rate limiter's
    /// burst must not double a limit the steady trickle never fills.
    fn within_demand(&self, next: usize, o: &Observation) -> usize {
        let at_server = o.at_server_now + 1;
        if next > self.limit && (at_server as f64) < FULL * self.limit as f64 {
            next.min((at_server + RAMP_STEP).max(self.limit))
        } else {
            next
        }
    }

    /// The limit, if it differs from the limiter's.
    fn changed(&self, o: &Observation) -> Option<usize> {
        (self.limit != o.limit).then_some(self.limit)
    }
}

/// Whether going from `from` to `to` raised speed by at least `gain` of the
/// limit's relative growth.
fn pays(from: &Level, to: &Level, gain: f64) -> bool {
    let growth = to.limit as f64 / from.limit as f64 - 1.0;
    to.speed >= from.speed * (1.0 + gain * growth)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

impl Strategy for Adaptive {
    fn initial_limit(&self) -> usize {
        self.limit
    }

    fn observe(&mut self, o: &Observation) -> Decision {
        match &o.outcome {
            Outcome::Success {
                latency,
                completion_tokens,
            } => Decision {
                limit: self.on_success(*latency, *completion_tokens, o),
            },
            Outcome::Throttled | Outcome::Timeout => Decision {
                limit: self.on_loss(o),
            },
            // A 5xx or a broken reply says nothing about load.
            Outcome::Failed => Decision::default(),
        }
    }
}

#[cfg(test)]
mod tests;
