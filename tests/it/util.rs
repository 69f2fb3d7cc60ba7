//! The harness every test uses: a [`TestDir`] holding one test's specs, data
//! and results store; a [`TestCommand`] on the real `dotevals` binary with a
//! clean environment; and test-side types for the `--format json` reports.
//!
//! The JSON types are written here, independently of `src/report.rs`, so a
//! change to the documented shape fails a test instead of passing silently.
//! Unknown fields are allowed (adding fields is not a break), but every
//! documented field must be present: nullable ones go through [`nullable`],
//! which makes serde treat a missing key as an error rather than `None`.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use serde_json::Value;

/// The binary under test.
pub const BIN: &str = env!("CARGO_BIN_EXE_dotevals");

/// A fresh directory for one test: specs, data files and the results store.
pub struct TestDir {
    dir: tempfile::TempDir,
}

impl TestDir {
    pub fn new() -> TestDir {
        TestDir {
            dir: tempfile::Builder::new()
                .prefix("dotevals-it-")
                .tempdir()
                .expect("create a temporary directory"),
        }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `contents` to `name` (relative to the directory), creating folders.
    pub fn write(&self, name: &str, contents: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create folder");
        }
        std::fs::write(&path, contents).expect("write test file");
        path
    }

    /// Reads a file of the directory.
    pub fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.path().join(name)).expect("read test file")
    }

    /// The results store of this test.
    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store").join("dotevals.db")
    }

    /// `dotevals ARGS...` run in this directory, against this directory's store.
    pub fn cmd<I, S>(&self, args: I) -> TestCommand
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new(BIN);
        cmd.current_dir(self.path());
        for (key, _) in std::env::vars_os() {
            let key_text = key.to_string_lossy();
            if key_text.starts_with("OPENAI_") || key_text.starts_with("DOTEVALS_") {
                cmd.env_remove(&key);
            }
        }
        cmd.env("NO_COLOR", "1")
            .env("DOTEVALS_STORAGE", self.store())
            // The test servers are on loopback; never route them through a proxy.
            .env("NO_PROXY", "127.0.0.1,localhost")
            .env("no_proxy", "127.0.0.1,localhost")
            .env_remove("RUST_LOG")
            .stdin(Stdio::null());
        cmd.args(args);
        TestCommand { cmd }
    }

    /// `dotevals show NAME --full --format json`, decoded; panics unless it exits 0.
    pub fn show_full(&self, experiment: &str) -> ExperimentView {
        self.cmd(["show", experiment, "--full", "--format", "json"])
            .output()
            .assert_exit_code(0)
            .json()
    }

    /// `dotevals show NAME --format json`, decoded, or `None` while the experiment does not exist.
    pub fn try_show(&self, experiment: &str) -> Option<ExperimentView> {
        let out = self.cmd(["show", experiment, "--format", "json"]).output();
        (out.code == Some(0)).then(|| out.json())
    }
}

/// A command on the binary under test.
pub struct TestCommand {
    cmd: Command,
}

impl TestCommand {
    pub fn arg(mut self, arg: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.arg(arg);
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.cmd.args(args);
        self
    }

    pub fn env(mut self, key: &str, value: impl AsRef<std::ffi::OsStr>) -> Self {
        self.cmd.env(key, value);
        self
    }

    /// Runs to completion and captures both streams.
    pub fn output(mut self) -> Out {
        let started = Instant::now();
        let output: Output = self.cmd.output().expect("run dotevals");
        Out {
            code: output.status.code(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
            elapsed: started.elapsed(),
            command: format!("{:?}", self.cmd),
        }
    }

    /// Starts the command with stdout and stderr going to files `NAME.out` and
    /// `NAME.err` in `dir` (pipes nobody reads could fill up and block it).
    pub fn spawn_logged(mut self, dir: &TestDir, name: &str) -> std::process::Child {
        let out = std::fs::File::create(dir.path().join(format!("{name}.out"))).unwrap();
        let err = std::fs::File::create(dir.path().join(format!("{name}.err"))).unwrap();
        self.cmd.stdout(out).stderr(err);
        self.cmd.spawn().expect("spawn dotevals")
    }

    /// Starts the command with stdout piped (for servers that print their address).
    pub fn spawn_piped(mut self) -> std::process::Child {
        self.cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        self.cmd.spawn().expect("spawn dotevals")
    }
}

/// What a finished command printed and how it ended.
#[derive(Debug)]
pub struct Out {
    /// `None` when killed by a signal.
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
    pub command: String,
}

impl Out {
    /// Panics with both streams unless the exit code is `expected`.
    #[track_caller]
    pub fn assert_exit_code(&self, expected: i32) -> &Self {
        assert_eq!(
            self.code,
            Some(expected),
            "\ncommand: {}\nexpected exit code {expected}, got {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.command,
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }

    /// Panics unless stderr contains `needle`.
    #[track_caller]
    pub fn assert_stderr_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stderr.contains(needle),
            "\ncommand: {}\nstderr does not contain {needle:?}\n--- stderr ---\n{}",
            self.command,
            self.stderr
        );
        self
    }

