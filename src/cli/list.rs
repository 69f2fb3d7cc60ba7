//! `dotevals list`: every experiment with date, samples, accuracy, wall time and status.

use super::output::print;
use super::{open_for_reading, CliError, Style};
use crate::report::{self, ListReport};
use crate::store::Storage;
use crate::Exit;

pub fn list(storage: &dyn Storage, style: Style) -> Result<Exit, CliError> {
    let experiments = match open_for_reading(storage)? {
        Some(store) => store.experiments()?.iter().map(report::summary).collect(),
        None => Vec::new(),
    };
    print(style, &ListReport { experiments })?;
    Ok(Exit::Success)
}
