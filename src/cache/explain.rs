//! `dotevals cache explain`: why a sample's reply did or did not come from
//! the cache. The store reads what it holds about the sample's call
//! ([`SampleCache`]); this module picks the cached request closest to it and
//! says, in a user's terms, which parts differed.

use std::time::{Duration, UNIX_EPOCH};

use serde::Serialize;

/// How many cached requests of one sample key a store reads at most (the
/// newest): enough to find the closest, bounded when a key such as `0` is
/// shared by many datasets.
pub const MAX_ALTERNATIVES: usize = 1000;

/// What the store holds about one evaluation's record of a sample's model
/// call under the cache (backend-neutral, read in one call).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SampleCache {
    /// The evaluation holding the record.
    pub evaluation: String,
    /// The key its request went under; `None`: the cache was off for it.
    pub key: Option<String>,
    /// The reply came from the cache (nothing was sent).
    pub cached: bool,
    /// Why the call failed, if it did.
    pub error_kind: Option<String>,
    /// The request's parts (canonical JSON) and when its key was last sent,
    /// if the store still keeps them.
    pub sent: Option<SentRequest>,
    /// When the entry under its key was written (Unix seconds), if there is one now.
    pub entry_written_at: Option<i64>,
    /// Other requests sent for the same sample key whose replies are cached
    /// (newest first, at most [`MAX_ALTERNATIVES`]).
    pub alternatives: Vec<CachedRequest>,
}

/// A request's parts and when it was sent (Unix seconds).
#[derive(Debug, Clone, PartialEq)]
pub struct SentRequest {
    pub request: String,
    pub sent_at: i64,
}

/// A request whose reply is in the cache.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedRequest {
    pub key: String,
    /// Its parts, canonical JSON.
    pub request: String,
    /// When its entry was written (Unix seconds).
    pub written_at: i64,
}

/// Why one evaluation's record of a sample came (or did not come) from the
/// cache: the JSON shape `cache explain --format json` prints a list of.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Explanation {
    pub evaluation: String,
    pub sample: String,
    pub status: Status,
    /// When the entry under the sample's key was written (RFC 3339 UTC), if
    /// there is one: the entry it was served from, or the one its send wrote.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub written_at: Option<String>,
    /// How its request differs from the closest cached one (sent only).
    pub differences: Vec<Difference>,
    /// The cached request it was compared with (sent only, when one was).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compared_with: Option<ComparedWith>,
    /// The explanation, in sentences.
    pub note: String,
    /// The same sentences one by one (the table puts the differences after
    /// the first).
    #[serde(skip)]
    pub sentences: Vec<String>,
}

/// What the cache did for the sample.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// The cache was off for its run.
    Off,
    /// Its reply came from the cache.
    Hit,
    /// Its request was sent.
    Sent,
}

/// One part of a request that differs, as a spec writes it, with its value
/// in the sample's request (`this`) and in the cached one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Difference {
    pub part: String,
    pub this: String,
    pub cached: String,
}

/// The cached request a sent sample was compared with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ComparedWith {
    pub key: String,
    /// RFC 3339 UTC.
    pub written_at: String,
}

/// Unix seconds as RFC 3339 UTC (before 1970 reads as 1970).
pub fn rfc3339(unix: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64);
    humantime::format_rfc3339_seconds(at).to_string()
}

