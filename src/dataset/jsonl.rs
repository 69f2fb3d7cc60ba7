//! JSON Lines: one object (or list) per line; blank lines and a leading UTF-8
//! byte order mark are skipped.

use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::MAX_ROW_BYTES;
use crate::diagnostic::Diagnostic;

/// Streams `(line, column, value)` for each non-blank line.
pub fn read(path: &Path) -> Result<Lines, Diagnostic> {
    let file = File::open(path).map_err(|e| super::open_error(path, &e))?;
    Ok(Lines {
        path: path.to_path_buf(),
        reader: BufReader::with_capacity(64 * 1024, file),
        line: 0,
        buf: Vec::new(),
        done: false,
    })
}

pub struct Lines {
    path: PathBuf,
    reader: BufReader<File>,
    line: usize,
    buf: Vec<u8>,
    done: bool,
}

impl Iterator for Lines {
    type Item = Result<(usize, usize, Value), Diagnostic>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            self.buf.clear();
            self.line += 1;
            let limit = (MAX_ROW_BYTES + 1) as u64;
            match (&mut self.reader)
                .take(limit)
                .read_until(b'\n', &mut self.buf)
            {
                Ok(0) => self.done = true,
                Ok(n) if n as u64 == limit && self.buf.last() != Some(&b'\n') => {
                    self.done = true;
                    return Some(Err(Diagnostic::new(
                        &self.path,
                        self.line,
                        1,
                        format!("line is longer than {} MiB", MAX_ROW_BYTES / (1024 * 1024)),
                    )
                    .with_hint(
                        "each line must hold one JSON row; is this really a JSON Lines file?",
                    )));
                }
                Ok(_) => {
                    let text = match std::str::from_utf8(&self.buf) {
                        Ok(t) => t,
                        Err(e) => {
                            self.done = true;
                            return Some(Err(Diagnostic::new(
                                &self.path,
                                self.line,
                                e.valid_up_to() + 1,
                                "invalid UTF-8",
                            )
                            .with_hint("save the file as UTF-8")));
                        }
                    };
                    // A byte order mark some editors write at the start of a file.
                    let text = match self.line {
                        1 => text.strip_prefix('\u{feff}').unwrap_or(text),
                        _ => text,
                    };
                    if text.trim().is_empty() {
                        continue;
                    }
                    let column = text.len() - text.trim_start().len() + 1;
                    return Some(match serde_json::from_str::<Value>(text) {
                        Ok(v) => Ok((self.line, column, v)),
                        Err(e) => {
                            self.done = true;
                            // serde_json counts bytes and, reading one line, says "line 1".
                            let byte = e.column().saturating_sub(1).min(text.len());
                            let mut cut = byte;
                            while !text.is_char_boundary(cut) {
                                cut -= 1;
                            }
                            let column = text[..cut].chars().count() + 1;
                            let message = e.to_string();
                            let message = message.split(" at line ").next().unwrap_or(&message);
                            Err(Diagnostic::new(
                                &self.path,
                                self.line,
                                column,
                                format!("invalid JSON: {message}"),
                            )
                            .with_hint(
                                "each line of a .jsonl file must be one JSON object or list",
                            ))
                        }
                    });
                }
                Err(e) => {
                    self.done = true;
                    return Some(Err(Diagnostic::new(
                        &self.path,
                        self.line,
                        0,
                        format!("read error: {e}"),
                    )));
                }
            }
        }
        None
    }
}
