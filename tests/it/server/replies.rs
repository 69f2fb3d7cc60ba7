//! What the server answers: the [`Reply`] a responder gives, and the faults
//! it can inject in its place. The bodies are in `apis`.

use std::time::{Duration, SystemTime};

use serde_json::json;

use super::apis::anthropic_error_body;
use super::rng::splitmix;

/// What the server does with one request.
#[derive(Debug, Clone)]
pub enum Reply {
    /// 200 with this text as the reply's content, in the shape of the API
    /// asked (chat completion, message, response), streamed as server-sent
    /// events if the request said `"stream": true`.
    Text(String),
    /// An HTTP error status with a body and an optional `Retry-After` header.
    Status {
        code: u16,
        body: String,
        retry_after: Option<String>,
    },
    /// An HTTP status with a body and these headers, sent as given.
    StatusWithHeaders {
        code: u16,
        body: String,
        headers: Vec<(String, String)>,
    },
    /// A 200 whose body is exactly this text (for malformed replies).
    Raw(String),
    /// A 200 `text/event-stream` whose body is exactly this text (for
    /// malformed streams).
    RawEvents(String),
    /// Never answer (until the client gives up and closes the connection).
    Hang,
    /// Wait this long (on top of the server's latency), then do the inner reply.
    Delayed(Duration, Box<Reply>),
    /// Headers announcing a whole reply with this content, half of its body,
    /// then the connection is dropped (reset). Needs [`Builder::raw_http`].
    ResetMidBody(String),
    /// A 200 reply with this content whose body is written one byte per
    /// `interval`. Needs [`Builder::raw_http`].
    Trickle { content: String, interval: Duration },
    /// A 200 whose body is `bytes` long: the start of a JSON reply padded out.
    /// Declared with Content-Length, or sent chunked (so only reading it tells
    /// how big it is). Needs [`Builder::raw_http`].
    Huge { bytes: usize, chunked: bool },
    /// A stream of this content cut after its control frames and `pieces`
    /// pieces of text, without the terminator: the body ends cleanly, or with
    /// `reset` the connection is dropped (a TCP reset on the raw server; axum
    /// ends the connection without the last chunk).
    StreamCut {
        content: String,
        pieces: usize,
        reset: bool,
    },
    /// A stream of this content with an error event of type `kind` (e.g.
    /// `overloaded_error`, `api_error`) after `pieces` pieces; then the
    /// body ends.
    StreamError {
        content: String,
        pieces: usize,
        kind: String,
    },
    /// A stream of this content that sends nothing after `pieces` pieces and
    /// never ends (until the client hangs up).
    StreamStall { content: String, pieces: usize },
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

