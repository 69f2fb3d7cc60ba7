//! Retries: exponential backoff with full jitter for transient failures, and a
//! time budget for throttling.
//!
//! Deciding *whether* to retry belongs to the error (`Retryable`); this module
//! only decides *when*, and when to give up:
//!
//! - A throttling answer (429, 503) is retried until the time this sample has
//!   spent waiting on throttling would exceed `max_wait`; it does not use up
//!   `max_attempts`. A server's hint (see `model::Api::retry_hint`) is honoured as
//!   given, up to `max_wait`: it pauses the whole endpoint (see
//!   [`Pause`](crate::concurrency::pause::Pause)), and a hint longer than the budget left
//!   gives up at once instead of sleeping. Without a hint, the wait is the
//!   jittered backoff below, cut to the budget left.
//! - Any other retryable failure (timeout, connection error, 408, other 5xx)
//!   waits the jittered backoff, and counts against `max_attempts`.
//! - Before every attempt, the first included, the endpoint's pause is waited
//!   out; that wait counts against the budget too.

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::concurrency::pause::Pause;

/// The least a throttled sample waits before trying again, whatever a hint or
/// the backoff says, so a server answering "retry in 0 s" cannot make us spin.
pub const MIN_THROTTLE_WAIT: Duration = Duration::from_millis(10);

/// When and how long to wait before trying a request again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Attempts that may end in a transient failure other than throttling
    /// (timeouts, connection errors, 408, 5xx but 503), the first included.
    pub max_attempts: u32,
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// The longest one sample may spend waiting on throttling (429, 503):
    /// server hints, backoff after them and endpoint pauses, added up.
    pub max_wait: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 5,
            backoff: Duration::from_millis(500),
            max_backoff: Duration::from_secs(30),
            max_wait: Duration::from_secs(5 * 60),
        }
    }
}

/// An error that knows whether trying again could help.
pub trait Retryable {
    /// True for transient failures: 429, 408, 5xx, timeouts, connection errors.
    fn is_retryable(&self) -> bool;
    /// True when the server said to slow down (429, 503): retried within the
    /// `max_wait` budget rather than `max_attempts`.
    fn is_throttling(&self) -> bool;
    /// How long the server asked us to wait, if it said.
    fn retry_after(&self) -> Option<Duration>;
}

/// How to retry: the spec's policy and the endpoint's shared pause.
#[derive(Debug, Clone, Default)]
pub struct Retry {
    pub policy: RetryPolicy,
    /// Waited for before every attempt, and extended by a throttled answer's hint.
    pub pause: Option<Arc<Pause>>,
}

impl Retry {
    /// `policy` with no shared pause (hints are slept by the sample alone).
    pub fn new(policy: RetryPolicy) -> Retry {
        Retry {
            policy,
            pause: None,
        }
    }

    /// The same, with the endpoint's pause.
    pub fn with_pause(mut self, pause: Arc<Pause>) -> Retry {
        self.pause = Some(pause);
        self
    }
}

/// How a retried operation went.
#[derive(Debug)]
pub struct Attempts<T, E> {
    pub result: Result<T, E>,
    /// Attempts made, the first included, throttled ones included.
    pub attempts: u32,
    /// Time spent waiting before attempts: backoff, hints and endpoint pauses.
    pub waited: Duration,
    /// Set when throttling outlasted `max_wait`: why the last error stands.
    pub gave_up: Option<GaveUp>,
}

/// Why retrying stopped on a throttling error with budget rules, for the record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GaveUp {
    /// The server asked to wait longer than the budget left.
    Hint {
        asked: Duration,
        max_wait: Duration,
        left: Duration,
    },
    /// The endpoint is paused (by another sample's hint) for longer than the budget left.
    Paused {
        remaining: Duration,
        max_wait: Duration,
        left: Duration,
    },
    /// Backoff after unhinted throttling used the whole budget.
    Spent { max_wait: Duration, throttled: u32 },
    /// The endpoint was rested for failing again and again, and another
    /// replica can take the request.
    Rested,
}

