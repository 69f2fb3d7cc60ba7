//! The response cache on the dataset reader's thread: each sample is
//! rendered, encoded and looked up before it is dispatched, so a hit never
//! waits for a window slot and a miss is not rendered twice.

use crate::cache::{Cache, CacheUse, CachedReply};
use crate::call::Request;
use crate::dataset::Values;
use crate::model::ModelClient;
use crate::spec::Prompt;
use crate::template::Budget;

/// A sample rendered, encoded and looked up in the cache.
pub(super) struct Prepared {
    /// The prompt as stored.
    pub prompt: String,
    pub request: Request,
    /// The key it goes under: a hit, or sent.
    pub cache: CacheUse,
    /// The reply cached for it.
    pub hit: Option<CachedReply>,
}

/// Prepares samples for one endpoint.
pub(super) struct Preparer {
    pub prompt: Prompt,
    pub client: ModelClient,
    pub cache: Cache,
}

impl Preparer {
    /// Repeat `repeat` of the row `values`, prepared; `None` when its prompt
    /// does not render or encode (the sample's task renders it again and
    /// records why).
    pub fn prepare(&self, values: &Values, repeat: u32) -> Option<Prepared> {
        let vars = crate::template::context(values);
        let (messages, prompt) = super::sample::render(&self.prompt, &vars, Budget::Full).ok()?;
        let request = Request::encode(&self.client, &messages, &vars).ok()?;
        let (key, hit) = self.cache.find(request.body.bytes(), repeat);
        Some(Prepared {
            prompt,
            request,
            cache: self.cache.use_of(key, hit.as_ref()),
            hit,
        })
    }
}
