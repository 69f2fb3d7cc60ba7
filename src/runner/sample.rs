//! One sample's life: render the prompt, call the model (with retries), score,
//! and hand the record to the store writer.

use std::sync::Arc;
use std::time::Instant;

use minijinja::Value;
use tokio::sync::mpsc::{OwnedPermit, Sender};

use super::refusal::{is_refusal, RefusalWatch};
use super::{Planned, Sample};
use crate::cache::CacheUse;
use crate::call::{Call, CallStats, Caller, Request};
use crate::concurrency::pause::Pause;
use crate::concurrency::pool::Pool;
use crate::concurrency::rate::RateLimit;
use crate::concurrency::retry::{GaveUp, Retry};
use crate::concurrency::{Permit, Tally};
use crate::error_kind::ErrorKind;
use crate::evaluators::{Evaluator, ScoreError};
use crate::model::{ClientError, Message, ModelClient, Role};
use crate::secrets::Secrets;
use crate::spec::Prompt;
use crate::store::writer::{SampleRecord, ScoreRecord};
use crate::template::{Budget, RenderError};

/// One endpoint of the model, ready to call.
pub struct Endpoint {
    pub client: ModelClient,
    /// Its address as recorded (credentials removed).
    pub url: String,
    pub rate: Option<Arc<RateLimit>>,
    pub pause: Arc<Pause>,
}

/// What every sample task of one run shares.
pub struct SampleContext {
    prompt: Prompt,
    evaluators: Vec<Evaluator>,
    /// The model's endpoint, one per replica; none when every reply comes
    /// from the store (a rescore).
    callers: Vec<Caller>,
    /// The windows of those endpoints.
    pool: Arc<Pool>,
    /// Each replica's address as recorded, when there are several.
    endpoints: Vec<Arc<str>>,
    started: Instant,
    records: Sender<SampleRecord>,
    /// Stops the run when the server refuses the credentials.
    pub refusals: RefusalWatch,
    /// The spec's credentials and every key the run sends (the model's and
    /// the judges'): scrubbed from every record, and from a reply before any
    /// evaluator (a judge, a program) sees it.
    secrets: Secrets,
    /// Some evaluator waits on a judge or a program: a reply is stored before
    /// it is graded, so a run stopped while grading lags keeps it.
    grading_waits: bool,
    /// This run's own totals, when its window is shared with other runs.
    pub tally: Option<Arc<Tally>>,
}

impl SampleContext {
    /// `endpoints` are the model's (one per replica), each with its client,
    /// rate limit and pause; `pool` holds their windows.
    pub fn new(
        plan: &Planned,
        endpoints: Vec<Endpoint>,
        pool: Arc<Pool>,
        started: Instant,
        records: Sender<SampleRecord>,
        refusals: RefusalWatch,
    ) -> Self {
        let eval = &plan.eval;
        let several = endpoints.len() > 1;
        let urls = endpoints
            .iter()
            .filter(|_| several)
            .map(|e| Arc::from(e.url.as_str()))
            .collect();
        let callers = endpoints
            .into_iter()
            .map(|e| {
                let retry = Retry::new(eval.model.retry).with_pause(e.pause);
                Caller::new(e.client, retry, e.rate, &eval.model.params)
            })
            .collect();
        SampleContext {
            prompt: eval.prompt.clone(),
            evaluators: eval.evaluators.clone(),
            callers,
            pool,
            endpoints: urls,
            started,
            records,
            refusals,
            secrets: plan.secrets.clone(),
            grading_waits: eval
                .evaluators
                .iter()
                .any(|e| e.scorer.external().is_some()),
            tally: None,
        }
    }

    /// Resolves when the store writer has stopped taking records.
    pub async fn writer_closed(&self) {
        self.records.closed().await
    }

    /// A place in the store writer's queue for one sample's record; waits while
    /// the queue is full. `None` when the writer has stopped.
    pub async fn reserve(&self) -> Option<OwnedPermit<SampleRecord>> {
        self.records.clone().reserve_owned().await.ok()
    }

