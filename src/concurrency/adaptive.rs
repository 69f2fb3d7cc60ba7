//! The `adaptive` strategy, built on BBR (Cardwell et al., "BBR: Congestion-
//! Based Congestion Control", ACM Queue 2016; IETF
//! draft-cardwell-iccrg-bbr-congestion-control): the most throughput at the
//! lowest limit that reaches it, found without being told the server's shape.
//!
//! From every reply it keeps two estimates, as BBR does:
//! - the **bottleneck rate**: the highest delivery rate over the last
//!   [`RATE_ROUNDS`] rounds (replies per second, or output tokens per second
//!   when replies carry `usage`, so long answers are not mistaken for a slow
//!   server). Each reply samples the rate at which the server delivered while
//!   it was out ([`delivery`](super::delivery)); a round's rate is the median
//!   of its samples, so one lucky reply does not size the window.
//! - the **round-trip floor**: the lowest latency (per token where known) of
//!   requests that were alone at the server for their whole life, over the
//!   last [`FLOOR_WINDOW`]. A request that shared the server measures the
//!   queue, not the server.
//!
//! Their product is the bandwidth-delay product: by Little's law, the number
//! of requests the server must hold to deliver at its best rate. The window
//! is `rate x floor x gain`:
//! - **Alone**: the first [`FIRST_ALONE`] requests go out one at a time, so
//!   the floor is measured before anything is queued (and a cold first
//!   request, often 3x slower, is outvoted by the second).
//! - **Startup**: the gain is [`STARTUP_GAIN`] (2/ln 2, BBR's), so the window
//!   doubles per round trip while the rate keeps up; it never runs ahead of
//!   what the measured rate can fill. It ends after [`STARTUP_FLAT_ROUNDS`]
//!   rounds without [`STARTUP_GROWTH`] growth of the rate (or at the first
//!   throttling), and **drains** straight to the estimate (gain 1).
//! - **Probing** (BBR's ProbeBW gain cycle): the window cruises for
//!   [`CRUISE_ROUNDS`] rounds, then tries [`PROBE_UP`] times itself for a
//!   round; it keeps the higher window only when the rate rose by at least
//!   [`RISE`] of the window's growth (and then tries higher again), and
//!   otherwise tries [`PROBE_DOWN`] for a round, which drains the queue the
//!   probe made and keeps the lower window when the rate lost less than
//!   [`FALL`] of the cut. What is kept is learned as the gain, so a batching
//!   server, whose latency rises before its throughput stops growing, holds
//!   a window above its bandwidth-delay product.
//! - **ProbeRTT**: when no request has been alone for [`FLOOR_WINDOW`], the
//!   window dips to 1 until [`PROBE_RTT_ALONE`] replies were alone, so a
//!   stale or cold floor ages out.
//! - **Throttling** (429, 503, 529) and timeouts cut the window once per
//!   episode by [`LOSS_CUT`], and probes stay below the window that drew it
//!   for [`LOSS_HOLD_ROUNDS`] rounds (BBR v2's `inflight_hi`).
//!
//! Only requests sent with the window full at the server count towards the
//! rate ([`FULL`]): a run fed slowly by its dataset, or held back by the
//! client's own rate limiter, never grows its window on the strength of an
//! idle one. Waits in the rate limiter or in backoff are not server latency:
//! the limiter times each attempt at the server alone.

mod filters;

use std::time::Duration;

use super::{Decision, Observation, Outcome, Strategy};
use filters::{Floor, MaxFilter};

