//! Secrets: values that must never reach the store, the terminal or an export.
//!
//! The API key comes from an environment variable and is only ever put in a
//! request header; anything that echoes it back (an error body, a reply, a URL
//! in an error message) is scrubbed here before it is recorded or printed.
//! Credentials written into a spec (`params` entries named like keys or
//! tokens, a password in `base_url`) are scrubbed from the spec snapshot too.
//!
//! A server may echo a value escaped: in JSON (`abc\/xyz`, `\u002f`, escaped
//! again inside a JSON string), percent-encoded (`%2F`) or as an HTML entity
//! (`&#x2f;`). Each secret is matched in all of those spellings, character by
//! character, so a mix of them is caught too.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::Arc;

use regex::Regex;
use serde_json::Value;

/// What replaces a secret.
pub const REDACTED: &str = "[REDACTED]";

/// Values to scrub.
#[derive(Clone, Default)]
pub struct Secrets {
    values: Vec<String>,
    /// Every value in every spelling, longest value first; rebuilt on `add`.
    matcher: Option<Arc<Regex>>,
}

impl PartialEq for Secrets {
    fn eq(&self, other: &Secrets) -> bool {
        self.values == other.values
    }
}

impl Eq for Secrets {}

/// Never the values themselves: a debug print must not leak what is scrubbed.
impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secrets({} values)", self.values.len())
    }
}

impl Secrets {
    /// Adds a value. Values under 6 characters are ignored: scrubbing every "abc"
    /// from outputs would mangle them, and no real credential is that short.
    pub fn add(&mut self, value: &str) {
        let value = value.trim();
        if value.len() >= 6 && !self.values.iter().any(|s| s == value) {
            self.values.push(value.to_owned());
            self.values.sort_by_key(|v| std::cmp::Reverse(v.len()));
            let pattern: Vec<String> = self.values.iter().map(|v| spellings(v)).collect();
            // Only an absurdly long value could exceed the regex size limit;
            // then its plain spelling is still scrubbed, below.
            self.matcher = Regex::new(&pattern.join("|")).ok().map(Arc::new);
        }
    }

    /// Adds every value of `other`.
    pub fn extend(&mut self, other: &Secrets) {
        for value in &other.values {
            self.add(value);
        }
    }

    /// True when there is nothing to scrub.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// `text` with every secret, in any spelling, replaced by [`REDACTED`].
    pub fn scrub<'a>(&self, text: &'a str) -> Cow<'a, str> {
        if let Some(matcher) = &self.matcher {
            return matcher.replace_all(text, REDACTED);
        }
        let mut out = Cow::Borrowed(text);
        for secret in &self.values {
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

    /// Collects the user information (`user:password@`) of a URL: the
    /// password as written and decoded, and the Basic credential the HTTP
    /// client sends for it (base64 of `user:password`). A user name alone is
    /// taken for a token (`https://TOKEN@host`).
    pub fn take_from_url(&mut self, url: &str) {
        let Ok(parsed) = reqwest::Url::parse(url) else {
            return;
        };
        let user = percent_decode(parsed.username());
        let password = parsed.password();
        if user.is_empty() && password.is_none() {
            return;
        }
        match password {
            Some(written) => {
                self.add(written);
                self.add(&percent_decode(written));
            }
            None => {
                self.add(parsed.username());
                self.add(&user);
            }
        }
        let basic = format!(
            "{user}:{}",
            password.map(percent_decode).unwrap_or_default()
        );
        self.add(&base64(basic.as_bytes()));
    }
}

/// A regex matching `value` with each character spelled as itself or escaped:
/// `\/` (any number of backslashes, for JSON in JSON), `\u002f` or
/// `\u002F`, `%2f` or `%2F` (per UTF-8 byte), `&#x2f;` or `&#47;`.
fn spellings(value: &str) -> String {
    let mut out = String::from("(?:");
    for c in value.chars() {
        out.push_str("(?:");
        out.push_str(&regex::escape(c.encode_utf8(&mut [0; 4])));
        if c.is_ascii_punctuation() {
            let _ = write!(out, r"|\\+{}", regex::escape(&c.to_string()));
        }
        out.push('|');
        for unit in c.encode_utf16(&mut [0; 2]) {
            let _ = write!(out, r"\\+u(?i:{unit:04x})");
        }
        out.push('|');
        for byte in c.to_string().bytes() {
            let _ = write!(out, "%(?i:{byte:02x})");
        }
        let _ = write!(out, "|&#(?i:x0*{:x});|&#0*{};", c as u32, c as u32);
        out.push(')');
    }
    out.push(')');
    out
}

/// `%XX` sequences decoded; anything not valid UTF-8 afterwards is kept as is.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap_or_else(|_| text.to_owned())
}

/// Standard base64 with padding, as HTTP Basic credentials are written.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
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

/// `base_url` as records show it: without the user, password, query or
/// fragment it may carry (a token may hide in any of them).
pub fn without_credentials(base_url: &str) -> String {
    match reqwest::Url::parse(base_url) {
        Ok(mut url) => {
            let _ = url.set_username("");
            let _ = url.set_password(None);
            url.set_query(None);
            url.set_fragment(None);
            url.as_str().trim_end_matches('/').to_owned()
        }
        Err(_) => base_url.to_owned(),
    }
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

    #[test]
    fn scrubs_escaped_and_encoded_spellings() {
        let mut s = Secrets::default();
        s.add("abc123/xyz+q=\"1");
        for spelled in [
            r#"abc123/xyz+q="1"#,
            r#"abc123\/xyz+q=\"1"#,
            r#"abc123\\\/xyz+q=\\\"1"#,
            r#"abc123\u002fxyz\u002Bq\u003d\u00221"#,
            "abc123%2Fxyz%2bq%3D%221",
            "abc123&#x2F;xyz&#43;q=&#34;1",
            r#"abc123\/xyz%2Bq\u003D"1"#,
        ] {
            let text = format!("{{\"error\": \"bad key {spelled}.\"}}");
            assert_eq!(
                s.scrub(&text),
                "{\"error\": \"bad key [REDACTED].\"}",
                "{spelled}"
            );
        }
        // Close is not the same: nothing else is touched.
        assert!(matches!(s.scrub("abc123xyz abc123/xy"), Cow::Borrowed(_)));
        let mut s = Secrets::default();
        s.add("pässwört\u{1F511}");
        assert_eq!(s.scrub(r"p\u00e4ssw%C3%B6rt\ud83d\udd11!"), "[REDACTED]!");
    }

    #[test]
    fn takes_the_basic_credential_of_a_url() {
        let mut s = Secrets::default();
        s.take_from_url("https://alice:p%40ss%2Fw0rd@example.test/v1");
        // base64("alice:p@ss/w0rd"), the password decoded, and as written.
        assert_eq!(base64(b"alice:p@ss/w0rd"), "YWxpY2U6cEBzcy93MHJk");
        assert_eq!(
            s.scrub("Basic YWxpY2U6cEBzcy93MHJk p@ss/w0rd p%40ss%2Fw0rd alice"),
            "Basic [REDACTED] [REDACTED] [REDACTED] alice"
        );
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        // A token as the user name, alone.
        let mut s = Secrets::default();
        s.take_from_url("https://ghp_token123@example.test/v1");
        assert_eq!(s.scrub("ghp_token123"), REDACTED);
        let mut s = Secrets::default();
        s.take_from_url("https://example.test/v1");
        assert!(s.is_empty());
        assert_eq!(format!("{s:?}"), "Secrets(0 values)");
    }
}
