//! Pins the exact bytes of every command's `--format json` output on one
//! fixed experiment, so a refactor that changes a key, its order, a number's
//! formatting or a message fails here. Measured values (timestamps, and the
//! timing fields listed in [`MEASURED`]) are masked; counts, names, statuses,
//! scores, accuracies, outputs and error messages are compared as printed.
//!
//! After a deliberate change to the shape, rewrite the files with
//! `DOTEVALS_BLESS=1 cargo test --test it golden` and review the diff.

use std::path::PathBuf;
use std::time::Duration;

use regex::Regex;

use crate::server::{Reply, TestServer};
use crate::util::TestDir;

/// Two evaluators over six rows: passes, fails, an evaluator error and a
/// sample whose request fails on every attempt.
fn fixture_spec(url: &str) -> String {
    format!(
        r#"name: golden
description: pinned output
dataset:
  columns: [text, expected]
  rows:
    - ["sample 0 is 4", "4"]
    - ["sample 1 is 5", "6"]
    - ["sample 2 is 7", "7"]
    - ["sample 3 fails", "3"]
    - ["sample 4 is 9", "n/a"]
    - ["sample 5 is 1,000", "1000"]
model:
  provider: openai
  base_url: {url}
  name: golden-model
  params: {{temperature: 0}}
  retry: {{max_attempts: 2, backoff: 10ms, max_backoff: 10ms}}
prompt: "{{{{ text }}}}"
evaluators:
  - {{type: numeric_match, expected: "{{{{ expected }}}}"}}
  - {{type: contains, expected: sample}}
concurrency: {{strategy: sequential}}
"#
    )
}

/// The fields whose values a run measures (clock readings), masked.
const MEASURED: &[&str] = &[
    "wall_seconds",
    "throughput_per_second",
    "p50",
    "p90",
    "p99",
    "max",
    "effective_concurrency",
    "mean_in_flight",
    "mean_at_server",
    "unloaded_latency_seconds",
    "speedup_over_sequential",
    "latency_p50_seconds",
    "latency_p99_seconds",
    "wait_seconds",
    "blocked_seconds",
    "latency_seconds",
    "start_seconds",
    "end_seconds",
];

/// Timestamps, the numbers of [`MEASURED`] fields, and the latency's `mean`
/// (the field after `max`; an evaluator's `mean` score is kept).
fn mask(json: &str) -> String {
    let time = Regex::new(r#""\d{4}-\d\d-\d\dT[0-9:.]+Z""#).expect("regex");
    let measured = Regex::new(&format!(
        r#""({})": -?\d+(\.\d+)?(e[-+]?\d+)?"#,
        MEASURED.join("|")
    ))
    .expect("regex");
    let latency_mean =
        Regex::new(r#"("max": <measured>,\s*"mean": )-?\d+(\.\d+)?(e[-+]?\d+)?"#).expect("regex");
    let json = time.replace_all(json, "\"<time>\"");
    let json = measured.replace_all(&json, "\"${1}\": <measured>");
    latency_mean
        .replace_all(&json, "${1}<measured>")
        .into_owned()
}

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/it/golden")
}

/// Compares `actual` (masked) with `golden/<name>.json`, or writes it when blessing.
#[track_caller]
fn check(name: &str, actual: &str) {
    let actual = mask(actual);
    let path = golden_dir().join(format!("{name}.json"));
    if std::env::var_os("DOTEVALS_BLESS").is_some() {
        std::fs::create_dir_all(golden_dir()).expect("create the golden folder");
        std::fs::write(&path, &actual).expect("write a golden file");
        return;
    }
    let expected = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("read {} ({e}); bless with DOTEVALS_BLESS=1", path.display()));
    if actual != expected {
        let line = actual
            .lines()
            .zip(expected.lines())
            .position(|(a, b)| a != b)
            .map_or(actual.lines().count().min(expected.lines().count()), |i| i);
        panic!(
            "`{name}` JSON differs from {} at line {}:\n  now:    {:?}\n  pinned: {:?}",
            path.display(),
            line + 1,
            actual.lines().nth(line).unwrap_or("<end>"),
            expected.lines().nth(line).unwrap_or("<end>"),
        );
    }
}

#[test]
fn json_output_bytes_are_pinned() {
    let dir = TestDir::new();
    let server = TestServer::builder()
        .respond(|r| {
            if r.prompt.contains("fails") {
                Reply::status(500, "{\"error\": {\"message\": \"upstream failed\"}}")
            } else {
                Reply::text(format!("{} indeed", r.prompt))
            }
        })
        .latency(Duration::from_millis(1))
        .start();
    dir.write("spec.yaml", &fixture_spec(&server.url()));
    let json = |args: &[&str]| {
        let out = dir.cmd(args).args(["--format", "json", "--quiet"]).output();
        assert!(
            matches!(out.code, Some(0 | 1)),
            "{args:?} exited {:?}: {}",
            out.code,
            out.stderr
        );
        out.stdout
    };
    check(
        "validate",
        &json(&["validate", "spec.yaml"]).replace(&server.url(), "<url>"),
    );
    check(
        "run",
        &json(&["run", "spec.yaml", "--experiment", "golden"]),
    );
    check("show", &json(&["show", "golden"]));
    check("show-errors", &json(&["show", "golden", "--errors"]));
    check("show-full", &json(&["show", "golden", "--full"]));
    check("list", &json(&["list"]));
    json(&[
        "run",
        "spec.yaml",
        "--experiment",
        "golden-b",
        "--set",
        "evaluators.1.expected=indeed",
    ]);
    check("compare", &json(&["compare", "golden", "golden-b"]));
    check("rename", &json(&["rename", "golden", "golden-2"]));
    check("delete", &json(&["delete", "golden-2"]));
}

#[test]
fn masking_keeps_counts_and_hides_measurements() {
    let text = "{\"n\": 12, \"t\": \"2026-11-29T06:10:00.123Z\", \"wall_seconds\": 0.25, \"p99\": 1.5e-3, \"max\": 3, \"mean\": 0.5, \"accuracy\": 0.75, \"mean\": 0.75, \"s\": \"v1.2\"}";
    assert_eq!(
        mask(text),
        "{\"n\": 12, \"t\": \"<time>\", \"wall_seconds\": <measured>, \"p99\": <measured>, \"max\": <measured>, \"mean\": <measured>, \"accuracy\": 0.75, \"mean\": 0.75, \"s\": \"v1.2\"}"
    );
}
