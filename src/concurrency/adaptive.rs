//! The `adaptive` strategy, built on BBR (Cardwell et al., "BBR: Congestion-
//! Based Congestion Control", ACM Queue 2016; IETF
//! draft-cardwell-iccrg-bbr-congestion-control): the most throughput at the
//! lowest limit that reaches it, found without being told the server's shape.
//!
//! From every reply it keeps BBR's two estimates:
//! - the **bottleneck rate**: the highest delivery rate over the last
//!   [`RATE_ROUNDS`] rounds, in replies per second, or output tokens per
//!   second when replies carry `usage` (a long answer is then not mistaken
//!   for a slow server). Each reply samples the rate at which the server
//!   delivered while it was out ([`delivery`](super::delivery)); a round's
//!   rate is the median of its samples.
//! - the **round-trip floor**: the latency (per token where known) of
//!   requests that were alone at the server for their whole life, kept
//!   over a window of time ([`filters::Floor`]). A request that shared the
//!   server measures the queue, not the server.
//!
//! Their product, the bandwidth-delay product, is by Little's law the number
//! of requests the server must hold to deliver at its best rate; the window
//! is `rate x floor x gain`:
//! - **Alone**: the first [`FIRST_ALONE`] requests go out one at a time and
//!   measure the floor (a cold first request, often 3x slower, is set aside
//!   by the second).
//! - **Start-up**: the window grows to [`STARTUP_GAIN`] (2/ln 2, BBR's) x
//!   the product, so it doubles per round trip while the rate keeps up and
//!   never runs ahead of what the measured rate can fill ([`STARTUP_FAST_GAIN`]
//!   once the product passes [`SMALL_BDP`]); each reply back within
//!   [`SLOW_START_QUEUE`] floors also adds one (slow start), so the window
//!   keeps growing while the rate estimate lags a round trip. It ends after
//!   [`STARTUP_FLAT_ROUNDS`] rounds without [`STARTUP_GROWTH`] growth of
//!   the rate, at once when the latest replies queue (their latency passes
//!   [`STARTUP_QUEUE`] floors, as HyStart reads delay), or at the first
//!   throttling; then it **drains** straight to the product (gain 1).
//! - **Probing** (BBR's ProbeBW): after a few rounds at the window held, it
//!   tries [`PROBE_UP`] x the window (or, when the held window delivers
//!   well below the bottleneck rate, what Little's law says that rate needs
//!   at today's latency) and keeps it only when the rate rose by [`RISE`] of
//!   the window's growth, beyond the run's noise ([`SIGNIFICANT`] standard
//!   errors), then tries higher at once with twice the step (BBR v2's
//!   ProbeBW_UP); a real rise short of that keeps the part of the step it
//!   pays for at that rate (the knee lies within the step). When it did not
//!   pay and the held window runs [`QUEUED`] floors slow (a queue, or a
//!   batch), or is small enough ([`CHEAP_DIP`])
//!   that a round lower costs little, it tries [`PROBE_DOWN`] x, kept when
//!   the rate lost less than [`FALL`] of the cut. What is kept is the gain:
//!   a batching server, whose latency rises before its throughput stops
//!   growing, holds a window above its product. Probes that change nothing
//!   come half as often each time, down to every [`CRUISE_ROUNDS`] rounds.
//! - **ProbeRTT**: when no request has been alone for a while (10 s, or
//!   [`FLOOR_LATENCIES`] typical latencies against a slow server), the
//!   window dips to 1 for [`PROBE_RTT_ALONE`] alone reply, so a stale or
//!   cold floor ages out; a small window ([`CHEAP_DIP`]) dips at once while
//!   its floor rests on fewer than [`KEEP`] warm replies. A fresh floor that shows
//!   the window held queues sends it down.
//! - **Throttling** (429, 503, 529) and timeouts cut the window by
//!   [`LOSS_CUT`] once per episode, and probes stay below the window that
//!   drew it for [`LOSS_HOLD_ROUNDS`] rounds (BBR v2's `inflight_hi`).
//!
//! Where it departs from BBR, and why: no pacing (a window is the one
//! control an evaluation runner has, so the gain sits on the window); the
//! floor is a median, not a minimum (LLM latencies vary by a factor from
//! request to request, so the lowest of many is far below a typical one);
//! round rates are medians, and a probe must beat the noise (single replies
//! are too noisy for a max filter of samples); the window is kept by
//! measured rate, not re-derived from the estimates each round (a floor of
//! a few replies would move it by its own noise).
//!
//! Only requests sent with the window full at the server count towards the
//! rate ([`FULL`]): a run fed slowly by its dataset, or held back by the
//! client's own rate limiter, never grows its window on the strength of an
//! idle one. Waits in the rate limiter or in backoff are not server latency:
//! the limiter times each attempt at the server alone.

