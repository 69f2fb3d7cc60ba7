//! `provider: http`: any JSON API, without scripting. The spec writes the
//! request (`url`, `method`, `headers`, `body`, templates over the dataset
//! row, `prompt`, `messages`, `model` and `api_key`) and points at the answer
//! in the reply with JSON Pointers (RFC 6901): `output`, and optionally
//! `usage` and `error`.

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::Method;
use serde_json::Value;

use super::openai::{token_count, OpenAi};
use super::transport::{excerpt, retry_hint};
use super::{Api, ApiOptions, ClientError, Outgoing, Provider, Reply, Role};
use crate::secrets::Secrets;
use crate::template::Template;
use crate::usage::Usage;

/// `provider: http`.
pub const PROVIDER: Provider = Provider {
    name: "http",
    hosted: None,
    api: |options| Arc::new(JsonApi::new(options)),
    streams: false,
    reserved: &[],
};

/// Names a `body` or `headers` template may use beside the dataset's columns.
pub const PROVIDED: [&str; 4] = ["prompt", "messages", "model", "api_key"];

/// The request and where the answer is, as the spec writes them.
#[derive(Debug, Clone)]
pub struct JsonSpec {
    pub method: Method,
    /// Each header's name and value template.
    pub headers: Vec<(HeaderName, Template)>,
    /// `None`: the request has no body.
    pub body: Option<Body>,
    /// JSON Pointers into the reply.
    pub output: String,
    pub input_tokens: Option<String>,
    pub output_tokens: Option<String>,
    pub error: Option<String>,
}

/// A body template: the spec's YAML value with a template at every string.
#[derive(Debug, Clone)]
pub enum Body {
    /// No template in it: sent as written.
    Fixed(Value),
    /// A string with markup around or beside its one expression: text.
    Text(Template),
    /// A string that is one `{{ expression }}` and nothing else: the
    /// expression's value, whatever its type (`"{{ messages }}"` is a list).
    Whole(Template),
    List(Vec<Body>),
    Map(Vec<(String, Body)>),
}

impl Body {
    /// The body for `value`: every string compiled as a template (`at` names
    /// a string's place for the error).
    pub fn compile(value: &Value) -> Result<Body, (String, String)> {
        Ok(match value {
            Value::String(s) => match whole_expression(s) {
                Some(expression) => Body::Whole(
                    Template::compile(&format!("{{{{ ({expression}) | tojson }}}}"))
                        .map_err(|e| (String::new(), e.message))?,
                ),
                None => {
                    let t = Template::compile(s).map_err(|e| (String::new(), e.message))?;
                    match t.literal() {
                        Some(_) => Body::Fixed(value.clone()),
                        None => Body::Text(t),
                    }
                }
            },
            Value::Array(items) => Body::List(
                items
                    .iter()
                    .enumerate()
                    .map(|(i, v)| Body::compile(v).map_err(|(at, e)| (format!("[{i}]{at}"), e)))
                    .collect::<Result<_, _>>()?,
            ),
            Value::Object(map) => Body::Map(
                map.iter()
                    .map(|(k, v)| {
                        Body::compile(v)
                            .map(|b| (k.clone(), b))
                            .map_err(|(at, e)| (format!(".{k}{at}"), e))
                    })
                    .collect::<Result<_, _>>()?,
            ),
            other => Body::Fixed(other.clone()),
        })
    }

    /// Every template in it, with its place (`.messages`, `[0].text`).
    pub fn templates(&self) -> Vec<(String, &Template)> {
        match self {
            Body::Fixed(_) => Vec::new(),
            Body::Text(t) | Body::Whole(t) => vec![(String::new(), t)],
            Body::List(items) => items
                .iter()
                .enumerate()
                .flat_map(|(i, b)| {
                    b.templates()
                        .into_iter()
                        .map(move |(at, t)| (format!("[{i}]{at}"), t))
                })
                .collect(),
            Body::Map(entries) => entries
                .iter()
                .flat_map(|(k, b)| {
                    b.templates()
                        .into_iter()
                        .map(move |(at, t)| (format!(".{k}{at}"), t))
                })
                .collect(),
        }
    }

