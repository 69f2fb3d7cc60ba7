//! Replicas of one model (`base_url` as a list): a [`Limiter`] each, so each
//! finds its own window (adaptive per replica when adaptive); a request goes
//! to the replica with the most free slots; a replica that keeps failing
//! rests, and its samples go to the others until it is tried again.
//!
//! Near the end of a run a replica whose replies take longer than the work
//! left gets no more samples: the others finish sooner than it would (a
//! slow replica's last replies would otherwise be the run's tail).
//!
//! With one endpoint the pool is its limiter and nothing rests: there is
//! nowhere else to send a sample, so retries and backoff decide alone.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::pause::Pause;
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
    /// Its replies' latency, smoothed (queueing included: what a sample
    /// sent now can expect), and how many replies it gave.
    latency: Option<Duration>,
    replies: u64,
    /// Its pace: replies since the first one after its last rest, and when
    /// that one came.
    pace: (u64, Option<Instant>),
}

/// Weight of a new reply in [`Health::latency`].
const LATENCY_WEIGHT: f64 = 0.1;

impl Health {
    /// Counts `outcome`; answers whether it rested the endpoint.
    pub(super) fn observe(&mut self, outcome: &Outcome, now: Instant) -> bool {
        match outcome {
            Outcome::Success { latency, .. } => {
                self.failures = 0;
                self.rests = 0;
                self.until = None;
                self.replies += 1;
                self.pace = match self.pace {
                    (n, Some(since)) => (n + 1, Some(since)),
                    (_, None) => (0, Some(now)),
                };
                self.latency = Some(match self.latency {
                    Some(l) => l.mul_f64(1.0 - LATENCY_WEIGHT) + latency.mul_f64(LATENCY_WEIGHT),
                    None => *latency,
                });
            }
            // Up, and answering: what it refused is the request's fault.
            Outcome::Refused => self.failures = 0,
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
                    self.pace = (0, None);
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
    /// Each replica's pause (a server's Retry-After): a paused replica gets
    /// no new samples while another can take them.
    pauses: Vec<Arc<Pause>>,
    freed: Arc<Notify>,
    started: Instant,
}

impl Pool {
    /// A limiter running `strategy` for each replica, whose pauses are
    /// `pauses` (at least one).
    pub fn new(strategy: &StrategySpec, pauses: Vec<Arc<Pause>>) -> Arc<Pool> {
        let freed = Arc::new(Notify::new());
        let replicas = pauses.len().max(1);
        let several = replicas > 1;
        let limiters = (0..replicas)
            .map(|index| {
                let replica = several.then(|| Replica {
                    freed: Arc::clone(&freed),
                });
                let mut limiter = Limiter::build(strategy.build(), replica);
                limiter.index = index;
                Arc::new(limiter)
            })
            .collect();
        Arc::new(Pool {
            limiters,
            pauses,
            freed,
            started: Instant::now(),
        })
    }

    /// Replicas in the pool (1 for one endpoint).
    pub fn replicas(&self) -> usize {
        self.limiters.len()
    }

    pub fn limiters(&self) -> &[Arc<Limiter>] {
        &self.limiters
    }

    /// A slot on the replica with the most free slots that is not resting
    /// (and, with `left` samples still to send, whose replies come back
    /// before the others would be done with them); waits for one when none
    /// is free (or every replica rests).
    pub async fn acquire(&self, left: Option<u64>) -> Permit {
        if let [only] = self.limiters.as_slice() {
            return only.acquire().await;
        }
        loop {
            // With nothing to avoid there is always a candidate.
            if let Some(permit) = self.acquire_avoiding(left, &[], true).await {
                return permit;
            }
        }
    }

    /// A slot on a replica other than those in `avoid` (the sample failed
    /// there), as [`Pool::acquire`] picks one; `None` when every other one
    /// rests (it fails too) or none is left.
    pub async fn elsewhere(&self, avoid: &[usize]) -> Option<Permit> {
        self.acquire_avoiding(None, avoid, false).await
    }

    /// `wait_for_rest`: when every candidate rests, wait for the first to be
    /// tried again (else answer `None`).
    async fn acquire_avoiding(
        &self,
        left: Option<u64>,
        avoid: &[usize],
        wait_for_rest: bool,
    ) -> Option<Permit> {
        let candidates: Vec<&Arc<Limiter>> = self
            .limiters
            .iter()
            .filter(|l| !avoid.contains(&l.index))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        loop {
            let too_slow = left.and_then(|n| self.time_for(n));
            // Registered before looking, so a slot freed meanwhile still wakes us.
            let freed = self.freed.notified();
            tokio::pin!(freed);
            freed.as_mut().enable();
            let now = Instant::now();
            let awake: Vec<&Arc<Limiter>> = candidates
                .iter()
                .copied()
                .filter(|l| l.state().health.resting_until(now).is_none())
                .collect();
            let unpaused: Vec<&Arc<Limiter>> = awake
                .iter()
                .copied()
                .filter(|l| self.paused(l).is_none())
                .collect();
            // Paused replicas wait their turn, unless all are.
            let awake = match unpaused.is_empty() {
                true => awake,
                false => unpaused,
            };
            let waits: Vec<Option<Duration>> = awake.iter().map(|l| self.wait_at(l)).collect();
            let fastest = waits.iter().flatten().min().copied();
            let in_time = awake.iter().zip(&waits).filter(|(_, wait)| {
                // The fastest replica always qualifies.
                match (too_slow, wait) {
                    (Some(time), Some(wait)) => *wait <= time || Some(*wait) == fastest,
                    _ => true,
                }
            });
            // The most free slots; the first of equals.
            let best = in_time.min_by_key(|(l, _)| std::cmp::Reverse(l.free()));
            if let Some((best, _)) = best.filter(|(l, _)| l.free() > 0) {
                match best.try_acquire() {
                    Some(permit) => return Some(permit),
                    // Taken meanwhile, or owed to a cut: look again.
                    None => continue,
                }
            }
            // Nothing free: wait for a slot, or for a replica's rest or
            // pause to end.
            let pause_ends = candidates
                .iter()
                .filter_map(|l| self.paused(l).map(|d| now + d));
            let wake = candidates
                .iter()
                .filter_map(|l| l.resting_until())
                .chain(pause_ends)
                .min();
            if awake.is_empty() && !wait_for_rest {
                return None;
            }
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

    /// How much longer `replica`'s server asked to be left alone, if it did.
    fn paused(&self, replica: &Limiter) -> Option<Duration> {
        let pause = self.pauses.get(replica.index)?;
        Some(pause.remaining()).filter(|d| !d.is_zero())
    }

    /// How long a sample sent to `replica` now can expect to take: its
    /// replies' latency, or longer when it holds more than its pace drains
    /// in that time (a queue that grew since, by Little's law).
    fn wait_at(&self, replica: &Limiter) -> Option<Duration> {
        let s = replica.state();
        let latency = s.health.latency?;
        let queue = match s.health.pace {
            (n, Some(since)) if n >= 2 => {
                let rate = n as f64 / since.elapsed().as_secs_f64();
                Duration::from_secs_f64((s.in_flight + 1) as f64 / rate)
            }
            _ => Duration::ZERO,
        };
        Some(latency.max(queue))
    }

    /// How long the replicas together take for `samples` more, at the pace
    /// they have kept so far; `None` before any replied.
    fn time_for(&self, samples: u64) -> Option<Duration> {
        let replies: u64 = self.limiters.iter().map(|l| l.state().health.replies).sum();
        let elapsed = self.started.elapsed().as_secs_f64();
        (replies > 0 && elapsed > 0.0)
            .then(|| Duration::from_secs_f64(samples as f64 * elapsed / replies as f64))
    }

    /// Whether a replica not in `tried` could take a sample (it is not
    /// resting).
    pub fn has_other(&self, tried: &[usize]) -> bool {
        self.limiters
            .iter()
            .any(|l| !tried.contains(&l.index) && l.resting_until().is_none())
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

/// The pools of runs that go on together (the cells of a matrix), one per
/// endpoint: cells that call the same endpoint share its window, so its
/// capacity does not grow because two cells use it.
#[derive(Default)]
pub struct Pools {
    by_endpoint: Mutex<HashMap<String, (Arc<Pool>, StrategySpec)>>,
}

impl Pools {
    /// The pool of `endpoint`, made by `make` on first use; with the
    /// strategy it was made with (it wins if a later cell asks for another).
    pub fn get(
        &self,
        endpoint: &str,
        strategy: &StrategySpec,
        make: impl FnOnce() -> Arc<Pool>,
    ) -> (Arc<Pool>, StrategySpec) {
        let mut map = self.by_endpoint.lock().unwrap_or_else(|p| p.into_inner());
        let (pool, first) = map
            .entry(endpoint.to_owned())
            .or_insert_with(|| (make(), *strategy));
        (Arc::clone(pool), *first)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(windows: &[usize]) -> Arc<Pool> {
        let pauses = windows.iter().map(|_| Arc::new(Pause::new())).collect();
        let pool = Pool::new(&StrategySpec::SlidingWindow(1), pauses);
        for (l, &w) in pool.limiters.iter().zip(windows) {
            let mut s = l.state();
            l.set_limit(&mut s, w);
        }
        pool
    }

    fn reply(p: &Permit, ms: u64) {
        p.report(&Outcome::Success {
            latency: Duration::from_millis(ms),
            completion_tokens: None,
        });
    }

    #[tokio::test]
    async fn a_sample_goes_to_the_replica_with_the_most_free_slots() {
        let pool = pool(&[2, 4]);
        let mut held = Vec::new();
        // The most free slots; the first replica of equals.
        for expected in [1, 1, 0, 1, 0, 1] {
            let p = pool.acquire(None).await;
            assert_eq!(p.replica(), expected);
            held.push(p);
        }
        assert_eq!((pool.in_flight(), pool.limit()), (6, 6));
        drop(held.remove(2));
        assert_eq!(
            pool.acquire(None).await.replica(),
            0,
            "the slot that came free"
        );
    }

    #[tokio::test]
    async fn a_replica_that_keeps_failing_rests_and_one_reply_ends_its_rest() {
        let pool = pool(&[4, 1]);
        let p = pool.acquire(None).await;
        assert_eq!(p.replica(), 0);
        for _ in 0..REST_AFTER {
            assert!(!p.resting());
            p.report(&Outcome::Failed);
        }
        assert!(p.resting(), "rested after {REST_AFTER} failures");
        assert!(pool.has_other(&[0]) && !pool.has_other(&[1]));
        assert_eq!(pool.resting(), 1);
        let other = pool.acquire(None).await;
        assert_eq!(
            other.replica(),
            1,
            "the resting replica's free slots are not used"
        );
        // Throttling is not failing; a reply ends the rest.
        p.report(&Outcome::Throttled);
        assert!(p.resting());
        reply(&p, 10);
        assert!(!p.resting());
        assert_eq!(pool.totals().rests, 1);
        assert_eq!(pool.totals().failed, REST_AFTER as u64);
    }

    #[tokio::test]
    async fn a_refusal_is_an_answer_not_a_failure() {
        let pool = pool(&[1, 1]);
        let p = pool.acquire(None).await;
        for outcome in [
            Outcome::Failed,
            Outcome::Timeout,
            Outcome::Refused,
            Outcome::Failed,
        ] {
            p.report(&outcome);
        }
        assert!(!p.resting(), "a 4xx between failures says the server is up");
        p.report(&Outcome::Failed);
        assert!(!p.resting());
        p.report(&Outcome::Failed);
        assert!(p.resting(), "three failures in a row");
    }

    #[tokio::test]
    async fn a_paused_replica_gets_no_samples_while_another_can_take_them() {
        let pauses: Vec<Arc<Pause>> = (0..2).map(|_| Arc::new(Pause::new())).collect();
        let pool = Pool::new(&StrategySpec::SlidingWindow(2), pauses.clone());
        pauses[0].extend(Duration::from_secs(60));
        let a = pool.acquire(None).await;
        let b = pool.acquire(None).await;
        assert_eq!((a.replica(), b.replica()), (1, 1));
        // Its slots stay free: a sample waits for a slot of a replica
        // that is not paused (or for the pause to end).
        let wait = tokio::time::timeout(Duration::from_millis(100), pool.acquire(None));
        assert!(wait.await.is_err(), "a paused replica took a sample");
        drop(a);
        assert_eq!(pool.acquire(None).await.replica(), 1);
        drop(b);
    }

    #[tokio::test]
    async fn near_the_end_a_replica_slower_than_the_work_left_gets_none() {
        let pool = pool(&[1, 1]);
        // Replica 0 answers in 2 s, replica 1 in 10 ms.
        let slow = pool.acquire(None).await;
        let fast = pool.acquire(None).await;
        assert_eq!((slow.replica(), fast.replica()), (0, 1));
        reply(&slow, 2000);
        reply(&fast, 10);
        drop((slow, fast));
        // Plenty left (no pace yet would also do): the most free slots.
        assert_eq!(pool.acquire(Some(1_000_000)).await.replica(), 0);
        // One sample left, done by the pace kept so far long before 2 s.
        assert_eq!(pool.acquire(Some(1)).await.replica(), 1);
    }
}
