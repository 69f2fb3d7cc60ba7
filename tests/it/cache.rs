//! The response cache (`--cache`, `cache: true`, `cache: {ttl: ...}`): a
//! rerun under a new experiment name sends exactly what is not cached, each
//! test counting the requests a loopback server received. Errors and judge
//! replies without a verdict are never kept; keys cover every param and the
//! repeat index when sampling, never the API key; cached samples are counted
//! in `samples.cached` and left out of the timing figures; `cache stats`,
//! `cache clear` and `cache explain` report on and manage the entries.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use serde_json::Value;

use crate::server::{Received, Reply, TestServer};
use crate::support::{contains_bytes, files_under};
use crate::util::{Out, Spec, TestDir};

/// Short timeouts and no retries: a failed request fails its sample at once.
const NO_RETRY: &str = "  timeout: 5s\n  retry: {max_attempts: 1}\n";

/// The dataset lines for `n` rows with ids `s0`, `s1`, ... and texts
/// `sample 0`, `sample 1`, ... (the prompt of each).
fn rows(n: usize) -> String {
    let rows: Vec<String> = (0..n)
        .map(|i| format!("{{id: s{i}, text: \"sample {i}\"}}"))
        .collect();
    format!("  id: id\n  rows: [{}]\n", rows.join(", "))
}

/// A spec `memo` of `n` rows against `url`, without retries, graded by
/// `contains: sample`; `model` lines go under `model:`, `tail` at the end.
fn spec(url: &str, n: usize, model: &str, tail: &str) -> String {
    Spec::new("memo", url)
        .dataset(&rows(n))
        .model(NO_RETRY)
        .model(model)
        .evaluator("{type: contains, expected: sample}")
        .tail(tail)
        .to_string()
}

/// `dotevals run spec.yaml --experiment NAME -q ARGS...`.
fn run(dir: &TestDir, experiment: &str, args: &[&str]) -> Out {
    dir.cmd(["run", "spec.yaml", "--experiment", experiment, "-q"])
        .args(args)
        .output()
}

/// [`run`], which must exit 0.
fn run_ok(dir: &TestDir, experiment: &str, args: &[&str]) {
    run(dir, experiment, args).assert_exit_code(0);
}

/// `show NAME --format json`'s only evaluation, raw.
fn show(dir: &TestDir, experiment: &str) -> Value {
    let out = dir.cmd(["show", experiment, "--format", "json"]).output();
    out.assert_exit_code(0);
    let report: Value = out.json();
    let evals = report["evaluations"].as_array().expect("evaluations");
    assert_eq!(evals.len(), 1, "{report:#}");
    evals[0].clone()
}

/// `samples.cached` of `show NAME --format json`.
#[track_caller]
fn cached(dir: &TestDir, experiment: &str) -> u64 {
    let e = show(dir, experiment);
    // `samples.cached` is an integer next to `total`, `recorded`, ...
    e["samples"]["cached"]
        .as_u64()
        .unwrap_or_else(|| panic!("no samples.cached in {e:#}"))
}

/// A read-only connection to the store.
fn db(dir: &TestDir) -> Connection {
    Connection::open_with_flags(dir.store(), OpenFlags::SQLITE_OPEN_READ_ONLY).unwrap()
}

/// One integer a query answers.
fn int(dir: &TestDir, sql: &str) -> i64 {
    db(dir)
        .query_row(sql, [], |r| r.get(0))
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
}

/// A sample as an experiment recorded it.
#[derive(Debug, Clone, PartialEq)]
struct Sample {
    output: Option<String>,
    error_kind: Option<String>,
    cached: bool,
    cache_key: Option<String>,
}

