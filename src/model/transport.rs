//! The HTTP transport every provider shares: one pooled client, a total
//! deadline per attempt (send to full body), capped bodies, redirects reported
//! and never followed, refused certificates explained, and the server's
//! retry hints read off throttled answers. What the bytes mean is the [`Api`]'s.

mod retry_hint;

use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;

pub(super) use retry_hint::retry_hint;

use super::{Api, ClientError};
use crate::secrets::Secrets;

/// Replies larger than this are cut off and recorded as an error.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// How much of an error body is kept in the record.
const BODY_EXCERPT: usize = 300;

/// Posts request bodies over one pooled connection set.
#[derive(Clone)]
pub(super) struct Transport {
    http: reqwest::Client,
    timeout: Duration,
}

impl Transport {
    /// A client sending `headers` with every request, keeping up to
    /// `max_connections` idle connections, giving each attempt `timeout`.
    pub fn new(
        headers: HeaderMap,
        timeout: Duration,
        max_connections: usize,
    ) -> Result<Transport, String> {
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
        Ok(Transport { http, timeout })
    }

    /// One attempt: post `body` to `url` and read the whole reply within the
    /// timeout. A 2xx gives its body and the time it took; anything else is an
    /// error, throttling and its hint as `api` reads them.
    pub async fn post(
        &self,
        url: &str,
        body: bytes::Bytes,
        api: &dyn Api,
        secrets: &Secrets,
    ) -> Result<(Vec<u8>, Duration), ClientError> {
        let started = Instant::now();
        let attempt = async {
            let response = self
                .http
                .post(url)
                .body(body)
                .send()
                .await
                .map_err(|e| from_reqwest(e, self.timeout))?;
            let status = response.status();
            if status.is_redirection() {
                return Err(redirect(&response, secrets));
            }
            // Read before the body consumes the response: `Some(hint)` when throttled.
            let throttled = (!status.is_success() && api.is_throttled(status.as_u16()))
                .then(|| api.retry_hint(status.as_u16(), response.headers()));
            let bytes = read_capped(response, self.timeout).await?;
            Ok::<_, ClientError>((status, throttled, bytes))
        };
        let (status, throttled, bytes) = tokio::time::timeout(self.timeout, attempt)
            .await
            .map_err(|_| ClientError::Timeout(self.timeout))??;
        let latency = started.elapsed();
        if status.is_success() {
            return Ok((bytes, latency));
        }
        let (status, body) = (status.as_u16(), excerpt(&bytes, secrets));
        Err(match throttled {
            Some(retry_after) => ClientError::Throttled {
                status,
                body,
                retry_after,
            },
            None => ClientError::Status { status, body },
        })
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
    // to judge, in the `Api`'s `decode`.
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

/// The first characters of a body, as text, for error records. Secrets are
/// scrubbed from the whole body first, so a cut can never leave half a key.
pub(super) fn excerpt(bytes: &[u8], secrets: &Secrets) -> String {
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
