//! Serde mirror of the spec YAML (`shared/design/spec-format.md`). These types
//! only describe shape; meaning is checked in `spec::load`.

use serde::{Deserialize, Deserializer, Serialize};
use serde_json::{Map, Value};

use crate::evaluators::EvaluatorSpec;
use crate::model;

/// The whole spec file.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawSpec {
    pub name: Option<String>,
    pub description: Option<String>,
    pub dataset: RawDataset,
    pub model: RawModel,
    pub prompt: Option<Text>,
    pub messages: Option<Vec<RawMessage>>,
    /// `type` picks the evaluator; the other keys are its arguments.
    #[serde(default)]
    pub evaluators: Vec<EvaluatorSpec>,
    pub concurrency: Option<RawConcurrency>,
    /// Times each sample is sent (1 to 100); left out when unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub repeats: Option<u32>,
    /// The response cache; never part of the identity (it changes what is
    /// sent, not what a reply is).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<RawCache>,
    /// Dotted paths to lists of values: one evaluation per cell of their
    /// cross product ([`super::matrix`]); expanded before a cell is checked.
    #[serde(skip_serializing)]
    pub matrix: Option<Value>,
}

/// `cache: true`, `cache: false` or `cache: {ttl: 7d}`.
#[derive(Debug, Deserialize, Serialize, Clone, Copy, PartialEq)]
#[serde(untagged, expecting = "true, false or a block such as {ttl: 7d}")]
pub enum RawCache {
    On(bool),
    Settings(RawCacheSettings),
}

#[derive(Debug, Deserialize, Serialize, Clone, Copy, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RawCacheSettings {
    /// How long an entry is used; forever when unset.
    pub ttl: Option<DurationText>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawDataset {
    pub columns: Option<Vec<String>>,
    pub rows: Option<Vec<Value>>,
    pub path: Option<String>,
    pub id: Option<String>,
    pub limit: Option<u64>,
    /// Left out when unset, so specs without it keep their identity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<String>,
}

#[derive(Debug, Deserialize, Serialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    Openai,
    OpenaiResponses,
    Anthropic,
    Http,
    Mock,
}

impl Provider {
    /// What the provider is, as its module declares it: the one list of
    /// providers (a new one is a variant here and its module in `model`).
    pub fn declared(self) -> &'static model::Provider {
        match self {
            Provider::Openai => &model::openai::PROVIDER,
            Provider::OpenaiResponses => &model::openai_responses::PROVIDER,
            Provider::Anthropic => &model::anthropic::PROVIDER,
            Provider::Http => &model::json_api::PROVIDER,
            Provider::Mock => &model::mock::PROVIDER,
        }
    }

    /// The name written in specs and shown in reports.
    pub fn as_str(self) -> &'static str {
        self.declared().name
    }
}

/// `base_url`: one server, or a list of replicas serving the same model.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(untagged, expecting = "a URL or a list of URLs")]
pub enum BaseUrl {
    One(String),
    Replicas(Vec<String>),
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawModel {
    pub provider: Provider,
    pub base_url: Option<BaseUrl>,
    pub name: Option<String>,
    pub api_key_env: Option<String>,
    #[serde(default)]
    pub params: Map<String, Value>,
    pub timeout: Option<DurationText>,
    pub connect_timeout: Option<DurationText>,
    pub read_timeout: Option<DurationText>,
    /// Read the reply as server-sent events (time to first token).
    pub stream: Option<bool>,
    pub retry: Option<RawRetry>,
    pub rate_limit: Option<RawRateLimit>,
    /// http only: the whole address requests go to.
    pub url: Option<String>,
    /// http only: GET, POST (default), PUT or PATCH.
    pub method: Option<String>,
    /// http only: header templates (over `api_key`).
    pub headers: Option<Map<String, Value>>,
    /// http only: the request body, a template at every string.
    pub body: Option<Value>,
    /// http only: JSON Pointers to the answer, the token counts and an error.
    pub output: Option<String>,
    pub usage: Option<RawUsagePointers>,
    pub error: Option<String>,
    /// mock only: time each request takes.
    pub latency: Option<DurationText>,
    /// mock only: keyword rules, first match wins.
    pub replies: Option<Vec<RawReply>>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawUsagePointers {
    pub input_tokens: Option<String>,
    pub output_tokens: Option<String>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRetry {
    pub max_attempts: Option<u32>,
    pub backoff: Option<DurationText>,
    pub max_backoff: Option<DurationText>,
    /// Time budget for waiting on throttling (429, 503), per sample.
    pub max_wait: Option<DurationText>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawRateLimit {
    pub requests_per_minute: Option<u32>,
    pub tokens_per_minute: Option<u32>,
}

#[derive(Debug, Deserialize, Serialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RawReply {
    #[serde(default)]
    pub when_contains: Vec<String>,
    pub reply: Text,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawMessage {
    pub role: String,
    pub content: Text,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RawConcurrency {
    pub strategy: Option<StrategyName>,
    pub max_concurrency: Option<usize>,
    pub initial: Option<usize>,
    pub min: Option<usize>,
    pub max: Option<usize>,
}

pub use crate::concurrency::StrategyName;

/// Text that YAML may have typed as a number or boolean (`expected: 42`).
#[derive(Debug, Serialize, Clone, PartialEq, Eq)]
#[serde(transparent)]
pub struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged, expecting = "a string, number or boolean")]
        enum Any {
            S(String),
            I(i64),
            F(f64),
            B(bool),
        }
        Ok(Text(match Any::deserialize(d)? {
            Any::S(s) => s,
            Any::I(i) => i.to_string(),
            Any::F(f) => f.to_string(),
            Any::B(b) => b.to_string(),
        }))
    }
}

/// A duration written as `30s`, `500ms`, `1m` or a number of seconds.
#[derive(Debug, Serialize, Clone, Copy, PartialEq)]
#[serde(into = "String")]
pub struct DurationText(pub std::time::Duration);

impl From<DurationText> for String {
    fn from(d: DurationText) -> String {
        humantime::format_duration(d.0).to_string()
    }
}

impl<'de> Deserialize<'de> for DurationText {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        #[derive(Deserialize)]
        #[serde(untagged, expecting = "a duration such as 30s, 500ms or 1m")]
        enum Any {
            S(String),
            F(f64),
        }
        match Any::deserialize(d)? {
            Any::F(secs) => std::time::Duration::try_from_secs_f64(secs)
                .map(DurationText)
                .map_err(|_| {
                    D::Error::custom(format!(
                        "invalid duration {secs}; write e.g. 30s, 500ms or 1m"
                    ))
                }),
            Any::S(s) => humantime::parse_duration(s.trim())
                .map(DurationText)
                .map_err(|e| {
                    D::Error::custom(format!(
                        "invalid duration `{s}` ({e}); write e.g. 30s, 500ms or 1m"
                    ))
                }),
        }
    }
}
