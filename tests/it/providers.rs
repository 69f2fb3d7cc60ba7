//! The providers against loopback servers that follow each API's documented
//! shapes: OpenAI chat completions streamed, Anthropic's Messages API, the
//! Responses API and `provider: http`; time to first token, the whole usage,
//! cut and stalled streams, and overloaded answers before and during a stream.

use std::time::Duration;

use serde_json::Value;

use crate::server::{Reply, TestServer};
use crate::support::{only, show_json, uint};
use crate::util::{sample_rows, TestDir};

const KEY: &str = "sk-ant-test-2f9c1b7e5d";

/// A spec of `n` samples (`sample 0`, ...) with the model block `model`.
fn spec(n: usize, model: &str, window: usize) -> String {
    format!(
        "name: p\ndataset:\n  rows: {}\nmodel:\n{model}prompt: \"{{{{ text }}}}\"\n\
         evaluators:\n  - {{type: contains, expected: sample}}\n\
         concurrency: {{strategy: sliding_window, max_concurrency: {window}}}\n",
        sample_rows(n)
    )
}

/// `provider: NAME` at `base_url`, streamed or not, with quick retries.
fn model(provider: &str, base_url: &str, stream: bool) -> String {
    format!(
        "  provider: {provider}\n  base_url: {base_url}\n  name: test-model\n  api_key_env: TEST_KEY\n\
         \x20 stream: {stream}\n  timeout: 10s\n  retry: {{max_attempts: 3, backoff: 10ms, max_backoff: 50ms}}\n"
    )
}

fn run(dir: &TestDir, text: &str) -> Value {
    dir.write("spec.yaml", text);
    let out = dir
        .cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .env("TEST_KEY", KEY)
        .output();
    out.assert_exit_code(0);
    show_json(dir, "x", &["--full"])
}

fn records(report: &Value) -> &Vec<Value> {
    only(report)["records"].as_array().expect("records")
}

