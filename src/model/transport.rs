//! The HTTP transport every provider shares: one pooled client, a total
//! deadline per attempt (send to full body), capped bodies, redirects reported
//! and never followed, refused certificates explained, and the server's
//! retry hints read off throttled answers. What the bytes mean is the [`Api`]'s.

mod retry_hint;

use std::time::{Duration, Instant};

use reqwest::header::HeaderMap;

pub(super) use retry_hint::retry_hint;

use super::{whole, Api, ClientError, Reply};
use crate::secrets::Secrets;

/// Replies larger than this are cut off and recorded as an error.
pub const MAX_BODY_BYTES: usize = 16 * 1024 * 1024;
/// How much of an error body is kept in the record.
const BODY_EXCERPT: usize = 300;

/// How long a request may take, each part documented with its default in
/// README (`model.timeout`, `connect_timeout`, `read_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// To open a connection (TCP and TLS).
    pub connect: Duration,
    /// The longest silence once the reply began: a stalled stream.
    pub read: Duration,
    /// A whole attempt, from sending to the reply's last byte.
    pub total: Duration,
}

impl Timeouts {
    /// The same bound on every part (for tests and the built-in mock).
    pub fn all(d: Duration) -> Timeouts {
        Timeouts {
            connect: d,
            read: d,
            total: d,
        }
    }
}

/// Posts request bodies over one pooled connection set.
#[derive(Clone)]
pub(super) struct Transport {
    http: reqwest::Client,
    timeouts: Timeouts,
}

impl Transport {
    /// A client sending `headers` with every request, keeping up to
    /// `max_connections` idle connections, within `timeouts`.
    pub fn new(
        headers: HeaderMap,
        timeouts: Timeouts,
        max_connections: usize,
    ) -> Result<Transport, String> {
        let http = reqwest::Client::builder()
            .default_headers(headers)
            .user_agent(concat!("dotevals/", env!("CARGO_PKG_VERSION")))
            .tcp_nodelay(true)
            .pool_max_idle_per_host(max_connections.max(1))
            .pool_idle_timeout(Duration::from_secs(90))
            .connect_timeout(timeouts.connect.min(timeouts.total))
            // A redirected POST comes back as a GET to wherever the server
            // says: its answer is not the model's. Reported, never followed.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(Transport { http, timeouts })
    }

    /// One attempt: post `body` to `url` and read the reply within the
    /// timeout. A 2xx is read chunk by chunk into `api`'s decoder: its reply,
    /// the time it took, and when its text began when the decoder can tell
    /// (a streamed reply). Anything else is an error, throttling and its
    /// hint as `api` reads them.
    pub async fn post(
        &self,
        url: &str,
        body: bytes::Bytes,
        api: &dyn Api,
        secrets: &Secrets,
    ) -> Result<(Reply, Timing), ClientError> {
        let started = Instant::now();
        let attempt = async {
            let response = self
                .http
                .request(api.method(), url)
                .body(body)
                .send()
                .await
                .map_err(|e| from_reqwest(e, self.timeouts.total))?;
            let status = response.status();
            if status.is_redirection() {
                return Err(redirect(&response, secrets));
            }
            if status.is_success() {
                // A server may answer a request for a stream with the whole
                // reply (LiteLLM's Anthropic route does): read what came.
                let whole_json = response
                    .headers()
                    .get(reqwest::header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|t| t.trim_start().starts_with("application/json"));
                let mut decoder = if whole_json {
                    whole(api, secrets)
                } else {
                    api.decoder(secrets)
                };
                let first_token = read_capped(response, self.timeouts, |chunk| {
                    decoder
                        .feed(chunk)
                        .map(|began| began.then(|| started.elapsed()))
                })
                .await?;
                let latency = started.elapsed();
                return Ok(Ok((decoder.finish()?, latency, first_token)));
            }
            // Read before the body consumes the response: `Some(hint)` when throttled.
            let throttled = api
                .is_throttled(status.as_u16())
                .then(|| api.retry_hint(status.as_u16(), response.headers()));
            let mut bytes = Vec::new();
            read_capped(response, self.timeouts, |chunk| {
                bytes.extend_from_slice(chunk);
                Ok(None)
            })
            .await?;
            Ok::<_, ClientError>(Err((status.as_u16(), throttled, bytes)))
        };
        let read = tokio::time::timeout(self.timeouts.total, attempt)
            .await
            .map_err(|_| ClientError::Timeout(self.timeouts.total))??;
        let (reply, latency, first_token) = match read {
            Ok(read) => read,
            Err((status, throttled, bytes)) => {
                let body = excerpt(&bytes, secrets);
                return Err(match throttled {
                    Some(retry_after) => ClientError::Throttled {
                        status,
                        body,
                        retry_after,
                    },
                    None => ClientError::Status { status, body },
                });
            }
        };
        Ok((
            reply,
            Timing {
                latency,
                first_token,
            },
        ))
    }
}