    fn render(&self, ctx: &minijinja::Value) -> Result<Value, String> {
        Ok(match self {
            Body::Fixed(v) => v.clone(),
            Body::Text(t) => Value::String(t.render(ctx)?),
            Body::Whole(t) => serde_json::from_str(&t.render(ctx)?)
                .map_err(|e| format!("the template's value is not JSON: {e}"))?,
            Body::List(items) => Value::Array(
                items
                    .iter()
                    .map(|b| b.render(ctx))
                    .collect::<Result<_, _>>()?,
            ),
            Body::Map(entries) => Value::Object(
                entries
                    .iter()
                    .map(|(k, b)| Ok((k.clone(), b.render(ctx)?)))
                    .collect::<Result<_, String>>()?,
            ),
        })
    }
}

/// The expression of a string that is exactly one `{{ ... }}`.
fn whole_expression(s: &str) -> Option<&str> {
    let inner = s.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.trim_matches('-').trim();
    (!inner.contains("{{") && !inner.contains("}}") && !inner.is_empty()).then_some(inner)
}

/// The API a [`JsonSpec`] describes.
pub struct JsonApi {
    spec: Option<Arc<JsonSpec>>,
    /// The headers rendered once (they may carry the key).
    headers: Result<HeaderMap, String>,
}

impl JsonApi {
    pub fn new(options: &ApiOptions) -> JsonApi {
        let headers = match &options.json {
            Some(spec) => render_headers(spec, options.api_key.as_deref()),
            None => Ok(HeaderMap::new()),
        };
        JsonApi {
            spec: options.json.clone(),
            headers,
        }
    }

    fn spec(&self) -> Result<&JsonSpec, String> {
        self.spec
            .as_deref()
            .ok_or_else(|| "provider `http` was built without its request".to_owned())
    }
}

/// The headers with `api_key` (which marks them sensitive: never logged).
fn render_headers(spec: &JsonSpec, key: Option<&str>) -> Result<HeaderMap, String> {
    let ctx = minijinja::context! { api_key => key };
    let mut headers = HeaderMap::new();
    for (name, template) in &spec.headers {
        let text = template
            .render(&ctx)
            .map_err(|e| format!("header `{name}`: {e}"))?;
        let mut value = HeaderValue::from_str(&text)
            .map_err(|_| format!("header `{name}` holds characters a header cannot carry"))?;
        value.set_sensitive(template.variables().contains("api_key"));
        headers.append(name.clone(), value);
    }
    Ok(headers)
}

impl Api for JsonApi {
    fn path(&self) -> &str {
        ""
    }

    fn method(&self) -> Method {
        self.spec
            .as_ref()
            .map_or(Method::POST, |s| s.method.clone())
    }

    /// The key is sent only where the spec's templates put it.
    fn auth_headers(&self, _: &str) -> Result<HeaderMap, String> {
        Ok(HeaderMap::new())
    }

    /// The spec's headers; one that cannot be built fails the client before
    /// any request.
    fn headers(&self) -> Result<HeaderMap, String> {
        self.headers.clone()
    }

    fn encode(&self, request: &Outgoing<'_>) -> Result<Vec<u8>, String> {
        let spec = self.spec()?;
        let Some(body) = &spec.body else {
            return Ok(Vec::new());
        };
        let prompt = request
            .messages
            .iter()
            .rev()
            .find(|m| m.role == Role::User)
            .map_or("", |m| m.content.as_str());
        let ctx = minijinja::context! {
            prompt => prompt,
            messages => minijinja::Value::from_serialize(request.messages),
            model => request.model,
            api_key => request.api_key,
            ..request.row.clone()
        };
        let value = body.render(&ctx).map_err(|e| format!("body: {e}"))?;
        serde_json::to_vec(&value).map_err(|e| e.to_string())
    }

