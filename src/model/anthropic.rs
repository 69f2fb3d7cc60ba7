//! Anthropic's Messages API: `POST {base_url}/v1/messages` with `x-api-key`
//! and `anthropic-version`; system messages go in the top-level `system`,
//! `max_tokens` is required; the answer is the text blocks of `content`.
//! Streamed, it is a sequence of named events (`message_start`,
//! `content_block_delta`, ..., `message_stop`) in which an `error` event may
//! say the API is overloaded.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;

use super::openai::token_count;
use super::stream::{self, EventReader};
use super::transport::{excerpt, retry_hint};
use super::{
    Api, ApiOptions, ClientError, Decoder, Hosted, Message, Outgoing, Provider, Reply, Role,
};
use crate::secrets::Secrets;
use crate::usage::Usage;

/// `provider: anthropic`.
pub const PROVIDER: Provider = Provider {
    name: "anthropic",
    hosted: Some(Hosted {
        base_url: "https://api.anthropic.com",
        base_url_env: "ANTHROPIC_BASE_URL",
        key_env: "ANTHROPIC_API_KEY",
    }),
    api: |options| Arc::new(Anthropic::new(options)),
    streams: true,
    reserved: &[(
        "system",
        "write the system prompt as a `messages` entry with `role: system`: it is sent as `system`",
    )],
};

/// The API version every request names (the one Anthropic documents).
pub const VERSION: &str = "2023-06-01";
/// `max_tokens` when `params` sets none: the API refuses a request without it.
pub const DEFAULT_MAX_TOKENS: u64 = 1024;
/// What Anthropic answers when it is overloaded (and names in stream errors).
const OVERLOADED: u16 = 529;

/// The Messages API.
#[derive(Debug, Clone, Copy, Default)]
pub struct Anthropic {
    stream: bool,
}

impl Anthropic {
    pub fn new(options: &ApiOptions) -> Anthropic {
        Anthropic {
            stream: options.stream,
        }
    }
}

impl Api for Anthropic {
    fn path(&self) -> &str {
        "/v1/messages"
    }

    fn headers(&self) -> Result<HeaderMap, String> {
        Ok(HeaderMap::from_iter([(
            HeaderName::from_static("anthropic-version"),
            HeaderValue::from_static(VERSION),
        )]))
    }

    fn auth_headers(&self, key: &str) -> Result<HeaderMap, String> {
        let mut value = HeaderValue::from_str(key).map_err(|_| {
            "the API key contains characters that cannot be sent in a header".to_owned()
        })?;
        value.set_sensitive(true);
        Ok(HeaderMap::from_iter([(
            HeaderName::from_static("x-api-key"),
            value,
        )]))
    }

    /// `params` first, then what the request must say: system messages
    /// (and developer ones, which Anthropic has not) joined into `system`,
    /// the others as `messages`, `max_tokens` unless `params` set it.
    fn encode(&self, request: &Outgoing<'_>) -> Result<Vec<u8>, String> {
        let Outgoing {
            model,
            messages,
            params,
            ..
        } = *request;
        let mut body = params.clone();
        let (system, turns): (Vec<&Message>, Vec<&Message>) = messages
            .iter()
            .partition(|m| matches!(m.role, Role::System | Role::Developer));
        if !system.is_empty() {
            let text: Vec<&str> = system.iter().map(|m| m.content.as_str()).collect();
            body.insert("system".into(), Value::String(text.join("\n\n")));
        }
        body.insert("model".into(), Value::String(model.into()));
        body.insert(
            "messages".into(),
            serde_json::to_value(turns).map_err(|e| e.to_string())?,
        );
        body.entry("max_tokens")
            .or_insert(Value::from(DEFAULT_MAX_TOKENS));
        if self.stream {
            body.insert("stream".into(), Value::Bool(true));
        }
        serde_json::to_vec(&body).map_err(|e| e.to_string())
    }

    fn decode(&self, body: &[u8], secrets: &Secrets) -> Result<Reply, ClientError> {
        let reply: Value = serde_json::from_slice(body).map_err(|e| {
            ClientError::Malformed(format!("{e}; body starts: {}", excerpt(body, secrets)))
        })?;
        if let Some(error) = reply.get("error").filter(|e| !e.is_null()) {
            return Err(error_event(error, secrets));
        }
        let content = reply
            .get("content")
            .and_then(Value::as_array)
            .ok_or_else(|| {
                ClientError::Malformed(format!(
                    "no `content` list in reply; body starts: {}",
                    excerpt(body, secrets)
                ))
            })?;
        let text: String = content
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect();
        let mut usage = Usage::default();
        if let Some(u) = reply.get("usage") {
            read_usage(u, &mut usage);
        }
        Ok(Reply {
            content: text,
            usage,
        })
    }

