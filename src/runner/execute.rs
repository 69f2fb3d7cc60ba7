//! The runs of one command: several plans into one experiment. The cells of
//! a matrix run together, sharing each endpoint's window; other plans run
//! one after another.

use std::sync::Arc;
use std::time::Duration;

use super::{run, Interrupt, Planned, Progress, RunError, RunStatus, Shared};
use crate::concurrency::pause::Pauses;
use crate::concurrency::pool::Pools;
use crate::concurrency::rate::RateLimits;
use crate::store::{Storage, Store};

/// The most cells of a matrix that run at once; the others start as they
/// finish (cells on one endpoint share its window, so more would not be
/// faster, and each holds a store connection and two threads).
pub const CELLS_AT_ONCE: usize = 32;

/// The runtime every async command uses.
pub fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
}

/// Runs `plans` into `experiment`, stopping after the first run (or group
/// of cells) that does not complete; answers the status of each plan run.
/// Plans share one Ctrl-C, and their endpoints' rate limits and pauses.
/// The cells of one matrix run together when `storage` can open a store
/// for each of them; else one after another.
pub fn execute(
    plans: &[Planned],
    experiment: &str,
    store: &mut dyn Store,
    storage: Option<&dyn Storage>,
    progress: &Arc<Progress>,
) -> std::io::Result<Vec<Result<RunStatus, RunError>>> {
    let runtime = runtime()?;
    let statuses = runtime.block_on(async {
        let interrupt = Interrupt::install();
        let rates = RateLimits::default();
        let pauses = Pauses::default();
        let mut statuses = Vec::new();
        for group in groups(plans, storage.is_some()) {
            let pools = Pools::default();
            let shared = Shared {
                interrupt: &interrupt,
                rates: &rates,
                pauses: &pauses,
                pools: (group.len() > 1).then_some(&pools),
            };
            let done = match (group, storage) {
                ([plan], _) => vec![run(plan, experiment, store, progress, &shared).await],
                (cells, Some(storage)) => {
                    together(cells, experiment, store, storage, progress, &shared).await
                }
                // `groups` keeps every plan apart without a storage.
                (plans, None) => {
                    let mut done = Vec::with_capacity(plans.len());
                    for plan in plans {
                        done.push(run(plan, experiment, store, progress, &shared).await);
                    }
                    done
                }
            };
            let stop = done
                .iter()
                .any(|s| !matches!(s, Ok(RunStatus::Completed | RunStatus::CompletedWithErrors)));
            statuses.extend(done);
            if stop {
                break;
            }
        }
        statuses
    });
    runtime.shutdown_timeout(Duration::from_millis(100));
    Ok(statuses)
}

/// `plans` cut into groups: the cells of one matrix (one spec file, run
/// together when `together`), and every other plan alone.
fn groups(plans: &[Planned], together: bool) -> Vec<&[Planned]> {
    // The spec a cell of a matrix comes from; `None` for a plain evaluation.
    fn cell_of(p: &Planned) -> Option<&std::path::Path> {
        let coordinates = crate::spec::coordinates(&p.eval.spec_text);
        (!coordinates.is_empty()).then_some(p.eval.spec_path.as_path())
    }
    plans
        .chunk_by(|a, b| together && cell_of(a).is_some() && cell_of(a) == cell_of(b))
        .collect()
}

/// Runs the cells of a matrix together (at most [`CELLS_AT_ONCE`] at a
/// time, fewer when the open-file limit says so), each with a store
/// connection of its own; answers in their order.
async fn together(
    cells: &[Planned],
    experiment: &str,
    store: &mut dyn Store,
    storage: &dyn Storage,
    progress: &Arc<Progress>,
    shared: &Shared<'_>,
) -> Vec<Result<RunStatus, RunError>> {
    let name = cells[0].eval.name.split('/').next().unwrap_or_default();
    let needs: Vec<u64> = cells
        .iter()
        .map(|p| super::files::cell_files(p.strategy, p.eval.model.mock().is_some()))
        .collect();
    let (at_once, note) = super::files::fit_cells(&needs, CELLS_AT_ONCE);
    if let Some(note) = note {
        progress.note(&format!("{name}: {note}"));
    }
    progress.start_group(name, cells);
    let slots = tokio::sync::Semaphore::new(at_once);
    let mut first = Some(store);
    let runs = cells.iter().map(|plan| {
        // The command's own store serves the first cell.
        let own = first.take();
        let slots = &slots;
        async move {
            let _slot = slots.acquire().await;
            match own {
                Some(store) => run(plan, experiment, store, progress, shared).await,
                // A connection of its own to the store the command opened.
                None => match storage.open_or_create() {
                    Ok(mut store) => run(plan, experiment, store.as_mut(), progress, shared).await,
                    Err(e) => Err(e.into()),
                },
            }
        }
    });
    let statuses = futures_util::future::join_all(runs).await;
    progress.finish_group();
    statuses
}
