//! A cache key: a hash of exactly what a request would send, and the parts
//! it was computed from, kept with the entry so `cache explain` can say
//! which of them differed.
//!
//! The parts are the provider, the endpoint URL, the request body as
//! canonical JSON (keys sorted, so a reordered `params` block still hits)
//! and, when the request is sampled, which repeat of its sample it is.
//! Every secret the client knows (the API key, a password in the URL, a
//! credential in the spec) is replaced by a marker before hashing: changing
//! a key never changes the hash, and no key is stored.

use serde_json::{json, Map, Value};

use crate::secrets::Secrets;

/// Bumped when what goes into a key changes: old entries then miss.
const VERSION: u32 = 1;

/// The hash of a request and the parts it was computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    /// 32 hex digits (xxh3-128 of `request`).
    pub hash: String,
    /// The parts as canonical JSON, secrets scrubbed: what was hashed.
    pub request: String,
}

/// Computes the keys of one endpoint's requests.
#[derive(Debug, Clone)]
pub struct Keyer {
    provider: String,
    /// The endpoint's URL (for the built-in mock, its replies instead: it
    /// listens on a new port every run).
    url: String,
    secrets: Secrets,
    /// Whether replies are sampled (temperature above 0 or unset, or
    /// repeats above 1): then each repeat of a sample has an entry of its own.
    sampled: bool,
}

impl Keyer {
    /// Keys for requests to `url` of `provider`; `params` (the model
    /// block's) and `repeats` say whether replies are sampled.
    pub fn new(
        provider: &str,
        url: &str,
        secrets: Secrets,
        params: &Map<String, Value>,
        repeats: u32,
    ) -> Keyer {
        let url = secrets.scrub(&without_userinfo(url)).into_owned();
        Keyer {
            provider: provider.to_owned(),
            url,
            secrets,
            sampled: is_sampled(params, repeats),
        }
    }

    /// The key of a request whose body is `body`, for repeat `repeat` of its sample.
    pub fn key(&self, body: &[u8], repeat: u32) -> CacheKey {
        // Parsed and written again: serde_json's maps are sorted, so the
        // text is canonical. A body that is not JSON is kept as text.
        let body = serde_json::from_slice::<Value>(body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(body).into_owned()));
        let mut parts = json!({
            "v": VERSION,
            "provider": self.provider,
            "url": self.url,
            "body": body,
        });
        if self.sampled {
            parts["repeat"] = json!(repeat);
        }
        let request = self.secrets.scrub(&parts.to_string()).into_owned();
        CacheKey {
            hash: format!("{:032x}", xxhash_rust::xxh3::xxh3_128(request.as_bytes())),
            request,
        }
    }
}

/// Whether replies to `params` vary from call to call: a temperature above
/// 0, or none set (providers default to 1), or several repeats asked for.
pub fn is_sampled(params: &Map<String, Value>, repeats: u32) -> bool {
    repeats > 1
        || params
            .get("temperature")
            .and_then(Value::as_f64)
            .is_none_or(|t| t > 0.0)
}

/// `url` without a `user:password@`.
fn without_userinfo(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            let _ = parsed.set_username("");
            let _ = parsed.set_password(None);
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

/// Body fields that carry the conversation, across the providers.
const MESSAGE_FIELDS: [&str; 5] = ["messages", "system", "input", "instructions", "prompt"];

/// What differs between two keys' parts, each named as a user would write
/// it (`params.max_tokens`, `messages[1].content`, `model`, `url`,
/// `repeat`), with both values: `(part, this, other)`.
pub fn differences(this: &str, other: &str) -> Vec<(String, String, String)> {
    let parse = |s: &str| serde_json::from_str::<Value>(s).unwrap_or(Value::Null);
    let (a, b) = (parse(this), parse(other));
    let mut out = Vec::new();
    for part in ["v", "provider", "url", "repeat"] {
        let name = if part == "v" { "key version" } else { part };
        push_if_differs(&mut out, name, a.get(part), b.get(part));
    }
    match (a.get("body"), b.get("body")) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let mut fields: Vec<&String> = x.keys().chain(y.keys()).collect();
            fields.sort();
            fields.dedup();
            for field in fields {
                // The model, the stream switch and the conversation are
                // named as they are; anything else came from `params`.
                let named = field == "model"
                    || field.starts_with("stream")
                    || MESSAGE_FIELDS.contains(&field.as_str());
                let name = match named {
                    true => field.clone(),
                    false => format!("params.{field}"),
                };
                diff_value(&mut out, name, x.get(field), y.get(field));
            }
        }
        (x, y) => push_if_differs(&mut out, "body", x, y),
    }
    out
}

