//! Client-side rate limits (`rate_limit.requests_per_minute`,
//! `rate_limit.tokens_per_minute`), with governor's GCRA limiters.
//!
//! A per-minute quota never goes out as one burst: the burst is about one
//! second's worth, so requests are spread evenly. Tokens are estimated before
//! sending (prompt size / 4 + `max_tokens`) and corrected from `usage`: a
//! request that used more takes the difference from the bucket, one that used
//! less leaves a credit for the next estimate. One [`RateLimit`] is shared by
//! every evaluation of a run that calls the same endpoint and model.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use governor::{DefaultDirectRateLimiter, Quota};

/// Limits from the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitSpec {
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u32>,
}

/// One endpoint's shared limits.
pub struct RateLimit {
    spec: RateLimitSpec,
    requests: Option<DefaultDirectRateLimiter>,
    tokens: Option<(DefaultDirectRateLimiter, NonZeroU32)>,
    /// Tokens estimated but not used by earlier requests, to spend first.
    credit: AtomicI64,
    waiting: AtomicUsize,
    /// Set when workers on other machines share the limit (`store::fleet`):
    /// it then holds for all of them, and the local limiters stand by.
    fleet: OnceLock<FleetRate>,
}

/// Where the limits a fleet of workers shares are kept (the store).
pub trait Ledger: Send {
    /// Leases `units` of limit `limit` (`requests` or `tokens`) of
    /// `endpoint`, each taking `per_unit` of its time: how long from now the
    /// slice starts, or `None` when the ledger cannot be reached.
    fn lease(
        &mut self,
        endpoint: &str,
        limit: &str,
        units: u64,
        per_unit: Duration,
    ) -> Option<Duration>;
}

/// A rate limit shared by a fleet of workers through the store: one next-free
/// instant per limit, which each worker leases slices of (a few requests', or
/// a quarter second's tokens, at a time) and spends locally. No burst: the
/// slots of a fleet are spaced evenly.
struct FleetRate {
    ledger: Arc<Mutex<Box<dyn Ledger>>>,
    endpoint: String,
    requests: Option<Slices>,
    tokens: Option<Slices>,
}

/// The slice of one shared limit this worker holds.
struct Slices {
    /// `requests` or `tokens`.
    limit: &'static str,
    per_unit: Duration,
    /// Units leased at a time.
    slice: u64,
    held: tokio::sync::Mutex<Held>,
}

#[derive(Default)]
struct Held {
    /// When the next unit may be spent.
    next: Option<Instant>,
    left: u64,
}

impl Slices {
    fn new(limit: &'static str, per_minute: u32) -> Option<Slices> {
        let per_minute = u64::from(per_minute);
        (per_minute > 0).then(|| Slices {
            limit,
            per_unit: Duration::from_secs(60) / per_minute.min(u64::from(u32::MAX)) as u32,
            // About a quarter of a second's worth, at least one.
            slice: per_minute.div_ceil(240).max(1),
            held: tokio::sync::Mutex::new(Held::default()),
        })
    }
}

impl FleetRate {
    /// When `n` units may be spent: from the slice held, or a new one leased
    /// from the store. A store that cannot be reached leaves the units to
    /// this worker's own limiter (`None`).
    async fn take(&self, slices: &Slices, n: u64) -> Option<Instant> {
        let mut held = slices.held.lock().await;
        if held.left < n || held.next.is_none() {
            let units = slices.slice.max(n);
            let (ledger, endpoint, limit, per_unit) = (
                Arc::clone(&self.ledger),
                self.endpoint.clone(),
                slices.limit,
                slices.per_unit,
            );
            let asked = Instant::now();
            let leased = tokio::task::spawn_blocking(move || {
                let mut ledger = ledger.lock().unwrap_or_else(|p| p.into_inner());
                ledger.lease(&endpoint, limit, units, per_unit)
            })
            .await;
            let Ok(Some(start)) = leased else {
                return None;
            };
            held.next = Some(asked + start);
            held.left = units;
        }
        let at = held.next?;
        held.next = Some(
            at + slices
                .per_unit
                .saturating_mul(n.min(u64::from(u32::MAX)) as u32),
        );
        held.left -= n;
        Some(at)
    }
}

