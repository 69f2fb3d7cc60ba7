//! Retries with exponential backoff and full jitter.
//!
//! Deciding *whether* to retry belongs to the error (`Retryable`); this module
//! only decides *when*, honouring a server's Retry-After when it gives one.

use std::future::Future;
use std::time::Duration;

use crate::spec::RetryPolicy;

/// An error that knows whether trying again could help.
pub trait Retryable {
    /// True for transient failures: 429, 408, 5xx, timeouts, connection errors.
    fn is_retryable(&self) -> bool;
    /// How long the server asked us to wait, if it said.
    fn retry_after(&self) -> Option<Duration>;
}

/// How a retried operation went.
#[derive(Debug)]
pub struct Attempts<T, E> {
    pub result: Result<T, E>,
    /// Attempts made, the first included.
    pub attempts: u32,
    /// Time spent waiting between attempts.
    pub waited: Duration,
}

/// Runs `op` until it succeeds, fails for good, or `policy.max_attempts` is reached.
/// `on_error` sees every failed attempt (for the concurrency strategy).
pub async fn run<T, E, F, Fut>(
    policy: &RetryPolicy,
    mut op: F,
    mut on_error: impl FnMut(&E),
) -> Attempts<T, E>
where
    E: Retryable,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut waited = Duration::ZERO;
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(v) => {
                return Attempts {
                    result: Ok(v),
                    attempts: attempt,
                    waited,
                }
            }
            Err(e) => {
                on_error(&e);
                if attempt >= policy.max_attempts || !e.is_retryable() {
                    return Attempts {
                        result: Err(e),
                        attempts: attempt,
                        waited,
                    };
                }
                let delay = backoff(policy, attempt, e.retry_after());
                tokio::time::sleep(delay).await;
                waited += delay;
                attempt += 1;
            }
        }
    }
}

/// The wait before attempt `attempt + 1`: the server's Retry-After if given
/// (capped by `max_backoff`), else a uniformly random time in
/// `[0, min(max_backoff, backoff * 2^(attempt-1))]` ("full jitter").
pub fn backoff(policy: &RetryPolicy, attempt: u32, retry_after: Option<Duration>) -> Duration {
    if let Some(after) = retry_after {
        return after.min(policy.max_backoff);
    }
    let ceiling = policy
        .backoff
        .saturating_mul(1u32 << (attempt - 1).min(20))
        .min(policy.max_backoff);
    ceiling.mul_f64(fastrand::f64())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[derive(Debug)]
    struct E(bool);
    impl Retryable for E {
        fn is_retryable(&self) -> bool {
            self.0
        }
        fn retry_after(&self) -> Option<Duration> {
            None
        }
    }

    fn policy(n: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts: n,
            backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn retries_transient_errors_until_success() {
        let calls = Cell::new(0);
        let out = run(
            &policy(5),
            || {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move {
                    if n < 3 {
                        Err(E(true))
                    } else {
                        Ok(n)
                    }
                }
            },
            |_| {},
        )
        .await;
        assert_eq!(out.result.unwrap(), 3);
        assert_eq!(out.attempts, 3);
    }

    #[tokio::test(start_paused = true)]
    async fn stops_on_permanent_errors_and_at_the_cap() {
        let out = run(&policy(5), || async { Err::<(), _>(E(false)) }, |_| {}).await;
        assert_eq!(out.attempts, 1);
        let out = run(&policy(2), || async { Err::<(), _>(E(true)) }, |_| {}).await;
        assert_eq!(out.attempts, 2);
    }

    #[test]
    fn backoff_is_bounded_and_honours_retry_after() {
        let p = policy(10);
        for attempt in 1..10 {
            assert!(backoff(&p, attempt, None) <= Duration::from_secs(1));
        }
        assert_eq!(
            backoff(&p, 1, Some(Duration::from_millis(250))),
            Duration::from_millis(250)
        );
        assert_eq!(
            backoff(&p, 1, Some(Duration::from_secs(60))),
            Duration::from_secs(1)
        );
    }
}
