//! The model client: OpenAI chat completions over HTTP, nothing else.
//!
//! One pooled `reqwest::Client` keeps connections alive across samples; each
//! attempt has a total deadline (send to full body) and a capped body. Failures
//! become typed [`ClientError`]s the runner records and the retry loop reads.
//! The client knows nothing of strategies; the mock in [`mock`] is reached
//! through this same code over loopback.

pub mod mock;

use std::time::{Duration, Instant, SystemTime};

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::concurrency::retry::Retryable;
use crate::concurrency::Outcome;
use crate::secrets::Secrets;

/// Replies larger than this are cut off and recorded as an error.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// How much of an error body is kept in the record.
const BODY_EXCERPT: usize = 300;

/// One chat message.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Message {
    pub role: String,
    pub content: String,
}

/// A model reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub content: String,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
    /// From sending the request to reading the whole body.
    pub latency: Duration,
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientError {
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    #[error("connection failed: {0}")]
    Connect(String),
    #[error("HTTP {status}: {body}")]
    Status {
        status: u16,
        body: String,
        retry_after: Option<Duration>,
    },
    #[error("malformed response: {0}")]
    Malformed(String),
    #[error("response larger than {} MiB", MAX_BODY_BYTES / (1024 * 1024))]
    TooLarge,
}

impl ClientError {
    /// A short stable name for grouping: timeout, http_429, http_500, connection, malformed.
    pub fn kind(&self) -> String {
        match self {
            ClientError::Timeout(_) => "timeout".into(),
            ClientError::Connect(_) => "connection".into(),
            ClientError::Status { status, .. } => format!("http_{status}"),
            ClientError::Malformed(_) | ClientError::TooLarge => "malformed".into(),
        }
    }

    /// How a concurrency strategy should read this failure.
    pub fn outcome(&self) -> Outcome {
        match self {
            ClientError::Status {
                status: 429 | 503,
                retry_after,
                ..
            } => Outcome::Throttled {
                retry_after: *retry_after,
            },
            ClientError::Timeout(_) => Outcome::Timeout,
            _ => Outcome::Failed,
        }
    }
}

impl Retryable for ClientError {
    fn is_retryable(&self) -> bool {
        match self {
            ClientError::Timeout(_) | ClientError::Connect(_) => true,
            ClientError::Status { status, .. } => {
                *status == 408 || *status == 429 || *status >= 500
            }
            ClientError::Malformed(_) | ClientError::TooLarge => false,
        }
    }

    fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// Calls one chat-completions endpoint.
#[derive(Clone)]
pub struct ModelClient {
    http: reqwest::Client,
    url: String,
    model: String,
    params: std::sync::Arc<Map<String, Value>>,
    timeout: Duration,
    /// The API key and any other credential, scrubbed from error excerpts.
    secrets: Secrets,
}

/// An encoded request, cheap to clone for retries.
#[derive(Debug, Clone)]
pub struct RequestBody(bytes::Bytes);

/// The request body: `model`, `messages`, then the spec's `params` as-is.
#[derive(Serialize)]
struct Request<'a> {
    model: &'a str,
    messages: &'a [Message],
    #[serde(flatten)]
    params: &'a Map<String, Value>,
}

#[derive(Deserialize)]
struct Response {
    choices: Option<Vec<Choice>>,
    usage: Option<Usage>,
}

#[derive(Deserialize)]
struct Choice {
    message: Option<ReplyMessage>,
}

#[derive(Deserialize)]
struct ReplyMessage {
    content: Option<String>,
}

#[derive(Deserialize)]
struct Usage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
}

