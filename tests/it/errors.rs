//! Failures are data: a sample whose request fails is recorded with its error
//! kind and attempt count, the run goes on, and the exit code is 1. Covered:
//! retries of 5xx and 429 (with Retry-After), no retry of other 4xx, per-attempt
//! timeouts, malformed bodies, refused connections, template errors, `show
//! --errors`, and unknown experiment names for show/delete/rename.

use std::time::Duration;

use crate::server::{Reply, TestServer};
use crate::util::{closed_port, EvaluationView, ExperimentView, Out, Spec, TestDir};

/// A spec with one row per prompt, model settings `model_extra` (YAML lines
/// under `model:`), run into experiment `x`.
fn run(
    dir: &TestDir,
    url: &str,
    prompts: &[&str],
    model_extra: &str,
    args: &[&str],
) -> (Out, EvaluationView) {
    let rows: Vec<String> = prompts
        .iter()
        .map(|p| format!("{{text: {}}}", serde_json::to_string(p).unwrap()))
        .collect();
    dir.write(
        "spec.yaml",
        &Spec::new("failing", url)
            .rows(&format!("[{}]", rows.join(", ")))
            .model(model_extra)
            .evaluator("{type: contains, expected: ok}")
            .to_string(),
    );
    let out = dir
        .cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .args(args)
        .output();
    let report = dir.show_full("x");
    (out, report.only().clone())
}

const FAST_RETRY: &str = "  retry: {max_attempts: 3, backoff: 10ms, max_backoff: 50ms}\n";

#[test]
fn server_error_then_success_is_retried() {
    let dir = TestDir::new();
    let server = TestServer::builder()
        .respond(|r| {
            if r.attempt == 1 {
                Reply::status(500, "{\"error\": {\"message\": \"try again\"}}")
            } else {
                Reply::text("ok")
            }
        })
        .start();
    let (out, eval) = run(&dir, &server.url(), &["a", "b", "c"], FAST_RETRY, &[]);
    out.assert_exit_code(0);
    assert_eq!(server.count(), 6, "each sample: one 500, one success");
    assert_eq!(eval.samples.finished, 3);
    for r in eval.records() {
        assert_eq!(r.attempts, 2, "{r:?}");
        assert_eq!(r.error_kind, None);
        assert_eq!(r.output.as_deref(), Some("ok"));
    }
}

#[test]
fn throttling_honours_retry_after() {
    let dir = TestDir::new();
    let server = TestServer::builder()
        .throttle_first(1, "1")
        .reply(|_| "ok".into())
        .start();
    // backoff alone would wait at most 10 ms; only Retry-After explains a 1 s pause.
    let (out, eval) = run(
        &dir,
        &server.url(),
        &["a"],
        "  retry: {max_attempts: 3, backoff: 10ms, max_backoff: 5s}\n",
        &[],
    );
    out.assert_exit_code(0);
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let gap = requests[1].at - requests[0].at;
    assert!(
        gap >= Duration::from_millis(900),
        "the retry came {gap:?} after a 429 with Retry-After: 1"
    );
    assert_eq!(eval.record("0").attempts, 2);
    assert_eq!(eval.samples.finished, 1);
}

#[test]
fn retry_after_is_honoured_beyond_max_backoff() {
    let dir = TestDir::new();
    let server = TestServer::builder()
        .throttle_first(1, "2")
        .reply(|_| "ok".into())
        .start();
    // max_backoff bounds the backoff of our own choosing, not a server's hint.
    let (out, eval) = run(
        &dir,
        &server.url(),
        &["a"],
        "  retry: {max_attempts: 3, backoff: 10ms, max_backoff: 200ms}\n",
        &[],
    );
    out.assert_exit_code(0);
    let requests = server.requests();
    assert_eq!(requests.len(), 2);
    let gap = requests[1].at - requests[0].at;
    assert!(
        gap >= Duration::from_millis(1900) && gap < Duration::from_secs(5),
        "the retry came {gap:?} after a 429 with Retry-After: 2"
    );
    assert_eq!(eval.record("0").attempts, 2);
}

#[test]
fn client_error_is_not_retried_and_keeps_the_body() {
    let dir = TestDir::new();
    let server = TestServer::builder()
        .respond(|_| {
            Reply::status(
                400,
                "{\"error\": {\"message\": \"This model's maximum context length is 8192 tokens\"}}",
            )
        })
        .start();
    let (out, eval) = run(&dir, &server.url(), &["a", "b"], FAST_RETRY, &[]);
    out.assert_exit_code(1);
    assert_eq!(server.count(), 2, "a 400 is never retried");
    for r in eval.records() {
        assert_eq!(r.error_kind.as_deref(), Some("http_400"), "{r:?}");
        assert_eq!(r.attempts, 1);
        assert!(
            r.error
                .as_deref()
                .unwrap()
                .contains("maximum context length is 8192"),
            "the error keeps an excerpt of the body: {r:?}"
        );
        assert_eq!(r.output, None);
    }
    assert_eq!((eval.samples.errored, eval.samples.finished), (2, 0));
}

