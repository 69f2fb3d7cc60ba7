//! The runner: drives one evaluation from dataset to store.
//!
//! It is the only module that knows the strategy, the model client, the
//! evaluators and the store. A reader thread streams rows (skipping samples
//! already finished in the store), the dispatcher starts each sample as soon as
//! the limiter grants a slot, each sample task renders, calls the model with
//! retries and scores, and the store writer commits records as they finish.
//! A sample whose evaluator failed on the model's reply is scored again from
//! the stored reply rather than sent again.
//! A failed sample is data: it is recorded with its error kind, never fatal.

mod cached;
mod client;
mod execute;
mod files;
mod fleet;
mod interrupt;
mod plan;
mod progress;
mod refusal;
mod rescore;
mod sample;

pub use execute::{execute, runtime};
pub use files::fit_open_files;
pub use interrupt::Interrupt;
pub use plan::{
    api_key, fresh_name, judge_keys, plan, refuse_marked_id, PlanError, Planned, Reads, Replies,
};

pub use progress::{Progress, ProgressMode};
pub use rescore::plan_rescore;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;
use tokio::task::{JoinError, JoinSet};

use crate::concurrency::pause::{Pause, Pauses};
use crate::concurrency::pool::{Pool, Pools};
use crate::concurrency::rate::{RateLimit, RateLimits};
use crate::concurrency::{StrategySpec, Tally, Totals};
use crate::dataset::{row_json, Dataset, Values};
use crate::store::fleet::Member;
use crate::store::writer::{SampleRecord, WriterConfig, QUEUE};
use crate::store::{
    now, EndpointRun, EvaluationMeta, EvaluationStatus, RunTotals, SampleCounts, SampleLookup,
    StartedEvaluation, Store, StoreError, StoredCall,
};
use refusal::RefusalWatch;
use sample::{Endpoint, SampleContext};

/// How long in-flight samples may finish after an interrupt before they are cancelled.
pub const GRACE: Duration = Duration::from_secs(5);

/// How a run of one evaluation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunStatus {
    /// Every sample has a finished record.
    Completed,
    /// Every sample was tried; some are recorded with errors.
    CompletedWithErrors,
    /// Stopped by Ctrl-C or SIGTERM; resumable.
    Interrupted,
}

impl From<RunStatus> for EvaluationStatus {
    fn from(status: RunStatus) -> EvaluationStatus {
        match status {
            RunStatus::Completed => EvaluationStatus::Completed,
            RunStatus::CompletedWithErrors => EvaluationStatus::CompletedWithErrors,
            RunStatus::Interrupted => EvaluationStatus::Interrupted,
        }
    }
}

/// Why a run could not go on.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot start the mock model server: {0}")]
    Mock(std::io::Error),
    #[error("{0}")]
    Client(String),
    #[error("{0}")]
    Dataset(crate::diagnostic::Diagnostic),
    #[error(
        "{0} samples were lost to an internal error; run the same command again to resume them"
    )]
    Lost(u64),
    /// Every request of the first window was refused with one status (401,
    /// 403, or a 4xx that refuses the request as written).
    #[error("{}", refusal_message(*status, *refused, key_var.as_deref()))]
    Refused {
        status: u16,
        /// Samples refused before the run stopped.
        refused: u64,
        /// The variable the key came from; `None` when no key was sent.
        key_var: Option<String>,
    },
}

fn refusal_message(status: u16, refused: u64, key_var: Option<&str>) -> String {
    let first = match refused {
        1 => "the first request was".to_owned(),
        n => format!("all of the first {n} requests were"),
    };
    let what = match status {
        401 => "401 Unauthorized",
        403 => "403 Forbidden",
        _ => {
            return format!(
                "stopped early: {first} answered HTTP {status}, so the rest would be too; \
                 the server refuses the request as written: check the key, `model.name`, `base_url` \
                 and `params` in the spec (`dotevals show EXPERIMENT --errors` has the server's \
                 message), then run the same command again to resume"
            )
        }
    };
    match key_var {
        Some(var) => format!(
            "stopped early: the server refused the API key from {var} ({first} answered {what}); \
             check the key exported as {var}, then run the same command again to resume"
        ),
        None => format!(
            "stopped early: {first} answered {what} and no API key was sent; \
             name the variable holding the key with `api_key_env:` under `model:` in the spec, \
             then run the same command again to resume"
        ),
    }
}

