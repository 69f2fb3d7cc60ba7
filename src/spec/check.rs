//! The checks of meaning that turn a [`RawSpec`] into an [`Evaluation`]: one
//! dataset source, templates that compile and name only known columns,
//! evaluators whose arguments fit, a model and a concurrency that make sense.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use serde_json::Value;

use super::identity::identity;
use super::locate::{self, parse_path, Locator, Step};
use super::raw::{self, RawCache, RawSpec, StrategyName};
use super::{
    Evaluation, ModelSpec, Prompt, ProviderSpec, DEFAULT_CONNECT_TIMEOUT, DEFAULT_READ_TIMEOUT,
    DEFAULT_TIMEOUT, DEFAULT_WINDOW,
};
use crate::cache::CachePolicy;
use crate::concurrency::rate::RateLimitSpec;
use crate::concurrency::retry::RetryPolicy;
use crate::concurrency::{AdaptiveConfig, StrategySpec};
use crate::dataset::{Dataset, Format, Source};
use crate::diagnostic::{did_you_mean, Diagnostic};
use crate::evaluators::{Build, Evaluator};
use crate::model::Role;
use crate::model::Timeouts;
use crate::secrets::Secrets;
use crate::template::Template;

/// The spec's identity (what resume compares), with the endpoint called
/// pinned into every model block and credentials scrubbed; the secrets
/// found; and the identity's hash.
fn identity_of(
    raw: &RawSpec,
    model: &ModelSpec,
    judge_models: &[Option<ModelSpec>],
) -> (Value, Secrets, String) {
    let mut secrets = Secrets::default();
    let mut identity = identity(raw);
    if let Some(model_json) = identity.get_mut("model") {
        pin_endpoint(model_json, model, &mut secrets);
    }
    if let Some(Value::Array(entries)) = identity.get_mut("evaluators") {
        for (entry, judge) in entries.iter_mut().zip(judge_models) {
            if let (Some(model_json), Some(judge)) = (entry.get_mut("model"), judge) {
                pin_endpoint(model_json, judge, &mut secrets);
            }
        }
    }
    if !secrets.is_empty() {
        let text = secrets.scrub(&identity.to_string()).into_owned();
        identity = serde_json::from_str(&text).unwrap_or(identity);
    }
    let spec_hash = format!(
        "{:032x}",
        xxhash_rust::xxh3::xxh3_128(identity.to_string().as_bytes())
    );
    (identity, secrets, spec_hash)
}

/// Pins the endpoint actually called into a model block's identity, even when
/// it comes from $OPENAI_BASE_URL (results from two servers must not be mixed
/// on resume), and takes the block's credentials into `secrets`.
fn pin_endpoint(model_json: &mut Value, model: &ModelSpec, secrets: &mut Secrets) {
    if let (Some(http), Value::Object(m)) = (model.provider.http(), &mut *model_json) {
        let url = &http.base_url;
        secrets.take_from_url(url);
        for replica in &http.replicas {
            secrets.take_from_url(replica);
        }
        m.insert("base_url".into(), Value::String(url.clone()));
    }
    secrets.take_from_json(model_json);
}

/// Semantic checks, with the file's positions at hand.
pub(super) struct Checker<'a> {
    pub(super) path: &'a Path,
    pub(super) text: &'a str,
    pub(super) locator: &'a Locator,
    pub(super) options: super::Options,
}