impl fmt::Display for GaveUp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let budget = |d: &Duration| humantime::format_duration(*d).to_string();
        match self {
            GaveUp::Hint {
                asked,
                max_wait,
                left,
            } => write!(
                f,
                "the server asked to wait {}; retry.max_wait {} left {}",
                seconds(*asked),
                budget(max_wait),
                seconds(*left)
            ),
            GaveUp::Paused {
                remaining,
                max_wait,
                left,
            } => write!(
                f,
                "the endpoint is paused for {} more; retry.max_wait {} left {}",
                seconds(*remaining),
                budget(max_wait),
                seconds(*left)
            ),
            GaveUp::Spent {
                max_wait,
                throttled,
            } => write!(
                f,
                "throttled {throttled} times; retry.max_wait {} spent",
                budget(max_wait)
            ),
            GaveUp::Rested => f.write_str("its replica kept failing and rests"),
        }
    }
}

/// `600 s`, `40 s`, `1.5 s`, `0.25 s`.
fn seconds(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 10.0 {
        return format!("{s:.0} s");
    }
    let text = format!("{s:.2}");
    format!("{} s", text.trim_end_matches('0').trim_end_matches('.'))
}

/// Runs `op` until it succeeds, fails for good, runs out of attempts
/// (non-throttling failures) or out of `max_wait` (throttling); see the module
/// documentation. `on_error` sees every failed attempt (for the concurrency
/// strategy) and answers whether to leave the endpoint ([`GaveUp::Rested`]).
pub async fn run<T, E, F, Fut>(
    retry: &Retry,
    mut op: F,
    mut on_error: impl FnMut(&E) -> bool,
) -> Attempts<T, E>
where
    E: Retryable,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let policy = &retry.policy;
    let mut waited = Duration::ZERO;
    // Time spent waiting on throttling: hints, backoff after 429/503, pauses.
    let mut throttle_waited = Duration::ZERO;
    // Counters saturate: a year of throttling (huge max_wait) must not panic.
    let mut attempts = 0u32;
    let mut failures = 0u32;
    let mut throttles = 0u32;
    let mut last: Option<E> = None;
    let done = |result, attempts, waited, gave_up| Attempts {
        result,
        attempts,
        waited,
        gave_up,
    };
    loop {
        if let Some(pause) = &retry.pause {
            // Before its first answer a sample has nothing to give up with, so
            // it waits the pause out whatever it costs (the pause is at most
            // some sample's budget).
            let limit = match last {
                Some(_) => policy.max_wait.saturating_sub(throttle_waited),
                None => Duration::MAX,
            };
            let began = Instant::now();
            let paused = pause.wait_within(limit).await;
            let d = began.elapsed();
            waited += d;
            throttle_waited += d;
            if let (Err(remaining), Some(e)) = (paused, last.take()) {
                let why = GaveUp::Paused {
                    remaining,
                    max_wait: policy.max_wait,
                    left: policy.max_wait.saturating_sub(throttle_waited),
                };
                return done(Err(e), attempts, waited, Some(why));
            }
        }
        attempts = attempts.saturating_add(1);
        let e = match op().await {
            Ok(v) => return done(Ok(v), attempts, waited, None),
            Err(e) => e,
        };
        let leave = on_error(&e);
        if !e.is_retryable() {
            return done(Err(e), attempts, waited, None);
        }
        if leave {
            return done(Err(e), attempts, waited, Some(GaveUp::Rested));
        }
        let delay = if e.is_throttling() {
            throttles = throttles.saturating_add(1);
            let left = policy.max_wait.saturating_sub(throttle_waited);
            // A zero hint ("now") says nothing: back off as without one.
            match e.retry_after().filter(|d| !d.is_zero()) {
                Some(hint) if hint > left => {
                    let why = GaveUp::Hint {
                        asked: hint,
                        max_wait: policy.max_wait,
                        left,
                    };
                    return done(Err(e), attempts, waited, Some(why));
                }
                Some(hint) => {
                    let hint = hint.max(MIN_THROTTLE_WAIT).min(left);
                    match &retry.pause {
                        // Everyone waits, this sample included, before its next attempt.
                        Some(pause) => {
                            pause.extend(hint);
                            Duration::ZERO
                        }
                        None => hint,
                    }
                }
                None if left.is_zero() => {
                    let why = GaveUp::Spent {
                        max_wait: policy.max_wait,
                        throttled: throttles,
                    };
                    return done(Err(e), attempts, waited, Some(why));
                }
                None => backoff(policy, throttles).max(MIN_THROTTLE_WAIT).min(left),
            }
        } else {
            failures = failures.saturating_add(1);
            if failures >= policy.max_attempts {
                return done(Err(e), attempts, waited, None);
            }
            backoff(policy, failures)
        };
        if !delay.is_zero() {
            // Measured: timers round up, and the budget is about real time.
            let began = Instant::now();
            tokio::time::sleep(delay).await;
            let d = began.elapsed();
            waited += d;
            if e.is_throttling() {
                throttle_waited += d;
            }
        }
        last = Some(e);
    }
}

