//! The keys of a model block that belong to its kind of provider: a
//! server's address and key variable (any HTTP provider, from what its
//! module declares), or the mock's rules. What every provider shares is
//! checked in [`super::check`].

use std::time::Duration;

use super::check::Checker;
use super::{raw, ApiKeyEnv, HttpEndpoint};
use crate::diagnostic::Diagnostic;
use crate::model::mock::{MockRule, MockSpec};
use crate::model::Hosted;

impl Checker<'_> {
    /// The mock's keys: `replies` (required) and `latency`, and none of a
    /// server's.
    pub(super) fn mock(&self, at: &str, m: &raw::RawModel) -> Result<MockSpec, Diagnostic> {
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
        let base_url = match &m.base_url {
            Some(u) => u.clone(),
            None => std::env::var(hosted.base_url_env)
                .ok()
                .filter(|u| !u.is_empty())
                .unwrap_or_else(|| hosted.base_url.into()),
        };
        let parsed = reqwest::Url::parse(&base_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"));
        if parsed.is_none() {
            let d = if m.base_url.is_some() {
                self.at_value(
                    &format!("{at}.base_url"),
                    format!("`{base_url}` is not an http(s) URL"),
                )
            } else {
                self.at_key(
                    &format!("{at}.provider"),
                    format!(
                        "${} `{base_url}` is not an http(s) URL",
                        hosted.base_url_env
                    ),
                )
            };
            return Err(d.with_hint("write e.g. http://127.0.0.1:8000/v1"));
        }
        // The default key goes only where the user's environment points
        // (the provider's variable, or its service): a spec from elsewhere
        // that names its own server must ask for a key by name to get one.
        let base_url = base_url.trim_end_matches('/').to_owned();
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
            api_key_env,
        })
    }
}