/// One row to run.
struct Sample {
    index: u64,
    /// Which send of its row this is (`repeats`); its key says so too.
    repeat: u32,
    key: String,
    row_hash: u64,
    values: Values,
    /// `values` as JSON, as stored (and hashed into `row_hash`).
    variables: String,
    /// The model's stored call: when resuming, the reply an evaluator failed
    /// on in an earlier run; when rescoring, whatever the source recorded.
    /// Scored again (or, without a reply, copied), never sent again.
    stored: Option<StoredCall>,
    /// Sent in an earlier run, which recorded an error for it: a refusal now
    /// says nothing about the setup (it may be this sample's own, such as a
    /// prompt too long), so the refusal watch does not count it.
    retried: bool,
    /// Rendered, encoded and looked up in the response cache (when it is on).
    prepared: Option<cached::Prepared>,
}

impl Sample {
    /// Whether its reply comes from the cache: it needs no window slot.
    fn is_cached(&self) -> bool {
        self.prepared.as_ref().is_some_and(|p| p.hit.is_some())
    }
}

/// What the runs of one command share: one Ctrl-C, the endpoints' rate
/// limits and throttling pauses (per base URL and model) and, among runs
/// that go on together (the cells of a matrix), the endpoints' windows.
pub struct Shared<'a> {
    pub interrupt: &'a Arc<Interrupt>,
    pub rates: &'a RateLimits,
    pub pauses: &'a Pauses,
    pub pools: Option<&'a Pools>,
}