    fn decoder<'a>(&'a self, secrets: &'a Secrets) -> Box<dyn Decoder + 'a> {
        stream::decoder(self, self.stream, MessageEvents, secrets)
    }

    /// 429 (a quota), 529 (overloaded), and 503 from proxies in front of it.
    fn is_throttled(&self, status: u16) -> bool {
        matches!(status, 429 | 503 | OVERLOADED)
    }

    /// `retry-after`, else the reset time of the exhausted
    /// `anthropic-ratelimit-*` quota.
    fn retry_hint(&self, status: u16, headers: &HeaderMap) -> Option<Duration> {
        retry_hint(status, headers)
    }
}

/// Reads Anthropic's `usage` into `usage`, keeping what an earlier event of a
/// stream said when this one leaves a count out. `input_tokens` counts only
/// the tokens read neither from the cache nor into it: all three are the
/// prompt.
fn read_usage(u: &Value, usage: &mut Usage) {
    let count = |name: &str| u.get(name).and_then(token_count);
    let input = count("input_tokens");
    let read = count("cache_read_input_tokens");
    let write = count("cache_creation_input_tokens");
    if input.is_some() || read.is_some() || write.is_some() {
        usage.cached_prompt = read.or(usage.cached_prompt);
        usage.cache_write = write.or(usage.cache_write);
        let fresh = input.or(usage.prompt.map(|p| {
            p.saturating_sub(usage.cached_prompt.unwrap_or(0) + usage.cache_write.unwrap_or(0))
        }));
        usage.prompt = Some(
            fresh.unwrap_or(0) + usage.cached_prompt.unwrap_or(0) + usage.cache_write.unwrap_or(0),
        );
    }
    if let Some(out) = count("output_tokens") {
        usage.completion = Some(out);
    }
}

/// An `error` object (`{"type": "overloaded_error", "message": ...}`), in a
/// stream or a 2xx body: overloaded and rate-limited ones are throttling.
fn error_event(error: &Value, secrets: &Secrets) -> ClientError {
    let kind = error.get("type").and_then(Value::as_str).unwrap_or("");
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .map_or_else(|| error.to_string(), str::to_owned);
    let body = excerpt(format!("{kind}: {message}").as_bytes(), secrets);
    let status = match kind {
        "overloaded_error" => OVERLOADED,
        "rate_limit_error" => 429,
        _ => return ClientError::ErrorReply(body),
    };
    ClientError::Throttled {
        status,
        body,
        retry_after: None,
    }
}

/// A streamed message: text from `content_block_delta` events' `text_delta`,
/// usage from `message_start` and `message_delta`, ended by `message_stop`.
struct MessageEvents;

impl EventReader for MessageEvents {
    const END: &'static str = "`message_stop` event";

