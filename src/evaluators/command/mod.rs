//! `command`: the user's own scorer, a program that speaks JSON lines.
//!
//! ```yaml
//! - type: command
//!   command: [python3, scorers/length_ok.py]   # program and its arguments
//!   workers: 1                                 # programs run side by side (default 1)
//!   timeout: 30s                               # how long one reply may take (default 30s)
//!   config: {max_words: 5}                     # any YAML, handed to every request
//!   env: [MY_SCORER_KEY]                       # key variables it may see (default none)
//! ```
//!
//! A spec with a command scorer is code: it runs with the user's rights. It
//! does not run with the user's keys: the variables the spec names as keys
//! (`api_key_env` of the model and of every judge) are removed from the
//! program's environment unless `env` lists them.
//!
//! The program is started once per run (lazily, by the first sample to be
//! scored), in the spec file's folder, and reads one JSON object per line on
//! stdin: `{"id": 7, "output": "...", "variables": {...}, "config": {...}}`. It
//! answers one line per request on stdout, `{"id": 7, "score": 0.8, "reason": "..."}`
//! or `{"id": 7, "error": "..."}`, in any order: replies are matched by `id`.
//! The `reason` is stored with the sample, and a sample passes at `threshold`
//! 0.5 unless the entry sets another (the program grades).
//! A score outside [0, 1], a reply without a number `score`, or an `error`
//! leaves that sample unscored (error kind `evaluator`) and the program keeps
//! running. A crash, a line that is not a JSON reply, or no reply within
//! `timeout` also leaves the sample unscored, with the last lines the program
//! wrote to stderr in the message, and the program is restarted; the other
//! requests it had not answered are sent again to the new one. The request
//! blamed is the oldest without a reply (the one a program that answers in
//! order is working on), and `timeout` counts from when it became the oldest;
//! its error quotes the stderr written meanwhile. A reply to an id not
//! pending fails no sample (it is named with the next error). The program
//! leads a process group of its own, killed whole on a restart, at the end of
//! the run and when the run is cut short.
//!
//! The program (`command[0]`) is found at load: a bare name (`python3`) in
//! `PATH`, a path with a `/` relative to the spec's folder. A program that is
//! not there or not executable is a spec error (exit 2, before any request).
//!
//! # Why scoring is async here and nowhere else
//!
//! [`Score::score`] is synchronous and stays so: the string rules are pure CPU
//! and run inline in the sample's task, with no allocation or hop added. An
//! evaluator that waits on I/O answers [`Score::external`] instead, and the runner
//! awaits its [`External::score`]. Here that is a channel send to a worker task
//! that owns one child process (tokio's async pipes) and a oneshot back: no
//! thread is parked per sample in flight (as `spawn_blocking` would do, with
//! `workers x concurrency` blocked threads), and the worker batches writes. The
//! request line is serialised by the sample's task, so workers only move bytes.
//! The runner's per-sample scoring became an `async fn`, but for the rules it
//! never awaits: one virtual call (`external()` answering `None`) is all they
//! pay. Measured (scripts/bench `command`): a trivial Python scorer adds about
//! 10 us of dotevals CPU per sample.
//!
//! The workers live as long as the built evaluator: when it is dropped, each
//! closes its program's stdin (the helper's loop then ends) and reaps it; if
//! the runtime stops first, its process group is killed. `id` is a number unique within
//! the evaluator's life.

mod worker;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use minijinja::Value;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use super::{ArgError, Arguments, Build, External, Score, ScoreError, Scored, GRADED_THRESHOLD};
use crate::spec::raw::DurationText;
use crate::template::Template;

/// How long a reply may take when the spec does not say.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    command: Option<Vec<String>>,
    workers: Option<u64>,
    timeout: Option<DurationText>,
    config: Option<serde_json::Value>,
    /// Key variables the program may inherit after all.
    env: Option<Vec<String>>,
}

/// The most programs one evaluator may start.
const MAX_WORKERS: u64 = 64;

impl Arguments for Args {
    /// The user's program grades: half marks pass unless `threshold` says otherwise.
    fn default_threshold(&self) -> f64 {
        GRADED_THRESHOLD
    }

    fn build(&self) -> Result<Arc<dyn Score>, ArgError> {
        self.build_in(&Build::default())
    }

