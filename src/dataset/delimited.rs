//! CSV and TSV files: the header row names the columns; every value is a string.
//!
//! CSV follows RFC 4180: a field may be quoted (`"a, b"`, `""` for a quote). TSV
//! has no quoting at all (the IANA definition): every character but tab and
//! newline is taken as written, so `"Great" she said` keeps its quotes, and a
//! field cannot hold a tab or a newline. A UTF-8 byte order mark is skipped.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::MAX_ROW_BYTES;
use crate::diagnostic::Diagnostic;

type Item = Result<(usize, usize, Value), Diagnostic>;

/// A reader for `path`: quoted fields for CSV, none for TSV.
fn reader(path: &Path, delimiter: u8) -> Result<csv::Reader<File>, Diagnostic> {
    csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .quoting(delimiter != b'\t')
        .has_headers(true)
        .from_path(path)
        .map_err(|e| to_diagnostic(path, &e))
}

/// The header row's column names: at least one, each named once.
pub fn header(path: &Path, delimiter: u8) -> Result<Vec<String>, Diagnostic> {
    checked_header(path, delimiter, &mut reader(path, delimiter)?)
}

fn checked_header(
    path: &Path,
    delimiter: u8,
    reader: &mut csv::Reader<File>,
) -> Result<Vec<String>, Diagnostic> {
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| to_diagnostic(path, &e))?
        .iter()
        .map(str::to_owned)
        .collect();
    if header.iter().all(|h| h.trim().is_empty()) && header.len() <= 1 {
        return Err(
            Diagnostic::new(path, 0, 0, "the dataset file is empty").with_hint(
                "the first line must be a header row naming the columns, e.g. `text,expected`",
            ),
        );
    }
    let column = |i| field_column(path, delimiter, i);
    if let Some(blank) = header.iter().position(|h| h.trim().is_empty()) {
        return Err(Diagnostic::new(
            path,
            1,
            column(blank),
            format!("header column {} has no name", blank + 1),
        )
        .with_hint("every column needs a name in the header row"));
    }
    for (i, name) in header.iter().enumerate() {
        if let Some(first) = header[..i].iter().position(|h| h == name) {
            return Err(Diagnostic::new(
                path,
                1,
                column(i),
                format!(
                    "the header names column `{name}` twice (columns {} and {})",
                    first + 1,
                    i + 1
                ),
            )
            .with_hint("each column needs a name of its own; rename or remove one of them"));
        }
    }
    Ok(header)
}

/// The 1-based character column where field `index` of the first line starts
/// (1 if the line cannot be read).
fn field_column(path: &Path, delimiter: u8, index: usize) -> usize {
    let mut line = Vec::new();
    let read = File::open(path).and_then(|f| {
        BufReader::new(f)
            .take(MAX_ROW_BYTES as u64)
            .read_until(b'\n', &mut line)
    });
    if read.is_err() {
        return 1;
    }
    let text = String::from_utf8_lossy(&line);
    let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
    let (mut field, mut quoted) = (0, false);
    for (column, c) in text.chars().enumerate() {
        if field == index {
            return column + 1;
        }
        if c == '"' && delimiter != b'\t' {
            quoted = !quoted;
        } else if c == delimiter as char && !quoted {
            field += 1;
        }
    }
    1
}

/// Streams `(line, 1, row)` for each record after the header.
pub fn read(path: &Path, delimiter: u8) -> Result<impl Iterator<Item = Item> + Send, Diagnostic> {
    let mut reader = reader(path, delimiter)?;
    let header = checked_header(path, delimiter, &mut reader)?;
    let path: PathBuf = path.to_path_buf();
    let mut records = reader.into_records();
    let mut failed = false;
    Ok(std::iter::from_fn(move || {
        if failed {
            return None;
        }
        let record = match records.next()? {
            Ok(r) => r,
            Err(e) => {
                failed = true;
                return Some(Err(to_diagnostic(&path, &e)));
            }
        };
        let line = record.position().map_or(0, |p| p.line() as usize);
        if record.as_slice().len() > MAX_ROW_BYTES {
            failed = true;
            return Some(Err(Diagnostic::new(
                &path,
                line,
                1,
                "record is longer than 8 MiB",
            )));
        }
        let row: Map<String, Value> = header
            .iter()
            .cloned()
            .zip(record.iter().map(|f| Value::String(f.to_owned())))
            .collect();
        Some(Ok((line, 1, Value::Object(row))))
    }))
}

fn to_diagnostic(path: &Path, e: &csv::Error) -> Diagnostic {
    match e.kind() {
        csv::ErrorKind::UnequalLengths {
            pos,
            expected_len,
            len,
        } => {
            let line = pos.as_ref().map_or(0, |p| p.line() as usize);
            Diagnostic::new(
                path,
                line,
                1,
                format!("row has {len} fields but the header has {expected_len}"),
            )
            .with_hint(
                "quote fields that contain the delimiter, e.g. \"a, b\" (CSV only: a TSV field cannot hold a tab)",
            )
        }
        csv::ErrorKind::Utf8 { pos, err } => {
            let line = pos.as_ref().map_or(0, |p| p.line() as usize);
            Diagnostic::new(
                path,
                line,
                1,
                format!("invalid UTF-8 in field {}", err.field() + 1),
            )
            .with_hint("save the file as UTF-8")
        }
        csv::ErrorKind::Io(io) => super::open_error(path, io),
        _ => {
            let line = e.position().map_or(0, |p| p.line() as usize);
            Diagnostic::new(path, line, 1, e.to_string())
        }
    }
}
