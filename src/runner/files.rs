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

/// How many of the cells of a matrix, which need `needs` open files each
/// (their window's sockets and their own store connections; see
/// [`cell_files`]), may run at once, up to `most`: the soft limit is raised
/// for `most` of the neediest, and when even the hard limit is too low,
/// fewer run at once (at least one), with a note saying so.
pub fn fit_cells(needs: &[u64], most: usize) -> (usize, Option<String>) {
    let mut sorted = needs.to_vec();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    let want = most.min(sorted.len()).max(1);
    let needed = |n: usize| sorted.iter().take(n).sum::<u64>().saturating_add(RESERVED);
    let Some(limit) = raise_open_files(needed(want)) else {
        return (want, None);
    };
    let fits = (1..=want).rev().find(|&n| needed(n) <= limit).unwrap_or(1);
    let note = (fits < want).then(|| {
        format!(
            "note: the open-file limit ({limit}) allows {fits} of these cells to run at once instead of {want}; raise it with `ulimit -n` for more"
        )
    });
    (fits, note)
}

/// Files one cell of a matrix holds while it runs: a socket per request in
/// flight (two with the built-in mock) and its own store connections.
pub fn cell_files(strategy: StrategySpec, mock: bool) -> u64 {
    let per_request: u64 = if mock { 2 } else { 1 };
    (strategy.max_concurrency() as u64).saturating_mul(per_request) + CELL_RESERVED
}

/// Files a cell keeps open besides its sockets: its store connections
/// (database, WAL and shared memory) and its mock's listener.
const CELL_RESERVED: u64 = 16;

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
    fn cells_that_fit_all_run_at_once() {
        let (n, note) = fit_cells(&[20, 20, 20], 32);
        assert_eq!((n, note), (3, None));
        let (n, _) = fit_cells(&[20; 40], 32);
        assert_eq!(n, 32, "at most `most` at once");
    }

    #[test]
    fn a_window_that_fits_is_left_alone() {
        let (s, note) = fit_open_files(StrategySpec::SlidingWindow(4), true);
        assert_eq!(s, StrategySpec::SlidingWindow(4));
        assert_eq!(note, None);
    }
}
