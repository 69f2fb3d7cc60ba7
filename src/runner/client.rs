//! The model client as the runner sees it: which [`Api`] each provider
//! speaks and where it listens, and how a client's failure reads to the
//! retry loop and the concurrency strategy.

use std::sync::Arc;

use super::RunError;
use crate::concurrency::retry::Retryable;
use crate::concurrency::Outcome;
use crate::model::mock::MockServer;
use crate::model::openai::OpenAi;
use crate::model::{Api, ClientError, Endpoint, ModelClient};
use crate::spec::{ModelSpec, ProviderSpec};

/// The API each provider speaks. A new provider is its `Api` in `model/` and an arm here.
fn api(provider: &ProviderSpec) -> Arc<dyn Api> {
    match provider {
        // The mock is a loopback server speaking the OpenAI API.
        ProviderSpec::Openai(_) | ProviderSpec::Mock(_) => Arc::new(OpenAi),
    }
}

/// A client ready to call, and the mock it calls, if any.
pub struct Connection {
    pub client: ModelClient,
    /// Where requests go: what shared rate limits and pauses are keyed by.
    pub base_url: String,
    /// Serves the run while it lives; `None` for a real endpoint.
    pub mock: Option<MockServer>,
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
    let client = ModelClient::new(Endpoint {
        api: api(&model.provider),
        base_url: &base_url,
        model: &model.name,
        api_key,
        params: model.params.clone(),
        timeout: model.timeout,
        max_connections,
    })
    .map_err(RunError::Client)?;
    Ok(Connection {
        client,
        base_url,
        mock,
    })
}

/// How a concurrency strategy should read a failed attempt.
pub fn outcome(e: &ClientError) -> Outcome {
    match e {
        ClientError::Throttled { .. } => Outcome::Throttled,
        ClientError::Timeout(_) => Outcome::Timeout,
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
