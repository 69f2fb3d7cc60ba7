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
//! permit ▸ retry loop ▸ rate limiter (per attempt) ▸ HTTP attempt.

pub mod adaptive;
pub mod rate;
pub mod retry;

use std::sync::{Arc, Mutex, MutexGuard};

use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

pub use adaptive::AdaptiveConfig;

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

impl StrategySpec {
    /// The name used in specs and reports.
    pub fn name(&self) -> &'static str {
        match self {
            StrategySpec::Sequential => "sequential",
            StrategySpec::SlidingWindow(_) => "sliding_window",
            StrategySpec::Adaptive(_) => "adaptive",
        }
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
            n => match n.parse::<usize>() {
                Ok(0) => Err("a window must be at least 1".into()),
                Ok(n) => Ok(StrategySpec::SlidingWindow(n)),
                Err(_) => Err(format!(
                    "`{n}` is not `sequential`, `adaptive` or a number such as 8"
                )),
            },
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
    /// The server said slow down (429/503), maybe with how long to wait.
    Throttled { retry_after: Option<Duration> },
    /// The attempt ran out of time.
    Timeout,
    /// Any other failure.
    Failed,
}

/// One outcome with the limiter's view of the request that produced it.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    pub outcome: Outcome,
    /// Dispatch number of the request (1, 2, ...): outcomes of requests sent
    /// before a limit change belong to the old limit.
    pub seq: u64,
    /// Requests in flight right after this one was admitted, itself included.
    pub in_flight_at_start: usize,
    /// The limit when it was admitted.
    pub limit_at_start: usize,
    /// The last dispatch number handed out so far.
    pub latest_seq: u64,
    pub limit: usize,
}

/// What a strategy wants after an observation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Decision {
    /// A new limit, if it should change.
    pub limit: Option<usize>,
    /// Admit nothing new for this long (a server's Retry-After).
    pub pause: Option<Duration>,
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
}

struct State {
    strategy: Box<dyn Strategy>,
    limit: usize,
    /// Permits to forget as they come back, after a cut bigger than the free slots.
    debt: usize,
    in_flight: usize,
    seq: u64,
    paused_until: Option<Instant>,
    /// (time since start, limit) at every change, the first included.
    history: Vec<(Duration, usize)>,
}

/// The right to have one request in flight; returned to the limiter on drop.
#[must_use = "dropping the permit frees the slot at once"]
pub struct Permit {
    slot: Option<OwnedSemaphorePermit>,
    limiter: Arc<Limiter>,
    seq: u64,
    in_flight_at_start: usize,
    limit_at_start: usize,
}

impl Limiter {
    /// A limiter that starts at the strategy's initial limit.
    pub fn new(strategy: Box<dyn Strategy>) -> Arc<Limiter> {
        let limit = strategy.initial_limit().max(1);
        Arc::new(Limiter {
            semaphore: Arc::new(Semaphore::new(limit)),
            state: Mutex::new(State {
                strategy,
                limit,
                debt: 0,
                in_flight: 0,
                seq: 0,
                paused_until: None,
                history: vec![(Duration::ZERO, limit)],
            }),
            started: Instant::now(),
        })
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the counters half-updated
        // in a way that matters more than stopping; keep going with the data.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Waits for a free slot (and for any pause a server asked for).
    pub async fn acquire(self: &Arc<Self>) -> Permit {
        loop {
            let slot = Arc::clone(&self.semaphore)
                .acquire_owned()
                .await
                .expect("the limiter never closes its semaphore");
            let wait = self.paused_for();
            if let Some(d) = wait {
                // Hold the slot through the pause: nothing may be sent anyway.
                tokio::time::sleep(d).await;
            }
            let mut s = self.state();
            if s.debt > 0 {
                // The limit was cut between the grant and now: this slot pays the
                // cut back instead, and we wait for the next one.
                s.debt -= 1;
                slot.forget();
                continue;
            }
            s.seq += 1;
            s.in_flight += 1;
            debug_assert!(
                s.in_flight <= s.limit,
                "in flight {} over limit {}",
                s.in_flight,
                s.limit
            );
            return Permit {
                slot: Some(slot),
                limiter: Arc::clone(self),
                seq: s.seq,
                in_flight_at_start: s.in_flight,
                limit_at_start: s.limit,
            };
        }
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.state().limit
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.state().in_flight
    }

    /// How long admissions stay paused, if they are.
    pub fn paused_for(&self) -> Option<Duration> {
        self.state()
            .paused_until
            .and_then(|t| t.checked_duration_since(Instant::now()))
            .filter(|d| !d.is_zero())
    }

    /// Every limit change so far: (time since start, new limit).
    pub fn history(&self) -> Vec<(Duration, usize)> {
        self.state().history.clone()
    }

    /// Sets the limit: new slots open at once; a cut takes back free slots now
    /// and the rest as in-flight requests finish. Waiters are never dropped.
    fn set_limit(&self, s: &mut State, new: usize) {
        let new = new.max(1);
        if new == s.limit {
            return;
        }
        if new > s.limit {
            let mut grow = new - s.limit;
            let repaid = grow.min(s.debt);
            s.debt -= repaid;
            grow -= repaid;
            self.semaphore.add_permits(grow);
        } else {
            let cut = s.limit - new;
            let forgotten = self.semaphore.forget_permits(cut);
            s.debt += cut - forgotten;
        }
        s.limit = new;
        s.history.push((self.started.elapsed(), new));
    }
}

impl Permit {
    /// Tells the strategy how an attempt went; it may resize the limiter or pause it.
    pub fn report(&self, outcome: &Outcome) {
        let limiter = &self.limiter;
        let mut s = limiter.state();
        let observation = Observation {
            outcome: outcome.clone(),
            seq: self.seq,
            in_flight_at_start: self.in_flight_at_start,
            limit_at_start: self.limit_at_start,
            latest_seq: s.seq,
            limit: s.limit,
        };
        let decision = s.strategy.observe(&observation);
        if let Some(new) = decision.limit {
            limiter.set_limit(&mut s, new);
        }
        if let Some(pause) = decision.pause {
            let now = Instant::now();
            let until = now.checked_add(pause).unwrap_or(now);
            s.paused_until = Some(s.paused_until.map_or(until, |t| t.max(until)));
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        let mut s = self.limiter.state();
        s.in_flight -= 1;
        if let Some(slot) = self.slot.take() {
            if s.debt > 0 {
                s.debt -= 1;
                slot.forget();
            }
        }
    }
}

#[cfg(test)]
mod tests;
