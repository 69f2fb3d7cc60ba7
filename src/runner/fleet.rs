//! A run as one worker of a fleet (see [`crate::store::fleet`]): on a store
//! that several machines share, the samples come from the store's work queue
//! instead of the dataset file, a thread keeps this worker's leases alive and
//! its pauses in step with the others', and rate limits are leased from the
//! store.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::sample::Endpoint;
use super::{cached, Planned, Progress, Replies, RunError, Sample};
use crate::concurrency::pause::Pause;
use crate::concurrency::pool::Pool;
use crate::concurrency::rate::Ledger;
use crate::concurrency::share::{Deliveries, Place};
use crate::concurrency::{AdaptiveConfig, Limiter, StrategySpec};
use crate::dataset::{row_json, Values};
use crate::diagnostic::Diagnostic;
use crate::spec::ModelSpec;
use crate::store::fleet::{
    Beat, Claim, Fleet, JoinRequest, Joined, Member, QueuedSample, Unreadable,
};
use crate::store::{EvaluationStatus, SampleLookup, StartedEvaluation, Store, StoreError};

/// How often pauses are compared with the fleet's: a 429 one worker meets
/// stops the others within this long.
const PAUSE_SYNC: Duration = Duration::from_millis(200);

/// How often a worker's part of an adaptive window is synced with the
/// fleet's: the leader's controller sees the others' requests this late.
const WINDOW_SYNC: Duration = Duration::from_millis(100);

/// How long a worker with nothing to claim waits before it asks again: the
/// time it may take to notice the fleet is done, or a dead worker's lease ran out.
const WAIT_MOST: Duration = Duration::from_millis(50);

/// Joins (or starts) the fleet of the evaluation `started` records, when the
/// store has fleets and the run sends to the model; `None` otherwise.
pub(super) fn join(
    plan: &Planned,
    store: &dyn Store,
    started: &StartedEvaluation,
) -> Result<Option<Member>, RunError> {
    if plan.replies != Replies::Model {
        return Ok(None);
    }
    let request = |samples| JoinRequest {
        evaluation_id: started.id,
        run: started.run,
        spec_hash: &plan.eval.spec_hash,
        lease: plan.lease,
        print: plan.print,
        samples,
    };
    // Without the dataset file this worker can only join: if the fleet
    // ended meanwhile, the file is what is missing.
    if let Some(missing) = plan.eval.dataset.missing() {
        return match store.join_fleet(request(None))? {
            Some(Member {
                joined: Joined::NoFleet,
                ..
            }) => Err(RunError::Dataset(missing.clone())),
            joined => Ok(joined),
        };
    }
    let mut failed = None;
    let mut samples = samples(plan, &mut failed);
    let joined = store.join_fleet(request(Some(&mut samples)))?;
    drop(samples);
    match failed {
        Some(d) => Err(RunError::Dataset(d)),
        None => Ok(joined),
    }
}

/// Where a worker's clock starts and how much work is left: a fleet's
/// workers reckon the evaluation's wall time from the fleet's start.
pub(super) struct Clock {
    pub started: Instant,
    /// The evaluation's wall time before this run (or fleet).
    pub base_wall_us: u64,
    /// Samples left when this run started (the fleet's, for a worker).
    pub pending: u64,
}

impl Clock {
    pub fn of(
        member: Option<&Member>,
        began: Instant,
        started: &StartedEvaluation,
        plan: &Planned,
        progress: &Progress,
    ) -> Clock {
        let alone = |pending| Clock {
            started: began,
            base_wall_us: started.wall_us,
            pending,
        };
        match member.map(|m| &m.joined) {
            None | Some(Joined::NoFleet) => alone(plan.pending),
            Some(Joined::First { pending }) => alone(*pending),
            Some(Joined::Beside {
                started_ago,
                base_wall_us,
                pending,
                workers,
            }) => {
                progress.note(&format!(
                    "{}: working beside {workers} other worker{} ({pending} samples left)",
                    plan.eval.name,
                    if *workers == 1 { "" } else { "s" }
                ));
                Clock {
                    started: began.checked_sub(*started_ago).unwrap_or(began),
                    base_wall_us: *base_wall_us,
                    pending: *pending,
                }
            }
        }
    }
}

