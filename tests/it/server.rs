//! A loopback OpenAI-compatible server for tests (oha's pattern: a real server
//! that reports what it received).
//!
//! Each [`TestServer`] listens on `127.0.0.1:0` with its own single-threaded
//! tokio runtime on a background thread, so tests run in parallel without
//! sharing ports or executors. It answers `POST /v1/chat/completions` with
//! whatever the test's responder returns for each request (a reply computed
//! from the prompt, an HTTP error with or without `Retry-After`, a malformed
//! body, or no answer at all), after a latency the test may change while a
//! run is going. It records every request body, the prompt (message contents
//! joined by newlines), the time each request was in flight, and the most
//! requests it ever had in flight at once.

#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use serde_json::{json, Value};

/// What the server does with one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with an OpenAI chat-completion body whose content is this text.
    Text(String),
    /// An HTTP error status with a body and an optional `Retry-After` header.
    Status {
        code: u16,
        body: String,
        retry_after: Option<String>,
    },
    /// A 200 whose body is exactly this text (for malformed replies).
    Raw(String),
    /// Never answer.
    Hang,
    /// Wait this long (on top of the server's latency), then do the inner reply.
    Delayed(Duration, Box<Reply>),
}

impl Reply {
    pub fn text(s: impl Into<String>) -> Reply {
        Reply::Text(s.into())
    }

    pub fn status(code: u16, body: impl Into<String>) -> Reply {
        Reply::Status {
            code,
            body: body.into(),
            retry_after: None,
        }
    }

    pub fn retry_after(code: u16, after: &str) -> Reply {
        Reply::Status {
            code,
            body: json!({"error": {"message": "slow down", "type": "rate_limit"}}).to_string(),
            retry_after: Some(after.to_owned()),
        }
    }

    pub fn raw(body: impl Into<String>) -> Reply {
        Reply::Raw(body.into())
    }

    /// This reply after an extra delay.
    pub fn after(self, delay: Duration) -> Reply {
        Reply::Delayed(delay, Box::new(self))
    }
}

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// 0-based arrival order over the server's life.
    pub index: usize,
    /// Message contents joined by newlines.
    pub prompt: String,
    /// The whole JSON body (`Value::Null` if it was not JSON).
    pub body: Value,
    pub authorization: Option<String>,
    /// 1 for the first request with this prompt, 2 for the second, ...
    pub attempt: usize,
    /// When it arrived, from the server's start.
    pub at: Duration,
}

/// When a request started and ended (only requests that were answered).
#[derive(Debug, Clone)]
pub struct Span {
    pub prompt: String,
    pub start: Duration,
    pub end: Duration,
}

type Responder = Arc<dyn Fn(&Received) -> Reply + Send + Sync>;

struct Shared {
    responder: Responder,
    throttle_first: usize,
    throttle_after: String,
    latency_us: AtomicU64,
    started: Instant,
    next_index: AtomicUsize,
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    received: Mutex<Vec<Received>>,
    attempts: Mutex<HashMap<String, usize>>,
    spans: Mutex<Vec<Span>>,
}

/// Builds a [`TestServer`].
pub struct Builder {
    responder: Responder,
    latency: Duration,
    throttle_first: usize,
    throttle_after: String,
}

impl Builder {
    /// Fixed latency for every answer (changeable later with [`TestServer::set_latency`]).
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// Answer with a text computed from the prompt.
    pub fn reply(mut self, f: impl Fn(&str) -> String + Send + Sync + 'static) -> Self {
        self.responder = Arc::new(move |r: &Received| Reply::Text(f(&r.prompt)));
        self
    }

    /// Answer with whatever `f` returns for each request.
    pub fn respond(mut self, f: impl Fn(&Received) -> Reply + Send + Sync + 'static) -> Self {
        self.responder = Arc::new(f);
        self
    }

    /// Answer 429 with `Retry-After: after` to the first `n` requests, whatever they are.
    pub fn throttle_first(mut self, n: usize, after: &str) -> Self {
        self.throttle_first = n;
        self.throttle_after = after.to_owned();
        self
    }

    pub fn start(self) -> TestServer {
        let shared = Arc::new(Shared {
            responder: self.responder,
            throttle_first: self.throttle_first,
            throttle_after: self.throttle_after,
            latency_us: AtomicU64::new(self.latency.as_micros() as u64),
            started: Instant::now(),
            next_index: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            received: Mutex::new(Vec::new()),
            attempts: Mutex::new(HashMap::new()),
            spans: Mutex::new(Vec::new()),
        });
        let app = Router::new()
            .route("/v1/chat/completions", post(chat))
            .with_state(Arc::clone(&shared));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("test-server".into())
            .spawn(move || {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("test server runtime");
                runtime.block_on(async move {
                    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                        .await
                        .expect("bind the test server");
                    addr_tx
                        .send(listener.local_addr().expect("local address"))
                        .expect("report the address");
                    tokio::select! {
                        _ = axum::serve(listener, app) => {}
                        _ = stop_rx => {}
                    }
                });
                // Dropping the runtime cancels requests still hanging.
            })
            .expect("spawn the test server thread");
        let addr = addr_rx.recv().expect("test server address");
        TestServer {
            addr,
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }
}

/// A running test server; stops when dropped.
pub struct TestServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TestServer {
    /// A server that answers "ok" at once; configure it with the builder's methods.
    pub fn builder() -> Builder {
        Builder {
            responder: Arc::new(|_: &Received| Reply::text("ok")),
            latency: Duration::ZERO,
            throttle_first: 0,
            throttle_after: String::new(),
        }
    }