    /// Panics unless stdout contains `needle`.
    #[track_caller]
    pub fn assert_stdout_contains(&self, needle: &str) -> &Self {
        assert!(
            self.stdout.contains(needle),
            "\ncommand: {}\nstdout does not contain {needle:?}\n--- stdout ---\n{}",
            self.command,
            self.stdout
        );
        self
    }

    /// Decodes stdout as JSON of type `T`.
    #[track_caller]
    pub fn json<T: DeserializeOwned>(&self) -> T {
        match serde_json::from_str(&self.stdout) {
            Ok(v) => v,
            Err(e) => panic!(
                "\ncommand: {}\nstdout is not the expected JSON: {e}\n--- stdout ---\n{}\n--- stderr ---\n{}",
                self.command, self.stdout, self.stderr
            ),
        }
    }
}

/// Polls `condition` every 20 ms until it holds; panics after `timeout`.
#[track_caller]
pub fn wait_until(timeout: Duration, what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !condition() {
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Model lines for short timeouts and quick retries, so failure paths stay fast.
pub const QUICK: &str =
    "  timeout: 5s\n  retry: {max_attempts: 3, backoff: 10ms, max_backoff: 50ms}\n";

/// The `model:` block for an OpenAI-compatible server at `base_url`, with
/// [`QUICK`] timeouts and retries.
pub fn openai_model(base_url: &str) -> String {
    model_block(base_url, "test-model", QUICK)
}

/// `model:` for the OpenAI-compatible server at `url`, model `name`, then `lines`.
fn model_block(url: &str, name: &str, lines: &str) -> String {
    format!("model:\n  provider: openai\n  base_url: {url}\n  name: {name}\n{lines}")
}

/// `sample 0`, `sample 1`, ...: the prompt of sample `i` in [`sample_rows`].
pub fn prompt(i: usize) -> String {
    format!("sample {i}")
}

/// `n` inline rows, `[{text: "sample 0"}, ...]`, whose prompts are [`prompt`]`(i)`.
pub fn sample_rows(n: usize) -> String {
    text_rows((0..n).map(prompt))
}

/// Inline rows `[{text: "A"}, {text: "B"}, ...]`, one per text, quoted as is.
pub fn text_rows<T: std::fmt::Display>(texts: impl IntoIterator<Item = T>) -> String {
    let rows: Vec<String> = texts
        .into_iter()
        .map(|t| format!("{{text: \"{t}\"}}"))
        .collect();
    format!("[{}]", rows.join(", "))
}

/// A spec in the tests' usual shape, against an OpenAI-compatible server,
/// rendered to YAML text by `to_string()`:
///
/// ```text
/// name: NAME
/// dataset:
///   rows: [{text: "sample 0"}]     (or the lines given to `dataset`)
/// model:
///   provider: openai
///   base_url: URL
///   name: test-model
///   ...                            (the lines given to `model`)
/// prompt: "{{ text }}"
/// evaluators:                      (only if some were given)
///   - {type: contains, expected: sample}
/// TAIL
/// ```
///
/// Tests that check positions in error messages write their YAML by hand.
#[derive(Debug, Clone)]
pub struct Spec {
    name: String,
    url: String,
    dataset: String,
    model_name: String,
    model: String,
    prompt: String,
    evaluators: String,
    tail: String,
}

impl Spec {
    /// One row, `sample 0`, prompted as is; model `test-model`; no evaluators.
    pub fn new(name: &str, url: &str) -> Spec {
        Spec {
            name: name.to_owned(),
            url: url.to_owned(),
            dataset: String::new(),
            model_name: "test-model".to_owned(),
            model: String::new(),
            prompt: "\"{{ text }}\"".to_owned(),
            evaluators: String::new(),
            tail: String::new(),
        }
        .rows(&sample_rows(1))
    }

    /// `n` rows prompted `sample 0`, `sample 1`, ... ([`sample_rows`]).
    pub fn samples(self, n: usize) -> Spec {
        self.rows(&sample_rows(n))
    }

    /// Inline rows as a YAML flow list (e.g. from [`text_rows`]).
    pub fn rows(self, rows: &str) -> Spec {
        self.dataset(&format!("  rows: {rows}\n"))
    }

    /// The lines under `dataset:`, indented by two spaces, in place of the rows.
    pub fn dataset(mut self, lines: &str) -> Spec {
        lines.clone_into(&mut self.dataset);
        self
    }

    /// The model's `name`.
    pub fn model_name(mut self, name: &str) -> Spec {
        name.clone_into(&mut self.model_name);
        self
    }

    /// More lines under `model:`, indented by two spaces (e.g. [`QUICK`]).
    pub fn model(mut self, lines: &str) -> Spec {
        self.model.push_str(lines);
        self
    }

    /// [`QUICK`] timeouts and retries.
    pub fn quick(self) -> Spec {
        self.model(QUICK)
    }

    /// The `prompt:` value, as YAML (quote it).
    pub fn prompt(mut self, yaml: &str) -> Spec {
        yaml.clone_into(&mut self.prompt);
        self
    }

    /// One evaluator as a YAML flow mapping: `{type: contains, expected: x}`.
    pub fn evaluator(self, flow: &str) -> Spec {
        self.evaluators(&format!("  - {flow}\n"))
    }

    /// More lines under `evaluators:`, indented by two spaces.
    pub fn evaluators(mut self, lines: &str) -> Spec {
        self.evaluators.push_str(lines);
        self
    }

    /// Text appended after the evaluators (e.g. a `concurrency:` block).
    pub fn tail(mut self, text: &str) -> Spec {
        self.tail.push_str(text);
        self
    }
}

impl std::fmt::Display for Spec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "name: {}\ndataset:\n{}", self.name, self.dataset)?;
        f.write_str(&model_block(&self.url, &self.model_name, &self.model))?;
        writeln!(f, "prompt: {}", self.prompt)?;
        if !self.evaluators.is_empty() {
            write!(f, "evaluators:\n{}", self.evaluators)?;
        }
        f.write_str(&self.tail)
    }
}

