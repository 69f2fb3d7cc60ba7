//! A loopback model server for tests (oha's pattern: a real server that
//! reports what it received), speaking OpenAI chat completions, Anthropic
//! Messages and the OpenAI Responses API.
//!
//! Each [`TestServer`] listens on `127.0.0.1:0` with its own single-threaded
//! tokio runtime on a background thread, so tests run in parallel without
//! sharing ports or executors. It answers `POST /v1/chat/completions`,
//! `POST /v1/messages` and `POST /v1/responses` with whatever the test's
//! responder returns for each request (a reply computed from the prompt, an
//! HTTP error with or without `Retry-After`, a malformed body, a broken
//! stream, or no answer at all), after a latency the test may change while a
//! run is going. It records every request (path, headers, body, prompt), the
//! time each request was in flight, and the most requests it ever had in
//! flight at once. `GET /stats` reports its counters as JSON (`requests`,
//! `in_flight`, `peak_in_flight`, `throttled`, `faults`, `peak_in_service`,
//! `answered`, `answered_prompts`): see [`Stats`]. [`TestServer::url`] is
//! the OpenAI base URL (`.../v1`), [`TestServer::root_url`] Anthropic's
//! (without `/v1`).
//!
//! The prompt a responder sees is the request's texts joined by newlines:
//! - chat: each message's `content` that is a string (as it always was);
//! - messages: the top-level `system` (a string or a list of text blocks),
//!   then each message's `content` (a string or a list of text blocks);
//! - responses: `instructions`, then `input` (a string, or a list of items
//!   whose `content` is a string or a list of parts with `text`).
//!
//! A [`Reply::Text`] is rendered in the shape of the path it was asked on,
//! and as server-sent events if the request had `"stream": true`:
//! - chat: a `chat.completion`; streamed, `data: <chunk>` frames: the role
//!   (`delta: {"role":"assistant","content":""}`), one `delta.content` per
//!   piece, `finish_reason: "stop"` with an empty delta, then only if
//!   `stream_options.include_usage` a chunk with `choices: []` and the usage
//!   (and `usage: null` on every other chunk, as OpenAI does), then
//!   `data: [DONE]`.
//! - messages: a `message`; streamed, `event: <type>` + `data:` frames:
//!   `message_start` (empty content, `output_tokens: 1`),
//!   `content_block_start`, `ping`, one `content_block_delta` (`text_delta`)
//!   per piece, `content_block_stop`, `message_delta` (`end_turn`, the
//!   output tokens), `message_stop`.
//! - responses: a `response` whose output is a reasoning item (empty
//!   summary) and a message; streamed, `event: <type>` + `data:` frames with
//!   `sequence_number` 0, 1, ...: `response.created`, `response.in_progress`
//!   (both `in_progress`, no output), `response.output_item.added` and
//!   `.done` (the reasoning item, output 0), `response.output_item.added`
//!   (the message, output 1), `response.content_part.added`, one
//!   `response.output_text.delta` per piece, `response.output_text.done`,
//!   `response.content_part.done`, `response.output_item.done`,
//!   `response.completed` (the whole response, usage included).
//!
//! The pieces are the content cut after each word's trailing whitespace
//! (one piece a word; they join back to the content). Ids are
//! `chatcmpl-N`, `msg_N`, `resp_N`, `rs_N` with N the request's index.
//!
//! Token counts, with P the whitespace words of the prompt, C those of the
//! content, and K, R, W the builder's [`Builder::cached_tokens`],
//! [`Builder::reasoning_tokens`] and [`Builder::cache_write_tokens`] (0 by
//! default):
//! - chat: `prompt_tokens` P, `completion_tokens` C + R, `total_tokens`
//!   P + C + R, `prompt_tokens_details.cached_tokens` K,
//!   `completion_tokens_details.reasoning_tokens` R;
//! - messages: `input_tokens` P − K (at least 0: Anthropic's leaves out the
//!   cache), `cache_read_input_tokens` K, `cache_creation_input_tokens` W,
//!   `output_tokens` C + R (1 in `message_start`);
//! - responses: `input_tokens` P, `input_tokens_details.cached_tokens` K,
//!   `output_tokens` C + R, `output_tokens_details.reasoning_tokens` R,
//!   `total_tokens` P + C + R.
//!
//! **Stream timing** ([`Builder::stream_timing`]): the headers and every
//! frame before the text go at once (after the usual latency and service);
//! the first piece `first_content` later; the other pieces and the end
//! evenly after it, so piece i of n is due at
//! `first + (total − first) × i / n` and the frames after the text at
//! `total`. Frames due at once go in one flushed write, the others each in
//! its own at its time (to a millisecond or so). Without it, all at once.
//!
//! **Stream faults** (for a request with `"stream": true`; one without gets
//! the whole [`Reply::Text`] of the content, the fault being in the stream):
//! - [`Reply::stream_cut`]: the frames before the text and the first `k`
//!   pieces (all of them if `k` is more), then the body ends cleanly without
//!   what follows the text (no `[DONE]`, `message_stop` or
//!   `response.completed`);
//!   [`Reply::stream_reset`] drops the connection instead (a TCP reset on
//!   the raw server; axum ends the connection without the last chunk);
//! - [`Reply::stream_error`]: after `k` pieces an error frame, then the body
//!   ends: chat `data: {"error":{"message","type":kind,"param":null,
//!   "code":null}}`; messages `event: error` with
//!   `{"type":"error","error":{"type":kind,"message"}}`; responses
//!   `event: error` with `{"type":"error","sequence_number","code":kind,
//!   "message","param":null}`. The message is `Overloaded` for
//!   `overloaded_error`, `Rate limited` for `rate_limit_error`,
//!   `Internal server error` for `api_error`, `Stream failed` otherwise;
//! - [`Reply::stream_stall`]: after `k` pieces nothing more, and no end,
//!   until the client hangs up.
//!
//! The cut, the error frame and the reset come when piece `k + 1` would
//! have. A stream is recorded as answered (200) when its body ends cleanly
//! (whole, cut or error), and counts in flight until then.
//!
//! Errors with headers: [`Reply::StatusWithHeaders`] (or
//! [`Reply::with_header`] on a status); [`Reply::anthropic_error`] is
//! Anthropic's error body, [`Reply::anthropic_rate_limited`] its 429 with
//! `retry-after` and `anthropic-ratelimit-requests-reset` (RFC 3339).
//! [`Reply::raw_events`] is a `text/event-stream` body as given.
//!
//! Server behaviours on top of the responder, all set on the [`Builder`]:
//! - **capacity** ([`Builder::capacity`]): at most K requests are served at a
//!   time; the others queue first come, first served, so latency grows with
//!   load beyond K, like a vLLM or TGI server. Service time is a base latency
//!   times a random factor in `[1 - jitter, 1 + jitter]`, or with
//!   [`Builder::capacity_lognormal`] times `exp(sigma × N(0, 1))` (median
//!   `base`, a long right tail, as real generation times have).
//! - **serial** ([`Builder::serial`]): capacity 1 with a fixed service time,
//!   first come, first served: llama.cpp on a CPU, one request at a time.
//!   Latency is the service time alone and grows by one service time per
//!   request waiting ahead; throughput is flat whatever the load.
//! - **sharing** ([`Builder::sharing`]): one processor whose time is shared
//!   equally by every request at it (processor sharing): `n` requests each
//!   progress at `1/n` of the speed, so all of them slow down together
//!   instead of queueing; throughput is flat whatever the load.
//! - **a cold first request** ([`Builder::cold`]): the first request to enter
//!   service takes the given time instead (model load, caches warming), as
//!   llama.cpp's does.
//! - **batching** ([`Builder::batching`]): a GPU server batching requests
//!   (vLLM, TGI). At most B are in service at once and the rest queue first
//!   come, first served; a request that enters service with `n` in service
//!   (itself included) takes `base × (1 + (max_factor − 1) × (n − 1) / (B − 1))`,
//!   from `base` alone to `max_factor × base` in a full batch. Throughput
//!   keeps rising until the batch is full while latency rises mildly.
//!   [`Builder::batching_lognormal`] adds `exp(sigma × N(0, 1))` noise.
//!   `GET /stats` reports `peak_in_service` (the fullest batch) next to
//!   `peak_in_flight` (which counts the queue too).
//! - **requests per minute** ([`Builder::requests_per_minute`]): a token bucket
//!   of `n / 60` tokens a second with a burst of about one second's worth;
//!   over the limit the answer is 429 with `Retry-After` (whole seconds, at
//!   least 1), like a hosted API.
//! - **requests per fixed window** ([`Builder::requests_per_window`]): `n`
//!   requests per window of fixed length, windows counted from the first
//!   request, like LiteLLM's proxy; over the quota the answer is 429 with the
//!   whole seconds until the window resets (at least 1). Refused requests do
//!   not count against the quota.
//! - **throttling for a while** ([`Builder::throttle_first`],
//!   [`Builder::throttle_during`]): 429s to the first requests, or for a time.
//!   On `/v1/messages` every 429 the server makes itself has Anthropic's
//!   body (`rate_limit_error`); on the other paths OpenAI's.
//! - **the header a 429 carries its wait in** ([`Builder::retry_header`]):
//!   `Retry-After` unless told otherwise; LiteLLM's proxy, for one, sends only
//!   `llm_provider-retry-after: 60`. It applies to every 429 the server makes
//!   itself (the throttles and limiters above), not to a responder's replies.
//! - **faults** ([`Builder::faults`]): per request, with given probabilities, a
//!   5xx, a hang, a connection reset mid-body, a body trickling one byte per
//!   100 ms, a 100 MB body, a body that is not JSON, one without `choices`, one
//!   with the wrong types. Which request gets which fault is a pure function of
//!   the seed, the prompt and the attempt number ([`Faults::decide`]), so a
//!   test can work out what each sample went through. The bodies are whole
//!   ones in the shape of the path asked (a streamed request too); the 500
//!   and the malformed ones are chat-shaped.
//!
//! Replies that break HTTP itself (a reset mid-body, a trickle, a huge body)
//! are written by a small hand-written HTTP/1.1 server on a raw
//! [`tokio::net::TcpListener`]; [`Builder::raw_http`] selects it (faults do so
//! by themselves). Otherwise axum serves. Both serve the three paths and
//! every stream: the raw server writes a stream's frames onto its socket at
//! their times, axum's body is a stream of them that sleeps until each is due.
//!
//! One file per concern: [`Builder`] and [`TestServer`] here, the replies and
//! faults in `replies`, the APIs' prompts and bodies in `apis`, the pacing
//! and writing of streams in `stream`, the service shapes (capacity, serial,
//! batching) in `shapes`, the 429 limits in `limits`, the path of a request
//! in `shared`, and the two HTTP servers in `http` (axum) and `raw_http`.
//!
//! Its one test-only dependency is `futures-util` (for axum's streamed body),
//! a dev-dependency, which examples may use too: `examples/test_server.rs`
//! includes the module with `#[path]` to serve the same servers to the
//! benchmark script.

