//! Concurrency strategies as the server sees them: the most requests it ever
//! had in flight must equal the strategy's limit, a sliding window must refill
//! as each request ends (not in batches), and more concurrency must cut the
//! wall time. Also the tutorial on the built-in mock, and `mock-server`.
//!
//! Runs that only sleep on the server are started side by side to keep the
//! suite fast; each has its own server, so their counts never mix.

use std::io::{BufRead, BufReader};
use std::process::Child;
use std::time::Duration;

use crate::server::{Reply, TestServer};
use crate::util::{http_get, openai_model, ExperimentView, Spec, TestDir};

const LATENCY: Duration = Duration::from_millis(200);

/// A spec of `n` rows against `url`, with `extra` appended (e.g. a `concurrency:` block).
fn spec(url: &str, n: usize, extra: &str) -> String {
    Spec::new("window", url)
        .samples(n)
        .quick()
        .tail(extra)
        .to_string()
}

/// Waits for a run started with `spawn_logged(dir, name)` and checks it exited 0.
#[track_caller]
fn finish(dir: &TestDir, name: &str, mut child: Child) {
    let status = child.wait().unwrap();
    assert_eq!(
        status.code(),
        Some(0),
        "run `{name}` failed:\n{}",
        dir.read(&format!("{name}.err"))
    );
}

/// One run per entry (CLI arguments, spec extra), side by side, each against
/// its own 200 ms server; returns (server peak in flight, report) per run.
fn runs(n: usize, setups: &[(&[&str], &str)]) -> Vec<(usize, ExperimentView)> {
    let started: Vec<_> = setups
        .iter()
        .enumerate()
        .map(|(i, (args, extra))| {
            let dir = TestDir::new();
            let server = TestServer::builder()
                .latency(LATENCY)
                .reply(|p| p.to_owned())
                .start();
            dir.write("spec.yaml", &spec(&server.url(), n, extra));
            let child = dir
                .cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
                .args(*args)
                .spawn_logged(&dir, &format!("run{i}"));
            (i, dir, server, child)
        })
        .collect();
    started
        .into_iter()
        .map(|(i, dir, server, child)| {
            finish(&dir, &format!("run{i}"), child);
            assert_eq!(server.count(), n);
            assert_eq!(server.in_flight(), 0);
            (server.peak_in_flight(), dir.show_full("x"))
        })
        .collect()
}

#[test]
fn peak_in_flight_equals_the_strategy_limit() {
    let results = runs(
        8,
        &[
            (&["--concurrency", "sequential"], ""),
            (&[], ""),
            (&["--concurrency", "8"], ""),
            (
                &[],
                "concurrency: {strategy: sliding_window, max_concurrency: 3}\n",
            ),
            (
                &["--concurrency", "5"],
                "concurrency: {strategy: sequential}\n",
            ),
            (&[], "concurrency: {strategy: sequential}\n"),
        ],
    );
    let peaks: Vec<usize> = results.iter().map(|(p, _)| *p).collect();
    assert_eq!(
        peaks,
        [1, 4, 8, 3, 5, 1],
        "sequential, default window, --concurrency 8, spec window 3, CLI over spec, spec sequential"
    );
    let reported: Vec<(&str, u64)> = results
        .iter()
        .map(|(_, r)| (r.only().strategy.as_str(), r.only().max_concurrency))
        .collect();
    assert_eq!(
        reported,
        [
            ("sequential", 1),
            ("sliding_window", 4),
            ("sliding_window", 8),
            ("sliding_window", 3),
            ("sliding_window", 5),
            ("sequential", 1),
        ]
    );

    // Wall time: 8 x 200 ms one at a time against about 200 ms all at once.
    let wall = |i: usize| results[i].1.only().timing.wall_seconds;
    let (sequential, window4, window8) = (wall(0), wall(1), wall(2));
    assert!(
        sequential >= 1.6,
        "8 sequential requests of 200 ms took {sequential} s"
    );
    assert!(
        sequential / window8 >= 3.0,
        "window 8 ({window8} s) should be at least 3x faster than sequential ({sequential} s)"
    );
    assert!(
        window4 < sequential && window8 < window4 + 0.15,
        "{window4} {window8}"
    );
    // The reported concurrency agrees with the server.
    let in_flight = |i: usize| results[i].1.only().timing.mean_in_flight.unwrap();
    assert!(in_flight(0) <= 1.05, "sequential: {}", in_flight(0));
    assert!(in_flight(2) >= 3.0, "window 8: {}", in_flight(2));
    // Sequential replies had the server alone: they measure the unloaded
    // latency (200 ms here) and a speed-up of 1 against themselves. A window
    // measures no unloaded latency and claims no speed-up.
    let t = |i: usize| results[i].1.only().timing.clone();
    let unloaded = t(0).unloaded_latency_seconds.expect("unloaded latency");
    assert!((0.19..0.4).contains(&unloaded), "{:?}", t(0));
    // At most 1 (a sequential run claims no speed-up); how far below 1 it
    // falls measures how busy the machine was, not the program.
    let speedup = t(0).speedup_over_sequential.expect("speed-up");
    assert!(speedup > 0.0 && speedup <= 1.05, "{:?}", t(0));
    assert_eq!(t(2).speedup_over_sequential, None, "{:?}", t(2));
    for (_, r) in &results {
        assert_eq!(r.only().samples.finished, 8);
    }
}

