//! `model.params` may not set what the request encoder writes itself: the
//! body would carry the key twice, the server would take one of them (often
//! the last: the params'), and the record would show the other.

use serde_json::{Map, Value};

use super::Checker;
use crate::diagnostic::Diagnostic;
use crate::model::Provider;

/// Keys the client sets in every request body, or that would change the shape
/// of the reply it reads, with where to say what they say instead.
const RESERVED: [(&str, &str); 3] = [
    (
        "model",
        "set the model with `model.name` (it is sent as the request's \"model\")",
    ),
    (
        "messages",
        "write the messages with the spec's top-level `prompt` or `messages`",
    ),
    (
        "stream",
        "to stream the reply, write `stream: true` in the model block itself, not in `params`",
    ),
];

impl Checker<'_> {
    /// Refuses a `params` key the client sets itself. `stream: false` is
    /// what is sent anyway, so it is let through.
    pub(super) fn reserved_params(
        &self,
        at: &str,
        params: &Map<String, Value>,
        provider: &Provider,
    ) -> Result<(), Diagnostic> {
        for &(key, hint) in RESERVED.iter().chain(provider.reserved) {
            match params.get(key) {
                None => {}
                Some(Value::Bool(false)) if key == "stream" => {}
                Some(_) => {
                    return Err(self
                        .at_key(
                            &format!("{at}.params.{key}"),
                            format!(
                                "`params` may not set `{key}`: dotevals sets it in every request"
                            ),
                        )
                        .with_hint(hint));
                }
            }
        }
        Ok(())
    }
}
