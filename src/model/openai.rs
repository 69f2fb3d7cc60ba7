//! The OpenAI chat-completions API, which most servers speak (vLLM, llama.cpp,
//! LiteLLM, Ollama, the built-in mock): `POST {base_url}/chat/completions`
//! with a bearer token, `choices[0].message.content` back.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::transport::{excerpt, retry_hint};
use super::{Api, ClientError, Hosted, Message, Provider, Reply};
use crate::secrets::Secrets;

/// `provider: openai`: OpenAI itself, or any server that speaks its API.
pub const PROVIDER: Provider = Provider {
    name: "openai",
    hosted: Some(Hosted {
        base_url: "https://api.openai.com/v1",
        base_url_env: "OPENAI_BASE_URL",
        key_env: "OPENAI_API_KEY",
    }),
    api: || Arc::new(OpenAi),
};

/// An OpenAI-compatible endpoint.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenAi;

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

impl Api for OpenAi {
    fn path(&self) -> &str {
        "/chat/completions"
    }

    fn auth_headers(&self, key: &str) -> Result<HeaderMap, String> {
        let mut value = HeaderValue::from_str(&format!("Bearer {key}")).map_err(|_| {
            "the API key contains characters that cannot be sent in a header".to_owned()
        })?;
        value.set_sensitive(true);
        Ok(HeaderMap::from_iter([(AUTHORIZATION, value)]))
    }

    fn encode(
        &self,
        model: &str,
        messages: &[Message],
        params: &Map<String, Value>,
    ) -> serde_json::Result<Vec<u8>> {
        serde_json::to_vec(&Request {
            model,
            messages,
            params,
        })
    }

    fn decode(&self, body: &[u8], secrets: &Secrets) -> Result<Reply, ClientError> {
        parse_reply(body, secrets)
    }

    /// 429 Too Many Requests, and 503, which OpenAI and most proxies send when
    /// overloaded.
    fn is_throttled(&self, status: u16) -> bool {
        matches!(status, 429 | 503)
    }

    /// Every hint header we know: an OpenAI-compatible address is often a
    /// proxy (LiteLLM) in front of another provider, whose headers it passes on.
    fn retry_hint(&self, status: u16, headers: &HeaderMap) -> Option<Duration> {
        retry_hint(status, headers)
    }
}

fn parse_reply(bytes: &[u8], secrets: &Secrets) -> Result<Reply, ClientError> {
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
    Ok(Reply {
        content,
        prompt_tokens,
        completion_tokens,
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The reply `OpenAi` reads from `bytes` (`latency` is the transport's, not read here).
    fn parse_reply(
        bytes: &[u8],
        _latency: Duration,
        secrets: &Secrets,
    ) -> Result<Reply, ClientError> {
        OpenAi.decode(bytes, secrets)
    }

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

    fn parse(body: &str) -> Result<Reply, ClientError> {
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
            assert_eq!(e.kind().to_string(), "api_error");
        }
        // `"error": null` beside a good answer is no error.
        let c = parse(r#"{"choices":[{"message":{"content":"ok"}}],"error":null}"#).unwrap();
        assert_eq!(c.content, "ok");
        assert!(ClientError::Malformed(String::new()).is_retryable());
        assert!(!ClientError::TooLarge.is_retryable());
    }
}
