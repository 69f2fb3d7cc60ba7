//! Concurrency strategies: how many requests may be in flight at once.
//!
//! A [`Strategy`] only decides the limit; the [`Limiter`] enforces it with one
//! semaphore and hands out RAII [`Permit`]s that travel with each in-flight
//! sample and come back on drop, whatever the sample's fate (tower's
//! `ConcurrencyLimit` pattern). A strategy may react to each request's
//! [`Outcome`]; the fixed ones here ignore it, so an adaptive controller can
//! join later without the runner changing. Nothing here knows about HTTP.

pub mod retry;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// The strategy a spec or `--concurrency` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrategySpec {
    /// One request at a time.
    Sequential,
    /// At most N in flight; a new one starts the moment any finishes.
    SlidingWindow(usize),
}

impl StrategySpec {
    /// The name used in specs and reports.
    pub fn name(&self) -> &'static str {
        match self {
            StrategySpec::Sequential => "sequential",
            StrategySpec::SlidingWindow(_) => "sliding_window",
        }
    }

    /// The largest number of requests it lets run at once.
    pub fn max_concurrency(&self) -> usize {
        match self {
            StrategySpec::Sequential => 1,
            StrategySpec::SlidingWindow(n) => *n,
        }
    }

    /// Parses `--concurrency`: `sequential`, `adaptive`, or a window size.
    pub fn parse_cli(text: &str) -> Result<StrategySpec, String> {
        match text {
            "sequential" => Ok(StrategySpec::Sequential),
            "adaptive" => Err(
                "the `adaptive` strategy is not available yet; give a window size such as 8".into(),
            ),
            n => match n.parse::<usize>() {
                Ok(0) => Err("a window must be at least 1".into()),
                Ok(n) => Ok(StrategySpec::SlidingWindow(n)),
                Err(_) => Err(format!("`{n}` is not `sequential` or a number such as 8")),
            },
        }
    }

    /// Builds the strategy.
    pub fn build(&self) -> Box<dyn Strategy> {
        Box::new(Fixed { spec: *self })
    }
}

impl std::fmt::Display for StrategySpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StrategySpec::Sequential => f.write_str("sequential"),
            StrategySpec::SlidingWindow(n) => write!(f, "sliding_window({n})"),
        }
    }
}

/// What happened to one request, as a strategy sees it.
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

/// Decides the in-flight limit. Fixed strategies return one number forever.
pub trait Strategy: Send + Sync {
    /// The limit to start with.
    fn initial_limit(&self) -> usize;
    /// Sees each request's outcome; returns a new limit when it should change.
    fn observe(&self, _outcome: &Outcome) -> Option<usize> {
        None
    }
}

/// `sequential` and `sliding_window`: a fixed limit.
struct Fixed {
    spec: StrategySpec,
}

impl Strategy for Fixed {
    fn initial_limit(&self) -> usize {
        self.spec.max_concurrency()
    }
}

/// Enforces the strategy's limit on in-flight requests.
pub struct Limiter {
    semaphore: Arc<Semaphore>,
    strategy: Box<dyn Strategy>,
    limit: AtomicUsize,
}

/// The right to have one request in flight; returned to the limiter on drop.
#[must_use = "dropping the permit frees the slot at once"]
pub struct Permit {
    _slot: OwnedSemaphorePermit,
    limiter: Arc<Limiter>,
}

impl Limiter {
    /// A limiter that starts at the strategy's initial limit.
    pub fn new(strategy: Box<dyn Strategy>) -> Arc<Limiter> {
        let limit = strategy.initial_limit().max(1);
        Arc::new(Limiter {
            semaphore: Arc::new(Semaphore::new(limit)),
            strategy,
            limit: AtomicUsize::new(limit),
        })
    }

    /// Waits for a free slot.
    pub async fn acquire(self: &Arc<Self>) -> Permit {
        let slot = Arc::clone(&self.semaphore)
            .acquire_owned()
            .await
            .expect("the limiter never closes its semaphore");
        Permit {
            _slot: slot,
            limiter: Arc::clone(self),
        }
    }

    /// The current limit.
    pub fn limit(&self) -> usize {
        self.limit.load(Ordering::Relaxed)
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> usize {
        self.limit()
            .saturating_sub(self.semaphore.available_permits())
    }
}

impl Permit {
    /// Tells the strategy how the request went. The slot is freed when the permit drops.
    pub fn report(&self, outcome: &Outcome) {
        // Fixed strategies never change the limit; resizing arrives with `adaptive`.
        let _ = self.limiter.strategy.observe(outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn parses_cli_values() {
        assert_eq!(
            StrategySpec::parse_cli("sequential"),
            Ok(StrategySpec::Sequential)
        );
        assert_eq!(
            StrategySpec::parse_cli("8"),
            Ok(StrategySpec::SlidingWindow(8))
        );
        assert!(StrategySpec::parse_cli("0").is_err());
        assert!(StrategySpec::parse_cli("fast").is_err());
    }

    #[tokio::test(start_paused = true)]
    async fn window_never_exceeds_limit_and_slides() {
        let limiter = Limiter::new(StrategySpec::SlidingWindow(3).build());
        let running = Arc::new(AtomicUsize::new(0));
        let peak = Arc::new(AtomicUsize::new(0));
        let mut tasks = tokio::task::JoinSet::new();
        let start = tokio::time::Instant::now();
        for i in 0..9u64 {
            let permit = limiter.acquire().await;
            let (running, peak) = (Arc::clone(&running), Arc::clone(&peak));
            tasks.spawn(async move {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                peak.fetch_max(now, Ordering::SeqCst);
                // Uneven durations: a true window refills as each one ends.
                tokio::time::sleep(Duration::from_millis(100 + 50 * (i % 3))).await;
                running.fetch_sub(1, Ordering::SeqCst);
                drop(permit);
            });
        }
        while tasks.join_next().await.is_some() {}
        assert_eq!(peak.load(Ordering::SeqCst), 3);
        assert_eq!(limiter.in_flight(), 0);
        // Batches of 3 would take 3 x 200 ms; a window finishes sooner.
        assert!(
            start.elapsed() < Duration::from_millis(600),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test]
    async fn permit_returns_when_task_is_aborted() {
        let limiter = Limiter::new(StrategySpec::Sequential.build());
        let permit = limiter.acquire().await;
        let task = tokio::spawn(async move {
            let _p = permit;
            std::future::pending::<()>().await;
        });
        task.abort();
        let _ = task.await;
        assert_eq!(limiter.in_flight(), 0);
        let _again = limiter.acquire().await;
    }
}
