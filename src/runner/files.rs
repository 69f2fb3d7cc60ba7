//! Fits the concurrency window to the process's open-file limit.
//!
//! Every request in flight holds a socket (two with the built-in mock, which
//! serves them in this process too). A window above the open-file limit made
//! samples fail with "Too many open files", so before a run the soft limit is
//! raised as far as needed (the hard limit permitting), and if that is not
//! enough the window is lowered to what fits, with a note saying so.

use crate::concurrency::StrategySpec;

/// Files a run keeps open besides its requests' sockets: the store (database,
/// WAL and shared memory, on three connections), the dataset, standard streams,
/// the async runtime's own, the mock's listener, and some to spare.
const RESERVED: u64 = 64;

/// `strategy` fitted to the open-file limit: the soft limit is raised when the
/// window needs more, and the window is lowered when even the hard limit is too
/// low; the second value then says so. `mock`: the built-in mock serves the
/// requests, so each holds two sockets.
pub fn fit_open_files(strategy: StrategySpec, mock: bool) -> (StrategySpec, Option<String>) {
    let per_request: u64 = if mock { 2 } else { 1 };
    let window = strategy.max_concurrency() as u64;
    let needed = window.saturating_mul(per_request).saturating_add(RESERVED);
    let Some(limit) = raise_open_files(needed) else {
        return (strategy, None);
    };
    if limit >= needed {
        return (strategy, None);
    }
    let fits = (limit.saturating_sub(RESERVED) / per_request).max(1);
    let fitted = strategy.capped(usize::try_from(fits).unwrap_or(usize::MAX));
    let note = format!(
        "note: the open-file limit ({limit}) allows about {fits} requests in flight, so the window is {fits} instead of {window}; raise it with `ulimit -n` for more"
    );
    (fitted, Some(note))
}

/// Raises the soft open-file limit towards `needed` (never past the hard
/// limit); returns the soft limit now in force, `None` when unlimited or unknown.
#[cfg(unix)]
fn raise_open_files(needed: u64) -> Option<u64> {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let now = getrlimit(Resource::Nofile);
    let current = now.current?;
    if current >= needed {
        return Some(current);
    }
    let target = now.maximum.map_or(needed, |hard| hard.min(needed));
    if target > current
        && setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(target),
                maximum: now.maximum,
            },
        )
        .is_ok()
    {
        return Some(target);
    }
    Some(current)
}

#[cfg(not(unix))]
fn raise_open_files(_needed: u64) -> Option<u64> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_that_fits_is_left_alone() {
        let (s, note) = fit_open_files(StrategySpec::SlidingWindow(4), true);
        assert_eq!(s, StrategySpec::SlidingWindow(4));
        assert_eq!(note, None);
    }
}