    /// An HTTP status with a body and these headers.
    pub fn status_with_headers(
        code: u16,
        body: impl Into<String>,
        headers: &[(&str, &str)],
    ) -> Reply {
        Reply::StatusWithHeaders {
            code,
            body: body.into(),
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_ascii_lowercase(), (*v).to_owned()))
                .collect(),
        }
    }

    /// Anthropic's error body, `{"type":"error","error":{"type","message"}}`,
    /// with status `code` (529 `overloaded_error`, 429 `rate_limit_error`,
    /// 500 `api_error`, ...); add headers with [`Reply::with_header`].
    pub fn anthropic_error(code: u16, error_type: &str, message: &str) -> Reply {
        Reply::status_with_headers(code, anthropic_error_body(error_type, message), &[])
    }

    /// Anthropic's 429: `rate_limit_error`, `retry-after` in whole seconds
    /// (at least 1) and `anthropic-ratelimit-requests-reset` at now + `after`
    /// (RFC 3339).
    pub fn anthropic_rate_limited(after: Duration) -> Reply {
        let seconds = (after.as_secs_f64().ceil() as u64).max(1).to_string();
        Reply::anthropic_error(429, "rate_limit_error", "Rate limited")
            .with_header("retry-after", &seconds)
            .with_header("anthropic-ratelimit-requests-reset", &rfc3339_in(after))
    }

    /// This status reply with one more header (a `Status` becomes a
    /// `StatusWithHeaders`, its `retry_after` a `retry-after` header).
    pub fn with_header(self, name: &str, value: &str) -> Reply {
        let header = (name.to_ascii_lowercase(), value.to_owned());
        match self {
            Reply::Status {
                code,
                body,
                retry_after,
            } => {
                let mut headers: Vec<_> = retry_after
                    .map(|a| ("retry-after".to_owned(), a))
                    .into_iter()
                    .collect();
                headers.push(header);
                Reply::StatusWithHeaders {
                    code,
                    body,
                    headers,
                }
            }
            Reply::StatusWithHeaders {
                code,
                body,
                mut headers,
            } => {
                headers.push(header);
                Reply::StatusWithHeaders {
                    code,
                    body,
                    headers,
                }
            }
            Reply::Delayed(d, inner) => Reply::Delayed(d, Box::new(inner.with_header(name, value))),
            other => panic!("headers go on status replies, not on {other:?}"),
        }
    }

    pub fn raw(body: impl Into<String>) -> Reply {
        Reply::Raw(body.into())
    }

    /// A 200 `text/event-stream` whose body is exactly `body`.
    pub fn raw_events(body: impl Into<String>) -> Reply {
        Reply::RawEvents(body.into())
    }

    /// A stream cut cleanly after `pieces` pieces of text (no terminator).
    pub fn stream_cut(content: impl Into<String>, pieces: usize) -> Reply {
        Reply::StreamCut {
            content: content.into(),
            pieces,
            reset: false,
        }
    }

    /// A stream whose connection is dropped after `pieces` pieces of text.
    pub fn stream_reset(content: impl Into<String>, pieces: usize) -> Reply {
        Reply::StreamCut {
            content: content.into(),
            pieces,
            reset: true,
        }
    }

    /// A stream with an error event of type `kind` after `pieces` pieces.
    pub fn stream_error(content: impl Into<String>, pieces: usize, kind: &str) -> Reply {
        Reply::StreamError {
            content: content.into(),
            pieces,
            kind: kind.to_owned(),
        }
    }

    /// A stream that stalls for good after `pieces` pieces.
    pub fn stream_stall(content: impl Into<String>, pieces: usize) -> Reply {
        Reply::StreamStall {
            content: content.into(),
            pieces,
        }
    }

    /// This reply after an extra delay.
    pub fn after(self, delay: Duration) -> Reply {
        Reply::Delayed(delay, Box::new(self))
    }

    /// True for replies only the raw HTTP server can write.
    pub(super) fn needs_raw(&self) -> bool {
        match self {
            Reply::ResetMidBody(_) | Reply::Trickle { .. } | Reply::Huge { .. } => true,
            Reply::Delayed(_, inner) => inner.needs_raw(),
            _ => false,
        }
    }

    /// The content of a text or stream reply.
    pub(super) fn content(&self) -> Option<&str> {
        match self {
            Reply::Text(content)
            | Reply::StreamCut { content, .. }
            | Reply::StreamError { content, .. }
            | Reply::StreamStall { content, .. } => Some(content),
            _ => None,
        }
    }

    /// What a request that did not ask for a stream gets: a stream fault is
    /// its whole text (the fault is in the stream only).
    pub(super) fn unstreamed(self) -> Reply {
        match self {
            Reply::StreamCut { content, .. }
            | Reply::StreamError { content, .. }
            | Reply::StreamStall { content, .. } => Reply::Text(content),
            other => other,
        }
    }
}

/// The RFC 3339 time `after` from now, to the second (Anthropic's
/// `anthropic-ratelimit-*-reset` headers).
pub fn rfc3339_in(after: Duration) -> String {
    humantime::format_rfc3339_seconds(SystemTime::now() + after).to_string()
}

/// A fault the server can inject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Fault {
    /// HTTP 500.
    ServerError,
    /// No answer at all.
    Hang,
    /// Half a body, then the connection is dropped.
    Reset,
    /// A body written one byte per 100 ms.
    Trickle,
    /// A 100 MB body.
    Huge,
    /// A 200 whose body is HTML.
    NotJson,
    /// A 200 JSON body without `choices`.
    NoChoices,
    /// A 200 JSON body whose content is a number.
    WrongTypes,
}

