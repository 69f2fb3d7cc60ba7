//! The eval spec: YAML in, a checked [`Evaluation`] out.
//!
//! [`load`] parses the file into the serde mirror in [`raw`], then checks
//! meaning: one dataset source, templates that compile and name only known
//! columns, evaluators whose arguments fit, a concurrency setting that makes
//! sense. Every failure is a [`Diagnostic`] naming file, line and column, so a
//! bad spec stops before any request. Nothing here touches the network or store.

mod check;
mod identity;
pub mod locate;
mod matrix;
mod overrides;
mod params;
mod parse;
mod provider;
pub mod raw;
pub mod shape;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};

use crate::concurrency::rate::RateLimitSpec;
use crate::concurrency::retry::RetryPolicy;
use crate::concurrency::StrategySpec;
use crate::dataset::Dataset;
use crate::diagnostic::Diagnostic;
use crate::evaluators::Evaluator;
use crate::model::mock::MockSpec;
use crate::model::{Provider, Role};
use crate::secrets::Secrets;
use crate::template::Template;
use check::Checker;
pub use identity::{changed_parts, same_results};
use locate::Locator;
pub use matrix::{coordinates, Coordinate, MatrixArg};
pub use overrides::{at_value, recorded as recorded_overrides, Override};
use parse::parse;

use crate::model::json_api::JsonSpec;
use crate::model::Timeouts;

/// Per-attempt timeout when the spec names none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// Time to open a connection when the spec names none.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest silence within a reply's body when the spec names none.
pub const DEFAULT_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Sliding window size when the spec names none (the tutorial's default).
pub const DEFAULT_WINDOW: usize = 4;

/// One checked evaluation, ready to run.
#[derive(Debug)]
pub struct Evaluation {
    pub name: String,
    pub spec_path: PathBuf,
    /// The spec file as written, with any credentials in it redacted.
    pub spec_text: String,
    /// Credentials written into the spec (secret-looking `params`, a URL password),
    /// scrubbed from everything recorded.
    pub secrets: Secrets,
    /// Hash of everything that decides a sample's result (see [`identity`]).
    pub spec_hash: String,
    /// The parts of the spec that decide results, to say what changed on resume.
    pub identity: Value,
    pub dataset: Dataset,
    pub model: ModelSpec,
    pub prompt: Prompt,
    pub evaluators: Vec<Evaluator>,
    pub concurrency: StrategySpec,
    /// Dataset columns some template reads; every row must have them.
    pub required_columns: BTreeSet<String>,
    /// Times each sample is sent (`repeats`, 1 to [`crate::repeats::MAX`]).
    pub repeats: u32,
    /// The response cache (`cache:`, or `--cache`); `None` when off.
    pub cache: Option<crate::cache::CachePolicy>,
}

impl Evaluation {
    /// What its evaluators warn of: `EVALUATOR: WHAT`, one line each.
    pub fn warnings(&self) -> Vec<String> {
        self.evaluators
            .iter()
            .filter_map(|e| Some(format!("{}: {}", e.name, e.scorer.warning()?)))
            .collect()
    }

    /// What its `command` scorers will run: `EVALUATOR runs PROGRAM ARGS...
    /// in FOLDER`, one line each.
    pub fn programs(&self) -> Vec<String> {
        self.evaluators
            .iter()
            .filter_map(|e| Some(format!("{} runs {}", e.name, e.scorer.program()?)))
            .collect()
    }
}

/// What is sent as the conversation.
#[derive(Debug, Clone)]
pub enum Prompt {
    /// One user message.
    Text(Template),
    /// Role-tagged messages.
    Messages(Vec<(Role, Template)>),
}

/// The model and how to call it.
#[derive(Debug, Clone)]
pub struct ModelSpec {
    /// Sent as the request's `model`.
    pub name: String,
    pub params: Map<String, Value>,
    pub timeouts: Timeouts,
    /// Read replies as they stream (server-sent events).
    pub stream: bool,
    pub retry: RetryPolicy,
    /// Client-side request and token quotas.
    pub rate_limit: Option<RateLimitSpec>,
    /// Who serves the model, with the settings only that provider takes.
    pub provider: ProviderSpec,
}

/// Who serves the model: a server reached over HTTP in its provider's API,
/// or the built-in mock.
#[derive(Debug, Clone)]
pub enum ProviderSpec {
    Http(&'static Provider, HttpEndpoint),
    /// `provider: http`: its address, and the request and pointers the spec wrote.
    Json(HttpEndpoint, Arc<JsonSpec>),
    /// The built-in mock, served on loopback for the run (it speaks the OpenAI API).
    Mock(MockSpec),
}

/// A server reached over the network.
#[derive(Debug, Clone)]
pub struct HttpEndpoint {
    /// Without a trailing slash; the first replica's when there are several.
    pub base_url: String,
    /// Every replica's address, `base_url` first, when `base_url` is a list
    /// (each gets a window of its own); empty for one server.
    pub replicas: Vec<String>,
    /// The variable holding the API key, when one is sent.
    pub api_key_env: Option<ApiKeyEnv>,
}

/// Where the API key comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyEnv {
    pub var: String,
    /// Unset is an error: the spec named the variable, or the endpoint is the
    /// provider's own (which answers nothing without a key).
    pub required: bool,
}

impl ProviderSpec {
    /// The name written in specs and shown in reports.
    pub fn as_str(&self) -> &'static str {
        self.declared().name
    }

    /// What the provider is, as its module declares it.
    pub fn declared(&self) -> &'static Provider {
        match self {
            ProviderSpec::Http(provider, _) => provider,
            ProviderSpec::Json(..) => &crate::model::json_api::PROVIDER,
            ProviderSpec::Mock(_) => &crate::model::mock::PROVIDER,
        }
    }

    /// The server's address; `None` for the mock, known only once it listens.
    pub fn http(&self) -> Option<&HttpEndpoint> {
        match self {
            ProviderSpec::Http(_, endpoint) | ProviderSpec::Json(endpoint, _) => Some(endpoint),
            ProviderSpec::Mock(_) => None,
        }
    }

    /// `provider: http`'s request and pointers.
    pub fn json(&self) -> Option<&Arc<JsonSpec>> {
        match self {
            ProviderSpec::Json(_, spec) => Some(spec),
            _ => None,
        }
    }
}