fn seconds(v: &Value, pointer: &str) -> f64 {
    v.pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no number at {pointer} in {v:#}"))
}

/// Every byte of the store: what a leak would be found in.
fn store_bytes(dir: &TestDir) -> String {
    let mut all = Vec::new();
    for entry in std::fs::read_dir(dir.path().join("store")).unwrap() {
        all.extend(std::fs::read(entry.unwrap().path()).unwrap_or_default());
    }
    String::from_utf8_lossy(&all).into_owned()
}

/// A server whose streams send their control frames at once, their first
/// text after 100 ms and their last frame at 500 ms.
fn paced() -> TestServer {
    TestServer::builder()
        .reply(|p| format!("{p} is a sample, said slowly"))
        .stream_timing(Duration::from_millis(100), Duration::from_millis(500))
        .start()
}

#[test]
fn time_to_first_token_is_read_at_the_first_text_not_the_first_byte() {
    for provider in ["openai", "anthropic", "openai_responses"] {
        let server = paced();
        let base = match provider {
            "anthropic" => server.root_url(),
            _ => server.url(),
        };
        let dir = TestDir::new();
        let report = run(&dir, &spec(20, &model(provider, &base, true), 10));
        let t = &only(&report)["timing"];
        // The server sends the first text 400 ms before its last frame: a
        // time to first token read at the first byte (the control frames)
        // would come out 100 ms early. What precedes the headers (connecting,
        // the server's turn) is in both figures.
        for r in records(&report) {
            let first = seconds(r, "/time_to_first_token_seconds");
            let whole = seconds(r, "/latency_seconds");
            assert!(
                (first - (whole - 0.4)).abs() <= 0.010,
                "{provider}: first token at {first} s of {whole} s: {r:#}"
            );
        }
        let p50 = seconds(t, "/time_to_first_token_seconds/p50");
        assert!(
            (0.090..=0.150).contains(&p50),
            "{provider}: p50 time to first token {p50} s: {t:#}"
        );
        assert!(
            seconds(t, "/latency_seconds/p50") >= 0.5,
            "{provider}: {t:#}"
        );
        // "sample N is a sample, said slowly": 6 tokens after the first, over 400 ms.
        let speed = seconds(t, "/output_tokens_per_second/p50");
        assert!(
            (12.0..=16.0).contains(&speed),
            "{provider}: {speed} tokens/s"
        );
        assert!(server.requests().iter().all(|r| r.streamed()));
    }
}

#[test]
fn a_whole_reply_has_no_time_to_first_token() {
    let server = paced();
    let dir = TestDir::new();
    let report = run(&dir, &spec(4, &model("openai", &server.url(), false), 4));
    let t = &only(&report)["timing"];
    assert!(t["time_to_first_token_seconds"].is_null(), "{t:#}");
    assert!(t["output_tokens_per_second"].is_null(), "{t:#}");
    assert!(server.requests().iter().all(|r| !r.streamed()));
}

#[test]
fn every_streamed_openai_sample_carries_its_token_counts() {
    let server = TestServer::builder()
        .reply(|p| format!("{p} answered"))
        .cached_tokens(1)
        .reasoning_tokens(2)
        .start();
    let dir = TestDir::new();
    let report = run(&dir, &spec(200, &model("openai", &server.url(), true), 32));
    let rs = records(&report);
    assert_eq!(rs.len(), 200);
    for r in rs {
        // "sample N" is 2 words; "sample N answered" 3, and 2 reasoning.
        assert_eq!(
            (
                r["prompt_tokens"].as_u64(),
                r["completion_tokens"].as_u64(),
                r["cached_prompt_tokens"].as_u64(),
                r["reasoning_tokens"].as_u64()
            ),
            (Some(2), Some(5), Some(1), Some(2)),
            "{r:#}"
        );
    }
    let tokens = &only(&report)["tokens"];
    assert_eq!(
        (
            uint(tokens, "/prompt"),
            uint(tokens, "/completion"),
            uint(tokens, "/cached_prompt"),
            uint(tokens, "/reasoning")
        ),
        (400, 1000, 200, 400)
    );
    for r in server.requests() {
        assert_eq!(
            r.body.pointer("/stream_options/include_usage"),
            Some(&Value::Bool(true)),
            "a streamed request asks for its usage"
        );
    }
}

#[test]
fn a_cut_stream_is_an_error_with_what_arrived_never_a_short_answer() {
    for (provider, cut) in [
        (
            "openai",
            Reply::stream_cut("sample 3 was cut right here", 2),
        ),
        (
            "anthropic",
            Reply::stream_cut("sample 3 was cut right here", 2),
        ),
        (
            "openai_responses",
            Reply::stream_reset("sample 3 was cut right here", 2),
        ),
    ] {
        let server = TestServer::builder()
            .respond(move |r| {
                if r.prompt == "sample 3" {
                    cut.clone()
                } else {
                    Reply::text(r.prompt.clone())
                }
            })
            .raw_http()
            .start();
        let base = match provider {
            "anthropic" => server.root_url(),
            _ => server.url(),
        };
        let dir = TestDir::new();
        dir.write("spec.yaml", &spec(6, &model(provider, &base, true), 3));
        let out = dir
            .cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
            .env("TEST_KEY", KEY)
            .output();
        out.assert_exit_code(1);
        let report = show_json(&dir, "x", &["--full"]);
        let bad: Vec<&Value> = records(&report)
            .iter()
            .filter(|r| !r["error_kind"].is_null())
            .collect();
        assert_eq!(bad.len(), 1, "{provider}: {report:#}");
        let r = bad[0];
        assert!(r["output"].is_null(), "{provider}: {r:#}");
        let kind = r["error_kind"].as_str().unwrap();
        assert!(
            ["stream_cut", "connection"].contains(&kind),
            "{provider}: {kind}"
        );
        if kind == "stream_cut" {
            assert!(
                r["error"].as_str().unwrap().contains("sample 3"),
                "what arrived is in the message: {r:#}"
            );
        }
        assert_eq!(r["attempts"], 3, "{provider}: a cut stream is retried");
    }
}

#[test]
fn anthropic_overloaded_before_and_during_a_stream_is_throttling_and_retried() {
    let server = TestServer::builder()
        .respond(|r| match r.attempt {
            1 => Reply::anthropic_error(529, "overloaded_error", "Overloaded"),
            2 => Reply::stream_error(format!("{} begins", r.prompt), 1, "overloaded_error"),
            _ => Reply::text(r.prompt.clone()),
        })
        .start();
    let dir = TestDir::new();
    let report = run(
        &dir,
        &spec(4, &model("anthropic", &server.root_url(), true), 2),
    );
    let e = only(&report);
    assert_eq!(uint(e, "/samples/finished"), 4, "{e:#}");
    assert_eq!(uint(e, "/timing/throttled"), 8, "two per sample: {e:#}");
    for r in records(&report) {
        assert_eq!(r["attempts"], 3, "{r:#}");
    }
}

#[test]
fn anthropic_requests_carry_the_key_version_and_system_and_the_key_is_never_stored() {
    let server = TestServer::builder()
        .reply(|p| p.lines().last().unwrap_or("").to_owned())
        .cached_tokens(1)
        .cache_write_tokens(2)
        .start();
    let dir = TestDir::new();
    let text = spec(3, &model("anthropic", &server.root_url(), false), 2).replace(
        "prompt: \"{{ text }}\"",
        "messages:\n  - {role: system, content: Be brief.}\n  - {role: user, content: \"{{ text }}\"}",
    );
    let report = run(&dir, &text);
    for r in server.requests() {
        assert_eq!(r.path, "/v1/messages");
        assert_eq!(r.header("x-api-key"), Some(KEY));
        assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
        assert_eq!(r.header("authorization"), None);
        assert_eq!(r.body["system"], "Be brief.");
        assert_eq!(r.body["max_tokens"], 1024);
        assert_eq!(r.body["messages"].as_array().map(Vec::len), Some(1));
    }
    let tokens = &only(&report)["tokens"];
    // "Be brief. sample N" is 4 words: the prompt counts the cache's too.
    assert_eq!(
        (
            uint(tokens, "/prompt"),
            uint(tokens, "/cached_prompt"),
            uint(tokens, "/cache_write")
        ),
        (3 * 6, 3, 6),
        "{tokens:#}"
    );
    assert!(!store_bytes(&dir).contains(KEY), "the key is in the store");
}

#[test]
fn openai_responses_reads_the_message_items_and_records_reasoning() {
    let server = TestServer::builder()
        .reply(|p| format!("{p} ok"))
        .reasoning_tokens(7)
        .start();
    for stream in [false, true] {
        let dir = TestDir::new();
        let report = run(
            &dir,
            &spec(3, &model("openai_responses", &server.url(), stream), 3),
        );
        for r in records(&report) {
            assert!(r["output"].as_str().unwrap().ends_with(" ok"), "{r:#}");
            assert_eq!(r["reasoning_tokens"], 7, "{r:#}");
            assert_eq!(r["completion_tokens"], 10, "3 words and 7 reasoning: {r:#}");
        }
    }
    assert!(server.requests().iter().all(|r| r.path == "/v1/responses"
        && r.body["input"].is_array()
        && r.header("authorization") == Some(&format!("Bearer {KEY}"))));
}

#[test]
fn a_stalled_stream_is_a_timeout() {
    let server = TestServer::builder()
        .respond(|r| Reply::stream_stall(r.prompt.clone(), 1))
        .start();
    let dir = TestDir::new();
    let model = model("openai", &server.url(), true)
        .replace(
            "  timeout: 10s\n",
            "  timeout: 10s\n  read_timeout: 300ms\n",
        )
        .replace("max_attempts: 3", "max_attempts: 1");
    dir.write("spec.yaml", &spec(1, &model, 1));
    let started = std::time::Instant::now();
    dir.cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .env("TEST_KEY", KEY)
        .output()
        .assert_exit_code(1);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "read_timeout, not timeout, ended it"
    );
    let report = show_json(&dir, "x", &["--full"]);
    let r = &records(&report)[0];
    assert_eq!(r["error_kind"], "timeout", "{r:#}");
    assert!(r["error"].as_str().unwrap().contains("stalled"), "{r:#}");
}

