//! Secrets never leave the request. An API key planted in the environment and
//! a key written into the spec's `params` reach the server (so the test can
//! fail), and the server echoes them back in replies and in error bodies; then
//! nothing dotevals wrote (stdout and stderr of every command, every file of
//! the store folder, -wal and -shm included) may contain either value.
//! The lock files live in the system temp folder and hold only a pid.

use std::collections::BTreeMap;
use std::time::Duration;

use serde_json::{json, Value};

use crate::server::{Reply, TestServer, XorShift};
use crate::support::{contains_bytes, files_under};
use crate::util::{text_rows, wait_until, Out, Spec, TestDir};

/// The planted values: an API key in the environment and one in `params`.
struct Planted {
    env_key: String,
    param_key: String,
}

impl Planted {
    fn new() -> Planted {
        let mut rng = XorShift::from_time();
        Planted {
            env_key: format!("sk-planted-{}", rng.token(24)),
            param_key: format!("sk-param-{}", rng.token(24)),
        }
    }

    fn values(&self) -> [&str; 2] {
        [&self.env_key, &self.param_key]
    }
}

/// A spec of `n` samples against `url` naming the key variable and carrying a
/// key in `params`.
fn spec(url: &str, n: usize, param_key: &str) -> String {
    Spec::new("leaky", url)
        .rows(&text_rows((0..n).map(|i| format!("q{i}"))))
        .model_name("m")
        .model(&format!(
            "  api_key_env: OPENAI_API_KEY\n  params: {{temperature: 0, api_key: \"{param_key}\"}}\n  timeout: 5s\n  retry: {{max_attempts: 2, backoff: 10ms, max_backoff: 20ms}}\n"
        ))
        .evaluator("{type: contains, expected: q}")
        .to_string()
}

/// What the server got, as one line a reply or an error can quote.
fn echo(r: &crate::server::Received) -> String {
    format!(
        "you sent authorization={} api_key={}",
        r.authorization.as_deref().unwrap_or("none"),
        r.body
            .get("api_key")
            .and_then(Value::as_str)
            .unwrap_or("none")
    )
}

/// Everything dotevals printed and wrote: (where, bytes).
fn everything_written(dir: &TestDir, outputs: &[(&str, Out)]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    for (what, o) in outputs {
        out.push((format!("{what} stdout"), o.stdout.clone().into_bytes()));
        out.push((format!("{what} stderr"), o.stderr.clone().into_bytes()));
    }
    let store_dir = dir.store().parent().unwrap().to_path_buf();
    let files = files_under(&store_dir);
    assert!(
        files.iter().any(|f| f.ends_with("dotevals.db")),
        "no store in {files:?}"
    );
    for f in files {
        out.push((f.display().to_string(), std::fs::read(&f).unwrap()));
    }
    out
}

