//! Workers that run one evaluation together, on a store several machines
//! share (PostgreSQL). The store itself coordinates them, no process of our
//! own: the first worker loads the dataset's samples into a work queue; every
//! worker claims small batches of pending samples with a lease (`FOR UPDATE
//! SKIP LOCKED`), which its heartbeat extends; a result is written once (the
//! queue row turns `done` in the transaction that writes it, and a second
//! result for a done sample is dropped), so an expired lease can cost a
//! re-send, never a second record. A worker that dies stops beating, and its
//! claims go to the others when their leases end.
//!
//! Limits hold for the fleet, not per process: a rate limit is one shared
//! next-free instant that workers lease slices of, and a throttling pause seen
//! by one worker is published for all.

use std::time::Duration;

use super::StoreError;
use crate::concurrency::share::{Peer, Report};

/// How long a worker's claims last without a heartbeat, unless `--lease` says.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(30);

/// Who a worker is, as the live view shows it.
#[derive(Debug, Clone)]
pub struct WorkerInfo {
    pub host: String,
    pub pid: u32,
    /// How long its claims last without a heartbeat.
    pub lease: Duration,
}

impl WorkerInfo {
    /// This process, with claims lasting `lease`.
    pub fn this_process(lease: Duration) -> WorkerInfo {
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .or_else(|| {
                std::fs::read_to_string("/etc/hostname")
                    .ok()
                    .map(|h| h.trim().to_owned())
                    .filter(|h| !h.is_empty())
            })
            .unwrap_or_else(|| "localhost".to_owned());
        WorkerInfo {
            host,
            pid: std::process::id(),
            lease,
        }
    }
}

/// One sample as the queue holds it: enough to run it without the dataset file.
#[derive(Debug, Clone, PartialEq)]
pub struct QueuedSample {
    pub key: String,
    pub index: u64,
    pub repeat: u32,
    pub row_hash: u64,
    /// The row's values as JSON (as stored with its record).
    pub variables: String,
}

/// What the joining worker's dataset is, to be checked against the fleet's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DatasetPrint {
    /// Rows read (after `--samples`).
    pub rows: u64,
    /// Samples: rows times repeats.
    pub samples: u64,
    /// A hash over every sample's key and row hash, in order.
    pub digest: u64,
}

/// What joining found.
#[derive(Debug, Clone)]
pub enum Joined {
    /// No worker was alive: this one loaded the queue and starts the fleet.
    First { pending: u64 },
    /// No worker was alive, and this one has no dataset to start the
    /// fleet with (or could not read all of it): nothing was changed.
    NoFleet,
    /// Workers were running; this one works beside them.
    Beside {
        /// How long ago the fleet started, by the server's clock (so every
        /// worker reckons the evaluation's wall time from one instant).
        started_ago: Duration,
        /// The evaluation's wall time before the fleet started.
        base_wall_us: u64,
        /// Samples not yet done when this one joined.
        pending: u64,
        /// Workers alive, this one not counted.
        workers: u64,
    },
}

/// A fleet at work on an evaluation, as a worker about to join sees it
/// (`Recorder::live_fleet`), to refuse a different spec or dataset before
/// anything is recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LiveFleet {
    pub spec_hash: String,
    pub print: DatasetPrint,
    /// Workers alive.
    pub workers: u64,
}

/// What one claim got.
#[derive(Debug)]
pub enum Claim {
    /// Samples now held by this worker.
    Samples(Vec<ClaimedSample>),
    /// Nothing pending now, but samples are held by other workers: ask again
    /// within this long (their leases may run out).
    Wait(Duration),
    /// Every sample of the evaluation is done, or held by this worker.
    Done,
}

/// A claimed sample, with what the store already holds of it.
#[derive(Debug)]
pub struct ClaimedSample {
    pub sample: QueuedSample,
    /// The store has a record of it (errored, or a reply to score again).
    pub recorded: bool,
    /// Another worker held it before and let its lease run out.
    pub taken_over: bool,
}

