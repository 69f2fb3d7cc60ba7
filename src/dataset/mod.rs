//! Datasets: where samples come from, streamed one row at a time.
//!
//! A dataset is rows written inline in the spec or a file (.jsonl/.ndjson,
//! .json, .csv, .tsv). Every reader is an iterator of [`Row`]s so memory stays
//! flat however large the file; errors are [`Diagnostic`]s pointing at the
//! file, line and column. [`scan`] reads everything once before a run so a bad
//! row stops the run before any request is sent.

mod delimited;
mod json;
mod jsonl;

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde_json::{Map, Value};

use crate::diagnostic::{did_you_mean, Diagnostic};

/// Longest row we accept: a larger one is almost surely a broken file.
pub const MAX_ROW_BYTES: usize = 8 * 1024 * 1024;

/// Column values of one row, keyed by column name.
pub type Values = Map<String, Value>;

/// One dataset row.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    /// 0-based position among the dataset's rows.
    pub index: u64,
    /// 1-based line where the row starts in its file (the spec file for inline rows).
    pub line: usize,
    pub values: Values,
}

/// A dataset file format, picked by extension.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    JsonLines,
    Json,
    Csv,
    Tsv,
}

impl Format {
    /// The format for `path`'s extension.
    pub fn from_path(path: &Path) -> Option<Format> {
        match path.extension()?.to_str()?.to_ascii_lowercase().as_str() {
            "jsonl" | "ndjson" => Some(Format::JsonLines),
            "json" => Some(Format::Json),
            "csv" => Some(Format::Csv),
            "tsv" => Some(Format::Tsv),
            _ => None,
        }
    }
}

/// Where rows come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// `rows:` in the spec, with the (line, column) of each row there.
    Inline {
        spec_file: PathBuf,
        rows: Arc<Vec<Value>>,
        positions: Arc<Vec<(usize, usize)>>,
    },
    /// `path:` to a file.
    File { path: PathBuf, format: Format },
    /// `path:` to a file this machine does not have (`spec::Options`): a
    /// worker that joins a fleet reads the rows from the store instead.
    /// Reading it is `missing`, the error the spec would have been refused with.
    Missing {
        path: PathBuf,
        missing: Box<Diagnostic>,
    },
}

/// A dataset as the spec declares it.
#[derive(Debug, Clone)]
pub struct Dataset {
    pub source: Source,
    /// Names for positional (list) rows.
    pub columns: Option<Vec<String>>,
    /// Column holding a stable sample id; the row index when absent.
    pub id_column: Option<String>,
    /// Read at most this many rows.
    pub limit: Option<u64>,
    /// Column whose values group samples (questions about one passage, say):
    /// standard errors are clustered by it.
    pub cluster: Option<String>,
    /// Read only this shard's rows (`run --shard`), after `limit`.
    pub shard: Option<Arc<Shard>>,
}

/// One of `count` shards of a dataset's rows (`run --shard index/count`):
/// the rows sorted by sample id, dealt round robin, so each shard is the
/// same whatever machine reads it, and the shards together are every row
/// once. A row's repeats stay in its shard; rows keep their index in the
/// whole dataset, so merged shards line up as one run would.
#[derive(Debug)]
pub struct Shard {
    /// 1-based.
    pub index: u64,
    pub count: u64,
    /// Rows in the dataset (after `limit`), all shards together.
    pub of_rows: u64,
    ids: std::collections::HashSet<String>,
}

impl Shard {
    /// Shard `index` (1-based) of `count` of `dataset`'s rows: reads every
    /// sample id once.
    pub fn select(dataset: &Dataset, index: u64, count: u64) -> Result<Shard, Diagnostic> {
        let whole = Dataset {
            shard: None,
            ..dataset.clone()
        };
        let mut ids = Vec::new();
        for row in whole.rows()? {
            ids.push(whole.sample_id(&row?)?);
        }
        let of_rows = ids.len() as u64;
        ids.sort_unstable();
        let ids = ids
            .into_iter()
            .enumerate()
            .filter(|(i, _)| *i as u64 % count == index - 1)
            .map(|(_, id)| id)
            .collect();
        Ok(Shard {
            index,
            count,
            of_rows,
            ids,
        })
    }