impl ModelClient {
    /// A client for `{base_url}/chat/completions`. `api_key`, when given, is sent
    /// as a bearer token and is never logged or stored.
    pub fn new(
        base_url: &str,
        model: &str,
        api_key: Option<&str>,
        params: Map<String, Value>,
        timeout: Duration,
        max_connections: usize,
    ) -> Result<ModelClient, String> {
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        let mut secrets = Secrets::default();
        if let Some(key) = api_key {
            secrets.add(key);
            let mut value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
                "the API key contains characters that cannot be sent in a header".to_owned()
            })?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("dotevals/", env!("CARGO_PKG_VERSION")))
            .tcp_nodelay(true)
            .pool_max_idle_per_host(max_connections.max(1))
            .pool_idle_timeout(Duration::from_secs(90))
            .connect_timeout(timeout.min(Duration::from_secs(30)))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(ModelClient {
            http,
            url: format!("{}/chat/completions", base_url.trim_end_matches('/')),
            model: model.to_owned(),
            params: std::sync::Arc::new(params),
            timeout,
            secrets,
        })
    }

    /// What this client scrubs: the API key and any credential added.
    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// Also scrubs `more` (credentials from the spec) from error excerpts.
    pub fn with_secrets(mut self, more: &Secrets) -> Self {
        self.secrets.extend(more);
        self
    }

    /// The request body for `messages`: built once per sample, sent by every attempt.
    pub fn request(&self, messages: &[Message]) -> Result<RequestBody, ClientError> {
        serde_json::to_vec(&Request {
            model: &self.model,
            messages,
            params: &self.params,
        })
        .map(|body| RequestBody(body.into()))
        .map_err(|e| ClientError::Malformed(format!("cannot encode request: {e}")))
    }

    /// One attempt: send `body`, read the whole reply within the timeout.
    pub async fn complete(&self, body: &RequestBody) -> Result<Completion, ClientError> {
        let body = body.0.clone();
        let started = Instant::now();
        let attempt = async {
            let response = self
                .http
                .post(&self.url)
                .body(body)
                .send()
                .await
                .map_err(|e| from_reqwest(e, self.timeout))?;
            let status = response.status();
            let retry_after = retry_after(response.headers());
            let bytes = read_capped(response, self.timeout).await?;
            Ok::<_, ClientError>((status, retry_after, bytes))
        };
        let (status, retry_after, bytes) = tokio::time::timeout(self.timeout, attempt)
            .await
            .map_err(|_| ClientError::Timeout(self.timeout))??;
        let latency = started.elapsed();
        if !status.is_success() {
            return Err(ClientError::Status {
                status: status.as_u16(),
                body: excerpt(&bytes, &self.secrets),
                retry_after,
            });
        }
        parse_reply(&bytes, latency, &self.secrets)
    }
}