#![allow(dead_code)]

mod apis;
mod http;
mod limits;
mod raw_http;
mod replies;
mod rng;
mod shapes;
mod shared;
mod stream;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::serve::ListenerExt;
use axum::Router;
use serde_json::Value;
use tokio::net::TcpListener;

// The tests and the example each use a part of what is re-exported.
#[allow(unused_imports)]
pub use limits::RETRY_AFTER;
#[allow(unused_imports)]
pub use replies::{rfc3339_in, Fault, Faults, Reply, HUGE_BYTES, TRICKLE_INTERVAL};
#[allow(unused_imports)]
pub use rng::XorShift;
#[allow(unused_imports)]
pub use shapes::Spread;

use apis::{Api, Tokens};
use http::{complete, stats};
use raw_http::serve_raw;
use shapes::ServiceShape;
use shared::Shared;

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// 0-based arrival order over the server's life.
    pub index: usize,
    /// The request's texts joined by newlines (which texts depends on the
    /// API: see the module doc).
    pub prompt: String,
    /// The whole JSON body (`Value::Null` if it was not JSON).
    pub body: Value,
    pub authorization: Option<String>,
    /// 1 for the first request with this prompt, 2 for the second, ...
    pub attempt: usize,
    /// When it arrived, from the server's start.
    pub at: Duration,
    /// The path posted to, e.g. `/v1/messages`.
    pub path: String,
    /// Every request header, names lowercased, in the order received.
    pub headers: Vec<(String, String)>,
}

