//! `dotevals export NAME`: every sample record as JSON lines or CSV, for
//! pandas, DuckDB or a spreadsheet. Streamed: one record is held at a time
//! (see [`crate::store::Store::for_each_sample`]), so memory stays flat.

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use clap::Args;

use super::output::csv::Csv;
use super::output::jsonl::Jsonl;
use super::output::{Of, Sink};
use super::{open_for_reading, unknown_experiment, CliError};
use crate::store::Storage;
use crate::view;
use crate::Exit;

pub const AFTER_HELP: &str = "\
Each line (jsonl) or row (csv) is one sample record with the fields of `show --full`, plus
`evaluation` (its evaluation's name) and `repeat` (which send of its dataset row it is).
In csv, scores and passes get a column per evaluator (`score.NAME`, `passed.NAME`); variables,
reasons, judges and a list-of-messages prompt are JSON text in their cell; null is an empty cell.
A text cell that starts with =, +, -, @, a tab or a carriage return gets a leading ' so a
spreadsheet shows it instead of running it as a formula (OWASP's rule for CSV injection);
--raw writes every cell as stored.

Examples:
  dotevals export baseline > baseline.jsonl
  dotevals export baseline | duckdb -c \"select error_kind, count(*) from read_json('/dev/stdin') group by 1\"
  dotevals export baseline --format csv -o baseline.csv
  dotevals export baseline --eval sentiment --format csv

`--format` here is export's own: jsonl (the default) or csv.";

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Experiment to export
    pub name: String,
    /// What to write
    #[arg(long, value_enum, value_name = "FORMAT", default_value_t = Records::Jsonl)]
    pub format: Records,
    /// Write to FILE instead of stdout (whole or not at all: a temporary file beside it is
    /// renamed at the end)
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Only evaluation NAME (repeat for several) [default: every evaluation]
    #[arg(long = "eval", value_name = "NAME")]
    pub evals: Vec<String>,
    /// csv: write text cells as stored, even those a spreadsheet would run as a formula
    #[arg(long)]
    pub raw: bool,
}

/// The formats of export's records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Records {
    /// One JSON object per line
    Jsonl,
    /// A header, then one row per sample
    Csv,
}

pub fn export(args: ExportArgs, storage: &dyn Storage) -> Result<Exit, CliError> {
    let Some(store) = open_for_reading(storage)? else {
        return Err(unknown_experiment(&args.name, &[]));
    };
    let store = store.as_ref();
    let x = view::experiment_row(store, &args.name)?;
    for wanted in &args.evals {
        if !x.evaluations.iter().any(|e| &e.name == wanted) {
            let names: Vec<&str> = x.evaluations.iter().map(|e| e.name.as_str()).collect();
            let hint = match crate::diagnostic::did_you_mean(wanted, names.iter().copied()) {
                Some(m) => format!("did you mean `--eval {m}`? it has: {}", names.join(", ")),
                None => format!("it has: {}", names.join(", ")),
            };
            return Err(CliError::usage(
                format!(
                    "experiment `{}` has no evaluation named `{wanted}`",
                    args.name
                ),
                Some(hint),
            ));
        }
    }
    let chosen: Vec<_> = x
        .evaluations
        .iter()
        .filter(|e| args.evals.is_empty() || args.evals.contains(&e.name))
        .collect();
    // A cell of a matrix: each axis's label by path.
    let cells: Vec<BTreeMap<String, String>> = chosen
        .iter()
        .map(|e| {
            crate::spec::coordinates(&e.spec_text)
                .into_iter()
                .map(|c| (c.path, c.label))
                .collect()
        })
        .collect();
    let target = Target::open(args.output.as_deref())?;
    let out = BufWriter::with_capacity(1 << 16, target.writer()?);
    let mut sink: Box<dyn Sink> = match args.format {
        Records::Jsonl => Box::new(Jsonl { out }),
        Records::Csv => {
            // One column per evaluator of any chosen evaluation, in first-seen order.
            let mut evaluators: Vec<String> = Vec::new();
            for e in &chosen {
                for n in &e.evaluators {
                    if !evaluators.contains(n) {
                        evaluators.push(n.clone());
                    }
                }
            }
            // One column per matrix axis, in first-seen order.
            let mut axes: Vec<String> = Vec::new();
            for e in &chosen {
                for c in crate::spec::coordinates(&e.spec_text) {
                    if !axes.contains(&c.path) {
                        axes.push(c.path);
                    }
                }
            }
            Box::new(Csv::new(out, evaluators, axes, args.raw))
        }
    };
    let mut result = sink.start();
    for (e, cell) in chosen.iter().zip(&cells) {
        if result.is_err() {
            break;
        }
        store.for_each_sample(e.id, e.evaluators.len(), &mut |row| {
            let of = Of {
                evaluation: &e.name,
                repeat: row.repeat,
                cell,
            };
            let record = view::record(row, &e.evaluators);
            match sink.write(&of, &record) {
                Ok(()) => ControlFlow::Continue(()),
                Err(err) => {
                    result = Err(err);
                    ControlFlow::Break(())
                }
            }
        })?;
    }
    let result = result.and_then(|()| sink.finish());
    match result {
        Ok(()) => target.commit()?,
        // `| head` closed the pipe: the reader has what it wanted.
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe && args.output.is_none() => {}
        Err(e) => {
            target.abandon();
            return Err(CliError::Failed(format!(
                "cannot write the export to {}: {e}",
                target.describe()
            )));
        }
    }
    Ok(Exit::Success)
}