/// Explains `r`, the record of sample `sample`.
pub fn explain(sample: &str, r: &SampleCache) -> Explanation {
    let written_at = r.entry_written_at.map(rfc3339);
    let out = Explanation {
        evaluation: r.evaluation.clone(),
        sample: sample.to_owned(),
        status: Status::Off,
        written_at: written_at.clone(),
        differences: Vec::new(),
        compared_with: None,
        note: String::new(),
        sentences: Vec::new(),
    };
    if r.key.is_none() {
        return Explanation {
            written_at: None,
            ..out
        }
        .saying(vec![
            "The cache was off for it: nothing was looked up or kept. Run with `--cache` \
             (or `cache: true` in the spec) to use it."
                .into(),
        ]);
    }
    if r.cached {
        let note = match &written_at {
            Some(w) => format!("Served from the cache, nothing sent: the entry was written {w}."),
            None => {
                "Served from the cache, nothing sent: that entry has been cleared since.".into()
            }
        };
        return Explanation {
            status: Status::Hit,
            ..out
        }
        .saying(vec![note]);
    }
    let mut out = Explanation {
        status: Status::Sent,
        ..out
    };
    let mut notes = Vec::new();
    match &r.sent {
        None => notes.push(
            "Sent; the request it was sent with is no longer kept (its entry was cleared), so \
             it cannot be compared with what is cached."
                .to_owned(),
        ),
        Some(sent) => match closest(sent, &r.alternatives) {
            Some((alt, diffs)) => {
                let when = rfc3339(alt.written_at);
                notes.push(format!(
                    "Sent: no cached request matched it; the closest one cached for this sample \
                     before it was sent (written {when}) differs in {} part{}.",
                    diffs.len(),
                    if diffs.len() == 1 { "" } else { "s" }
                ));
                out.differences = diffs;
                out.compared_with = Some(ComparedWith {
                    key: alt.key.clone(),
                    written_at: when,
                });
            }
            None => {
                notes.push("Sent: nothing was cached for this sample before it was sent.".into())
            }
        },
    }
    let sent_at = r.sent.as_ref().map(|s| s.sent_at);
    match (&r.error_kind, r.entry_written_at) {
        (Some(kind), _) => notes.push(format!(
            "It failed ({kind}), and errors are never cached: a rerun sends it again."
        )),
        (None, Some(at)) if sent_at.is_none_or(|sent| at >= sent) => notes.push(format!(
            "Its reply was cached by this send (written {}).",
            rfc3339(at)
        )),
        (None, Some(_)) => {}
        // A request no longer kept already says its entry was cleared.
        (None, None) if r.sent.is_none() => {}
        (None, None) => notes.push(
            "Its reply is not in the cache now (cleared since, or a reply that is never kept, \
             such as a cut stream)."
                .into(),
        ),
    }
    out.saying(notes)
}

impl Explanation {
    /// Ends with `sentences` as its note.
    fn saying(mut self, sentences: Vec<String>) -> Explanation {
        self.note = sentences.join(" ");
        self.sentences = sentences;
        self
    }
}

