//! Concurrency strategies: how many requests may be in flight at once.
//!
//! A [`Strategy`] only decides the limit; the [`Limiter`] enforces it with one
//! semaphore and hands out RAII [`Permit`]s that travel with each in-flight
//! sample and come back on drop, whatever the sample's fate (tower's
//! `ConcurrencyLimit` pattern). Strategies see every request's [`Outcome`] and
//! may change the limit or ask for a pause; the limiter resizes the same
//! semaphore (adding permits, or forgetting them as they come back), so no
//! permit or waiter is ever lost and in-flight never grows past the limit.
//! Nothing here knows about HTTP.
//!
//! Order of the layers around one request (outermost first): concurrency
//! permit ▸ retry loop ▸ the endpoint's pause ▸ rate limiter (per attempt) ▸
//! HTTP attempt.

pub mod adaptive;
pub mod delivery;
pub mod pause;
pub mod pool;
pub mod rate;
pub mod retry;
pub mod share;
#[cfg(test)]
mod sim;

use std::sync::{Arc, Mutex, MutexGuard};

use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use adaptive::AdaptiveConfig;
use delivery::{Delivery, RateSample, Stamp};

/// The most requests any strategy may keep in flight (`max_concurrency`,
/// adaptive's `max`, `--concurrency N`). Far above what one endpoint serves
/// well, it keeps an absurd value from exhausting sockets and memory.
pub const MAX_WINDOW: usize = 10_000;

/// The strategy a spec or `--concurrency` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrategySpec {
    /// One request at a time.
    Sequential,
    /// At most N in flight; a new one starts the moment any finishes.
    SlidingWindow(usize),
    /// Finds the limit from latency and throttling, between `min` and `max`.
    Adaptive(AdaptiveConfig),
}

/// A strategy's name, as written in specs (`strategy:`) and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum StrategyName {
    Sequential,
    SlidingWindow,
    Adaptive,
}

impl StrategyName {
    pub fn as_str(self) -> &'static str {
        match self {
            StrategyName::Sequential => "sequential",
            StrategyName::SlidingWindow => "sliding_window",
            StrategyName::Adaptive => "adaptive",
        }
    }
}

impl std::fmt::Display for StrategyName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A stored strategy name this version does not know.
#[derive(Debug, thiserror::Error)]
#[error("the store names an unknown strategy `{0}`")]
pub struct UnknownStrategy(pub String);

impl std::str::FromStr for StrategyName {
    type Err = UnknownStrategy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        [
            StrategyName::Sequential,
            StrategyName::SlidingWindow,
            StrategyName::Adaptive,
        ]
        .into_iter()
        .find(|n| n.as_str() == s)
        .ok_or_else(|| UnknownStrategy(s.to_owned()))
    }
}

impl StrategySpec {
    /// Which strategy this is.
    pub fn kind(&self) -> StrategyName {
        match self {
            StrategySpec::Sequential => StrategyName::Sequential,
            StrategySpec::SlidingWindow(_) => StrategyName::SlidingWindow,
            StrategySpec::Adaptive(_) => StrategyName::Adaptive,
        }
    }

