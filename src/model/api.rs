//! The seam between the HTTP transport and one provider's wire format.
//!
//! The transport sends bytes and reads capped bodies within a deadline; an
//! [`Api`] says where a chat request goes, how it is authorised, encoded and
//! read back, and which answers mean "slow down". A provider is one file
//! implementing it, registered where the runner picks the client.

use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::{Map, Value};

use super::{ClientError, Message};
use crate::secrets::Secrets;

/// What a successful reply says, before the transport adds its latency.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub content: String,
    pub prompt_tokens: Option<u64>,
    pub completion_tokens: Option<u64>,
}

/// One provider's chat API.
pub trait Api: Send + Sync {
    /// The path after `base_url` that chat requests are posted to.
    fn path(&self) -> &str;

    /// The headers carrying `key`; an error names why it cannot be sent.
    fn auth_headers(&self, key: &str) -> Result<HeaderMap, String>;

    /// The request body asking `model` to answer `messages`, with the spec's `params`.
    fn encode(
        &self,
        model: &str,
        messages: &[Message],
        params: &Map<String, Value>,
    ) -> serde_json::Result<Vec<u8>>;

    /// A successful (2xx) body as a reply; `secrets` are scrubbed from any
    /// excerpt an error quotes.
    fn decode(&self, body: &[u8], secrets: &Secrets) -> Result<Reply, ClientError>;

    /// Whether an unsuccessful `status` means "slow down" rather than failure.
    fn is_throttled(&self, status: u16) -> bool;

    /// How long a throttled answer asks us to wait, from its headers.
    fn retry_hint(&self, status: u16, headers: &HeaderMap) -> Option<Duration>;
}