/// The cached request closest to `sent`, among those written by the time it
/// was sent: the fewest differing parts, the newest on a tie; with them.
fn closest<'a>(
    sent: &SentRequest,
    alternatives: &'a [CachedRequest],
) -> Option<(&'a CachedRequest, Vec<Difference>)> {
    alternatives
        .iter()
        .filter(|a| a.written_at <= sent.sent_at)
        .map(|a| {
            let diffs = super::key::differences(&sent.request, &a.request)
                .into_iter()
                .map(|(part, this, cached)| Difference { part, this, cached })
                .collect::<Vec<_>>();
            (a, diffs)
        })
        .min_by(|(a, x), (b, y)| x.len().cmp(&y.len()).then(b.written_at.cmp(&a.written_at)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(max_tokens: u32, content: &str, repeat: Option<u32>) -> String {
        let mut parts = serde_json::json!({
            "v": 1, "provider": "openai", "url": "http://x/v1/chat/completions",
            "body": {"model": "m", "max_tokens": max_tokens,
                     "messages": [{"role": "user", "content": content}]},
        });
        if let Some(r) = repeat {
            parts["repeat"] = r.into();
        }
        parts.to_string()
    }

    fn alt(key: &str, request: String, written_at: i64) -> CachedRequest {
        CachedRequest {
            key: key.into(),
            request,
            written_at,
        }
    }

    fn sent(alternatives: Vec<CachedRequest>) -> SampleCache {
        SampleCache {
            evaluation: "e".into(),
            key: Some("k".into()),
            sent: Some(SentRequest {
                request: request(17, "hi", None),
                sent_at: 2_000_000_000,
            }),
            alternatives,
            ..Default::default()
        }
    }

    #[test]
    fn the_cache_off_says_how_to_turn_it_on() {
        let e = explain("q1", &SampleCache::default());
        assert_eq!(e.status, Status::Off);
        assert!(
            e.note.contains("--cache") && e.note.contains("cache: true"),
            "{}",
            e.note
        );
        assert_eq!(e.written_at, None);
    }

    #[test]
    fn a_hit_says_when_its_entry_was_written() {
        let r = SampleCache {
            key: Some("k".into()),
            cached: true,
            entry_written_at: Some(0),
            ..Default::default()
        };
        let e = explain("q1", &r);
        assert_eq!(e.status, Status::Hit);
        assert_eq!(e.written_at.as_deref(), Some("1970-01-01T00:00:00Z"));
        assert!(e.note.contains("1970-01-01T00:00:00Z"), "{}", e.note);
        let gone = explain(
            "q1",
            &SampleCache {
                entry_written_at: None,
                ..r
            },
        );
        assert!(gone.note.contains("cleared"), "{}", gone.note);
    }

    #[test]
    fn a_send_is_compared_with_the_closest_earlier_entry() {
        let r = sent(vec![
            // Newest, but two parts differ.
            alt("far", request(16, "ho", None), 1_999_999_000),
            alt("near-old", request(16, "hi", None), 1_000_000_000),
            alt("near-new", request(16, "hi", None), 1_500_000_000),
            // Identical but written after the send: not what was missed.
            alt("later", request(17, "hi", Some(1)), 2_000_000_001),
        ]);
        let e = explain("q1", &r);
        assert_eq!(e.status, Status::Sent);
        let compared = e.compared_with.as_ref().map(|c| c.key.as_str());
        assert_eq!(
            compared,
            Some("near-new"),
            "fewest differences, then newest"
        );
        assert_eq!(
            e.differences,
            [Difference {
                part: "params.max_tokens".into(),
                this: "17".into(),
                cached: "16".into()
            }]
        );
        assert!(e.note.contains("differs in 1 part."), "{}", e.note);
    }

    #[test]
    fn a_send_with_nothing_similar_cached_says_so() {
        let e = explain("q1", &sent(Vec::new()));
        assert!(e.differences.is_empty() && e.compared_with.is_none());
        assert!(
            e.note
                .contains("nothing was cached for this sample before it was sent"),
            "{}",
            e.note
        );
    }

    #[test]
    fn a_send_says_whether_its_reply_was_kept() {
        let mut r = sent(Vec::new());
        r.entry_written_at = Some(2_000_000_000);
        let e = explain("q1", &r);
        assert!(e.note.contains("cached by this send"), "{}", e.note);
        assert_eq!(e.written_at.as_deref(), Some("2033-05-18T03:33:20Z"));

        r.entry_written_at = None;
        r.error_kind = Some("timeout".into());
        let e = explain("q1", &r);
        assert!(e.note.contains("errors are never cached"), "{}", e.note);
        assert!(!e.note.contains("cached by this send"), "{}", e.note);
    }

    #[test]
    fn a_send_whose_request_is_gone_cannot_be_compared() {
        let mut r = sent(vec![alt("a", request(16, "hi", None), 1)]);
        r.sent = None;
        let e = explain("q1", &r);
        assert!(e.compared_with.is_none());
        assert!(e.note.contains("no longer kept"), "{}", e.note);
        assert_eq!(e.sentences.len(), 1, "{}", e.note);
    }

    #[test]
    fn the_json_shape_is_as_documented() {
        let e = explain("q1", &sent(vec![alt("a", request(16, "hi", None), 0)]));
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["status"], "sent");
        assert_eq!(v["differences"][0]["part"], "params.max_tokens");
        assert_eq!(v["differences"][0]["cached"], "16");
        assert_eq!(v["compared_with"]["written_at"], "1970-01-01T00:00:00Z");
        assert!(v.get("written_at").is_none());
    }
}