/// `provider: http` in front of an Anthropic-shaped endpoint: headers and
/// body from the spec, output and usage by pointer.
fn http_model(url: &str, output: &str) -> String {
    format!(
        "  provider: http\n  url: {url}/v1/messages\n  api_key_env: TEST_KEY\n\
         \x20 headers: {{x-api-key: \"{{{{ api_key }}}}\", anthropic-version: \"2023-06-01\"}}\n\
         \x20 body:\n    model: claude-test\n    max_tokens: 64\n    messages: \"{{{{ messages }}}}\"\n\
         \x20   metadata: {{user_id: \"row {{{{ text }}}}\"}}\n\
         \x20 output: {output}\n\
         \x20 usage: {{input_tokens: /usage/input_tokens, output_tokens: /usage/output_tokens}}\n\
         \x20 error: /error/message\n\
         \x20 retry: {{max_attempts: 2, backoff: 10ms, max_backoff: 20ms}}\n"
    )
}

#[test]
fn the_http_provider_reaches_an_anthropic_shaped_endpoint_by_pointer() {
    let server = TestServer::builder().reply(|p| format!("{p} ok")).start();
    let dir = TestDir::new();
    let report = run(
        &dir,
        &spec(3, &http_model(&server.root_url(), "/content/0/text"), 3),
    );
    for r in records(&report) {
        assert!(r["output"].as_str().unwrap().ends_with(" ok"), "{r:#}");
        assert_eq!(
            (r["prompt_tokens"].as_u64(), r["completion_tokens"].as_u64()),
            (Some(2), Some(3))
        );
    }
    for r in server.requests() {
        assert_eq!(r.path, "/v1/messages");
        assert_eq!(r.header("x-api-key"), Some(KEY));
        assert_eq!(r.header("anthropic-version"), Some("2023-06-01"));
        assert_eq!(r.body["model"], "claude-test");
        assert_eq!(r.body["max_tokens"], 64, "numbers stay numbers");
        assert_eq!(
            r.body["messages"],
            serde_json::json!([{"role": "user", "content": r.prompt}]),
            "a lone {{ messages }} is the list itself"
        );
        assert_eq!(r.body["metadata"]["user_id"], format!("row {}", r.prompt));
    }
    assert!(!store_bytes(&dir).contains(KEY), "the key is in the store");
}

