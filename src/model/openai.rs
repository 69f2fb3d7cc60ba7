//! The OpenAI chat-completions API, which most servers speak (vLLM, llama.cpp,
//! LiteLLM, Ollama, the built-in mock): `POST {base_url}/chat/completions`
//! with a bearer token, `choices[0].message.content` back.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, AUTHORIZATION};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::stream::{self, EventReader};
use super::transport::{excerpt, retry_hint};
use super::{Api, ApiOptions, ClientError, Decoder, Hosted, Message, Outgoing, Provider, Reply};
use crate::secrets::Secrets;
use crate::usage::Usage;

/// `provider: openai`: OpenAI itself, or any server that speaks its API.
pub const PROVIDER: Provider = Provider {
    name: "openai",
    hosted: Some(Hosted {
        base_url: "https://api.openai.com/v1",
        base_url_env: "OPENAI_BASE_URL",
        key_env: "OPENAI_API_KEY",
    }),
    api: |options| Arc::new(OpenAi::new(options)),
    streams: true,
    reserved: &[],
};

/// An OpenAI-compatible endpoint.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenAi {
    stream: bool,
}

impl OpenAi {
    pub fn new(options: &ApiOptions) -> OpenAi {
        OpenAi {
            stream: options.stream,
        }
    }
}

/// The request body: `model`, `messages`, then the spec's `params` as-is;
/// a streamed request asks for the usage at the stream's end (servers send
/// no token counts in a stream otherwise).
#[derive(Serialize)]
struct Request<'a> {
    model: &'a str,
    messages: &'a [Message],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<Value>,
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

    fn encode(&self, request: &Outgoing<'_>) -> Result<Vec<u8>, String> {
        let Outgoing {
            model,
            messages,
            params,
            ..
        } = *request;
        let mut params = std::borrow::Cow::Borrowed(params);
        let stream_options = self.stream.then(|| {
            let mut options = match params.to_mut().remove("stream_options") {
                Some(Value::Object(o)) => o,
                _ => Map::new(),
            };
            options.insert("include_usage".into(), Value::Bool(true));
            Value::Object(options)
        });
        serde_json::to_vec(&Request {
            model,
            messages,
            stream: self.stream,
            stream_options,
            params: &params,
        })
        .map_err(|e| e.to_string())
    }

    fn decode(&self, body: &[u8], secrets: &Secrets) -> Result<Reply, ClientError> {
        parse_reply(body, secrets)
    }

    fn decoder<'a>(&'a self, secrets: &'a Secrets) -> Box<dyn Decoder + 'a> {
        stream::decoder(self, self.stream, ChatEvents, secrets)
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

/// A streamed chat completion: `data:` chunks whose `choices[0].delta.content`
/// carry the text (the first chunk usually only the role: no text yet), the
/// usage in a last chunk without choices, then `data: [DONE]`.
struct ChatEvents;

impl EventReader for ChatEvents {
    const END: &'static str = "`data: [DONE]`";

    fn event(
        &self,
        name: &str,
        data: &str,
        reply: &mut Reply,
        secrets: &Secrets,
    ) -> Result<bool, ClientError> {
        if data == "[DONE]" {
            return Ok(true);
        }
        // Most chunks are one piece of text: read it without building a tree.
        if let Ok(chunk) = serde_json::from_str::<TextChunk>(data) {
            if chunk.error.is_none() && chunk.usage.is_none() {
                if let Some(text) = chunk
                    .choices
                    .first()
                    .and_then(|c| c.delta.content.as_deref())
                {
                    reply.content.push_str(text);
                }
                return Ok(false);
            }
        }
        let chunk = stream::json(name, data, secrets)?;
        if let Some(error) = chunk.get("error").filter(|e| !e.is_null()) {
            return Err(ClientError::ErrorReply(excerpt(
                error_message(error).as_bytes(),
                secrets,
            )));
        }
        if let Some(text) = chunk
            .pointer("/choices/0/delta/content")
            .and_then(Value::as_str)
        {
            reply.content.push_str(text);
        }
        if let Some(u) = chunk.get("usage").filter(|u| u.is_object()) {
            reply.usage = usage(u);
        }
        Ok(false)
    }
}

/// A streamed chunk as most are: text in `choices[0].delta.content` (or
/// none), no usage, no error. Anything else is read as a `Value`.
#[derive(Deserialize)]
struct TextChunk<'a> {
    #[serde(borrow, default)]
    choices: Vec<TextChoice<'a>>,
    #[serde(default)]
    usage: Option<serde::de::IgnoredAny>,
    #[serde(default)]
    error: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct TextChoice<'a> {
    #[serde(borrow, default)]
    delta: TextDelta<'a>,
}

