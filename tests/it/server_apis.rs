//! The test server's three APIs (chat completions, Anthropic Messages, the
//! Responses API), whole and streamed, and its stream faults, checked over
//! HTTP with reqwest (no dotevals binary). Every shape is checked on both
//! servers: axum (whose streams are paced bodies) and the raw HTTP/1.1 one.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::server::{Builder, Reply, TestServer};

/// One server-sent event as a client read it.
#[derive(Debug)]
struct Frame {
    event: Option<String>,
    data: String,
    /// When the chunk that completed it arrived, from when the request was
    /// sent (so never before the server meant it to: a late look at the
    /// headers would make the frames seem early).
    at: Duration,
}

impl Frame {
    fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("frame data is not JSON ({e}): {:?}", self.data))
    }
}

/// A streamed answer: its frames, and whether the body ended cleanly.
struct Streamed {
    status: u16,
    content_type: String,
    frames: Vec<Frame>,
    /// The body's error, if reading it failed (a reset).
    error: Option<String>,
}

/// A server answering every prompt with the prompt itself.
fn echo() -> Builder {
    TestServer::builder().reply(|p| p.to_owned())
}

/// Both servers built from `b`: axum, then raw.
fn servers(b: impl Fn() -> Builder) -> [TestServer; 2] {
    [b().start(), b().raw_http().start()]
}

/// One client for every test (no proxy, no certificates to load: loopback).
fn client() -> reqwest::Client {
    static CLIENT: OnceLock<reqwest::Client> = OnceLock::new();
    CLIENT
        .get_or_init(|| {
            reqwest::Client::builder()
                .no_proxy()
                .tls_built_in_root_certs(false)
                .build()
                .expect("an HTTP client")
        })
        .clone()
}

async fn post(server: &TestServer, path: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}{path}", server.root_url()))
        .header("x-test", "yes")
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("post to the test server")
}

async fn whole(server: &TestServer, path: &str, body: Value) -> Value {
    let response = post(server, path, &body).await;
    assert_eq!(response.status(), 200);
    json_of(response).await
}

/// The body of `response` as JSON (reqwest's `json` is a feature the crate
/// does not enable).
async fn json_of(response: reqwest::Response) -> Value {
    let bytes = response.bytes().await.expect("a whole body");
    serde_json::from_slice(&bytes).expect("a JSON body")
}

/// Reads a streamed answer frame by frame.
async fn stream(server: &TestServer, path: &str, body: Value) -> Streamed {
    let sent = Instant::now();
    let mut response = post(server, path, &body).await;
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let (mut frames, mut pending, mut error) = (Vec::new(), String::new(), None);
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let at = sent.elapsed();
                pending.push_str(std::str::from_utf8(&chunk).expect("UTF-8 frames"));
                while let Some(end) = pending.find("\n\n") {
                    let block: String = pending.drain(..end + 2).collect();
                    frames.push(parse(&block, at));
                }
            }
            Ok(None) => break,
            Err(e) => {
                error = Some(e.to_string());
                break;
            }
        }
    }
    assert!(
        pending.is_empty(),
        "a partial frame at the end: {pending:?}"
    );
    Streamed {
        status,
        content_type,
        frames,
        error,
    }
}

fn parse(block: &str, at: Duration) -> Frame {
    let (mut event, mut data) = (None, String::new());
    for line in block.lines() {
        if let Some(name) = line.strip_prefix("event: ") {
            event = Some(name.to_owned());
        } else if let Some(d) = line.strip_prefix("data: ") {
            data.push_str(d);
        } else if !line.is_empty() {
            panic!("not an SSE line: {line:?}");
        }
    }
    Frame { event, data, at }
}

fn chat_body(prompt: &str, stream: bool) -> Value {
    json!({"model": "m", "stream": stream, "messages": [{"role": "user", "content": prompt}]})
}

fn messages_body(prompt: &str, stream: bool) -> Value {
    json!({"model": "claude", "max_tokens": 10, "stream": stream,
           "messages": [{"role": "user", "content": prompt}]})
}

fn responses_body(prompt: &str, stream: bool) -> Value {
    json!({"model": "gpt", "stream": stream, "input": prompt})
}

const CHAT: &str = "/v1/chat/completions";
const MESSAGES: &str = "/v1/messages";
const RESPONSES: &str = "/v1/responses";