/// What a heartbeat tells the fleet about this worker.
#[derive(Debug, Clone, Copy, Default)]
pub struct Beat {
    /// Samples this worker has written.
    pub samples: u64,
    pub in_flight: u64,
}

/// A dataset's samples as a worker reads them: an [`Unreadable`] ends them,
/// and then nothing is loaded (a queue is loaded whole or not at all).
pub type Samples<'a> = dyn Iterator<Item = Result<QueuedSample, Unreadable>> + Send + 'a;

/// The dataset could not be read further (the reader keeps why).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unreadable;

/// A worker in its fleet: its connection, and what joining found.
pub struct Member {
    pub fleet: Box<dyn Fleet>,
    pub joined: Joined,
}

/// A worker asking to join the fleet of run `run` of an evaluation.
pub struct JoinRequest<'a> {
    pub evaluation_id: i64,
    pub run: i64,
    pub spec_hash: &'a str,
    /// How long its claims last without a heartbeat.
    pub lease: Duration,
    /// The dataset this worker read, checked by `live_fleet` before.
    pub print: DatasetPrint,
    /// Its samples in order, read only when this worker starts the fleet;
    /// `None` when it lacks the dataset (it can only join).
    pub samples: Option<&'a mut Samples<'a>>,
}

/// One worker's connection to its fleet. Each method is one round trip;
/// each thread of the worker opens its own (`Fleet::another`).
pub trait Fleet: Send {
    /// Claims up to `n` pending samples (or ones whose lease ran out). With
    /// `n` zero it only looks: no samples, but `Samples` when some could
    /// be claimed.
    fn claim(&mut self, n: usize) -> Result<Claim, StoreError>;

    /// Says this worker is alive: extends its leases and publishes `beat`.
    fn beat(&mut self, beat: Beat) -> Result<(), StoreError>;

    /// Leases `units` of a shared rate limit `limit` of endpoint `endpoint`,
    /// each taking `per_unit` of its time: answers how long from now the
    /// slice starts (zero when the limit is idle).
    fn lease_rate(
        &mut self,
        endpoint: &str,
        limit: &str,
        units: u64,
        per_unit: Duration,
    ) -> Result<Duration, StoreError>;

    /// Publishes that `endpoint` is paused for `remaining` (zero: this worker
    /// knows of no pause), and answers how long the fleet's pause of it lasts.
    fn share_pause(&mut self, endpoint: &str, remaining: Duration) -> Result<Duration, StoreError>;

    /// Publishes this worker's part of the adaptive window of `endpoint`
    /// ([`crate::concurrency::share`]), and answers the other live workers'.
    fn share_window(&mut self, endpoint: &str, mine: &Report) -> Result<Vec<Peer>, StoreError>;

    /// This worker's run: workers are ranked by it, the oldest first.
    fn run(&self) -> i64;

    /// Says this worker stopped (`state`: finished, interrupted or failed).
    /// Samples it still held go back to the queue at once.
    fn leave(&mut self, state: &str) -> Result<(), StoreError>;

    /// A second connection to the same fleet, for another thread.
    fn another(&self) -> Result<Box<dyn Fleet>, StoreError>;
}

/// A hash over `(key, row_hash)` pairs in order: two workers agree on it
/// when they read the same samples.
#[derive(Debug, Default)]
pub struct Digest {
    state: u64,
    samples: u64,
}

impl Digest {
    pub fn add(&mut self, key: &str, row_hash: u64) {
        let key = xxhash_rust::xxh3::xxh3_64(key.as_bytes());
        self.state = xxhash_rust::xxh3::xxh3_64(
            &[
                self.state.to_le_bytes(),
                key.to_le_bytes(),
                row_hash.to_le_bytes(),
            ]
            .concat(),
        );
        self.samples += 1;
    }

    pub fn print(&self, rows: u64) -> DatasetPrint {
        DatasetPrint {
            rows,
            samples: self.samples,
            digest: self.state,
        }
    }
}
