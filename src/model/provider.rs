//! The providers dotevals speaks: each one's module declares what it is in
//! a [`Provider`], and `spec::raw::Provider` names it in one line. What every
//! provider shares (timeouts, retries, rate limits, the key's secrecy) is
//! checked once, in `spec`.

use std::sync::Arc;

use super::json_api::JsonSpec;
use super::Api;

/// One provider, as its module declares it.
#[derive(Debug)]
pub struct Provider {
    /// The name written in specs (`provider: openai`) and shown in reports.
    pub name: &'static str,
    /// Where it listens when the spec names no `base_url`; `None` for the
    /// mock, which dotevals serves itself.
    pub hosted: Option<Hosted>,
    /// Its wire format (throttling statuses and retry hints included).
    pub api: fn(&ApiOptions) -> Arc<dyn Api>,
    /// Whether `stream: true` applies: its API streams, and its `Api` reads
    /// the stream.
    pub streams: bool,
    /// Body keys its `Api` writes from the messages, which `params` may not
    /// set, each with what to write instead (beside `model`, `messages` and
    /// `stream`, which no provider's `params` may set).
    pub reserved: &'static [(&'static str, &'static str)],
}

/// How a spec asks for a provider's API to be spoken.
#[derive(Debug, Clone, Default)]
pub struct ApiOptions {
    /// Ask for the reply as server-sent events and read them as they come.
    pub stream: bool,
    /// `provider: http`'s request and pointers.
    pub json: Option<Arc<JsonSpec>>,
    /// The key, for an API whose headers are templates (`provider: http`).
    pub api_key: Option<String>,
}

/// A provider's own service.
#[derive(Debug)]
pub struct Hosted {
    pub base_url: &'static str,
    /// The variable that points the provider's requests elsewhere
    /// (`OPENAI_BASE_URL`), read when the spec names no `base_url`.
    pub base_url_env: &'static str,
    /// The variable read for the API key when the spec names none. It is
    /// required only at `base_url` itself: a server the user points at may
    /// need no key.
    pub key_env: &'static str,
}