    /// Rows in this shard.
    pub fn rows(&self) -> u64 {
        self.ids.len() as u64
    }
}

/// A stream of rows.
pub type Rows = Box<dyn Iterator<Item = Result<Row, Diagnostic>> + Send>;

impl Dataset {
    /// The file rows are read from (the spec itself for inline rows).
    pub fn file(&self) -> &Path {
        match &self.source {
            Source::Inline { spec_file, .. } => spec_file,
            Source::File { path, .. } | Source::Missing { path, .. } => path,
        }
    }

    /// The error a missing file was set aside with, if it is missing.
    pub fn missing(&self) -> Option<&Diagnostic> {
        match &self.source {
            Source::Missing { missing, .. } => Some(missing),
            _ => None,
        }
    }

    /// Opens a fresh stream of rows, honouring `limit`.
    pub fn rows(&self) -> Result<Rows, Diagnostic> {
        let columns = self.columns.clone();
        let raw: Box<dyn Iterator<Item = Result<(usize, usize, Value), Diagnostic>> + Send> =
            match &self.source {
                Source::Inline {
                    rows, positions, ..
                } => {
                    let (rows, positions) = (Arc::clone(rows), Arc::clone(positions));
                    Box::new((0..rows.len()).map(move |i| {
                        let (line, col) = positions.get(i).copied().unwrap_or((0, 0));
                        Ok((line, col, rows[i].clone()))
                    }))
                }
                Source::File {
                    path,
                    format: Format::JsonLines,
                } => Box::new(jsonl::read(path)?),
                Source::File {
                    path,
                    format: Format::Json,
                } => Box::new(json::read(path)?),
                Source::File {
                    path,
                    format: Format::Csv,
                } => Box::new(delimited::read(path, b',')?),
                Source::File {
                    path,
                    format: Format::Tsv,
                } => Box::new(delimited::read(path, b'\t')?),
                Source::Missing { missing, .. } => return Err((**missing).clone()),
            };
        let file = self.file().to_path_buf();
        let rows = raw.enumerate().map(move |(index, item)| {
            let (line, column, value) = item?;
            let values = to_values(value, columns.as_deref()).map_err(|(msg, hint)| {
                Diagnostic::new(&file, line, column, msg).with_hint_opt(hint)
            })?;
            Ok(Row {
                index: index as u64,
                line,
                values,
            })
        });
        let rows: Rows = match self.limit {
            Some(n) => Box::new(rows.take(n as usize)),
            None => Box::new(rows),
        };
        let Some(shard) = &self.shard else {
            return Ok(rows);
        };
        // A row whose id cannot be read passes, to be reported as it would be.
        let (shard, ids) = (
            Arc::clone(shard),
            Dataset {
                shard: None,
                ..self.clone()
            },
        );
        Ok(Box::new(rows.filter(move |row| {
            match row {
                Ok(row) => ids
                    .sample_id(row)
                    .map_or(true, |id| shard.ids.contains(&id)),
                Err(_) => true,
            }
        })))
    }

    /// Column names as far as they can be known without a full read: `columns`,
    /// the CSV header, or the keys of the first row.
    /// A dataset with no rows at all is an error here already.
    pub fn known_columns(&self) -> Result<Vec<String>, Diagnostic> {
        if let Some(c) = &self.columns {
            return Ok(c.clone());
        }
        if let Source::File {
            path,
            format: format @ (Format::Csv | Format::Tsv),
        } = &self.source
        {
            let delimiter = if *format == Format::Csv { b',' } else { b'\t' };
            return delimited::header(path, delimiter);
        }
        match self.rows()?.next() {
            Some(row) => Ok(row?.values.keys().cloned().collect()),
            None => Err(empty(self.file())),
        }
    }