    /// Stores the model's reply in `record` before it is graded, when grading
    /// waits on a judge or a program: a run stopped meanwhile keeps the paid
    /// reply, and the next run grades it from the store. Returns the place
    /// for the graded record (`None` when the writer has stopped).
    async fn keep_reply(
        &self,
        slot: OwnedPermit<SampleRecord>,
        record: &mut SampleRecord,
        output: &str,
    ) -> Option<OwnedPermit<SampleRecord>> {
        if !self.grading_waits {
            return Some(slot);
        }
        let ungraded = SampleRecord {
            output: Some(output.to_owned()),
            error_kind: Some(ErrorKind::Ungraded),
            error: Some(
                "the run stopped before this reply was graded; the next run grades it".into(),
            ),
            ..record.clone()
        };
        self.record(slot, ungraded);
        record.replaces = true;
        // The graded record waits for room like any other: a backlog of
        // replies waiting on a judge stays within the writer's queue.
        self.reserve().await
    }

    /// A reply with every secret scrubbed: what is scored and stored.
    fn scrubbed(&self, mut output: String) -> String {
        self.secrets.scrub_string(&mut output);
        output
    }

    /// Hands a record to the writer, with secrets scrubbed from its text (the
    /// output was scrubbed when it arrived).
    fn record(&self, slot: OwnedPermit<SampleRecord>, mut record: SampleRecord) {
        record.end_us = self.elapsed_us();
        if !self.secrets.is_empty() {
            for text in [&mut record.variables, &mut record.prompt] {
                self.secrets.scrub_string(text);
            }
            let reasons = record.scores.iter_mut().flatten();
            let reasons = reasons.filter_map(|s| s.reason.as_mut());
            for text in record.error.iter_mut().chain(reasons) {
                self.secrets.scrub_string(text);
            }
            for call in &mut record.judge_calls {
                self.secrets.scrub_string(&mut call.prompt);
                if let Some(kept) = call.cache.reply_mut() {
                    self.secrets.scrub_string(kept);
                }
                for text in [&mut call.reply, &mut call.error].into_iter().flatten() {
                    self.secrets.scrub_string(text);
                }
            }
        }
        // The place was reserved when the sample started: this never waits.
        slot.send(record);
    }

    fn elapsed_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    /// The messages for `vars`, and the prompt to store as JSON (a string or a
    /// list of messages): within [`INLINE_STEPS`](crate::template::INLINE_STEPS)
    /// here, and on a blocking thread with the full budget when that is not enough.
    async fn render(self: &Arc<Self>, vars: &Value) -> Result<(Vec<Message>, String), String> {
        match self.render_within(vars, Budget::Inline) {
            Err(RenderError::OverInline) => {
                let (ctx, vars) = (Arc::clone(self), vars.clone());
                tokio::task::spawn_blocking(move || ctx.render_within(&vars, Budget::Full))
                    .await
                    .unwrap_or_else(|e| Err(RenderError::Failed(format!("render task: {e}"))))
            }
            done => done,
        }
        .map_err(|e| e.to_string())
    }

    fn render_within(
        &self,
        vars: &Value,
        budget: Budget,
    ) -> Result<(Vec<Message>, String), RenderError> {
        render(&self.prompt, vars, budget)
    }