impl Received {
    /// The value of header `name` (lowercase), if it was sent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// True if the request asked for a stream (`"stream": true`).
    pub fn streamed(&self) -> bool {
        self.body.get("stream").and_then(Value::as_bool) == Some(true)
    }
}

/// When a request started and ended (only requests that were answered in
/// full: a text, a status or a raw body).
#[derive(Debug, Clone)]
pub struct Span {
    pub prompt: String,
    pub start: Duration,
    pub end: Duration,
    /// The HTTP status sent.
    pub status: u16,
}

/// The server's counters, as `GET /stats` reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    pub requests: usize,
    pub in_flight: usize,
    pub peak_in_flight: usize,
    /// 429 answers sent.
    pub throttled: usize,
    /// Faults injected by [`Builder::faults`].
    pub faults: usize,
    /// The most requests ever in service at once at a capacity, serial or
    /// batching server (0 for the others): `peak_in_flight` less the queue.
    pub peak_in_service: usize,
    /// 2xx answers sent.
    pub answered: usize,
    /// Distinct prompts among the 2xx answers: `answered` less this is how
    /// many prompts were answered more than once.
    pub answered_prompts: usize,
}

type Responder = Arc<dyn Fn(&Received) -> Reply + Send + Sync>;

/// Builds a [`TestServer`].
pub struct Builder {
    responder: Responder,
    latency: Duration,
    latency_range: Option<(Duration, Duration)>,
    throttle_first: usize,
    throttle_after: String,
    throttle_during: Option<(Duration, String)>,
    capacity: Option<ServiceShape>,
    per_minute: Option<(u32, f64)>,
    per_window: Option<(u32, Duration)>,
    retry_header: String,
    faults: Option<Faults>,
    seed: u64,
    raw: bool,
    port: u16,
    tokens: Tokens,
    stream_timing: Option<(Duration, Duration)>,
}