    /// The sample id of `row`: its `id` column, else its index.
    pub fn sample_id(&self, row: &Row) -> Result<String, Diagnostic> {
        let Some(col) = &self.id_column else {
            return Ok(row.index.to_string());
        };
        match row.values.get(col) {
            Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
            Some(Value::Number(n)) => Ok(n.to_string()),
            Some(other) => Err(Diagnostic::new(
                self.file(),
                row.line,
                1,
                format!(
                    "id column `{col}` must be a non-empty string or a number, found {}",
                    describe(other)
                ),
            )),
            None => Err(Diagnostic::new(
                self.file(),
                row.line,
                1,
                format!("row has no id column `{col}`"),
            )
            .with_hint_opt(
                did_you_mean(col, row.values.keys().map(String::as_str))
                    .map(|c| format!("did you mean `id: {c}`?")),
            )),
        }
    }
}

/// A row as stored (JSON, keys in order) and a stable hash of that text, to
/// notice an edited dataset on resume.
pub fn row_json(values: &Values) -> (String, u64) {
    // serde_json's Map is ordered by key, so equal rows serialize equally.
    let text = serde_json::to_string(values).unwrap_or_default();
    let hash = xxhash_rust::xxh3::xxh3_64(text.as_bytes());
    (text, hash)
}

/// The hash half of [`row_json`].
pub fn row_hash(values: &Values) -> u64 {
    row_json(values).1
}

/// What a full read of the dataset found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Rows the run will consider (after `limit`).
    pub rows: u64,
}

/// Reads every row once: each must parse, carry every column in `required`, and
/// have a unique id. `each` sees every good row (used to compare with stored
/// records). Nothing is kept per row except id hashes when an id column is set.
pub fn scan(
    dataset: &Dataset,
    required: &BTreeSet<String>,
    mut each: impl FnMut(&Row, &str) -> Result<(), Diagnostic>,
) -> Result<Scan, Diagnostic> {
    let mut seen: HashMap<u64, usize> = HashMap::new();
    let mut count = 0u64;
    for row in dataset.rows()? {
        let row = row?;
        if let Some(missing) = required.iter().find(|c| !row.values.contains_key(*c)) {
            let have: Vec<&str> = row.values.keys().map(String::as_str).collect();
            let hint = match did_you_mean(missing, have.iter().copied()) {
                Some(c) => format!(
                    "this row has `{c}`; did you mean that? Its columns: {}",
                    have.join(", ")
                ),
                None => format!("this row's columns: {}", have.join(", ")),
            };
            return Err(Diagnostic::new(
                dataset.file(),
                row.line,
                1,
                format!(
                    "row {} has no column `{missing}`, which the spec's templates use",
                    row.index + 1
                ),
            )
            .with_hint(hint));
        }
        let id = dataset.sample_id(&row)?;
        if dataset.id_column.is_some() {
            let h = xxhash_rust::xxh3::xxh3_64(id.as_bytes());
            if let Some(first) = seen.insert(h, row.line) {
                return Err(Diagnostic::new(
                    dataset.file(),
                    row.line,
                    1,
                    format!("duplicate id `{id}` (first seen on line {first})"),
                )
                .with_hint("sample ids must be unique so results can be matched on resume"));
            }
        }
        each(&row, &id)?;
        count += 1;
    }
    if count == 0 {
        return Err(empty(dataset.file()));
    }
    Ok(Scan { rows: count })
}

fn empty(file: &Path) -> Diagnostic {
    Diagnostic::new(file, 0, 0, "the dataset has no rows")
        .with_hint("add at least one row; an empty evaluation measures nothing")
}