mod filters;
mod round;

use std::time::Duration;

use super::{Decision, Observation, Outcome, Strategy};
use filters::{Floor, MaxFilter, KEEP};
use round::{median, Held, Measured, Round};

/// Requests sent one at a time before start-up.
pub const FIRST_ALONE: usize = 2;
/// Start-up's gain: 2/ln 2, the smallest that doubles delivery per round.
pub const STARTUP_GAIN: f64 = 2.885;
/// Start-up's gain once the bandwidth-delay product passes [`SMALL_BDP`]:
/// start-up's estimates lag a round trip behind, and a server with many
/// slots would otherwise take a second longer to fill.
pub const STARTUP_FAST_GAIN: f64 = 4.0;
/// Below this product start-up grows by [`STARTUP_GAIN`] only (a
/// one-at-a-time server's product is about 1, and a noisy floor can make it
/// look like 2.5: it must not hold more than 8).
pub const SMALL_BDP: f64 = 4.0;
/// Start-up's estimate of the rate is the median of its newest samples that
/// together count this many replies (a sample at window `w` counts about `w`).
pub const STARTUP_RATES: usize = 8;
/// Rate growth per round that keeps start-up going.
pub const STARTUP_GROWTH: f64 = 1.25;
/// Rounds without that growth that end start-up.
pub const STARTUP_FLAT_ROUNDS: u32 = 3;
/// Start-up's last [`MIN_ROUND`] replies queue when their median latency
/// passes this many floors (beyond the floor's own error).
pub const STARTUP_QUEUE: f64 = 2.0;
/// While the client holds requests back, start-up's window stays within
/// this many requests of those really at the server.
pub const STARTUP_HEADROOM: usize = 3;
/// A start-up reply within this many floors did not queue: the window
/// grows by one (slow start, HyStart's delay test).
pub const SLOW_START_QUEUE: f64 = 1.25;
/// Rounds the bottleneck rate is remembered.
pub const RATE_ROUNDS: u64 = 10;
/// How long a floor stands before ProbeRTT measures it again (at least;
/// see [`FLOOR_LATENCIES`]).
pub const FLOOR_WINDOW: Duration = Duration::from_secs(10);
/// ... and at least this many typical latencies: a dip costs about three
/// latencies of throughput, so against a slow server the 10 s of TCP's BBR
/// would cost a fifth of it.
pub const FLOOR_LATENCIES: f64 = 150.0;
/// A window this small dips to 1 at once while its floor rests on fewer
/// than [`KEEP`] alone replies (a noisy one may have sized it).
pub const CHEAP_DIP: usize = 4;
/// Alone replies that end ProbeRTT.
pub const PROBE_RTT_ALONE: usize = 1;
/// Most rounds between probes: a window that just moved is probed again
/// after [`FIRST_CRUISE`] rounds, and the wait doubles with each probe
/// that changes nothing.
pub const CRUISE_ROUNDS: u32 = 8;
/// Rounds before the first probe after a change.
pub const FIRST_CRUISE: u32 = 1;
/// The probe up's gain (at least one request more).
pub const PROBE_UP: f64 = 1.25;
/// The probe down's gain (at least one request fewer).
pub const PROBE_DOWN: f64 = 0.75;
/// Share of a probe's growth the rate must show for the higher window to stay.
pub const RISE: f64 = 0.25;
/// Standard errors a probe's rise must pass to count.
pub const SIGNIFICANT: f64 = 2.0;
/// Latency over the floor, at the window held, that makes a smaller window
/// worth a try.
pub const QUEUED: f64 = 1.5;
/// Share of a probe's cut the rate may lose for the lower window to stay.
pub const FALL: f64 = 0.2;
/// Multiplicative cut on throttling or timeouts, once per episode.
pub const LOSS_CUT: f64 = 0.7;
/// Rounds after a loss during which probes stay below the window that drew it.
pub const LOSS_HOLD_ROUNDS: u32 = 20;
/// Share of its window at the server for a request to sample the rate.
pub const FULL: f64 = 0.8;
/// Fewest replies in a round: one reply is too noisy a sample.
pub const MIN_ROUND: usize = 8;
/// A round ends after this many times its size in later replies, even if
/// some of its own never come back.
const STRAGGLERS: usize = 3;
/// The run's rate noise (see [`Adaptive::noise`]) before two rounds at one
/// window measured it: lognormal sigma 0.3, ordinary for LLM servers.
const PRIOR_NOISE: f64 = 0.09;
/// Weight of a new pair of rounds in the running noise.
const NOISE_WEIGHT: f64 = 0.2;

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
            initial: 1,
            min: 1,
            max: 256,
        }
    }
}