    /// Scores `output` with every evaluator into `record`, with the calls any
    /// judge made; an evaluator that cannot decide makes the record an error of
    /// the first such evaluator's kind (`evaluator`, or `judge`).
    async fn score(&self, output: &str, vars: &Value, record: &mut SampleRecord) {
        let scoring = minijinja::context! { output => output, ..vars.clone() };
        let mut failures = Vec::new();
        let mut kind = None;
        record.scores.clear();
        record.judge_calls.clear();
        for (i, evaluator) in self.evaluators.iter().enumerate() {
            let (score, call) = match evaluator
                .score_sample(output, &record.variables, &scoring)
                .await
            {
                Ok(scored) => (
                    Some(ScoreRecord {
                        passed: evaluator.passes(scored.score),
                        value: scored.score,
                        reason: scored.reason,
                    }),
                    scored.judged,
                ),
                Err(e) => {
                    kind = kind.or(Some(e.kind()));
                    failures.push(format!("{}: {e}", evaluator.name));
                    let call = match e {
                        ScoreError::Judge { call, .. } => call,
                        _ => None,
                    };
                    (None, call)
                }
            };
            record.scores.push(score);
            if let Some(mut call) = call {
                call.evaluator = i;
                record.judge_calls.push(*call);
            }
        }
        record.error_kind = kind;
        record.error = (!failures.is_empty()).then(|| failures.join("; "));
    }
}

/// The messages `prompt` renders for `vars`, and the prompt to store as JSON
/// (a string or a list of messages), within `budget`.
pub(super) fn render(
    prompt: &Prompt,
    vars: &Value,
    budget: Budget,
) -> Result<(Vec<Message>, String), RenderError> {
    match prompt {
        Prompt::Text(t) => {
            let content = t.render_within(vars, budget)?;
            let stored = serde_json::to_string(&content).unwrap_or_default();
            Ok((
                vec![Message {
                    role: Role::User,
                    content,
                }],
                stored,
            ))
        }
        Prompt::Messages(parts) => {
            let mut messages = Vec::with_capacity(parts.len());
            for (role, t) in parts {
                messages.push(Message {
                    role: *role,
                    content: t.render_within(vars, budget)?,
                });
            }
            let stored = serde_json::to_string(&messages).unwrap_or_default();
            Ok((messages, stored))
        }
    }
}

/// Runs one sample to its record, which goes to the writer through `slot`.
/// The permit is released as soon as the model has answered, so the next
/// sample starts while this one is scored. A sample with a stored reply is
/// only scored again.
pub(super) async fn process(
    mut sample: Sample,
    permit: Option<Permit>,
    slot: OwnedPermit<SampleRecord>,
    ctx: Arc<SampleContext>,
) {
    let start_us = ctx.elapsed_us();
    let vars = crate::template::context(&sample.values);
    let retried = sample.retried;
    if let Some(call) = sample.stored.take() {
        drop(permit);
        let mut record = SampleRecord {
            prompt: call.prompt,
            call: call.call,
            ..started(sample, start_us)
        };
        match call.output.map(|output| ctx.scrubbed(output)) {
            Some(output) => {
                ctx.score(&output, &vars, &mut record).await;
                record.output = Some(output);
            }
            // A rescore copies a failed call as it was (a kind this build
            // cannot read back is no reply either).
            None => {
                let kind = call.error_kind.as_deref().map(str::parse);
                record.error_kind = Some(kind.and_then(Result::ok).unwrap_or(ErrorKind::Malformed));
                record.error = call.error;
            }
        }
        ctx.record(slot, record);
        return;
    }
    let prepared = sample.prepared.take();
    let mut record = started(sample, start_us);
    let Some(caller) = ctx.callers.first() else {
        // The reader gives a rescore only samples with a stored call.
        drop(permit);
        record.error_kind = Some(ErrorKind::Malformed);
        record.error = Some("no stored reply to score, and a rescore sends nothing".into());
        ctx.record(slot, record);
        return;
    };
    if let Some(prepared) = prepared {
        record.prompt = prepared.prompt;
        record.cache = prepared.cache;
        if let Some(hit) = prepared.hit {
            // Nothing is sent: the reply is the one an earlier run paid for.
            drop(permit);
            let output = ctx.scrubbed(hit.output);
            ctx.score(&output, &vars, &mut record).await;
            record.output = Some(output);
            ctx.record(slot, record);
            return;
        }
        let sent = Sent {
            permit,
            slot,
            retried,
        };
        sent.send(&prepared.request, record, &ctx, &vars).await;
        return;
    }
    // Render and encode once; every attempt sends the same bytes.
    let prepared = ctx
        .render(&vars)
        .await
        .map_err(|e| (ErrorKind::Template, format!("prompt: {e}")))
        .and_then(|(messages, stored)| {
            record.prompt = stored;
            caller
                .request(&messages, &vars)
                .map_err(|e| (ErrorKind::Malformed, e.to_string()))
        });
    match prepared {
        Ok(request) => {
            let sent = Sent {
                permit,
                slot,
                retried,
            };
            sent.send(&request, record, &ctx, &vars).await;
        }
        Err((kind, message)) => {
            drop(permit);
            record.error_kind = Some(kind);
            record.error = Some(message);
            ctx.record(slot, record);
        }
    }
}

