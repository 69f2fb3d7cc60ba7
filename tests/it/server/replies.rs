//! What the server answers: the [`Reply`] a responder gives, the faults it
//! can inject in its place, and the bodies of OpenAI-shaped replies.

use std::time::Duration;

use serde_json::{json, Value};

use super::rng::splitmix;
use super::Received;

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

    /// True for replies only the raw HTTP server can write.
    pub(super) fn needs_raw(&self) -> bool {
        match self {
            Reply::ResetMidBody(_) | Reply::Trickle { .. } | Reply::Huge { .. } => true,
            Reply::Delayed(_, inner) => inner.needs_raw(),
            _ => false,
        }
    }
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

/// The OpenAI chat-completion body for a reply with `content`.
pub(super) fn completion_body(received: &Received, content: &str) -> String {
    let prompt_tokens = received.prompt.split_whitespace().count();
    let completion_tokens = content.split_whitespace().count();
    json!({
        "id": format!("chatcmpl-{}", received.index),
        "object": "chat.completion",
        "model": received.body.get("model").cloned().unwrap_or(Value::Null),
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": content},
            "finish_reason": "stop"
        }],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens
        }
    })
    .to_string()
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
