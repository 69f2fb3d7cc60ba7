//! The built-in mock model: an OpenAI-compatible server on loopback.
//!
//! It answers with the first keyword rule that matches the prompt after the
//! spec's latency, and reports the requests it served and the most it ever had
//! in flight at `GET /stats`, so runs and benchmarks can check the window.
//! `GET /v1/models` lists the one model it serves, as clients probe it first.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Serialize;
use serde_json::{json, Value};

use super::openai::OpenAi;
use super::Provider;

/// `provider: mock`: served by dotevals on loopback for the run, and
/// reached through the OpenAI API like any server.
pub const PROVIDER: Provider = Provider {
    name: "mock",
    hosted: None,
    api: |options| Arc::new(OpenAi::new(options)),
    streams: true,
    reserved: &[],
};

/// The built-in mock model: keyword rules and a fixed latency.
#[derive(Debug, Clone, PartialEq)]
pub struct MockSpec {
    pub latency: Duration,
    pub rules: Vec<MockRule>,
}

/// The first rule whose words occur in the prompt gives the reply; no words always matches.
#[derive(Debug, Clone, PartialEq)]
pub struct MockRule {
    /// Lower-cased words.
    pub when_contains: Vec<String>,
    pub reply: String,
}

impl MockSpec {
    /// The reply to `prompt` (case-insensitive word match, first rule wins).
    pub fn reply(&self, prompt: &str) -> &str {
        let lower = prompt.to_lowercase();
        self.rules
            .iter()
            .find(|r| {
                r.when_contains.is_empty()
                    || r.when_contains.iter().any(|w| lower.contains(w.as_str()))
            })
            .map_or("", |r| r.reply.as_str())
    }
}

/// Counters the server keeps.
#[derive(Debug, Default, Serialize)]
pub struct Stats {
    /// Chat requests answered or in progress.
    pub requests: AtomicU64,
    /// Requests being served now.
    pub in_flight: AtomicUsize,
    /// The most ever served at once.
    pub peak_in_flight: AtomicUsize,
}

struct Shared {
    spec: MockSpec,
    /// The model name `/v1/models` lists.
    model: String,
    stats: Stats,
}

/// A running mock server; stops when dropped.
pub struct MockServer {
    addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl MockServer {
    /// Starts serving `spec` on `addr` (port 0 picks a free port).
    pub async fn start(spec: MockSpec, addr: SocketAddr) -> std::io::Result<MockServer> {
        MockServer::start_named(spec, addr, "mock").await
    }

    /// Starts serving `spec` as model `model` (the name `/v1/models` lists).
    pub async fn start_named(
        spec: MockSpec,
        addr: SocketAddr,
        model: &str,
    ) -> std::io::Result<MockServer> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            spec,
            model: model.to_owned(),
            stats: Stats::default(),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .route("/chat/completions", post(chat))
            .route("/v1/models", get(models))
            .route("/models", get(models))
            .route("/stats", get(stats))
            .with_state(shared);
        let task = tokio::spawn(async move {
            // Serving ends only when the task is aborted.
            let _ = axum::serve(listener, app).await;
        });
        Ok(MockServer { addr, task })
    }

    /// The `base_url` clients should use.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Waits until the server stops (it only stops when aborted).
    pub async fn wait(&mut self) {
        let _ = (&mut self.task).await;
    }
}

impl Drop for MockServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Decrements in-flight when a request ends, however it ends.
struct InFlight<'a>(&'a Stats);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn chat(State(shared): State<Arc<Shared>>, body: Bytes) -> Response {
    let stats = &shared.stats;
    stats.requests.fetch_add(1, Ordering::Relaxed);
    let now = stats.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    stats.peak_in_flight.fetch_max(now, Ordering::SeqCst);
    let _guard = InFlight(stats);

    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return error(StatusCode::BAD_REQUEST, "request body is not JSON");
    };
    let Some(messages) = request.get("messages").and_then(Value::as_array) else {
        return error(StatusCode::BAD_REQUEST, "request has no `messages` array");
    };
    let prompt: Vec<&str> = messages
        .iter()
        .filter_map(|m| m.get("content")?.as_str())
        .collect();
    let prompt = prompt.join("\n");
    let reply = shared.spec.reply(&prompt).to_owned();
    if !shared.spec.latency.is_zero() {
        tokio::time::sleep(shared.spec.latency).await;
    }
    let model = request
        .get("model")
        .and_then(Value::as_str)
        .unwrap_or("mock");
    let (prompt_tokens, completion_tokens) = (
        prompt.split_whitespace().count(),
        reply.split_whitespace().count(),
    );
    let usage = json!({
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens
    });
    if request.get("stream") == Some(&Value::Bool(true)) {
        let with_usage =
            request.pointer("/stream_options/include_usage") == Some(&Value::Bool(true));
        return stream(model, &reply, with_usage.then_some(usage));
    }
    Json(json!({
        "id": "mock",
        "object": "chat.completion",
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": reply}, "finish_reason": "stop"}],
        "usage": usage
    }))
    .into_response()
}