/// Runs `plan` into `experiment` of `store`, sharing what `shared` holds.
pub async fn run(
    plan: &Planned,
    experiment: &str,
    store: &mut dyn Store,
    progress: &Arc<Progress>,
    shared: &Shared<'_>,
) -> Result<RunStatus, RunError> {
    let (interrupt, rates, pauses) = (shared.interrupt, shared.rates, shared.pauses);
    let eval = &plan.eval;
    if plan.resuming && plan.pending == 0 {
        return nothing_to_do(plan, experiment, store, progress);
    }
    // The mock lives as long as this run, on loopback, behind the same client
    // code. A rescore connects to the model only for a judge that grades with it.
    let connection = match plan.replies {
        Replies::Stored { .. } if !rescore::judge_calls_model(eval) => None,
        _ => Some(
            client::connect(
                &eval.model,
                plan.api_key.as_deref(),
                plan.strategy.max_concurrency(),
            )
            .await?,
        ),
    };
    let cache = eval.cache.map(|_| store.cache()).transpose()?;
    let judges =
        client::connect_judges(plan, connection.as_ref(), cache.as_ref(), rates, pauses).await?;

    let started_evaluation = start_evaluation(plan, experiment, store)?;
    let evaluation_id = started_evaluation.id;

    let began = Instant::now();
    let worker = fleet::join(plan, store, &started_evaluation)?;
    let clock = fleet::Clock::of(worker.as_ref(), began, &started_evaluation, plan, progress);
    let (rate, pause) = endpoint_limits(plan, connection.as_ref(), rates, pauses, progress);
    let endpoints = match &connection {
        Some(c) => replica_endpoints(plan, c, (rate.clone(), Arc::clone(&pause)), rates, pauses),
        None => Vec::new(),
    };
    if let Some(member) = &worker {
        fleet::share_rates(member.fleet.as_ref(), &endpoints, &eval.model)?;
    }
    // A window per replica, each beside its endpoint's pause.
    let replica_pauses = match endpoints.is_empty() {
        true => vec![Arc::clone(&pause)],
        false => endpoints.iter().map(|e| Arc::clone(&e.pause)).collect(),
    };
    // An adaptive window on a shared store is steered with the evaluation's
    // fleet, each cell's by its own: those cells keep windows of their own.
    let fleet_steers = worker.is_some() && matches!(plan.strategy, StrategySpec::Adaptive(_));
    // A window shared with other cells counts this cell's part apart.
    let (pool, tally) = match (shared.pools, &connection) {
        (Some(pools), Some(c)) if !fleet_steers => {
            let mut key = client::rate_key(&c.base_url, &eval.model);
            for (url, _) in &c.replicas {
                key += &format!(" {url}");
            }
            let (pool, first) = pools.get(&key, &plan.strategy, || {
                Pool::new(&plan.strategy, replica_pauses)
            });
            if first != plan.strategy {
                progress.note(&format!(
                    "warning: {} shares its endpoint with another cell, whose concurrency ({first}) applies",
                    eval.name
                ));
            }
            (pool, Some(Arc::new(Tally::default())))
        }
        _ => (Pool::new(&plan.strategy, replica_pauses), None),
    };
    progress.start(plan, &pool, rate, pause, &judges.waits);
    let config = WriterConfig {
        evaluation_id,
        run: started_evaluation.run,
        resuming: plan.resuming,
        fleet: worker.as_ref().map(|_| plan.lease),
        base_wall_us: clock.base_wall_us,
        started: clock.started,
    };
    let written = Arc::new(AtomicU64::new(0));
    let on_commit = {
        let (mut progress, written) = (progress.on_commit(), Arc::clone(&written));
        move |batch: &[SampleRecord]| {
            let graded = batch.iter().filter(|r| !r.is_ungraded()).count();
            written.fetch_add(graded as u64, Ordering::Relaxed);
            progress(batch);
        }
    };
    // Every sample reserves its record's place when it starts, so the queue has
    // room for a full window plus a backlog the writer may fall behind by.
    let writer = store.writer(
        config.clone(),
        plan.strategy.max_concurrency().saturating_add(QUEUE),
        Box::new(on_commit),
    )?;

    // A worker of a fleet holds a claim's worth of samples in waiting.
    let capacity = match worker {
        Some(_) => fleet::claim_batch(pool.limit()).max(1),
        None => 1024,
    };
    let (rows_tx, mut rows_rx) = mpsc::channel::<Result<Sample, RunError>>(capacity);
    let preparer = match (&eval.cache, &cache, plan.replies, &connection) {
        (Some(policy), Some(lookup), Replies::Model, Some(c)) => {
            let client = c.client.clone().with_secrets(&plan.secrets);
            let cache = client::cache_for(
                &eval.model,
                &c.cache_url,
                &client,
                eval.repeats,
                *policy,
                lookup,
            );
            Some(cached::Preparer {
                prompt: eval.prompt.clone(),
                client,
                cache,
            })
        }
        _ => None,
    };
    let (reader, keeper, demand) = match worker {
        Some(Member { fleet, .. }) => {
            let demand = Arc::new(fleet::Demand::default());
            let claimer = fleet::spawn_claimer(
                fleet.another()?,
                store.lookup(evaluation_id),
                Arc::clone(&pool),
                Arc::clone(&demand),
                preparer,
                rows_tx,
            );
            let status = fleet::Status {
                written: Arc::clone(&written),
                pool: Arc::clone(&pool),
                demand: Arc::clone(&demand),
            };
            let keeper = fleet::Keeper::start(
                fleet,
                plan.lease,
                &endpoints,
                &eval.model,
                &plan.strategy,
                status,
            );
            (claimer, Some(keeper), Some(demand))
        }
        None => (
            start_reader(plan, store, evaluation_id, rows_tx, preparer),
            None,
            None,
        ),
    };

    // The variable the key came from, when one is sent.
    let key_var = plan
        .api_key
        .as_ref()
        .and(eval.model.provider.http())
        .and_then(|http| http.api_key_env.as_ref())
        .map(|key| key.var.clone());
    let mock = connection.and_then(|c| c.mock);
    let urls: Vec<String> = endpoints.iter().map(|e| e.url.clone()).collect();
    let mut ctx = SampleContext::new(
        plan,
        endpoints,
        Arc::clone(&pool),
        clock.started,
        writer.sender(),
        RefusalWatch::new(pool.limit(), plan.pending, key_var),
    );
    ctx.tally = tally.clone();
    let ctx = Arc::new(ctx);
    let ticker = progress.is_live().then(|| tick(progress));
    let mut tasks = Tasks::default();
    let end = dispatch(
        &pool,
        clock.pending,
        &mut rows_rx,
        &mut tasks,
        &ctx,
        demand.as_deref(),
        interrupt,
    )
    .await;
    drop(rows_rx);
    let (interrupted, failure) = wind_down(end, &mut tasks, &ctx, interrupt, progress).await;
    let lost = tasks.lost;
    if let Some(ticker) = ticker {
        ticker.abort();
    }
    drop(ctx);
    let _ = reader.join();
    // The writer's own error (a full disk, a deleted evaluation) explains any
    // failure of the dispatch loop, so it goes first.
    writer.finish()?;
    drop(mock);
    drop(judges);
    record_run(
        store,
        plan,
        &config,
        began.elapsed(),
        &pool,
        tally.as_deref(),
        &urls,
    )?;

    let failure = failure.or((lost > 0).then_some(RunError::Lost(lost)));
    let status = status_of(
        failure,
        interrupted,
        &store.counts(evaluation_id)?,
        plan.total,
    );
    let stored = status
        .as_ref()
        .map_or(EvaluationStatus::Failed, |s| (*s).into());
    let others_at_work = match keeper {
        Some(keeper) => {
            keeper.leave(stored);
            store.live_fleet(evaluation_id)?.is_some()
        }
        None => false,
    };
    // A worker that stops while others go on leaves the evaluation running.
    if !others_at_work {
        store.finish_evaluation(evaluation_id, stored, &now())?;
    }
    progress.finish();
    status
}