/// How the fleet's shared limits name an endpoint: as a run's rate limits
/// do, by its address (here without credentials: it is stored) and model.
fn shared_key(e: &Endpoint, model: &ModelSpec) -> String {
    super::client::rate_key(&e.url, model)
}

/// Makes each endpoint's rate limit the fleet's, kept in the store through
/// a connection of its own.
pub(super) fn share_rates(
    fleet: &dyn Fleet,
    endpoints: &[Endpoint],
    model: &ModelSpec,
) -> Result<(), StoreError> {
    if endpoints.iter().all(|e| e.rate.is_none()) {
        return Ok(());
    }
    let ledger: Box<dyn Ledger> = Box::new(StoreLedger(fleet.another()?));
    let ledger = Arc::new(Mutex::new(ledger));
    for e in endpoints {
        if let Some(rate) = &e.rate {
            rate.share(Arc::clone(&ledger), shared_key(e, model));
        }
    }
    Ok(())
}

/// The dataset's samples in order, for the queue; ends with one
/// [`Unreadable`] at the first row that cannot be read, leaving why in
/// `failed`.
fn samples<'a>(
    plan: &'a Planned,
    failed: &'a mut Option<Diagnostic>,
) -> impl Iterator<Item = Result<QueuedSample, Unreadable>> + Send + 'a {
    let dataset = &plan.eval.dataset;
    let repeats = plan.eval.repeats;
    // Opened on the first read: only a worker that starts a fleet reads it.
    let rows = std::iter::once(()).flat_map(move |()| match dataset.rows() {
        Ok(rows) => rows,
        Err(d) => Box::new(std::iter::once(Err(d))),
    });
    let mut failed = Some(failed);
    rows.map_while(move |row| {
        let stash = failed.as_mut()?;
        match row.and_then(|row| Ok((dataset.sample_id(&row)?, row))) {
            Ok(read) => Some(Ok(read)),
            Err(d) => {
                **stash = Some(d);
                failed = None;
                Some(Err(Unreadable))
            }
        }
    })
    .flat_map(move |read| {
        let samples: Box<dyn Iterator<Item = _> + Send> = match read {
            Err(unreadable) => Box::new(std::iter::once(Err(unreadable))),
            Ok((id, row)) => {
                let (variables, row_hash) = row_json(&row.values);
                Box::new((0..repeats).map(move |repeat| {
                    Ok(QueuedSample {
                        key: crate::repeats::key(&id, repeat).into_owned(),
                        index: row.index,
                        repeat,
                        row_hash,
                        variables: variables.clone(),
                    })
                }))
            }
        };
        samples
    })
}

/// Samples a worker claims at a time: half its window as it is now (an
/// adaptive one moves), so that a claim's round trip hides behind the
/// samples in hand, and no worker sits on more than it can send soon. A
/// worker with no slots of a fleet's shared window claims none.
pub(super) fn claim_batch(window: usize) -> usize {
    match window {
        0 => 0,
        _ => (window / 2).clamp(1, 64),
    }
}

/// Whether a worker has samples to send: a fleet's shared window is split
/// among the workers that do.
#[derive(Debug, Default)]
pub(super) struct Demand {
    /// Samples the claimer handed on, and those the dispatcher sent.
    claimed: AtomicU64,
    dispatched: AtomicU64,
    /// The last claim found nothing for this worker.
    dry: AtomicBool,
}

impl Demand {
    /// The dispatcher took a sample on.
    pub fn dispatched(&self) {
        self.dispatched.fetch_add(1, Ordering::Relaxed);
    }

    /// It holds samples not yet sent.
    fn holding(&self) -> bool {
        self.claimed.load(Ordering::Relaxed) > self.dispatched.load(Ordering::Relaxed)
    }

    /// It has samples to send, may claim more, or has requests out.
    fn wants(&self, in_flight: u64) -> bool {
        in_flight > 0 || self.holding() || !self.dry.load(Ordering::Relaxed)
    }
}