/// The wait after the `n`-th failure of a kind (1, 2, ...): a uniformly random
/// time in `[0, min(max_backoff, backoff * 2^(n-1))]` ("full jitter").
pub fn backoff(policy: &RetryPolicy, n: u32) -> Duration {
    let ceiling = policy
        .backoff
        .saturating_mul(1u32 << n.saturating_sub(1).min(20))
        .min(policy.max_backoff);
    ceiling.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Mutex;

    /// A test failure: retryable or not, throttling or not, with a hint or not.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum E {
        Permanent,
        Transient,
        Throttled(Option<Duration>),
    }

    impl Retryable for E {
        fn is_retryable(&self) -> bool {
            *self != E::Permanent
        }
        fn is_throttling(&self) -> bool {
            matches!(self, E::Throttled(_))
        }
        fn retry_after(&self) -> Option<Duration> {
            match self {
                E::Throttled(after) => *after,
                _ => None,
            }
        }
    }

    const fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn policy(n: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts: n,
            backoff: Duration::from_millis(100),
            max_backoff: secs(1),
            max_wait: secs(300),
        }
    }

    fn retry(n: u32) -> Retry {
        Retry::new(policy(n))
    }

    fn with_wait(max_wait: Duration) -> Retry {
        Retry::new(RetryPolicy {
            max_wait,
            ..policy(5)
        })
    }

    /// Runs `script` (one entry per attempt, `Ok` past its end), with the time each attempt began.
    async fn scripted(retry: &Retry, script: &[E]) -> (Attempts<u32, E>, Vec<Duration>) {
        let start = Instant::now();
        // Atomics and a mutex rather than cells: the tests spawn this future.
        let calls = AtomicUsize::new(0);
        let times = Mutex::new(Vec::new());
        let out = run(
            retry,
            || {
                let n = calls.fetch_add(1, Ordering::Relaxed);
                times.lock().unwrap().push(start.elapsed());
                let step = script.get(n).copied();
                async move {
                    match step {
                        Some(e) => Err(e),
                        None => Ok(n as u32 + 1),
                    }
                }
            },
            |_| false,
        )
        .await;
        (out, times.into_inner().unwrap())
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_errors_until_success() {
        let (out, _) = scripted(&retry(5), &[E::Transient, E::Transient]).await;
        assert_eq!(out.result.unwrap(), 3);
        assert_eq!(out.attempts, 3);
        assert_eq!(out.gave_up, None);
    }

    #[tokio::test(start_paused = true)]
    async fn stops_on_permanent_errors_and_at_the_cap() {
        let (out, _) = scripted(&retry(5), &[E::Permanent, E::Transient]).await;
        assert_eq!((out.result, out.attempts), (Err(E::Permanent), 1));
        let (out, _) = scripted(&retry(2), &[E::Transient; 5]).await;
        assert_eq!((out.result, out.attempts), (Err(E::Transient), 2));
        assert_eq!(out.gave_up, None);
    }

    #[tokio::test(start_paused = true)]
    async fn throttling_does_not_use_up_max_attempts() {
        let (out, _) = scripted(&retry(2), &[E::Throttled(None); 7]).await;
        assert_eq!(out.result.unwrap(), 8);
        assert_eq!(out.attempts, 8, "every attempt is counted");
        // Other failures still count, throttles in between or not.
        let script = [
            E::Throttled(None),
            E::Transient,
            E::Throttled(None),
            E::Throttled(None),
            E::Transient,
        ];
        let (out, _) = scripted(&retry(2), &script).await;
        assert_eq!((out.result, out.attempts), (Err(E::Transient), 5));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hint_is_honoured_beyond_max_backoff() {
        let start = Instant::now();
        let (out, times) = scripted(&retry(5), &[E::Throttled(Some(secs(60)))]).await;
        assert_eq!(out.result.unwrap(), 2);
        assert_eq!(times, [Duration::ZERO, secs(60)]);
        assert_eq!(out.waited, secs(60));
        assert_eq!(start.elapsed(), secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn a_hint_longer_than_the_budget_left_gives_up_at_once() {
        let retry = with_wait(secs(100));
        let hint = E::Throttled(Some(secs(60)));
        let start = Instant::now();
        let (out, times) = scripted(&retry, &[hint, hint, hint]).await;
        // The first 60 s fit in 100 s; the next 60 do not: no sleeping them.
        assert_eq!(out.result, Err(hint));
        assert_eq!(times, [Duration::ZERO, secs(60)]);
        assert_eq!(start.elapsed(), secs(60));
        assert_eq!((out.attempts, out.waited), (2, secs(60)));
        let why = out.gave_up.expect("gave up on the budget");
        assert_eq!(
            why,
            GaveUp::Hint {
                asked: secs(60),
                max_wait: secs(100),
                left: secs(40)
            }
        );
        assert_eq!(
            why.to_string(),
            "the server asked to wait 60 s; retry.max_wait 1m 40s left 40 s"
        );
        // A hint over the whole budget: not even one wait.
        let (out, times) = scripted(&with_wait(secs(5)), &[E::Throttled(Some(secs(600)))]).await;
        assert_eq!(times.len(), 1);
        assert_eq!(
            out.gave_up.map(|g| g.to_string()).as_deref(),
            Some("the server asked to wait 600 s; retry.max_wait 5s left 5 s")
        );
    }

    #[tokio::test(start_paused = true)]
    async fn unhinted_throttling_backs_off_until_the_budget_is_spent() {
        let start = Instant::now();
        let (out, times) = scripted(&with_wait(secs(3)), &[E::Throttled(None); 1000]).await;
        assert_eq!(out.result, Err(E::Throttled(None)));
        assert!(out.attempts > 3, "{} attempts", out.attempts);
        // Waits are cut to the budget left (give or take the timer's 1 ms ticks).
        let slack = Duration::from_millis(u64::from(out.attempts));
        assert!(
            out.waited >= secs(3) && out.waited <= secs(3) + slack,
            "{:?}",
            out.waited
        );
        assert_eq!(start.elapsed(), out.waited);
        // Jittered exponential backoff: no wait over max_backoff.
        for pair in times.windows(2) {
            assert!(pair[1] - pair[0] <= secs(1), "{times:?}");
        }
        let why = out.gave_up.expect("gave up on the budget");
        assert_eq!(
            why,
            GaveUp::Spent {
                max_wait: secs(3),
                throttled: out.attempts
            }
        );
        assert!(
            why.to_string().ends_with("retry.max_wait 3s spent"),
            "{why}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn zero_max_wait_gives_up_on_the_first_throttle() {
        for e in [E::Throttled(None), E::Throttled(Some(secs(1)))] {
            let (out, _) = scripted(&with_wait(Duration::ZERO), &[e]).await;
            assert_eq!((out.result, out.attempts), (Err(e), 1));
            assert!(out.gave_up.is_some());
        }
        // Transient failures are still retried.
        let (out, _) = scripted(&with_wait(Duration::ZERO), &[E::Transient]).await;
        assert_eq!(out.result, Ok(2));
    }

    #[tokio::test(start_paused = true)]
    async fn a_zero_hint_cannot_make_it_spin() {
        let (out, times) = scripted(
            &with_wait(secs(1)),
            &[E::Throttled(Some(Duration::ZERO)); 100_000],
        )
        .await;
        assert!(out.result.is_err());
        assert!(times.len() <= 101, "{} attempts in 1 s", times.len());
        for pair in times.windows(2) {
            assert!(pair[1] - pair[0] > Duration::ZERO, "{times:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_hint_pauses_the_endpoint_for_everyone() {
        let pause = Arc::new(Pause::new());
        let retry = Retry::new(policy(5)).with_pause(Arc::clone(&pause));
        let start = Instant::now();
        let hinted = {
            let retry = retry.clone();
            tokio::spawn(async move { scripted(&retry, &[E::Throttled(Some(secs(10)))]).await })
        };
        // Another sample that has sent nothing yet, starting 1 s later.
        let other = {
            let retry = retry.clone();
            tokio::spawn(async move {
                tokio::time::sleep(secs(1)).await;
                let (out, times) = scripted(&retry, &[]).await;
                (out, times, start.elapsed())
            })
        };
        let (out, times) = hinted.await.unwrap();
        assert_eq!(out.result, Ok(2));
        // 10 s, plus a spread of at most 10% of it.
        assert!(
            times[1] >= secs(10) && times[1] <= Duration::from_millis(11_000),
            "{times:?}"
        );
        assert_eq!(out.waited, times[1], "the pause counts as waiting");
        let (out, _, sent_at) = other.await.unwrap();
        assert_eq!((out.result, out.attempts), (Ok(1), 1));
        assert!(sent_at >= secs(10), "the other sample sent at {sent_at:?}");
        assert!(out.waited >= secs(9), "{:?}", out.waited);
    }

    #[tokio::test(start_paused = true)]
    async fn a_pause_longer_than_the_budget_left_gives_up() {
        let pause = Arc::new(Pause::new());
        let retry = with_wait(secs(20)).with_pause(Arc::clone(&pause));
        let start = Instant::now();
        // While this sample waits its 5 s, another's hint pauses the endpoint for 60 s.
        let extender = Arc::clone(&pause);
        tokio::spawn(async move {
            tokio::time::sleep(secs(2)).await;
            extender.extend(secs(60));
        });
        let (out, times) = scripted(&retry, &[E::Throttled(Some(secs(5)))]).await;
        assert_eq!(times.len(), 1);
        assert_eq!(out.result, Err(E::Throttled(Some(secs(5)))));
        match out.gave_up {
            Some(GaveUp::Paused {
                remaining,
                max_wait,
                left,
            }) => {
                assert_eq!(max_wait, secs(20));
                // It waited its own 5 s (and its spread) before it saw the extension.
                assert!(
                    left > Duration::from_millis(14_400) && left <= secs(15),
                    "{left:?}"
                );
                assert!(remaining > secs(55), "{remaining:?}");
            }
            other => panic!("{other:?}"),
        }
        // It noticed when it woke for its own 5 s, not 60 s later.
        assert!(
            start.elapsed() <= Duration::from_millis(5500),
            "{:?}",
            start.elapsed()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_first_attempt_waits_out_any_pause() {
        let pause = Arc::new(Pause::new());
        pause.extend(secs(30));
        let retry = with_wait(secs(5)).with_pause(pause);
        let (out, times) = scripted(&retry, &[]).await;
        assert_eq!(out.result, Ok(1));
        assert!(times[0] >= secs(30), "{times:?}");
    }

    #[test]
    fn backoff_is_bounded() {
        let p = policy(10);
        for n in 1..40 {
            assert!(backoff(&p, n) <= secs(1));
        }
        for _ in 0..100 {
            assert!(backoff(&p, 1) <= Duration::from_millis(100));
        }
        assert!(backoff(&p, 0) <= Duration::from_millis(100));
    }

    #[test]
    fn seconds_read_well() {
        assert_eq!(seconds(secs(600)), "600 s");
        assert_eq!(seconds(Duration::from_millis(40_400)), "40 s");
        assert_eq!(seconds(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(seconds(Duration::from_millis(250)), "0.25 s");
        assert_eq!(seconds(secs(2)), "2 s");
        assert_eq!(seconds(Duration::ZERO), "0 s");
    }
}