/// Size of the [`Fault::Huge`] body.
pub const HUGE_BYTES: usize = 100 * 1024 * 1024;
/// Pace of the [`Fault::Trickle`] body.
pub const TRICKLE_INTERVAL: Duration = Duration::from_millis(100);

impl Fault {
    pub const ALL: [Fault; 8] = [
        Fault::ServerError,
        Fault::Hang,
        Fault::Reset,
        Fault::Trickle,
        Fault::Huge,
        Fault::NotJson,
        Fault::NoChoices,
        Fault::WrongTypes,
    ];

    /// The reply that injects this fault in place of a reply with `content`.
    /// `roll` picks between variants (a huge body declared or chunked).
    pub fn reply(self, content: String, roll: u64) -> Reply {
        match self {
            Fault::ServerError => Reply::status(
                500,
                json!({"error": {"message": "injected fault: internal error"}}).to_string(),
            ),
            Fault::Hang => Reply::Hang,
            Fault::Reset => Reply::ResetMidBody(content),
            Fault::Trickle => Reply::Trickle {
                content,
                interval: TRICKLE_INTERVAL,
            },
            Fault::Huge => Reply::Huge {
                bytes: HUGE_BYTES,
                chunked: roll & 1 == 1,
            },
            Fault::NotJson => Reply::raw("<html><body>502 Bad Gateway</body></html>"),
            Fault::NoChoices => Reply::raw(
                json!({"id": "chatcmpl-x", "object": "chat.completion", "model": "m"}).to_string(),
            ),
            Fault::WrongTypes => Reply::raw(
                json!({"choices": [{"message": {"role": "assistant", "content": 42}}], "usage": {"completion_tokens": "many"}})
                    .to_string(),
            ),
        }
    }
}

/// Probabilities of each fault per request; the rest are answered normally.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Faults {
    pub seed: u64,
    pub server_error: f64,
    pub hang: f64,
    pub reset: f64,
    pub trickle: f64,
    pub huge: f64,
    pub not_json: f64,
    pub no_choices: f64,
    pub wrong_types: f64,
}

impl Faults {
    /// No faults, with this seed; set the rates with struct update syntax.
    pub fn seeded(seed: u64) -> Faults {
        Faults {
            seed,
            ..Faults::default()
        }
    }

    fn rates(&self) -> [(f64, Fault); 8] {
        [
            (self.server_error, Fault::ServerError),
            (self.hang, Fault::Hang),
            (self.reset, Fault::Reset),
            (self.trickle, Fault::Trickle),
            (self.huge, Fault::Huge),
            (self.not_json, Fault::NotJson),
            (self.no_choices, Fault::NoChoices),
            (self.wrong_types, Fault::WrongTypes),
        ]
    }

    /// The roll for attempt `attempt` (1, 2, ...) of `prompt`: a pure function
    /// of the seed, the prompt and the attempt.
    pub fn roll(&self, prompt: &str, attempt: usize) -> u64 {
        // FNV-1a over the prompt, mixed with the seed and the attempt.
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in prompt.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        splitmix(h ^ splitmix(self.seed) ^ splitmix(attempt as u64).rotate_left(17))
    }

    /// The fault attempt `attempt` of `prompt` gets, if any.
    pub fn decide(&self, prompt: &str, attempt: usize) -> Option<Fault> {
        let unit = (self.roll(prompt, attempt) >> 11) as f64 / (1u64 << 53) as f64;
        let mut acc = 0.0;
        for (p, fault) in self.rates() {
            acc += p;
            if unit < acc {
                return Some(fault);
            }
        }
        None
    }
}

/// Block `n` (of `len` bytes) of a huge body: the opening of a reply,
/// `{"choices":[{"message":{"role":"assistant","content":"`, padded with `a`.
pub(super) fn huge_block(n: usize, len: usize) -> Vec<u8> {
    const HEAD: &[u8] = br#"{"choices":[{"message":{"role":"assistant","content":""#;
    let mut block = vec![b'a'; len];
    if n == 0 {
        let k = HEAD.len().min(len);
        block[..k].copy_from_slice(&HEAD[..k]);
    }
    block
}