/// About a second's worth of a per-minute quota, at least one.
fn per_second_burst(per_minute: u32) -> NonZeroU32 {
    NonZeroU32::new(per_minute.div_ceil(60).max(1)).unwrap_or(NonZeroU32::MIN)
}

impl RateLimit {
    pub fn new(spec: RateLimitSpec) -> RateLimit {
        let quota = |per_minute: NonZeroU32| {
            Quota::per_minute(per_minute).allow_burst(per_second_burst(per_minute.get()))
        };
        let requests = spec
            .requests_per_minute
            .and_then(NonZeroU32::new)
            .map(|n| governor::RateLimiter::direct(quota(n)));
        let tokens = spec.tokens_per_minute.and_then(NonZeroU32::new).map(|n| {
            let burst = per_second_burst(n.get());
            (governor::RateLimiter::direct(quota(n)), burst)
        });
        RateLimit {
            spec,
            requests,
            tokens,
            credit: AtomicI64::new(0),
            waiting: AtomicUsize::new(0),
            fleet: OnceLock::new(),
        }
    }

    /// Shares this limit with the other workers of a fleet from now on, as
    /// the limit of `endpoint` (a name without credentials), kept in `ledger`.
    pub fn share(&self, ledger: Arc<Mutex<Box<dyn Ledger>>>, endpoint: String) {
        let _ = self.fleet.set(FleetRate {
            ledger,
            endpoint,
            requests: self
                .spec
                .requests_per_minute
                .and_then(|n| Slices::new("requests", n)),
            tokens: self
                .spec
                .tokens_per_minute
                .and_then(|n| Slices::new("tokens", n)),
        });
    }

    /// Takes `n` units of the fleet's limit that `limit` picks (its
    /// requests or its tokens) and, when `wait`, waits until they may be
    /// spent; false when that limit is not shared or the store could not
    /// lease them: the local limiter then decides.
    async fn shared(&self, limit: fn(&FleetRate) -> Option<&Slices>, n: u64, wait: bool) -> bool {
        let Some((fleet, slices)) = self.fleet.get().and_then(|f| Some((f, limit(f)?))) else {
            return false;
        };
        match fleet.take(slices, n).await {
            Some(at) if wait => {
                tokio::time::sleep_until(at.into()).await;
                true
            }
            Some(_) => true,
            None => false,
        }
    }

    /// Requests waiting for the limiter now (shown on the progress bar).
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// [`admit`](Self::admit), returning how long it waited.
    pub async fn admit_timed(&self, estimated_tokens: u32) -> std::time::Duration {
        let waited = std::time::Instant::now();
        self.admit(estimated_tokens).await;
        waited.elapsed()
    }

    /// Waits until one request of about `estimated_tokens` tokens may go out.
    pub async fn admit(&self, estimated_tokens: u32) {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        if let Some(requests) = &self.requests {
            if !self.shared(|f| f.requests.as_ref(), 1, true).await {
                requests.until_ready().await;
            }
        }
        if let Some((tokens, burst)) = &self.tokens {
            let credit = self.credit.swap(0, Ordering::Relaxed).max(0);
            let spent = credit.min(i64::from(estimated_tokens));
            self.credit.fetch_add(credit - spent, Ordering::Relaxed);
            let n = (i64::from(estimated_tokens) - spent) as u64;
            if n > 0 && !self.shared(|f| f.tokens.as_ref(), n, true).await {
                take(tokens, *burst, n).await;
            }
        }
        self.waiting.fetch_sub(1, Ordering::Relaxed);
    }

    /// [`settle`](Self::settle) from a reply's `usage`, when it gave both counts.
    pub async fn settle_usage(
        &self,
        estimated_tokens: u32,
        prompt: Option<u64>,
        completion: Option<u64>,
    ) {
        if let (Some(p), Some(c)) = (prompt, completion) {
            self.settle(estimated_tokens, p + c).await;
        }
    }