/// Descends into lists of messages so the message and field that changed
/// are named; anything else is compared whole.
fn diff_value(
    out: &mut Vec<(String, String, String)>,
    name: String,
    a: Option<&Value>,
    b: Option<&Value>,
) {
    match (a, b) {
        (Some(Value::Array(x)), Some(Value::Array(y))) if x.len() == y.len() => {
            for (i, (p, q)) in x.iter().zip(y).enumerate() {
                diff_value(out, format!("{name}[{i}]"), Some(p), Some(q));
            }
        }
        (Some(Value::Object(x)), Some(Value::Object(y))) if name.contains('[') => {
            let mut fields: Vec<&String> = x.keys().chain(y.keys()).collect();
            fields.sort();
            fields.dedup();
            for field in fields {
                diff_value(out, format!("{name}.{field}"), x.get(field), y.get(field));
            }
        }
        _ => push_if_differs(out, &name, a, b),
    }
}

fn push_if_differs(
    out: &mut Vec<(String, String, String)>,
    name: &str,
    a: Option<&Value>,
    b: Option<&Value>,
) {
    if a != b {
        let show = |v: Option<&Value>| v.map_or_else(|| "(unset)".to_owned(), short);
        out.push((name.to_owned(), show(a), show(b)));
    }
}

/// A value as JSON, cut to a readable length.
fn short(v: &Value) -> String {
    const MAX: usize = 80;
    let text = v.to_string();
    match text.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(json: &str) -> Map<String, Value> {
        serde_json::from_str(json).unwrap()
    }

    fn keyer(secrets: Secrets, p: &str, repeats: u32) -> Keyer {
        Keyer::new(
            "openai",
            "http://user:pw-secret-1@127.0.0.1:9/v1/chat/completions",
            secrets,
            &params(p),
            repeats,
        )
    }

    #[test]
    fn the_same_request_in_another_order_has_the_same_key() {
        let k = keyer(Secrets::default(), r#"{"temperature": 0}"#, 1);
        let a = k.key(br#"{"model":"m","max_tokens":16,"temperature":0}"#, 0);
        let b = k.key(br#"{"temperature":0,"max_tokens":16,"model":"m"}"#, 0);
        assert_eq!(a, b);
        let c = k.key(br#"{"temperature":0,"max_tokens":17,"model":"m"}"#, 0);
        assert_ne!(a.hash, c.hash);
        assert_eq!(a.hash.len(), 32);
    }

    #[test]
    fn repeats_have_keys_of_their_own_only_when_sampled() {
        let body = br#"{"model":"m"}"#;
        let greedy = keyer(Secrets::default(), r#"{"temperature": 0}"#, 1);
        assert_eq!(greedy.key(body, 0), greedy.key(body, 3));
        for (p, repeats) in [
            (r#"{"temperature": 0.7}"#, 1),
            ("{}", 1),
            (r#"{"temperature": 0}"#, 5),
        ] {
            let k = keyer(Secrets::default(), p, repeats);
            assert_ne!(k.key(body, 0).hash, k.key(body, 1).hash, "{p} x{repeats}");
        }
    }

    #[test]
    fn secrets_never_enter_a_key() {
        let mut one = Secrets::default();
        one.add("sk-first-key-000");
        let mut two = Secrets::default();
        two.add("sk-other-key-999");
        let a = keyer(one, "{}", 1).key(br#"{"model":"m","key":"sk-first-key-000"}"#, 0);
        let b = keyer(two, "{}", 1).key(br#"{"model":"m","key":"sk-other-key-999"}"#, 0);
        assert_eq!(a, b, "changing the key changed the hash");
        assert!(
            !a.request.contains("sk-first") && !a.request.contains("pw-secret"),
            "{}",
            a.request
        );
    }

    #[test]
    fn differences_name_the_part_as_a_spec_writes_it() {
        let k = keyer(Secrets::default(), r#"{"temperature": 1}"#, 1);
        let a = k.key(
            br#"{"model":"m","max_tokens":17,"messages":[{"role":"user","content":"hi"}]}"#,
            0,
        );
        let b = k.key(
            br#"{"model":"m","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#,
            0,
        );
        assert_eq!(
            differences(&a.request, &b.request),
            vec![("params.max_tokens".into(), "17".into(), "16".into())]
        );
        let c = k.key(
            br#"{"model":"n","max_tokens":17,"messages":[{"role":"user","content":"ho"}]}"#,
            2,
        );
        let named: Vec<String> = differences(&c.request, &a.request)
            .into_iter()
            .map(|d| d.0)
            .collect();
        assert_eq!(named, ["repeat", "messages[0].content", "model"]);
    }
}
