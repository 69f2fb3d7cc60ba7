//! `dotevals list`: every experiment with date, samples, accuracy, wall time and status.

use super::{emit, format, json, open_for_reading, CliError, Format, Style};
use crate::report::{self, ListReport};
use crate::store::Storage;
use crate::Exit;

pub fn list(storage: &dyn Storage, style: Style) -> Result<Exit, CliError> {
    let experiments = match open_for_reading(storage)? {
        Some(store) => store.experiments()?.iter().map(report::summary).collect(),
        None => Vec::new(),
    };
    let report = ListReport { experiments };
    match style.format {
        Format::Json => emit(&json(&report)?)?,
        Format::Table => emit(&format::list(&report))?,
    }
    Ok(Exit::Success)
}
