//! Secrets: values that must never reach the store, the terminal or an export.
//!
//! The API key comes from an environment variable and is only ever put in a
//! request header; anything that echoes it back (an error body, a reply, a URL
//! in an error message) is scrubbed here before it is recorded or printed.
//! Credentials written into a spec (`params` entries named like keys or
//! tokens, a password in `base_url`) are scrubbed from the spec snapshot too.

use std::borrow::Cow;

use serde_json::Value;

/// What replaces a secret.
pub const REDACTED: &str = "[REDACTED]";

/// Values to scrub.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Secrets(Vec<String>);

impl Secrets {
    /// Adds a value. Values under 6 characters are ignored: scrubbing every "abc"
    /// from outputs would mangle them, and no real credential is that short.
    pub fn add(&mut self, value: &str) {
        let value = value.trim();
        if value.len() >= 6 && !self.0.iter().any(|s| s == value) {
            self.0.push(value.to_owned());
        }
    }

    /// Adds every value of `other`.
    pub fn extend(&mut self, other: &Secrets) {
        for value in &other.0 {
            self.add(value);
        }
    }

    /// True when there is nothing to scrub.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `text` with every secret replaced by [`REDACTED`].
    pub fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        for secret in &self.0 {
            if out.contains(secret.as_str()) {
                out = Cow::Owned(out.replace(secret.as_str(), REDACTED));
            }
        }
        out
    }

    /// Scrubs in place.
    pub fn scrub_string(&self, text: &mut String) {
        if let Cow::Owned(clean) = self.scrub(text) {
            *text = clean;
        }
    }

    /// Collects secret values under secret-looking keys in `value` and replaces
    /// them with [`REDACTED`].
    pub fn take_from_json(&mut self, value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (key, v) in map.iter_mut() {
                    match v {
                        Value::String(s) if is_secret_key(key) => {
                            self.add(s);
                            *v = Value::String(REDACTED.into());
                        }
                        other => self.take_from_json(other),
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(|v| self.take_from_json(v)),
            _ => {}
        }
    }

    /// Collects the user information (`user:password@`) of a URL.
    pub fn take_from_url(&mut self, url: &str) {
        if let Ok(parsed) = reqwest::Url::parse(url) {
            if let Some(password) = parsed.password() {
                self.add(password);
            }
        }
    }
}

/// Keys whose values are credentials: `api_key`, `Authorization`, `token`, ...
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase().replace(['-', '_'], "");
    [
        "apikey",
        "authorization",
        "token",
        "secret",
        "password",
        "bearer",
        "credential",
    ]
    .iter()
    .any(|s| k.contains(s))
        || k == "key"
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn scrubs_every_occurrence() {
        let mut s = Secrets::default();
        s.add("sk-planted-123456");
        assert_eq!(
            s.scrub("a sk-planted-123456 b sk-planted-123456"),
            "a [REDACTED] b [REDACTED]"
        );
        assert!(matches!(s.scrub("clean"), Cow::Borrowed(_)));
    }

    #[test]
    fn takes_secret_params_and_url_passwords() {
        let mut s = Secrets::default();
        let mut params = json!({"temperature": 0, "api_key": "abcdef123", "headers": {"Authorization": "Bearer zzzzzz99"}});
        s.take_from_json(&mut params);
        assert_eq!(params["api_key"], REDACTED);
        assert_eq!(params["headers"]["Authorization"], REDACTED);
        assert_eq!(params["temperature"], 0);
        s.take_from_url("http://user:hunter2hunter2@example.test/v1");
        assert_eq!(
            s.scrub("x hunter2hunter2 abcdef123"),
            "x [REDACTED] [REDACTED]"
        );
    }
}
