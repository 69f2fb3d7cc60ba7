//! Request limits a server enforces itself, answering 429 with the wait:
//! a token bucket (requests per minute) and a fixed-window quota.

use std::time::{Duration, Instant};

/// The standard header for the wait of a 429 or 503.
pub const RETRY_AFTER: &str = "retry-after";

/// A wait as `Retry-After` seconds: rounded up, at least 1.
pub(super) fn whole_seconds(wait: Duration) -> String {
    (wait.as_secs_f64().ceil().max(1.0) as u64).to_string()
}

/// A token bucket: `rate` tokens a second, at most `burst`.
pub(super) struct Bucket {
    pub(super) rate: f64,
    pub(super) burst: f64,
    pub(super) tokens: f64,
    pub(super) last: Instant,
}

impl Bucket {
    /// Takes a token, or says how long until one is there.
    pub(super) fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let refill = now.saturating_duration_since(self.last).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

/// A fixed-window quota: `limit` requests per `length`, windows counted
/// from the first request.
pub(super) struct FixedWindow {
    pub(super) limit: u32,
    pub(super) length: Duration,
    /// Start of the current window (none before the first request).
    pub(super) start: Option<Instant>,
    /// Requests accepted in the current window.
    pub(super) count: u32,
}

impl FixedWindow {
    /// Counts a request, or says how long until the window resets.
    pub(super) fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let start = *self.start.get_or_insert(now);
        let elapsed = now.saturating_duration_since(start);
        if elapsed >= self.length {
            // Whole windows since the first request, so windows stay aligned
            // to it however long the server sat idle.
            let windows = (elapsed.as_nanos() / self.length.as_nanos().max(1)) as u32;
            self.start = Some(start + self.length * windows);
            self.count = 0;
        }
        if self.count < self.limit {
            self.count += 1;
            Ok(())
        } else {
            let end = self.start.unwrap_or(start) + self.length;
            Err(end.saturating_duration_since(now))
        }
    }
}