/// What a delivery is counted in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Units {
    /// Not decided until the first reply.
    Unknown,
    Replies,
    /// Output tokens: the server reports `usage`.
    Tokens,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    /// One request at a time until [`FIRST_ALONE`] replies measured the floor.
    Alone,
    /// `full`: the rate that last grew by [`STARTUP_GROWTH`]; `flat`: rounds since.
    Startup { full: f64, flat: u32 },
    /// Holding the window; `rounds` measured so far.
    Cruise { rounds: u32 },
    /// A round at a window above `from`.
    Up { from: usize },
    /// A round at a window below `from`.
    Down { from: usize },
    /// Window 1 until [`PROBE_RTT_ALONE`] alone replies since `since`; then
    /// back to `resume`, or to the product when the window was sized from
    /// a single alone reply (or nothing at all).
    ProbeRtt {
        since: Duration,
        resume: Option<usize>,
    },
}

/// The controller's state.
pub struct Adaptive {
    config: AdaptiveConfig,
    limit: usize,
    phase: Phase,
    units: Units,
    /// The bottleneck rate: the highest round rate over [`RATE_ROUNDS`].
    rate: MaxFilter,
    floor: Floor,
    /// Start-up's estimate of the rate: the highest median of its newest replies.
    startup_rate: f64,
    /// The latency of the last start-up round that the next one's rate grew
    /// past by [`STARTUP_GROWTH`]: the server was not yet full then, so it
    /// measured an unloaded latency with a round's replies, not an alone
    /// pair's.
    growing_latency: f64,
    /// The latency of start-up's last round.
    last_latency: f64,
    /// The (latency, rate) of start-up's last [`MIN_ROUND`] replies sent
    /// with the window full.
    recent: Vec<(f64, f64)>,
    rounds: u64,
    round: Round,
    /// The rounds measured at the window held.
    held: Held,
    /// The run's rate noise: the variance of a round's log rate times its
    /// window (a round's rate varies less the more replies it counts),
    /// learnt from consecutive rounds at one window.
    noise: f64,
    /// Probes up kept in a row: each adds twice the last one's step.
    streak: u32,
    /// Rounds to cruise before the next probe.
    cruise: u32,
    /// A running mean of reply latencies, seconds.
    typical: f64,
    /// Throttles of requests dispatched up to here belong to the last cut.
    episode_end_seq: u64,
    /// The window that drew the last loss, and rounds measured since.
    loss: Option<(usize, u32)>,
    /// The last request dispatched, as of the last outcome seen.
    latest_seq: u64,
}

