//! A `.json` file holding one array of rows, streamed element by element on a
//! reader thread so a large file never sits in memory whole. A leading UTF-8
//! byte order mark is skipped.

use std::cell::Cell;
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::rc::Rc;
use std::sync::mpsc::{sync_channel, SyncSender};

use serde::de::{Deserializer, SeqAccess, Visitor};
use serde_json::Value;

use crate::diagnostic::Diagnostic;

type Item = Result<(usize, usize, Value), Diagnostic>;

/// Streams `(line, column, value)` for each element of the top-level array.
pub fn read(path: &Path) -> Result<impl Iterator<Item = Item> + Send, Diagnostic> {
    let file = File::open(path).map_err(|e| super::open_error(path, &e))?;
    let (tx, rx) = sync_channel::<Item>(256);
    let owned = path.to_path_buf();
    std::thread::Builder::new()
        .name("dataset-json".into())
        .spawn(move || parse(file, &owned, &tx))
        .map_err(|e| Diagnostic::new(path, 0, 0, format!("cannot start reader: {e}")))?;
    Ok(rx.into_iter())
}

fn parse(file: File, path: &Path, tx: &SyncSender<Item>) {
    let pos = Rc::new(Position::default());
    let mut inner = BufReader::with_capacity(64 * 1024, file);
    // A byte order mark some editors write at the start of a file; not JSON.
    if inner
        .fill_buf()
        .is_ok_and(|b| b.starts_with(b"\xEF\xBB\xBF"))
    {
        inner.consume(3);
    }
    let reader = Counting {
        inner,
        pos: Rc::clone(&pos),
    };
    let mut de = serde_json::Deserializer::from_reader(reader);
    let visitor = Elements {
        tx,
        pos: Rc::clone(&pos),
    };
    if let Err(e) = de.deserialize_seq(visitor) {
        if e.to_string() == STOPPED {
            return;
        }
        let hint = if e.is_data() && e.line() <= 1 && e.column() <= 1 {
            "a .json dataset must be one array of rows: [{...}, {...}]"
        } else {
            "check the JSON syntax near this position"
        };
        let _ = tx.send(Err(Diagnostic::new(
            path,
            e.line(),
            e.column(),
            format!("invalid JSON: {e}"),
        )
        .with_hint(hint)));
        return;
    }
    // Anything after the array is an error too.
    if let Err(e) = de.end() {
        let _ = tx.send(Err(Diagnostic::new(
            path,
            e.line(),
            e.column(),
            format!("invalid JSON: {e}"),
        )));
    }
}

const STOPPED: &str = "reader stopped";

/// Line bookkeeping shared by the reader and the visitor (same thread).
#[derive(Default)]
struct Position {
    line: Cell<usize>,
    column: Cell<usize>,
    /// Set by `mark`: the next significant byte records where an element starts.
    waiting: Cell<bool>,
    start: Cell<(usize, usize)>,
}

/// Counts lines as serde_json pulls bytes (it reads one byte at a time).
struct Counting {
    inner: BufReader<File>,
    pos: Rc<Position>,
}

impl Read for Counting {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        let p = &self.pos;
        for &b in &buf[..n] {
            if b == b'\n' {
                p.line.set(p.line.get() + 1);
                p.column.set(0);
                continue;
            }
            p.column.set(p.column.get() + 1);
            if p.waiting.get() && !matches!(b, b' ' | b'\t' | b'\r' | b',' | b'[') {
                p.waiting.set(false);
                p.start.set((p.line.get() + 1, p.column.get()));
            }
        }
        Ok(n)
    }
}

struct Elements<'a> {
    tx: &'a SyncSender<Item>,
    pos: Rc<Position>,
}

impl<'de> Visitor<'de> for Elements<'_> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an array of rows")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        loop {
            self.pos.waiting.set(true);
            let Some(value) = seq.next_element::<Value>()? else {
                return Ok(());
            };
            let (line, column) = self.pos.start.get();
            if self.tx.send(Ok((line, column, value))).is_err() {
                return Err(serde::de::Error::custom(STOPPED));
            }
        }
    }
}
