//! Helpers shared by the robustness modules (adaptive, ratelimit, faults,
//! crash, concurrent, secrets, upgrade): specs over numbered samples, raw
//! `--format json` reads for fields the typed reports in `util.rs` leave out,
//! bounded waits on child processes, and direct read-only looks at the store.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Child, ExitStatus};
use std::time::{Duration, Instant};

use rusqlite::{Connection, OpenFlags};
use serde_json::Value;

use crate::util::{Spec, TestDir};

/// A spec named `name` whose `n` inline rows are prompted as `sample i`, against
/// the OpenAI-compatible server at `url`, with `model_extra` lines under
/// `model:` (indented by two spaces) and `tail` appended (e.g. `concurrency:`).
pub fn spec(name: &str, url: &str, n: usize, model_extra: &str, tail: &str) -> String {
    Spec::new(name, url)
        .samples(n)
        .model(model_extra)
        .evaluator("{type: contains, expected: sample}")
        .tail(tail)
        .to_string()
}

/// `dotevals show NAME ARGS... --format json` as raw JSON; panics unless it exits 0.
pub fn show_json(dir: &TestDir, experiment: &str, args: &[&str]) -> Value {
    let out = dir
        .cmd(["show", experiment, "--format", "json"])
        .args(args)
        .output();
    out.assert_exit_code(0);
    serde_json::from_str(&out.stdout)
        .unwrap_or_else(|e| panic!("show printed no JSON ({e}):\n{}", out.stdout))
}

/// The only evaluation of a raw `show` report.
#[track_caller]
pub fn only(report: &Value) -> &Value {
    let evals = report["evaluations"]
        .as_array()
        .unwrap_or_else(|| panic!("no evaluations in {report}"));
    assert_eq!(evals.len(), 1, "{report}");
    &evals[0]
}

/// A non-negative integer field; panics with the document if absent.
#[track_caller]
pub fn uint(v: &Value, pointer: &str) -> u64 {
    v.pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no integer at {pointer} in {v:#}"))
}

/// Waits for `child` at most `timeout`; kills it (and panics) if it takes longer.
#[track_caller]
pub fn wait_bounded(child: &mut Child, timeout: Duration, what: &str) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child.try_wait().expect("poll the child") {
            return status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} did not end within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A sample row as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRow {
    pub key: String,
    pub output: Option<String>,
    pub error_kind: Option<String>,
}

/// Every sample row of the store at `path`, read with a read-only connection
/// (empty when the store or its tables do not exist yet). Panics if the file
/// exists but cannot be read: a store must stay readable whatever happened.
pub fn stored_rows(path: &Path) -> Vec<StoredRow> {
    if !path.exists() {
        return Vec::new();
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .unwrap_or_else(|e| panic!("cannot open {} read-only: {e}", path.display()));
    conn.busy_timeout(Duration::from_secs(5)).unwrap();
    let has_samples: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'samples'",
            [],
            |r| r.get(0),
        )
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    if has_samples == 0 {
        return Vec::new();
    }
    let mut stmt = conn
        .prepare("SELECT sample_key, output, error_kind FROM samples ORDER BY row_index")
        .unwrap();
    stmt.query_map([], |r| {
        Ok(StoredRow {
            key: r.get(0)?,
            output: r.get(1)?,
            error_kind: r.get(2)?,
        })
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap_or_else(|e| panic!("cannot read samples of {}: {e}", path.display()))
}

/// Sample key to output of the finished rows.
pub fn finished(rows: &[StoredRow]) -> BTreeMap<String, String> {
    rows.iter()
        .filter(|r| r.error_kind.is_none())
        .filter_map(|r| Some((r.key.clone(), r.output.clone()?)))
        .collect()
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// True when `needle` occurs in `haystack`.
pub fn contains_bytes(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

/// Sends signal `name` (`INT`, `TERM`) to `child`.
pub fn signal(child: &Child, name: &str) {
    let status = std::process::Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success());
}

/// Waits (20 s at most) until `experiment` holds `n` recorded samples, then
/// sends `child` a Ctrl-C.
pub fn interrupt_once_recorded(dir: &TestDir, child: &Child, experiment: &str, n: u64) {
    crate::util::wait_until(
        Duration::from_secs(20),
        &format!("{n} recorded samples in {experiment}"),
        || {
            dir.try_show(experiment).is_some_and(|r| {
                r.evaluations
                    .first()
                    .is_some_and(|e| e.samples.recorded >= n)
            })
        },
    );
    signal(child, "INT");
}

/// Says why `test` did not run: on stderr, and as a line appended to the file
/// `DOTEVALS_SKIPS` names when it is set. `.ci/run` sets it and fails on any
/// line there (CI installs every tool these tests need), so a skipped test
/// never passes unseen as `ok`.
pub fn skip(test: &str, why: &str) {
    eprintln!("skipped: {test}: {why}");
    if let Some(path) = std::env::var_os("DOTEVALS_SKIPS") {
        use std::io::Write;
        let file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path);
        let written = file.and_then(|mut f| writeln!(f, "{test}: {why}"));
        written.unwrap_or_else(|e| panic!("record the skip in {}: {e}", path.to_string_lossy()));
    }
}

/// Whether `tool` is a program on PATH.
pub fn on_path(tool: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).any(|d| d.join(tool).is_file())
}