    fn event(
        &self,
        name: &str,
        data: &str,
        reply: &mut Reply,
        secrets: &Secrets,
    ) -> Result<bool, ClientError> {
        if matches!(name, "ping" | "content_block_start" | "content_block_stop") {
            return Ok(false);
        }
        let event = stream::json(name, data, secrets)?;
        // The data's `type` names the event too; it decides when they differ.
        match event.get("type").and_then(Value::as_str).unwrap_or(name) {
            "message_start" => {
                if let Some(u) = event.pointer("/message/usage") {
                    read_usage(u, &mut reply.usage);
                }
            }
            "content_block_delta" => {
                let delta = event.get("delta");
                if delta.and_then(|d| d.get("type")).and_then(Value::as_str) == Some("text_delta") {
                    if let Some(text) = delta.and_then(|d| d.get("text")).and_then(Value::as_str) {
                        reply.content.push_str(text);
                    }
                }
            }
            "message_delta" => {
                if let Some(u) = event.get("usage") {
                    read_usage(u, &mut reply.usage);
                }
            }
            "message_stop" => return Ok(true),
            "error" => {
                let error = event.get("error").unwrap_or(&event);
                return Err(error_event(error, secrets));
            }
            _ => {}
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Map;

    const STREAM: Anthropic = Anthropic { stream: true };

    fn body(messages: &[Message], params: &str) -> Value {
        let params: Map<String, Value> = serde_json::from_str(params).unwrap();
        let bytes = STREAM
            .encode(&Outgoing::bare("claude", messages, &params))
            .unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn system_messages_are_lifted_and_max_tokens_is_set() {
        let m = |role, content: &str| Message {
            role,
            content: content.into(),
        };
        let b = body(
            &[
                m(Role::System, "Be brief."),
                m(Role::User, "Hi"),
                m(Role::Developer, "Answer in French."),
            ],
            r#"{"temperature": 0}"#,
        );
        assert_eq!(b["system"], "Be brief.\n\nAnswer in French.");
        assert_eq!(
            b["messages"],
            serde_json::json!([{"role": "user", "content": "Hi"}])
        );
        assert_eq!(b["max_tokens"], DEFAULT_MAX_TOKENS);
        assert_eq!(
            (&b["model"], &b["stream"], &b["temperature"]),
            (&"claude".into(), &true.into(), &0.into())
        );
        let b = body(&[m(Role::User, "Hi")], r#"{"max_tokens": 5}"#);
        assert_eq!(b["max_tokens"], 5);
        assert!(b.get("system").is_none());
    }

    #[test]
    fn a_whole_reply_joins_its_text_blocks_and_counts_cached_tokens_in_the_prompt() {
        let reply = Anthropic::default()
            .decode(
                br#"{"type":"message","content":[{"type":"thinking","thinking":"hm"},{"type":"text","text":"posi"},{"type":"text","text":"tive"}],
                "usage":{"input_tokens":10,"output_tokens":4,"cache_read_input_tokens":30,"cache_creation_input_tokens":5}}"#,
                &Secrets::default(),
            )
            .unwrap();
        assert_eq!(reply.content, "positive");
        assert_eq!(
            reply.usage,
            Usage {
                prompt: Some(45),
                completion: Some(4),
                cached_prompt: Some(30),
                cache_write: Some(5),
                reasoning: None,
            }
        );
        let e = Anthropic::default()
            .decode(
                br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
                &Secrets::default(),
            )
            .unwrap_err();
        assert!(
            matches!(e, ClientError::Throttled { status: 529, .. }),
            "{e:?}"
        );
    }

    const EVENTS: &str = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"content\":[],\"usage\":{\"input_tokens\":7,\"cache_read_input_tokens\":3,\"output_tokens\":1}}}\n\n\
        event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
        event: ping\ndata: {\"type\": \"ping\"}\n\n";

    #[test]
    fn a_stream_begins_at_its_first_text_delta() {
        let secrets = Secrets::default();
        let mut d = STREAM.decoder(&secrets);
        assert!(
            !d.feed(EVENTS.as_bytes()).unwrap(),
            "control events are no text"
        );
        assert!(d
            .feed(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hel\"}}\n\n")
            .unwrap());
        d.feed(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"lo\"}}\n\n")
            .unwrap();
        d.feed(
            b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
        )
        .unwrap();
        d.feed(b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\"},\"usage\":{\"output_tokens\":12}}\n\n")
            .unwrap();
        d.feed(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n")
            .unwrap();
        let reply = d.finish().unwrap();
        assert_eq!(reply.content, "Hello");
        assert_eq!(
            (
                reply.usage.prompt,
                reply.usage.completion,
                reply.usage.cached_prompt
            ),
            (Some(10), Some(12), Some(3))
        );
    }

    #[test]
    fn an_overloaded_event_is_throttling_and_a_stream_without_stop_is_cut() {
        let secrets = Secrets::default();
        let mut d = STREAM.decoder(&secrets);
        d.feed(EVENTS.as_bytes()).unwrap();
        let e = d
            .feed(b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n")
            .unwrap_err();
        assert!(
            matches!(e, ClientError::Throttled { status: 529, .. }),
            "{e:?}"
        );
        assert_eq!(e.kind().to_string(), "http_529");

        let mut d = STREAM.decoder(&secrets);
        d.feed(EVENTS.as_bytes()).unwrap();
        d.feed(b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hal\"}}\n\n")
            .unwrap();
        let e = d.finish().unwrap_err();
        assert_eq!(e.kind().to_string(), "stream_cut");
        assert!(e.to_string().contains("Hal"), "{e}");
    }

    #[test]
    fn a_529_is_throttling_with_its_hint() {
        let a = Anthropic::default();
        assert!(a.is_throttled(529) && a.is_throttled(429) && !a.is_throttled(500));
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("7"));
        assert_eq!(a.retry_hint(529, &h), Some(Duration::from_secs(7)));
    }
}