impl Adaptive {
    pub fn new(config: AdaptiveConfig) -> Self {
        let mut a = Adaptive {
            config,
            limit: 1,
            phase: Phase::Alone,
            units: Units::Unknown,
            rate: MaxFilter::new(RATE_ROUNDS),
            floor: Floor::new(FLOOR_WINDOW),
            startup_rate: 0.0,
            growing_latency: f64::INFINITY,
            last_latency: f64::INFINITY,
            recent: Vec::with_capacity(MIN_ROUND),
            rounds: 0,
            round: Round::new(0, 0, MIN_ROUND, 1),
            held: Held::default(),
            noise: PRIOR_NOISE,
            streak: 0,
            cruise: FIRST_CRUISE,
            typical: 0.0,
            episode_end_seq: 0,
            loss: None,
            latest_seq: 0,
        };
        a.limit = a.clamp(config.initial);
        if a.limit > 1 {
            // Told where to start: start-up from there; the floor is measured
            // by ProbeRTT once start-up ends.
            a.phase = Phase::Startup { full: 0.0, flat: 0 };
        }
        a
    }

    fn clamp(&self, limit: usize) -> usize {
        limit.clamp(self.config.min.max(1), self.config.max.max(1))
    }

    /// Rate x floor: the requests the server must hold to deliver at its best.
    fn bdp(&self) -> Option<f64> {
        Some(self.rate.get()? * self.floor.get()?)
    }

    /// The window of the bandwidth-delay product, or the current one while
    /// either estimate is missing.
    fn product(&self) -> usize {
        self.bdp()
            .map_or(self.limit, |bdp| self.clamp(bdp.round().max(1.0) as usize))
    }

    /// Holds `window` from now on: the rounds held start again.
    fn hold(&mut self, window: usize) {
        self.limit = self.clamp(window);
        self.held = Held::default();
    }

    /// Moves to `phase`; its first round is the next requests dispatched.
    fn enter(&mut self, phase: Phase) {
        self.phase = phase;
        let size = match phase {
            // Start-up asks a coarse question each round trip.
            Phase::Startup { .. } => MIN_ROUND,
            _ => self.limit,
        };
        // After a change the server delivers at the old window's pace for a
        // round trip (a backlog to drain, or room not yet filled): the next
        // window's worth of requests says nothing of the new one.
        let skip = if self.limit != self.round.window {
            self.limit
        } else {
            0
        };
        self.round = Round::new(self.latest_seq, skip, size, self.limit);
    }

    /// Whether ProbeRTT should measure the floor now: it has aged, or rests
    /// on fewer than [`KEEP`] alone replies while a dip costs little.
    fn floor_due(&self, now: Duration) -> bool {
        if self.clamp(1) > 1 {
            return false;
        }
        let window = FLOOR_WINDOW.max(Duration::from_secs_f64(FLOOR_LATENCIES * self.typical));
        self.floor.stale(now, window) || (self.floor.warm_len() < KEEP && self.limit <= CHEAP_DIP)
    }

    /// Dips to one request in flight until the floor is measured again
    /// (never below `min`: then nothing is ever alone, and the window
    /// stays).
    fn probe_rtt(&mut self, now: Duration, resume: Option<usize>) {
        if self.clamp(1) > 1 {
            self.enter(Phase::Cruise { rounds: 0 });
            return;
        }
        self.limit = 1;
        self.enter(Phase::ProbeRtt { since: now, resume });
    }