#[test]
fn server_errors_use_every_attempt() {
    let dir = TestDir::new();
    let server = TestServer::builder()
        .respond(|_| Reply::status(500, "internal error"))
        .start();
    let (out, eval) = run(&dir, &server.url(), &["a", "b"], FAST_RETRY, &[]);
    out.assert_exit_code(1);
    assert_eq!(server.count(), 6, "3 attempts per sample");
    for r in eval.records() {
        assert_eq!(r.error_kind.as_deref(), Some("http_500"), "{r:?}");
        assert_eq!(r.attempts, 3);
    }
}

#[test]
fn unavailable_server_is_retried_until_max_wait() {
    let dir = TestDir::new();
    let server = TestServer::builder()
        .respond(|_| Reply::status(503, "overloaded"))
        .start();
    // A 503 is throttling: bounded by max_wait, not by max_attempts.
    let (out, eval) = run(
        &dir,
        &server.url(),
        &["a", "b"],
        "  retry: {max_attempts: 3, backoff: 10ms, max_backoff: 50ms, max_wait: 500ms}\n",
        &[],
    );
    out.assert_exit_code(1);
    assert!(out.elapsed < Duration::from_secs(10), "{:?}", out.elapsed);
    for r in eval.records() {
        assert_eq!(r.error_kind.as_deref(), Some("http_503"), "{r:?}");
        assert!(r.attempts > 3, "{r:?}");
        let error = r.error.as_deref().unwrap_or_default();
        assert!(error.contains("retry.max_wait 500ms spent"), "{r:?}");
    }
}

#[test]
fn hanging_server_times_out_per_attempt() {
    let dir = TestDir::new();
    let server = TestServer::builder().respond(|_| Reply::Hang).start();
    let (out, eval) = run(
        &dir,
        &server.url(),
        &["a"],
        "  timeout: 300ms\n  retry: {max_attempts: 2, backoff: 10ms, max_backoff: 20ms}\n",
        &[],
    );
    out.assert_exit_code(1);
    assert_eq!(server.count(), 2, "a timeout is retried");
    let r = eval.record("0");
    assert_eq!(r.error_kind.as_deref(), Some("timeout"), "{r:?}");
    assert_eq!(r.attempts, 2);
    assert!(
        out.elapsed >= Duration::from_millis(600) && out.elapsed < Duration::from_secs(10),
        "two 300 ms attempts took {:?}",
        out.elapsed
    );
}

#[test]
fn malformed_bodies_are_recorded_as_malformed() {
    let dir = TestDir::new();
    let bodies = [
        ("html", "<html><body>Bad gateway</body></html>"),
        (
            "nochoices",
            "{\"id\": \"x\", \"object\": \"chat.completion\"}",
        ),
        ("emptychoices", "{\"choices\": []}"),
        (
            "wrongtype",
            "{\"choices\": [{\"message\": {\"content\": 42}}]}",
        ),
        ("choicesstring", "{\"choices\": \"x\"}"),
        (
            "nocontent",
            "{\"choices\": [{\"message\": {\"role\": \"assistant\"}}]}",
        ),
        (
            "truncated",
            "{\"choices\": [{\"message\": {\"content\": \"o",
        ),
    ];
    let server = TestServer::builder()
        .respond(move |r| {
            let body = bodies
                .iter()
                .find(|(name, _)| *name == r.prompt)
                .map_or("ok", |(_, body)| body);
            Reply::raw(body)
        })
        .start();
    let prompts: Vec<&str> = bodies.iter().map(|(name, _)| *name).collect();
    let (out, eval) = run(&dir, &server.url(), &prompts, FAST_RETRY, &[]);
    out.assert_exit_code(1);
    for (i, name) in prompts.iter().enumerate() {
        let r = eval.record(&i.to_string());
        assert_eq!(r.error_kind.as_deref(), Some("malformed"), "{name}: {r:?}");
        assert_eq!(r.output, None, "{name}");
        assert!(
            r.error.as_deref().is_some_and(|e| !e.is_empty()),
            "{name}: {r:?}"
        );
    }
    assert_eq!(eval.samples.errored, bodies.len() as u64);
    // The error message shows what came back.
    assert!(eval
        .record("0")
        .error
        .as_deref()
        .unwrap()
        .contains("Bad gateway"));
}

#[test]
fn refused_connection_is_recorded_as_connection() {
    let dir = TestDir::new();
    let url = format!("http://127.0.0.1:{}/v1", closed_port());
    let (out, eval) = run(&dir, &url, &["a", "b"], FAST_RETRY, &[]);
    out.assert_exit_code(1);
    for r in eval.records() {
        assert_eq!(r.error_kind.as_deref(), Some("connection"), "{r:?}");
        assert_eq!(r.attempts, 3, "connection errors are retried");
    }
}