/// Sample key (`s3`, `s3#repeat-2`) to what experiment `name` recorded.
fn samples(dir: &TestDir, name: &str) -> BTreeMap<String, Sample> {
    let conn = db(dir);
    let mut stmt = conn
        .prepare(
            "SELECT s.sample_key, s.output, s.error_kind, s.cached, s.cache_key
             FROM samples s JOIN evaluations e ON e.id = s.evaluation_id
             JOIN experiments x ON x.id = e.experiment_id WHERE x.name = ?1",
        )
        .unwrap();
    stmt.query_map([name], |r| {
        Ok((
            r.get(0)?,
            Sample {
                output: r.get(1)?,
                error_kind: r.get(2)?,
                cached: r.get::<_, i64>(3)? != 0,
                cache_key: r.get(4)?,
            },
        ))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

/// Sample key to output of experiment `name`.
fn outputs(dir: &TestDir, name: &str) -> BTreeMap<String, Option<String>> {
    samples(dir, name)
        .into_iter()
        .map(|(k, s)| (k, s.output))
        .collect()
}

/// Entries in the `cache` table.
fn entries(dir: &TestDir) -> i64 {
    int(dir, "SELECT count(*) FROM cache")
}

/// `dotevals ARGS... --format json`, which must exit 0, as raw JSON.
fn json(dir: &TestDir, args: &[&str]) -> Value {
    let out = dir.cmd(args).args(["--format", "json"]).output();
    out.assert_exit_code(0);
    out.json()
}

/// The requests received after the first `from`, their prompts sorted.
fn prompts_since(server: &TestServer, from: usize) -> Vec<String> {
    let mut p: Vec<String> = server.requests()[from..]
        .iter()
        .map(|r| r.prompt.clone())
        .collect();
    p.sort();
    p
}

/// A cached rerun of 1000 samples sends nothing, records the first run's
/// outputs and scores, says all 1000 were cached, and takes little time.
#[test]
fn a_rerun_under_a_new_name_sends_nothing_and_keeps_outputs_and_scores() {
    const N: usize = 1000;
    let server = TestServer::echo();
    let dir = TestDir::new();
    dir.write("spec.yaml", &spec(&server.url(), N, "", ""));
    run_ok(&dir, "A", &["--cache"]);
    assert_eq!(server.count(), N);
    assert_eq!(entries(&dir), N as i64, "one entry per successful reply");

    let out = run(&dir, "B", &["--cache"]);
    out.assert_exit_code(0);
    assert_eq!(server.count(), N, "the rerun sent requests");
    assert!(
        out.elapsed < Duration::from_secs(5),
        "a rerun of {N} cached samples took {:?}",
        out.elapsed
    );
    assert_eq!(cached(&dir, "B"), N as u64);
    assert_eq!(cached(&dir, "A"), 0, "the first run paid for every reply");
    let (a, b) = (show(&dir, "A"), show(&dir, "B"));
    assert_eq!(a["evaluators"], b["evaluators"], "the scores differ");
    assert_eq!(b["samples"]["recorded"], N);
    assert_eq!(b["status"], "completed");
    let (a, b) = (outputs(&dir, "A"), outputs(&dir, "B"));
    assert_eq!(a.len(), N);
    assert_eq!(a, b, "the rerun's outputs differ from the first run's");
    assert_eq!(b["s7"].as_deref(), Some("sample 7"));
}

/// Errors are never cached: after a run where 50 of 1000 requests got a
/// 500 (no retries), a cached rerun sends exactly those 50, under the same
/// keys the failed requests had.
#[test]
fn a_rerun_sends_exactly_the_requests_that_failed() {
    const N: usize = 1000;
    let failing = |i: usize| i % 20 == 7;
    let healthy = Arc::new(AtomicBool::new(false));
    let server = TestServer::builder()
        .respond({
            let healthy = Arc::clone(&healthy);
            move |r: &Received| {
                let i: usize = r.prompt["sample ".len()..].parse().unwrap();
                if failing(i) && !healthy.load(Ordering::SeqCst) {
                    Reply::status(500, "{\"error\": {\"message\": \"down\"}}")
                } else {
                    Reply::text(r.prompt.clone())
                }
            }
        })
        .start();
    let dir = TestDir::new();
    dir.write("spec.yaml", &spec(&server.url(), N, "", ""));
    run(&dir, "A", &["--cache"]).assert_exit_code(1);
    assert_eq!(server.count(), N, "no retries: one request per sample");

    let expected: BTreeSet<String> = (0..N)
        .filter(|&i| failing(i))
        .map(|i| format!("s{i}"))
        .collect();
    assert_eq!(expected.len(), 50);
    let a = samples(&dir, "A");
    let failed: BTreeSet<String> = a
        .iter()
        .filter(|(_, s)| s.error_kind.is_some())
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(failed, expected);
    // a failed sample records the key it was sent under.
    let failed_keys: BTreeSet<String> = failed
        .iter()
        .map(|k| a[k].cache_key.clone().expect("a failed sample's cache_key"))
        .collect();
    assert_eq!(failed_keys.len(), 50);
    assert_eq!(entries(&dir), (N - 50) as i64, "errors were cached");
    let kept = int(
        &dir,
        "SELECT count(*) FROM cache WHERE key IN
         (SELECT cache_key FROM samples WHERE error_kind IS NOT NULL)",
    );
    assert_eq!(kept, 0, "a failed request's key has an entry");

    healthy.store(true, Ordering::SeqCst);
    run_ok(&dir, "B", &["--cache"]);
    assert_eq!(
        server.count(),
        N + 50,
        "the rerun sent more than the failures"
    );
    let sent: Vec<String> = prompts_since(&server, N);
    let mut want: Vec<String> = (0..N)
        .filter(|&i| failing(i))
        .map(|i| format!("sample {i}"))
        .collect();
    want.sort();
    assert_eq!(sent, want);
    let b = samples(&dir, "B");
    let resent: BTreeSet<String> = b
        .iter()
        .filter(|(_, s)| !s.cached)
        .map(|(k, _)| k.clone())
        .collect();
    assert_eq!(resent, expected, "the samples sent again");
    let resent_keys: BTreeSet<String> = resent
        .iter()
        .filter_map(|k| b[k].cache_key.clone())
        .collect();
    assert_eq!(
        resent_keys, failed_keys,
        "sent under other keys than the failed ones"
    );
    assert!(b.values().all(|s| s.error_kind.is_none()));
    assert_eq!(cached(&dir, "B"), (N - 50) as u64);
    assert_eq!(entries(&dir), N as i64);
}

/// Sampled replies (`temperature: 1`, `repeats: 5`) are cached per repeat:
/// five entries per sample, and a rerun gives each repeat its own first
/// reply back without sending anything.
#[test]
fn each_repeat_of_a_sampled_request_has_its_own_entry() {
    const N: usize = 6;
    // Every reply is different: the prompt and the request's arrival index.
    let server = TestServer::builder()
        .respond(|r| Reply::text(format!("{} reply {}", r.prompt, r.index)))
        .start();
    let dir = TestDir::new();
    let model = "  params: {temperature: 1}\n";
    dir.write("spec.yaml", &spec(&server.url(), N, model, "repeats: 5\n"));
    run_ok(&dir, "A", &["--cache"]);
    assert_eq!(server.count(), 5 * N);
    assert_eq!(entries(&dir), 5 * N as i64, "one entry per repeat");
    let a = samples(&dir, "A");
    assert_eq!(a.len(), 5 * N);
    let keys: BTreeSet<_> = a.values().filter_map(|s| s.cache_key.clone()).collect();
    assert_eq!(keys.len(), 5 * N, "repeats share a key");
    let replies: BTreeSet<_> = a.values().map(|s| s.output.clone()).collect();
    assert_eq!(replies.len(), 5 * N, "the server's replies did not vary");

    run_ok(&dir, "B", &["--cache"]);
    assert_eq!(server.count(), 5 * N, "the rerun sent requests");
    assert_eq!(cached(&dir, "B"), 5 * N as u64);
    let b = outputs(&dir, "B");
    for (key, s) in &a {
        assert_eq!(
            b.get(key),
            Some(&s.output),
            "repeat {key} got another reply"
        );
    }
    assert_eq!(b.len(), a.len());
}

/// Every param is in the key: a run with `max_tokens` 17 after one with 16
/// sends everything again, and `cache explain` names `params.max_tokens`.
#[test]
fn a_changed_param_misses_and_explain_names_it() {
    const N: usize = 5;
    let server = TestServer::echo();
    let dir = TestDir::new();
    let model = "  params: {temperature: 0, max_tokens: 16}\n";
    dir.write("spec.yaml", &spec(&server.url(), N, model, ""));
    run_ok(&dir, "A", &["--cache"]);
    assert_eq!(server.count(), N);
    run_ok(
        &dir,
        "B",
        &["--cache", "--set", "model.params.max_tokens=17"],
    );
    assert_eq!(server.count(), 2 * N, "a changed max_tokens still hit");
    for r in &server.requests()[N..] {
        assert_eq!(r.body["max_tokens"], 17);
    }
    assert_eq!(cached(&dir, "B"), 0);
    // The same change again hits what B paid for.
    run_ok(
        &dir,
        "C",
        &["--cache", "--set", "model.params.max_tokens=17"],
    );
    assert_eq!(server.count(), 2 * N);

    let out = dir.cmd(["cache", "explain", "B", "s0"]).output();
    out.assert_exit_code(0)
        .assert_stdout_contains("params.max_tokens");
    let report = json(&dir, &["cache", "explain", "B", "s0"]);
    // a list of {evaluation, sample, status, differences: [{part, this, cached}]},
    // `this` and `cached` the values as JSON text (or JSON values).
    let list = report
        .as_array()
        .unwrap_or_else(|| panic!("not a list: {report:#}"));
    let entry = list
        .iter()
        .find(|e| e["sample"] == "s0")
        .unwrap_or_else(|| panic!("no entry for s0: {report:#}"));
    assert_eq!(entry["evaluation"], "memo");
    assert_eq!(entry["status"], "sent", "{entry:#}");
    let diffs = entry["differences"].as_array().expect("differences");
    let d = diffs
        .iter()
        .find(|d| d["part"] == "params.max_tokens")
        .unwrap_or_else(|| panic!("no params.max_tokens difference: {entry:#}"));
    let text = |v: &Value| v.as_str().map_or_else(|| v.to_string(), str::to_owned);
    assert_eq!(
        (text(&d["this"]), text(&d["cached"])),
        ("17".into(), "16".into())
    );
    assert!(
        diffs.iter().all(|d| d["part"] == "params.max_tokens"),
        "only max_tokens differs: {entry:#}"
    );
    // A hit has nothing to explain.
    let report = json(&dir, &["cache", "explain", "C", "s0"]);
    let entry = report
        .as_array()
        .and_then(|l| l.first())
        .cloned()
        .unwrap_or_default();
    assert_eq!(entry["status"], "hit", "{report:#}");
}

/// Keys are never computed from secrets: a new API key value still hits,
/// and neither key appears in the `cache` or `cache_keys` tables (or
/// anywhere in the store's files).
#[test]
fn a_changed_api_key_still_hits_and_no_key_is_stored() {
    const N: usize = 4;
    const ONE: &str = "sk-cache-test-first-0123456789";
    const TWO: &str = "sk-cache-test-other-9876543210";
    let server = TestServer::echo();
    let dir = TestDir::new();
    let model = "  api_key_env: CACHE_TEST_KEY\n";
    dir.write("spec.yaml", &spec(&server.url(), N, model, ""));
    let run_with = |exp: &str, key: &str| {
        dir.cmd(["run", "spec.yaml", "--experiment", exp, "-q", "--cache"])
            .env("CACHE_TEST_KEY", key)
            .output()
            .assert_exit_code(0);
    };
    run_with("A", ONE);
    assert_eq!(server.count(), N);
    let auth = server.requests()[0].authorization.clone();
    assert_eq!(
        auth.as_deref(),
        Some(format!("Bearer {ONE}").as_str()),
        "the key was not sent"
    );
    run_with("B", TWO);
    assert_eq!(server.count(), N, "a new key value missed the cache");
    assert_eq!(cached(&dir, "B"), N as u64);

    let conn = db(&dir);
    let mut cells = Vec::new();
    for table in ["cache", "cache_keys"] {
        let mut stmt = conn.prepare(&format!("SELECT * FROM {table}")).unwrap();
        let columns = stmt.column_count();
        let mut rows = stmt.query([]).unwrap();
        while let Some(row) = rows.next().unwrap() {
            for c in 0..columns {
                let v: rusqlite::types::Value = row.get(c).unwrap();
                cells.push(format!("{v:?}"));
            }
        }
    }
    assert!(!cells.is_empty(), "the cache tables are empty");
    let all = cells.join("\n");
    for key in [ONE, TWO] {
        assert!(!all.contains(key), "{key} is in the cache tables:\n{all}");
    }
    drop(conn);
    for file in files_under(dir.store().parent().unwrap()) {
        let bytes = std::fs::read(&file).unwrap();
        for key in [ONE, TWO] {
            assert!(
                !contains_bytes(&bytes, key.as_bytes()),
                "{key} in {}",
                file.display()
            );
        }
    }
}

/// The cache is off by default; `cache: true` in the spec turns it on and
/// `--no-cache` turns it off again.
#[test]
fn the_cache_is_off_by_default_and_no_cache_overrides_the_spec() {
    const N: usize = 5;
    let server = TestServer::echo();
    let dir = TestDir::new();
    dir.write("spec.yaml", &spec(&server.url(), N, "", ""));
    run_ok(&dir, "A", &["--cache"]);
    assert_eq!(server.count(), N);
    run_ok(&dir, "B", &[]);
    assert_eq!(
        server.count(),
        2 * N,
        "without --cache a rerun read the cache"
    );
    assert_eq!(cached(&dir, "B"), 0);
    let b = samples(&dir, "B");
    assert!(b.values().all(|s| s.cache_key.is_none()), "{b:?}");

    dir.write("spec.yaml", &spec(&server.url(), N, "", "cache: true\n"));
    run_ok(&dir, "C", &[]);
    assert_eq!(
        server.count(),
        2 * N,
        "`cache: true` did not read the cache"
    );
    assert_eq!(cached(&dir, "C"), N as u64);
    run_ok(&dir, "D", &["--no-cache"]);
    assert_eq!(server.count(), 3 * N, "--no-cache read the cache");
    assert_eq!(cached(&dir, "D"), 0);
}

/// `cache: {ttl: 1s}` ages entries out: a rerun 2.5 s later sends
/// everything again (a longer ttl right after the first run hits).
#[test]
fn entries_older_than_the_ttl_are_sent_again() {
    const N: usize = 5;
    let server = TestServer::echo();
    let dir = TestDir::new();
    let with_ttl = |ttl: &str| spec(&server.url(), N, "", &format!("cache: {{ttl: {ttl}}}\n"));
    dir.write("spec.yaml", &with_ttl("1s"));
    run_ok(&dir, "A", &[]);
    assert_eq!(server.count(), N);
    dir.write("spec.yaml", &with_ttl("1h"));
    run_ok(&dir, "B", &[]);
    assert_eq!(server.count(), N, "`cache: {{ttl: 1h}}` did not hit");

    std::thread::sleep(Duration::from_millis(2500));
    dir.write("spec.yaml", &with_ttl("1s"));
    run_ok(&dir, "C", &[]);
    assert_eq!(
        server.count(),
        2 * N,
        "entries older than the ttl were used"
    );
    assert_eq!(cached(&dir, "C"), 0);
}

/// The sample a judge request grades: the `I` of `sample I` in its fenced output.
fn graded(r: &Received) -> usize {
    let after = r
        .prompt
        .split("Response to grade:\n```\nsample ")
        .nth(1)
        .expect("the default prompt shows the output in a fence");
    let digits: String = after.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().expect("a sample index")
}

/// The spec with an `llm_judge` of `rubric` at `url`.
fn judged_spec(model: &str, judge: &str, n: usize, rubric: &str) -> String {
    Spec::new("memo", model)
        .dataset(&rows(n))
        .model(NO_RETRY)
        .evaluators(&format!(
            "  - type: llm_judge\n    name: judged\n    rubric: \"{rubric}\"\n    model: {{provider: openai, base_url: {judge}, name: judge-model, retry: {{max_attempts: 1}}}}\n"
        ))
        .to_string()
}

/// Judge calls go through the cache: a rescore with the same rubric sends
/// only the call whose reply held no verdict (never cached), and one with a
/// changed rubric sends every call again.
#[test]
fn judge_calls_are_cached_except_replies_without_a_verdict() {
    const N: usize = 10;
    let model = TestServer::echo();
    let judge = TestServer::builder()
        .respond(|r| match graded(r) {
            3 => Reply::text("I cannot grade this."),
            _ => Reply::text(r#"{"score": 1, "reason": "fine"}"#),
        })
        .start();
    let dir = TestDir::new();
    let same = judged_spec(
        &model.url(),
        &judge.url(),
        N,
        "The reply repeats {{ text }}.",
    );
    dir.write("spec.yaml", &same);
    run(&dir, "A", &["--cache"]).assert_exit_code(1);
    assert_eq!((model.count(), judge.count()), (N, N));
    // judge verdicts are entries of the same `cache` table.
    assert_eq!(
        entries(&dir),
        (2 * N - 1) as i64,
        "N replies and N - 1 verdicts"
    );

    let rescore = |spec: &str, into: &str| {
        dir.cmd([
            "rescore", "A", "--spec", spec, "--into", into, "--cache", "-q",
        ])
        .output()
        .assert_exit_code(1);
    };
    rescore("spec.yaml", "B");
    assert_eq!(model.count(), N, "rescore called the model");
    assert_eq!(
        judge.count(),
        N + 1,
        "more than the unparsed verdict was sent"
    );
    assert_eq!(graded(&judge.requests()[N]), 3);
    let e = show(&dir, "B");
    assert_eq!(e["evaluators"][0]["passed"], N - 1);

    let changed = judged_spec(&model.url(), &judge.url(), N, "The reply says {{ text }}.");
    dir.write("changed.yaml", &changed);
    rescore("changed.yaml", "C");
    assert_eq!(judge.count(), 2 * N + 1, "a changed rubric hit the cache");
    assert_eq!(model.count(), N);
    let mut sent: Vec<usize> = judge.requests()[N + 1..].iter().map(graded).collect();
    sent.sort();
    assert_eq!(sent, (0..N).collect::<Vec<_>>());
    assert!(judge.requests()[N + 1..]
        .iter()
        .all(|r| r.prompt.contains("The reply says sample")));
}

/// A run where half the samples are cached: its latency figures cover only
/// the ones sent (all slow), `samples.cached` counts the others, and the
/// table says how many were cached.
#[test]
fn cached_samples_are_left_out_of_the_timing_figures() {
    const N: usize = 10;
    let server = TestServer::echo();
    let dir = TestDir::new();
    dir.write("spec.yaml", &spec(&server.url(), N, "", ""));
    // The first half, answered at once.
    run_ok(&dir, "A", &["--cache", "--samples", "5"]);
    assert_eq!(server.count(), N / 2);
    server.set_latency(Duration::from_millis(200));
    run_ok(&dir, "B", &["--cache"]);
    assert_eq!(server.count(), N, "only the second half was to be sent");
    let e = show(&dir, "B");
    assert_eq!(e["samples"]["cached"], N / 2);
    assert_eq!(e["samples"]["recorded"], N);
    let latency = &e["timing"]["latency_seconds"];
    // Half near 0 among them would put the median near 0 (or 0.1).
    let p50 = latency["p50"]
        .as_f64()
        .unwrap_or_else(|| panic!("{latency:#}"));
    assert!(
        p50 >= 0.18,
        "cached samples counted in the latency: {latency:#}"
    );
    let mean = latency["mean"].as_f64().unwrap();
    assert!(
        mean >= 0.18,
        "cached samples counted in the latency: {latency:#}"
    );
    // `timing.runs[].samples` ("samples that sent a request") leaves out hits.
    assert_eq!(
        e["timing"]["runs"][0]["samples"],
        N / 2,
        "{:#}",
        e["timing"]
    );
    assert_eq!(e["timing"]["streamed_replies"], 0);
    // throughput is the samples sent (not recorded) per wall second.
    let wall = e["timing"]["wall_seconds"].as_f64().unwrap();
    let per_second = e["timing"]["throughput_per_second"].as_f64().unwrap();
    let counted = per_second * wall;
    assert!(
        (counted - (N / 2) as f64).abs() < 0.5,
        "throughput counts {counted:.2} samples, not the {} sent: {:#}",
        N / 2,
        e["timing"]
    );

    let out = dir.cmd(["show", "B"]).output();
    // the table says `5 cached` (the evaluation's name holds no `cached`).
    out.assert_exit_code(0).assert_stdout_contains("5 cached");
}

/// `cache stats` counts entries, bytes and hits, per model; `cache clear
/// --model` deletes a model's entries (`{"deleted": n}`), after which a
/// rerun sends everything again.
#[test]
fn stats_count_entries_and_hits_and_clear_deletes_a_models_entries() {
    const N: usize = 8;
    let server = TestServer::echo();
    let dir = TestDir::new();
    dir.write("spec.yaml", &spec(&server.url(), N, "", ""));
    run_ok(&dir, "A", &["--cache"]);
    let stats = json(&dir, &["cache", "stats"]);
    assert_eq!(stats["entries"], N, "{stats:#}");
    assert_eq!(stats["hits"], 0, "{stats:#}");
    assert!(stats["bytes"].as_u64().is_some_and(|b| b > 0), "{stats:#}");
    let models = stats["models"].as_array().expect("models");
    assert_eq!(models.len(), 1, "{stats:#}");
    assert_eq!(models[0]["model"], "test-model");
    assert_eq!(models[0]["entries"], N);
    for when in ["oldest", "newest"] {
        assert!(models[0][when].as_str().is_some(), "{when}: {stats:#}");
    }

    run_ok(&dir, "B", &["--cache"]);
    assert_eq!(server.count(), N);
    let stats = json(&dir, &["cache", "stats"]);
    assert_eq!(
        (stats["entries"].as_u64(), stats["hits"].as_u64()),
        (Some(N as u64), Some(N as u64)),
        "{stats:#}"
    );
    assert_eq!(stats["models"][0]["hits"], N);
    assert_eq!(int(&dir, "SELECT sum(hits) FROM cache"), N as i64);

    // Another model's, or only older entries: nothing to delete.
    let none = json(&dir, &["cache", "clear", "--model", "other-model"]);
    assert_eq!(none, serde_json::json!({"deleted": 0}));
    let none = json(&dir, &["cache", "clear", "--older-than", "7d"]);
    assert_eq!(none, serde_json::json!({"deleted": 0}));
    assert_eq!(entries(&dir), N as i64);
    let cleared = json(&dir, &["cache", "clear", "--model", "test-model"]);
    assert_eq!(cleared, serde_json::json!({"deleted": N}));
    assert_eq!(entries(&dir), 0);
    assert_eq!(json(&dir, &["cache", "stats"])["entries"], 0);

    run_ok(&dir, "C", &["--cache"]);
    assert_eq!(server.count(), 2 * N, "cleared entries were used");
    assert_eq!(cached(&dir, "C"), 0);
}