/// Where the export goes: stdout, or a temporary file renamed over FILE at the end.
enum Target {
    Stdout,
    File {
        path: PathBuf,
        temp: PathBuf,
        file: Option<std::fs::File>,
    },
}

impl Target {
    fn open(path: Option<&Path>) -> Result<Target, CliError> {
        let Some(path) = path else {
            return Ok(Target::Stdout);
        };
        let name = path.file_name().ok_or_else(|| {
            CliError::usage(
                format!("-o {} names a folder, not a file", path.display()),
                Some("write -o FOLDER/NAME.jsonl".into()),
            )
        })?;
        let mut temp_name = std::ffi::OsString::from(".");
        temp_name.push(name);
        temp_name.push(format!(".{}.tmp", std::process::id()));
        let temp = path.with_file_name(temp_name);
        let file = std::fs::File::create(&temp).map_err(|e| {
            CliError::usage(
                format!("cannot write {}: {e}", path.display()),
                Some("pick a FILE in a folder that exists and you can write, or leave out -o for stdout".into()),
            )
        })?;
        Ok(Target::File {
            path: path.to_owned(),
            temp,
            file: Some(file),
        })
    }

    fn writer(&self) -> Result<Box<dyn Write>, CliError> {
        match self {
            Target::Stdout => Ok(Box::new(io::stdout().lock())),
            Target::File { file, path, .. } => {
                let file = file
                    .as_ref()
                    .ok_or_else(|| CliError::Failed(format!("{} is closed", path.display())))?
                    .try_clone()
                    .map_err(|e| {
                        CliError::Failed(format!("cannot write {}: {e}", path.display()))
                    })?;
                Ok(Box::new(file))
            }
        }
    }

    /// Puts the finished file in place.
    fn commit(self) -> Result<(), CliError> {
        if let Target::File { path, temp, file } = self {
            let done = file
                .as_ref()
                .map_or(Ok(()), |f| f.sync_all())
                .and_then(|()| {
                    drop(file);
                    std::fs::rename(&temp, &path)
                });
            if let Err(e) = done {
                let _ = std::fs::remove_file(&temp);
                return Err(CliError::Failed(format!(
                    "cannot write {}: {e}",
                    path.display()
                )));
            }
        }
        Ok(())
    }

    /// Removes the unfinished file.
    fn abandon(&self) {
        if let Target::File { temp, .. } = self {
            let _ = std::fs::remove_file(temp);
        }
    }

    fn describe(&self) -> String {
        match self {
            Target::Stdout => "stdout".into(),
            Target::File { path, .. } => path.display().to_string(),
        }
    }
}
