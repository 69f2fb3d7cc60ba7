//! The keys of a model block that belong to its kind of provider: a
//! server's address and key variable (any HTTP provider, from what its
//! module declares), `provider: http`'s request and pointers, or the mock's
//! rules. What every provider shares is checked in [`super::check`].

use std::time::Duration;

use reqwest::header::HeaderName;
use reqwest::Method;
use serde_json::Value;

use super::check::Checker;
use super::{raw, ApiKeyEnv, HttpEndpoint};
use crate::diagnostic::Diagnostic;
use crate::model::json_api::{Body, JsonSpec};
use crate::model::mock::{MockRule, MockSpec};
use crate::model::Hosted;
use crate::template::Template;

/// The keys only `provider: http` takes, and whether `m` sets each.
fn json_keys(m: &raw::RawModel) -> [(&'static str, bool); 7] {
    [
        ("url", m.url.is_some()),
        ("method", m.method.is_some()),
        ("headers", m.headers.is_some()),
        ("body", m.body.is_some()),
        ("output", m.output.is_some()),
        ("usage", m.usage.is_some()),
        ("error", m.error.is_some()),
    ]
}

impl Checker<'_> {
    /// Refuses the keys only `provider: http` takes.
    fn no_json_keys(&self, at: &str, m: &raw::RawModel) -> Result<(), Diagnostic> {
        match json_keys(m).iter().find(|(_, set)| *set) {
            Some((key, _)) => Err(self
                .at_key(
                    &format!("{at}.{key}"),
                    format!(
                        "`{key}` only applies to provider `http`, not `{}`",
                        m.provider.as_str()
                    ),
                )
                .with_hint(
                    "remove it, or write `provider: http` to describe the request yourself",
                )),
            None => Ok(()),
        }
    }

    /// `provider: http`: the address (`url`), the request (`method`,
    /// `headers`, `body`) and the pointers into the reply.
    pub(super) fn json_endpoint(
        &self,
        at: &str,
        m: &raw::RawModel,
    ) -> Result<(HttpEndpoint, JsonSpec), Diagnostic> {
        for (key, set, hint) in [
            (
                "base_url",
                m.base_url.is_some(),
                "write the whole address as `url`",
            ),
            (
                "latency",
                m.latency.is_some(),
                "remove it: it only applies to provider `mock`",
            ),
            (
                "replies",
                m.replies.is_some(),
                "remove it: it only applies to provider `mock`",
            ),
        ] {
            if set {
                return Err(self
                    .at_key(
                        &format!("{at}.{key}"),
                        format!("`{key}` does not apply to provider `http`"),
                    )
                    .with_hint(hint));
            }
        }
        let Some(url) = &m.url else {
            return Err(self
                .at_key(&format!("{at}.provider"), "provider `http` needs `url`")
                .with_hint(
                    "add e.g. `url: http://127.0.0.1:8080/v1/generate` (the whole address)",
                ));
        };
        if !is_http_url(url) {
            return Err(self
                .at_value(
                    &format!("{at}.url"),
                    format!("`{url}` is not an http(s) URL"),
                )
                .with_hint("write e.g. http://127.0.0.1:8080/v1/generate"));
        }
        let method = self.json_method(at, m)?;
        let (headers, mut uses_key) = self.json_headers(at, m)?;
        let body = self.json_body(at, m, &method)?;
        uses_key |= body
            .iter()
            .flat_map(Body::templates)
            .any(|(_, t)| t.variables().contains("api_key"));
        if uses_key && m.api_key_env.is_none() {
            return Err(self
                .at_key(
                    &format!("{at}.provider"),
                    "the request uses `{{ api_key }}`, but the model names no `api_key_env`",
                )
                .with_hint("add `api_key_env: MY_SERVICE_KEY` (the variable holding the key)"));
        }
        let pointer = |key: &str, p: &Option<String>| self.json_pointer(at, key, p);
        let Some(output) = pointer("output", &m.output)? else {
            return Err(self
                .at_key(&format!("{at}.provider"), "provider `http` needs `output`")
                .with_hint("add the JSON Pointer to the answer, e.g. `output: /choices/0/text`"));
        };
        let usage = m.usage.as_ref();
        let spec = JsonSpec {
            method,
            headers,
            body,
            output,
            input_tokens: pointer(
                "usage.input_tokens",
                &usage.and_then(|u| u.input_tokens.clone()),
            )?,
            output_tokens: pointer(
                "usage.output_tokens",
                &usage.and_then(|u| u.output_tokens.clone()),
            )?,
            error: pointer("error", &m.error)?,
        };
        let endpoint = HttpEndpoint {
            base_url: url.clone(),
            replicas: Vec::new(),
            api_key_env: m.api_key_env.as_ref().map(|v| ApiKeyEnv {
                var: v.clone(),
                required: true,
            }),
        };
        Ok((endpoint, spec))
    }

    /// `method`: POST unless the spec says GET, PUT or PATCH.
    fn json_method(&self, at: &str, m: &raw::RawModel) -> Result<Method, Diagnostic> {
        Ok(
            match m.method.as_deref().map(str::to_ascii_uppercase).as_deref() {
                None | Some("POST") => Method::POST,
                Some("GET") => Method::GET,
                Some("PUT") => Method::PUT,
                Some("PATCH") => Method::PATCH,
                Some(other) => {
                    return Err(self
                        .at_value(&format!("{at}.method"), format!("unknown method `{other}`"))
                        .with_hint("write GET, POST (the default), PUT or PATCH"))
                }
            },
        )
    }

    /// `headers`: each a template over `api_key` alone (they are built once
    /// per run); also whether any uses the key.
    fn json_headers(
        &self,
        at: &str,
        m: &raw::RawModel,
    ) -> Result<(Vec<(HeaderName, Template)>, bool), Diagnostic> {
        let mut uses_key = false;
        let mut headers = Vec::new();
        for (name, value) in m.headers.iter().flatten() {
            let key = format!("{at}.headers.{name}");
            let header = HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| self.at_key(&key, format!("`{name}` is not a header name")))?;
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => {
                    return Err(self
                        .at_value(&key, format!("header `{name}` must be text"))
                        .with_hint("write it as a string, e.g. \"2023-06-01\""))
                }
            };
            let template = self.model_template(&key, &text)?;
            for var in template.variables() {
                if var != "api_key" {
                    return Err(self
                        .at_value(&key, format!("header `{name}` uses `{var}`"))
                        .with_hint(
                            "headers are built once per run: they may use only `{{ api_key }}`",
                        ));
                }
                uses_key = true;
            }
            headers.push((header, template));
        }
        Ok((headers, uses_key))
    }

    /// `body`: a template at every string; none for GET.
    fn json_body(
        &self,
        at: &str,
        m: &raw::RawModel,
        method: &Method,
    ) -> Result<Option<Body>, Diagnostic> {
        match &m.body {
            None => Ok(None),
            Some(_) if *method == Method::GET => Err(self
                .at_key(&format!("{at}.body"), "a GET request has no body")
                .with_hint("remove `body`, or write `method: POST`")),
            Some(value) => Body::compile(value).map(Some).map_err(|(path, e)| {
                self.at_value(
                    &format!("{at}.body{path}"),
                    format!("template error in `{at}.body{path}`: {e}"),
                )
            }),
        }
    }

    /// A JSON Pointer (`""` or starting with `/`), as written at `{at}.{key}`.
    fn json_pointer(
        &self,
        at: &str,
        key: &str,
        p: &Option<String>,
    ) -> Result<Option<String>, Diagnostic> {
        match p {
            Some(p) if !p.is_empty() && !p.starts_with('/') => Err(self
                .at_value(
                    &format!("{at}.{key}"),
                    format!("`{p}` is not a JSON Pointer"),
                )
                .with_hint(format!(
                    "a pointer starts with `/`, one step per key or index: /{}",
                    p.replace('.', "/")
                ))),
            other => Ok(other.clone()),
        }
    }

    fn model_template(&self, key: &str, source: &str) -> Result<Template, Diagnostic> {
        Template::compile(source)
            .map_err(|e| self.at_value(key, format!("template error in `{key}`: {}", e.message)))
    }

    /// The mock's keys: `replies` (required) and `latency`, and none of a
    /// server's.
    pub(super) fn mock(&self, at: &str, m: &raw::RawModel) -> Result<MockSpec, Diagnostic> {
        self.no_json_keys(at, m)?;
        for (key, set) in [
            ("base_url", m.base_url.is_some()),
            ("api_key_env", m.api_key_env.is_some()),
        ] {
            if set {
                return Err(self
                    .at_key(
                        &format!("{at}.{key}"),
                        format!("`{key}` does not apply to provider `mock`"),
                    )
                    .with_hint(
                        "the mock is served on loopback by dotevals itself; remove this key",
                    ));
            }
        }
        let Some(replies) = &m.replies else {
            return Err(self
                .at_key(&format!("{at}.provider"), "provider `mock` needs `replies`")
                .with_hint(
                    "add `replies: [{when_contains: [great], reply: positive}, {reply: neutral}]`",
                ));
        };
        let rules = replies
            .iter()
            .map(|r| MockRule {
                when_contains: r.when_contains.iter().map(|w| w.to_lowercase()).collect(),
                reply: r.reply.0.clone(),
            })
            .collect();
        Ok(MockSpec {
            latency: m.latency.map_or(Duration::ZERO, |d| d.0),
            rules,
        })
    }

    /// A server's address and key variable: the spec's `base_url`, else the
    /// provider's variable for it, else its own service.
    pub(super) fn http_endpoint(
        &self,
        at: &str,
        m: &raw::RawModel,
        hosted: &Hosted,
    ) -> Result<HttpEndpoint, Diagnostic> {
        self.no_json_keys(at, m)?;
        for (key, set) in [
            ("latency", m.latency.is_some()),
            ("replies", m.replies.is_some()),
        ] {
            if set {
                return Err(self.at_key(
                    &format!("{at}.{key}"),
                    format!("`{key}` only applies to provider `mock`"),
                ));
            }
        }
        let (base_url, replicas) = match &m.base_url {
            Some(raw::BaseUrl::One(u)) => (self.server_url(&format!("{at}.base_url"), u)?, vec![]),
            Some(raw::BaseUrl::Replicas(urls)) => {
                let mut replicas = self.replica_urls(at, urls)?;
                let first = replicas[0].clone();
                // A list of one is one server.
                if replicas.len() == 1 {
                    replicas.clear();
                }
                (first, replicas)
            }
            None => {
                let url = std::env::var(hosted.base_url_env)
                    .ok()
                    .filter(|u| !u.is_empty())
                    .unwrap_or_else(|| hosted.base_url.into());
                if !is_http_url(&url) {
                    return Err(self
                        .at_key(
                            &format!("{at}.provider"),
                            format!("${} `{url}` is not an http(s) URL", hosted.base_url_env),
                        )
                        .with_hint(URL_HINT));
                }
                (url.trim_end_matches('/').to_owned(), vec![])
            }
        };
        // The default key goes only where the user's environment points
        // (the provider's variable, or its service): a spec from elsewhere
        // that names its own server must ask for a key by name to get one.
        let api_key_env = match (&m.api_key_env, &m.base_url) {
            (Some(v), _) => Some(ApiKeyEnv {
                var: v.clone(),
                required: true,
            }),
            (None, None) => Some(ApiKeyEnv {
                var: hosted.key_env.to_owned(),
                required: base_url == hosted.base_url,
            }),
            (None, Some(_)) => None,
        };
        Ok(HttpEndpoint {
            base_url,
            replicas,
            api_key_env,
        })
    }

    /// A `base_url` the spec wrote (at `path`), without its trailing slash.
    fn server_url(&self, path: &str, url: &str) -> Result<String, Diagnostic> {
        if !is_http_url(url) {
            return Err(self
                .at_value(path, format!("`{url}` is not an http(s) URL"))
                .with_hint(URL_HINT));
        }
        Ok(url.trim_end_matches('/').to_owned())
    }

    /// The replicas of a `base_url` list: the evaluation's model only, at
    /// least one, each an http(s) URL named once.
    fn replica_urls(&self, at: &str, urls: &[String]) -> Result<Vec<String>, Diagnostic> {
        let path = format!("{at}.base_url");
        if at != "model" {
            return Err(self
                .at_value(
                    &path,
                    "a judge calls one server; replicas apply to the evaluation's `model`",
                )
                .with_hint("write one URL"));
        }
        if urls.is_empty() {
            return Err(self
                .at_value(&path, "the list of replicas is empty")
                .with_hint("write one URL, or a list such as [http://10.0.0.1:8000/v1, http://10.0.0.2:8000/v1]"));
        }
        let mut seen = Vec::with_capacity(urls.len());
        let mut servers = Vec::with_capacity(urls.len());
        for (i, url) in urls.iter().enumerate() {
            let url = self.server_url(&format!("{path}[{i}]"), url)?;
            // One server however it is written (case, default port, credentials).
            let server = crate::secrets::without_credentials(&url);
            if servers.contains(&server) {
                return Err(self
                    .at_value(&format!("{path}[{i}]"), format!("`{url}` is listed twice"))
                    .with_hint("list each replica once"));
            }
            servers.push(server);
            seen.push(url);
        }
        Ok(seen)
    }
}

const URL_HINT: &str = "write e.g. http://127.0.0.1:8000/v1";

fn is_http_url(url: &str) -> bool {
    reqwest::Url::parse(url).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
}