impl Checker<'_> {
    /// A diagnostic at the key `path` names (`"model.latency"`).
    pub(super) fn at_key(&self, path: &str, message: impl Into<String>) -> Diagnostic {
        let steps = parse_path(path);
        let pos = self
            .locator
            .key(&steps)
            .or_else(|| locate::find_key_text(self.text, &steps));
        self.at(pos, message)
    }

    /// A diagnostic at the value `path` names.
    pub(super) fn at_value(&self, path: &str, message: impl Into<String>) -> Diagnostic {
        let steps = parse_path(path);
        let pos = self
            .locator
            .value(&steps)
            .or_else(|| locate::find_key_text(self.text, &steps));
        self.at(pos, message)
    }

    fn at(&self, pos: Option<locate::Pos>, message: impl Into<String>) -> Diagnostic {
        let (line, column) = pos.map_or((0, 0), |p| (p.line, p.column));
        Diagnostic::new(self.path, line, column, message).with_source(self.text)
    }

    pub(super) fn check(&self, raw: RawSpec, text: &str) -> Result<Evaluation, Diagnostic> {
        if raw.matrix.is_some() {
            // `run` and `validate` expand it before checking each cell.
            return Err(self
                .at_key("matrix", "`matrix:` makes one evaluation per cell, and this command takes one")
                .with_hint("run the spec with `dotevals run`; for a single cell, leave `matrix:` out and write its values with --set"));
        }
        let model = self.model("model", &raw.model)?;
        // Judges' own model blocks, checked as the evaluation's is.
        let judge_models = raw
            .evaluators
            .iter()
            .enumerate()
            .map(|(i, e)| {
                e.model_block()
                    .map(|block| self.model(&format!("evaluators[{i}].model"), block))
                    .transpose()
            })
            .collect::<Result<Vec<_>, _>>()?;
        let key_vars: Vec<String> = std::iter::once(&model)
            .chain(judge_models.iter().flatten())
            .filter_map(|m| m.provider.http()?.api_key_env.as_ref())
            .map(|key| key.var.clone())
            .collect();
        let (identity, secrets, spec_hash) = identity_of(&raw, &model, &judge_models);
        let name = self.name(&raw)?;
        let dataset = self.dataset(&raw)?;
        let prompt = self.prompt(&raw)?;
        let evals = self.evaluators(&raw, &model, &judge_models, &key_vars)?;
        let concurrency = self.concurrency(&raw)?;
        let repeats = self.repeats(&raw)?;
        // Without the file, its columns are the fleet's, which checked them.
        let mut required_columns = match dataset.missing() {
            Some(_) => BTreeSet::new(),
            None => self.check_variables(&dataset, &prompt, &model, &evals)?,
        };
        if let Some(column) = dataset
            .cluster
            .as_ref()
            .filter(|_| dataset.missing().is_none())
        {
            let columns = dataset.known_columns()?;
            if !columns.contains(column) {
                let hint = match did_you_mean(column, columns.iter().map(String::as_str)) {
                    Some(c) => format!("did you mean `{c}`? Columns: {}", columns.join(", ")),
                    None => format!("columns: {}", columns.join(", ")),
                };
                return Err(self
                    .at_value(
                        "dataset.cluster",
                        format!("`cluster` names `{column}`, which is not a dataset column"),
                    )
                    .with_hint(hint));
            }
            // Every row must say which cluster it is in.
            required_columns.insert(column.clone());
        }
        Ok(Evaluation {
            name,
            spec_path: self.path.to_path_buf(),
            spec_text: secrets.scrub(text).into_owned(),
            secrets,
            spec_hash,
            identity,
            dataset,
            model,
            prompt,
            evaluators: evals,
            concurrency,
            required_columns,
            repeats,
            cache: match raw.cache {
                None | Some(RawCache::On(false)) => None,
                Some(RawCache::On(true)) => Some(CachePolicy::default()),
                Some(RawCache::Settings(s)) => Some(CachePolicy {
                    ttl: s.ttl.map(|t| t.0),
                }),
            },
        })
    }

    /// The evaluation's name: `name:`, else the spec file's stem.
    fn name(&self, raw: &RawSpec) -> Result<String, Diagnostic> {
        match &raw.name {
            Some(n) if n.trim().is_empty() => Err(self.at_value("name", "`name` is empty")),
            // Names are printed in progress lines and typed back (`--eval NAME`).
            Some(n) if n.chars().any(char::is_control) => Err(self
                .at_value("name", "`name` may not hold control characters")
                .with_hint("use letters, digits, spaces and punctuation")),
            Some(n) => Ok(n.clone()),
            None => Ok(self
                .path
                .file_stem()
                .map_or("evaluation".into(), |s| s.to_string_lossy().into_owned())),
        }
    }

    /// Every evaluator built, each judge with its own model block or the
    /// evaluation's; two of one name are refused.
    fn evaluators(
        &self,
        raw: &RawSpec,
        model: &ModelSpec,
        judge_models: &[Option<ModelSpec>],
        key_vars: &[String],
    ) -> Result<Vec<Evaluator>, Diagnostic> {
        let mut evals = Vec::with_capacity(raw.evaluators.len());
        let spec_dir = self.path.parent().unwrap_or(Path::new(""));
        for (i, (e, own)) in raw.evaluators.iter().zip(judge_models).enumerate() {
            let with = Build {
                spec_dir,
                model: Some(own.as_ref().unwrap_or(model)),
                own_model: own.is_some(),
                key_vars,
            };
            let built = e.build_in(&with).map_err(|err| {
                let key = format!("evaluators[{i}].{}", err.key);
                let mut d = self.at_key(&key, err.message).with_hint_opt(err.hint);
                if let Some(line) = err.template_line {
                    d.message.push_str(&format!(" (template line {line})"));
                }
                d
            })?;
            evals.push(built);
        }
        let mut seen = BTreeSet::new();
        for (i, e) in evals.iter().enumerate() {
            if !seen.insert(e.name.clone()) {
                return Err(self
                    .at_key(
                        &format!("evaluators[{i}]"),
                        format!("two evaluators are named `{}`", e.name),
                    )
                    .with_hint("give one of them a `name:` of its own"));
            }
        }
        Ok(evals)
    }

    /// `repeats:`, 1 when unset.
    fn repeats(&self, raw: &RawSpec) -> Result<u32, Diagnostic> {
        match raw.repeats {
            None => Ok(1),
            Some(n) if (1..=crate::repeats::MAX).contains(&n) => Ok(n),
            Some(n) => Err(self
                .at_value(
                    "repeats",
                    format!("`repeats` is {n}; it must be 1 to {}", crate::repeats::MAX),
                )
                .with_hint("the times each sample is sent, e.g. `repeats: 3`")),
        }
    }

    fn dataset(&self, raw: &RawSpec) -> Result<Dataset, Diagnostic> {
        let d = &raw.dataset;
        let source = match (&d.rows, &d.path) {
            (Some(_), Some(_)) => {
                return Err(self
                    .at_key("dataset.path", "`dataset` has both `rows` and `path`")
                    .with_hint("keep one: inline `rows`, or a `path` to a data file"))
            }
            (None, None) => {
                return Err(self
                    .at_key("dataset", "`dataset` needs `rows` or `path`")
                    .with_hint(
                        "write `path: data/file.jsonl` (relative to this spec) or `rows: [...]`",
                    ))
            }
            (Some(rows), None) => {
                let rows_key = [Step::Key("dataset".into()), Step::Key("rows".into())];
                let fallback = locate::find_key_text(self.text, &rows_key);
                let positions = (0..rows.len())
                    .map(|i| {
                        let row = [rows_key[0].clone(), rows_key[1].clone(), Step::Index(i)];
                        let p = self.locator.value(&row).or(fallback);
                        p.map_or((0, 0), |p| (p.line, p.column))
                    })
                    .collect();
                Source::Inline {
                    spec_file: self.path.to_path_buf(),
                    rows: Arc::new(rows.clone()),
                    positions: Arc::new(positions),
                }
            }
            (None, Some(p)) => {
                let base = self.path.parent().unwrap_or(Path::new(""));
                let path = base.join(p);
                let Some(format) = Format::from_path(&path) else {
                    return Err(self
                        .at_value("dataset.path", format!("cannot tell the format of `{p}`"))
                        .with_hint("use a .jsonl, .ndjson, .json, .csv or .tsv file"));
                };
                if !path.is_file() {
                    let missing = self
                        .at_value(
                            "dataset.path",
                            format!("dataset file `{}` not found", path.display()),
                        )
                        .with_hint("`path` is relative to the spec file's folder");
                    if !self.options.dataset_may_be_missing {
                        return Err(missing);
                    }
                    return Ok(Dataset {
                        source: Source::Missing {
                            path,
                            missing: Box::new(missing),
                        },
                        columns: d.columns.clone(),
                        id_column: d.id.clone(),
                        limit: d.limit,
                        cluster: d.cluster.clone(),
                        shard: None,
                    });
                }
                if matches!(format, Format::Csv | Format::Tsv) && d.columns.is_some() {
                    return Err(self
                        .at_key(
                            "dataset.columns",
                            "`columns` does not apply to CSV/TSV files",
                        )
                        .with_hint("the header row names the columns; remove `columns`"));
                }
                Source::File { path, format }
            }
        };
        if let Some(cols) = &d.columns {
            let mut seen = BTreeSet::new();
            for c in cols {
                if !seen.insert(c) {
                    return Err(
                        self.at_value("dataset.columns", format!("column `{c}` is named twice"))
                    );
                }
            }
        }
        if d.limit == Some(0) {
            return Err(self.at_value("dataset.limit", "`limit` must be at least 1"));
        }
        if d.cluster.as_deref().is_some_and(|c| c.trim().is_empty()) {
            return Err(self
                .at_value("dataset.cluster", "`cluster` is empty")
                .with_hint(
                    "name the column whose values group the samples, e.g. `cluster: passage_id`",
                ));
        }
        Ok(Dataset {
            source,
            columns: d.columns.clone(),
            id_column: d.id.clone(),
            limit: d.limit,
            cluster: d.cluster.clone(),
            shard: None,
        })
    }

    /// Checks the model block at `at` (`model`, or a judge's `evaluators[2].model`).
    fn model(&self, at: &str, m: &raw::RawModel) -> Result<ModelSpec, Diagnostic> {
        self.reserved_params(at, &m.params, m.provider.declared())?;
        let rate_limit = match &m.rate_limit {
            None => None,
            Some(r) => {
                for (key, value) in [
                    ("requests_per_minute", r.requests_per_minute),
                    ("tokens_per_minute", r.tokens_per_minute),
                ] {
                    if value == Some(0) {
                        return Err(self
                            .at_value(
                                &format!("{at}.rate_limit.{key}"),
                                format!("`{key}` must be at least 1"),
                            )
                            .with_hint("leave it out for no limit"));
                    }
                }
                Some(RateLimitSpec {
                    requests_per_minute: r.requests_per_minute,
                    tokens_per_minute: r.tokens_per_minute,
                })
            }
        };
        let duration =
            |key: &str, value: Option<raw::DurationText>, default: std::time::Duration| {
                let d = value.map_or(default, |t| t.0);
                if d.is_zero() {
                    return Err(self.at_value(
                        &format!("{at}.{key}"),
                        format!("`{key}` must be greater than zero"),
                    ));
                }
                Ok(d)
            };
        let timeouts = Timeouts {
            total: duration("timeout", m.timeout, DEFAULT_TIMEOUT)?,
            connect: duration(
                "connect_timeout",
                m.connect_timeout,
                DEFAULT_CONNECT_TIMEOUT,
            )?,
            read: duration("read_timeout", m.read_timeout, DEFAULT_READ_TIMEOUT)?,
        };
        let defaults = RetryPolicy::default();
        let retry = match &m.retry {
            None => defaults,
            Some(r) => {
                if r.max_attempts == Some(0) {
                    return Err(self
                        .at_value(
                            &format!("{at}.retry.max_attempts"),
                            "`max_attempts` must be at least 1",
                        )
                        .with_hint("1 means no retries"));
                }
                RetryPolicy {
                    max_attempts: r.max_attempts.unwrap_or(defaults.max_attempts),
                    backoff: r.backoff.map_or(defaults.backoff, |d| d.0),
                    max_backoff: r.max_backoff.map_or(defaults.max_backoff, |d| d.0),
                    max_wait: r.max_wait.map_or(defaults.max_wait, |d| d.0),
                }
            }
        };
        if m.stream == Some(true) && !m.provider.declared().streams {
            return Err(self
                .at_value(
                    &format!("{at}.stream"),
                    format!("provider `{}` does not stream", m.provider.as_str()),
                )
                .with_hint("remove `stream` (replies are read whole)"));
        }
        let provider = match (m.provider, &m.provider.declared().hosted) {
            (raw::Provider::Mock, _) => ProviderSpec::Mock(self.mock(at, m)?),
            (_, Some(hosted)) => {
                ProviderSpec::Http(m.provider.declared(), self.http_endpoint(at, m, hosted)?)
            }
            (_, None) => {
                let (endpoint, spec) = self.json_endpoint(at, m)?;
                ProviderSpec::Json(endpoint, Arc::new(spec))
            }
        };
        let name = match (&m.name, &provider) {
            (Some(name), _) => name.clone(),
            (None, ProviderSpec::Mock(_)) => "mock".into(),
            // What reports name the model by (and `{{ model }}` in its body).
            (None, ProviderSpec::Json(endpoint, _)) => endpoint.base_url.clone(),
            (None, ProviderSpec::Http(p, _)) => {
                return Err(self
                    .at_key(
                        &format!("{at}.provider"),
                        format!("provider `{}` needs the model's `name`", p.name),
                    )
                    .with_hint("add `name: gpt-4o-mini` (sent as the request's \"model\")"))
            }
        };
        Ok(ModelSpec {
            name,
            params: m.params.clone(),
            timeouts,
            stream: m.stream.unwrap_or(false),
            retry,
            rate_limit,
            provider,
        })
    }

    fn prompt(&self, raw: &RawSpec) -> Result<Prompt, Diagnostic> {
        match (&raw.prompt, &raw.messages) {
            (Some(_), Some(_)) => Err(self
                .at_key("messages", "the spec has both `prompt` and `messages`")
                .with_hint("keep one: `prompt` sends a single user message")),
            (None, None) => Err(self
                .at(None, "the spec needs `prompt` or `messages`")
                .with_hint("add e.g. `prompt: \"Classify: {{ text }}\"`")),
            (Some(p), None) => Ok(Prompt::Text(self.template("prompt", &p.0)?)),
            (None, Some(msgs)) => {
                if msgs.is_empty() {
                    return Err(self.at_value("messages", "`messages` is empty"));
                }
                let mut out = Vec::with_capacity(msgs.len());
                for (i, m) in msgs.iter().enumerate() {
                    let Some(role) = Role::from_name(&m.role) else {
                        return Err(self
                            .at_value(
                                &format!("messages[{i}].role"),
                                format!("unknown role `{}`", m.role),
                            )
                            .with_hint_opt(
                                did_you_mean(&m.role, Role::NAMES)
                                    .map(|r| format!("did you mean `{r}`?")),
                            ));
                    };
                    out.push((
                        role,
                        self.template(&format!("messages[{i}].content"), &m.content.0)?,
                    ));
                }
                Ok(Prompt::Messages(out))
            }
        }
    }

    fn template(&self, key: &str, source: &str) -> Result<Template, Diagnostic> {
        Template::compile(source).map_err(|e| {
            let mut d = self.at_value(key, format!("template error in `{key}`: {}", e.message));
            if let (Some(line), true) = (e.line, source.contains('\n')) {
                d.message.push_str(&format!(" (template line {line})"));
            }
            d
        })
    }

    fn concurrency(&self, raw: &RawSpec) -> Result<StrategySpec, Diagnostic> {
        let Some(c) = &raw.concurrency else {
            return Ok(StrategySpec::SlidingWindow(DEFAULT_WINDOW));
        };
        for (key, set) in [
            ("initial", c.initial.is_some()),
            ("min", c.min.is_some()),
            ("max", c.max.is_some()),
        ] {
            if set && c.strategy != Some(StrategyName::Adaptive) {
                return Err(self.at_key(
                    &format!("concurrency.{key}"),
                    format!("`{key}` only applies to `strategy: adaptive`"),
                ));
            }
        }
        for (key, value) in [
            ("max_concurrency", c.max_concurrency),
            ("max", c.max),
            ("min", c.min),
            ("initial", c.initial),
        ] {
            if value.is_some_and(|v| v > crate::concurrency::MAX_WINDOW) {
                return Err(self.at_value(
                    &format!("concurrency.{key}"),
                    format!("`{key}` may be at most {}", crate::concurrency::MAX_WINDOW),
                ));
            }
        }
        match (c.strategy, c.max_concurrency) {
            (_, Some(0)) => Err(self.at_value(
                "concurrency.max_concurrency",
                "`max_concurrency` must be at least 1",
            )),
            (Some(StrategyName::Sequential), Some(n)) if n != 1 => Err(self
                .at_key(
                    "concurrency.max_concurrency",
                    "`sequential` runs one request at a time",
                )
                .with_hint(format!(
                    "for {n} at a time write `strategy: sliding_window`"
                ))),
            (Some(StrategyName::Sequential), _) => Ok(StrategySpec::Sequential),
            (Some(StrategyName::Adaptive), Some(_)) => Err(self
                .at_key(
                    "concurrency.max_concurrency",
                    "`adaptive` finds its own limit",
                )
                .with_hint("bound it with `min` and `max` instead of `max_concurrency`")),
            (Some(StrategyName::Adaptive), None) => {
                let d = AdaptiveConfig::default();
                let min = c.min.unwrap_or(d.min);
                let max = c.max.unwrap_or(d.max.max(min));
                let initial = c.initial.unwrap_or(d.initial.clamp(min, max.max(min)));
                let config = AdaptiveConfig { initial, min, max };
                for (key, value) in [
                    ("min", config.min),
                    ("initial", config.initial),
                    ("max", config.max),
                ] {
                    if value == 0 {
                        return Err(self.at_value(
                            &format!("concurrency.{key}"),
                            format!("`{key}` must be at least 1"),
                        ));
                    }
                }
                if config.min > config.max {
                    return Err(self.at_value(
                        "concurrency.min",
                        format!("`min` ({}) is above `max` ({})", config.min, config.max),
                    ));
                }
                if !(config.min..=config.max).contains(&config.initial) {
                    return Err(self.at_value(
                        "concurrency.initial",
                        format!(
                            "`initial` ({}) must lie between `min` ({}) and `max` ({})",
                            config.initial, config.min, config.max
                        ),
                    ));
                }
                Ok(StrategySpec::Adaptive(config))
            }
            (Some(StrategyName::SlidingWindow) | None, n) => {
                Ok(StrategySpec::SlidingWindow(n.unwrap_or(DEFAULT_WINDOW)))
            }
        }
    }

    /// Every template variable must be a dataset column (or `output`, in evaluator
    /// arguments). Returns the columns the templates need.
    fn check_variables(
        &self,
        dataset: &Dataset,
        prompt: &Prompt,
        model: &ModelSpec,
        evals: &[Evaluator],
    ) -> Result<BTreeSet<String>, Diagnostic> {
        // Each template, with the names given to it beside the columns (an
        // evaluator's `output` and what it `provides`; `provider: http`'s
        // `prompt`, `messages`, ...), and whether it is an evaluator's.
        let mut uses: Vec<(String, &Template, Option<&[&str]>, bool)> = match prompt {
            Prompt::Text(t) => vec![("prompt".into(), t, None, false)],
            Prompt::Messages(ms) => ms
                .iter()
                .enumerate()
                .map(|(i, (_, t))| (format!("messages[{i}].content"), t, None, false))
                .collect(),
        };
        if let Some(json) = model.provider.json() {
            for (at, t) in json
                .body
                .iter()
                .flat_map(crate::model::json_api::Body::templates)
            {
                uses.push((
                    format!("model.body{at}"),
                    t,
                    Some(&crate::model::json_api::PROVIDED),
                    false,
                ));
            }
        }
        for (i, e) in evals.iter().enumerate() {
            for (key, t) in e.scorer.templates() {
                uses.push((
                    format!("evaluators[{i}].{key}"),
                    t,
                    Some(e.scorer.provides()),
                    true,
                ));
            }
        }
        let columns = dataset.known_columns()?;
        let mut required = BTreeSet::new();
        for (key, template, provided, is_evaluator) in &uses {
            let is_evaluator = *is_evaluator;
            for var in template.variables() {
                if is_evaluator && var == "output" || provided.is_some_and(|p| p.contains(&&*var)) {
                    continue;
                }
                // The whole row (`row["review text"]`) and the engine's own globals.
                let builtin = var == crate::template::ROW || crate::template::is_builtin(&var);
                if builtin && !columns.contains(&var) {
                    continue;
                }
                if !columns.contains(&var) {
                    let mut names: Vec<&str> = columns.iter().map(String::as_str).collect();
                    if let Some(provided) = provided {
                        if is_evaluator {
                            names.push("output");
                        }
                        names.extend(provided.iter());
                    }
                    // A name that is not an identifier is read as `row["review text"]`.
                    let refs = names
                        .iter()
                        .map(|n| crate::template::column_reference(n))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let hint = match did_you_mean(&var, names.iter().copied()) {
                        Some(m) => format!(
                            "did you mean `{}`? Available: {refs}",
                            crate::template::column_reference(m)
                        ),
                        None => format!("available variables: {refs}"),
                    };
                    let output_note = if !is_evaluator && var == "output" {
                        " (`output` exists only in evaluator arguments)"
                    } else {
                        ""
                    };
                    return Err(self.at_value(key, format!("template in `{key}` uses `{var}`, which is not a dataset column{output_note}"))
                        .with_hint(hint));
                }
                required.insert(var);
            }
        }
        Ok(required)
    }
}
