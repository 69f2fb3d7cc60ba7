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
    /// The server's certificate was refused: retrying cannot help.
    #[error("connection failed: {0}")]
    Certificate(String),
    #[error("HTTP {status}: {body}")]
    Status {
        status: u16,
        body: String,
        retry_after: Option<Duration>,
    },
    /// A 3xx: redirects are not followed (a POST would become a GET, and the
    /// reply of some other server would be taken for the model's).
    #[error("HTTP {status}: redirected to {}; redirects are not followed, set `base_url` to the address that answers", location.as_deref().unwrap_or("an unnamed address (no Location header)"))]
    Redirect {
        status: u16,
        location: Option<String>,
    },
    /// A 2xx whose body is `{"error": ...}`: the server failed after all.
    #[error("the server answered with an error in a successful reply: {0}")]
    ErrorReply(String),
    #[error("malformed response: {0}")]
    Malformed(String),
    #[error("response larger than {} MiB", MAX_BODY_BYTES / (1024 * 1024))]
    TooLarge,
}

impl ClientError {
    /// A short stable name for grouping: timeout, http_429, http_500, connection,
    /// api_error, malformed.
    pub fn kind(&self) -> String {
        match self {
            ClientError::Timeout(_) => "timeout".into(),
            ClientError::Connect(_) | ClientError::Certificate(_) => "connection".into(),
            ClientError::Status { status, .. } | ClientError::Redirect { status, .. } => {
                format!("http_{status}")
            }
            ClientError::ErrorReply(_) => "api_error".into(),
            ClientError::Malformed(_) | ClientError::TooLarge => "malformed".into(),
        }
    }

    /// How a concurrency strategy should read this failure.
    pub fn outcome(&self) -> Outcome {
        match self {
            ClientError::Status {
                status: 429 | 503, ..
            } => Outcome::Throttled,
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
            // A garbled or error body is most often a proxy's or a replica's
            // passing trouble: worth another attempt, like a 5xx.
            ClientError::ErrorReply(_) | ClientError::Malformed(_) => true,
            // Another 16 MiB would most likely be the same 16 MiB.
            ClientError::Redirect { .. } | ClientError::Certificate(_) | ClientError::TooLarge => {
                false
            }
        }
    }