/// Claims samples from the queue on a thread and streams them to the
/// dispatcher until every sample of the evaluation is done or the
/// dispatcher hangs up. A sample the store holds a record of carries what
/// resume would give it (its reply to score again, or that it was retried).
/// A worker with no slots of a fleet's window claims nothing: the samples
/// stay with those that can send them.
pub(super) fn spawn_claimer(
    mut fleet: Box<dyn Fleet>,
    lookup: Result<Box<dyn SampleLookup>, StoreError>,
    window: Arc<Pool>,
    demand: Arc<Demand>,
    preparer: Option<cached::Preparer>,
    tx: mpsc::Sender<Result<Sample, RunError>>,
) -> JoinHandle<()> {
    std::thread::spawn(move || {
        let Some(lookup) = super::opened(lookup, &tx) else {
            return;
        };
        loop {
            let claimed = match fleet.claim(claim_batch(window.limit())) {
                Ok(Claim::Samples(claimed)) if claimed.is_empty() => {
                    // No slots now: samples are left for when there are.
                    demand.dry.store(false, Ordering::Relaxed);
                    if tx.is_closed() {
                        return;
                    }
                    std::thread::sleep(WAIT_MOST);
                    continue;
                }
                Ok(Claim::Samples(claimed)) => claimed,
                Ok(Claim::Wait(d)) => {
                    demand.dry.store(true, Ordering::Relaxed);
                    if tx.is_closed() {
                        return;
                    }
                    std::thread::sleep(d.clamp(Duration::from_millis(20), WAIT_MOST));
                    continue;
                }
                Ok(Claim::Done) => {
                    demand.dry.store(true, Ordering::Relaxed);
                    return;
                }
                Err(e) => {
                    let _ = tx.blocking_send(Err(e.into()));
                    return;
                }
            };
            demand.dry.store(false, Ordering::Relaxed);
            for c in claimed {
                let sample = to_sample(c.sample, c.recorded, lookup.as_ref(), preparer.as_ref());
                demand.claimed.fetch_add(1, Ordering::Relaxed);
                if tx.blocking_send(sample.map_err(RunError::from)).is_err() {
                    return;
                }
            }
        }
    })
}

/// A queued sample, ready to dispatch.
fn to_sample(
    q: QueuedSample,
    recorded: bool,
    lookup: &dyn SampleLookup,
    preparer: Option<&cached::Preparer>,
) -> Result<Sample, StoreError> {
    let values: Values = serde_json::from_str(&q.variables).unwrap_or_default();
    let (mut stored, mut retried) = (None, false);
    if recorded {
        match lookup.get(&q.key)? {
            Some(s) if s.rescore => stored = lookup.call(&q.key)?,
            Some(_) => retried = true,
            None => {}
        }
    }
    let prepared = match (preparer, &stored) {
        (Some(p), None) => p.prepare(&values, q.repeat),
        _ => None,
    };
    Ok(Sample {
        index: q.index,
        repeat: q.repeat,
        key: q.key,
        row_hash: q.row_hash,
        values,
        variables: q.variables,
        stored,
        retried,
        prepared,
    })
}

/// The fleet's rate limits, kept in the store.
struct StoreLedger(Box<dyn Fleet>);

impl Ledger for StoreLedger {
    fn lease(
        &mut self,
        endpoint: &str,
        limit: &str,
        units: u64,
        per_unit: Duration,
    ) -> Option<Duration> {
        self.0.lease_rate(endpoint, limit, units, per_unit).ok()
    }
}

/// One endpoint as the fleet shares it: its pause, and its window
/// ([`crate::concurrency::share`]), steered together when adaptive and
/// published as load when fixed.
struct Shared {
    /// The endpoint as the fleet's rows name it.
    key: String,
    pause: Arc<Pause>,
    limiter: Arc<Limiter>,
    remote: Deliveries,
}

/// Publishes each endpoint's pause, and takes on the fleet's when longer.
fn share_pauses(fleet: &mut dyn Fleet, shared: &[Shared]) {
    for e in shared {
        let mine = e.pause.remaining();
        if let Ok(fleets) = fleet.share_pause(&e.key, mine) {
            if fleets > mine + PAUSE_SYNC / 4 {
                e.pause.extend(fleets);
            }
        }
    }
}