/// The reply as a chat-completion event stream, written at once: the role
/// chunk, the text, the end, the usage when asked for, `[DONE]`.
fn stream(model: &str, reply: &str, usage: Option<Value>) -> Response {
    let chunk = |choices: Value, usage: Option<&Value>| {
        let mut c = json!({"id": "mock", "object": "chat.completion.chunk", "model": model, "choices": choices});
        if let Some(u) = usage {
            c["usage"] = u.clone();
        }
        format!("data: {c}\n\n")
    };
    let mut body = chunk(
        json!([{"index": 0, "delta": {"role": "assistant", "content": ""}}]),
        None,
    );
    body += &chunk(json!([{"index": 0, "delta": {"content": reply}}]), None);
    body += &chunk(
        json!([{"index": 0, "delta": {}, "finish_reason": "stop"}]),
        None,
    );
    if let Some(u) = &usage {
        body += &chunk(json!([]), Some(u));
    }
    body += "data: [DONE]\n\n";
    (
        [(axum::http::header::CONTENT_TYPE, "text/event-stream")],
        body,
    )
        .into_response()
}

async fn models(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({
        "object": "list",
        "data": [{"id": shared.model, "object": "model", "created": 0, "owned_by": "dotevals"}],
    }))
}

async fn stats(State(shared): State<Arc<Shared>>) -> Json<Value> {
    let s = &shared.stats;
    Json(json!({
        "requests": s.requests.load(Ordering::Relaxed),
        "in_flight": s.in_flight.load(Ordering::SeqCst),
        "peak_in_flight": s.peak_in_flight.load(Ordering::SeqCst),
    }))
}

fn error(status: StatusCode, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {"message": message, "type": "invalid_request_error"}})),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::openai::OpenAi;
    use crate::model::{ApiOptions, Endpoint, Message, ModelClient, Role};

    /// The mock serving `rules` after `latency`, and what a client of it
    /// (streamed or not) gets for each of `prompts`.
    async fn ask(
        latency: Duration,
        rules: Vec<MockRule>,
        stream: bool,
        prompts: &[&str],
    ) -> Vec<crate::model::Completion> {
        let spec = MockSpec { latency, rules };
        let server = MockServer::start(spec, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let client = ModelClient::new(Endpoint {
            api: std::sync::Arc::new(OpenAi::new(&ApiOptions {
                stream,
                ..ApiOptions::default()
            })),
            base_url: &server.base_url(),
            model: "mock",
            api_key: None,
            params: Default::default(),
            timeouts: crate::model::Timeouts::all(Duration::from_secs(5)),
            max_connections: 4,
        })
        .unwrap();
        let mut out = Vec::new();
        for prompt in prompts {
            let message = [Message {
                role: Role::User,
                content: (*prompt).into(),
            }];
            let request = client
                .request(&message, &minijinja::Value::UNDEFINED)
                .unwrap();
            out.push(client.complete(&request).await.unwrap());
        }
        out
    }

    #[tokio::test]
    async fn serves_rules_through_the_real_client() {
        let rules = vec![
            MockRule {
                when_contains: vec!["great".into()],
                reply: "positive".into(),
            },
            MockRule {
                when_contains: vec![],
                reply: "neutral".into(),
            },
        ];
        let c = ask(
            Duration::from_millis(10),
            rules,
            false,
            &["A GREAT film", "fine"],
        )
        .await;
        assert_eq!(c[0].content, "positive");
        assert!(c[0].latency >= Duration::from_millis(10));
        assert_eq!(c[0].usage.completion, Some(1));
        assert_eq!(c[1].content, "neutral");
    }

    #[tokio::test]
    async fn a_streamed_request_is_answered_as_events() {
        let rules = vec![MockRule {
            when_contains: vec![],
            reply: "neutral".into(),
        }];
        let c = &ask(Duration::from_millis(50), rules, true, &["two words"]).await[0];
        assert_eq!(c.content, "neutral");
        assert_eq!((c.usage.prompt, c.usage.completion), (Some(2), Some(1)));
        assert!(c
            .first_token
            .is_some_and(|t| t >= Duration::from_millis(50)));
    }
}
