//! The three APIs the server speaks: which one a path is, what a request's
//! prompt is in each, and a reply's body in each, whole or as the events of
//! a stream (the frames only; `stream` schedules and writes them).

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

use super::Received;

/// An API, by the path it is served on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Api {
    /// OpenAI chat completions, `POST /v1/chat/completions`.
    Chat,
    /// Anthropic Messages, `POST /v1/messages`.
    Messages,
    /// OpenAI Responses, `POST /v1/responses`.
    Responses,
}

impl Api {
    /// The paths served, for the routers.
    pub(super) const PATHS: [&'static str; 3] =
        ["/v1/chat/completions", "/v1/messages", "/v1/responses"];

    pub(super) fn of_path(path: &str) -> Option<Api> {
        match path {
            "/v1/chat/completions" => Some(Api::Chat),
            "/v1/messages" => Some(Api::Messages),
            "/v1/responses" => Some(Api::Responses),
            _ => None,
        }
    }

    /// What responders see of a request: its texts joined by newlines.
    pub(super) fn prompt(self, body: &Value) -> String {
        let mut parts: Vec<&str> = Vec::new();
        match self {
            // As it always was: string contents only.
            Api::Chat => {
                for m in array(body, "messages") {
                    parts.extend(m.get("content").and_then(Value::as_str));
                }
            }
            Api::Messages => {
                if let Some(system) = body.get("system") {
                    texts(system, &mut parts);
                }
                for m in array(body, "messages") {
                    if let Some(content) = m.get("content") {
                        texts(content, &mut parts);
                    }
                }
            }
            Api::Responses => {
                parts.extend(body.get("instructions").and_then(Value::as_str));
                match body.get("input") {
                    Some(Value::String(s)) => parts.push(s),
                    Some(Value::Array(items)) => {
                        for item in items {
                            if let Some(content) = item.get("content") {
                                texts(content, &mut parts);
                            }
                        }
                    }
                    _ => {}
                }
            }
        }
        parts.join("\n")
    }
}

fn array<'a>(body: &'a Value, key: &str) -> &'a [Value] {
    body.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

/// A string, or the `text` of each block of a list (Anthropic's content
/// blocks, the Responses API's content parts).
fn texts<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::String(s) => out.push(s),
        Value::Array(blocks) => {
            out.extend(
                blocks
                    .iter()
                    .filter_map(|b| b.get("text").and_then(Value::as_str)),
            );
        }
        _ => {}
    }
}

/// The token counts set on the builder, reported in every usage object.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Tokens {
    pub(super) cached: u64,
    pub(super) reasoning: u64,
    pub(super) cache_write: u64,
}

/// The usage of one reply: the prompt's words, the content's words, and the
/// builder's counts.
struct Usage {
    prompt: u64,
    content: u64,
    t: Tokens,
}

impl Usage {
    fn of(received: &Received, content: &str, t: Tokens) -> Usage {
        Usage {
            prompt: received.prompt.split_whitespace().count() as u64,
            content: content.split_whitespace().count() as u64,
            t,
        }
    }

    fn output(&self) -> u64 {
        self.content + self.t.reasoning
    }

    fn chat(&self) -> Value {
        json!({
            "prompt_tokens": self.prompt,
            "completion_tokens": self.output(),
            "total_tokens": self.prompt + self.output(),
            "prompt_tokens_details": {"cached_tokens": self.t.cached},
            "completion_tokens_details": {"reasoning_tokens": self.t.reasoning}
        })
    }

    /// Anthropic's: `input_tokens` leaves out the cached tokens.
    fn messages(&self, output_tokens: u64) -> Value {
        json!({
            "input_tokens": self.prompt.saturating_sub(self.t.cached),
            "cache_creation_input_tokens": self.t.cache_write,
            "cache_read_input_tokens": self.t.cached,
            "output_tokens": output_tokens
        })
    }

    fn responses(&self) -> Value {
        json!({
            "input_tokens": self.prompt,
            "input_tokens_details": {"cached_tokens": self.t.cached},
            "output_tokens": self.output(),
            "output_tokens_details": {"reasoning_tokens": self.t.reasoning},
            "total_tokens": self.prompt + self.output()
        })
    }
}

fn model(received: &Received) -> Value {
    received.body.get("model").cloned().unwrap_or(Value::Null)
}