    /// Start-up is over, its rate estimated at `rate`: drain straight to
    /// the product, and probe from it soon.
    fn drain(&mut self, now: Duration, rate: f64) {
        if self.floor.get().is_none() {
            // Started above 1: nothing was alone yet.
            self.probe_rtt(now, None);
            return;
        }
        self.rate.update(self.rounds, rate);
        let mut product = self.product();
        if let Some(floor) = self.floor.get() {
            // Two alone replies may put the floor well below a typical
            // latency; a round that still grew measured it with more. One
            // that queued (past STARTUP_QUEUE floors) did not grow on a
            // one-at-a-time server, but noise may say it did.
            let latency = self.growing_latency;
            if latency > floor && latency <= STARTUP_QUEUE * floor {
                product = product.max(self.clamp((rate * latency).round() as usize));
            }
        }
        self.hold(product);
        self.cruise = FIRST_CRUISE;
        self.enter(Phase::Cruise { rounds: 0 });
    }

    /// A reply's latency and rate sample, in the run's units.
    fn measure(
        &mut self,
        latency: Duration,
        tokens: Option<u64>,
        o: &Observation,
    ) -> (f64, Option<f64>) {
        if self.units == Units::Unknown {
            self.units = if tokens.unwrap_or(0) > 0 {
                Units::Tokens
            } else {
                Units::Replies
            };
        }
        let latency = latency.as_secs_f64();
        match self.units {
            Units::Tokens => match tokens.filter(|t| *t > 0) {
                Some(t) => (
                    latency / t as f64,
                    o.sample.filter(|s| s.tokens > 0).map(|s| s.token_rate()),
                ),
                // A reply without usage among replies with it: no sample.
                None => (f64::NAN, None),
            },
            _ => (latency, o.sample.map(|s| s.reply_rate())),
        }
    }

    fn on_success(
        &mut self,
        latency: Duration,
        tokens: Option<u64>,
        o: &Observation,
    ) -> Option<usize> {
        let (per, rate) = self.measure(latency, tokens, o);
        self.typical += 0.1 * (latency.as_secs_f64() - self.typical);
        if o.sample.is_none() {
            return self.changed(o);
        }
        if o.alone && per.is_finite() {
            self.floor.update(o.now, per);
        }
        // The window was full at the server when it was sent, or is as it
        // returns (a window that just grew fills within a few sends).
        let at_server = o.at_server.max(o.at_server_now + 1);
        let full = at_server as f64 >= FULL * o.limit_at_start as f64;
        match self.phase {
            Phase::Alone => {
                if let Some(r) = rate {
                    self.remember(per, r);
                }
                if let Some(floor) = self.floor.get().filter(|_| self.floor.len() >= FIRST_ALONE) {
                    // One at a time, the server delivers one per floor.
                    self.startup_rate = self.startup_rate.max(1.0 / floor);
                    self.enter(Phase::Startup { full: 0.0, flat: 0 });
                    self.grow();
                }
                return self.changed(o);
            }
            Phase::ProbeRtt { since, resume } => {
                if self.floor.since(since) >= PROBE_RTT_ALONE {
                    self.after_probe_rtt(resume);
                }
                // Rates at window 1 say nothing about the bottleneck.
                return self.changed(o);
            }
            Phase::Startup { .. } => {
                if let (Some(r), true) = (rate, full) {
                    self.remember(per, r);
                    if self.queueing() {
                        // The last replies queued: no need to wait for the
                        // round, and their rates are the server's best.
                        let mut rates: Vec<f64> = self.recent.iter().map(|r| r.1).collect();
                        self.drain(o.now, median(&mut rates));
                        return self.changed(o);
                    }
                    let before = self.limit;
                    if !self.beyond(per, SLOW_START_QUEUE, 1.0) {
                        self.limit = self.clamp(self.limit + 1);
                    }
                    self.grow();
                    if o.held_back_now > 0 {
                        // The client holds requests back (its rate limit):
                        // a burst it let through must not leave a window
                        // its queue then never fills.
                        let cap = at_server.saturating_add(STARTUP_HEADROOM);
                        self.limit = self.limit.min(cap.max(before));
                    }
                }
            }
            Phase::Cruise { .. } if self.limit > 1 && self.floor_due(o.now) => {
                // A window sized from one alone reply is sized again from
                // the fresh floor; a window probing chose is kept.
                let resume = (self.floor.len() != 1).then_some(self.limit);
                self.probe_rtt(o.now, resume);
                return self.changed(o);
            }
            _ => {}
        }
        self.round.add(o.seq, rate, per, full);
        if self.round.done() {
            let measured = self.round.measure();
            self.on_round(measured, o.now);
        }
        self.changed(o)
    }

