//! The runs of one command: several plans into one experiment, in order.

use std::sync::Arc;
use std::time::Duration;

use super::{run, Interrupt, Planned, Progress, RunError, RunStatus};
use crate::concurrency::pause::Pauses;
use crate::concurrency::rate::RateLimits;
use crate::store::Store;

/// The runtime every async command uses.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// Runs `plans` into `experiment` one after another, stopping at the first
/// that does not complete; answers the status of each plan run. Plans share
/// one Ctrl-C, and their endpoints' rate limits and pauses.
pub fn execute(
    plans: &[Planned],
    experiment: &str,
    store: &mut dyn Store,
    progress: &Arc<Progress>,
) -> std::io::Result<Vec<Result<RunStatus, RunError>>> {
    let runtime = runtime()?;
    let statuses = runtime.block_on(async {
        let interrupt = Interrupt::install();
        let rates = RateLimits::default();
        let pauses = Pauses::default();
        let mut statuses = Vec::new();
        for plan in plans {
            let status = run(
                plan, experiment, store, progress, &interrupt, &rates, &pauses,
            )
            .await;
            let stop = !matches!(
                status,
                Ok(RunStatus::Completed | RunStatus::CompletedWithErrors)
            );
            statuses.push(status);
            if stop {
                break;
            }
        }
        statuses
    });
    runtime.shutdown_timeout(Duration::from_millis(100));
    Ok(statuses)
}
