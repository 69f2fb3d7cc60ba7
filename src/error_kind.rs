//! The kinds a sample's error is grouped by: one name per cause, stored and
//! printed as short stable text (`timeout`, `http_429`, `evaluator`, ...).
//! `show` groups errors by it and scripts match on it, so the text never changes.

use std::fmt;

/// Why a sample has no result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The prompt template failed on this row.
    Template,
    /// An evaluator could not score the reply.
    Evaluator,
    /// An `llm_judge` evaluator got no score from its judge: the judge's
    /// request failed, or its reply held no score.
    Judge,
    /// The model answered but the run stopped before every evaluator had
    /// scored the reply: the next run scores the stored reply without
    /// asking the model again.
    Ungraded,
    /// No full reply within the timeout.
    Timeout,
    /// No connection, or a refused certificate.
    Connection,
    /// An HTTP status that is not success (redirects and throttling included).
    Http(u16),
    /// A 2xx reply whose body is an error.
    ApiError,
    /// A body that cannot be read as a reply, or a request that cannot be encoded.
    Malformed,
    /// A streamed reply that ended before the API's end of stream.
    StreamCut,
    /// `provider: http`'s `output` pointer matched nothing in a reply.
    NoOutput,
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorKind::Template => f.write_str("template"),
            ErrorKind::Evaluator => f.write_str("evaluator"),
            ErrorKind::Judge => f.write_str("judge"),
            ErrorKind::Ungraded => f.write_str("ungraded"),
            ErrorKind::Timeout => f.write_str("timeout"),
            ErrorKind::Connection => f.write_str("connection"),
            ErrorKind::Http(status) => write!(f, "http_{status}"),
            ErrorKind::ApiError => f.write_str("api_error"),
            ErrorKind::Malformed => f.write_str("malformed"),
            ErrorKind::StreamCut => f.write_str("stream_cut"),
            ErrorKind::NoOutput => f.write_str("no_output"),
        }
    }
}

impl std::str::FromStr for ErrorKind {
    type Err = ();

    /// Reads the stored text back (`rescore` copies stored errors).
    fn from_str(s: &str) -> Result<Self, ()> {
        Ok(match s {
            "template" => ErrorKind::Template,
            "evaluator" => ErrorKind::Evaluator,
            "judge" => ErrorKind::Judge,
            "ungraded" => ErrorKind::Ungraded,
            "timeout" => ErrorKind::Timeout,
            "connection" => ErrorKind::Connection,
            "api_error" => ErrorKind::ApiError,
            "malformed" => ErrorKind::Malformed,
            "stream_cut" => ErrorKind::StreamCut,
            "no_output" => ErrorKind::NoOutput,
            other => ErrorKind::Http(
                other
                    .strip_prefix("http_")
                    .and_then(|n| n.parse().ok())
                    .ok_or(())?,
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::ErrorKind;

    #[test]
    fn the_stored_text_is_stable() {
        let all = [
            (ErrorKind::Template, "template"),
            (ErrorKind::Evaluator, "evaluator"),
            (ErrorKind::Judge, "judge"),
            (ErrorKind::Ungraded, "ungraded"),
            (ErrorKind::Timeout, "timeout"),
            (ErrorKind::Connection, "connection"),
            (ErrorKind::Http(429), "http_429"),
            (ErrorKind::ApiError, "api_error"),
            (ErrorKind::Malformed, "malformed"),
            (ErrorKind::StreamCut, "stream_cut"),
            (ErrorKind::NoOutput, "no_output"),
        ];
        for (kind, text) in all {
            assert_eq!(kind.to_string(), text);
            assert_eq!(text.parse(), Ok(kind));
        }
        assert_eq!("http_x".parse::<ErrorKind>(), Err(()));
    }
}
