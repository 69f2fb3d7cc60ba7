//! Export's CSV: a header, then one row per record.

use std::io::{self, Write};

use serde::Serialize;

use super::{Of, Sink};
use crate::view::RecordView;

/// A header, then one row per record, quoted as RFC 4180 says (fields with a
/// comma, quote or line break in quotes, quotes doubled), lines ending in `\n`.
pub struct Csv<W: Write> {
    out: csv::Writer<W>,
    /// Every evaluator of the exported evaluations: a score and a passed column each.
    evaluators: Vec<String>,
    /// Every matrix axis of the exported evaluations: a `matrix.PATH` column
    /// each, holding the cell's label.
    axes: Vec<String>,
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
const CSV_TAIL: [&str; 16] = [
    "reasons",
    "error_kind",
    "error",
    "cached",
    "attempts",
    "latency_seconds",
    "start_seconds",
    "end_seconds",
    "prompt_tokens",
    "completion_tokens",
    "cached_prompt_tokens",
    "cache_write_tokens",
    "reasoning_tokens",
    "time_to_first_token_seconds",
    "judges",
    "endpoint",
];

impl<W: Write> Csv<W> {
    pub fn new(out: W, evaluators: Vec<String>, axes: Vec<String>, raw: bool) -> Self {
        Csv {
            out: csv::WriterBuilder::new().from_writer(out),
            evaluators,
            axes,
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
        // The cell's labels right after its evaluation's name.
        let at = 1;
        for (i, path) in self.axes.iter().enumerate() {
            header.insert(at + i, format!("matrix.{path}"));
        }
        header.extend(self.evaluators.iter().map(|n| format!("score.{n}")));
        header.extend(self.evaluators.iter().map(|n| format!("passed.{n}")));
        header.extend(CSV_TAIL.iter().map(|s| s.to_string()));
        self.out.write_record(&header).map_err(to_io)
    }

    fn write(&mut self, of: &Of<'_>, r: &RecordView) -> io::Result<()> {
        let mut row = std::mem::take(&mut self.row);
        row.clear();
        row.push(self.text(of.evaluation.to_owned()));
        for path in &self.axes {
            row.push(self.text(of.cell.get(path).cloned().unwrap_or_default()));
        }
        row.push(self.text(r.id.clone()));
        row.push(r.index.to_string());
        row.push(of.repeat.to_string());
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
        row.push(r.cached.to_string());
        row.push(r.attempts.to_string());
        row.push(opt(&r.latency_seconds.map(number)));
        row.push(number(r.start_seconds));
        row.push(number(r.end_seconds));
        let u = &r.usage;
        row.push(opt(&u.prompt_tokens));
        row.push(opt(&u.completion_tokens));
        row.push(opt(&u.cached_prompt_tokens));
        row.push(opt(&u.cache_write_tokens));
        row.push(opt(&u.reasoning_tokens));
        row.push(opt(&u.time_to_first_token_seconds.map(number)));
        row.push(json(&r.judges));
        row.push(opt(&r.endpoint));
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