    fn decode(&self, body: &[u8], secrets: &Secrets) -> Result<Reply, ClientError> {
        let spec = self.spec().map_err(ClientError::Malformed)?;
        let reply: Value = serde_json::from_slice(body).map_err(|e| {
            ClientError::Malformed(format!("{e}; body starts: {}", excerpt(body, secrets)))
        })?;
        if let Some(error) = spec
            .error
            .as_deref()
            .and_then(|p| reply.pointer(p))
            .filter(|e| !e.is_null())
        {
            let message = match error {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            return Err(ClientError::ErrorReply(excerpt(
                message.as_bytes(),
                secrets,
            )));
        }
        let content = match reply.pointer(&spec.output) {
            Some(Value::String(s)) => s.clone(),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => v.to_string(),
            _ => {
                return Err(ClientError::NoOutput {
                    pointer: spec.output.clone(),
                    body: excerpt(body, secrets),
                })
            }
        };
        let count = |p: &Option<String>| {
            p.as_deref()
                .and_then(|p| reply.pointer(p))
                .and_then(token_count)
        };
        Ok(Reply {
            content,
            usage: Usage {
                prompt: count(&spec.input_tokens),
                completion: count(&spec.output_tokens),
                ..Usage::default()
            },
        })
    }

    /// 429 and 503, as most HTTP services say "slow down".
    fn is_throttled(&self, status: u16) -> bool {
        OpenAi::default().is_throttled(status)
    }

    fn retry_hint(&self, status: u16, headers: &HeaderMap) -> Option<Duration> {
        retry_hint(status, headers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Message;

    fn api(body: &str, output: &str) -> JsonApi {
        let spec = JsonSpec {
            method: Method::POST,
            headers: vec![(
                HeaderName::from_static("x-api-key"),
                Template::compile("{{ api_key }}").unwrap(),
            )],
            body: Some(Body::compile(&serde_json::from_str(body).unwrap()).unwrap()),
            output: output.into(),
            input_tokens: Some("/usage/input_tokens".into()),
            output_tokens: Some("/usage/output_tokens".into()),
            error: Some("/error/message".into()),
        };
        JsonApi::new(&ApiOptions {
            json: Some(Arc::new(spec)),
            api_key: Some("sk-test".into()),
            ..ApiOptions::default()
        })
    }

    #[test]
    fn the_body_is_rendered_with_whole_values_where_a_string_is_one_expression() {
        let a = api(
            r#"{"model": "{{ model }}", "max_tokens": 5, "messages": "{{ messages }}",
                "text": "Review: {{ text }}", "n": "{{ n + 1 }}", "system": "fixed"}"#,
            "/content/0/text",
        );
        let messages = [Message {
            role: Role::User,
            content: "hi".into(),
        }];
        let row = minijinja::context! { text => "great", n => 41 };
        let params = serde_json::Map::new();
        let body = a
            .encode(&Outgoing {
                model: "claude",
                messages: &messages,
                params: &params,
                row: &row,
                api_key: Some("sk-test"),
            })
            .unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"model": "claude", "max_tokens": 5,
                "messages": [{"role": "user", "content": "hi"}],
                "text": "Review: great", "n": 42, "system": "fixed"})
        );
        let headers = a.headers().unwrap();
        assert_eq!(headers["x-api-key"], "sk-test");
        assert!(headers["x-api-key"].is_sensitive());
    }

    #[test]
    fn the_answer_usage_and_error_are_read_by_pointer() {
        let a = api(r#"{}"#, "/content/0/text");
        let s = Secrets::default();
        let reply = a
            .decode(
                br#"{"content":[{"type":"text","text":"positive"}],"usage":{"input_tokens":7,"output_tokens":1}}"#,
                &s,
            )
            .unwrap();
        assert_eq!(reply.content, "positive");
        assert_eq!(
            (reply.usage.prompt, reply.usage.completion),
            (Some(7), Some(1))
        );
        let e = a.decode(br#"{"choices":[]}"#, &s).unwrap_err();
        assert_eq!(e.kind().to_string(), "no_output");
        assert!(
            e.to_string().contains("/content/0/text") && e.to_string().contains("choices"),
            "{e}"
        );
        assert_eq!(
            a.decode(br#"{"error":{"message":"bad key"}}"#, &s),
            Err(ClientError::ErrorReply("bad key".into()))
        );
    }

    #[test]
    fn only_a_lone_expression_is_whole() {
        assert_eq!(whole_expression("{{ messages }}"), Some("messages"));
        assert_eq!(whole_expression(" {{- x | upper -}} "), Some("x | upper"));
        assert_eq!(whole_expression("{{ a }} and {{ b }}"), None);
        assert_eq!(whole_expression("Q: {{ a }}"), None);
    }
}