    /// Corrects the token bucket once `usage` tells what a request really used.
    pub async fn settle(&self, estimated_tokens: u32, used_tokens: u64) {
        let Some((tokens, burst)) = &self.tokens else {
            return;
        };
        let diff = used_tokens as i64 - i64::from(estimated_tokens);
        if diff > 0 {
            // The fleet's debt is taken from its schedule, not waited for here.
            if !self.shared(|f| f.tokens.as_ref(), diff as u64, false).await {
                take(tokens, *burst, diff as u64).await;
            }
        } else {
            self.credit.fetch_add(-diff, Ordering::Relaxed);
        }
    }
}

/// Takes `n` cells from the bucket, in burst-sized bites (governor refuses more
/// than the burst in one call).
async fn take(limiter: &DefaultDirectRateLimiter, burst: NonZeroU32, mut n: u64) {
    while n > 0 {
        let bite = n.min(u64::from(burst.get())) as u32;
        if let Some(bite) = NonZeroU32::new(bite) {
            // Cannot fail: the bite never exceeds the burst.
            let _ = limiter.until_n_ready(bite).await;
        }
        n -= u64::from(bite);
    }
}

/// Rate limits shared across the evaluations of one run, by endpoint and model.
#[derive(Default)]
pub struct RateLimits {
    by_endpoint: Mutex<HashMap<String, Arc<RateLimit>>>,
}

impl RateLimits {
    /// The limiter for `endpoint`, created from `spec` on first use, with the
    /// limits it was created with (they win if a later spec asks for others).
    pub fn get(&self, endpoint: &str, spec: RateLimitSpec) -> (Arc<RateLimit>, RateLimitSpec) {
        let mut map = self.by_endpoint.lock().unwrap_or_else(|p| p.into_inner());
        let limit = map
            .entry(endpoint.to_owned())
            .or_insert_with(|| Arc::new(RateLimit::new(spec)));
        (Arc::clone(limit), limit.spec)
    }
}

/// Tokens a request may use, before it is sent: ~4 characters per prompt
/// token plus the reply's `max_tokens` (256 when unset).
pub fn estimate_tokens(prompt_chars: usize, max_tokens: Option<u64>) -> u32 {
    let prompt = prompt_chars.div_ceil(4) as u64;
    (prompt + max_tokens.unwrap_or(256)).min(u64::from(u32::MAX)) as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn spreads_requests_instead_of_bursting() {
        // 600/min is 10/s with a burst of 10: 30 requests take about 2 s, not 0.
        let limit = RateLimit::new(RateLimitSpec {
            requests_per_minute: Some(600),
            tokens_per_minute: None,
        });
        let start = Instant::now();
        for _ in 0..30 {
            limit.admit(0).await;
        }
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(1800), "{elapsed:?}");
        assert!(elapsed < Duration::from_millis(2600), "{elapsed:?}");
    }

    #[tokio::test]
    async fn tokens_are_estimated_and_corrected() {
        // 6000 tokens/min = 100/s, burst 100.
        let limit = RateLimit::new(RateLimitSpec {
            requests_per_minute: None,
            tokens_per_minute: Some(6000),
        });
        let start = Instant::now();
        limit.admit(100).await; // the whole first second's burst
        limit.settle(100, 20).await; // used far less: 80 credit
        limit.admit(80).await; // paid from credit, no wait
        assert!(
            start.elapsed() < Duration::from_millis(200),
            "{:?}",
            start.elapsed()
        );
        limit.admit(50).await; // needs refill: about half a second
        assert!(
            start.elapsed() >= Duration::from_millis(400),
            "{:?}",
            start.elapsed()
        );
    }

    #[test]
    fn estimates() {
        assert_eq!(estimate_tokens(400, Some(16)), 116);
        assert_eq!(estimate_tokens(0, None), 256);
    }
}
