//! CSV and TSV files: the header row names the columns; every value is a string.

use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use super::MAX_ROW_BYTES;
use crate::diagnostic::Diagnostic;

type Item = Result<(usize, usize, Value), Diagnostic>;

/// The header row's column names.
pub fn header(path: &Path, delimiter: u8) -> Result<Vec<String>, Diagnostic> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .from_path(path)
        .map_err(|e| to_diagnostic(path, &e))?;
    let header = reader.headers().map_err(|e| to_diagnostic(path, &e))?;
    Ok(header.iter().map(str::to_owned).collect())
}

/// Streams `(line, 1, row)` for each record after the header.
pub fn read(path: &Path, delimiter: u8) -> Result<impl Iterator<Item = Item> + Send, Diagnostic> {
    let mut reader = csv::ReaderBuilder::new()
        .delimiter(delimiter)
        .has_headers(true)
        .from_path(path)
        .map_err(|e| to_diagnostic(path, &e))?;
    let header: Vec<String> = reader
        .headers()
        .map_err(|e| to_diagnostic(path, &e))?
        .iter()
        .map(str::to_owned)
        .collect();
    // A lone empty header is an empty file, reported later as "no rows".
    let blank = header.iter().position(|h| h.trim().is_empty());
    if let (Some(blank), true) = (blank, header.len() > 1) {
        return Err(Diagnostic::new(
            path,
            1,
            1,
            format!("header column {} has no name", blank + 1),
        )
        .with_hint("every column needs a name in the header row"));
    }
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
            .with_hint("quote fields that contain the delimiter, e.g. \"a, b\"")
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