/// A sample's call, about to be sent: its window slot (on one replica),
/// place in the writer's queue, and whether an earlier run sent it already.
struct Sent {
    permit: Option<Permit>,
    slot: OwnedPermit<SampleRecord>,
    retried: bool,
}

impl Sent {
    /// Sends `request` for the sample begun in `record`, scores the reply and
    /// records it (keeping it in the cache when the cache is on and it succeeded).
    async fn send(
        self,
        request: &Request,
        mut record: SampleRecord,
        ctx: &SampleContext,
        vars: &Value,
    ) {
        let Sent {
            mut permit,
            slot,
            retried,
        } = self;
        // A sample that failed on one replica (it rests, or its retries ran
        // out on a failure another server may not have) goes to another it
        // has not tried, while there is one.
        let mut tried = Vec::new();
        let done = loop {
            let replica = permit.as_ref().map_or(0, Permit::replica);
            tried.push(replica);
            // The pool and the callers come from one connection (`runner::run`):
            // a replica each.
            let caller = &ctx.callers[replica];
            let done = caller
                .call(request, permit.take(), || ctx.pool.has_other(&tried))
                .await;
            record.call.add(&done.stats);
            record.endpoint = ctx.endpoints.get(replica).cloned();
            let failed_here = match (&done.result, &done.gave_up) {
                (_, Some(GaveUp::Rested)) => true,
                (Err(e), None) => e.is_retryable(),
                _ => false,
            };
            if !failed_here {
                break done;
            }
            match ctx.pool.elsewhere(&tried).await {
                Some(other) => permit = Some(other),
                None => break done,
            }
        };
        let refused = match &done.result {
            Err(ClientError::Status { status, .. }) if is_refusal(*status) => Some(*status),
            _ => None,
        };
        // A sample refused in an earlier run may be refused for itself: judging it
        // again would stop every rerun at the same samples. Its success still counts.
        if !(retried && refused.is_some()) {
            ctx.refusals.observe(refused);
        }
        match done.result {
            Ok(completion) => {
                let output = ctx.scrubbed(completion.content);
                record.cache.keep(&output, completion.usage);
                let Some(graded) = ctx.keep_reply(slot, &mut record, &output).await else {
                    return;
                };
                ctx.score(&output, vars, &mut record).await;
                record.output = Some(output);
                ctx.record(graded, record);
            }
            Err(e) => {
                record.error_kind = Some(e.kind());
                record.error = Some(Call::error_message(&e, done.gave_up.as_ref()));
                ctx.record(slot, record);
            }
        }
    }
}

/// The record of `sample` begun at `start_us`, before anything is sent.
fn started(sample: Sample, start_us: u64) -> SampleRecord {
    SampleRecord {
        key: sample.key,
        index: sample.index,
        repeat: sample.repeat,
        row_hash: sample.row_hash,
        variables: sample.variables,
        prompt: String::new(),
        output: None,
        scores: Vec::new(),
        error_kind: None,
        error: None,
        call: CallStats::default(),
        start_us,
        end_us: start_us,
        judge_calls: Vec::new(),
        replaces: false,
        cache: CacheUse::Off,
        endpoint: None,
    }
}