    fn build_in(&self, with: &Build<'_>) -> Result<Arc<dyn Score>, ArgError> {
        let spec_dir = with.spec_dir;
        let command = self.command.as_deref().unwrap_or_default();
        let Some((program, args)) = command.split_first() else {
            let what = if self.command.is_some() {
                "`command` is empty"
            } else {
                "command needs `command`"
            };
            return Err(ArgError::new("command", what)
                .hint("write the program and its arguments as a list: [python3, score.py]"));
        };
        if program.trim().is_empty() {
            return Err(
                ArgError::new("command", "the program (`command[0]`) is empty")
                    .hint("write the program and its arguments as a list: [python3, score.py]"),
            );
        }
        let workers = self.workers.unwrap_or(1);
        if !(1..=MAX_WORKERS).contains(&workers) {
            return Err(ArgError::new(
                "workers",
                format!("`workers` must be between 1 and {MAX_WORKERS}, not {workers}"),
            )
            .hint("workers is how many copies of the program score side by side"));
        }
        let timeout = self.timeout.map_or(DEFAULT_TIMEOUT, |d| d.0);
        if timeout.is_zero() {
            return Err(ArgError::new("timeout", "`timeout` must be more than 0")
                .hint("the longest one reply may take, e.g. 30s"));
        }
        let dir = if spec_dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            spec_dir
        };
        let program = find_program(program, spec_dir).map_err(|message| {
            ArgError::new("command", message).hint(
                "a bare name is looked up in PATH; a path (with a `/`) is relative to the spec's folder",
            )
        })?;
        let config = serde_json::to_string(self.config.as_ref().unwrap_or(&serde_json::json!({})))
            .map_err(|e| ArgError::new("config", format!("`config` is not JSON: {e}")))?;
        let keep = self.env.as_deref().unwrap_or_default();
        if let Some(blank) = keep.iter().find(|v| v.trim().is_empty() || v.contains('=')) {
            return Err(ArgError::new("env", format!("`{blank}` is not a variable name"))
                .hint("list the names of key variables the program may see, e.g. env: [MY_SCORER_KEY]"));
        }
        let hidden = with
            .key_vars
            .iter()
            .filter(|v| !keep.contains(v))
            .cloned()
            .collect();
        Ok(Arc::new(CommandScorer {
            launch: Arc::new(worker::Launch {
                program,
                args: args.to_vec(),
                dir: dir.to_path_buf(),
                timeout,
                hidden,
            }),
            workers: workers as usize,
            config,
            next_id: Mutex::new(0),
            pool: OnceLock::new(),
        }))
    }
}

/// `program` as it will be started: found in `PATH` when it is a bare name,
/// else relative to `dir`; it must be an executable file.
fn find_program(program: &str, dir: &Path) -> Result<PathBuf, String> {
    if program.contains('/') {
        let path = dir.join(program); // `dir` is "" for a spec in the working directory
        return if is_executable(&path) {
            Ok(path)
        } else if path.exists() {
            Err(format!(
                "scorer program `{}` is not an executable file",
                path.display()
            ))
        } else {
            Err(format!("scorer program `{}` not found", path.display()))
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|p| is_executable(p))
        .ok_or_else(|| format!("scorer program `{program}` not found in PATH"))
}

#[cfg(unix)]
fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(not(unix))]
fn is_executable(path: &Path) -> bool {
    path.is_file()
}

/// The scorer: the launch recipe and, once a sample needed it, the workers.
struct CommandScorer {
    launch: Arc<worker::Launch>,
    workers: usize,
    /// `config` as JSON text, spliced into every request.
    config: String,
    /// The next request id. Held while a request is handed to its worker, so
    /// ids reach every worker in increasing order and the lowest pending id is
    /// the oldest request (the one a crash or a timeout is blamed on).
    next_id: Mutex<u64>,
    pool: OnceLock<Vec<Handle>>,
}

/// One worker task, as the samples see it.
struct Handle {
    requests: mpsc::UnboundedSender<worker::Request>,
    /// Requests sent and not yet answered, to pick the least busy worker.
    in_flight: Arc<AtomicUsize>,
}

impl CommandScorer {
    /// The workers, started by the first sample (inside the run's runtime).
    fn pool(&self) -> &[Handle] {
        self.pool.get_or_init(|| {
            (0..self.workers)
                .map(|_| Handle {
                    requests: worker::spawn(Arc::clone(&self.launch)),
                    in_flight: Arc::new(AtomicUsize::new(0)),
                })
                .collect()
        })
    }

