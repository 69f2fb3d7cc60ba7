//! `dotevals export NAME`: every sample record as JSON lines or CSV, for
//! pandas, DuckDB or a spreadsheet. Streamed: one record is held at a time
//! (see [`crate::store::Store::for_each_sample`]), so memory stays flat.

use std::collections::BTreeMap;
use std::io::{self, BufWriter, Write};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::Serialize;

use super::{open_for_reading, unknown_experiment, CliError};
use crate::store::Storage;
use crate::view::{self, JudgeCallView, RecordView};
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
            Box::new(Csv::new(out, evaluators, args.raw))
        }
    };
    let mut result = sink.start();
    for e in &chosen {
        if result.is_err() {
            break;
        }
        store.for_each_sample(e.id, e.evaluators.len(), &mut |row| {
            let repeat = row.repeat;
            let record = view::record(row, &e.evaluators);
            match sink.write(&e.name, repeat, &record) {
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

/// Writes records in one format.
trait Sink {
    /// What comes before the first record (the csv header).
    fn start(&mut self) -> io::Result<()>;
    fn write(&mut self, evaluation: &str, repeat: u32, r: &RecordView) -> io::Result<()>;
    /// Flushes what is buffered.
    fn finish(&mut self) -> io::Result<()>;
}

/// One JSON object per line: a record of `show --full --format json` with
/// `evaluation` and `repeat`, and every key present on every line (empty
/// `reasons` and `judges` included), so tools infer one schema.
#[derive(Serialize)]
struct Line<'a> {
    evaluation: &'a str,
    id: &'a str,
    index: u64,
    repeat: u32,
    variables: &'a serde_json::Value,
    prompt: &'a serde_json::Value,
    output: &'a Option<String>,
    scores: &'a serde_json::Map<String, serde_json::Value>,
    passed: &'a serde_json::Map<String, serde_json::Value>,
    reasons: &'a serde_json::Map<String, serde_json::Value>,
    error_kind: &'a Option<String>,
    error: &'a Option<String>,
    attempts: u32,
    latency_seconds: Option<f64>,
    start_seconds: f64,
    end_seconds: f64,
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    judges: &'a BTreeMap<String, JudgeCallView>,
}

impl<'a> Line<'a> {
    fn new(evaluation: &'a str, repeat: u32, r: &'a RecordView) -> Line<'a> {
        Line {
            evaluation,
            id: &r.id,
            index: r.index,
            repeat,
            variables: &r.variables,
            prompt: &r.prompt,
            output: &r.output,
            scores: &r.scores,
            passed: &r.passed,
            reasons: &r.reasons,
            error_kind: &r.error_kind,
            error: &r.error,
            attempts: r.attempts,
            latency_seconds: r.latency_seconds,
            start_seconds: r.start_seconds,
            end_seconds: r.end_seconds,
            prompt_tokens: r.prompt_tokens,
            completion_tokens: r.completion_tokens,
            judges: &r.judges,
        }
    }
}

struct Jsonl<W: Write> {
    out: W,
}

impl<W: Write> Sink for Jsonl<W> {
    fn start(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn write(&mut self, evaluation: &str, repeat: u32, r: &RecordView) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, &Line::new(evaluation, repeat, r))?;
        self.out.write_all(b"\n")
    }

    fn finish(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// A header, then one row per record, quoted as RFC 4180 says (fields with a
/// comma, quote or line break in quotes, quotes doubled), lines ending in `\n`.
struct Csv<W: Write> {
    out: csv::Writer<W>,
    /// Every evaluator of the exported evaluations: a score and a passed column each.
    evaluators: Vec<String>,
    row: Vec<String>,
    /// Text cells as stored, formula-like ones included (`--raw`).
    raw: bool,
}

/// The csv columns before the per-evaluator ones, and after.
const CSV_HEAD: [&str; 7] = [
    "evaluation",
    "id",
    "index",
    "repeat",
    "variables",
    "prompt",
    "output",
];
const CSV_TAIL: [&str; 10] = [
    "reasons",
    "error_kind",
    "error",
    "attempts",
    "latency_seconds",
    "start_seconds",
    "end_seconds",
    "prompt_tokens",
    "completion_tokens",
    "judges",
];

impl<W: Write> Csv<W> {
    fn new(out: W, evaluators: Vec<String>, raw: bool) -> Self {
        Csv {
            out: csv::WriterBuilder::new().from_writer(out),
            evaluators,
            row: Vec::new(),
            raw,
        }
    }

    /// `text` as a cell a spreadsheet shows rather than runs: a leading `'`
    /// when it starts like a formula (OWASP), unless `--raw`.
    fn text(&self, text: String) -> String {
        let formula = text.starts_with(['=', '+', '-', '@', '\t', '\r']);
        if formula && !self.raw {
            format!("'{text}")
        } else {
            text
        }
    }
}

/// A JSON value's cell: empty for null, strings as they are, numbers and
/// booleans as JSON writes them, lists and objects as JSON text.
fn cell(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::Null => String::new(),
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map(T::to_string).unwrap_or_default()
}

fn to_io(e: csv::Error) -> io::Error {
    match e.into_kind() {
        csv::ErrorKind::Io(e) => e,
        other => io::Error::other(format!("{other:?}")),
    }
}

impl<W: Write> Sink for Csv<W> {
    fn start(&mut self) -> io::Result<()> {
        let mut header: Vec<String> = CSV_HEAD.iter().map(|s| s.to_string()).collect();
        header.extend(self.evaluators.iter().map(|n| format!("score.{n}")));
        header.extend(self.evaluators.iter().map(|n| format!("passed.{n}")));
        header.extend(CSV_TAIL.iter().map(|s| s.to_string()));
        self.out.write_record(&header).map_err(to_io)
    }

    fn write(&mut self, evaluation: &str, repeat: u32, r: &RecordView) -> io::Result<()> {
        let mut row = std::mem::take(&mut self.row);
        row.clear();
        row.push(self.text(evaluation.to_owned()));
        row.push(self.text(r.id.clone()));
        row.push(r.index.to_string());
        row.push(repeat.to_string());
        row.push(json(&r.variables));
        row.push(self.text(cell(&r.prompt)));
        row.push(self.text(opt(&r.output)));
        let null = serde_json::Value::Null;
        for n in &self.evaluators {
            row.push(cell(r.scores.get(n).unwrap_or(&null)));
        }
        for n in &self.evaluators {
            row.push(cell(r.passed.get(n).unwrap_or(&null)));
        }
        row.push(json(&r.reasons));
        row.push(opt(&r.error_kind));
        row.push(self.text(opt(&r.error)));
        row.push(r.attempts.to_string());
        row.push(opt(&r.latency_seconds.map(number)));
        row.push(number(r.start_seconds));
        row.push(number(r.end_seconds));
        row.push(opt(&r.prompt_tokens));
        row.push(opt(&r.completion_tokens));
        row.push(json(&r.judges));
        let written = self.out.write_record(&row).map_err(to_io);
        self.row = row;
        written
    }

    fn finish(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// A number as JSON writes it (`0.25`, `1.0`), so csv and jsonl agree.
fn number(v: f64) -> String {
    serde_json::Value::from(v).to_string()
}

/// A nested value as JSON text.
fn json<T: Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field of a `show --full` record is on an export line.
    #[test]
    fn a_line_carries_every_record_field() {
        let mut judges = BTreeMap::new();
        judges.insert(
            "j".to_string(),
            JudgeCallView {
                prompt: serde_json::json!([]),
                reply: None,
                score: None,
                reason: None,
                error: None,
                attempts: 1,
                throttled: 0,
                wait_seconds: 0.0,
                queue_seconds: 0.0,
                latency_seconds: None,
                prompt_tokens: None,
                completion_tokens: None,
            },
        );
        let mut reasons = serde_json::Map::new();
        reasons.insert("j".into(), "why".into());
        let r = RecordView {
            id: "a".into(),
            index: 0,
            variables: serde_json::json!({}),
            prompt: serde_json::json!("p"),
            output: None,
            scores: serde_json::Map::new(),
            passed: serde_json::Map::new(),
            reasons,
            error_kind: None,
            error: None,
            attempts: 1,
            latency_seconds: None,
            start_seconds: 0.0,
            end_seconds: 0.0,
            prompt_tokens: None,
            completion_tokens: None,
            judges,
        };
        let record = serde_json::to_value(&r).unwrap();
        let line = serde_json::to_value(Line::new("e", 0, &r)).unwrap();
        for (k, v) in record.as_object().unwrap() {
            assert_eq!(line.get(k), Some(v), "{k}");
        }
    }

    #[test]
    fn cells_of_json_values() {
        assert_eq!(cell(&serde_json::Value::Null), "");
        assert_eq!(cell(&serde_json::json!("a,b")), "a,b");
        assert_eq!(cell(&serde_json::json!(0.5)), "0.5");
        assert_eq!(cell(&serde_json::json!(true)), "true");
        assert_eq!(
            cell(&serde_json::json!([{"role": "user"}])),
            r#"[{"role":"user"}]"#
        );
        assert_eq!(number(1.0), "1.0");
    }
}
