//! The service stage of capacity, serial, sharing and batching servers: how
//! many requests are served at once and how long each takes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, Semaphore};

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
    /// One processor shared by every request in service instead of slots:
    /// each of `n` progresses at `1/n` of its speed (`slots` is ignored).
    pub(super) sharing: bool,
    /// The first request's service time, if it is cold (model load, caches).
    pub(super) cold: Option<Duration>,
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
    pub(super) processor: Processor,
    /// Requests that have entered service: the first may be cold.
    pub(super) served: AtomicUsize,
}

/// A processor shared equally by the requests at it: its virtual time runs
/// at `1/n` of real time with `n` requests in service, and a request with
/// `w` seconds of work is done when virtual time has advanced by `w` since
/// it arrived.
#[derive(Default)]
pub(super) struct Processor {
    clock: Mutex<Clock>,
    /// Woken at every arrival and departure: the share changed.
    changed: Notify,
}

#[derive(Default)]
struct Clock {
    virtual_secs: f64,
    n: usize,
    last: Option<Instant>,
}

impl Clock {
    fn advance(&mut self, now: Instant) {
        if let Some(last) = self.last {
            if self.n > 0 {
                self.virtual_secs +=
                    now.saturating_duration_since(last).as_secs_f64() / self.n as f64;
            }
        }
        self.last = Some(now);
    }
}

/// Leaves the processor however the request ends.
struct Leave<'a>(&'a Processor);

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        let mut c = self.0.clock.lock().unwrap();
        c.advance(Instant::now());
        c.n -= 1;
        drop(c);
        self.0.changed.notify_waiters();
    }
}

impl Processor {
    /// Serves `work` seconds of work, sharing the processor with whoever else is here.
    pub(super) async fn serve(&self, work: Duration) {
        let finish = {
            let mut c = self.clock.lock().unwrap();
            c.advance(Instant::now());
            c.n += 1;
            c.virtual_secs + work.as_secs_f64()
        };
        self.changed.notify_waiters();
        let _leave = Leave(self);
        loop {
            let changed = self.changed.notified();
            let left = {
                let mut c = self.clock.lock().unwrap();
                c.advance(Instant::now());
                (finish - c.virtual_secs) * c.n as f64
            };
            if left <= 1e-6 {
                return;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs_f64(left)) => {}
                _ = changed => {}
            }
        }
    }
}

/// Keeps the in-service count right however a request ends.
pub(super) struct InService<'a>(pub(super) &'a AtomicUsize);

impl Drop for InService<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}
