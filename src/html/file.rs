//! Writing a page: what it shows read from the store, and the file written
//! whole or not at all.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::{Evaluation, Experiment};
use crate::compare::{self, view::CompareView};
use crate::concurrency::StrategyName;
use crate::store::{ExperimentRow, Storage, Store};
use crate::view::matrix::Layout;
use crate::view::{self, Detail, ViewError};

/// Why a page could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PageError {
    #[error("{} is a folder", .0.display())]
    IsFolder(PathBuf),
    #[error("cannot write {}: the folder {} does not exist", .path.display(), .folder.display())]
    NoFolder { path: PathBuf, folder: PathBuf },
    #[error("cannot write {}: {source}", .path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(transparent)]
    View(#[from] ViewError),
}

impl PageError {
    /// What to do instead, for the errors a user can fix before a run.
    pub fn hint(&self) -> Option<String> {
        match self {
            PageError::IsFolder(_) => {
                Some("name the HTML file to write, e.g. -o report.html".into())
            }
            PageError::NoFolder { folder, .. } => {
                Some(format!("create it first (mkdir -p {})", folder.display()))
            }
            _ => None,
        }
    }
}

/// Refuses a path whose folder does not exist or that is a folder, before
/// anything is run.
pub fn check_target(path: &Path) -> Result<(), PageError> {
    if path.is_dir() {
        return Err(PageError::IsFolder(path.to_owned()));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            return Err(PageError::NoFolder {
                path: path.to_owned(),
                folder: dir.to_owned(),
            });
        }
    }
    Ok(())
}

/// Writes the page of `a` (compared with `b` when given) to `path`, through
/// a temporary file beside it, so a failed write leaves no half page;
/// answers the bytes written.
pub fn write(
    storage: &dyn Storage,
    store: &dyn Store,
    a: &ExperimentRow,
    b: Option<&ExperimentRow>,
    path: &Path,
) -> Result<u64, PageError> {
    // The grid of a matrix experiment is drawn on its own page only.
    let x = experiment(store, a, b.is_none())?;
    let page = match b {
        None => None,
        Some(b) => {
            let y = experiment(store, b, false)?;
            // Two experiments that share no evaluation still get their
            // summaries side by side.
            let compared = compare::load(storage, store, (a, b), compare::Pick::Shared, true)?
                .unwrap_or_else(|_| CompareView {
                    a: a.name.clone(),
                    b: b.name.clone(),
                    evaluations: Vec::new(),
                });
            Some((y, compared))
        }
    };
    let failed = |source| PageError::Write {
        path: path.to_owned(),
        source,
    };
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".part");
    let tmp = PathBuf::from(tmp);
    let file = std::fs::File::create(&tmp).map_err(failed)?;
    let mut out = BufWriter::with_capacity(1 << 20, file);
    let written = match &page {
        None => super::write_single(&mut out, &x),
        Some((y, compared)) => super::write_comparison(&mut out, &x, y, compared),
    }
    .and_then(|()| out.flush());
    drop(out);
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(failed(e));
    }
    Ok(std::fs::metadata(path).map(|m| m.len()).unwrap_or(0))
}

/// Experiment `x` with what the page shows of each evaluation: its view
/// (with error kinds) and its samples, latencies and limit steps, the last
/// two from the reads its view was built from; with `matrix`, the grid of
/// its matrix cells (as `show` lays it out by default), if it has any.
fn experiment(store: &dyn Store, x: &ExperimentRow, matrix: bool) -> Result<Experiment, ViewError> {
    let detail = Detail {
        errors: true,
        full: false,
    };
    let mut views = Vec::with_capacity(x.evaluations.len());
    let mut evaluations = Vec::with_capacity(x.evaluations.len());
    for e in &x.evaluations {
        let reads = store.summary_reads(e)?;
        let shown = view::evaluation_view(store, e, &reads, detail)?;
        let limit = match reads.timeline {
            Some(t) if shown.strategy == StrategyName::Adaptive => t.steps,
            _ => Vec::new(),
        };
        evaluations.push(Evaluation {
            view: shown.clone(),
            samples: store.samples(e.id, e.evaluators.len())?,
            limit,
            latencies: reads.latencies,
        });
        views.push(shown);
    }
    let mut shown = view::experiment(x, views);
    if matrix {
        // A layout the default cannot get wrong; were it wrong, no grid.
        shown.matrix = view::matrix::build(store, x, &shown.evaluations, &Layout::default())?
            .and_then(Result::ok);
    }
    Ok(Experiment {
        view: shown,
        evaluations,
    })
}