#[test]
fn template_error_at_render_time_sends_nothing_for_that_row() {
    let dir = TestDir::new();
    let server = TestServer::echo();
    dir.write(
        "spec.yaml",
        &format!(
            "dataset:\n  rows: [{{meta: {{lang: en}}}}, {{meta: {{}}}}]\nmodel:\n  provider: openai\n  base_url: {}\n  name: m\nprompt: \"lang {{{{ meta.lang }}}}\"\n",
            server.url()
        ),
    );
    let out = dir
        .cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .output();
    out.assert_exit_code(1);
    assert_eq!(server.prompts(), ["lang en"]);
    let eval = dir.show_full("x").only().clone();
    assert_eq!(eval.record("1").error_kind.as_deref(), Some("template"));
    assert_eq!(eval.record("1").attempts, 0);
    assert_eq!(eval.record("0").output.as_deref(), Some("lang en"));
}

#[test]
fn show_errors_lists_every_failure() {
    let dir = TestDir::new();
    let server = TestServer::builder()
        .respond(|r| match r.prompt.as_str() {
            "refuse" => Reply::status(422, "{\"error\": \"unprocessable prompt\"}"),
            "hang" => Reply::Hang,
            "junk" => Reply::raw("not json at all"),
            _ => Reply::text("ok"),
        })
        .start();
    let (out, eval) = run(
        &dir,
        &server.url(),
        &["fine", "refuse", "hang", "junk", "also fine"],
        "  timeout: 300ms\n  retry: {max_attempts: 2, backoff: 10ms, max_backoff: 20ms}\n",
        &[],
    );
    out.assert_exit_code(1);
    assert_eq!(
        (
            eval.samples.recorded,
            eval.samples.finished,
            eval.samples.errored
        ),
        (5, 2, 3)
    );

    let json = dir
        .cmd(["show", "x", "--errors", "--format", "json"])
        .output()
        .assert_exit_code(0)
        .json::<ExperimentView>();
    let errors = json.only().errors.clone().unwrap();
    let listed: Vec<(&str, &str, u32)> = errors
        .iter()
        .map(|e| (e.id.as_str(), e.kind.as_str(), e.attempts))
        .collect();
    assert_eq!(
        listed,
        [
            ("1", "http_422", 1),
            ("2", "timeout", 2),
            ("3", "malformed", 2)
        ]
    );
    assert!(
        errors[0].message.contains("unprocessable prompt"),
        "{errors:?}"
    );

    let table = dir.cmd(["show", "x", "--errors"]).output();
    table.assert_exit_code(0);
    for needle in ["http_422", "timeout", "malformed", "unprocessable prompt"] {
        table.assert_stdout_contains(needle);
    }
}

#[test]
fn unknown_experiment_names_are_refused_clearly() {
    let dir = TestDir::new();
    // No store at all yet.
    for args in [
        vec!["show", "nope"],
        vec!["delete", "nope"],
        vec!["rename", "nope", "other"],
    ] {
        let out = dir.cmd(&args).output();
        out.assert_exit_code(2);
        out.assert_stderr_contains("no experiment named `nope`");
    }

    let server = TestServer::echo();
    let (out, _) = run(&dir, &server.url(), &["ok"], FAST_RETRY, &[]);
    out.assert_exit_code(0);
    dir.cmd(["rename", "x", "baseline"])
        .output()
        .assert_exit_code(0);
    for args in [
        vec!["show", "baselin"],
        vec!["delete", "baselin"],
        vec!["rename", "baselin", "other"],
    ] {
        let out = dir.cmd(&args).output();
        out.assert_exit_code(2);
        out.assert_stderr_contains("no experiment named `baselin`");
        out.assert_stderr_contains("did you mean `baseline`?");
    }
    // Renaming onto an existing name is refused too, and changes nothing.
    let (out, _) = run(&dir, &server.url(), &["ok"], FAST_RETRY, &[]);
    out.assert_exit_code(0);
    let out = dir.cmd(["rename", "x", "baseline"]).output();
    out.assert_exit_code(2);
    out.assert_stderr_contains("`baseline` already exists");
    assert!(dir.try_show("x").is_some() && dir.try_show("baseline").is_some());
    // A deleted experiment is gone.
    dir.cmd(["delete", "baseline"]).output().assert_exit_code(0);
    let out = dir.cmd(["show", "baseline"]).output();
    out.assert_exit_code(2);
    out.assert_stderr_contains("no experiment named `baseline`");
}

/// A run where the server refused every request (a wrong key stops it at
/// once) prints no rate: failures per second would read as speed.
#[test]
fn a_run_with_nothing_finished_prints_no_rate() {
    let server = TestServer::builder()
        .respond(|_| Reply::status(401, r#"{"error": {"message": "invalid api key"}}"#))
        .start();
    let dir = TestDir::new();
    dir.write(
        "spec.yaml",
        &Spec::new("refused", &server.url())
            .samples(3)
            .quick()
            .to_string(),
    );
    let out = dir.cmd(["run", "spec.yaml", "-e", "x"]).output();
    let wall = out
        .stdout
        .lines()
        .find(|l| l.trim_start().starts_with("wall time"))
        .unwrap_or_else(|| panic!("a wall time line:\n{}", out.stdout))
        .to_owned();
    assert!(!wall.contains("samples/s"), "{wall}");
}