#[test]
fn planted_keys_never_reach_output_or_store() {
    const N: usize = 9;
    let planted = Planted::new();
    let dir = TestDir::new();
    // Echoes what it received: in the reply's content for a third of the
    // prompts, in a 400 error body for another third.
    let server = TestServer::builder()
        .respond(|r| {
            let i: usize = r.prompt.trim_start_matches('q').parse().unwrap_or(0);
            match i % 3 {
                0 => Reply::text(format!("q: {}", echo(r))),
                1 => Reply::status(400, json!({"error": {"message": echo(r)}}).to_string()),
                _ => Reply::text(format!("q{i}")),
            }
        })
        .start();
    dir.write("spec.yaml", &spec(&server.url(), N, &planted.param_key));

    let mut outputs = Vec::new();
    let run = dir
        .cmd(["run", "spec.yaml", "--experiment", "x"])
        .env("OPENAI_API_KEY", &planted.env_key)
        .output();
    run.assert_exit_code(1);
    outputs.push(("run", run));
    for args in [
        vec!["show", "x", "--full", "--format", "json"],
        vec!["show", "x", "--full"],
        vec!["show", "x", "--errors"],
        vec!["show", "x", "--errors", "--format", "json"],
        vec!["list"],
        vec!["list", "--format", "json"],
    ] {
        let out = dir
            .cmd(&args)
            .env("OPENAI_API_KEY", &planted.env_key)
            .output();
        out.assert_exit_code(0);
        outputs.push(("show/list", out));
    }
    // A second run resumes (the errored samples go again) with the same key.
    let rerun = dir
        .cmd(["run", "spec.yaml", "--experiment", "x", "--format", "json"])
        .env("OPENAI_API_KEY", &planted.env_key)
        .output();
    rerun.assert_exit_code(1);
    outputs.push(("rerun", rerun));

    // The server did get both keys, and echoed them (else this test proves nothing).
    let requests = server.requests();
    let sent_before_kill = requests.len();
    assert_eq!(
        requests.len(),
        N + N / 3,
        "every sample, then the errored again"
    );
    for r in &requests {
        assert_eq!(
            r.authorization.as_deref(),
            Some(format!("Bearer {}", planted.env_key).as_str())
        );
        assert_eq!(r.body["api_key"], planted.param_key.as_str());
    }
    let report: Value = serde_json::from_str(&outputs[1].1.stdout).unwrap();
    let records = report["evaluations"][0]["records"].as_array().unwrap();
    assert_eq!(records.len(), N);
    let echoed = records
        .iter()
        .filter(|r| {
            let text = format!("{} {}", r["output"], r["error"]);
            text.contains("authorization=") && text.contains("api_key=")
        })
        .count();
    assert_eq!(
        echoed,
        2 * N / 3,
        "replies and errors quote the request: {records:#?}"
    );

    // Last, a run into another experiment killed mid-way, so the write-ahead
    // log and its index are left behind as they were while it ran.
    server.set_latency(Duration::from_millis(300));
    let mut child = dir
        .cmd(["run", "spec.yaml", "--experiment", "killed"])
        .env("OPENAI_API_KEY", &planted.env_key)
        .spawn_logged(&dir, "killed");
    wait_until(Duration::from_secs(20), "records of the killed run", || {
        dir.try_show("killed").is_some_and(|r| {
            r.evaluations
                .first()
                .is_some_and(|e| e.samples.recorded >= 3)
        })
    });
    child.kill().expect("SIGKILL the run");
    child.wait().unwrap();
    assert!(server.count() > sent_before_kill);
    let wal = dir.store().with_extension("db-wal");
    assert!(
        std::fs::metadata(&wal).is_ok_and(|m| m.len() > 0),
        "a killed run leaves {} behind",
        wal.display()
    );
    outputs.push((
        "killed run",
        Out {
            code: None,
            stdout: dir.read("killed.out"),
            stderr: dir.read("killed.err"),
            elapsed: Duration::ZERO,
            command: "run --experiment killed".into(),
        },
    ));

    let written = everything_written(&dir, &outputs);
    // Control: the echoes themselves were stored, around the scrubbed keys.
    assert!(
        written
            .iter()
            .any(|(place, bytes)| place.contains("dotevals.db")
                && contains_bytes(bytes, b"authorization=Bearer ")),
        "the store holds no echoed request: the search below would prove nothing"
    );
    let mut hits: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for (place, bytes) in written {
        for secret in planted.values() {
            if contains_bytes(&bytes, secret.as_bytes()) {
                hits.entry(place.clone()).or_default().push(secret);
            }
        }
    }
    assert!(hits.is_empty(), "planted secrets found in: {hits:#?}");
}

#[test]
fn a_key_cut_in_half_by_the_error_excerpt_is_not_leaked() {
    // Error records keep an excerpt of the body; a key that straddles its end
    // must not survive as a fragment.
    let planted = Planted::new();
    let dir = TestDir::new();
    let server = TestServer::builder()
        .respond(|r| {
            let auth = r.authorization.clone().unwrap_or_default();
            // Padding chosen so the excerpt ends at each position of the key.
            let pad: usize = r.prompt.trim_start_matches('q').parse().unwrap_or(0);
            Reply::status(400, format!("{}{auth} was refused", "x".repeat(pad)))
        })
        .start();
    // Pads from 270 to 299: the key's last characters fall past 300 bytes in turn.
    dir.write(
        "spec.yaml",
        &Spec::new("cut", &server.url())
            .rows(&text_rows((270..300).map(|i| format!("q{i}"))))
            .model_name("m")
            .model("  api_key_env: OPENAI_API_KEY\n  retry: {max_attempts: 1}\n")
            .to_string(),
    );
    let run = dir
        .cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .env("OPENAI_API_KEY", &planted.env_key)
        .output();
    run.assert_exit_code(1);
    let show = dir
        .cmd(["show", "x", "--errors", "--format", "json"])
        .output();
    show.assert_exit_code(0);
    // The random part of the key: any 8 characters of it in a row is a leak.
    let random = planted.env_key.trim_start_matches("sk-planted-");
    let fragments: Vec<&str> = (0..=random.len() - 8).map(|i| &random[i..i + 8]).collect();
    let mut places = vec![("show".to_owned(), show.stdout.into_bytes())];
    for f in files_under(dir.store().parent().unwrap()) {
        places.push((f.display().to_string(), std::fs::read(&f).unwrap()));
    }
    let mut leaks = Vec::new();
    for (place, bytes) in &places {
        for fragment in &fragments {
            if contains_bytes(bytes, fragment.as_bytes()) {
                leaks.push(format!("{place}: {fragment}"));
            }
        }
    }
    assert!(
        leaks.is_empty(),
        "fragments of the key `{}` were written:\n{}",
        planted.env_key,
        leaks.join("\n")
    );
}

