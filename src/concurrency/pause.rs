//! One pause per endpoint: when a throttled answer says how long to wait,
//! nobody sends to that endpoint until the wait is over.
//!
//! A 429 with a hint ("retry in 60 s") speaks for the endpoint's quota, not
//! for one request: every other request of the run would draw the same answer.
//! So the retry loop extends the endpoint's [`Pause`] by the hint, and every
//! attempt to that endpoint (of every sample of every evaluation of the run,
//! first attempts included) waits for it first. Waiters wake a little apart,
//! a random 0-10% of the pause (at most 1 s) after its end, so the requests
//! held back do not all reach the server in the same millisecond.
//!
//! [`Pauses`] holds one [`Pause`] per endpoint (its base URL) for a run, like
//! [`RateLimits`](crate::concurrency::rate::RateLimits) holds its rate limits. The clock is
//! tokio's, so tests run on paused time.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

/// The most a waiter's wake-up is spread past the end of a pause.
const MAX_SPREAD: Duration = Duration::from_secs(1);
/// The spread as a share of the pause.
const SPREAD_SHARE: f64 = 0.1;

/// One endpoint's pause.
#[derive(Debug, Default)]
pub struct Pause {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Nothing is sent before this.
    until: Option<Instant>,
    /// How long the latest extension paused for, to size the spread.
    length: Duration,
}