fn now_seconds() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The whole (non-streamed) body of a reply with `content`, in the shape of
/// `api`.
pub(super) fn whole_body(api: Api, received: &Received, content: &str, t: Tokens) -> String {
    let usage = Usage::of(received, content, t);
    let body = match api {
        Api::Chat => json!({
            "id": format!("chatcmpl-{}", received.index),
            "object": "chat.completion",
            "model": model(received),
            "choices": [{
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop"
            }],
            "usage": usage.chat()
        }),
        Api::Messages => json!({
            "id": format!("msg_{}", received.index),
            "type": "message",
            "role": "assistant",
            "model": model(received),
            "content": [{"type": "text", "text": content}],
            "stop_reason": "end_turn",
            "stop_sequence": null,
            "usage": usage.messages(usage.output())
        }),
        Api::Responses => response_object(received, "completed", content, &usage),
    };
    body.to_string()
}

/// A Responses API response object; `output` and `usage` only once completed.
fn response_object(received: &Received, status: &str, content: &str, usage: &Usage) -> Value {
    let done = status == "completed";
    json!({
        "id": format!("resp_{}", received.index),
        "object": "response",
        "created_at": now_seconds(),
        "status": status,
        "model": model(received),
        "output": if done {
            json!([reasoning_item(received), message_item(received, "completed", content)])
        } else {
            json!([])
        },
        "usage": if done { usage.responses() } else { Value::Null }
    })
}

fn reasoning_item(received: &Received) -> Value {
    json!({"type": "reasoning", "id": format!("rs_{}", received.index), "summary": []})
}

fn message_item(received: &Received, status: &str, content: &str) -> Value {
    let parts = if status == "completed" {
        json!([output_text(content)])
    } else {
        json!([])
    };
    json!({
        "type": "message",
        "id": format!("msg_{}", received.index),
        "role": "assistant",
        "status": status,
        "content": parts
    })
}

fn output_text(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": []})
}

/// `content` cut on word boundaries: each word with the whitespace after it
/// (the first also with any before it), so the pieces join back to `content`.
pub(super) fn pieces(content: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut in_word = false;
    let mut seen_word = false;
    for (i, c) in content.char_indices() {
        let space = c.is_whitespace();
        if !space && !in_word && seen_word {
            out.push(&content[start..i]);
            start = i;
        }
        if !space {
            seen_word = true;
        }
        in_word = !space;
    }
    if start < content.len() {
        out.push(&content[start..]);
    }
    out
}

/// The events of a streamed reply, each an SSE frame: those before the text,
/// one per piece of text, and those after it (the terminator last).
pub(super) struct Events {
    pub(super) control: Vec<String>,
    pub(super) pieces: Vec<String>,
    pub(super) tail: Vec<String>,
    api: Api,
}

/// `data: <json>`: a chat frame.
fn data(v: &Value) -> String {
    format!("data: {v}\n\n")
}

/// `event: <type>` and `data: <json>`: an Anthropic or Responses API frame.
fn event(v: &Value) -> String {
    let name = v.get("type").and_then(Value::as_str).unwrap_or("message");
    format!("event: {name}\ndata: {v}\n\n")
}

/// The events of a reply with `content`, in the shape of `api`.
pub(super) fn events(api: Api, received: &Received, content: &str, t: Tokens) -> Events {
    let usage = Usage::of(received, content, t);
    let texts = pieces(content);
    let (control, pieces, tail) = match api {
        Api::Chat => chat_events(received, &texts, &usage),
        Api::Messages => messages_events(received, &texts, &usage),
        Api::Responses => responses_events(received, content, &texts, &usage),
    };
    Events {
        control,
        pieces,
        tail,
        api,
    }
}

type Frames = (Vec<String>, Vec<String>, Vec<String>);

fn chat_events(received: &Received, texts: &[&str], usage: &Usage) -> Frames {
    let include_usage = received
        .body
        .pointer("/stream_options/include_usage")
        .and_then(Value::as_bool)
        == Some(true);
    let created = now_seconds();
    let chunk = |choices: Value, usage: Option<Value>| {
        let mut c = json!({
            "id": format!("chatcmpl-{}", received.index),
            "object": "chat.completion.chunk",
            "created": created,
            "model": model(received),
            "choices": choices
        });
        // With include_usage every chunk has the field, null but the last.
        if include_usage {
            c["usage"] = usage.unwrap_or(Value::Null);
        }
        data(&c)
    };
    let choice = |delta: Value, finish: Value| json!([{"index": 0, "delta": delta, "finish_reason": finish}]);
    let control = vec![chunk(
        choice(json!({"role": "assistant", "content": ""}), Value::Null),
        None,
    )];
    let pieces = texts
        .iter()
        .map(|t| chunk(choice(json!({"content": t}), Value::Null), None))
        .collect();
    let mut tail = vec![chunk(choice(json!({}), json!("stop")), None)];
    if include_usage {
        tail.push(chunk(json!([]), Some(usage.chat())));
    }
    tail.push("data: [DONE]\n\n".to_owned());
    (control, pieces, tail)
}