/// Turns a parsed row (object, or list named by `columns`) into column values.
fn to_values(value: Value, columns: Option<&[String]>) -> Result<Values, (String, Option<String>)> {
    match value {
        Value::Object(map) => Ok(map),
        Value::Array(items) => {
            let Some(columns) = columns else {
                return Err((
                    "row is a list but the dataset has no `columns`".into(),
                    Some(
                        "name the list's fields with `columns: [text, expected]` under `dataset`"
                            .into(),
                    ),
                ));
            };
            if items.len() != columns.len() {
                return Err((
                    format!(
                        "row has {} values but `columns` names {}",
                        items.len(),
                        columns.len()
                    ),
                    Some(format!("columns: [{}]", columns.join(", "))),
                ));
            }
            Ok(columns.iter().cloned().zip(items).collect())
        }
        other => Err((
            format!(
                "a row must be a mapping or a list, found {}",
                describe(&other)
            ),
            Some("write a row as {text: ..., expected: ...} or [..., ...] with `columns`".into()),
        )),
    }
}

fn describe(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a mapping",
    }
}

/// A file that cannot be opened.
fn open_error(path: &Path, e: &std::io::Error) -> Diagnostic {
    let hint = (e.kind() == std::io::ErrorKind::NotFound)
        .then(|| "dataset paths are relative to the spec file".to_owned());
    Diagnostic::new(path, 0, 0, format!("cannot read dataset: {e}")).with_hint_opt(hint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn inline(rows: Vec<Value>, columns: Option<Vec<&str>>, id: Option<&str>) -> Dataset {
        let n = rows.len();
        Dataset {
            source: Source::Inline {
                spec_file: "s.yaml".into(),
                rows: Arc::new(rows),
                positions: Arc::new((0..n).map(|i| (i + 10, 5)).collect()),
            },
            columns: columns.map(|c| c.into_iter().map(String::from).collect()),
            id_column: id.map(String::from),
            limit: None,
            cluster: None,
            shard: None,
        }
    }

    #[test]
    fn positional_and_mapping_rows() {
        let d = inline(
            vec![json!(["a", "b"]), json!({"text": "c", "expected": "d"})],
            Some(vec!["text", "expected"]),
            None,
        );
        let rows: Vec<Row> = d.rows().unwrap().map(Result::unwrap).collect();
        assert_eq!(rows[0].values["text"], "a");
        assert_eq!(rows[1].values["expected"], "d");
        assert_eq!(rows[1].line, 11);
    }

    #[test]
    fn scan_reports_missing_column_with_position() {
        let d = inline(vec![json!({"text": "a"}), json!({"txt": "b"})], None, None);
        let req: BTreeSet<String> = ["text".to_string()].into();
        let err = scan(&d, &req, |_, _| Ok(())).unwrap_err();
        assert_eq!((err.line, err.column), (11, 1));
        assert!(err.hint.unwrap().contains("did you mean"));
    }

    #[test]
    fn scan_rejects_duplicate_ids_and_empty() {
        let d = inline(vec![json!({"q": 1}), json!({"q": 1})], None, Some("q"));
        let err = scan(&d, &BTreeSet::new(), |_, _| Ok(())).unwrap_err();
        assert!(err.message.contains("duplicate id `1`"), "{}", err.message);
        let d = inline(vec![], None, None);
        assert!(scan(&d, &BTreeSet::new(), |_, _| Ok(())).is_err());
    }

    #[test]
    fn list_rows_need_columns() {
        let d = inline(vec![json!(["a"])], None, None);
        let err = d.rows().unwrap().next().unwrap().unwrap_err();
        assert!(err.message.contains("no `columns`"));
    }

    #[test]
    fn limit_and_ids() {
        let mut d = inline(
            vec![json!({"q": "x"}), json!({"q": 7}), json!({"q": "z"})],
            None,
            Some("q"),
        );
        d.limit = Some(2);
        let rows: Vec<Row> = d.rows().unwrap().map(Result::unwrap).collect();
        assert_eq!(rows.len(), 2);
        assert_eq!(d.sample_id(&rows[1]).unwrap(), "7");
    }

    #[test]
    fn row_hash_ignores_key_order() {
        let a: Values = serde_json::from_str(r#"{"a":1,"b":2}"#).unwrap();
        let b: Values = serde_json::from_str(r#"{"b":2,"a":1}"#).unwrap();
        assert_eq!(row_hash(&a), row_hash(&b));
    }
}
