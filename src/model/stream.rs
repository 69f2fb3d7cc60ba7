//! A streamed reply, read as its events arrive: the [`Decoder`] every
//! streaming API shares. An API says what its events mean ([`EventReader`]);
//! this keeps the text and usage they bring, says when the text began, and
//! refuses a stream that ended before the API's own end.

use super::api::whole;
use super::sse::Events;
use super::transport::excerpt;
use super::{Api, ClientError, Decoder, Reply};
use crate::secrets::Secrets;

/// What one API's events mean.
pub(super) trait EventReader: Send {
    /// The event that ends a whole stream, as a cut stream's error names it.
    const END: &'static str;

    /// Reads event `name` (empty when unnamed) with `data` into `reply`;
    /// answers whether it ended the stream.
    fn event(
        &self,
        name: &str,
        data: &str,
        reply: &mut Reply,
        secrets: &Secrets,
    ) -> Result<bool, ClientError>;
}

/// `api`'s decoder for one reply: its events as `reader` reads them when the
/// request asked for a stream, else the body read whole.
pub(super) fn decoder<'a, A: Api, R: EventReader + 'a>(
    api: &'a A,
    stream: bool,
    reader: R,
    secrets: &'a Secrets,
) -> Box<dyn Decoder + 'a> {
    if stream {
        Streamed::decoder(reader, secrets)
    } else {
        whole(api, secrets)
    }
}

/// The decoder of one streamed reply whose events `R` reads.
pub(super) struct Streamed<'a, R> {
    reader: R,
    secrets: &'a Secrets,
    events: Events,
    reply: Reply,
    done: bool,
}

impl<'a, R: EventReader + 'a> Streamed<'a, R> {
    fn decoder(reader: R, secrets: &'a Secrets) -> Box<dyn Decoder + 'a> {
        Box::new(Streamed {
            reader,
            secrets,
            events: Events::default(),
            reply: Reply {
                content: String::new(),
                usage: Default::default(),
            },
            done: false,
        })
    }
}

impl<R: EventReader> Decoder for Streamed<'_, R> {
    fn feed(&mut self, bytes: &[u8]) -> Result<bool, ClientError> {
        let Streamed {
            reader,
            secrets,
            events,
            reply,
            done,
        } = self;
        events.feed(bytes, |name, data| {
            *done |= reader.event(name, data, reply, secrets)?;
            Ok(())
        })?;
        Ok(!reply.content.is_empty())
    }

    fn finish(self: Box<Self>) -> Result<Reply, ClientError> {
        if !self.done {
            return Err(ClientError::StreamCut(format!(
                "no {}; {} characters of text had arrived: {}",
                R::END,
                self.reply.content.chars().count(),
                excerpt(self.reply.content.as_bytes(), self.secrets)
            )));
        }
        Ok(self.reply)
    }
}

/// An event's data as JSON, or the error that quotes it.
pub(super) fn json(
    name: &str,
    data: &str,
    secrets: &Secrets,
) -> Result<serde_json::Value, ClientError> {
    serde_json::from_str(data).map_err(|e| {
        let event = if name.is_empty() { "chunk" } else { name };
        ClientError::Malformed(format!(
            "{e} in a streamed `{event}` event: {}",
            excerpt(data.as_bytes(), secrets)
        ))
    })
}