/// Start-up's gain: 2/ln 2, the smallest that doubles delivery per round.
pub const STARTUP_GAIN: f64 = 4.0;
/// Rate growth per round that keeps start-up going.
pub const STARTUP_GROWTH: f64 = 1.25;
/// Rounds without that growth that end start-up.
pub const STARTUP_FLAT_ROUNDS: u32 = 3;
/// A round whose median latency passes this many floors (beyond the
/// floor's own error) is a queue: start-up ends at once.
pub const STARTUP_QUEUE: f64 = 2.0;
/// Requests sent one at a time before start-up.
pub const FIRST_ALONE: usize = 2;
/// Rounds the bottleneck rate is remembered.
pub const RATE_ROUNDS: u64 = 10;
/// How long the floor is remembered before ProbeRTT measures it again (at
/// least; see [`FLOOR_LATENCIES`]).
pub const FLOOR_WINDOW: Duration = Duration::from_secs(10);
/// ... and at least this many typical latencies: a dip costs about three
/// latencies of throughput, so against a slow server the 10 s of TCP's BBR
/// would cost a fifth of it.
pub const FLOOR_LATENCIES: f64 = 150.0;
/// Alone replies that end ProbeRTT.
pub const PROBE_RTT_ALONE: usize = 1;
/// Rounds between probes once the window has stood still for a while; a
/// window that just moved (or was just cut) is probed again after
/// [`FIRST_CRUISE`] rounds, and the wait doubles with each probe that
/// changes nothing.
pub const CRUISE_ROUNDS: u32 = 8;
/// Rounds before the first probe after a change.
pub const FIRST_CRUISE: u32 = 1;
/// The probe up's gain (at least one request more).
pub const PROBE_UP: f64 = 1.25;
/// The probe down's gain (at least one request fewer).
pub const PROBE_DOWN: f64 = 0.75;
/// Share of a probe's growth the rate must show for the higher window to stay.
pub const RISE: f64 = 0.5;
/// Latency over the floor, at the window held, that makes a smaller window
/// worth a try.
pub const QUEUED: f64 = 1.5;
/// Share of a probe's cut the rate may lose for the lower window to stay.
pub const FALL: f64 = 0.2;
/// The rate noise assumed before two rounds measured it: a round at window
/// 1 of [`MIN_ROUND`] replies varying as lognormal sigma 0.3 (ordinary for
/// LLM servers), about 0.13, and rounds at window `w` 0.3 / sqrt(w).
const PRIOR_NOISE: f64 = 0.09;
/// Weight of a new pair of rounds in the running noise.
const NOISE_WEIGHT: f64 = 0.2;
/// Standard errors a probe's rate must differ by to count as a change.
pub const SIGNIFICANT: f64 = 2.0;
/// Multiplicative cut on throttling or timeouts, once per episode.
pub const LOSS_CUT: f64 = 0.7;
/// Rounds after a loss during which probes stay below the window that drew it.
pub const LOSS_HOLD_ROUNDS: u32 = 20;
/// Share of its window at the server for a request to sample the rate.
pub const FULL: f64 = 0.8;
/// Fewest replies in a round: one reply is too noisy a sample.
pub const MIN_ROUND: usize = 8;
/// A round ends after this many times its size and window in replies, even
/// if some of its own never come back.
const STRAGGLERS: usize = 3;
/// Bounds on the learned gain.
const GAIN_RANGE: (f64, f64) = (0.25, 16.0);

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
    /// back to `resume` (or, with none held yet, to the estimate).
    ProbeRtt {
        since: Duration,
        resume: Option<usize>,
    },
}

/// The replies of one round: a cohort of the next requests dispatched, all
/// of them back, not the first to return (those are the fast ones, and a
/// round of them would make a window look faster than it is).
#[derive(Debug, Clone)]
struct Round {
    /// The cohort is the requests dispatched after `start_seq`, up to `end_seq`.
    start_seq: u64,
    end_seq: u64,
    /// The window when it began.
    window: usize,
    /// Rate samples of requests sent with the window full.
    rates: Vec<f64>,
    /// Their latencies (per token where known).
    latencies: Vec<f64>,
    /// Replies of the cohort sent with the window not full.
    idle: usize,
    /// Replies of later requests: after [`STRAGGLERS`] cohorts' worth, the
    /// round ends without those that never came back.
    later: usize,
}

impl Round {
    /// The round of the `size` requests dispatched after the next `skip`
    /// ones (`latest_seq` is the last dispatched so far).
    fn new(latest_seq: u64, skip: usize, size: usize, window: usize) -> Round {
        let size = size.max(MIN_ROUND);
        let start_seq = latest_seq + skip as u64;
        Round {
            start_seq,
            end_seq: start_seq + size as u64,
            window,
            rates: Vec::with_capacity(size),
            latencies: Vec::with_capacity(size),
            idle: 0,
            later: 0,
        }
    }