/// A judge with a key of its own, and servers that quote whatever key they
/// were sent: the model's key never reaches the judge (the reply is scrubbed
/// before it is graded), and neither key reaches the store, `show` or an
/// export (the judge's reply is scrubbed of the judge's own key too).
#[test]
fn neither_the_models_key_nor_the_judges_leaves_its_own_request() {
    let mut rng = XorShift::from_time();
    let model_key = format!("sk-model-{}", rng.token(24));
    let judge_key = format!("sk-judge-{}", rng.token(24));
    let quote = |r: &crate::server::Received| {
        r.authorization
            .as_deref()
            .unwrap_or("none")
            .trim_start_matches("Bearer ")
            .to_owned()
    };
    let model = TestServer::builder()
        .respond(move |r| Reply::text(format!("{} (you sent {})", r.prompt, quote(r))))
        .start();
    let judge = TestServer::builder()
        .respond(move |r| {
            Reply::text(
                json!({"score": 1, "reason": format!("graded with {}", quote(r))}).to_string(),
            )
        })
        .start();
    let dir = TestDir::new();
    let spec = Spec::new("keys", &model.url())
        .rows(&text_rows((0..4).map(|i| format!("q{i}"))))
        .model("  api_key_env: MODEL_KEY\n")
        .evaluators(&format!(
            "  - type: llm_judge\n    rubric: Is it an answer?\n    model:\n      provider: openai\n      base_url: {}\n      name: judge\n      api_key_env: JUDGE_KEY\n",
            judge.url()
        ))
        .to_string();
    dir.write("spec.yaml", &spec);
    let env = [("MODEL_KEY", &model_key), ("JUDGE_KEY", &judge_key)];
    let command = |args: &[&str]| {
        let mut cmd = dir.cmd(args);
        for (var, value) in env {
            cmd = cmd.env(var, value);
        }
        cmd.output()
    };
    let run = command(&["run", "spec.yaml", "-e", "x"]);
    run.assert_exit_code(0);
    let mut outputs = vec![("run", run)];
    for args in [
        vec!["show", "x", "--full", "--format", "json"],
        vec!["show", "x", "--full"],
        vec!["export", "x"],
        vec!["export", "x", "--format", "csv"],
    ] {
        let out = command(&args);
        out.assert_exit_code(0);
        outputs.push(("show/export", out));
    }

    // Control: each server got its own key and quoted it back.
    let (to_model, to_judge) = (model.requests(), judge.requests());
    assert_eq!((to_model.len(), to_judge.len()), (4, 4));
    assert!(to_model
        .iter()
        .all(|r| r.authorization == Some(format!("Bearer {model_key}"))));
    assert!(to_judge
        .iter()
        .all(|r| r.authorization == Some(format!("Bearer {judge_key}"))));
    let shown: Value = serde_json::from_str(&outputs[1].1.stdout).unwrap();
    let record = &shown["evaluations"][0]["records"][0];
    assert!(
        record["output"]
            .as_str()
            .unwrap()
            .contains("you sent [REDACTED]"),
        "{record:#}"
    );
    assert!(
        record["judges"]
            .to_string()
            .contains("graded with [REDACTED]"),
        "{record:#}"
    );

    for r in &to_judge {
        assert!(
            !r.prompt.contains(&model_key),
            "the judge was sent the model's key:\n{}",
            r.prompt
        );
    }
    let mut hits = Vec::new();
    for (place, bytes) in everything_written(&dir, &outputs) {
        for secret in [&model_key, &judge_key] {
            if contains_bytes(&bytes, secret.as_bytes()) {
                hits.push((place.clone(), secret.clone()));
            }
        }
    }
    assert!(hits.is_empty(), "keys found in: {hits:#?}");
}