    /// ProbeRTT measured a fresh floor: back to the window held (sizing it
    /// from the new floor would move it by the floor's noise: probing
    /// decides the window), unless the floor shows it queues.
    fn after_probe_rtt(&mut self, resume: Option<usize>) {
        match resume {
            // The rounds held there still stand.
            Some(window) => self.limit = window,
            None => self.hold(self.product()),
        }
        if resume.is_some() && self.queued() {
            self.probe_down(self.limit);
        } else {
            self.enter(Phase::Cruise { rounds: 0 });
        }
    }

    /// Keeps a start-up reply's latency and rate among the last
    /// [`MIN_ROUND`], and start-up's estimate of the rate: the median of the
    /// newest that count [`STARTUP_RATES`] replies (BBR takes the highest
    /// single sample; ours vary by a factor from reply to reply, and the
    /// highest of them runs ahead).
    fn remember(&mut self, latency: f64, rate: f64) {
        if self.recent.len() == MIN_ROUND {
            self.recent.remove(0);
        }
        self.recent.push((latency, rate));
        let newest = STARTUP_RATES.div_ceil(self.limit.max(1));
        let mut rates: Vec<f64> = self.recent.iter().rev().take(newest).map(|r| r.1).collect();
        self.startup_rate = self.startup_rate.max(median(&mut rates));
    }

    /// Whether start-up's product is small: a one-at-a-time server, whose
    /// queue costs the most.
    fn small(&self) -> bool {
        self.floor
            .get()
            .is_some_and(|f| self.startup_rate * f < SMALL_BDP)
    }

    /// Whether start-up's last [`MIN_ROUND`] replies queue: their median
    /// latency passes [`STARTUP_QUEUE`] floors, well beyond the floor's own
    /// error. The window is then past what the server serves, whatever the
    /// rate says (it lags a round behind).
    fn queueing(&self) -> bool {
        if self.recent.len() < MIN_ROUND {
            return false;
        }
        let mut latencies: Vec<f64> = self.recent.iter().map(|r| r.0).collect();
        // A small product is a one-at-a-time server, whose queue costs the
        // most: one standard error of the floor says it; a large one needs two.
        let margin = if self.small() { 1.0 } else { SIGNIFICANT };
        self.beyond(median(&mut latencies), STARTUP_QUEUE, margin)
    }

    /// Whether `latency` passes `floors` floors by `margin` standard errors
    /// of the floor.
    fn beyond(&self, latency: f64, floors: f64, margin: f64) -> bool {
        self.floor.get().is_some_and(|floor| {
            latency > floors * floor * (margin * self.floor.uncertainty()).exp()
        })
    }

    /// Start-up's window: its gain x the bandwidth-delay product of its
    /// estimate of the rate; never smaller than it was.
    fn grow(&mut self) {
        if let Some(floor) = self.floor.get() {
            let gain = if self.small() {
                STARTUP_GAIN
            } else {
                STARTUP_FAST_GAIN
            };
            let target = (gain * self.startup_rate * floor).round() as usize;
            self.limit = self.clamp(target.max(self.limit));
        }
    }