/// The text of a chat stream's content deltas.
fn chat_text(frames: &[Frame]) -> Vec<String> {
    frames
        .iter()
        .filter(|f| f.data != "[DONE]")
        .filter_map(|f| {
            f.json()
                .pointer("/choices/0/delta/content")
                .and_then(Value::as_str)
                .filter(|t| !t.is_empty())
                .map(str::to_owned)
        })
        .collect()
}

/// The event names of a stream.
fn names(frames: &[Frame]) -> Vec<&str> {
    frames
        .iter()
        .map(|f| f.event.as_deref().unwrap_or("-"))
        .collect()
}

/// The text deltas of a Messages or Responses stream.
fn deltas(frames: &[Frame]) -> Vec<String> {
    frames
        .iter()
        .filter_map(|f| {
            let v = f.json();
            v.pointer("/delta/text")
                .or_else(|| v.get("delta").filter(|d| d.is_string()))
                .and_then(Value::as_str)
                .map(str::to_owned)
        })
        .collect()
}

#[tokio::test]
async fn chat_whole_reports_usage_details_and_records_the_request() {
    for server in servers(|| {
        TestServer::builder()
            .reply(|p| format!("you said {p}"))
            .cached_tokens(2)
            .reasoning_tokens(5)
    }) {
        let v = whole(&server, CHAT, chat_body("one two three", false)).await;
        assert_eq!(v["object"], "chat.completion");
        assert_eq!(
            v["choices"][0]["message"]["content"],
            "you said one two three"
        );
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        let u = &v["usage"];
        assert_eq!(u["prompt_tokens"], 3);
        assert_eq!(u["completion_tokens"], 5 + 5, "content words + reasoning");
        assert_eq!(u["total_tokens"], 3 + 10);
        assert_eq!(u["prompt_tokens_details"]["cached_tokens"], 2);
        assert_eq!(u["completion_tokens_details"]["reasoning_tokens"], 5);
        let r = &server.requests()[0];
        assert_eq!(r.path, CHAT);
        assert_eq!(r.header("x-test"), Some("yes"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(r.headers.iter().all(|(n, _)| *n == n.to_ascii_lowercase()));
        assert!(!r.streamed());
        assert!(server.url().ends_with("/v1"));
        assert_eq!(format!("{}/v1", server.root_url()), server.url());
    }
}

#[tokio::test]
async fn chat_stream_sends_role_pieces_stop_and_done() {
    for server in servers(echo) {
        let s = stream(&server, CHAT, chat_body("alpha beta gamma", true)).await;
        assert_eq!(
            (s.status, s.content_type.as_str()),
            (200, "text/event-stream")
        );
        assert!(s.error.is_none());
        let f = &s.frames;
        assert!(f.iter().all(|f| f.event.is_none()));
        assert_eq!(f.last().unwrap().data, "[DONE]");
        let first = f[0].json();
        assert_eq!(first["object"], "chat.completion.chunk");
        assert_eq!(
            first["choices"][0]["delta"],
            json!({"role": "assistant", "content": ""})
        );
        let text = chat_text(f);
        assert!(text.len() >= 2, "{text:?}");
        assert_eq!(text.concat(), "alpha beta gamma");
        let stop = f[f.len() - 2].json();
        assert_eq!(stop["choices"][0]["finish_reason"], "stop");
        assert_eq!(stop["choices"][0]["delta"], json!({}));
        assert!(
            f.iter().all(|f| !f.data.contains("usage")),
            "no usage asked"
        );
        assert!(server.requests()[0].streamed());
    }
}

#[tokio::test]
async fn chat_stream_with_include_usage_ends_with_a_usage_chunk() {
    for server in servers(|| echo().reasoning_tokens(4)) {
        let mut body = chat_body("alpha beta", true);
        body["stream_options"] = json!({"include_usage": true});
        let s = stream(&server, CHAT, body).await;
        let f = &s.frames;
        assert_eq!(f.last().unwrap().data, "[DONE]");
        let usage = f[f.len() - 2].json();
        assert_eq!(usage["choices"], json!([]));
        assert_eq!(usage["usage"]["prompt_tokens"], 2);
        assert_eq!(usage["usage"]["completion_tokens"], 2 + 4);
        assert_eq!(usage["usage"]["total_tokens"], 2 + 6);
        assert_eq!(
            usage["usage"]["completion_tokens_details"]["reasoning_tokens"],
            4
        );
        // The other chunks carry `usage: null`, as OpenAI's do.
        assert!(f[..f.len() - 2].iter().all(|f| f.json()["usage"].is_null()));
        assert_eq!(f[f.len() - 3].json()["choices"][0]["finish_reason"], "stop");
    }
}

#[tokio::test]
async fn messages_whole_is_anthropic_shaped() {
    for server in servers(|| {
        TestServer::builder()
            .reply(|p| format!("ok: {p}"))
            .cached_tokens(2)
            .cache_write_tokens(7)
            .reasoning_tokens(1)
    }) {
        let body = json!({
            "model": "claude", "max_tokens": 10,
            "system": [{"type": "text", "text": "be brief"}],
            "messages": [
                {"role": "user", "content": "first question"},
                {"role": "assistant", "content": [{"type": "text", "text": "an answer"}]},
                {"role": "user", "content": [{"type": "text", "text": "second"}]}
            ]
        });
        let v = whole(&server, MESSAGES, body).await;
        let prompt = "be brief\nfirst question\nan answer\nsecond";
        assert_eq!(server.prompts(), [prompt]);
        assert_eq!(v["type"], "message");
        assert_eq!(v["role"], "assistant");
        assert_eq!(v["model"], "claude");
        assert_eq!(v["stop_reason"], "end_turn");
        assert_eq!(
            v["content"],
            json!([{"type": "text", "text": format!("ok: {prompt}")}])
        );
        let u = &v["usage"];
        assert_eq!(u["input_tokens"], 7 - 2, "prompt words less the cached");
        assert_eq!(u["cache_read_input_tokens"], 2);
        assert_eq!(u["cache_creation_input_tokens"], 7);
        assert_eq!(u["output_tokens"], 8 + 1);
        assert_eq!(server.requests()[0].path, MESSAGES);
    }
}

#[tokio::test]
async fn messages_stream_follows_anthropics_event_sequence() {
    for server in servers(|| echo().cached_tokens(1)) {
        let mut body = messages_body("alpha beta gamma", true);
        body["system"] = json!("sys");
        let s = stream(&server, MESSAGES, body).await;
        assert_eq!(
            (s.status, s.content_type.as_str()),
            (200, "text/event-stream")
        );
        let f = &s.frames;
        let n = names(f);
        let pieces = n.len() - 6;
        assert!(pieces >= 2, "{n:?}");
        let mut expected = vec!["message_start", "content_block_start", "ping"];
        expected.extend(std::iter::repeat_n("content_block_delta", pieces));
        expected.extend(["content_block_stop", "message_delta", "message_stop"]);
        assert_eq!(n, expected);
        for frame in f {
            assert_eq!(frame.json()["type"], frame.event.as_deref().unwrap());
        }
        let start = &f[0].json()["message"];
        assert_eq!(start["content"], json!([]));
        assert_eq!(start["usage"]["input_tokens"], 4 - 1);
        assert_eq!(start["usage"]["cache_read_input_tokens"], 1);
        assert_eq!(start["usage"]["cache_creation_input_tokens"], 0);
        assert_eq!(start["usage"]["output_tokens"], 1);
        assert_eq!(
            f[1].json()["content_block"],
            json!({"type": "text", "text": ""})
        );
        assert_eq!(f[3].json()["delta"]["type"], "text_delta");
        assert_eq!(deltas(f).concat(), "sys\nalpha beta gamma");
        let delta = f[f.len() - 2].json();
        assert_eq!(delta["delta"]["stop_reason"], "end_turn");
        assert_eq!(delta["usage"]["output_tokens"], 4);
    }
}

#[tokio::test]
async fn responses_whole_has_reasoning_and_message_items() {
    for server in servers(|| echo().cached_tokens(3).reasoning_tokens(6)) {
        let body = json!({
            "model": "gpt", "instructions": "be brief",
            "input": [
                {"role": "user", "content": "plain text"},
                {"role": "user", "content": [{"type": "input_text", "text": "a part"}]}
            ]
        });
        let v = whole(&server, RESPONSES, body).await;
        let prompt = "be brief\nplain text\na part";
        assert_eq!(server.prompts(), [prompt]);
        assert_eq!(v["object"], "response");
        assert_eq!(v["status"], "completed");
        assert_eq!(v["model"], "gpt");
        let output = v["output"].as_array().unwrap();
        assert_eq!(output[0]["type"], "reasoning");
        assert_eq!(output[0]["summary"], json!([]));
        assert_eq!(output[1]["type"], "message");
        assert_eq!(output[1]["role"], "assistant");
        assert_eq!(output[1]["status"], "completed");
        assert_eq!(
            output[1]["content"],
            json!([{"type": "output_text", "text": prompt, "annotations": []}])
        );
        let u = &v["usage"];
        assert_eq!(u["input_tokens"], 6);
        assert_eq!(u["input_tokens_details"]["cached_tokens"], 3);
        assert_eq!(u["output_tokens"], 6 + 6);
        assert_eq!(u["output_tokens_details"]["reasoning_tokens"], 6);
        assert_eq!(u["total_tokens"], 6 + 12);
    }
}

#[tokio::test]
async fn responses_stream_follows_the_documented_events() {
    for server in servers(|| echo().reasoning_tokens(2)) {
        let s = stream(&server, RESPONSES, responses_body("alpha beta gamma", true)).await;
        assert_eq!(
            (s.status, s.content_type.as_str()),
            (200, "text/event-stream")
        );
        let f = &s.frames;
        let n = names(f);
        let pieces = n.len() - 10;
        assert!(pieces >= 2, "{n:?}");
        let mut expected = vec![
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.output_item.done",
            "response.output_item.added",
            "response.content_part.added",
        ];
        expected.extend(std::iter::repeat_n("response.output_text.delta", pieces));
        expected.extend([
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ]);
        assert_eq!(n, expected);
        for (i, frame) in f.iter().enumerate() {
            let v = frame.json();
            assert_eq!(v["type"], frame.event.as_deref().unwrap());
            assert_eq!(v["sequence_number"], i);
        }
        assert_eq!(f[2].json()["item"]["type"], "reasoning");
        assert_eq!(f[4].json()["item"]["type"], "message");
        let delta = f[6].json();
        assert_eq!(delta["output_index"], 1);
        assert_eq!(delta["content_index"], 0);
        assert_eq!(delta["item_id"], f[4].json()["item"]["id"]);
        assert_eq!(deltas(f).concat(), "alpha beta gamma");
        assert_eq!(f[f.len() - 4].json()["text"], "alpha beta gamma");
        let done = f.last().unwrap().json();
        assert_eq!(done["response"]["status"], "completed");
        assert_eq!(done["response"]["usage"]["output_tokens"], 3 + 2);
        assert_eq!(done["response"]["usage"]["total_tokens"], 3 + 5);
    }
}

#[tokio::test]
async fn stream_timing_paces_the_first_text_and_the_end() {
    let first = Duration::from_millis(100);
    let total = Duration::from_millis(300);
    let [axum, raw] = servers(|| echo().stream_timing(first, total));
    let (a, r) = tokio::join!(
        stream(&axum, MESSAGES, messages_body("a b c d e", true)),
        stream(&raw, MESSAGES, messages_body("a b c d e", true)),
    );
    for s in [a, r] {
        let f = &s.frames;
        let text = f[3].at;
        // The control frames come with the headers, well before the text.
        assert!(f[2].at + first / 2 <= text, "{f:?}");
        // Bounds generous above: a busy machine answers late, never early.
        assert!(
            text >= first && text < first + Duration::from_millis(80),
            "first text after {text:?}, expected {first:?}"
        );
        let end = f.last().unwrap().at;
        assert!(
            end >= total && end < total + Duration::from_millis(150),
            "last frame after {end:?}, expected {total:?}"
        );
        // The pieces in between are spread out, not sent in one go.
        assert!(f[4].at > text + Duration::from_millis(20), "{f:?}");
    }
}

#[tokio::test]
async fn stream_timing_applies_to_every_api() {
    let first = Duration::from_millis(60);
    let total = Duration::from_millis(120);
    let server = echo().stream_timing(first, total).start();
    for (path, body, control) in [
        (CHAT, chat_body("a b", true), 1),
        (RESPONSES, responses_body("a b", true), 6),
    ] {
        let s = stream(&server, path, body).await;
        let f = &s.frames;
        assert!(
            f[control - 1].at + first / 2 <= f[control].at,
            "{path}: {f:?}"
        );
        assert!(f[control].at >= first, "{path}: {f:?}");
        assert!(f.last().unwrap().at >= total, "{path}: {f:?}");
    }
}

/// Waits until no request is in flight (a request leaves just after its
/// last byte, so a client can be a little ahead).
async fn settle(server: &TestServer) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.in_flight() > 0 {
        assert!(Instant::now() < deadline, "still in flight after 5 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// The streams of one reply for each API, read by `stream`.
async fn each_api(server: &TestServer, prompt: &str) -> [Streamed; 3] {
    [
        stream(server, CHAT, chat_body(prompt, true)).await,
        stream(server, MESSAGES, messages_body(prompt, true)).await,
        stream(server, RESPONSES, responses_body(prompt, true)).await,
    ]
}

#[tokio::test]
async fn stream_cut_ends_without_a_terminator() {
    for server in
        servers(|| TestServer::builder().respond(|r| Reply::stream_cut(r.prompt.clone(), 2)))
    {
        let [chat, messages, responses] = each_api(&server, "one two three four").await;
        for s in [&chat, &messages, &responses] {
            assert_eq!(s.status, 200);
            assert!(s.error.is_none(), "a clean end: {:?}", s.error);
        }
        assert_eq!(chat_text(&chat.frames), ["one ", "two "]);
        assert_eq!(chat.frames.len(), 3, "the role chunk and two pieces");
        assert!(chat.frames.iter().all(|f| f.data != "[DONE]"));
        assert_eq!(deltas(&messages.frames), ["one ", "two "]);
        assert_eq!(names(&messages.frames).last(), Some(&"content_block_delta"));
        assert_eq!(deltas(&responses.frames), ["one ", "two "]);
        assert_eq!(
            names(&responses.frames).last(),
            Some(&"response.output_text.delta")
        );
        // A request that asked for no stream gets the whole text.
        let v = whole(&server, CHAT, chat_body("one two", false)).await;
        assert_eq!(v["choices"][0]["message"]["content"], "one two");
    }
}

#[tokio::test]
async fn stream_reset_breaks_the_body() {
    for server in
        servers(|| TestServer::builder().respond(|r| Reply::stream_reset(r.prompt.clone(), 1)))
    {
        let s = stream(&server, MESSAGES, messages_body("one two three", true)).await;
        assert_eq!(s.status, 200);
        assert!(s.error.is_some(), "the body must fail: {:?}", s.frames);
        assert_eq!(deltas(&s.frames), ["one "]);
    }
}

#[tokio::test]
async fn stream_error_sends_an_error_event_in_each_shape() {
    for server in servers(|| {
        TestServer::builder()
            .respond(|r| Reply::stream_error(r.prompt.clone(), 1, "overloaded_error"))
    }) {
        let [chat, messages, responses] = each_api(&server, "one two three").await;
        for s in [&chat, &messages, &responses] {
            assert!(s.error.is_none(), "the body ends cleanly");
        }
        assert_eq!(chat_text(&chat.frames), ["one "]);
        assert_eq!(
            chat.frames.last().unwrap().json(),
            json!({"error": {"message": "Overloaded", "type": "overloaded_error",
                             "param": null, "code": null}})
        );
        assert_eq!(deltas(&messages.frames), ["one "]);
        let error = messages.frames.last().unwrap();
        assert_eq!(error.event.as_deref(), Some("error"));
        assert_eq!(
            error.json(),
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
        );
        let error = responses.frames.last().unwrap();
        assert_eq!(error.event.as_deref(), Some("error"));
        let v = error.json();
        assert_eq!(v["type"], "error");
        assert_eq!(v["code"], "overloaded_error");
        assert_eq!(v["message"], "Overloaded");
        assert_eq!(v["sequence_number"], responses.frames.len() - 1);
    }
    let server = TestServer::builder()
        .respond(|r| Reply::stream_error(r.prompt.clone(), 0, "api_error"))
        .start();
    let s = stream(&server, MESSAGES, messages_body("x y", true)).await;
    assert_eq!(names(&s.frames).last(), Some(&"error"));
    assert_eq!(
        s.frames.last().unwrap().json()["error"]["type"],
        "api_error"
    );
    assert!(deltas(&s.frames).is_empty());
}

#[tokio::test]
async fn stream_stall_sends_nothing_more_until_the_client_leaves() {
    for server in
        servers(|| TestServer::builder().respond(|r| Reply::stream_stall(r.prompt.clone(), 1)))
    {
        let mut response = post(&server, CHAT, &chat_body("one two three", true)).await;
        let mut seen = String::new();
        while !seen.contains("one ") {
            let chunk = response.chunk().await.unwrap().expect("more of the stream");
            seen.push_str(std::str::from_utf8(&chunk).unwrap());
        }
        let more = tokio::time::timeout(Duration::from_millis(150), response.chunk()).await;
        assert!(more.is_err(), "the stream must stall, got {more:?}");
        assert_eq!(server.in_flight(), 1);
        // The stall ends when the client leaves.
        drop(response);
        settle(&server).await;
    }
}

#[tokio::test]
async fn anthropic_errors_carry_their_body_and_headers() {
    for server in servers(|| {
        TestServer::builder().respond(|r| {
            if r.attempt == 1 {
                Reply::anthropic_rate_limited(Duration::from_secs(2))
            } else {
                Reply::anthropic_error(529, "overloaded_error", "Overloaded")
            }
        })
    }) {
        let body = messages_body("hi", false);
        let r = post(&server, MESSAGES, &body).await;
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "2");
        let reset = r.headers()["anthropic-ratelimit-requests-reset"]
            .to_str()
            .unwrap()
            .to_owned();
        let reset = humantime::parse_rfc3339(&reset).expect("an RFC 3339 time");
        assert!(reset > std::time::SystemTime::now());
        let v = json_of(r).await;
        assert_eq!(
            v,
            json!({"type": "error", "error": {"type": "rate_limit_error", "message": "Rate limited"}})
        );
        let r = post(&server, MESSAGES, &body).await;
        assert_eq!(r.status(), 529);
        let v = json_of(r).await;
        assert_eq!(v["error"]["type"], "overloaded_error");
        assert_eq!(v["error"]["message"], "Overloaded");
    }
    let extra = Reply::status(503, "{}").with_header("x-extra", "1");
    assert!(matches!(extra, Reply::StatusWithHeaders { ref headers, .. } if headers.len() == 1));
}

#[tokio::test]
async fn throttles_answer_each_api_in_its_shape() {
    for server in servers(|| echo().throttle_first(3, "7")) {
        let r = post(&server, MESSAGES, &messages_body("hi", true)).await;
        assert_eq!(r.status(), 429);
        assert_eq!(r.headers()["retry-after"], "7");
        let v = json_of(r).await;
        assert_eq!(v["type"], "error");
        assert_eq!(v["error"]["type"], "rate_limit_error");
        for path in [CHAT, RESPONSES] {
            let r = post(&server, path, &json!({"stream": true})).await;
            assert_eq!(r.status(), 429);
            let v = json_of(r).await;
            assert!(v["error"]["message"].is_string(), "{v}");
        }
        let v = whole(&server, MESSAGES, messages_body("after", false)).await;
        assert_eq!(v["content"][0]["text"], "after");
        assert_eq!(server.throttled(), 3);
    }
}

#[tokio::test]
async fn streams_are_recorded_as_answered_with_delays_and_latency() {
    for server in servers(|| {
        echo()
            .latency(Duration::from_millis(30))
            .respond(|r| Reply::text(r.prompt.clone()).after(Duration::from_millis(20)))
    }) {
        let started = Instant::now();
        let s = stream(&server, RESPONSES, responses_body("x", true)).await;
        assert!(started.elapsed() >= Duration::from_millis(50));
        assert_eq!(names(&s.frames).last(), Some(&"response.completed"));
        // On record before the client could see the end.
        assert_eq!(server.stats().answered, 1);
        settle(&server).await;
        assert_eq!(server.spans()[0].status, 200);
    }
}

#[tokio::test]
async fn raw_events_are_sent_as_given() {
    for server in
        servers(|| TestServer::builder().respond(|_| Reply::raw_events("data: {oops\n\n")))
    {
        let s = stream(&server, CHAT, chat_body("x", true)).await;
        assert_eq!(s.content_type, "text/event-stream");
        assert_eq!(s.frames.len(), 1);
        assert_eq!(s.frames[0].data, "{oops");
    }
}
