//! Replicas of one model (`base_url` as a list): a [`Limiter`] each, so each
//! finds its own window (adaptive per replica when adaptive); a request goes
//! to the replica with the most free slots; a replica that keeps failing
//! rests, and its samples go to the others until it is tried again.
//!
//! With one endpoint the pool is its limiter and nothing rests: there is
//! nowhere else to send a sample, so retries and backoff decide alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::{Limiter, Outcome, Permit, StrategySpec, Totals};

/// Failed attempts in a row (errors and timeouts, not throttling) that rest a replica.
pub const REST_AFTER: u32 = 3;
/// A replica's first rest; each rest in a row doubles it, up to [`REST_MAX`].
pub const REST_FIRST: Duration = Duration::from_secs(5);
pub const REST_MAX: Duration = Duration::from_secs(120);

/// What a replica's limiter knows of its pool.
pub(super) struct Replica {
    /// Woken whenever one of the pool's slots may have come free.
    pub(super) freed: Arc<Notify>,
}

/// Whether an endpoint keeps failing, as its attempts tell. Throttling is
/// not failing: the server is there and asks for a slower pace, which the
/// window and the endpoint's pause see to.
#[derive(Debug, Default)]
pub(super) struct Health {
    /// Failed attempts since the last success.
    failures: u32,
    /// Rests since the last success.
    rests: u32,
    until: Option<Instant>,
}

impl Health {
    /// Counts `outcome`; answers whether it rested the endpoint.
    pub(super) fn observe(&mut self, outcome: &Outcome, now: Instant) -> bool {
        match outcome {
            Outcome::Success { .. } => *self = Health::default(),
            Outcome::Throttled => {}
            Outcome::Timeout | Outcome::Failed => {
                self.failures = self.failures.saturating_add(1);
                // After a rest, one failure is enough to rest again (longer).
                let resting = self.until.is_some_and(|u| u > now);
                if self.failures >= REST_AFTER && !resting {
                    let rest = REST_FIRST
                        .saturating_mul(1 << self.rests.min(16))
                        .min(REST_MAX);
                    self.rests = self.rests.saturating_add(1);
                    self.until = Some(now + rest);
                    return true;
                }
            }
        }
        false
    }

    fn resting_until(&self, now: Instant) -> Option<Instant> {
        self.until.filter(|u| *u > now)
    }
}

impl Limiter {
    /// Until when the endpoint rests, if it does now.
    pub fn resting_until(&self) -> Option<Instant> {
        self.state().health.resting_until(Instant::now())
    }
}

impl Permit {
    /// Which replica of the pool the slot belongs to (0 with one endpoint).
    pub fn replica(&self) -> usize {
        self.limiter.index
    }

    /// Whether the slot's endpoint rests now: retrying there is pointless
    /// while another replica can take the sample.
    pub fn resting(&self) -> bool {
        self.limiter.replica.is_some() && self.limiter.resting_until().is_some()
    }
}

/// The limiters of an evaluation's endpoints.
pub struct Pool {
    limiters: Vec<Arc<Limiter>>,
    freed: Arc<Notify>,
}

impl Pool {
    /// `replicas` limiters (at least one) running `strategy` each.
    pub fn new(strategy: &StrategySpec, replicas: usize) -> Arc<Pool> {
        let freed = Arc::new(Notify::new());
        let several = replicas > 1;
        let limiters = (0..replicas.max(1))
            .map(|index| {
                let replica = several.then(|| Replica {
                    freed: Arc::clone(&freed),
                });
                let mut limiter = Limiter::build(strategy.build(), replica);
                limiter.index = index;
                Arc::new(limiter)
            })
            .collect();
        Arc::new(Pool { limiters, freed })
    }

    pub fn limiters(&self) -> &[Arc<Limiter>] {
        &self.limiters
    }

    /// A slot on the replica with the most free slots that is not resting;
    /// waits for one when none is free (or every replica rests).
    pub async fn acquire(&self) -> Permit {
        if let [only] = self.limiters.as_slice() {
            return only.acquire().await;
        }
        loop {
            // Registered before looking, so a slot freed meanwhile still wakes us.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let now = Instant::now();
            let awake = self
                .limiters
                .iter()
                .filter(|l| l.state().health.resting_until(now).is_none());
            if let Some(best) = awake.max_by_key(|l| l.free()) {
                if let Some(permit) = best.try_acquire() {
                    return permit;
                }
            }
            // Every replica rests: the first to wake is tried.
            let wake = self.limiters.iter().filter_map(|l| l.resting_until()).min();
            match wake {
                Some(wake) => {
                    tokio::select! {
                        _ = freed => {}
                        _ = tokio::time::sleep_until(wake.into()) => {}
                    }
                }
                None => freed.await,
            }
        }
    }

    /// Whether another replica than `replica` could take a sample (it is
    /// not resting).
    pub fn has_other(&self, replica: usize) -> bool {
        self.limiters
            .iter()
            .any(|l| l.index != replica && l.resting_until().is_none())
    }

    /// The limits summed over the replicas.
    pub fn limit(&self) -> usize {
        self.limiters.iter().map(|l| l.limit()).sum()
    }

    /// Requests in flight, over the replicas.
    pub fn in_flight(&self) -> usize {
        self.limiters.iter().map(|l| l.in_flight()).sum()
    }

    /// Replicas resting now.
    pub fn resting(&self) -> usize {
        self.limiters
            .iter()
            .filter(|l| l.resting_until().is_some())
            .count()
    }

    /// The summed limit at every change of any replica's.
    pub fn history(&self) -> Vec<(Duration, usize)> {
        if let [only] = self.limiters.as_slice() {
            return only.history();
        }
        let mut changes: Vec<(Duration, usize, usize)> = Vec::new();
        for (i, l) in self.limiters.iter().enumerate() {
            changes.extend(l.history().into_iter().map(|(t, limit)| (t, i, limit)));
        }
        changes.sort_by_key(|c| c.0);
        let mut current = vec![0; self.limiters.len()];
        let mut merged: Vec<(Duration, usize)> = Vec::with_capacity(changes.len());
        for (at, i, limit) in changes {
            current[i] = limit;
            let sum = current.iter().sum();
            match merged.last_mut() {
                // Changes at one instant (the start) make one point.
                Some(last) if last.0 == at => last.1 = sum,
                _ => merged.push((at, sum)),
            }
        }
        merged
    }

    /// What the replicas' limiters counted, summed.
    pub fn totals(&self) -> Totals {
        self.limiters
            .iter()
            .map(|l| l.totals())
            .fold(Totals::default(), |a, b| a.plus(&b))
    }
}

impl Totals {
    fn plus(&self, o: &Totals) -> Totals {
        Totals {
            held: self.held + o.held,
            at_server: self.at_server + o.at_server,
            // Blocked stretches of replicas may overlap: the longest is a floor.
            blocked: self.blocked.max(o.blocked),
            samples: self.samples + o.samples,
            attempts: self.attempts + o.attempts,
            throttled: self.throttled + o.throttled,
            unloaded: self.unloaded + o.unloaded,
            unloaded_sum: self.unloaded_sum + o.unloaded_sum,
            failed: self.failed + o.failed,
            rests: self.rests + o.rests,
        }
    }
}