    /// A round ended with what it measured; `None` when app-limited.
    fn on_round(&mut self, measured: Option<Measured>, now: Duration) {
        self.rounds += 1;
        if let Some((_, rounds)) = &mut self.loss {
            *rounds += 1;
        }
        let Some(m) = measured else {
            // Nothing learnt at this window: measure it again.
            self.rate.expire(self.rounds);
            self.enter(self.phase);
            return;
        };
        self.rate.update(self.rounds, m.rate());
        match self.phase {
            Phase::Startup { full, flat } => self.startup_round(full, flat, m.latency, now),
            Phase::Cruise { rounds } => {
                if let Some(sample) = self.held.noise_sample(&m) {
                    // A stray round weighs at most nine times the noise.
                    let sample = sample.min(9.0 * self.noise);
                    self.noise += NOISE_WEIGHT * (sample - self.noise);
                }
                self.held.add(&m);
                if rounds + 1 >= self.cruise {
                    self.probe_up();
                } else {
                    self.enter(Phase::Cruise { rounds: rounds + 1 });
                }
            }
            Phase::Up { from } => self.judge_up(from, &m),
            Phase::Down { from } => self.judge_down(from, &m),
            Phase::Alone | Phase::ProbeRtt { .. } => self.enter(self.phase),
        }
    }

    /// A round of start-up, at `latency`: on while the rate grows; over
    /// after [`STARTUP_FLAT_ROUNDS`] rounds that it does not, or at the
    /// first such round that queues.
    fn startup_round(&mut self, full: f64, flat: u32, latency: f64, now: Duration) {
        let last_latency = std::mem::replace(&mut self.last_latency, latency);
        let best = self.rate.get().unwrap_or(0.0);
        if best >= full * STARTUP_GROWTH {
            self.growing_latency = last_latency;
            if self.floor.get().is_none() {
                // No floor to size it by: double per growing round.
                self.limit = self.clamp(self.limit.saturating_mul(2));
            }
            self.enter(Phase::Startup {
                full: best,
                flat: 0,
            });
        } else if flat + 1 >= STARTUP_FLAT_ROUNDS || self.beyond(latency, STARTUP_QUEUE, 1.0) {
            // Start-up's rate leads the rounds' by a round trip.
            self.drain(now, self.startup_rate);
        } else {
            self.enter(Phase::Startup {
                full,
                flat: flat + 1,
            });
        }
    }

    /// A round at the probe up's window: kept when the rate rose by
    /// [`RISE`] of the growth and beyond noise; a real rise short of that
    /// keeps the part of the step it pays for; else back (trying the first
    /// step again after a doubled one, or down when the held window queues).
    fn judge_up(&mut self, from: usize, m: &Measured) {
        let growth = self.limit as f64 / from as f64 - 1.0;
        let compared = self.held.compare(&Held::of(m), self.noise);
        let rose =
            compared.is_some_and(|(ratio, z)| ratio >= 1.0 + RISE * growth && z >= SIGNIFICANT);
        // A real rise short of paying for the whole step pays for part of
        // it: that much is kept (the knee lies within the step).
        let paid = compared
            .filter(|(ratio, z)| *ratio > 1.0 && *z >= SIGNIFICANT)
            .map_or(from, |(ratio, _)| {
                let window = from as f64 * (1.0 + (ratio - 1.0) / RISE);
                (window.round() as usize).clamp(from, self.limit)
            });
        if rose {
            self.hold(self.limit);
            self.held = Held::of(m);
            self.streak += 1;
            self.cruise = FIRST_CRUISE;
            self.probe_up();
        } else if paid > from {
            self.streak = 0;
            self.hold(paid);
            self.cruise = FIRST_CRUISE;
            self.enter(Phase::Cruise { rounds: 0 });
        } else if self.streak > 0 {
            self.streak = 0;
            self.limit = from;
            self.probe_up();
        } else if self.queued() || from <= CHEAP_DIP {
            self.probe_down(from);
        } else {
            self.limit = from;
            self.settled();
        }
    }