    /// A server answering every prompt with the prompt itself.
    pub fn echo() -> TestServer {
        TestServer::builder().reply(|p| p.to_owned()).start()
    }

    /// The `base_url` for specs: `http://127.0.0.1:PORT/v1`.
    pub fn url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// Changes the latency of answers from now on.
    pub fn set_latency(&self, latency: Duration) {
        self.shared
            .latency_us
            .store(latency.as_micros() as u64, Ordering::SeqCst);
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Received> {
        self.shared.received.lock().unwrap().clone()
    }

    /// The prompts received so far, in arrival order.
    pub fn prompts(&self) -> Vec<String> {
        self.requests().into_iter().map(|r| r.prompt).collect()
    }

    /// The prompts received so far, sorted.
    pub fn sorted_prompts(&self) -> Vec<String> {
        let mut p = self.prompts();
        p.sort();
        p
    }

    /// Requests received so far.
    pub fn count(&self) -> usize {
        self.shared.received.lock().unwrap().len()
    }

    /// Requests being handled now.
    pub fn in_flight(&self) -> usize {
        self.shared.in_flight.load(Ordering::SeqCst)
    }

    /// The most requests ever handled at once.
    pub fn peak_in_flight(&self) -> usize {
        self.shared.peak.load(Ordering::SeqCst)
    }

    /// Start and end of every answered request.
    pub fn spans(&self) -> Vec<Span> {
        self.shared.spans.lock().unwrap().clone()
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Keeps the in-flight count right however a request ends (including when
/// the client gives up and the connection drops the handler).
struct InFlight<'a>(&'a Shared);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

async fn chat(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> Response {
    let now = shared.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    shared.peak.fetch_max(now, Ordering::SeqCst);
    let _guard = InFlight(&shared);
    let start = shared.started.elapsed();

    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let prompt = body
        .get("messages")
        .and_then(Value::as_array)
        .map(|ms| {
            ms.iter()
                .filter_map(|m| m.get("content").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("\n")
        })
        .unwrap_or_default();
    let attempt = {
        let mut attempts = shared.attempts.lock().unwrap();
        let n = attempts.entry(prompt.clone()).or_insert(0);
        *n += 1;
        *n
    };
    let received = {
        let mut log = shared.received.lock().unwrap();
        let r = Received {
            index: shared.next_index.fetch_add(1, Ordering::SeqCst),
            prompt: prompt.clone(),
            body,
            authorization: headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            attempt,
            at: start,
        };
        log.push(r.clone());
        r
    };

    let mut reply = if received.index < shared.throttle_first {
        Reply::retry_after(429, &shared.throttle_after)
    } else {
        (shared.responder)(&received)
    };
    let mut delay = Duration::from_micros(shared.latency_us.load(Ordering::SeqCst));
    while let Reply::Delayed(extra, inner) = reply {
        delay += extra;
        reply = *inner;
    }
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let response = match reply {
        Reply::Hang => std::future::pending::<Response>().await,
        Reply::Text(content) => {
            let body = json!({
                "id": format!("chatcmpl-{}", received.index),
                "object": "chat.completion",
                "model": received.body.get("model").cloned().unwrap_or(Value::Null),
                "choices": [{
                    "index": 0,
                    "message": {"role": "assistant", "content": content},
                    "finish_reason": "stop"
                }],
                "usage": {
                    "prompt_tokens": prompt.split_whitespace().count(),
                    "completion_tokens": content.split_whitespace().count(),
                    "total_tokens": prompt.split_whitespace().count() + content.split_whitespace().count()
                }
            });
            json_response(StatusCode::OK, body.to_string(), None)
        }
        Reply::Status {
            code,
            body,
            retry_after,
        } => json_response(
            StatusCode::from_u16(code).expect("valid status"),
            body,
            retry_after,
        ),
        Reply::Raw(body) => json_response(StatusCode::OK, body, None),
        Reply::Delayed(..) => unreachable!("delays are unwrapped above"),
    };
    shared.spans.lock().unwrap().push(Span {
        prompt,
        start,
        end: shared.started.elapsed(),
    });
    response
}

fn json_response(status: StatusCode, body: String, retry_after: Option<String>) -> Response {
    let mut builder = Response::builder()
        .status(status)
        .header("content-type", "application/json");
    if let Some(after) = retry_after {
        builder = builder.header("retry-after", after);
    }
    builder
        .body(Body::from(body))
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