#[test]
fn an_http_pointer_that_matches_nothing_names_itself_and_the_body() {
    let server = TestServer::builder().reply(|p| format!("{p} ok")).start();
    let dir = TestDir::new();
    dir.write(
        "spec.yaml",
        &spec(1, &http_model(&server.root_url(), "/choices/0/text"), 1),
    );
    dir.cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .env("TEST_KEY", KEY)
        .output()
        .assert_exit_code(1);
    let report = show_json(&dir, "x", &["--full"]);
    let r = &records(&report)[0];
    assert_eq!(r["error_kind"], "no_output", "{r:#}");
    let message = r["error"].as_str().unwrap();
    assert!(
        message.contains("/choices/0/text") && message.contains("\"content\""),
        "{message}"
    );
    assert_eq!(
        r["attempts"], 1,
        "the same reply would miss again: not retried"
    );
}

#[test]
fn http_spec_mistakes_are_named_before_any_request() {
    let server = TestServer::echo();
    let dir = TestDir::new();
    for (model, message) in [
        (
            "  provider: http\n  output: /text\n".to_owned(),
            "provider `http` needs `url`",
        ),
        (
            format!("  provider: http\n  url: {}\n", server.url()),
            "provider `http` needs `output`",
        ),
        (
            format!("  provider: http\n  url: {}\n  output: content.0.text\n", server.url()),
            "is not a JSON Pointer",
        ),
        (
            format!(
                "  provider: http\n  url: {}\n  output: /text\n  body: {{q: \"{{{{ nope }}}}\"}}\n",
                server.url()
            ),
            "uses `nope`, which is not a dataset column",
        ),
        (
            format!(
                "  provider: http\n  url: {}\n  output: /text\n  headers: {{x-key: \"{{{{ api_key }}}}\"}}\n",
                server.url()
            ),
            "names no `api_key_env`",
        ),
        (
            format!("  provider: openai\n  base_url: {}\n  name: m\n  output: /text\n", server.url()),
            "`output` only applies to provider `http`",
        ),
        (
            format!(
                "  provider: http\n  url: {}\n  output: /text\n  stream: true\n",
                server.url()
            ),
            "provider `http` does not stream",
        ),
    ] {
        dir.write("spec.yaml", &spec(1, &model, 1));
        let out = dir.cmd(["validate", "spec.yaml"]).output();
        out.assert_exit_code(2);
        out.assert_stderr_contains(message);
        out.assert_stderr_contains("spec.yaml:");
    }
    assert_eq!(server.count(), 0);
}