    /// A round at the probe down's window: kept when the rate lost less
    /// than [`FALL`] of the cut.
    fn judge_down(&mut self, from: usize, m: &Measured) {
        let cut = 1.0 - self.limit as f64 / from as f64;
        let kept = self
            .held
            .compare(&Held::of(m), self.noise)
            .is_none_or(|(ratio, _)| ratio >= 1.0 - FALL * cut);
        if kept {
            self.hold(self.limit);
            self.held = Held::of(m);
            self.cruise = FIRST_CRUISE;
            self.enter(Phase::Cruise { rounds: 0 });
        } else {
            self.limit = from;
            self.settled();
        }
    }

    /// A probe changed nothing: cruise twice as long before the next.
    fn settled(&mut self) {
        self.cruise = (self.cruise * 2).min(CRUISE_ROUNDS);
        self.enter(Phase::Cruise { rounds: 0 });
    }

    /// Tries a larger window for a round: [`PROBE_UP`] x (twice the step
    /// per probe kept in a row), or what Little's law says the bottleneck
    /// rate needs at today's latency (up to twice the window), never the
    /// window that drew a recent loss.
    fn probe_up(&mut self) {
        let from = self.limit;
        let step = (PROBE_UP - 1.0) * f64::from(1u32 << self.streak.min(4));
        let mut up = ((from as f64 * (1.0 + step)).round() as usize).max(from + 1);
        if let (Some(rate), Some(latency)) = (self.rate.get(), self.held.latency()) {
            let little = (rate * latency).round() as usize;
            up = up.max(little.min(2 * from));
        }
        if let Some((at, rounds)) = self.loss {
            if rounds < LOSS_HOLD_ROUNDS {
                up = up.min(at.saturating_sub(1));
            }
        }
        let up = self.clamp(up);
        if up <= from {
            self.probe_down(from);
            return;
        }
        self.limit = up;
        self.enter(Phase::Up { from });
    }

    /// Whether the window held runs [`QUEUED`] floors slow, beyond the
    /// floor's own standard error: requests wait at the server, or it
    /// batches; only then is a smaller window worth a try (and a wrong
    /// guess costs one round).
    fn queued(&self) -> bool {
        match self.held.latency() {
            Some(latency) if self.floor.get().is_some() => self.beyond(latency, QUEUED, 1.0),
            _ => true,
        }
    }

    /// Tries [`PROBE_DOWN`] x `from` for a round.
    fn probe_down(&mut self, from: usize) {
        let down = ((from as f64 * PROBE_DOWN).round() as usize).min(from.saturating_sub(1));
        let down = self.clamp(down);
        if down >= from {
            self.limit = from;
            self.settled();
            return;
        }
        self.limit = down;
        self.enter(Phase::Down { from });
    }

    fn on_loss(&mut self, o: &Observation) -> Option<usize> {
        if o.seq <= self.episode_end_seq {
            return None;
        }
        self.episode_end_seq = o.latest_seq;
        self.loss = Some((self.limit, 0));
        self.streak = 0;
        self.cruise = FIRST_CRUISE;
        let cut = ((self.limit as f64) * LOSS_CUT).round() as usize;
        self.hold(cut.min(self.limit.saturating_sub(1)));
        // Throttling ends start-up, as loss ends BBR's; requests sent after
        // the cut start the next round.
        self.enter(Phase::Cruise { rounds: 0 });
        self.changed(o)
    }

    /// The limit, if it differs from the limiter's.
    fn changed(&self, o: &Observation) -> Option<usize> {
        (self.limit != o.limit).then_some(self.limit)
    }
}

impl Strategy for Adaptive {
    fn initial_limit(&self) -> usize {
        self.limit
    }

    fn observe(&mut self, o: &Observation) -> Decision {
        self.latest_seq = o.latest_seq;
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
            // A 5xx, a broken reply or a refusal says nothing about load.
            Outcome::Failed | Outcome::Refused => Decision::default(),
        }
    }
}

#[cfg(test)]
mod tests;