fn messages_events(received: &Received, texts: &[&str], usage: &Usage) -> Frames {
    let control = vec![
        event(&json!({
            "type": "message_start",
            "message": {
                "id": format!("msg_{}", received.index),
                "type": "message",
                "role": "assistant",
                "model": model(received),
                "content": [],
                "stop_reason": null,
                "stop_sequence": null,
                "usage": usage.messages(1)
            }
        })),
        event(&json!({
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "text", "text": ""}
        })),
        event(&json!({"type": "ping"})),
    ];
    let pieces = texts
        .iter()
        .map(|t| {
            event(&json!({
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": t}
            }))
        })
        .collect();
    let tail = vec![
        event(&json!({"type": "content_block_stop", "index": 0})),
        event(&json!({
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn", "stop_sequence": null},
            "usage": {"output_tokens": usage.output()}
        })),
        event(&json!({"type": "message_stop"})),
    ];
    (control, pieces, tail)
}

fn responses_events(received: &Received, content: &str, texts: &[&str], usage: &Usage) -> Frames {
    let mut seq = 0u64;
    let mut ev = |mut v: Value| {
        v["sequence_number"] = json!(seq);
        seq += 1;
        event(&v)
    };
    let item_id = format!("msg_{}", received.index);
    let control = vec![
        ev(json!({
            "type": "response.created",
            "response": response_object(received, "in_progress", content, usage)
        })),
        ev(json!({
            "type": "response.in_progress",
            "response": response_object(received, "in_progress", content, usage)
        })),
        ev(json!({
            "type": "response.output_item.added",
            "output_index": 0,
            "item": reasoning_item(received)
        })),
        ev(json!({
            "type": "response.output_item.done",
            "output_index": 0,
            "item": reasoning_item(received)
        })),
        ev(json!({
            "type": "response.output_item.added",
            "output_index": 1,
            "item": message_item(received, "in_progress", content)
        })),
        ev(json!({
            "type": "response.content_part.added",
            "item_id": item_id,
            "output_index": 1,
            "content_index": 0,
            "part": output_text("")
        })),
    ];
    let pieces = texts
        .iter()
        .map(|t| {
            ev(json!({
                "type": "response.output_text.delta",
                "item_id": item_id,
                "output_index": 1,
                "content_index": 0,
                "delta": t
            }))
        })
        .collect();
    let tail = vec![
        ev(json!({
            "type": "response.output_text.done",
            "item_id": item_id,
            "output_index": 1,
            "content_index": 0,
            "text": content
        })),
        ev(json!({
            "type": "response.content_part.done",
            "item_id": item_id,
            "output_index": 1,
            "content_index": 0,
            "part": output_text(content)
        })),
        ev(json!({
            "type": "response.output_item.done",
            "output_index": 1,
            "item": message_item(received, "completed", content)
        })),
        ev(json!({
            "type": "response.completed",
            "response": response_object(received, "completed", content, usage)
        })),
    ];
    (control, pieces, tail)
}

/// The message an error of type `kind` carries.
pub(super) fn error_message(kind: &str) -> &'static str {
    match kind {
        "overloaded_error" => "Overloaded",
        "rate_limit_error" => "Rate limited",
        "api_error" => "Internal server error",
        _ => "Stream failed",
    }
}

impl Events {
    /// The error frame of a stream that fails after `sent` pieces.
    pub(super) fn error(&self, kind: &str, sent: usize) -> String {
        let message = error_message(kind);
        match self.api {
            Api::Chat => data(&json!({
                "error": {"message": message, "type": kind, "param": null, "code": null}
            })),
            Api::Messages => event(&json!({
                "type": "error",
                "error": {"type": kind, "message": message}
            })),
            Api::Responses => event(&json!({
                "type": "error",
                "sequence_number": self.control.len() + sent,
                "code": kind,
                "message": message,
                "param": null
            })),
        }
    }
}

/// The body of a 429 the server sends itself, in the shape of `api`.
pub(super) fn throttled_body(api: Api) -> String {
    match api {
        Api::Messages => anthropic_error_body("rate_limit_error", "slow down"),
        Api::Chat | Api::Responses => {
            json!({"error": {"message": "slow down", "type": "rate_limit"}}).to_string()
        }
    }
}

/// Anthropic's error body.
pub(super) fn anthropic_error_body(kind: &str, message: &str) -> String {
    json!({"type": "error", "error": {"type": kind, "message": message}}).to_string()
}