/// When a reply came.
#[derive(Debug, Clone, Copy)]
pub(super) struct Timing {
    /// From sending the request to reading the whole body.
    pub latency: Duration,
    /// From sending the request to the first text, when the reply streams.
    pub first_token: Option<Duration>,
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

/// Reads the body chunk by chunk into `each`, refusing more than
/// [`MAX_BODY_BYTES`] and a silence past the read timeout; answers the first
/// time `each` reported.
async fn read_capped(
    mut response: reqwest::Response,
    timeouts: Timeouts,
    mut each: impl FnMut(&[u8]) -> Result<Option<Duration>, ClientError>,
) -> Result<Option<Duration>, ClientError> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BODY_BYTES as u64)
    {
        return Err(ClientError::TooLarge);
    }
    let (mut read, mut first) = (0, None);
    loop {
        let chunk = tokio::time::timeout(timeouts.read, response.chunk())
            .await
            .map_err(|_| ClientError::Stalled(timeouts.read))?
            .map_err(|e| from_reqwest(e, timeouts.total))?;
        let Some(chunk) = chunk else { break };
        read += chunk.len();
        if read > MAX_BODY_BYTES {
            return Err(ClientError::TooLarge);
        }
        let at = each(&chunk)?;
        first = first.or(at);
    }
    Ok(first)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::openai::OpenAi;
    use crate::model::Decoder;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Answers one request with a chunked 200 whose body comes in two
    /// parts, `gap` apart.
    async fn two_part_server(parts: [String; 2], gap: Duration) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut request = vec![0; 4096];
            let _ = socket.read(&mut request).await;
            let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
            let chunk = |s: &str| format!("{:x}\r\n{s}\r\n", s.len());
            socket.write_all(head.as_bytes()).await.unwrap();
            socket.write_all(chunk(&parts[0]).as_bytes()).await.unwrap();
            socket.flush().await.unwrap();
            tokio::time::sleep(gap).await;
            socket.write_all(chunk(&parts[1]).as_bytes()).await.unwrap();
            socket.write_all(b"0\r\n\r\n").await.unwrap();
        });
        url
    }

    /// A decoder that takes each chunk as text, begun at the first one.
    struct Lines(String);

    impl Decoder for Lines {
        fn feed(&mut self, bytes: &[u8]) -> Result<bool, ClientError> {
            self.0.push_str(&String::from_utf8_lossy(bytes));
            Ok(!self.0.is_empty())
        }
        fn finish(self: Box<Self>) -> Result<Reply, ClientError> {
            Ok(Reply {
                content: self.0,
                usage: Default::default(),
            })
        }
    }

    /// OpenAI's API, but read as a stream of text.
    struct Streaming;

    impl Api for Streaming {
        fn path(&self) -> &str {
            ""
        }
        fn auth_headers(&self, key: &str) -> Result<HeaderMap, String> {
            OpenAi::default().auth_headers(key)
        }
        fn encode(&self, request: &crate::model::Outgoing<'_>) -> Result<Vec<u8>, String> {
            OpenAi::default().encode(request)
        }
        fn decode(&self, body: &[u8], secrets: &Secrets) -> Result<Reply, ClientError> {
            OpenAi::default().decode(body, secrets)
        }
        fn decoder<'a>(&'a self, _: &'a Secrets) -> Box<dyn Decoder + 'a> {
            Box::new(Lines(String::new()))
        }
        fn is_throttled(&self, status: u16) -> bool {
            OpenAi::default().is_throttled(status)
        }
        fn retry_hint(&self, status: u16, headers: &HeaderMap) -> Option<Duration> {
            OpenAi::default().retry_hint(status, headers)
        }
    }

    #[tokio::test]
    async fn a_streamed_reply_says_when_its_text_began() {
        let gap = Duration::from_millis(300);
        let transport =
            Transport::new(HeaderMap::new(), Timeouts::all(Duration::from_secs(10)), 1).unwrap();
        let url = two_part_server(["first ".into(), "second".into()], gap).await;
        let (reply, timing) = transport
            .post(&url, bytes::Bytes::new(), &Streaming, &Secrets::default())
            .await
            .unwrap();
        assert_eq!(reply.content, "first second");
        let first = timing.first_token.expect("the text began");
        assert!(first < gap, "first token at {first:?}");
        assert!(timing.latency >= gap, "whole reply at {:?}", timing.latency);
    }

    #[tokio::test]
    async fn a_reply_silent_past_the_read_timeout_has_stalled() {
        let url = two_part_server(
            ["first ".into(), "second".into()],
            Duration::from_millis(300),
        )
        .await;
        let timeouts = Timeouts {
            read: Duration::from_millis(100),
            ..Timeouts::all(Duration::from_secs(10))
        };
        let transport = Transport::new(HeaderMap::new(), timeouts, 1).unwrap();
        let read = transport
            .post(&url, bytes::Bytes::new(), &Streaming, &Secrets::default())
            .await;
        let e = read.unwrap_err();
        assert_eq!(e, ClientError::Stalled(Duration::from_millis(100)));
        assert_eq!(e.kind().to_string(), "timeout");
        assert!(e.is_retryable());
    }

    #[tokio::test]
    async fn a_whole_reply_is_read_across_chunks_and_has_no_first_token() {
        let body = r#"{"choices": [{"message": {"content": "hi"}}]}"#;
        let (a, b) = body.split_at(20);
        let url = two_part_server([a.into(), b.into()], Duration::from_millis(20)).await;
        let transport =
            Transport::new(HeaderMap::new(), Timeouts::all(Duration::from_secs(10)), 1).unwrap();
        let (reply, timing) = transport
            .post(
                &url,
                bytes::Bytes::new(),
                &OpenAi::default(),
                &Secrets::default(),
            )
            .await
            .unwrap();
        assert_eq!(reply.content, "hi");
        assert_eq!(timing.first_token, None);
    }
}
