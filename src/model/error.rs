//! Why a request failed, as the runner records it and the retry loop reads it.

use std::time::Duration;

use super::transport::MAX_BODY_BYTES;
use crate::error_kind::ErrorKind;

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ClientError {
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// A reply began, then no byte came for this long (`read_timeout`).
    #[error("the reply stalled: no byte for {0:?} (read_timeout)")]
    Stalled(Duration),
    #[error("connection failed: {0}")]
    Connect(String),
    /// The server's certificate was refused: retrying cannot help.
    #[error("connection failed: {0}")]
    Certificate(String),
    /// The server said to slow down (which statuses say so is the [`Api`](super::Api)'s
    /// call), maybe with how long to wait.
    #[error("HTTP {status}: {body}")]
    Throttled {
        status: u16,
        body: String,
        retry_after: Option<Duration>,
    },
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
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
    /// `provider: http`'s `output` pointer found no text in a reply.
    #[error("`output: {pointer}` matches nothing in the reply (or not text); body starts: {body}")]
    NoOutput { pointer: String, body: String },
    /// A streamed reply that ended before the API's end of stream: never
    /// taken for a short answer. Says what had arrived.
    #[error("the stream ended before the reply did; {0}")]
    StreamCut(String),
    #[error("response larger than {} MiB", MAX_BODY_BYTES / (1024 * 1024))]
    TooLarge,
}

impl ClientError {
    /// The kind the sample's error is grouped by.
    pub fn kind(&self) -> ErrorKind {
        match self {
            ClientError::Timeout(_) | ClientError::Stalled(_) => ErrorKind::Timeout,
            ClientError::Connect(_) | ClientError::Certificate(_) => ErrorKind::Connection,
            ClientError::Throttled { status, .. }
            | ClientError::Status { status, .. }
            | ClientError::Redirect { status, .. } => ErrorKind::Http(*status),
            ClientError::ErrorReply(_) => ErrorKind::ApiError,
            ClientError::Malformed(_) | ClientError::TooLarge => ErrorKind::Malformed,
            ClientError::StreamCut(_) => ErrorKind::StreamCut,
            ClientError::NoOutput { .. } => ErrorKind::NoOutput,
        }
    }

    /// True for transient failures another attempt may get past: throttling,
    /// 408, 5xx, timeouts, connection errors, garbled replies.
    pub fn is_retryable(&self) -> bool {
        match self {
            ClientError::Timeout(_)
            | ClientError::Stalled(_)
            | ClientError::Connect(_)
            | ClientError::Throttled { .. }
            | ClientError::StreamCut(_) => true,
            ClientError::Status { status, .. } => *status == 408 || *status >= 500,
            // A garbled or error body is most often a proxy's or a replica's
            // passing trouble: worth another attempt, like a 5xx.
            ClientError::ErrorReply(_) | ClientError::Malformed(_) => true,
            // Another 16 MiB would most likely be the same 16 MiB.
            ClientError::Redirect { .. } | ClientError::Certificate(_) | ClientError::TooLarge => {
                false
            }
            // The spec's pointer, most likely: the same reply would miss again.
            ClientError::NoOutput { .. } => false,
        }
    }

    /// How long a throttling server asked us to wait, if it said.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::Throttled { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_are_not_retried() {
        let e = ClientError::Redirect {
            status: 302,
            location: Some("http://elsewhere.test/v1".into()),
        };
        assert!(!e.is_retryable());
        assert_eq!(e.kind().to_string(), "http_302");
        assert!(e.to_string().contains("http://elsewhere.test/v1"), "{e}");
    }

    #[test]
    fn classifies_errors() {
        let e = ClientError::Throttled {
            status: 429,
            body: String::new(),
            retry_after: None,
        };
        assert!(e.is_retryable());
        assert_eq!(e.kind().to_string(), "http_429");
        let e = ClientError::Status {
            status: 400,
            body: String::new(),
        };
        assert!(!e.is_retryable());
    }
}
