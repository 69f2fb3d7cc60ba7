//! One guarded model call, for samples and judges alike: the endpoint's rate
//! limit admits each attempt, the window's permit (the model's) hears of
//! every attempt and its outcome, retries follow the policy, the server's
//! hints and the endpoint's shared pause, and the call answers what it cost
//! as one [`CallStats`]. A fix to retries, or streaming's first token, is
//! made here once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::concurrency::rate::{estimate_tokens, RateLimit};
use crate::concurrency::retry::{self, GaveUp, Retry, Retryable};
use crate::concurrency::{Outcome, Permit};
use crate::model::{ClientError, Completion, Message, ModelClient, RequestBody};
pub use crate::store::CallStats;

/// What calls to one endpoint share: its client, its retries (with the
/// endpoint's pause) and its rate limit.
pub struct Caller {
    pub client: ModelClient,
    pub retry: Retry,
    /// The endpoint's shared rate limit, if its model block sets one.
    pub rate: Option<Arc<RateLimit>>,
    /// The reply's token cap from `params`, for the rate limit's estimate.
    max_tokens: Option<u64>,
}

/// A finished call: its completion or last error, and what it cost.
pub struct Call {
    pub result: Result<Completion, ClientError>,
    pub stats: CallStats,
    /// Set when throttling outlasted `retry.max_wait`: why the error stands.
    pub gave_up: Option<GaveUp>,
}

impl Call {
    /// The error as recorded: with why retrying stopped, when it did early.
    pub fn error_message(e: &ClientError, gave_up: Option<&GaveUp>) -> String {
        match gave_up {
            Some(why) => format!("{e} ({why})"),
            None => e.to_string(),
        }
    }
}

/// A request encoded once (every attempt sends the same bytes), with its
/// length for the rate limit's token estimate.
pub struct Request {
    pub body: RequestBody,
    /// Characters of the messages' content.
    pub chars: usize,
}

impl Request {
    /// `messages` (and the sample's dataset `row`) encoded for `client`'s endpoint.
    pub fn encode(
        client: &ModelClient,
        messages: &[Message],
        row: &minijinja::Value,
    ) -> Result<Request, ClientError> {
        Ok(Request {
            body: client.request(messages, row)?,
            chars: messages.iter().map(|m| m.content.chars().count()).sum(),
        })
    }
}

impl Caller {
    /// `params` are the model block's, for its `max_tokens` (or
    /// `max_completion_tokens`).
    pub fn new(
        client: ModelClient,
        retry: Retry,
        rate: Option<Arc<RateLimit>>,
        params: &serde_json::Map<String, serde_json::Value>,
    ) -> Caller {
        let max_tokens = params
            .get("max_tokens")
            .or_else(|| params.get("max_completion_tokens"))
            .and_then(serde_json::Value::as_u64);
        Caller {
            client,
            retry,
            rate,
            max_tokens,
        }
    }

    /// `messages` (and the sample's dataset `row`) encoded for this endpoint.
    pub fn request(
        &self,
        messages: &[Message],
        row: &minijinja::Value,
    ) -> Result<Request, ClientError> {
        Request::encode(&self.client, messages, row)
    }

    /// Sends `request` until it succeeds or retrying gives up. `permit` is
    /// the window slot the call holds (the model's): it hears of each
    /// attempt at the server and each outcome, and is released as soon as
    /// the reply is in, before the rate limit settles the reply's usage.
    ///
    /// `leave()` says whether another replica could take the request when
    /// the permit's replica rests (see [`crate::concurrency::pool`]).
    pub async fn call(
        &self,
        request: &Request,
        permit: Option<Permit>,
        leave: impl Fn() -> bool,
    ) -> Call {
        let estimate = self
            .rate
            .as_ref()
            .map_or(0, |_| estimate_tokens(request.chars, self.max_tokens));
        let rate_wait_us = AtomicU64::new(0);
        let mut throttled = 0;
        if let Some(p) = &permit {
            p.ready();
        }
        let attempts = retry::run(
            &self.retry,
            || async {
                if let Some(rate) = &self.rate {
                    let waited = rate.admit_timed(estimate).await;
                    rate_wait_us.fetch_add(waited.as_micros() as u64, Ordering::Relaxed);
                }
                let _at_server = permit.as_ref().map(Permit::sending);
                self.client.complete(&request.body).await
            },
            |e| {
                let outcome = outcome(e);
                throttled += u32::from(matches!(outcome, Outcome::Throttled));
                // A replica that now rests sends its sample to another.
                permit.as_ref().is_some_and(|p| {
                    p.report(&outcome);
                    p.resting() && leave()
                })
            },
        )
        .await;
        let mut stats = CallStats {
            attempts: attempts.attempts,
            throttled,
            // Backoff, hints and endpoint pauses, and rate-limit waits.
            wait_us: attempts.waited.as_micros() as u64 + rate_wait_us.into_inner(),
            ..CallStats::default()
        };
        if let Ok(completion) = &attempts.result {
            if let Some(p) = permit {
                p.report(&Outcome::Success {
                    latency: completion.latency,
                    completion_tokens: completion.usage.completion,
                });
            }
            if let Some(rate) = &self.rate {
                let (p, c) = (completion.usage.prompt, completion.usage.completion);
                rate.settle_usage(estimate, p, c).await;
            }
            stats.latency_us = Some(completion.latency.as_micros() as u64);
            stats.first_token_us = completion.first_token.map(|t| t.as_micros() as u64);
            stats.usage = completion.usage;
        }
        Call {
            result: attempts.result,
            stats,
            gave_up: attempts.gave_up,
        }
    }
}

/// How a concurrency strategy should read a failed attempt.
pub fn outcome(e: &ClientError) -> Outcome {
    match e {
        ClientError::Throttled { .. } => Outcome::Throttled,
        ClientError::Timeout(_) | ClientError::Stalled(_) => Outcome::Timeout,
        e if !e.is_retryable() => Outcome::Refused,
        _ => Outcome::Failed,
    }
}

impl Retryable for ClientError {
    fn is_retryable(&self) -> bool {
        ClientError::is_retryable(self)
    }

    fn is_throttling(&self) -> bool {
        matches!(outcome(self), Outcome::Throttled)
    }

    fn retry_after(&self) -> Option<std::time::Duration> {
        ClientError::retry_after(self)
    }
}