    /// The request line for one sample, newline included.
    fn request(&self, id: u64, output: &str, variables: &str) -> Result<Vec<u8>, ScoreError> {
        let json =
            |e: serde_json::Error| ScoreError::Command(format!("cannot encode request: {e}"));
        let mut line = Vec::with_capacity(output.len() + self.config.len() + 96);
        line.extend_from_slice(b"{\"id\":");
        line.extend_from_slice(id.to_string().as_bytes());
        line.extend_from_slice(b",\"output\":");
        serde_json::to_writer(&mut line, output).map_err(json)?;
        line.extend_from_slice(b",\"variables\":");
        line.extend_from_slice(if variables.is_empty() {
            b"{}"
        } else {
            variables.as_bytes()
        });
        line.extend_from_slice(b",\"config\":");
        line.extend_from_slice(self.config.as_bytes());
        line.extend_from_slice(b"}\n");
        Ok(line)
    }
}

impl Score for CommandScorer {
    fn score(&self, _output: &str, _ctx: &Value) -> Result<Scored, ScoreError> {
        Err(ScoreError::Command(
            "a command scorer is only run through `external`".into(),
        ))
    }

    fn templates(&self) -> Vec<(&'static str, &Template)> {
        Vec::new()
    }

    fn external(&self) -> Option<&dyn External> {
        Some(self)
    }

    fn program(&self) -> Option<String> {
        let l = &self.launch;
        let words = std::iter::once(l.program.to_string_lossy().into_owned())
            .chain(l.args.iter().cloned())
            .map(|w| crate::shell::quote(&w))
            .collect::<Vec<_>>();
        Some(format!("{} in {}", words.join(" "), l.dir.display()))
    }
}

impl External for CommandScorer {
    fn score<'a>(
        &'a self,
        output: &'a str,
        variables: &'a str,
        _ctx: &'a Value,
    ) -> Pin<Box<dyn Future<Output = Result<Scored, ScoreError>> + Send + 'a>> {
        Box::pin(async move {
            let pool = self.pool();
            let handle = pool
                .iter()
                .min_by_key(|h| h.in_flight.load(Ordering::Relaxed))
                .ok_or_else(|| ScoreError::Command("no scorer worker".into()))?;
            let (reply, answer) = oneshot::channel();
            handle.in_flight.fetch_add(1, Ordering::Relaxed);
            let _done = InFlight(&handle.in_flight);
            {
                let mut next = self.next_id.lock().unwrap_or_else(|p| p.into_inner());
                let id = *next;
                *next += 1;
                let line = self.request(id, output, variables)?;
                handle
                    .requests
                    .send(worker::Request { id, line, reply })
                    .map_err(|_| ScoreError::Command("the scorer's worker has stopped".into()))?;
            }
            match answer.await {
                Ok(result) => result.map_err(ScoreError::Command),
                Err(_) => Err(ScoreError::Command(
                    "the scorer's worker has stopped".into(),
                )),
            }
        })
    }
}

/// Counts a request out of its worker's load when it is answered (or dropped).
struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;

    #[test]
    fn bad_fields_are_named() {
        for (yaml, key, message) in [
            ("type: command", "command", "command needs `command`"),
            (
                "{type: command, command: []}",
                "command",
                "`command` is empty",
            ),
            (
                "{type: command, command: [sh], workers: 0}",
                "workers",
                "`workers` must be between 1 and 64, not 0",
            ),
            (
                "{type: command, command: [sh], timeout: 0s}",
                "timeout",
                "`timeout` must be more than 0",
            ),
            (
                "{type: command, command: [no-such-program-dotevals]}",
                "command",
                "scorer program `no-such-program-dotevals` not found in PATH",
            ),
        ] {
            let e = build_err(yaml);
            assert_eq!(
                (e.key.as_str(), e.message.as_str()),
                (key, message),
                "{yaml}"
            );
        }
    }

    #[test]
    fn a_path_is_relative_to_the_spec_folder() {
        let e = build_err("{type: command, command: [./score.sh]}");
        assert_eq!(e.message, "scorer program `./score.sh` not found");
        assert!(from_yaml("{type: command, command: [sh, -c, 'true']}")
            .scorer
            .external()
            .is_some());
    }
}