/// Starts the thread that streams the dataset's rows (skipping samples
/// finished in the store) into `rows`. A lookup that fails to open is
/// reported through the rows, as the reader's other errors are, so the run
/// still settles the store.
fn start_reader(
    plan: &Planned,
    store: &dyn Store,
    evaluation_id: i64,
    rows: mpsc::Sender<Result<Sample, RunError>>,
    preparer: Option<cached::Preparer>,
) -> std::thread::JoinHandle<()> {
    let lookup = match plan.replies {
        Replies::Model => plan
            .resuming
            .then(|| store.lookup(evaluation_id))
            .transpose(),
        Replies::Stored { evaluation_id } => store.lookup(evaluation_id).map(Some),
    };
    spawn_reader(
        plan.eval.dataset.clone(),
        plan.eval.repeats,
        lookup,
        plan.replies,
        preparer,
        rows,
    )
}

/// Redraws the progress line four times a second until aborted.
fn tick(progress: &Arc<Progress>) -> tokio::task::JoinHandle<()> {
    let progress = Arc::clone(progress);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(250)).await;
            progress.tick();
        }
    })
}

/// Records this run: the limit's history, its totals and the wall time;
/// with a window shared with other cells, this cell's own part of it
/// (`tally`) beside the window's blocked time.
fn record_run(
    store: &mut dyn Store,
    plan: &Planned,
    config: &WriterConfig,
    wall: Duration,
    limiter: &Pool,
    tally: Option<&Tally>,
    urls: &[String],
) -> Result<(), StoreError> {
    let evaluation_id = config.evaluation_id;
    store.record_limits(evaluation_id, config.run, &limiter.history())?;
    let window = limiter.totals();
    let totals = match tally {
        Some(mine) => Totals {
            blocked: window.blocked,
            rests: window.rests,
            ..mine.totals()
        },
        None => window,
    };
    store.record_run(
        evaluation_id,
        config.run,
        &RunTotals {
            strategy: plan.strategy.name().to_owned(),
            wall,
            limiter: totals,
            endpoints: match limiter.limiters() {
                [_] => Vec::new(),
                several => several
                    .iter()
                    .zip(urls)
                    .map(|(l, url)| {
                        let t = l.totals();
                        EndpointRun {
                            url: url.clone(),
                            attempts: t.attempts,
                            failed: t.failed,
                            throttled: t.throttled,
                            rests: t.rests,
                        }
                    })
                    .collect(),
            },
        },
    )?;
    store.record_wall(evaluation_id, config.wall_us())
}