impl ModelSpec {
    /// The mock's rules, when the mock serves this model.
    pub fn mock(&self) -> Option<&MockSpec> {
        match &self.provider {
            ProviderSpec::Mock(mock) => Some(mock),
            _ => None,
        }
    }
}

/// Reads and checks the spec at `path`.
pub fn load(path: &Path) -> Result<Evaluation, Diagnostic> {
    load_with(path, &[])
}

/// Reads the spec at `path`, applies `overrides` (`--set`) in order and checks
/// the result as a spec file; the stored text records them (see [`overrides`]).
pub fn load_with(path: &Path, overrides: &[Override]) -> Result<Evaluation, Diagnostic> {
    load_with_options(path, overrides, Options::default())
}

/// How a spec is loaded.
#[derive(Debug, Clone, Copy, Default)]
pub struct Options {
    /// A dataset file this machine lacks is set aside rather than refused
    /// (`dataset::Source::Missing`): a worker joining a fleet on a shared
    /// store needs only the spec. Reading the rows is then the error.
    pub dataset_may_be_missing: bool,
}

/// [`load_with`], with `options`.
pub fn load_with_options(
    path: &Path,
    overrides: &[Override],
    options: Options,
) -> Result<Evaluation, Diagnostic> {
    let text = read_text(path)?;
    if overrides.is_empty() {
        from_text_with_options(path, text, options)
    } else {
        overrides::from_text_with(path, text, overrides, options)
    }
}

/// The evaluations of the spec at `path`: one, or with `matrix:` (and
/// `--matrix` axes) one per cell, named `NAME/LABEL...`; each checked as a
/// spec of its own with `overrides` (`--set`) applied first.
pub fn load_cells(
    path: &Path,
    overrides: &[Override],
    axes: &[MatrixArg],
    options: Options,
) -> Result<Vec<Evaluation>, Diagnostic> {
    let text = read_text(path)?;
    let mut doc = overrides::read_doc(path, &text)?;
    let Some(matrix) = matrix::Matrix::take(&mut doc, path, &text, axes)? else {
        return load_with_options(path, overrides, options).map(|e| vec![e]);
    };
    let name = doc
        .get("name")
        .and_then(|n| n.as_str())
        .map(str::to_owned)
        .or_else(|| path.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "eval".into());
    let mut evals = Vec::with_capacity(matrix.len());
    for cell in matrix.cells() {
        let mut all = overrides.to_vec();
        all.extend(cell.overrides);
        let stored = overrides::snapshot(&matrix::record(&text, &cell.coordinates), overrides);
        let mut eval = overrides::check_with(path, &text, doc.clone(), &all, &stored, options)?;
        eval.name = format!("{name}{}", cell.suffix);
        evals.push(eval);
    }
    Ok(evals)
}

/// The spec file at `path` as text (a byte order mark dropped).
fn read_text(path: &Path) -> Result<String, Diagnostic> {
    let bytes = std::fs::read(path)
        .map_err(|e| Diagnostic::new(path, 0, 0, format!("cannot read spec: {e}")))?;
    let text = String::from_utf8(bytes).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = good.iter().filter(|b| **b == b'\n').count() + 1;
        let column = good.len() - good.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1) + 1;
        Diagnostic::new(path, line, column, "the spec is not valid UTF-8")
            .with_hint("save the file as UTF-8")
    })?;
    // A byte order mark some editors write at the start of a file.
    Ok(match text.strip_prefix('\u{feff}') {
        Some(rest) => rest.to_owned(),
        None => text,
    })
}

/// Checks spec `text` as if read from `path` (relative dataset paths resolve against it).
pub fn from_text(path: &Path, text: String) -> Result<Evaluation, Diagnostic> {
    from_text_with_options(path, text, Options::default())
}

/// [`from_text`], with `options`.
fn from_text_with_options(
    path: &Path,
    text: String,
    options: Options,
) -> Result<Evaluation, Diagnostic> {
    let locator = Locator::new(&text);
    if let Some(pos) = locator.too_deep() {
        return Err(Diagnostic::new(
            path,
            pos.line,
            pos.column,
            format!("the spec nests deeper than {} levels", locate::MAX_DEPTH),
        )
        .with_source(&text)
        .with_hint(
            "mappings and lists may nest at most this deep; was this file generated by mistake?",
        ));
    }
    let raw = parse(path, &text, &locator)?;
    Checker {
        path,
        text: &text,
        locator: &locator,
        options,
    }
    .check(raw, &text)
}

/// Two evaluations of one run (or one `validate`) that share a name.
#[derive(Debug, thiserror::Error)]
#[error("{} and {} both define evaluation `{name}`", .first.display(), .second.display())]
pub struct SameName {
    pub first: PathBuf,
    pub second: PathBuf,
    pub name: String,
}

/// Refuses `eval` when one of `earlier` has its name.
pub fn check_unique(earlier: &[Evaluation], eval: &Evaluation) -> Result<(), SameName> {
    match earlier.iter().find(|e| e.name == eval.name) {
        Some(other) => Err(SameName {
            first: other.spec_path.clone(),
            second: eval.spec_path.clone(),
            name: eval.name.clone(),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod fuzz;
#[cfg(test)]
mod tests;
