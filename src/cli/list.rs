//! `dotevals list`: every experiment with date, samples, accuracy, wall time and status.

use super::output::print;
use super::{open_for_reading, CliError, Style};
use crate::store::Storage;
use crate::view::{self, ListView};
use crate::Exit;

pub fn list(storage: &dyn Storage, style: Style) -> Result<Exit, CliError> {
    let experiments = match open_for_reading(storage)? {
        Some(store) => store.experiments()?.iter().map(view::summary).collect(),
        None => Vec::new(),
    };
    print(style, &ListView { experiments })?;
    Ok(Exit::Success)
}