/// Starts the evaluation's record in the store: what it is, and this run.
fn start_evaluation(
    plan: &Planned,
    experiment: &str,
    store: &mut dyn Store,
) -> Result<StartedEvaluation, StoreError> {
    let eval = &plan.eval;
    let evaluator_names: Vec<String> = eval.evaluators.iter().map(|e| e.name.clone()).collect();
    let fail_under: Vec<Option<f64>> = eval.evaluators.iter().map(|e| e.fail_under).collect();
    let identity = eval.identity.to_string();
    let spec_path = eval.spec_path.display().to_string();
    let strategy = plan.strategy.name();
    let meta = EvaluationMeta {
        name: &eval.name,
        spec_path: &spec_path,
        spec_text: &eval.spec_text,
        spec_hash: &eval.spec_hash,
        identity: &identity,
        provider: eval.model.provider.as_str(),
        model: &eval.model.name,
        evaluators: &evaluator_names,
        strategy,
        max_concurrency: plan.strategy.max_concurrency(),
        total: plan.total,
        cluster: eval.dataset.cluster.as_deref(),
        fail_under: &fail_under,
        repeats: eval.repeats,
    };
    store.start_evaluation(experiment, &meta, &now())
}

/// The endpoint's shared rate limit (when the spec sets one and a model is
/// called) and its throttling pause.
fn endpoint_limits(
    plan: &Planned,
    connection: Option<&client::Connection>,
    rates: &RateLimits,
    pauses: &Pauses,
    progress: &Progress,
) -> (Option<Arc<RateLimit>>, Arc<Pause>) {
    let eval = &plan.eval;
    let base_url = connection.map_or("", |c| c.base_url.as_str());
    let rate = eval.model.rate_limit.filter(|_| connection.is_some()).map(|spec| {
        let (rate, first) = rates.get(&client::rate_key(base_url, &eval.model), spec);
        if first != spec {
            progress.note(&format!(
                "warning: {} shares its endpoint with an earlier evaluation of this run; that one's rate_limit applies",
                eval.name
            ));
        }
        rate
    });
    let pause = match connection {
        Some(c) => pauses.get(&client::rate_key(&c.base_url, &eval.model)),
        None => Arc::default(),
    };
    (rate, pause)
}

/// The model's endpoints, ready to call: the first with `limits` (its rate
/// limit and pause), every other replica with its own (each replica is a
/// server of its own).
fn replica_endpoints(
    plan: &Planned,
    c: &client::Connection,
    limits: (Option<Arc<RateLimit>>, Arc<Pause>),
    rates: &RateLimits,
    pauses: &Pauses,
) -> Vec<Endpoint> {
    let model = &plan.eval.model;
    let endpoint = |url: &str, client: &crate::model::ModelClient, (rate, pause)| Endpoint {
        client: client.clone().with_secrets(&plan.secrets),
        url: crate::secrets::without_credentials(url),
        rate,
        pause,
    };
    let first = endpoint(&c.base_url, &c.client, limits);
    let others = c.replicas.iter().map(|(url, client)| {
        let rate = model
            .rate_limit
            .map(|spec| rates.get(&client::rate_key(url, model), spec).0);
        endpoint(
            url,
            client,
            (rate, pauses.get(&client::rate_key(url, model))),
        )
    });
    std::iter::once(first).chain(others).collect()
}

/// Waits for the samples in flight once dispatch ended with `end`: all of
/// them, unless an interrupt or a refused key stops them first. Answers
/// whether the run was interrupted, and why it failed if it did.
async fn wind_down(
    end: DispatchEnd,
    tasks: &mut Tasks,
    ctx: &SampleContext,
    interrupt: &Interrupt,
    progress: &Progress,
) -> (bool, Option<RunError>) {
    let mut interrupted = matches!(end, DispatchEnd::Interrupted);
    let mut failure = match end {
        DispatchEnd::Failed(e) => Some(e),
        _ => None,
    };
    if matches!(failure, Some(RunError::Refused { .. })) {
        // The requests still out carry the same refused key.
        tasks.set.abort_all();
    } else if !interrupted {
        // Every sample is dispatched (or the dataset failed): the run waits on
        // those in flight, and an interrupt must still stop it.
        tokio::select! {
            _ = tasks.join_all() => {}
            _ = interrupt.reached(1) => interrupted = true,
            _ = ctx.refusals.tripped() => tasks.set.abort_all(),
        }
    }
    if interrupted {
        if interrupt.first_to_say() {
            progress.note(
                "interrupted: letting requests in flight finish (Ctrl-C again to cancel them)",
            );
        }
        tokio::select! {
            _ = tasks.join_all() => {}
            _ = interrupt.reached(2) => tasks.set.abort_all(),
            _ = tokio::time::sleep(GRACE) => tasks.set.abort_all(),
        }
    }
    // Cancelled tasks end at their next await; a task that panicked lost its
    // sample: say so, never report success.
    tasks.join_all().await;
    if failure.is_none() && !interrupted && ctx.refusals.is_tripped() {
        failure = Some(ctx.refusals.error());
    }
    (interrupted, failure)
}

