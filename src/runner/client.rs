//! The model client as the runner sees it: which [`Api`] each provider
//! speaks and where it listens, and the judges' connections.

use std::sync::Arc;

use tokio::sync::Semaphore;

use super::{Planned, RunError};
use crate::cache::{Cache, CacheLookup, CachePolicy, Keyer};
use crate::call::Caller;
use crate::concurrency::pause::{Pause, Pauses};
use crate::concurrency::rate::{RateLimit, RateLimits};
use crate::concurrency::retry::Retry;
use crate::evaluators::llm_judge::Link;
use crate::model::mock::MockServer;
use crate::model::{ApiOptions, Endpoint, ModelClient};
use crate::spec::ModelSpec;

/// A client ready to call, and the mock it calls, if any.
pub struct Connection {
    pub client: ModelClient,
    /// Where requests go: what shared rate limits and pauses are keyed by.
    pub base_url: String,
    /// Serves the run while it lives; `None` for a real endpoint.
    pub mock: Option<MockServer>,
    /// What the cache keys the endpoint by: its URL, or for the mock (on a
    /// new port every run) the rules its replies follow. Replicas serve one
    /// model: the first one's URL keys them all.
    pub cache_url: String,
    /// The other replicas, when `base_url` is a list: (base URL, client).
    pub replicas: Vec<(String, ModelClient)>,
}

/// Starts the mock if `model` is one, and builds the client for its endpoint.
pub async fn connect(
    model: &ModelSpec,
    api_key: Option<&str>,
    max_connections: usize,
) -> Result<Connection, RunError> {
    let (mock, base_url) = match (model.mock(), model.provider.http()) {
        (Some(spec), _) => {
            let server = MockServer::start(spec.clone(), ([127, 0, 0, 1], 0).into())
                .await
                .map_err(RunError::Mock)?;
            let url = server.base_url();
            (Some(server), url)
        }
        (None, Some(http)) => (None, http.base_url.clone()),
        (None, None) => {
            let provider = model.provider.as_str();
            return Err(RunError::Client(format!(
                "provider `{provider}` has no address"
            )));
        }
    };
    let client = client_at(model, &base_url, api_key, max_connections)?;
    let cache_url = match model.mock() {
        Some(spec) => mock_identity(spec),
        None => client.url().to_owned(),
    };
    let others = model
        .provider
        .http()
        .map_or(&[][..], |h| h.replicas.get(1..).unwrap_or(&[]));
    let replicas = others
        .iter()
        .map(|url| {
            Ok((
                url.clone(),
                client_at(model, url, api_key, max_connections)?,
            ))
        })
        .collect::<Result<_, RunError>>()?;
    Ok(Connection {
        client,
        base_url,
        mock,
        cache_url,
        replicas,
    })
}

/// The built-in mock as a cache key sees it: its replies follow its rules
/// (its latency changes none of them).
fn mock_identity(spec: &crate::model::mock::MockSpec) -> String {
    let rules: Vec<(&[String], &str)> = spec
        .rules
        .iter()
        .map(|r| (r.when_contains.as_slice(), r.reply.as_str()))
        .collect();
    format!("mock:{}", serde_json::to_string(&rules).unwrap_or_default())
}

/// The client for `model` served at `base_url`.
fn client_at(
    model: &ModelSpec,
    base_url: &str,
    api_key: Option<&str>,
    max_connections: usize,
) -> Result<ModelClient, RunError> {
    ModelClient::new(Endpoint {
        api: (model.provider.declared().api)(&ApiOptions {
            stream: model.stream,
            json: model.provider.json().cloned(),
            api_key: api_key.map(str::to_owned),
        }),
        base_url,
        model: &model.name,
        api_key,
        params: model.params.clone(),
        timeouts: model.timeouts,
        max_connections,
    })
    .map_err(RunError::Client)
}

/// The judges connected for a run: the mocks started for them (which serve
/// while they live), and what their requests may wait on, for the progress
/// line.
#[derive(Default)]
pub struct Judges {
    pub mocks: Vec<MockServer>,
    /// Each judge's endpoint pause and rate limit.
    pub waits: Vec<(Arc<Pause>, Option<Arc<RateLimit>>)>,
}

/// Connects every judge of `plan` for this run: each gets its own client and
/// window, its model block's retries, and the rate limit and pause of its
/// endpoint, shared with the evaluation (`model_url`) when they call the same
/// endpoint and model. A judge without a model block of its own calls the
/// evaluation's endpoint (its mock included).
pub async fn connect_judges(
    plan: &Planned,
    eval_model: Option<&Connection>,
    cache: Option<&Arc<dyn CacheLookup>>,
    rates: &RateLimits,
    pauses: &Pauses,
) -> Result<Judges, RunError> {
    let model_url = eval_model.map_or("", |c| c.base_url.as_str());
    let eval = &plan.eval;
    let mut judges = Judges::default();
    for (evaluator, key) in eval.evaluators.iter().zip(&plan.judge_keys) {
        let Some(judge) = evaluator.scorer.judge() else {
            continue;
        };
        let model = judge.model();
        let window = judge
            .window()
            .unwrap_or_else(|| plan.strategy.max_concurrency());
        let (client, url, cache_url) = if judge.own_model() {
            let connection = connect(model, key.as_deref(), window).await?;
            judges.mocks.extend(connection.mock);
            (connection.client, connection.base_url, connection.cache_url)
        } else {
            let client = client_at(model, model_url, key.as_deref(), window)?;
            let cache_url =
                eval_model.map_or_else(|| client.url().to_owned(), |c| c.cache_url.clone());
            (client, model_url.to_owned(), cache_url)
        };
        let client = client.with_secrets(&plan.secrets);
        // A judge's request is keyed like a sample's: its own params say
        // whether its replies are sampled (it has no repeats of its own).
        let cache = match (eval.cache, cache) {
            (Some(policy), Some(lookup)) => {
                Some(cache_for(model, &cache_url, &client, 1, policy, lookup))
            }
            _ => None,
        };
        let rate = model
            .rate_limit
            .map(|spec| rates.get(&rate_key(&url, model), spec).0);
        let pause = pauses.get(&rate_key(&url, model));
        judges.waits.push((Arc::clone(&pause), rate.clone()));
        let retry = Retry::new(model.retry).with_pause(pause);
        judge.connect(Link {
            caller: Caller::new(client, retry, rate, &model.params),
            window: Semaphore::new(window),
            cache,
        });
    }
    Ok(judges)
}

/// The response cache of the requests `client` sends for `model` (keyed by
/// `cache_url`, see [`Connection::cache_url`]), sent `repeats` times each.
pub fn cache_for(
    model: &ModelSpec,
    cache_url: &str,
    client: &ModelClient,
    repeats: u32,
    policy: CachePolicy,
    lookup: &Arc<dyn CacheLookup>,
) -> Cache {
    Cache {
        keyer: Keyer::new(
            model.provider.as_str(),
            cache_url,
            client.secrets().clone(),
            &model.params,
            repeats,
        ),
        lookup: Arc::clone(lookup),
        policy,
        model: model.name.clone(),
    }
}

/// What a rate limit and a throttling pause are shared by: one endpoint and
/// model (a hosted API or a proxy keeps quotas per model, so a 429 for one
/// model says nothing of another's).
pub fn rate_key(base_url: &str, model: &ModelSpec) -> String {
    format!("{base_url} {}", model.name)
}