/// Reads the body, refusing more than [`MAX_BODY_BYTES`].
async fn read_capped(
    mut response: reqwest::Response,
    timeout: Duration,
) -> Result<Vec<u8>, ClientError> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BODY_BYTES as u64)
    {
        return Err(ClientError::TooLarge);
    }
    let mut body =
        Vec::with_capacity(response.content_length().unwrap_or(1024).min(1 << 20) as usize);
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| from_reqwest(e, timeout))?
    {
        if body.len() + chunk.len() > MAX_BODY_BYTES {
            return Err(ClientError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

fn parse_reply(
    bytes: &[u8],
    latency: Duration,
    secrets: &Secrets,
) -> Result<Completion, ClientError> {
    let reply: Response = serde_json::from_slice(bytes).map_err(|e| {
        ClientError::Malformed(format!("{e}; body starts: {}", excerpt(bytes, secrets)))
    })?;
    let choice = reply
        .choices
        .and_then(|c| c.into_iter().next())
        .ok_or_else(|| {
            ClientError::Malformed(format!(
                "no `choices` in reply; body starts: {}",
                excerpt(bytes, secrets)
            ))
        })?;
    let content = choice
        .message
        .and_then(|m| m.content)
        .ok_or_else(|| ClientError::Malformed("`choices[0].message.content` is missing".into()))?;
    let (prompt_tokens, completion_tokens) = reply
        .usage
        .map_or((None, None), |u| (u.prompt_tokens, u.completion_tokens));
    Ok(Completion {
        content,
        prompt_tokens,
        completion_tokens,
        latency,
    })
}

fn from_reqwest(e: reqwest::Error, timeout: Duration) -> ClientError {
    if e.is_timeout() {
        return ClientError::Timeout(timeout);
    }
    // The URL is ours and carries no secret; the source chain says what failed.
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        text = format!("{text}: {s}");
        source = s.source();
    }
    // Everything else reqwest reports while sending or reading is the
    // transport failing (refused, reset, closed mid-body); bad content is ours
    // to judge, in `parse_reply`.
    ClientError::Connect(text)
}

/// How long the server asks us to wait: `Retry-After` (seconds or an HTTP date),
/// else the `x-ratelimit-reset-*` of an exhausted quota (`1s`, `6m0s`, `20ms`).
fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    retry_after_header(headers).or_else(|| ratelimit_reset(headers))
}

fn retry_after_header(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(secs) = value.parse::<f64>() {
        return seconds(secs);
    }
    let when = httpdate(value)?;
    Some(
        when.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

fn ratelimit_reset(headers: &HeaderMap) -> Option<Duration> {
    let text = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let reset = |kind: &str| {
        let value = text(&format!("x-ratelimit-reset-{kind}"))?;
        match value.parse::<f64>() {
            Ok(secs) => seconds(secs),
            Err(_) => humantime::parse_duration(value).ok(),
        }
    };
    let kinds = ["requests", "tokens"];
    let exhausted = kinds
        .iter()
        .filter(|k| text(&format!("x-ratelimit-remaining-{k}")) == Some("0"));
    exhausted.filter_map(|k| reset(k)).max()
}

/// Seconds from a server as a duration; `None` for negative, NaN or absurdly large.
fn seconds(secs: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(secs).ok()
}

fn httpdate(value: &str) -> Option<SystemTime> {
    // "Wed, 21 Oct 2015 07:28:00 GMT" is RFC 2822-like; humantime reads RFC 3339.
    let parts: Vec<&str> = value.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts[..] else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = MONTHS.iter().position(|x| *x == month)? + 1;
    humantime::parse_rfc3339(&format!("{year}-{m:02}-{:0>2}T{time}Z", day)).ok()
}

/// The first bytes of a body, as text, for error records.
/// The first characters of a body, as text, for error records. Secrets are
/// scrubbed from the whole body first, so a cut can never leave half a key.
fn excerpt(bytes: &[u8], secrets: &Secrets) -> String {
    let text = String::from_utf8_lossy(bytes);
    let text = secrets.scrub(&text);
    let mut out: String = text
        .chars()
        .filter(|c| !c.is_control() || *c == ' ')
        .take(BODY_EXCERPT)
        .collect();
    if text.chars().nth(BODY_EXCERPT).is_some() {
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_openai_reply() {
        let body = br#"{"choices":[{"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":5,"completion_tokens":1}}"#;
        let c = parse_reply(body, Duration::ZERO, &Secrets::default()).unwrap();
        assert_eq!(
            (c.content.as_str(), c.prompt_tokens, c.completion_tokens),
            ("hi", Some(5), Some(1))
        );
    }

    #[test]
    fn malformed_replies_are_errors() {
        assert!(matches!(
            parse_reply(b"not json", Duration::ZERO, &Secrets::default()),
            Err(ClientError::Malformed(_))
        ));
        assert!(matches!(
            parse_reply(b"{}", Duration::ZERO, &Secrets::default()),
            Err(ClientError::Malformed(_))
        ));
        assert!(matches!(
            parse_reply(
                br#"{"choices":[{"message":{}}]}"#,
                Duration::ZERO,
                &Secrets::default()
            ),
            Err(ClientError::Malformed(_))
        ));
        assert!(matches!(
            parse_reply(br#"{"choices":"x"}"#, Duration::ZERO, &Secrets::default()),
            Err(ClientError::Malformed(_))
        ));
    }

    #[test]
    fn reads_retry_after() {
        let mut h = HeaderMap::new();
        h.insert(RETRY_AFTER, HeaderValue::from_static("2"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        let mut h = HeaderMap::new();
        h.insert(
            "x-ratelimit-remaining-requests",
            HeaderValue::from_static("12"),
        );
        h.insert("x-ratelimit-reset-requests", HeaderValue::from_static("1s"));
        h.insert(
            "x-ratelimit-remaining-tokens",
            HeaderValue::from_static("0"),
        );
        h.insert("x-ratelimit-reset-tokens", HeaderValue::from_static("6m0s"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(360)));
        // A quota with requests left says nothing about when to retry.
        h.insert(
            "x-ratelimit-remaining-tokens",
            HeaderValue::from_static("5"),
        );
        assert_eq!(retry_after(&h), None);
        h.insert(RETRY_AFTER, HeaderValue::from_static("1e20"));
        assert_eq!(retry_after(&h), None);
        let mut h = HeaderMap::new();
        h.insert(
            RETRY_AFTER,
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
        assert!(httpdate("Wed, 21 Oct 2015 07:28:00 GMT").is_some());
    }

    #[test]
    fn classifies_errors() {
        let e = ClientError::Status {
            status: 429,
            body: String::new(),
            retry_after: None,
        };
        assert!(e.is_retryable());
        assert_eq!(e.kind(), "http_429");
        let e = ClientError::Status {
            status: 400,
            body: String::new(),
            retry_after: None,
        };
        assert!(!e.is_retryable());
    }
}