/// How the run ended: its failure, else interrupted, else whether every
/// sample has a finished record.
fn status_of(
    failure: Option<RunError>,
    interrupted: bool,
    counts: &SampleCounts,
    total: u64,
) -> Result<RunStatus, RunError> {
    match failure {
        Some(e) => Err(e),
        None if interrupted => Ok(RunStatus::Interrupted),
        None if counts.errored > 0 || counts.recorded < total => Ok(RunStatus::CompletedWithErrors),
        None => Ok(RunStatus::Completed),
    }
}

/// A rerun that finds every sample finished records no run: it only makes sure
/// the evaluation says `completed` (a run interrupted after its last sample was
/// saved says `interrupted`).
fn nothing_to_do(
    plan: &Planned,
    experiment: &str,
    store: &mut dyn Store,
    progress: &Progress,
) -> Result<RunStatus, RunError> {
    if let Some(existing) = store.find_evaluation(experiment, &plan.eval.name)? {
        let completed = EvaluationStatus::Completed;
        if existing.status != completed {
            store.finish_evaluation(existing.id, completed, &now())?;
        }
    }
    progress.note(&format!(
        "{}: all {} samples are already finished; nothing to send",
        plan.eval.name, plan.total
    ));
    Ok(RunStatus::Completed)
}

/// The sample tasks of one run, and how many of them panicked.
#[derive(Default)]
struct Tasks {
    set: JoinSet<()>,
    /// Samples lost to a panic in their task.
    lost: u64,
}

impl Tasks {
    fn count(&mut self, joined: Result<(), JoinError>) {
        self.lost += u64::from(joined.is_err_and(|e| e.is_panic()));
    }

    /// Reaps finished tasks without waiting, so the set stays as small as the window.
    fn reap(&mut self) {
        while let Some(joined) = self.set.try_join_next() {
            self.count(joined);
        }
    }

    /// Waits for every task to end.
    async fn join_all(&mut self) {
        while let Some(joined) = self.set.join_next().await {
            self.count(joined);
        }
    }
}

/// Why dispatching stopped.
enum DispatchEnd {
    /// Every row was dispatched.
    Done,
    /// Ctrl-C or SIGTERM.
    Interrupted,
    /// The dataset could not be read further, the writer stopped, or the
    /// server refused the credentials.
    Failed(RunError),
}

/// Starts each sample the moment the store writer has room for its record and
/// the limiter grants a slot, until the rows run out, the run is interrupted or
/// the server refuses the credentials.
async fn dispatch(
    limiter: &Pool,
    pending: u64,
    rows: &mut mpsc::Receiver<Result<Sample, RunError>>,
    tasks: &mut Tasks,
    ctx: &Arc<SampleContext>,
    demand: Option<&fleet::Demand>,
    interrupt: &Interrupt,
) -> DispatchEnd {
    let mut dispatched = 0u64;
    loop {
        // Room in the writer's queue first: when the writer falls behind, new
        // samples wait here instead of piling finished records up in memory.
        let slot = tokio::select! {
            biased;
            _ = interrupt.reached(1) => return DispatchEnd::Interrupted,
            _ = ctx.refusals.tripped() => return DispatchEnd::Failed(ctx.refusals.error()),
            // The writer stopped (its error is reported when it is joined):
            // sending more would throw results away.
            slot = ctx.reserve() => match slot {
                Some(slot) => slot,
                None => return DispatchEnd::Failed(StoreError::WriterLost.into()),
            },
        };
        let sample = tokio::select! {
            biased;
            _ = interrupt.reached(1) => return DispatchEnd::Interrupted,
            s = rows.recv() => s,
        };
        let sample = match sample {
            Some(Ok(sample)) => sample,
            Some(Err(e)) => return DispatchEnd::Failed(e),
            None => return DispatchEnd::Done,
        };
        // A reply from the cache waits for no slot: nothing is sent.
        let permit = match sample.is_cached() {
            true => None,
            false => tokio::select! {
                biased;
                _ = interrupt.reached(1) => return DispatchEnd::Interrupted,
                _ = ctx.refusals.tripped() => return DispatchEnd::Failed(ctx.refusals.error()),
                _ = ctx.writer_closed() => return DispatchEnd::Failed(StoreError::WriterLost.into()),
                p = limiter.acquire(Some(pending.saturating_sub(dispatched))) => {
                    Some(p.tallied(ctx.tally.as_ref()))
                }
            },
        };
        dispatched += 1;
        if let Some(demand) = demand {
            demand.dispatched();
        }
        tasks
            .set
            .spawn(sample::process(sample, permit, slot, Arc::clone(ctx)));
        tasks.reap();
    }
}