#[test]
fn sliding_window_refills_as_each_request_ends() {
    // Latencies 300, 50, 50, 300, 50, 50, ...: batches of 3 would take 4 x 300 ms
    // and start sample 3 only after sample 0 ends; a window starts it at ~50 ms.
    const N: usize = 12;
    let dir = TestDir::new();
    let server = TestServer::builder()
        .respond(|r| {
            let i: usize = r.prompt.trim_start_matches("sample ").parse().unwrap();
            let ms = match i % 3 {
                0 => 300,
                _ => 50,
            };
            Reply::text(r.prompt.clone()).after(Duration::from_millis(ms))
        })
        .start();
    dir.write("spec.yaml", &spec(&server.url(), N, ""));
    dir.cmd([
        "run",
        "spec.yaml",
        "--experiment",
        "x",
        "--quiet",
        "--concurrency",
        "3",
    ])
    .output()
    .assert_exit_code(0);
    assert_eq!(
        server.peak_in_flight(),
        3,
        "the window is full but never over"
    );
    let spans = server.spans();
    let span = |p: &str| spans.iter().find(|s| s.prompt == p).unwrap().clone();
    let (first, fourth) = (span("sample 0"), span("sample 3"));
    assert!(
        fourth.start < first.end,
        "sample 3 started at {:?}, after sample 0 ended at {:?}: batches, not a window",
        fourth.start,
        first.end
    );
    // Whenever a request started, at most 3 were in flight including it.
    for s in &spans {
        let overlapping = spans
            .iter()
            .filter(|o| o.start <= s.start && s.start < o.end)
            .count();
        assert!(overlapping <= 3, "{overlapping} in flight at {:?}", s.start);
    }
    // How long it took is a benchmark's question (the spans above say it
    // was a window, whatever the machine's load).
}

/// The tutorial's spec from the repository, with its latency cut to 200 ms.
fn tutorial(dir: &TestDir) {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/evals/sentiment.yaml");
    let text = std::fs::read_to_string(path).expect("evals/sentiment.yaml");
    assert!(
        text.contains("latency: 1s"),
        "the tutorial spec changed:\n{text}"
    );
    dir.write(
        "sentiment.yaml",
        &text.replace("latency: 1s", "latency: 200ms"),
    );
}

#[test]
fn tutorial_on_the_builtin_mock() {
    let dirs = [TestDir::new(), TestDir::new()];
    let children: Vec<Child> = dirs
        .iter()
        .zip(["sequential", "8"])
        .map(|(dir, concurrency)| {
            tutorial(dir);
            dir.cmd(["run", "sentiment.yaml", "--experiment", "x", "--quiet"])
                .args(["--concurrency", concurrency])
                .spawn_logged(dir, "run")
        })
        .collect();
    let mut walls = Vec::new();
    for (dir, child) in dirs.iter().zip(children) {
        finish(dir, "run", child);
        let report = dir.show_full("x");
        let e = report.only();
        assert_eq!(e.provider, "mock");
        assert_eq!((e.samples.total, e.samples.finished), (8, 8));
        let exact = e.evaluator("exact_match");
        assert_eq!(
            (exact.scored, exact.passed, exact.accuracy),
            (8, 8, Some(1.0))
        );
        walls.push(e.timing.wall_seconds);
    }
    let (sequential, window8) = (walls[0], walls[1]);
    assert!(
        sequential >= 1.6,
        "8 x 200 ms one at a time took {sequential} s"
    );
    assert!(
        sequential / window8 >= 3.0,
        "window 8 ({window8} s) should be at least 3x faster than sequential ({sequential} s)"
    );
}

/// Kills a child on drop, so a failing test leaves no server behind.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn mock_server_serves_the_spec_and_reports_its_window() {
    let dir = TestDir::new();
    tutorial(&dir);
    let mut child = KillOnDrop(
        dir.cmd(["mock-server", "--spec", "sentiment.yaml", "--port", "0"])
            .args(["--latency", "100ms"])
            .spawn_piped(),
    );
    let mut line = String::new();
    BufReader::new(child.0.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("mock model of sentiment.yaml listening on ")
        .unwrap_or_else(|| panic!("unexpected banner {line:?}"))
        .to_owned();
    let addr = url
        .strip_prefix("http://")
        .and_then(|u| u.strip_suffix("/v1"))
        .unwrap_or_else(|| panic!("not http://HOST:PORT/v1: {url}"))
        .to_owned();
    assert!(
        addr.starts_with("127.0.0.1:") && !addr.ends_with(":0"),
        "{addr}"
    );

    // The tutorial's rows, sent to the mock as an OpenAI-compatible server.
    let tutorial_text = dir.read("sentiment.yaml");
    let model_start = tutorial_text.find("model:").unwrap();
    let prompt_start = tutorial_text.find("prompt:").unwrap();
    let openai = format!(
        "{}{}{}",
        &tutorial_text[..model_start],
        openai_model(&url),
        &tutorial_text[prompt_start..]
    );
    dir.write("remote.yaml", &openai);
    dir.cmd([
        "run",
        "remote.yaml",
        "--experiment",
        "x",
        "--quiet",
        "--concurrency",
        "3",
    ])
    .output()
    .assert_exit_code(0);
    let report = dir.show_full("x");
    let e = report.only();
    assert_eq!(e.provider, "openai");
    assert_eq!(e.evaluator("exact_match").passed, 8);
    let latency = e.timing.latency_seconds.clone().unwrap();
    assert!(latency.p50 >= 0.1, "--latency 100ms: {latency:?}");

    let stats: serde_json::Value = serde_json::from_str(&http_get(&addr, "/stats")).unwrap();
    assert_eq!(stats["requests"], 8, "{stats}");
    assert_eq!(stats["in_flight"], 0, "{stats}");
    assert_eq!(stats["peak_in_flight"], 3, "{stats}");
}
