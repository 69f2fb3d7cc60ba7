//! The one place that turns a command's result into stdout text.
//!
//! Every command builds a view (a serde struct whose JSON is the documented
//! shape, committed as `schema/dotevals.schema.json`) and hands it to
//! [`print`], which picks the format. A new command's output is one [`Render`]
//! impl (plus a schema definition); a new format is one [`Format`] variant,
//! one arm here and a file of its own beside [`table`] and [`json`]. Export's
//! records go through a [`Sink`] of their own format ([`jsonl`], [`csv`]).

pub mod csv;
mod experiment;
pub mod grid;
mod json;
pub mod jsonl;
pub mod table;

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde::Serialize;

use super::{CliError, Format, Style};
use crate::view::RecordView;

/// A command's result as people (table) and scripts (JSON, from `Serialize`) see it.
pub trait Render: Serialize {
    /// The text `--format table` prints, ending in a newline.
    fn table(&self) -> String;

    /// The text `--format markdown` prints (offered by `show` and
    /// `compare` only), ending in a newline.
    fn markdown(&self) -> String {
        self.table()
    }
}

/// Prints `view` on stdout in the chosen format.
pub fn print<T: Render>(style: Style, view: &T) -> Result<(), CliError> {
    let text = match style.format {
        Format::Table => view.table(),
        Format::Json => json::pretty(view)?,
        Format::Markdown => view.markdown(),
    };
    emit(&text)
}

/// Writes to stdout; a closed pipe (`| head`) is not an error.
fn emit(text: &str) -> Result<(), CliError> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|_| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(CliError::Failed(format!("cannot write output: {e}")))
        }
        _ => Ok(()),
    }
}

/// Says on stderr when a run of experiment `x` is going on now (a killed
/// one reads as interrupted): a comparison or report of it is a snapshot.
pub fn note_if_running(x: &crate::store::ExperimentRow) {
    use crate::view::{experiment_status, ExperimentStatus};
    if experiment_status(&x.evaluations) == ExperimentStatus::Running {
        eprintln!(
            "note: experiment `{}` is still running: these figures are a snapshot",
            table::printable(&x.name)
        );
    }
}

/// Which evaluation a record is of: its name, which send of its dataset row
/// it is (`repeats`), and for a cell of a matrix each axis's label by path.
pub struct Of<'a> {
    pub evaluation: &'a str,
    pub repeat: u32,
    pub cell: &'a BTreeMap<String, String>,
}

/// Writes records in one format.
pub trait Sink {
    /// What comes before the first record (the csv header).
    fn start(&mut self) -> io::Result<()>;
    fn write(&mut self, of: &Of<'_>, r: &RecordView) -> io::Result<()>;
    /// Flushes what is buffered.
    fn finish(&mut self) -> io::Result<()>;
}