impl Pause {
    pub fn new() -> Pause {
        Pause::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Two plain values, always consistent: a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Pauses the endpoint for `wait` from now, unless it is already paused
    /// for longer: a pause is only ever extended, never shortened.
    pub fn extend(&self, wait: Duration) {
        let now = Instant::now();
        let Some(until) = now.checked_add(wait) else {
            return;
        };
        let mut s = self.state();
        if s.until.is_none_or(|t| t < until) {
            s.until = Some(until);
            s.length = wait;
        }
    }

    /// How long the pause lasts from now (zero when there is none), without
    /// the wake-up spread.
    pub fn remaining(&self) -> Duration {
        let until = self.state().until;
        until.map_or(Duration::ZERO, |t| {
            t.saturating_duration_since(Instant::now())
        })
    }

    /// Waits until the pause is over (at once if there is none), plus this
    /// waiter's share of the spread; returns how long it waited.
    pub async fn wait(&self) -> Duration {
        match self.wait_within(Duration::MAX).await {
            Ok(waited) | Err(waited) => waited,
        }
    }

    /// [`Pause::wait`], unless that would take more than `limit` in all: then
    /// it returns at once (or as soon as an extension during the wait makes it
    /// so) with `Err(remaining pause)`. The spread is cut short rather than
    /// overrun `limit`. `Ok` holds the time waited.
    pub async fn wait_within(&self, limit: Duration) -> Result<Duration, Duration> {
        let start = Instant::now();
        loop {
            let (until, length) = {
                let s = self.state();
                (s.until, s.length)
            };
            let now = Instant::now();
            let waited = now.saturating_duration_since(start);
            let remaining = until.map_or(Duration::ZERO, |t| t.saturating_duration_since(now));
            if remaining.is_zero() {
                return Ok(waited);
            }
            let room = limit.saturating_sub(waited);
            if remaining > room {
                return Err(remaining);
            }
            let spread = length
                .mul_f64(SPREAD_SHARE)
                .min(MAX_SPREAD)
                .mul_f64(fastrand::f64())
                .min(room - remaining);
            tokio::time::sleep(remaining + spread).await;
            // The pause may have been extended meanwhile: look again.
        }
    }
}

/// The pauses of one run, by endpoint.
#[derive(Debug, Default)]
pub struct Pauses {
    by_endpoint: Mutex<HashMap<String, Arc<Pause>>>,
}

impl Pauses {
    /// The pause for `endpoint` (its base URL and model name), shared by every
    /// caller that names it.
    pub fn get(&self, endpoint: &str) -> Arc<Pause> {
        let mut map = self.by_endpoint.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(map.entry(endpoint.to_owned()).or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn without_a_pause_nobody_waits() {
        let pause = Pause::new();
        assert_eq!(pause.remaining(), Duration::ZERO);
        assert_eq!(pause.wait().await, Duration::ZERO);
        assert_eq!(pause.wait_within(Duration::ZERO).await, Ok(Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn waiters_wake_after_the_pause_a_little_apart() {
        let pause = Arc::new(Pause::new());
        pause.extend(Duration::from_secs(5));
        let start = Instant::now();
        let waiters: Vec<_> = (0..20)
            .map(|_| {
                let pause = Arc::clone(&pause);
                tokio::spawn(async move {
                    pause.wait().await;
                    start.elapsed()
                })
            })
            .collect();
        let mut woke = Vec::new();
        for w in waiters {
            woke.push(w.await.unwrap());
        }
        for t in &woke {
            // 5 s, plus at most 10% of it.
            assert!(*t >= Duration::from_secs(5), "{t:?}");
            assert!(*t <= Duration::from_millis(5500), "{t:?}");
        }
        woke.sort();
        woke.dedup();
        assert!(
            woke.len() > 10,
            "20 waiters woke at {} instants",
            woke.len()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_spread_is_capped_at_a_second() {
        let pause = Pause::new();
        pause.extend(Duration::from_secs(60));
        let waited = pause.wait().await;
        assert!(waited >= Duration::from_secs(60), "{waited:?}");
        assert!(waited <= Duration::from_secs(61), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_is_extended_never_shortened() {
        let pause = Pause::new();
        pause.extend(Duration::from_secs(10));
        pause.extend(Duration::from_secs(2));
        assert_eq!(pause.remaining(), Duration::from_secs(10));
        pause.extend(Duration::from_secs(20));
        assert_eq!(pause.remaining(), Duration::from_secs(20));
        // Absurd lengths are ignored, not a panic.
        pause.extend(Duration::MAX);
        assert_eq!(pause.remaining(), Duration::from_secs(20));
    }

    #[tokio::test(start_paused = true)]
    async fn an_extension_during_the_wait_is_waited_for_too() {
        let pause = Arc::new(Pause::new());
        pause.extend(Duration::from_secs(1));
        let extender = Arc::clone(&pause);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            extender.extend(Duration::from_secs(3));
        });
        let waited = pause.wait().await;
        assert!(waited >= Duration::from_millis(3500), "{waited:?}");
        assert!(waited <= Duration::from_millis(3800), "{waited:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_longer_than_the_limit_is_refused_at_once() {
        let pause = Pause::new();
        pause.extend(Duration::from_secs(30));
        let start = Instant::now();
        assert_eq!(
            pause.wait_within(Duration::from_secs(10)).await,
            Err(Duration::from_secs(30))
        );
        assert_eq!(start.elapsed(), Duration::ZERO);
        // Within the limit, the spread never overruns it.
        let waited = pause.wait_within(Duration::from_secs(30)).await;
        assert_eq!(waited, Ok(Duration::from_secs(30)));
    }

    #[tokio::test(start_paused = true)]
    async fn an_extension_past_the_limit_during_the_wait_is_refused() {
        let pause = Arc::new(Pause::new());
        pause.extend(Duration::from_secs(1));
        let extender = Arc::clone(&pause);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            extender.extend(Duration::from_secs(30));
        });
        let start = Instant::now();
        let got = pause.wait_within(Duration::from_secs(5)).await;
        // Woke at the old end (1 s and its spread), saw 29-ish s left, gave up.
        let remaining = got.expect_err("the extended pause is over the limit");
        assert!(remaining >= Duration::from_secs(29), "{remaining:?}");
        assert!(
            start.elapsed() <= Duration::from_millis(1100),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn one_pause_per_endpoint() {
        let pauses = Pauses::default();
        let a = pauses.get("http://a/v1");
        assert!(Arc::ptr_eq(&a, &pauses.get("http://a/v1")));
        assert!(!Arc::ptr_eq(&a, &pauses.get("http://b/v1")));
    }
}
