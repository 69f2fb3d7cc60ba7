//! The service stage of capacity, serial and batching servers: how many
//! requests are served at once and how long each takes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::rng::XorShift;

/// How service times vary around their base.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Spread {
    /// `base ×` a factor uniform in `[1 - jitter, 1 + jitter]`.
    Uniform(f64),
    /// `base × exp(sigma × N(0, 1))`: median `base`.
    Lognormal(f64),
}

impl Spread {
    /// One random factor.
    pub(super) fn factor(self, rng: &mut XorShift) -> f64 {
        match self {
            Spread::Uniform(jitter) => (1.0 + jitter * (2.0 * rng.f64() - 1.0)).max(0.0),
            Spread::Lognormal(sigma) => rng.lognormal(sigma),
        }
    }
}

/// A server's service stage: at most `slots` requests in service, the rest
/// queued first come, first served.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) struct ServiceShape {
    pub(super) slots: usize,
    pub(super) base: Duration,
    pub(super) spread: Spread,
    /// Service slows as the batch fills: `max_factor × base` when all
    /// `slots` are busy (1.0: a plain capacity server).
    pub(super) max_factor: f64,
}

impl ServiceShape {
    /// The load factor for a request entering service with `n` in service.
    pub(super) fn load_factor(&self, n: usize) -> f64 {
        if self.slots <= 1 {
            return 1.0;
        }
        let fill = (n.clamp(1, self.slots) - 1) as f64 / (self.slots - 1) as f64;
        1.0 + (self.max_factor - 1.0) * fill
    }
}

/// The service stage of a running server.
pub(super) struct Capacity {
    pub(super) shape: ServiceShape,
    pub(super) slots: Arc<Semaphore>,
    pub(super) in_service: AtomicUsize,
    pub(super) peak_in_service: AtomicUsize,
}

/// Keeps the in-service count right however a request ends.
pub(super) struct InService<'a>(pub(super) &'a AtomicUsize);

impl Drop for InService<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