/// Publishes this worker's part of each endpoint's window and, when
/// adaptive (`config`), takes its place in the fleet's. A sync that fails
/// leaves the last place as it was.
fn share_windows(
    fleet: &mut dyn Fleet,
    shared: &mut [Shared],
    demand: &Demand,
    config: Option<AdaptiveConfig>,
) {
    let me = fleet.run();
    for e in shared {
        let mut mine = e.limiter.fleet_report();
        mine.wants = demand.wants(mine.in_flight);
        mine.steers = config.is_some();
        let (Ok(others), Some(config)) = (fleet.share_window(&e.key, &mine), config) else {
            continue;
        };
        let place = Place::of(me, &mine, &others);
        let remote = e.remote.since_last(&others, WINDOW_SYNC);
        e.limiter.share(place, remote, config);
    }
}

/// The thread that keeps a worker in its fleet: a heartbeat that extends its
/// leases, its endpoints' pauses shared both ways, and their adaptive
/// windows split with the other workers.
pub(super) struct Keeper {
    stop: std_mpsc::Sender<&'static str>,
    handle: JoinHandle<()>,
}

/// What the keeper reports in each heartbeat.
pub(super) struct Status {
    /// Samples this worker wrote.
    pub written: Arc<AtomicU64>,
    pub pool: Arc<Pool>,
    pub demand: Arc<Demand>,
}

impl Keeper {
    /// Starts it: a heartbeat every sixth of the lease (at most a second),
    /// the pauses of `pauses` (endpoint, pause) compared every [`PAUSE_SYNC`],
    /// and each endpoint's window shared: every [`WINDOW_SYNC`] for an
    /// adaptive strategy, as load at each pause sync for a fixed one. The
    /// first sync is done before it returns, so a worker that joins sends
    /// nothing the fleet has not made room for.
    pub fn start(
        mut fleet: Box<dyn Fleet>,
        lease: Duration,
        endpoints: &[Endpoint],
        model: &ModelSpec,
        strategy: &StrategySpec,
        status: Status,
    ) -> Keeper {
        let adaptive = match strategy {
            StrategySpec::Adaptive(config) => Some(*config),
            _ => None,
        };
        // Replica i's window is the pool's limiter i.
        let mut shared: Vec<Shared> = endpoints
            .iter()
            .zip(status.pool.limiters())
            .map(|(e, limiter)| Shared {
                key: shared_key(e, model),
                pause: Arc::clone(&e.pause),
                limiter: Arc::clone(limiter),
                remote: Deliveries::default(),
            })
            .collect();
        let (stop, stopped) = std_mpsc::channel();
        let beat_every = (lease / 6).clamp(PAUSE_SYNC, Duration::from_secs(1));
        let tick = match adaptive {
            Some(_) => WINDOW_SYNC,
            None => PAUSE_SYNC,
        };
        // A worker that joins during a pause starts paused.
        share_pauses(fleet.as_mut(), &shared);
        share_windows(fleet.as_mut(), &mut shared, &status.demand, adaptive);
        let handle = std::thread::spawn(move || {
            let mut last_beat = Instant::now();
            let state = loop {
                match stopped.recv_timeout(tick) {
                    Ok(state) => break state,
                    Err(std_mpsc::RecvTimeoutError::Disconnected) => break "failed",
                    Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                }
                share_pauses(fleet.as_mut(), &shared);
                share_windows(fleet.as_mut(), &mut shared, &status.demand, adaptive);
                if last_beat.elapsed() >= beat_every {
                    last_beat = Instant::now();
                    // A beat that fails is tried again at the next; the
                    // lease gives room for a few.
                    let _ = fleet.beat(Beat {
                        samples: status.written.load(Ordering::Relaxed),
                        in_flight: status.pool.in_flight() as u64,
                    });
                }
            };
            let _ = fleet.beat(Beat {
                samples: status.written.load(Ordering::Relaxed),
                in_flight: 0,
            });
            let _ = fleet.leave(state);
        });
        Keeper { stop, handle }
    }

    /// Leaves the fleet as the run ended; the samples this worker still
    /// held go back to the queue.
    pub fn leave(self, ended: EvaluationStatus) {
        let state = match ended {
            EvaluationStatus::Interrupted => "interrupted",
            EvaluationStatus::Failed => "failed",
            _ => "finished",
        };
        let _ = self.stop.send(state);
        let _ = self.handle.join();
    }
}
