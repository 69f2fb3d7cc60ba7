//! The seam between the HTTP transport and one provider's wire format.
//!
//! The transport sends bytes and reads capped bodies within a deadline,
//! chunk by chunk into the [`Api`]'s [`Decoder`]; an [`Api`] says where a
//! chat request goes, how it is authorised, encoded and read back (whole, or
//! as a stream of events), and which answers mean "slow down". A provider is one file
//! implementing it, registered where the runner picks the client.

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::Method;
use serde_json::{Map, Value};

use super::{ClientError, Message};
use crate::secrets::Secrets;
use crate::usage::Usage;

/// What one request asks, for [`Api::encode`].
pub struct Outgoing<'a> {
    /// The spec's model name (empty when it names none).
    pub model: &'a str,
    pub messages: &'a [Message],
    pub params: &'a Map<String, Value>,
    /// The sample's dataset row, for APIs whose body is a template.
    pub row: &'a minijinja::Value,
    /// The API key, for APIs whose body carries it.
    pub api_key: Option<&'a str>,
}

#[cfg(test)]
impl<'a> Outgoing<'a> {
    /// A request with no dataset row and no key.
    pub fn bare(model: &'a str, messages: &'a [Message], params: &'a Map<String, Value>) -> Self {
        static NO_ROW: minijinja::Value = minijinja::Value::UNDEFINED;
        Outgoing {
            model,
            messages,
            params,
            row: &NO_ROW,
            api_key: None,
        }
    }
}

/// What a successful reply says, before the transport adds its latency.
#[derive(Debug, Clone, PartialEq)]
pub struct Reply {
    pub content: String,
    pub usage: Usage,
}

/// Reads one successful reply as its bytes arrive: events in, text and
/// usage out. The transport feeds it every chunk within the attempt's
/// deadline and body cap, and notes when the first text arrived.
pub trait Decoder: Send {
    /// The next bytes of the body; answers whether the reply's text has
    /// begun by now (its time to first token).
    fn feed(&mut self, bytes: &[u8]) -> Result<bool, ClientError>;

    /// The body has ended: the whole reply.
    fn finish(self: Box<Self>) -> Result<Reply, ClientError>;
}

/// A reply that is not streamed: kept whole and read at its end by
/// [`Api::decode`].
struct Whole<'a, A: ?Sized> {
    api: &'a A,
    secrets: &'a Secrets,
    body: Vec<u8>,
}

impl<A: Api + ?Sized> Decoder for Whole<'_, A> {
    fn feed(&mut self, bytes: &[u8]) -> Result<bool, ClientError> {
        self.body.extend_from_slice(bytes);
        Ok(false)
    }

    fn finish(self: Box<Self>) -> Result<Reply, ClientError> {
        self.api.decode(&self.body, self.secrets)
    }
}

/// The decoder of a reply read whole by `api`'s [`Api::decode`]: the
/// default [`Api::decoder`], for an API that streams when not asked to.
pub fn whole<'a, A: Api + ?Sized>(api: &'a A, secrets: &'a Secrets) -> Box<dyn Decoder + 'a> {
    Box::new(Whole {
        api,
        secrets,
        body: Vec::with_capacity(1024),
    })
}

/// One provider's chat API.
pub trait Api: Send + Sync {
    /// The path after `base_url` that chat requests are posted to.
    fn path(&self) -> &str;

    /// Headers every request carries, whatever the key (an API version);
    /// an error names why they cannot be sent.
    fn headers(&self) -> Result<HeaderMap, String> {
        Ok(HeaderMap::new())
    }

    /// The headers carrying `key`; an error names why it cannot be sent.
    fn auth_headers(&self, key: &str) -> Result<HeaderMap, String>;

    /// The method requests are sent with.
    fn method(&self) -> Method {
        Method::POST
    }

    /// The request body for `request`; an error says why it cannot be built.
    fn encode(&self, request: &Outgoing<'_>) -> Result<Vec<u8>, String>;

    /// A successful (2xx) body as a reply; `secrets` are scrubbed from any
    /// excerpt an error quotes.
    fn decode(&self, body: &[u8], secrets: &Secrets) -> Result<Reply, ClientError>;

    /// The decoder for one successful reply (`secrets` scrubbed from what an
    /// error quotes): by default [`whole`], which keeps the body and reads
    /// it with [`decode`](Api::decode) at its end; an API that streams reads
    /// its events as they come, and says when the text began.
    fn decoder<'a>(&'a self, secrets: &'a Secrets) -> Box<dyn Decoder + 'a> {
        whole(self, secrets)
    }

    /// Whether an unsuccessful `status` means "slow down" rather than failure.
    fn is_throttled(&self, status: u16) -> bool;

    /// How long a throttled answer asks us to wait, from its headers.
    fn retry_hint(&self, status: u16, headers: &HeaderMap) -> Option<Duration>;
}
