//! OpenAI's Responses API, which its reasoning models are served by:
//! `POST {base_url}/responses` with `input` (the conversation) and
//! `instructions` (the system messages); the answer is the text of the
//! `message` items of `output`. Streamed, its events are named
//! `response.output_text.delta` ... `response.completed`.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::Value;

use super::openai::{token_count, OpenAi};
use super::stream::{self, EventReader};
use super::transport::{excerpt, retry_hint};
use super::{
    Api, ApiOptions, ClientError, Decoder, Hosted, Message, Outgoing, Provider, Reply, Role,
};
use crate::secrets::Secrets;
use crate::usage::Usage;

/// `provider: openai_responses`.
pub const PROVIDER: Provider = Provider {
    name: "openai_responses",
    hosted: Some(Hosted {
        base_url: "https://api.openai.com/v1",
        base_url_env: "OPENAI_BASE_URL",
        key_env: "OPENAI_API_KEY",
    }),
    api: |options| Arc::new(Responses::new(options)),
    streams: true,
    reserved: &[
        (
            "input",
            "write the conversation with the spec's top-level `prompt` or `messages`: it is sent as `input`",
        ),
        (
            "instructions",
            "write them as a `messages` entry with `role: system`: it is sent as `instructions`",
        ),
    ],
};

/// The Responses API.
#[derive(Debug, Clone, Copy, Default)]
pub struct Responses {
    stream: bool,
}

impl Responses {
    pub fn new(options: &ApiOptions) -> Responses {
        Responses {
            stream: options.stream,
        }
    }
}

impl Api for Responses {
    fn path(&self) -> &str {
        "/responses"
    }

    fn auth_headers(&self, key: &str) -> Result<HeaderMap, String> {
        OpenAi::default().auth_headers(key)
    }

    /// `params` first (a `max_tokens` there is sent as the API's
    /// `max_output_tokens`), then `model`, `input` and `instructions`.
    fn encode(&self, request: &Outgoing<'_>) -> Result<Vec<u8>, String> {
        let Outgoing {
            model,
            messages,
            params,
            ..
        } = *request;
        let mut body = params.clone();
        if let Some(max) = body.remove("max_tokens") {
            body.entry("max_output_tokens").or_insert(max);
        }
        let (system, turns): (Vec<&Message>, Vec<&Message>) =
            messages.iter().partition(|m| m.role == Role::System);
        if !system.is_empty() {
            let text: Vec<&str> = system.iter().map(|m| m.content.as_str()).collect();
            body.insert("instructions".into(), Value::String(text.join("\n\n")));
        }
        body.insert("model".into(), Value::String(model.into()));
        body.insert(
            "input".into(),
            serde_json::to_value(turns).map_err(|e| e.to_string())?,
        );
        if self.stream {
            body.insert("stream".into(), Value::Bool(true));
        }
        serde_json::to_vec(&body).map_err(|e| e.to_string())
    }

    fn decode(&self, body: &[u8], secrets: &Secrets) -> Result<Reply, ClientError> {
        let response: Value = serde_json::from_slice(body).map_err(|e| {
            ClientError::Malformed(format!("{e}; body starts: {}", excerpt(body, secrets)))
        })?;
        read_response(&response, secrets).ok_or_else(|| {
            ClientError::Malformed(format!(
                "no `output` list in reply; body starts: {}",
                excerpt(body, secrets)
            ))
        })?
    }

    fn decoder<'a>(&'a self, secrets: &'a Secrets) -> Box<dyn Decoder + 'a> {
        stream::decoder(self, self.stream, ResponseEvents, secrets)
    }

    fn is_throttled(&self, status: u16) -> bool {
        OpenAi::default().is_throttled(status)
    }

    fn retry_hint(&self, status: u16, headers: &HeaderMap) -> Option<Duration> {
        retry_hint(status, headers)
    }
}

/// A response object: its error, or its text and usage; `None` when it has
/// no `output` list.
fn read_response(response: &Value, secrets: &Secrets) -> Option<Result<Reply, ClientError>> {
    if let Some(error) = response.get("error").filter(|e| !e.is_null()) {
        let message = error
            .get("message")
            .and_then(Value::as_str)
            .map_or_else(|| error.to_string(), str::to_owned);
        return Some(Err(ClientError::ErrorReply(excerpt(
            message.as_bytes(),
            secrets,
        ))));
    }
    let output = response.get("output")?.as_array()?;
    let content = output
        .iter()
        .filter(|item| item.get("type").and_then(Value::as_str) == Some("message"))
        .filter_map(|item| item.get("content").and_then(Value::as_array))
        .flatten()
        .filter(|part| part.get("type").and_then(Value::as_str) == Some("output_text"))
        .filter_map(|part| part.get("text").and_then(Value::as_str))
        .collect();
    Some(Ok(Reply {
        content,
        usage: response.get("usage").map(usage).unwrap_or_default(),
    }))
}