#[derive(Deserialize, Default)]
struct TextDelta<'a> {
    #[serde(borrow, default)]
    content: Option<std::borrow::Cow<'a, str>>,
}

/// An `error` value's message: its `message` when it has one.
fn error_message(error: &Value) -> String {
    match error {
        Value::String(s) => s.clone(),
        Value::Object(o) => match o.get("message") {
            Some(Value::String(s)) => s.clone(),
            _ => error.to_string(),
        },
        other => other.to_string(),
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
            return Err(ClientError::ErrorReply(excerpt(
                error_message(error).as_bytes(),
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
    Ok(Reply {
        content,
        usage: reply.usage.as_ref().map(usage).unwrap_or_default(),
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

/// Chat completions' `usage`: `prompt_tokens` (cached ones included, as
/// `prompt_tokens_details.cached_tokens`) and `completion_tokens` (reasoning
/// included, as `completion_tokens_details.reasoning_tokens`).
pub(super) fn usage(usage: &Value) -> Usage {
    let count = |path: &str| usage.pointer(path).and_then(token_count);
    Usage {
        prompt: count("/prompt_tokens"),
        completion: count("/completion_tokens"),
        cached_prompt: count("/prompt_tokens_details/cached_tokens"),
        cache_write: None,
        reasoning: count("/completion_tokens_details/reasoning_tokens"),
    }
}

/// A token count from `usage`: a whole, non-negative number. Anything else
/// (negative, fractional, text) is ignored rather than spoiling the reply.
pub(super) fn token_count(value: &Value) -> Option<u64> {
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
        OpenAi::default().decode(bytes, secrets)
    }

    #[test]
    fn parses_openai_reply() {
        let body = br#"{"choices":[{"message":{"role":"assistant","content":"hi"}}],"usage":{"prompt_tokens":5,"completion_tokens":1}}"#;
        let c = parse_reply(body, Duration::ZERO, &Secrets::default()).unwrap();
        assert_eq!(
            (c.content.as_str(), c.usage.prompt, c.usage.completion),
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
                (c.content.as_str(), c.usage.prompt, c.usage.completion),
                ("hi", None, None),
                "{usage}"
            );
        }
        // Whole numbers written as floats are counts; each count stands alone.
        let c = parse(r#"{"choices":[{"message":{"content":"hi"}}],"usage":{"prompt_tokens":7.0,"completion_tokens":-1}}"#).unwrap();
        assert_eq!((c.usage.prompt, c.usage.completion), (Some(7), None));
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

    const STREAM: OpenAi = OpenAi { stream: true };

    #[test]
    fn a_stream_begins_at_its_first_text_not_its_role_chunk() {
        let secrets = Secrets::default();
        let mut d = STREAM.decoder(&secrets);
        let role = r#"data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}"#;
        assert!(!d.feed(format!("{role}\n\n").as_bytes()).unwrap());
        assert!(!d.feed(b"data: {\"choices\":[{\"delta\":{\"cont").unwrap());
        assert!(d.feed(b"ent\":\"Hel\"}}]}\n\n").unwrap());
        d.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"lo\"},\"finish_reason\":\"stop\"}]}\n\n")
            .unwrap();
        d.feed(br#"data: {"choices":[],"usage":{"prompt_tokens":9,"completion_tokens":5,"prompt_tokens_details":{"cached_tokens":4},"completion_tokens_details":{"reasoning_tokens":3}}}"#)
            .unwrap();
        d.feed(b"\n\ndata: [DONE]\n\n").unwrap();
        let reply = d.finish().unwrap();
        assert_eq!(reply.content, "Hello");
        assert_eq!(
            reply.usage,
            Usage {
                prompt: Some(9),
                completion: Some(5),
                cached_prompt: Some(4),
                cache_write: None,
                reasoning: Some(3),
            }
        );
    }

    #[test]
    fn a_stream_without_done_is_cut_and_an_error_chunk_fails() {
        let secrets = Secrets::default();
        let mut d = STREAM.decoder(&secrets);
        d.feed(b"data: {\"choices\":[{\"delta\":{\"content\":\"partial answ\"}}]}\n\n")
            .unwrap();
        let e = d.finish().unwrap_err();
        assert_eq!(e.kind().to_string(), "stream_cut");
        assert!(e.to_string().contains("partial answ"), "{e}");
        assert!(e.is_retryable());

        let mut d = STREAM.decoder(&secrets);
        let e = d
            .feed(b"data: {\"error\":{\"message\":\"overloaded\",\"type\":\"server_error\"}}\n\n")
            .unwrap_err();
        assert_eq!(e, ClientError::ErrorReply("overloaded".into()));
    }

    #[test]
    fn a_streamed_request_asks_for_usage() {
        let params: Map<String, Value> =
            serde_json::from_str(r#"{"temperature":0,"stream_options":{"foo":1}}"#).unwrap();
        let body = STREAM.encode(&Outgoing::bare("m", &[], &params)).unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(body["stream"], true);
        assert_eq!(
            body["stream_options"],
            serde_json::json!({"foo": 1, "include_usage": true})
        );
        assert_eq!(body["temperature"], 0);
        let whole: Value = serde_json::from_slice(
            &OpenAi::default()
                .encode(&Outgoing::bare("m", &[], &Map::new()))
                .unwrap(),
        )
        .unwrap();
        assert!(whole.get("stream").is_none() && whole.get("stream_options").is_none());
    }
}

#[cfg(test)]
mod bench {
    use super::*;

    /// CPU of decoding a 13-word streamed reply (17 events): `cargo test
    /// --release --lib decode_cost -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn decode_cost() {
        let mut body = String::from("data: {\"choices\":[{\"delta\":{\"content\":\"\",\"role\":\"assistant\"},\"finish_reason\":null,\"index\":0}],\"created\":1796666956,\"id\":\"chatcmpl-0\",\"model\":\"m\",\"object\":\"chat.completion.chunk\",\"usage\":null}\n\n");
        for w in 0..13 {
            body += &format!("data: {{\"choices\":[{{\"delta\":{{\"content\":\"word{w} \"}},\"finish_reason\":null,\"index\":0}}],\"created\":1796666956,\"id\":\"chatcmpl-0\",\"model\":\"m\",\"object\":\"chat.completion.chunk\",\"usage\":null}}\n\n");
        }
        body += "data: {\"choices\":[],\"created\":1796666956,\"id\":\"chatcmpl-0\",\"model\":\"m\",\"object\":\"chat.completion.chunk\",\"usage\":{\"completion_tokens\":13,\"prompt_tokens\":13,\"total_tokens\":26}}\n\ndata: [DONE]\n\n";
        let api = OpenAi { stream: true };
        let secrets = Secrets::default();
        let n = 50_000;
        let started = std::time::Instant::now();
        for _ in 0..n {
            let mut d = api.decoder(&secrets);
            d.feed(body.as_bytes()).unwrap();
            std::hint::black_box(d.finish().unwrap());
        }
        let whole = started.elapsed();
        println!(
            "{:.2} us per streamed reply",
            whole.as_secs_f64() * 1e6 / n as f64
        );
    }
}
