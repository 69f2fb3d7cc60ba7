//! The response cache: successful replies kept in the store, keyed by
//! exactly what a request would send ([`key`]), so a rerun sends only what
//! is not cached.
//!
//! Only successes are kept: errors of any kind, cut streams, refused
//! requests and judge replies that held no verdict are never cached, so a
//! rerun sends them again. An entry is written in the same transaction as
//! the record of the sample that paid for it (a crash loses neither), and
//! records when it was written, so `cache: {ttl: 7d}` can age it out. A
//! hit skips the request, the window and the rate limit; the sample is
//! recorded as cached and left out of the run's timing figures.

pub mod explain;
pub mod key;

use std::time::Duration;

pub use key::{CacheKey, Keyer};

use crate::usage::Usage;

/// The cache as a spec (`cache: true`, `cache: {ttl: 7d}`) or `--cache`
/// turns it on: `None` when off.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CachePolicy {
    /// Entries older than this are not used (and are replaced when the
    /// request is sent again); `None`: they never age out.
    pub ttl: Option<Duration>,
}

/// A reply found in the cache.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedReply {
    pub output: String,
    /// What the reply cost when it was paid for.
    pub usage: Usage,
}

/// What the cache did for one call, as recorded with it.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum CacheUse {
    /// The cache was off.
    #[default]
    Off,
    /// The reply came from the entry under this hash: nothing was sent.
    Hit(String),
    /// Sent under `key`; `reply` is what to keep when it succeeded (an
    /// error is never kept).
    Sent {
        key: CacheKey,
        /// The spec's model name, for `cache stats` and `cache clear --model`.
        model: String,
        reply: Option<CachedReply>,
    },
    /// Copied from another store's record (`merge`): the key it was made
    /// under and whether it was a hit. Nothing is written to the cache.
    Copied { hash: String, hit: bool },
}

impl CacheUse {
    /// A stored call's cache columns (its key, whether it was a hit), as a
    /// copy of the call records them: `Off` without a key.
    pub fn copied(hash: Option<String>, hit: bool) -> CacheUse {
        hash.map_or(CacheUse::Off, |hash| CacheUse::Copied { hash, hit })
    }

    /// Whether the reply came from the cache.
    pub fn is_hit(&self) -> bool {
        matches!(self, CacheUse::Hit(_) | CacheUse::Copied { hit: true, .. })
    }

    /// The key the call was made under, if the cache was on.
    pub fn hash(&self) -> Option<&str> {
        match self {
            CacheUse::Off => None,
            CacheUse::Hit(hash) => Some(hash),
            CacheUse::Sent { key, .. } => Some(&key.hash),
            CacheUse::Copied { hash, .. } => Some(hash),
        }
    }

    /// The reply to keep, for scrubbing before it is stored.
    pub fn reply_mut(&mut self) -> Option<&mut String> {
        match self {
            CacheUse::Sent {
                reply: Some(reply), ..
            } => Some(&mut reply.output),
            _ => None,
        }
    }

    /// Keeps `output` (and its usage) as the reply to a request sent under a key.
    pub fn keep(&mut self, output: &str, usage: Usage) {
        if let CacheUse::Sent { reply, .. } = self {
            *reply = Some(CachedReply {
                output: output.to_owned(),
                usage,
            });
        }
    }
}

/// Why a lookup failed, in the store's words (the cache takes it as a miss).
pub type LookupError = Box<dyn std::error::Error + Send + Sync>;

/// Finds entries by key, on a connection of its own (the dataset reader's
/// thread and the judges share it).
pub trait CacheLookup: Send + Sync {
    /// The reply kept under `hash`, unless it is older than `ttl`.
    fn get(&self, hash: &str, ttl: Option<Duration>) -> Result<Option<CachedReply>, LookupError>;
}

/// What a run needs to use the cache for one endpoint: its keys, where the
/// entries are, and how long they stand.
#[derive(Clone)]
pub struct Cache {
    pub keyer: Keyer,
    pub lookup: std::sync::Arc<dyn CacheLookup>,
    pub policy: CachePolicy,
    /// The model name recorded with each entry.
    pub model: String,
}

impl Cache {
    /// The key of `body` (repeat `repeat`) and the reply cached for it. A
    /// store that cannot be read is a miss: the request is sent.
    pub fn find(&self, body: &[u8], repeat: u32) -> (CacheKey, Option<CachedReply>) {
        let key = self.keyer.key(body, repeat);
        let hit = self.lookup.get(&key.hash, self.policy.ttl).ok().flatten();
        (key, hit)
    }

    /// How a call goes, given what [`find`](Cache::find) answered: a hit,
    /// or sent under `key` (its reply kept later by [`CacheUse::keep`]).
    pub fn use_of(&self, key: CacheKey, hit: Option<&CachedReply>) -> CacheUse {
        match hit {
            Some(_) => CacheUse::Hit(key.hash),
            None => CacheUse::Sent {
                key,
                model: self.model.clone(),
                reply: None,
            },
        }
    }
}

/// The cache's contents, for `dotevals cache stats`.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct CacheStats {
    pub entries: u64,
    /// Bytes of the requests and replies kept.
    pub bytes: u64,
    /// Times an entry was used instead of sending its request.
    pub hits: u64,
    /// The same, per model, by model name.
    pub models: Vec<ModelStats>,
}

/// One model's share of the cache.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct ModelStats {
    pub model: String,
    pub entries: u64,
    pub bytes: u64,
    pub hits: u64,
    /// When its oldest and newest entries were written (RFC 3339, UTC).
    pub oldest: Option<String>,
    pub newest: Option<String>,
}