impl Builder {
    /// Fixed latency for every answer (changeable later with [`TestServer::set_latency`]).
    pub fn latency(mut self, latency: Duration) -> Self {
        self.latency = latency;
        self
    }

    /// A random extra latency, uniform in `[lo, hi]`, for every answer.
    pub fn latency_between(mut self, lo: Duration, hi: Duration) -> Self {
        self.latency_range = Some((lo, hi));
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

    /// Answer 429 with `Retry-After: after` (or the [`Builder::retry_header`])
    /// to the first `n` requests, whatever they are.
    pub fn throttle_first(mut self, n: usize, after: &str) -> Self {
        self.throttle_first = n;
        self.throttle_after = after.to_owned();
        self
    }

    /// Answer 429 with `Retry-After: after` (or the [`Builder::retry_header`])
    /// to every request that arrives within `window` of the first one.
    pub fn throttle_during(mut self, window: Duration, after: &str) -> Self {
        self.throttle_during = Some((window, after.to_owned()));
        self
    }

    /// Serve at most `k` requests at a time, each for `base` times a random
    /// factor in `[1 - jitter, 1 + jitter]`; the others wait in line.
    pub fn capacity(self, k: usize, base: Duration, jitter: f64) -> Self {
        self.service(k, base, Spread::Uniform(jitter.clamp(0.0, 1.0)), 1.0)
    }

    /// Serve at most `k` requests at a time, each for `base × exp(sigma × N(0, 1))`
    /// (median `base`); the others wait in line.
    pub fn capacity_lognormal(self, k: usize, base: Duration, sigma: f64) -> Self {
        self.service(k, base, Spread::Lognormal(sigma.max(0.0)), 1.0)
    }

    /// One request at a time, each for exactly `service`, the others in line
    /// first come, first served (llama.cpp on a CPU): `capacity(1, service, 0.0)`.
    pub fn serial(self, service: Duration) -> Self {
        self.capacity(1, service, 0.0)
    }

    /// One processor shared equally by every request at it, each needing
    /// `service` alone (times `exp(sigma × N(0, 1))`).
    pub fn sharing(mut self, service: Duration, sigma: f64) -> Self {
        self = self.service(1, service, Spread::Lognormal(sigma.max(0.0)), 1.0);
        if let Some(shape) = &mut self.capacity {
            shape.sharing = true;
        }
        self
    }

    /// The first request to enter service takes `service` instead of its
    /// shape's time (set after the shape).
    pub fn cold(mut self, service: Duration) -> Self {
        if let Some(shape) = &mut self.capacity {
            shape.cold = Some(service);
        }
        self
    }

    /// A batching server: at most `batch` requests in service, the others in
    /// line; one entering service with `n` in service (itself included) takes
    /// `base × (1 + (max_factor − 1) × (n − 1) / (batch − 1))`.
    pub fn batching(self, batch: usize, base: Duration, max_factor: f64) -> Self {
        self.batching_lognormal(batch, base, max_factor, 0.0)
    }

    /// [`Builder::batching`] with each service time also multiplied by
    /// `exp(sigma × N(0, 1))`.
    pub fn batching_lognormal(
        self,
        batch: usize,
        base: Duration,
        max_factor: f64,
        sigma: f64,
    ) -> Self {
        self.service(
            batch,
            base,
            Spread::Lognormal(sigma.max(0.0)),
            max_factor.max(0.0),
        )
    }

    fn service(mut self, slots: usize, base: Duration, spread: Spread, max_factor: f64) -> Self {
        self.capacity = Some(ServiceShape {
            slots: slots.max(1),
            base,
            spread,
            max_factor,
            sharing: false,
            cold: None,
        });
        self
    }

    /// Accept `n` requests a minute (a burst of one second's worth, plus one
    /// for clock jitter); answer the rest 429 with `Retry-After`.
    pub fn requests_per_minute(self, n: u32) -> Self {
        let burst = (f64::from(n) / 60.0).ceil() + 1.0;
        self.requests_per_minute_with_burst(n, burst)
    }

    /// [`Builder::requests_per_minute`] with an explicit burst.
    pub fn requests_per_minute_with_burst(mut self, n: u32, burst: f64) -> Self {
        self.per_minute = Some((n.max(1), burst.max(1.0)));
        self
    }

    /// Accept `n` requests per fixed window of `window`, windows counted from
    /// the first request (LiteLLM's proxy limits this way); answer the rest
    /// 429 with the whole seconds until the window resets, at least 1.
    /// Refused requests do not count. Combines with the other limits: a
    /// request must pass every one.
    pub fn requests_per_window(mut self, n: u32, window: Duration) -> Self {
        self.per_window = Some((n, window.max(Duration::from_millis(1))));
        self
    }

    /// Put the wait of every 429 the server makes itself (throttle_first,
    /// throttle_during, the per-minute and per-window limits) in header
    /// `name` instead of `Retry-After`, as LiteLLM's proxy does with
    /// `llm_provider-retry-after`. A responder's own replies keep `Retry-After`.
    pub fn retry_header(mut self, name: &str) -> Self {
        self.retry_header = name.to_ascii_lowercase();
        self
    }

    /// Report `n` cached prompt tokens in every usage (default 0).
    pub fn cached_tokens(mut self, n: u64) -> Self {
        self.tokens.cached = n;
        self
    }

    /// Report `n` reasoning tokens in every usage, counted in the output
    /// tokens too (default 0).
    pub fn reasoning_tokens(mut self, n: u64) -> Self {
        self.tokens.reasoning = n;
        self
    }

    /// Report `n` tokens written to the cache in every Anthropic usage
    /// (`cache_creation_input_tokens`; default 0).
    pub fn cache_write_tokens(mut self, n: u64) -> Self {
        self.tokens.cache_write = n;
        self
    }

    /// Pace streamed replies: the headers and the frames before the text at
    /// once, the first piece of text `first_content` later, the rest evenly
    /// so the last frame goes out `total` after the headers. Without it a
    /// stream is written all at once.
    pub fn stream_timing(mut self, first_content: Duration, total: Duration) -> Self {
        self.stream_timing = Some((first_content, total.max(first_content)));
        self
    }

    /// Inject faults (selects the raw HTTP server).
    pub fn faults(mut self, faults: Faults) -> Self {
        self.faults = Some(faults);
        self.raw = true;
        self
    }

    /// Seed of the server's random latencies.
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// Serve with the hand-written HTTP/1.1 server instead of axum (needed for
    /// replies that break HTTP: resets, trickles, huge bodies).
    pub fn raw_http(mut self) -> Self {
        self.raw = true;
        self
    }

    /// Listen on this port (0, the default, picks a free one).
    pub fn port(mut self, port: u16) -> Self {
        self.port = port;
        self
    }

    pub fn start(self) -> TestServer {
        let (raw, port) = (self.raw, self.port);
        let shared = Arc::new(Shared::new(self));
        let serving = Arc::clone(&shared);
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
                    let listener = TcpListener::bind(("127.0.0.1", port))
                        .await
                        .expect("bind the test server");
                    addr_tx
                        .send(listener.local_addr().expect("local address"))
                        .expect("report the address");
                    if raw {
                        tokio::select! {
                            _ = serve_raw(listener, serving) => {}
                            _ = stop_rx => {}
                        }
                    } else {
                        let app = Api::PATHS
                            .iter()
                            .fold(Router::new(), |app, path| app.route(path, post(complete)))
                            .route("/stats", get(stats))
                            .with_state(serving);
                        // Streamed frames go out as they come, not held back
                        // by Nagle's algorithm until an ACK (40 ms delayed).
                        let listener = listener.tap_io(|tcp| {
                            let _ = tcp.set_nodelay(true);
                        });
                        tokio::select! {
                            _ = axum::serve(listener, app) => {}
                            _ = stop_rx => {}
                        }
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
            latency_range: None,
            throttle_first: 0,
            throttle_after: String::new(),
            throttle_during: None,
            capacity: None,
            per_minute: None,
            per_window: None,
            retry_header: RETRY_AFTER.to_owned(),
            faults: None,
            seed: 0x5EED,
            raw: false,
            port: 0,
            tokens: Tokens::default(),
            stream_timing: None,
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

    /// The server's root, `http://127.0.0.1:PORT`, for clients that add
    /// `/v1` themselves (Anthropic's base URL has no `/v1`).
    pub fn root_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
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

    /// 429 answers sent so far.
    pub fn throttled(&self) -> usize {
        self.shared.throttled.load(Ordering::SeqCst)
    }

    /// Start and end of every answered request.
    pub fn spans(&self) -> Vec<Span> {
        self.shared.spans.lock().unwrap().clone()
    }

    /// The counters `GET /stats` reports.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// The faults this server injects, if any.
    pub fn faults(&self) -> Option<Faults> {
        self.shared.faults
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