    /// The name used in specs and reports.
    pub fn name(&self) -> &'static str {
        self.kind().as_str()
    }

    /// The largest number of requests it lets run at once.
    pub fn max_concurrency(&self) -> usize {
        match self {
            StrategySpec::Sequential => 1,
            StrategySpec::SlidingWindow(n) => *n,
            StrategySpec::Adaptive(c) => c.max,
        }
    }

    /// Parses `--concurrency`: `sequential`, `adaptive`, or a window size.
    pub fn parse_cli(text: &str) -> Result<StrategySpec, String> {
        match text {
            "sequential" => Ok(StrategySpec::Sequential),
            "adaptive" => Ok(StrategySpec::Adaptive(AdaptiveConfig::default())),
            n => match n.parse::<u128>() {
                Ok(0) => Err("a window must be at least 1".into()),
                Ok(n) if n > MAX_WINDOW as u128 => Err(format!(
                    "a window of at most {MAX_WINDOW} requests is supported, not {n}"
                )),
                Ok(n) => Ok(StrategySpec::SlidingWindow(n as usize)),
                Err(_) => Err(format!(
                    "`{n}` is not `sequential`, `adaptive` or a number such as 8"
                )),
            },
        }
    }

    /// The same strategy with at most `max` requests in flight.
    pub fn capped(self, max: usize) -> StrategySpec {
        let max = max.max(1);
        match self {
            StrategySpec::Sequential => StrategySpec::Sequential,
            StrategySpec::SlidingWindow(n) => StrategySpec::SlidingWindow(n.min(max)),
            StrategySpec::Adaptive(c) => StrategySpec::Adaptive(AdaptiveConfig {
                initial: c.initial.min(max),
                min: c.min.min(max),
                max: c.max.min(max),
            }),
        }
    }

    /// Builds the strategy.
    pub fn build(&self) -> Box<dyn Strategy> {
        match self {
            StrategySpec::Adaptive(config) => Box::new(adaptive::Adaptive::new(*config)),
            fixed => Box::new(Fixed {
                limit: fixed.max_concurrency(),
            }),
        }
    }
}

impl std::fmt::Display for StrategySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StrategySpec::Sequential => f.write_str("sequential"),
            StrategySpec::SlidingWindow(n) => write!(f, "sliding_window({n})"),
            StrategySpec::Adaptive(c) => {
                write!(f, "adaptive({}..{}, from {})", c.min, c.max, c.initial)
            }
        }
    }
}

/// What happened to one request attempt, as a strategy sees it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// A reply arrived.
    Success {
        latency: Duration,
        completion_tokens: Option<u64>,
    },
    /// The server said slow down (429/503). How long to wait is the retry
    /// loop's and the endpoint pause's business, not the strategy's.
    Throttled,
    /// The attempt ran out of time.
    Timeout,
    /// The server answered and refused the request as sent (a 4xx, or a
    /// reply too large or without the output): it is up, and another
    /// attempt would get the same.
    Refused,
    /// Any other failure (a 5xx, a dropped connection, a garbled reply).
    Failed,
}

/// One outcome with the limiter's view of the request that produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub outcome: Outcome,
    /// Dispatch number of the request (1, 2, ...): outcomes of requests sent
    /// before a limit change belong to the old limit.
    pub seq: u64,
    /// Requests at the server when this attempt was sent, itself included:
    /// not those holding a slot while they wait on backoff or a rate limit.
    /// At a first-come-first-served server this is what sets its latency.
    pub at_server: usize,
    /// The limit when it was admitted.
    pub limit_at_start: usize,
    /// Requests at the server as this outcome is reported, itself excluded.
    pub at_server_now: usize,
    /// Requests holding a slot as this outcome is reported but not at the
    /// server: waiting on the client's rate limit, backoff or a pause.
    pub held_back_now: usize,
    /// The last dispatch number handed out so far.
    pub latest_seq: u64,
    pub limit: usize,
    /// When the outcome came, since the limiter started.
    pub now: Duration,
    /// No other request was at the server from this one's send to its reply:
    /// its latency is the server's unloaded latency.
    pub alone: bool,
    /// The delivery rate this reply samples (successes only).
    pub sample: Option<RateSample>,
}

/// What a strategy wants after an observation. (A server's wait is not the
/// strategy's business: the endpoint's [`pause::Pause`] holds every request.)
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Decision {
    /// A new limit, if it should change.
    pub limit: Option<usize>,
}

/// Decides the in-flight limit.
pub trait Strategy: Send {
    /// The limit to start with.
    fn initial_limit(&self) -> usize;
    /// Sees each attempt's outcome.
    fn observe(&mut self, _observation: &Observation) -> Decision {
        Decision::default()
    }
}

/// `sequential` and `sliding_window`: a fixed limit.
struct Fixed {
    limit: usize,
}

impl Strategy for Fixed {
    fn initial_limit(&self) -> usize {
        self.limit
    }
}

/// Enforces the strategy's limit on in-flight requests.
pub struct Limiter {
    semaphore: Arc<Semaphore>,
    state: Mutex<State>,
    started: Instant,
    /// Set when the limiter is one replica's in a [`pool::Pool`] of several.
    replica: Option<pool::Replica>,
    /// Its replica's place in the pool (0 with one endpoint).
    index: usize,
}