    fn size(&self) -> usize {
        (self.end_seq - self.start_seq) as usize
    }

    /// Counts one reply: its rate, if it belongs to the cohort and the
    /// window was full.
    fn add(&mut self, seq: u64, rate: Option<f64>, latency: f64, full: bool) {
        if seq <= self.start_seq {
            return;
        }
        if seq > self.end_seq {
            self.later += 1;
            return;
        }
        match (rate, full) {
            (Some(r), true) if latency.is_finite() => {
                self.rates.push(r);
                self.latencies.push(latency);
            }
            _ => self.idle += 1,
        }
    }

    fn done(&self) -> bool {
        self.rates.len() + self.idle >= self.size() || self.later >= STRAGGLERS * self.size()
    }

    /// The round's rate and latency: the medians of its samples, or `None`
    /// when most of it was sent with the window not full (app-limited).
    fn measure(&mut self) -> Option<Measured> {
        if self.rates.is_empty() || self.rates.len() < self.idle {
            return None;
        }
        // Rates vary by a factor, not a term: compare them as logarithms.
        let mut logs: Vec<f64> = self
            .rates
            .iter()
            .map(|r| r.max(f64::MIN_POSITIVE).ln())
            .collect();
        let log_rate = median(&mut logs);
        Some(Measured {
            log_rate,
            window: self.window.max(1),
            latency: median(&mut self.latencies),
        })
    }
}

/// What a round measured.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Measured {
    /// The median of its rate samples' logarithms.
    log_rate: f64,
    /// The window it was measured at.
    window: usize,
    /// The median latency (per token where known).
    latency: f64,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.log_rate.exp()
    }
}

/// How much a round's log rate varies from round to round at a window of
/// `window`, for a run whose noise is `noise` (see [`Adaptive::noise`]):
/// a round counts about a window's worth of independent replies.
fn round_variance(noise: f64, window: usize) -> f64 {
    noise / window.max(1) as f64
}

/// The rounds measured at the window held, which probes are judged against.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
struct Held {
    /// Sums of the rounds' log rates and median latencies.
    sum: f64,
    latency: f64,
    rounds: u32,
    window: usize,
    /// The last round's log rate.
    last: Option<f64>,
}

impl Held {
    fn add(&mut self, m: &Measured) {
        self.sum += m.log_rate;
        self.latency += m.latency;
        self.rounds += 1;
        self.window = m.window;
        self.last = Some(m.log_rate);
    }

    fn of(m: &Measured) -> Held {
        let mut held = Held::default();
        held.add(m);
        held
    }

    /// The mean of the rounds' median latencies.
    fn latency(&self) -> Option<f64> {
        (self.rounds > 0).then(|| self.latency / f64::from(self.rounds))
    }

    /// How `m` compares: its rate over the mean held, and how many standard
    /// errors apart the two are, given the run's `noise`. `None` before
    /// anything was held.
    fn compare(&self, m: &Measured, noise: f64) -> Option<(f64, f64)> {
        if self.rounds == 0 {
            return None;
        }
        let k = f64::from(self.rounds);
        let diff = m.log_rate - self.sum / k;
        let variance = round_variance(noise, self.window) / k + round_variance(noise, m.window);
        Some((diff.exp(), diff / variance.sqrt().max(f64::MIN_POSITIVE)))
    }
}

/// The controller's state.
pub struct Adaptive {
    config: AdaptiveConfig,
    limit: usize,
    phase: Phase,
    units: Units,
    /// Bottleneck rate: the highest round rate over [`RATE_ROUNDS`].
    rate: MaxFilter,
    /// Start-up's bottleneck rate: the highest median of its last replies.
    startup_max: f64,
    /// The (latency, rate) of start-up's last replies sent with the window full.
    recent: Vec<(f64, f64)>,
    floor: Floor,
    /// Learned gain: the window is `rate x floor x gain` outside start-up.
    gain: f64,
    rounds: u64,
    round: Round,
    /// The rounds measured at the window held: a probe is judged against
    /// their mean, steadier than any one round.
    held: Held,
    /// Throttles of requests dispatched up to here belong to the last cut.
    episode_end_seq: u64,
    /// The window that drew the last loss, and rounds measured since.
    loss: Option<(usize, u32)>,
    /// The last request dispatched, as of the last outcome seen.
    latest_seq: u64,
    /// Probes up kept in a row: each one in a streak adds twice the last
    /// step (BBR v2's ProbeBW_UP), so a server with much more room is
    /// reached in a few rounds.
    streak: u32,
    /// Rounds to cruise before the next probe.
    cruise: u32,
    /// A running mean of reply latencies, seconds.
    typical: f64,
    /// The run's rate noise: the variance of a round's log rate times its
    /// window, learnt from consecutive rounds at one window (a round's
    /// rate varies less the more replies it counts).
    noise: f64,
}