/// A port on loopback that nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------
// Test-side types for `--format json`.

/// A field that must be present but may be null.
pub fn nullable<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d)
}

/// `show NAME --format json` and `run --format json`.
#[derive(Debug, Clone, Deserialize)]
pub struct ExperimentView {
    pub experiment: String,
    pub created_at: String,
    pub status: String,
    pub evaluations: Vec<EvaluationView>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EvaluationView {
    pub name: String,
    pub spec: String,
    pub provider: String,
    pub model: String,
    /// The `--set KEY=VALUE` arguments, in order.
    pub overrides: Vec<String>,
    pub strategy: String,
    pub max_concurrency: u64,
    pub status: String,
    pub started_at: String,
    #[serde(deserialize_with = "nullable")]
    pub ended_at: Option<String>,
    pub runs: u64,
    pub samples: SampleCounts,
    pub evaluators: Vec<EvaluatorView>,
    pub timing: Timing,
    pub tokens: Tokens,
    /// Only with `--errors` or `--full`.
    #[serde(default)]
    pub errors: Option<Vec<ErrorView>>,
    /// Only with `--full`.
    #[serde(default)]
    pub records: Option<Vec<RecordView>>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub struct SampleCounts {
    pub total: u64,
    pub recorded: u64,
    pub finished: u64,
    pub errored: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct EvaluatorView {
    pub name: String,
    pub scored: u64,
    pub passed: u64,
    #[serde(deserialize_with = "nullable")]
    pub accuracy: Option<f64>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Timing {
    pub wall_seconds: f64,
    #[serde(deserialize_with = "nullable")]
    pub throughput_per_second: Option<f64>,
    #[serde(deserialize_with = "nullable")]
    pub latency_seconds: Option<Latency>,
    #[serde(deserialize_with = "nullable")]
    pub mean_in_flight: Option<f64>,
    #[serde(deserialize_with = "nullable")]
    pub mean_at_server: Option<f64>,
    #[serde(deserialize_with = "nullable")]
    pub unloaded_latency_seconds: Option<f64>,
    #[serde(deserialize_with = "nullable")]
    pub speedup_over_sequential: Option<f64>,
    pub blocked_seconds: f64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
    pub mean: f64,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
pub struct Tokens {
    pub prompt: u64,
    pub completion: u64,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct ErrorView {
    pub id: String,
    pub index: u64,
    pub kind: String,
    pub message: String,
    pub attempts: u32,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct RecordView {
    pub id: String,
    pub index: u64,
    pub variables: Value,
    pub prompt: Value,
    #[serde(deserialize_with = "nullable")]
    pub output: Option<String>,
    pub scores: BTreeMap<String, Option<f64>>,
    /// Why, per evaluator that said (the key is absent when none did).
    #[serde(default)]
    pub reasons: BTreeMap<String, String>,
    #[serde(deserialize_with = "nullable")]
    pub error_kind: Option<String>,
    #[serde(deserialize_with = "nullable")]
    pub error: Option<String>,
    pub attempts: u32,
    #[serde(deserialize_with = "nullable")]
    pub latency_seconds: Option<f64>,
    pub start_seconds: f64,
    pub end_seconds: f64,
    #[serde(deserialize_with = "nullable")]
    pub prompt_tokens: Option<u64>,
    #[serde(deserialize_with = "nullable")]
    pub completion_tokens: Option<u64>,
}

/// `list --format json`.
#[derive(Debug, Clone, Deserialize)]
pub struct ListView {
    pub experiments: Vec<ExperimentSummary>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ExperimentSummary {
    pub name: String,
    pub created_at: String,
    pub status: String,
    pub evaluations: u64,
    pub samples: SampleCounts,
    #[serde(deserialize_with = "nullable")]
    pub accuracy: Option<f64>,
    pub wall_seconds: f64,
}

/// One entry of `validate --format json`.
#[derive(Debug, Clone, Deserialize)]
pub struct Checked {
    pub spec: String,
    pub name: String,
    pub samples: u64,
    pub provider: String,
    pub model: String,
    pub evaluators: Vec<String>,
    pub strategy: String,
}

impl ExperimentView {
    /// The evaluation named `name`; panics if absent.
    #[track_caller]
    pub fn eval(&self, name: &str) -> &EvaluationView {
        self.evaluations
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("no evaluation `{name}` in {self:#?}"))
    }

    /// The only evaluation; panics unless there is exactly one.
    #[track_caller]
    pub fn only(&self) -> &EvaluationView {
        assert_eq!(self.evaluations.len(), 1, "{self:#?}");
        &self.evaluations[0]
    }
}

impl EvaluationView {
    /// Records (needs `--full`).
    #[track_caller]
    pub fn records(&self) -> &[RecordView] {
        self.records
            .as_deref()
            .expect("the report has no records; was it shown with --full?")
    }

    /// The record of sample `id`; panics if absent.
    #[track_caller]
    pub fn record(&self, id: &str) -> &RecordView {
        self.records()
            .iter()
            .find(|r| r.id == id)
            .unwrap_or_else(|| panic!("no record `{id}` in {:#?}", self.records()))
    }

    /// The summary of evaluator `name`; panics if absent.
    #[track_caller]
    pub fn evaluator(&self, name: &str) -> &EvaluatorView {
        self.evaluators
            .iter()
            .find(|e| e.name == name)
            .unwrap_or_else(|| panic!("no evaluator `{name}` in {:#?}", self.evaluators))
    }

    /// Score of evaluator `evaluator` for sample `id` (1, 0 or None).
    #[track_caller]
    pub fn score(&self, id: &str, evaluator: &str) -> Option<f64> {
        let record = self.record(id);
        *record
            .scores
            .get(evaluator)
            .unwrap_or_else(|| panic!("record `{id}` has no score `{evaluator}`: {record:#?}"))
    }
}

/// GET `path` from `host:port` over plain HTTP/1.1; returns the body.
pub fn http_get(addr: &str, path: &str) -> String {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the server");
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default()
}