struct State {
    strategy: Box<dyn Strategy>,
    limit: usize,
    /// Permits to forget as they come back, after a cut bigger than the free slots.
    debt: usize,
    /// Slots held (samples between admission and reply).
    in_flight: usize,
    /// Of those, requests at the server now.
    at_server: usize,
    /// Of those, samples waiting to try again or on the client's rate limit.
    waiting: usize,
    seq: u64,
    /// Attempts sent so far.
    sends: u64,
    /// (time since start, limit) at every change, the first included.
    history: Vec<(Duration, usize)>,
    /// Since when every held slot has been waiting, with none at the server.
    blocked_since: Option<Instant>,
    /// Replies delivered, for rate samples.
    delivery: Delivery,
    totals: Totals,
    /// Whether the endpoint keeps failing (for a replica of a pool).
    health: pool::Health,
    /// Its part of a fleet's window, when workers share one ([`share`]).
    fleet: Option<FleetPart>,
}

/// A limiter's part of a fleet's window: its limit is its slots of it.
struct FleetPart {
    place: share::Place,
    /// The fleet's window: the strategy's own on the leader.
    window: usize,
}

/// What the limiter saw of a run, for its timing report.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    /// Slot time: the sum over samples of the time they held a slot, failed
    /// attempts, backoff and rate-limit waits included.
    pub held: Duration,
    /// Sum over attempts, failed ones included, of their time at the server.
    pub at_server: Duration,
    /// Wall-clock time during which slots were held but every one of them was
    /// waiting (backoff, a server's pause, the rate limiter): the run was blocked.
    pub blocked: Duration,
    /// Samples that sent at least one attempt.
    pub samples: u64,
    /// Attempts sent.
    pub attempts: u64,
    /// Attempts answered "slow down" (429/503).
    pub throttled: u64,
    /// Successful attempts that had the server to themselves from send to
    /// reply, and the sum of their latencies: the unloaded latency.
    pub unloaded: u64,
    pub unloaded_sum: Duration,
    /// Attempts that failed (errors and timeouts, not throttling).
    pub failed: u64,
    /// Times the endpoint was rested (a replica of several).
    pub rests: u64,
}

impl State {
    /// The window the strategy steers: the fleet's when this is one worker's
    /// part of it, else the limit.
    fn window(&self) -> usize {
        self.fleet.as_ref().map_or(self.limit, |f| f.window)
    }

    /// Requests at the server from the rest of the fleet.
    fn others(&self) -> usize {
        self.fleet.as_ref().map_or(0, |f| f.place.others_in_flight)
    }

    /// Opens or closes a blocked stretch after a change of the counters.
    fn update_blocked(&mut self, now: Instant) {
        let blocked = self.waiting > 0 && self.at_server == 0;
        match (blocked, self.blocked_since) {
            (true, None) => self.blocked_since = Some(now),
            (false, Some(since)) => {
                self.totals.blocked += now.saturating_duration_since(since);
                self.blocked_since = None;
            }
            _ => {}
        }
    }
}

/// The right to have one request in flight; returned to the limiter on drop.
#[must_use = "dropping the permit frees the slot at once"]
pub struct Permit {
    slot: Option<OwnedSemaphorePermit>,
    limiter: Arc<Limiter>,
    seq: u64,
    limit_at_start: usize,
    admitted: Instant,
    attempt: Mutex<Attempt>,
    /// The totals of the run the permit's sample belongs to, when its
    /// window is shared with other runs (the cells of a matrix).
    tally: Option<Arc<Tally>>,
}

/// One run's share of the [`Totals`] of a window it shares with others:
/// its samples' slot time, attempts and outcomes (the blocked time and
/// rests stay the window's).
#[derive(Debug, Default)]
pub struct Tally(Mutex<Totals>);