    fn is_throttling(&self) -> bool {
        matches!(self.outcome(), Outcome::Throttled)
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

/// A reply, read leniently: only what is used is looked at, and each part is
/// judged on its own (a bad `usage` does not spoil a good answer).
#[derive(Deserialize)]
struct Response {
    choices: Option<Value>,
    usage: Option<Value>,
    error: Option<Value>,
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
        // reqwest sends a `user:password@` in the URL as a Basic credential.
        secrets.take_from_url(base_url);
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
            // A redirected POST comes back as a GET to wherever the server
            // says: its answer is not the model's. Reported, never followed.
            .redirect(reqwest::redirect::Policy::none())
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
            if status.is_redirection() {
                return Err(redirect(&response, &self.secrets));
            }
            let retry_after = retry_hint(status.as_u16(), response.headers());
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

/// A 3xx as an error naming where it pointed (made absolute, scrubbed).
fn redirect(response: &reqwest::Response, secrets: &Secrets) -> ClientError {
    let location = response
        .headers()
        .get(reqwest::header::LOCATION)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
        .map(|l| response.url().join(&l).map_or(l, |u| u.to_string()));
    ClientError::Redirect {
        status: response.status().as_u16(),
        location: location.map(|l| excerpt(l.as_bytes(), secrets)),
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
        .as_ref()
        .and_then(Value::as_array)
        .and_then(|c| c.first());
    let Some(choice) = choice else {
        if let Some(error) = reply.error.as_ref().filter(|e| !e.is_null()) {
            let message = match error {
                Value::String(s) => s.clone(),
                Value::Object(o) => match o.get("message") {
                    Some(Value::String(s)) => s.clone(),
                    _ => error.to_string(),
                },
                other => other.to_string(),
            };
            return Err(ClientError::ErrorReply(excerpt(
                message.as_bytes(),
                secrets,
            )));
        }
        return Err(ClientError::Malformed(format!(
            "no `choices` in reply; body starts: {}",
            excerpt(bytes, secrets)
        )));
    };
    let content = choice
        .get("message")
        .and_then(|m| m.get("content"))
        .and_then(content_text)
        .ok_or_else(|| {
            ClientError::Malformed(format!(
                "`choices[0].message.content` is missing or not text; body starts: {}",
                excerpt(bytes, secrets)
            ))
        })?;
    let count = |name: &str| {
        reply
            .usage
            .as_ref()
            .and_then(|u| u.get(name))
            .and_then(token_count)
    };
    let (prompt_tokens, completion_tokens) = (count("prompt_tokens"), count("completion_tokens"));
    Ok(Completion {
        content,
        prompt_tokens,
        completion_tokens,
        latency,
    })
}

/// A message's content: a string, or a list of parts whose text parts are
/// joined (`[{"type": "text", "text": "..."}]`; parts of other types, such as
/// reasoning, are left out). `None` for anything else, or parts without text.
fn content_text(content: &Value) -> Option<String> {
    match content {
        Value::String(s) => Some(s.clone()),
        Value::Array(parts) => {
            let texts: Vec<&str> = parts
                .iter()
                .filter_map(|part| match part {
                    Value::String(s) => Some(s.as_str()),
                    Value::Object(o)
                        if o.get("type")
                            .is_none_or(|t| t == "text" || t == "output_text") =>
                    {
                        o.get("text").and_then(Value::as_str)
                    }
                    _ => None,
                })
                .collect();
            (parts.is_empty() || !texts.is_empty()).then(|| texts.concat())
        }
        _ => None,
    }
}

/// A token count from `usage`: a whole, non-negative number. Anything else
/// (negative, fractional, text) is ignored rather than spoiling the reply.
fn token_count(value: &Value) -> Option<u64> {
    value.as_u64().or_else(|| {
        value
            .as_f64()
            .filter(|f| *f >= 0.0 && f.fract() == 0.0 && *f < 9.0e15)
            .map(|f| f as u64)
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
    // rustls: "invalid peer certificate: UnknownIssuer" (or Expired, NotValidForName...).
    if text.contains("invalid peer certificate") {
        return ClientError::Certificate(format!("{text}{}", certificate_hint()));
    }
    // Everything else reqwest reports while sending or reading is the
    // transport failing (refused, reset, closed mid-body); bad content is ours
    // to judge, in `parse_reply`.
    ClientError::Connect(text)
}

/// What to do about a refused server certificate: where trusted authorities
/// come from, and whether `SSL_CERT_FILE` / `SSL_CERT_DIR` point anywhere.
fn certificate_hint() -> String {
    let mut hint = String::from(
        " (the server's certificate is not trusted: authorities come from the system's store \
         and the built-in Mozilla list; for a private CA set SSL_CERT_FILE to its PEM file \
         or SSL_CERT_DIR to a folder of them",
    );
    for var in ["SSL_CERT_FILE", "SSL_CERT_DIR"] {
        if let Some(path) = std::env::var_os(var) {
            let path = std::path::PathBuf::from(path);
            let state = match std::fs::metadata(&path) {
                Ok(_) => "",
                Err(_) => ", which cannot be read",
            };
            hint.push_str(&format!("; {var} is {}{state}", path.display()));
        }
    }
    hint.push(')');
    hint
}

/// The longest wait a server's hint may ask for. A longer one (a date years
/// ahead, `Retry-After: 1e9`) is taken for garbage and ignored, like a
/// negative or unparsable one, so the next header in line is read instead.
const MAX_HINT: Duration = Duration::from_secs(24 * 60 * 60);

/// The Anthropic quotas, each with `anthropic-ratelimit-{kind}-remaining` and
/// `anthropic-ratelimit-{kind}-reset` (an RFC 3339 time).
const ANTHROPIC_QUOTAS: [&str; 4] = ["requests", "tokens", "input-tokens", "output-tokens"];

/// How long a throttling server (429 or 503) asks us to wait; `None` for any
/// other status, or when it does not say. The headers are read most specific
/// first, and the first that gives a usable value wins:
///
/// 1. `retry-after-ms`: milliseconds, maybe fractional (OpenAI, Azure).
/// 2. `Retry-After`: seconds, or an HTTP date (RFC 9110).
/// 3. `llm_provider-retry-after`: seconds (LiteLLM's proxy sends only this).
/// 4. The reset time of every quota the answer marks exhausted, the latest of
///    them: `x-ratelimit-reset-requests` / `x-ratelimit-reset-tokens` (`1s`,
///    `6m0s`, `20ms` or seconds) when `x-ratelimit-remaining-*` is 0, and
///    `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-reset`
///    (RFC 3339 times) when the matching `...-remaining` is 0.
/// 5. On a 429 that marks no quota exhausted, the soonest Anthropic reset: we
///    cannot tell which quota was hit, and the soonest costs at most one more 429.
///
/// Negative, NaN, unparsable and absurd values (over a day) are skipped.
/// Times in the past mean "now" (zero).
fn retry_hint(status: u16, headers: &HeaderMap) -> Option<Duration> {
    retry_hint_at(status, headers, SystemTime::now())
}

/// [`retry_hint`] with the clock passed in, for dates.
fn retry_hint_at(status: u16, headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if status != 429 && status != 503 {
        return None;
    }
    let text = |name: &str| header_text(headers, name);
    text("retry-after-ms")
        .and_then(|v| v.parse::<f64>().ok())
        .and_then(|ms| seconds(ms / 1000.0))
        .or_else(|| text(RETRY_AFTER.as_str()).and_then(|v| seconds_or_httpdate(v, now)))
        .or_else(|| {
            text("llm_provider-retry-after")
                .and_then(|v| v.parse::<f64>().ok())
                .and_then(seconds)
        })
        .or_else(|| exhausted_quota_reset(headers, now))
        .or_else(|| {
            (status == 429)
                .then(|| anthropic_resets(headers, now).min())
                .flatten()
        })
}

/// A header's value as trimmed text, if it is there and is text.
fn header_text<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

fn seconds_or_httpdate(value: &str, now: SystemTime) -> Option<Duration> {
    if let Ok(secs) = value.parse::<f64>() {
        return seconds(secs);
    }
    until(httpdate(value)?, now)
}

/// The latest reset among the quotas this answer marks exhausted (remaining 0).
fn exhausted_quota_reset(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: String| header_text(headers, &name);
    let openai = ["requests", "tokens"].into_iter().filter_map(|kind| {
        if text(format!("x-ratelimit-remaining-{kind}")) != Some("0") {
            return None;
        }
        let value = text(format!("x-ratelimit-reset-{kind}"))?;
        match value.parse::<f64>() {
            Ok(secs) => seconds(secs),
            Err(_) => go_duration(value).filter(|d| *d <= MAX_HINT),
        }
    });
    let anthropic = ANTHROPIC_QUOTAS.into_iter().filter_map(|kind| {
        if text(format!("anthropic-ratelimit-{kind}-remaining")) != Some("0") {
            return None;
        }
        anthropic_reset(headers, kind, now)
    });
    openai.chain(anthropic).max()
}

/// Every Anthropic quota's reset, exhausted or not.
fn anthropic_resets(headers: &HeaderMap, now: SystemTime) -> impl Iterator<Item = Duration> + '_ {
    ANTHROPIC_QUOTAS
        .into_iter()
        .filter_map(move |kind| anthropic_reset(headers, kind, now))
}

fn anthropic_reset(headers: &HeaderMap, kind: &str, now: SystemTime) -> Option<Duration> {
    let value = header_text(headers, &format!("anthropic-ratelimit-{kind}-reset"))?;
    until(rfc3339(value)?, now)
}

/// Time from `now` to `when` (zero if it is past); `None` if absurdly far.
fn until(when: SystemTime, now: SystemTime) -> Option<Duration> {
    let wait = when.duration_since(now).unwrap_or(Duration::ZERO);
    (wait <= MAX_HINT).then_some(wait)
}

/// Seconds from a server as a duration; `None` for negative, NaN or absurdly large.
fn seconds(secs: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| *d <= MAX_HINT)
}

/// A Go duration as OpenAI writes its resets: `6m0s`, `1s`, `20ms`, `1.5s`,
/// `1h2m3.5s`: numbers (maybe fractional), each followed by its unit.
fn go_duration(value: &str) -> Option<Duration> {
    let mut rest = value;
    let mut total = 0.0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    seconds(total)
}

/// An RFC 3339 time: `2026-11-28T05:39:21Z`, with optional fractional
/// seconds and a `Z` or `+HH:MM` / `-HH:MM` offset.
fn rfc3339(value: &str) -> Option<SystemTime> {
    let split = value
        .len()
        .checked_sub(6)
        .filter(|i| value.is_char_boundary(*i));
    let (local, offset) = match split.map(|i| value.split_at(i)) {
        Some((local, o))
            if (o.starts_with('+') || o.starts_with('-')) && o.get(3..4) == Some(":") =>
        {
            let hours: u64 = o.get(1..3)?.parse().ok()?;
            let minutes: u64 = o.get(4..6)?.parse().ok()?;
            let secs = Duration::from_secs(hours * 3600 + minutes * 60);
            (local, Some((o.starts_with('-'), secs)))
        }
        _ => (value.strip_suffix('Z').unwrap_or(value), None),
    };
    let utc = humantime::parse_rfc3339(&format!("{local}Z")).ok()?;
    match offset {
        // 10:00-05:00 is 15:00 UTC; 10:00+02:00 is 08:00 UTC.
        Some((true, by)) => utc.checked_add(by),
        Some((false, by)) => utc.checked_sub(by),
        None => Some(utc),
    }
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

    fn parse(body: &str) -> Result<Completion, ClientError> {
        parse_reply(body.as_bytes(), Duration::ZERO, &Secrets::default())
    }

    #[test]
    fn bad_usage_counts_are_ignored_not_fatal() {
        for usage in [
            r#"{"prompt_tokens": -3, "completion_tokens": 2.5}"#,
            r#"{"prompt_tokens": "many", "completion_tokens": null}"#,
            r#""n/a""#,
            "[]",
        ] {
            let body =
                format!(r#"{{"choices":[{{"message":{{"content":"hi"}}}}],"usage":{usage}}}"#);
            let c = parse(&body).unwrap_or_else(|e| panic!("{usage}: {e}"));
            assert_eq!(
                (c.content.as_str(), c.prompt_tokens, c.completion_tokens),
                ("hi", None, None),
                "{usage}"
            );
        }
        // Whole numbers written as floats are counts; each count stands alone.
        let c = parse(r#"{"choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":7.0,"completion_tokens":-1}}"#).unwrap();
        assert_eq!((c.prompt_tokens, c.completion_tokens), (Some(7), None));
    }

    #[test]
    fn content_parts_are_joined() {
        let c = parse(r#"{"choices":[{"message":{"content":[{"type":"text","text":"posi"},{"type":"reasoning","summary":"x"},{"type":"text","text":"tive"}]}}]}"#).unwrap();
        assert_eq!(c.content, "positive");
        assert_eq!(
            parse(r#"{"choices":[{"message":{"content":[]}}]}"#)
                .unwrap()
                .content,
            ""
        );
        // Parts, none of them text: nothing to score.
        assert!(matches!(
            parse(r#"{"choices":[{"message":{"content":[{"type":"image_url"}]}}]}"#),
            Err(ClientError::Malformed(_))
        ));
    }

    #[test]
    fn an_error_body_in_a_success_is_a_retryable_error() {
        for (body, message) in [
            (
                r#"{"error":{"message":"upstream overloaded","code":502}}"#,
                "upstream overloaded",
            ),
            (r#"{"error":"model is loading"}"#, "model is loading"),
            (r#"{"error":{"code":17}}"#, r#"{"code":17}"#),
            (r#"{"choices":[],"error":{"message":"no"}}"#, "no"),
        ] {
            let e = parse(body).unwrap_err();
            assert_eq!(e, ClientError::ErrorReply(message.into()), "{body}");
            assert!(e.is_retryable());
            assert_eq!(e.kind(), "api_error");
        }
        // `"error": null` beside a good answer is no error.
        let c = parse(r#"{"choices":[{"message":{"content":"ok"}}],"error":null}"#).unwrap();
        assert_eq!(c.content, "ok");
        assert!(ClientError::Malformed(String::new()).is_retryable());
        assert!(!ClientError::TooLarge.is_retryable());
    }

    #[test]
    fn redirects_are_not_retried() {
        let e = ClientError::Redirect {
            status: 302,
            location: Some("http://elsewhere.test/v1".into()),
        };
        assert!(!e.is_retryable());
        assert_eq!(e.kind(), "http_302");
        assert!(e.to_string().contains("http://elsewhere.test/v1"), "{e}");
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.insert(*name, HeaderValue::from_static(value));
        }
        h
    }

    /// 2015-10-21T07:28:00Z, the date in RFC 9110's Retry-After example.
    fn at_example_date() -> SystemTime {
        humantime::parse_rfc3339("2015-10-21T07:28:00Z").unwrap()
    }

    fn hint(pairs: &[(&'static str, &'static str)]) -> Option<Duration> {
        retry_hint_at(429, &headers(pairs), at_example_date())
    }

    const fn secs(n: u64) -> Option<Duration> {
        Some(Duration::from_secs(n))
    }

    #[test]
    fn reads_retry_after_ms() {
        assert_eq!(
            hint(&[("retry-after-ms", "1500")]),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            hint(&[("retry-after-ms", "20.5")]),
            Some(Duration::from_micros(20_500))
        );
    }

    #[test]
    fn reads_retry_after_seconds_and_http_dates() {
        assert_eq!(hint(&[("retry-after", "2")]), secs(2));
        assert_eq!(
            hint(&[("retry-after", " 0.5 ")]),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            hint(&[("retry-after", "Wed, 21 Oct 2015 07:29:30 GMT")]),
            secs(90)
        );
        // A date already past: go now.
        assert_eq!(
            hint(&[("retry-after", "Wed, 21 Oct 2015 07:27:00 GMT")]),
            secs(0)
        );
        assert!(httpdate("Wed, 21 Oct 2015 07:28:00 GMT").is_some());
        assert!(httpdate("Wed, 21 Foo 2015 07:28:00 GMT").is_none());
    }

    #[test]
    fn reads_litellm_retry_after() {
        assert_eq!(hint(&[("llm_provider-retry-after", "60")]), secs(60));
        assert_eq!(
            hint(&[("llm_provider-retry-after", "1.25")]),
            Some(Duration::from_millis(1250))
        );
    }

    #[test]
    fn reads_openai_resets_of_exhausted_quotas() {
        let h = [
            ("x-ratelimit-remaining-requests", "12"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ];
        assert_eq!(hint(&h), secs(360));
        // Both exhausted: the later reset.
        let both = [
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "20ms"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "1.5s"),
        ];
        assert_eq!(hint(&both), Some(Duration::from_millis(1500)));
        let plain = [
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "7"),
        ];
        assert_eq!(hint(&plain), secs(7));
        // A quota with requests left says nothing about when to retry.
        let left = [
            ("x-ratelimit-remaining-tokens", "5"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ];
        assert_eq!(hint(&left), None);
        assert_eq!(
            go_duration("1h2m3.5s"),
            Some(Duration::from_millis(3_723_500))
        );
        assert_eq!(go_duration("250us"), Some(Duration::from_micros(250)));
        for bad in ["", "s", "5", "5x", "1.2.3s", "-1s", "1s-"] {
            assert_eq!(go_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn reads_anthropic_resets() {
        // An exhausted quota's reset is used, on a 429 or a 503.
        let h = [
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2015-10-21T07:28:30Z"),
            ("anthropic-ratelimit-tokens-remaining", "9000"),
            ("anthropic-ratelimit-tokens-reset", "2015-10-21T07:28:05Z"),
        ];
        assert_eq!(hint(&h), secs(30));
        assert_eq!(
            retry_hint_at(503, &headers(&h), at_example_date()),
            secs(30)
        );
        // The latest of the exhausted ones, whatever the offset notation.
        let h = [
            ("anthropic-ratelimit-input-tokens-remaining", "0"),
            (
                "anthropic-ratelimit-input-tokens-reset",
                "2015-10-21T09:28:10.5+02:00",
            ),
            ("anthropic-ratelimit-output-tokens-remaining", "0"),
            (
                "anthropic-ratelimit-output-tokens-reset",
                "2015-10-21T02:28:20-05:00",
            ),
        ];
        assert_eq!(hint(&h), secs(20));
        // Nothing marked exhausted: on a 429 the soonest reset, on a 503 nothing.
        let h = [
            ("anthropic-ratelimit-requests-remaining", "3"),
            ("anthropic-ratelimit-requests-reset", "2015-10-21T07:28:40Z"),
            ("anthropic-ratelimit-tokens-reset", "2015-10-21T07:28:12Z"),
        ];
        assert_eq!(hint(&h), secs(12));
        assert_eq!(retry_hint_at(503, &headers(&h), at_example_date()), None);
        assert!(rfc3339("2015-10-21T07:28:00").is_some());
        for bad in [
            "",
            "tomorrow",
            "2015-10-21T07:28:00+0",
            "2015-10-21T07:28:00+xx:00",
            "2015-13-01T00:00:00Z",
        ] {
            assert_eq!(rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_most_specific_hint_wins() {
        let all = [
            ("retry-after-ms", "250"),
            ("retry-after", "2"),
            ("llm_provider-retry-after", "3"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "4s"),
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2015-10-21T07:28:05Z"),
        ];
        assert_eq!(hint(&all), Some(Duration::from_millis(250)));
        assert_eq!(hint(&all[1..]), secs(2));
        assert_eq!(hint(&all[2..]), secs(3));
        // OpenAI's and Anthropic's exhausted quotas together: the later reset.
        assert_eq!(hint(&all[3..]), secs(5));
        assert_eq!(hint(&all[5..]), secs(5));
        // A bad value is skipped, and the next header in line is read.
        let h = [
            ("retry-after-ms", "soon"),
            ("retry-after", "NaN"),
            ("llm_provider-retry-after", "9"),
        ];
        assert_eq!(hint(&h), secs(9));
    }

    #[test]
    fn hints_apply_only_to_throttling_answers() {
        let h = headers(&[("retry-after", "2")]);
        let now = at_example_date();
        assert_eq!(retry_hint_at(429, &h, now), secs(2));
        assert_eq!(retry_hint_at(503, &h, now), secs(2));
        for status in [200, 400, 500, 502] {
            assert_eq!(retry_hint_at(status, &h, now), None, "{status}");
        }
    }

    #[test]
    fn bad_hints_are_ignored_never_a_panic() {
        for value in [
            "-1",
            "-0.5",
            "NaN",
            "nan",
            "inf",
            "-inf",
            "1e20",
            "1e400",
            "86401",
            "",
            " ",
            "soon",
            "Wed, 21 Oct 9999 07:28:00 GMT",
            "Wed, 32 Oct 2015 07:28:00 GMT",
            "\u{2603}",
        ] {
            for name in ["retry-after-ms", "retry-after", "llm_provider-retry-after"] {
                let mut h = HeaderMap::new();
                if let Ok(v) = HeaderValue::from_str(value) {
                    h.insert(name, v);
                }
                let got = retry_hint_at(429, &h, at_example_date());
                let ok = got.is_none() || (name == "retry-after-ms" && value == "86401");
                assert!(ok, "{name}: {value:?} gave {got:?}");
            }
            let mut h = HeaderMap::new();
            h.insert(
                "x-ratelimit-remaining-requests",
                HeaderValue::from_static("0"),
            );
            h.insert(
                "anthropic-ratelimit-requests-remaining",
                HeaderValue::from_static("0"),
            );
            if let Ok(v) = HeaderValue::from_str(value) {
                h.insert("x-ratelimit-reset-requests", v.clone());
                h.insert("anthropic-ratelimit-requests-reset", v);
            }
            assert_eq!(retry_hint_at(429, &h, at_example_date()), None, "{value:?}");
        }
        // Not text at all.
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_bytes(b"\xff\xfe").unwrap());
        assert_eq!(retry_hint_at(429, &h, at_example_date()), None);
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