impl Adaptive {
    pub fn new(config: AdaptiveConfig) -> Self {
        let mut a = Adaptive {
            config,
            limit: 1,
            phase: Phase::Alone,
            units: Units::Unknown,
            rate: MaxFilter::new(RATE_ROUNDS),
            startup_max: 0.0,
            recent: Vec::with_capacity(MIN_ROUND),
            floor: Floor::new(FLOOR_WINDOW),
            gain: 1.0,
            rounds: 0,
            round: Round::new(0, 0, MIN_ROUND, 1),
            held: Held::default(),
            episode_end_seq: 0,
            loss: None,
            latest_seq: 0,
            streak: 0,
            cruise: FIRST_CRUISE,
            typical: 0.0,
            noise: PRIOR_NOISE,
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

    /// How long a floor stands before ProbeRTT measures it again.
    fn floor_window(&self) -> Duration {
        FLOOR_WINDOW.max(Duration::from_secs_f64(FLOOR_LATENCIES * self.typical))
    }

    /// Rate x floor: the requests the server must hold to deliver at its best.
    fn bdp(&self) -> Option<f64> {
        Some(self.rate.get()? * self.floor.get()?)
    }

    /// The window `rate x floor x gain`, or the current one while either
    /// estimate is missing.
    fn target(&self, gain: f64) -> usize {
        self.bdp().map_or(self.limit, |bdp| {
            self.clamp((bdp * gain).round().max(1.0) as usize)
        })
    }

    /// Holds `window` from now on, learning the gain that makes it the target.
    fn hold(&mut self, window: usize) {
        self.limit = self.clamp(window);
        if let Some(bdp) = self.bdp().filter(|b| *b > 0.0) {
            self.gain = (self.limit as f64 / bdp).clamp(GAIN_RANGE.0, GAIN_RANGE.1);
        }
        self.held = Held::default();
    }

    /// Moves to `phase`; its first round is the requests sent from now on.
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

    /// Dips to one request in flight until the floor is measured again,
    /// then returns to `resume`.
    fn probe_rtt(&mut self, now: Duration, resume: Option<usize>) {
        self.limit = self.clamp(1);
        self.enter(Phase::ProbeRtt { since: now, resume });
    }

    /// Start-up is over: drain straight to the estimate.
    fn drain(&mut self, now: Duration) {
        if self.floor.get().is_none() {
            // Started above 1: nothing was alone yet.
            self.probe_rtt(now, None);
            return;
        }
        self.gain = 1.0;
        let target = self.target(1.0);
        self.hold(target);
        // The estimate is a start: probe from it soon.
        self.cruise = FIRST_CRUISE;
        self.enter(Phase::Cruise { rounds: 0 });
    }

    /// The latency and rate of a reply, in the run's units.
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
        };
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
                if self.floor.len() >= FIRST_ALONE {
                    self.enter(Phase::Startup { full: 0.0, flat: 0 });
                    self.grow();
                }
                return self.changed(o);
            }
            Phase::ProbeRtt { since, resume } => {
                if self.floor.since(since) >= PROBE_RTT_ALONE {
                    // A fresh floor; back to the window held. (Sizing it
                    // from the new floor would move it by the floor's noise:
                    // probing, not a few alone replies, decides the window.)
                    match resume {
                        // The rounds held there still stand.
                        Some(window) => self.limit = window,
                        None => self.hold(self.target(1.0)),
                    }
                    if resume.is_some() && self.queued() {
                        // The fresh floor says the window held queues.
                        self.probe_down(self.limit);
                    } else {
                        self.enter(Phase::Cruise { rounds: 0 });
                    }
                }
                // Rates at window 1 say nothing about the bottleneck.
                return self.changed(o);
            }
            Phase::Startup { .. } => {
                if let (Some(r), true) = (rate, full) {
                    self.remember(per, r);
                    if self.queue_in(&self.recent) {
                        // The last replies queued: no need to wait for the
                        // round, and their rates are the server's best.
                        let mut rates: Vec<f64> = self.recent.iter().map(|r| r.1).collect();
                        self.rate.update(self.rounds, median(&mut rates));
                        self.drain(o.now);
                        return self.changed(o);
                    }
                    self.grow();
                }
            }
            Phase::Cruise { .. } if self.limit > 1 && self.floor.stale(o.now, self.floor_window()) => {
                self.probe_rtt(o.now, Some(self.limit));
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

    /// Keeps a start-up reply's latency and rate among the last
    /// [`MIN_ROUND`]; their median rate is start-up's estimate of the
    /// bottleneck (BBR takes the highest single sample; ours vary by a
    /// factor from reply to reply, and the highest of them runs ahead).
    fn remember(&mut self, latency: f64, rate: f64) {
        if self.recent.len() == MIN_ROUND {
            self.recent.remove(0);
        }
        self.recent.push((latency, rate));
        let mut rates: Vec<f64> = self.recent.iter().map(|r| r.1).collect();
        self.startup_max = self.startup_max.max(median(&mut rates));
    }

    /// Whether the latencies of `replies` (at least [`MIN_ROUND`]) say requests
    /// queue: their median passes [`STARTUP_QUEUE`] floors, beyond the
    /// floor's own error. That ends start-up at once, as HyStart reads
    /// delay: the window is past what the server serves, whatever the rate
    /// says (it lags a round behind).
    fn queue_in(&self, replies: &[(f64, f64)]) -> bool {
        let Some(floor) = self.floor.get() else {
            return false;
        };
        if replies.len() < MIN_ROUND {
            return false;
        }
        let mut l: Vec<f64> = replies.iter().map(|r| r.0).collect();
        median(&mut l) > STARTUP_QUEUE * floor * self.floor.uncertainty().exp()
    }

    /// Start-up's window: [`STARTUP_GAIN`] x the bandwidth-delay product of
    /// the best sample so far; never smaller than it was.
    fn grow(&mut self) {
        if let Some(floor) = self.floor.get() {
            let target = (STARTUP_GAIN * self.startup_max * floor).round() as usize;
            self.limit = self.clamp(target.max(self.limit));
        }
    }

    /// A round ended with its (rate, latency); `None` when app-limited.
    fn on_round(&mut self, measured: Option<Measured>, now: Duration) {
        if std::env::var("ADAPTIVE_DEBUG").is_ok() { eprintln!("{:.3} round {} {:?} limit {} measured {:?} rate {:?} floor {:?} gain {:.2}", now.as_secs_f64(), self.rounds, self.phase, self.limit, measured, self.rate.get(), self.floor.get(), self.gain); }
        self.rounds += 1;
        if let Some((_, rounds)) = &mut self.loss {
            *rounds += 1;
        }
        let Some(m) = measured else {
            // Nothing learnt at this window: measure it again.
            self.rate.expire(self.rounds);
            let phase = self.phase;
            self.enter(phase);
            return;
        };
        let rate = m.rate();
        self.rate.update(self.rounds, rate);
        match self.phase {
            Phase::Startup { full, flat } => {
                let best = self.rate.get().unwrap_or(rate);
                if best >= full * STARTUP_GROWTH {
                    if self.floor.get().is_none() {
                        // No floor to size it by: double per growing round.
                        self.limit = self.clamp(self.limit.saturating_mul(2));
                    }
                    self.enter(Phase::Startup {
                        full: best,
                        flat: 0,
                    });
                    return;
                }
                if flat + 1 >= STARTUP_FLAT_ROUNDS {
                    self.drain(now);
                } else {
                    self.enter(Phase::Startup {
                        full,
                        flat: flat + 1,
                    });
                }
            }
            Phase::Cruise { rounds } => {
                if let (Some(last), true) = (self.held.last, self.held.window == m.window) {
                    // Two rounds at one window differ by noise alone.
                    let d = m.log_rate - last;
                    let sample = (m.window as f64 * d * d / 2.0).min(9.0 * self.noise);
                    self.noise += NOISE_WEIGHT * (sample - self.noise);
                }
                self.held.add(&m);
                if rounds + 1 >= self.cruise {
                    self.probe_up();
                } else {
                    self.enter(Phase::Cruise { rounds: rounds + 1 });
                }
            }
            Phase::Up { from } => {
                let growth = self.limit as f64 / from as f64 - 1.0;
                // Kept when the rate rose by a share of the growth, beyond noise.
                let rose = self
                    .held
                    .compare(&m, self.noise)
                    .is_some_and(|(ratio, z)| ratio >= 1.0 + RISE * growth && z >= SIGNIFICANT);
                if rose {
                    // The rate rose: keep the higher window, and try higher.
                    self.hold(self.limit);
                    self.held = Held::of(&m);
                    self.streak += 1;
                    self.cruise = FIRST_CRUISE;
                    self.probe_up();
                } else if self.streak > 0 {
                    // A doubled step went too far: try the first step again.
                    self.streak = 0;
                    self.limit = from;
                    self.probe_up();
                } else if self.queued() {
                    self.probe_down(from);
                } else {
                    // No queue to drain and none to test for.
                    self.limit = from;
                    self.settled();
                }
            }
            Phase::Down { from } => {
                let cut = 1.0 - self.limit as f64 / from as f64;
                // Kept when the rate lost less than a share of the cut.
                let kept = self
                    .held
                    .compare(&m, self.noise)
                    .is_none_or(|(ratio, _)| ratio >= 1.0 - FALL * cut);
                if kept {
                    // As fast with fewer: keep the lower window.
                    self.hold(self.limit);
                    self.held = Held::of(&m);
                    self.cruise = FIRST_CRUISE;
                    self.enter(Phase::Cruise { rounds: 0 });
                } else {
                    self.limit = from;
                    self.settled();
                }
            }
            Phase::Alone | Phase::ProbeRtt { .. } => {
                let phase = self.phase;
                self.enter(phase);
            }
        }
    }

    /// A probe changed nothing: cruise twice as long before the next.
    fn settled(&mut self) {
        self.cruise = (self.cruise * 2).min(CRUISE_ROUNDS);
        self.enter(Phase::Cruise { rounds: 0 });
    }

    /// Tries [`PROBE_UP`] times the window for a round (never the window
    /// that drew a recent loss).
    fn probe_up(&mut self) {
        let from = self.limit;
        let step = (PROBE_UP - 1.0) * f64::from(1u32 << self.streak.min(4));
        let mut up = ((from as f64 * (1.0 + step)).round() as usize).max(from + 1);
        // By Little's law the bottleneck rate needs `rate x latency` in
        // flight at today's latency: when the window held delivers well
        // below it, try that at once (up to twice the window).
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

    /// Whether the window held ran above the floor by [`QUEUED`], beyond
    /// what the floor's own error allows: requests wait at the server, or
    /// it batches; only then is a smaller window worth a try.
    fn queued(&self) -> bool {
        match (self.held.latency(), self.floor.get()) {
            (Some(latency), Some(floor)) => {
                let margin = (SIGNIFICANT * self.floor.uncertainty()).exp();
                latency > QUEUED * floor * margin
            }
            _ => true,
        }
    }

    /// Tries [`PROBE_DOWN`] times `from` for a round, draining what a probe
    /// up queued.
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
        if self.floor.get().is_none() {
            // Nothing sizes the window yet: measure the floor first.
            self.probe_rtt(o.now, None);
        } else {
            self.enter(Phase::Cruise { rounds: 0 });
        }
        self.changed(o)
    }

    /// The limit, if it differs from the limiter's.
    fn changed(&self, o: &Observation) -> Option<usize> {
        (self.limit != o.limit).then_some(self.limit)
    }
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
            // A 5xx or a broken reply says nothing about load.
            Outcome::Failed => Decision::default(),
        }
    }
}

#[cfg(test)]
mod tests;