impl Tally {
    /// What the run's samples added up to.
    pub fn totals(&self) -> Totals {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The permit's current attempt, as the limiter counts it.
#[derive(Default)]
struct Attempt {
    /// When it was sent.
    sent: Option<Instant>,
    /// Requests at the server when it was sent, itself included (and the
    /// rest of the fleet's, on a fleet's leader).
    at_server: usize,
    /// `State::sends` right after it was sent.
    sends_at_start: u64,
    /// No other request was at the server from its send to its reply.
    alone: bool,
    waiting: bool,
    /// What had been delivered when it was sent.
    stamp: Stamp,
    /// When its reply (or failure) came, since the limiter started.
    ended: Duration,
    /// Sent and not yet reported: counted out at the server by `delivery`.
    outstanding: bool,
}

impl Limiter {
    /// A limiter that starts at the strategy's initial limit.
    pub fn new(strategy: Box<dyn Strategy>) -> Arc<Limiter> {
        Arc::new(Limiter::build(strategy, None))
    }

    fn build(strategy: Box<dyn Strategy>, replica: Option<pool::Replica>) -> Limiter {
        let limit = strategy.initial_limit().max(1);
        Limiter {
            semaphore: Arc::new(Semaphore::new(limit)),
            state: Mutex::new(State {
                strategy,
                limit,
                debt: 0,
                in_flight: 0,
                at_server: 0,
                waiting: 0,
                seq: 0,
                sends: 0,
                history: vec![(Duration::ZERO, limit)],
                blocked_since: None,
                delivery: Delivery::default(),
                totals: Totals::default(),
                health: pool::Health::default(),
                fleet: None,
            }),
            started: Instant::now(),
            replica,
            index: 0,
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the counters half-updated
        // in a way that matters more than stopping; keep going with the data.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits for a free slot.
    pub async fn acquire(self: &Arc<Self>) -> Permit {
        loop {
            let slot = Arc::clone(&self.semaphore)
                .acquire_owned()
                .await
                .expect("the limiter never closes its semaphore");
            if let Some(permit) = self.admit(slot) {
                return permit;
            }
        }
    }

    /// A free slot now, if there is one.
    pub fn try_acquire(self: &Arc<Self>) -> Option<Permit> {
        let slot = Arc::clone(&self.semaphore).try_acquire_owned().ok()?;
        self.admit(slot)
    }

    /// Slots free now.
    pub fn free(&self) -> usize {
        self.semaphore.available_permits()
    }

    /// Turns a granted slot into a permit, unless the limit was cut between
    /// the grant and now: then the slot pays the cut back instead.
    fn admit(self: &Arc<Self>, slot: OwnedSemaphorePermit) -> Option<Permit> {
        let mut s = self.state();
        if s.debt > 0 {
            s.debt -= 1;
            slot.forget();
            return None;
        }
        s.seq += 1;
        s.in_flight += 1;
        debug_assert!(
            s.in_flight <= s.limit,
            "in flight {} over limit {}",
            s.in_flight,
            s.limit
        );
        Some(Permit {
            slot: Some(slot),
            limiter: Arc::clone(self),
            seq: s.seq,
            limit_at_start: s.window(),
            admitted: Instant::now(),
            attempt: Mutex::new(Attempt::default()),
            tally: None,
        })
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.state().limit
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.state().in_flight
    }

    /// Every limit change so far: (time since start, new limit).
    pub fn history(&self) -> Vec<(Duration, usize)> {
        self.state().history.clone()
    }

    /// What the limiter has counted so far (a blocked stretch still open included).
    pub fn totals(&self) -> Totals {
        let s = self.state();
        let mut totals = s.totals;
        if let Some(since) = s.blocked_since {
            totals.blocked += since.elapsed();
        }
        totals
    }

    /// Takes this limiter's part of a fleet's shared window after a sync:
    /// on the leader the strategy steers the fleet's window and sees the
    /// others' requests and replies as its own; on the others it rests and
    /// the limit is their slots of the leader's window. A worker that comes
    /// to lead starts a new controller from the fleet's window.
    pub fn share(&self, place: share::Place, remote: share::Delivered, config: AdaptiveConfig) {
        let mut s = self.state();
        let was_leader = s.fleet.as_ref().map(|f| f.place.leader);
        let window = match (place.leader, was_leader) {
            (true, Some(true)) | (true, None) => s.window(),
            (true, Some(false)) => {
                let window = s.window().max(1);
                let initial = AdaptiveConfig {
                    initial: window,
                    ..config
                };
                s.strategy = StrategySpec::Adaptive(initial).build();
                s.strategy.initial_limit()
            }
            (false, _) => place.window.unwrap_or(0),
        };
        if place.leader {
            let now = self.started.elapsed();
            s.delivery
                .on_remote(remote.replies, remote.tokens, now, remote.every);
        }
        s.fleet = Some(FleetPart { place, window });
        self.set_window(&mut s, window);
    }

    /// What this limiter has out, and the window it steers, for the fleet.
    pub fn fleet_report(&self) -> share::Report {
        let s = self.state();
        share::Report {
            in_flight: s.in_flight as u64,
            delivered: s.delivery.delivered(),
            tokens: s.delivery.tokens(),
            wants: false,
            steers: false,
            window: s
                .fleet
                .as_ref()
                .filter(|f| f.place.leader)
                .map(|f| f.window as u64),
        }
    }

    /// Sets the strategy's window, and the limit to this limiter's part of it.
    fn set_window(&self, s: &mut State, window: usize) {
        let limit = match &mut s.fleet {
            Some(f) => {
                f.window = window;
                f.place.slots(window)
            }
            None => window,
        };
        self.set_limit(s, limit);
    }

    /// Sets the limit: new slots open at once; a cut takes back free slots now
    /// and the rest as in-flight requests finish. Waiters are never dropped.
    /// Only a worker's part of a fleet's window may be none.
    fn set_limit(&self, s: &mut State, new: usize) {
        let new = if s.fleet.is_some() { new } else { new.max(1) };
        if new == s.limit {
            return;
        }
        if new > s.limit {
            let mut grow = new - s.limit;
            let repaid = grow.min(s.debt);
            s.debt -= repaid;
            grow -= repaid;
            self.semaphore.add_permits(grow);
            self.freed();
        } else {
            let cut = s.limit - new;
            let forgotten = self.semaphore.forget_permits(cut);
            s.debt += cut - forgotten;
        }
        s.limit = new;
        s.history.push((self.started.elapsed(), new));
    }

    /// Tells the pool, if any, that a slot may have come free.
    fn freed(&self) {
        if let Some(replica) = &self.replica {
            replica.freed.notify_waiters();
        }
    }
}

impl Permit {
    /// Counts the permit's attempts and slot time in `tally` too.
    pub fn tallied(mut self, tally: Option<&Arc<Tally>>) -> Permit {
        self.tally = tally.cloned();
        self
    }

    /// Applies `f` to the run's tally, when the window is shared.
    fn tally(&self, f: impl FnOnce(&mut Totals)) {
        if let Some(t) = &self.tally {
            f(&mut t.0.lock().unwrap_or_else(|p| p.into_inner()));
        }
    }

    fn attempt(&self) -> MutexGuard<'_, Attempt> {
        self.attempt
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Marks an attempt as sent to the server until the guard is dropped.
    pub fn sending(&self) -> Sending<'_> {
        let mut s = self.limiter.state();
        let mut a = self.attempt();
        let now = Instant::now();
        s.at_server += 1;
        s.sends += 1;
        s.totals.attempts += 1;
        let first = a.sent.is_none();
        if first {
            s.totals.samples += 1;
        }
        self.tally(|t| {
            t.attempts += 1;
            t.samples += u64::from(first);
        });
        if std::mem::take(&mut a.waiting) {
            s.waiting -= 1;
        }
        s.update_blocked(now);
        if std::mem::replace(&mut a.outstanding, true) {
            s.delivery.on_failure();
        }
        a.stamp = s
            .delivery
            .on_send(now.saturating_duration_since(self.limiter.started));
        a.sent = Some(now);
        a.at_server = s.at_server + s.others();
        a.sends_at_start = s.sends;
        Sending { permit: self }
    }

    /// The sample is ready to send: until its attempt goes out it counts as
    /// waiting (on the endpoint's pause, the rate limiter), not at the server.
    pub fn ready(&self) {
        self.set_waiting(true);
    }

    fn set_waiting(&self, waiting: bool) {
        let mut s = self.limiter.state();
        let mut a = self.attempt();
        if a.waiting != waiting {
            a.waiting = waiting;
            if waiting {
                s.waiting += 1;
            } else {
                s.waiting -= 1;
            }
            s.update_blocked(Instant::now());
        }
    }

    /// Tells the strategy how an attempt went; it may resize the limiter.
    pub fn report(&self, outcome: &Outcome) {
        let limiter = &self.limiter;
        let (at_server, alone, stamp, ended, outstanding) = {
            let mut a = self.attempt();
            let outstanding = std::mem::take(&mut a.outstanding);
            (a.at_server, a.alone, a.stamp, a.ended, outstanding)
        };
        match outcome {
            Outcome::Success { .. } => {}
            // A failed attempt is retried after a wait, or the slot is given back.
            _ => self.set_waiting(true),
        }
        let mut s = limiter.state();
        if limiter.replica.is_some() && s.health.observe(outcome, Instant::now()) {
            s.totals.rests += 1;
        }
        let count = |t: &mut Totals| match outcome {
            Outcome::Success { latency, .. } if alone => {
                t.unloaded += 1;
                t.unloaded_sum += *latency;
            }
            Outcome::Throttled => t.throttled += 1,
            Outcome::Timeout | Outcome::Failed => t.failed += 1,
            _ => {}
        };
        count(&mut s.totals);
        self.tally(count);
        let sample = match outcome {
            Outcome::Success {
                completion_tokens, ..
            } if outstanding => Some(s.delivery.on_reply(&stamp, ended, *completion_tokens)),
            _ => {
                if outstanding {
                    s.delivery.on_failure();
                }
                None
            }
        };
        let observation = Observation {
            outcome: outcome.clone(),
            seq: self.seq,
            at_server,
            limit_at_start: self.limit_at_start,
            at_server_now: s.at_server + s.others(),
            held_back_now: s.in_flight.saturating_sub(s.at_server + 1),
            latest_seq: s.seq,
            limit: s.window(),
            now: ended,
            alone,
            sample,
        };
        // A follower's window is the leader's: its own controller rests.
        if s.fleet.as_ref().is_some_and(|f| !f.place.leader) {
            return;
        }
        let decision = s.strategy.observe(&observation);
        if let Some(new) = decision.limit {
            limiter.set_window(&mut s, new);
        }
    }
}

/// An attempt at the server; see [`Permit::sending`].
pub struct Sending<'a> {
    permit: &'a Permit,
}

impl Drop for Sending<'_> {
    fn drop(&mut self) {
        let mut s = self.permit.limiter.state();
        let mut a = self.permit.attempt();
        let now = Instant::now();
        if let Some(sent) = a.sent {
            let at_server = now.saturating_duration_since(sent);
            s.totals.at_server += at_server;
            self.permit.tally(|t| t.at_server += at_server);
        }
        // Nobody else was at the server when it went, nor sent while it was out.
        a.alone = a.at_server == 1 && s.sends == a.sends_at_start && s.others() == 0;
        a.ended = now.saturating_duration_since(self.permit.limiter.started);
        s.at_server -= 1;
        s.update_blocked(now);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let held = self.admitted.elapsed();
        let (waiting, outstanding) = {
            let mut a = self.attempt();
            (
                std::mem::take(&mut a.waiting),
                std::mem::take(&mut a.outstanding),
            )
        };
        let mut s = self.limiter.state();
        if outstanding {
            // Sent, and never reported: cancelled with the sample.
            s.delivery.on_failure();
        }
        s.in_flight -= 1;
        s.totals.held += held;
        self.tally(|t| t.held += held);
        if waiting {
            s.waiting -= 1;
            s.update_blocked(Instant::now());
        }
        if let Some(slot) = self.slot.take() {
            if s.debt > 0 {
                s.debt -= 1;
                slot.forget();
            }
        }
        drop(s);
        // The slot is back in the semaphore (dropped above): a pool waiting
        // for any replica's slot looks again.
        self.limiter.freed();
    }
}

#[cfg(test)]
mod tests;