/// What a thread that feeds the dispatcher opened, or `None` once it has
/// passed the error on (so the run still settles the store).
fn opened<T>(
    opened: Result<T, StoreError>,
    tx: &mpsc::Sender<Result<Sample, RunError>>,
) -> Option<T> {
    match opened {
        Ok(x) => Some(x),
        Err(e) => {
            let _ = tx.blocking_send(Err(e.into()));
            None
        }
    }
}

/// Streams rows to the dispatcher on a thread. When resuming, samples the
/// store has as finished are skipped and one whose evaluator failed on its
/// reply carries that reply; when rescoring, every sample the source recorded
/// carries its stored call and the rest are skipped. Each row is sent
/// `repeats` times, each repeat a sample of its own (see [`crate::repeats`]).
/// Stops when the dispatcher hangs up.
fn spawn_reader(
    dataset: Dataset,
    repeats: u32,
    lookup: Result<Option<Box<dyn SampleLookup>>, StoreError>,
    replies: Replies,
    preparer: Option<cached::Preparer>,
    tx: mpsc::Sender<Result<Sample, RunError>>,
) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        let Some(lookup) = opened(lookup, &tx) else {
            return;
        };
        let rows = match dataset.rows() {
            Ok(rows) => rows,
            Err(d) => {
                let _ = tx.blocking_send(Err(RunError::Dataset(d)));
                return;
            }
        };
        for row in rows {
            let read = row.and_then(|row| Ok((dataset.sample_id(&row)?, row)));
            let (id, row) = match read {
                Ok(read) => read,
                Err(d) => {
                    let _ = tx.blocking_send(Err(RunError::Dataset(d)));
                    return;
                }
            };
            let (variables, row_hash) = row_json(&row.values);
            // The last repeat takes the row's values; the others copy them.
            let mut values = Some(row.values);
            for repeat in 0..repeats {
                let key = crate::repeats::key(&id, repeat).into_owned();
                let item = (|| {
                    let mut stored = None;
                    let mut retried = false;
                    if let Some(lookup) = &lookup {
                        let found = lookup.get(&key)?;
                        match (replies, found) {
                            (Replies::Model, Some(s)) if s.finished => return Ok(None),
                            (Replies::Model, Some(s)) if s.rescore => stored = lookup.call(&key)?,
                            (Replies::Model, Some(_)) => retried = true,
                            (Replies::Model, None) => {}
                            (Replies::Stored { .. }, Some(_)) => stored = lookup.call(&key)?,
                            (Replies::Stored { .. }, None) => return Ok(None),
                        }
                    }
                    let values = match repeat + 1 == repeats {
                        true => values.take().unwrap_or_default(),
                        false => values.clone().unwrap_or_default(),
                    };
                    // A stored reply is scored again, never sent: nothing to look up.
                    let prepared = match (&preparer, &stored) {
                        (Some(p), None) => p.prepare(&values, repeat),
                        _ => None,
                    };
                    Ok::<_, RunError>(Some(Sample {
                        index: row.index,
                        repeat,
                        row_hash,
                        key,
                        values,
                        variables: variables.clone(),
                        stored,
                        retried,
                        prepared,
                    }))
                })();
                let msg = match item {
                    Ok(None) => continue,
                    Ok(Some(sample)) => Ok(sample),
                    Err(e) => Err(e),
                };
                let stop = msg.is_err();
                if tx.blocking_send(msg).is_err() || stop {
                    return;
                }
            }
        }
    })
}