/// The Responses API's `usage`: `input_tokens` (cached ones included, as
/// `input_tokens_details.cached_tokens`), `output_tokens` (reasoning
/// included, as `output_tokens_details.reasoning_tokens`).
fn usage(u: &Value) -> Usage {
    let count = |path: &str| u.pointer(path).and_then(token_count);
    Usage {
        prompt: count("/input_tokens"),
        completion: count("/output_tokens"),
        cached_prompt: count("/input_tokens_details/cached_tokens"),
        cache_write: None,
        reasoning: count("/output_tokens_details/reasoning_tokens"),
    }
}

/// A streamed response: text from `response.output_text.delta`, the usage
/// from the `response.completed` (or `response.incomplete`, when a limit
/// ended it) that ends it.
struct ResponseEvents;

impl EventReader for ResponseEvents {
    const END: &'static str = "`response.completed` event";

    fn event(
        &self,
        name: &str,
        data: &str,
        reply: &mut Reply,
        secrets: &Secrets,
    ) -> Result<bool, ClientError> {
        let event = stream::json(name, data, secrets)?;
        match event.get("type").and_then(Value::as_str).unwrap_or(name) {
            "response.output_text.delta" => {
                if let Some(text) = event.get("delta").and_then(Value::as_str) {
                    reply.content.push_str(text);
                }
            }
            "response.completed" | "response.incomplete" => {
                if let Some(u) = event.pointer("/response/usage") {
                    reply.usage = usage(u);
                }
                return Ok(true);
            }
            "response.failed" => {
                let response = event.get("response").unwrap_or(&event);
                return Err(match read_response(response, secrets) {
                    Some(Err(e)) => e,
                    _ => ClientError::ErrorReply("the response failed".into()),
                });
            }
            "error" => {
                let message = event
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("an error event");
                return Err(ClientError::ErrorReply(excerpt(
                    message.as_bytes(),
                    secrets,
                )));
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

    const STREAM: Responses = Responses { stream: true };

    #[test]
    fn system_messages_become_instructions_and_max_tokens_its_name() {
        let m = |role, content: &str| Message {
            role,
            content: content.into(),
        };
        let params: Map<String, Value> =
            serde_json::from_str(r#"{"max_tokens": 50, "reasoning": {"effort": "low"}}"#).unwrap();
        let body = STREAM
            .encode(&Outgoing::bare(
                "o4-mini",
                &[m(Role::System, "Be brief."), m(Role::User, "Hi")],
                &params,
            ))
            .unwrap();
        let b: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(b["instructions"], "Be brief.");
        assert_eq!(
            b["input"],
            serde_json::json!([{"role": "user", "content": "Hi"}])
        );
        assert_eq!(b["max_output_tokens"], 50);
        assert!(b.get("max_tokens").is_none());
        assert_eq!(
            (&b["stream"], &b["reasoning"]["effort"]),
            (&true.into(), &"low".into())
        );
    }

    #[test]
    fn the_answer_is_the_message_items_text_and_reasoning_is_counted() {
        let body = br#"{"object":"response","status":"completed","output":[
            {"type":"reasoning","id":"rs_1","summary":[]},
            {"type":"message","role":"assistant","content":[{"type":"output_text","text":"posi","annotations":[]},{"type":"output_text","text":"tive"}]}],
            "usage":{"input_tokens":20,"input_tokens_details":{"cached_tokens":8},"output_tokens":30,"output_tokens_details":{"reasoning_tokens":24},"total_tokens":50}}"#;
        let reply = Responses::default()
            .decode(body, &Secrets::default())
            .unwrap();
        assert_eq!(reply.content, "positive");
        assert_eq!(
            reply.usage,
            Usage {
                prompt: Some(20),
                completion: Some(30),
                cached_prompt: Some(8),
                cache_write: None,
                reasoning: Some(24),
            }
        );
        let failed =
            br#"{"status":"failed","error":{"code":"server_error","message":"boom"},"output":[]}"#;
        assert_eq!(
            Responses::default().decode(failed, &Secrets::default()),
            Err(ClientError::ErrorReply("boom".into()))
        );
    }

    #[test]
    fn a_stream_reads_its_deltas_and_ends_at_completed() {
        let secrets = Secrets::default();
        let mut d = STREAM.decoder(&secrets);
        assert!(!d
            .feed(b"event: response.created\ndata: {\"type\":\"response.created\",\"response\":{}}\n\n")
            .unwrap());
        assert!(d
            .feed(b"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\n")
            .unwrap());
        let mut cut_short = STREAM.decoder(&secrets);
        cut_short
            .feed(b"event: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"delta\":\"Hi\"}\n\n")
            .unwrap();
        assert_eq!(
            cut_short.finish().unwrap_err().kind().to_string(),
            "stream_cut"
        );
        d.feed(b"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":3,\"output_tokens\":9,\"output_tokens_details\":{\"reasoning_tokens\":7}}}}\n\n")
            .unwrap();
        let reply = d.finish().unwrap();
        assert_eq!(reply.content, "Hi");
        assert_eq!(
            (reply.usage.completion, reply.usage.reasoning),
            (Some(9), Some(7))
        );
    }
}