#[test]
fn a_whole_reply_to_a_request_for_a_stream_is_read_whole() {
    // LiteLLM's Anthropic route answers `stream: true` with the whole message.
    let server = TestServer::builder()
        .respond(|r| {
            Reply::raw(format!(
                r#"{{"type":"message","content":[{{"type":"text","text":"{} whole"}}],"usage":{{"input_tokens":2,"output_tokens":3}}}}"#,
                r.prompt
            ))
        })
        .start();
    let dir = TestDir::new();
    let report = run(
        &dir,
        &spec(2, &model("anthropic", &server.root_url(), true), 2),
    );
    for r in records(&report) {
        assert!(r["output"].as_str().unwrap().ends_with(" whole"), "{r:#}");
        assert!(r["time_to_first_token_seconds"].is_null(), "{r:#}");
        assert_eq!(r["completion_tokens"], 3);
    }
    assert!(server.requests().iter().all(|r| r.streamed()));
}

#[test]
fn streamed_timings_reach_the_table_the_report_compare_and_export() {
    let server = paced();
    let dir = TestDir::new();
    run(&dir, &spec(4, &model("openai", &server.url(), true), 4));
    let table = dir.cmd(["show", "x"]).output();
    table.assert_exit_code(0);
    table.assert_stdout_contains("first token ");
    table.assert_stdout_contains("tokens/s after the first");
    dir.cmd(["report", "x", "-o", "x.html"])
        .output()
        .assert_exit_code(0);
    let html = dir.read("x.html");
    assert!(
        html.contains("Time to first token histogram"),
        "no histogram"
    );
    let compare = dir.cmd(["compare", "x", "x", "--format", "json"]).output();
    compare.assert_exit_code(0);
    let c: Value = serde_json::from_str(&compare.stdout).unwrap();
    let first = c
        .pointer("/evaluations/0/timing/a/time_to_first_token_p50_seconds")
        .and_then(Value::as_f64);
    assert!(first.is_some_and(|f| f >= 0.09), "{c:#}");
    let csv = dir.cmd(["export", "x", "--format", "csv"]).output();
    csv.assert_exit_code(0);
    assert!(csv
        .stdout
        .lines()
        .next()
        .unwrap()
        .contains("time_to_first_token_seconds"));
    let jsonl = dir.cmd(["export", "x", "--format", "jsonl"]).output();
    for line in jsonl.stdout.lines() {
        let r: Value = serde_json::from_str(line).unwrap();
        assert!(r["time_to_first_token_seconds"].as_f64().is_some(), "{r:#}");
    }
}
