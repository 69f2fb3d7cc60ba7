//! The model client: chat requests to a provider's API over HTTP, nothing else.
//!
//! [`transport`] sends bytes (pooled connections, a deadline per attempt,
//! capped bodies, retry hints); an [`Api`] says what the bytes mean for one
//! provider ([`openai`] is the one there is; each provider's module declares
//! its [`Provider`]); failures become typed
//! [`ClientError`]s the runner records and the retry loop reads. The client
//! knows nothing of strategies or retries. The mock in [`mock`] is a server,
//! not an `Api`: it speaks the OpenAI API on loopback and is reached through
//! this same code.

pub mod anthropic;
mod api;
mod error;
pub mod json_api;
pub mod mock;
pub mod openai;
pub mod openai_responses;
mod provider;
mod sse;
mod stream;
mod transport;

use std::sync::Arc;
use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderValue, CONTENT_TYPE};
use serde::Serialize;
use serde_json::{Map, Value};

use api::whole;
pub use api::{Api, Decoder, Outgoing, Reply};
pub use error::ClientError;
pub use provider::{ApiOptions, Hosted, Provider};
pub use transport::{Timeouts, MAX_BODY_BYTES};

use crate::secrets::Secrets;
use crate::usage::Usage;
use transport::Transport;

/// Who speaks a chat message.
#[derive(Debug, Clone, Copy, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    System,
    User,
    Assistant,
    Developer,
}

impl Role {
    /// Every role, as specs write them.
    pub const NAMES: [&'static str; 4] = ["system", "user", "assistant", "developer"];

    /// The role a spec names, if it is one.
    pub fn from_name(name: &str) -> Option<Role> {
        match name {
            "system" => Some(Role::System),
            "user" => Some(Role::User),
            "assistant" => Some(Role::Assistant),
            "developer" => Some(Role::Developer),
            _ => None,
        }
    }
}

/// One chat message.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Message {
    pub role: Role,
    pub content: String,
}

/// A model reply.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub content: String,
    pub usage: Usage,
    /// From sending the request to reading the whole body.
    pub latency: Duration,
    /// From sending the request to the first text, when the reply streamed.
    pub first_token: Option<Duration>,
}

/// Calls one chat endpoint through one provider's [`Api`].
#[derive(Clone)]
pub struct ModelClient {
    transport: Transport,
    api: Arc<dyn Api>,
    url: String,
    model: String,
    params: Arc<Map<String, Value>>,
    /// The API key and any other credential, scrubbed from error excerpts.
    secrets: Secrets,
    /// For APIs whose body carries it (`{{ api_key }}`).
    api_key: Option<Arc<str>>,
}

/// An encoded request, cheap to clone for retries.
#[derive(Debug, Clone)]
pub struct RequestBody(bytes::Bytes);

impl RequestBody {
    /// The bytes sent (what a cache key is computed from).
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Where and how a [`ModelClient`] calls.
pub struct Endpoint<'a> {
    pub api: Arc<dyn Api>,
    pub base_url: &'a str,
    /// Sent as the request's model.
    pub model: &'a str,
    /// Sent as `api` says; never logged or stored.
    pub api_key: Option<&'a str>,
    pub params: Map<String, Value>,
    pub timeouts: Timeouts,
    /// Idle connections kept for reuse.
    pub max_connections: usize,
}

impl ModelClient {
    /// A client for `{base_url}{api.path()}`.
    pub fn new(endpoint: Endpoint<'_>) -> Result<ModelClient, String> {
        let Endpoint {
            api,
            base_url,
            model,
            api_key,
            params,
            timeouts,
            max_connections,
        } = endpoint;
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.extend(api.headers()?);
        let mut secrets = Secrets::default();
        // reqwest sends a `user:password@` in the URL as a Basic credential.
        secrets.take_from_url(base_url);
        if let Some(key) = api_key {
            secrets.add(key);
            headers.extend(api.auth_headers(key)?);
        }
        Ok(ModelClient {
            transport: Transport::new(headers, timeouts, max_connections)?,
            url: format!("{}{}", base_url.trim_end_matches('/'), api.path()),
            api,
            model: model.to_owned(),
            params: Arc::new(params),
            secrets,
            api_key: api_key.map(Arc::from),
        })
    }

    /// Where requests go: `base_url` and the API's path.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The credentials it scrubs from what it reports.
    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// Also scrubs `more` (credentials from the spec) from error excerpts.
    pub fn with_secrets(mut self, more: &Secrets) -> Self {
        self.secrets.extend(more);
        self
    }

    /// The request body for `messages` (and the dataset `row`, for APIs
    /// whose body is a template): built once per sample, sent by every attempt.
    pub fn request(
        &self,
        messages: &[Message],
        row: &minijinja::Value,
    ) -> Result<RequestBody, ClientError> {
        self.api
            .encode(&Outgoing {
                model: &self.model,
                messages,
                params: &self.params,
                row,
                api_key: self.api_key.as_deref(),
            })
            .map(|body| RequestBody(body.into()))
            .map_err(|e| ClientError::Malformed(format!("cannot encode request: {e}")))
    }

    /// One attempt: send `body`, read the whole reply within the timeout.
    pub async fn complete(&self, body: &RequestBody) -> Result<Completion, ClientError> {
        let (reply, timing) = self
            .transport
            .post(&self.url, body.0.clone(), &*self.api, &self.secrets)
            .await?;
        Ok(Completion {
            content: reply.content,
            usage: reply.usage,
            latency: timing.latency,
            first_token: timing.first_token,
        })
    }
}
