//! Evaluators: each turns a model reply into one score per sample.
//!
//! One file per evaluator: its argument struct (the spec entry, minus `type` and
//! `name`) implements [`Arguments`], and what it builds implements [`Score`]. The
//! [`registry!`] below is the one place that maps a spec's `type:` to a file.
//! Building checks arguments (a bad regex or JSON Schema fails at load, before any
//! request); scoring is pure. [`passes`] is the one rule that turns a score into
//! pass or fail: a sample passes when its score is at least the evaluator's
//! `threshold` (the entry's key, else [`Arguments::default_threshold`]).

mod choice;
mod command;
mod contains;
mod entry;
mod exact_match;
mod f1;
mod json_match;
pub mod llm_judge;
mod numeric_match;
mod regex;
mod similarity;
mod valid_json;

use std::sync::Arc;

use minijinja::Value;
use serde::{Deserialize, Serialize};

use crate::spec::raw::{RawModel, Text};
use crate::spec::ModelSpec;
use crate::store::writer::JudgeRecord;
use crate::template::Template;
pub use entry::{entry_error, Entry, EntryError};
pub use numeric_match::NumberError;

/// The registry: `"type"` => `Variant(its argument struct)`, in the order hints list them.
/// Adding an evaluator is a new file plus one line here.
macro_rules! registry {
    ($($name:literal => $variant:ident($args:ty),)+) => {
        /// One spec entry: `type` picks the variant, the other keys are its arguments.
        #[derive(Debug, Deserialize, Serialize)]
        #[serde(tag = "type", expecting = "a mapping with `type` and its arguments")]
        pub enum EvaluatorSpec {
            $(#[serde(rename = $name)] $variant(Entry<$args>),)+
        }

        /// The evaluator types, in the order hints list them.
        pub const TYPES: &[&str] = &[$($name),+];

        $(impl TypeName for $args { const TYPE: &'static str = $name; })+

        impl EvaluatorSpec {
            /// The entry's type, display name and arguments.
            fn parts(&self) -> (&'static str, Option<&str>, [Option<f64>; 2], &dyn Arguments) {
                match self {
                    $(Self::$variant(e) => ($name, e.name.as_deref(), [e.threshold, e.fail_under], &e.args),)+
                }
            }
        }

        /// Each evaluator type with the argument keys it takes (besides
        /// `type`, `name`, `threshold` and `fail_under`).
        pub fn arguments_by_type() -> Vec<(&'static str, &'static [&'static str])> {
            vec![$(($name, crate::serde_names::keys::<$args>()),)+]
        }

        /// Every argument key some evaluator takes, in registry order.
        fn argument_keys() -> Vec<&'static str> {
            let mut keys: Vec<&'static str> = Vec::new();
            $(for key in crate::serde_names::keys::<$args>() {
                if !keys.contains(key) {
                    keys.push(key);
                }
            })+
            keys
        }
    };
}

registry! {
    "exact_match" => ExactMatch(exact_match::Args),
    "contains" => Contains(contains::Args),
    "regex" => Regex(regex::Args),
    "numeric_match" => NumericMatch(numeric_match::Args),
    "valid_json" => ValidJson(valid_json::Args),
    "f1" => F1(f1::Args),
    "similarity" => Similarity(similarity::Args),
    "json_match" => JsonMatch(json_match::Args),
    "choice" => Choice(choice::Args),
    "command" => Command(command::Args),
    "llm_judge" => LlmJudge(llm_judge::Args),
}

/// The `type:` an argument struct is registered under (implemented by [`registry!`]).
pub trait TypeName {
    const TYPE: &'static str;
}

/// An evaluator's arguments as written in the spec, checked into a scorer.
pub trait Arguments: std::fmt::Debug + Send + Sync {
    /// Checks the arguments and builds the scorer (templates and patterns compiled).
    fn build(&self) -> Result<Arc<dyn Score>, ArgError>;
    /// The `threshold` used when the entry sets none: [`DEFAULT_THRESHOLD`] (pass
    /// means a perfect score, right for rules that score 0 or 1); a graded
    /// evaluator overrides this, usually with [`GRADED_THRESHOLD`].
    fn default_threshold(&self) -> f64 {
        DEFAULT_THRESHOLD
    }
    /// [`build`](Self::build) with what the rest of the spec gives: its folder,
    /// for arguments that name files, and the model a judge calls.
    fn build_in(&self, with: &Build<'_>) -> Result<Arc<dyn Score>, ArgError> {
        let _ = with;
        self.build()
    }
    /// A `model:` block written in the entry, which the loader checks as it
    /// checks the evaluation's own and hands back in [`Build::model`].
    fn model_block(&self) -> Option<&RawModel> {
        None
    }
}

/// What building an evaluator may need from the rest of the spec.
#[derive(Debug, Clone, Copy)]
pub struct Build<'a> {
    /// The spec's folder (`""` for the working directory).
    pub spec_dir: &'a std::path::Path,
    /// The model the evaluator may call: the entry's own `model:` block,
    /// checked, else the evaluation's model.
    pub model: Option<&'a ModelSpec>,
    /// Whether `model` is the entry's own block rather than the evaluation's.
    pub own_model: bool,
    /// The environment variables the spec reads keys from (`api_key_env` of
    /// the model and of every judge): a program the spec starts does not
    /// inherit them unless its entry lists them under `env`.
    pub key_vars: &'a [String],
}

impl Default for Build<'_> {
    /// Nothing around the entry: the working directory and no model.
    fn default() -> Self {
        Build {
            spec_dir: std::path::Path::new(""),
            model: None,
            own_model: false,
            key_vars: &[],
        }
    }
}

/// Scores one output. `ctx` holds the sample's variables plus `output`.
pub trait Score: Send + Sync {
    /// A score in [0, 1] (see [`passes`]); `Err` means the evaluator itself could not
    /// decide (for example, `expected` did not render to a number).
    fn score(&self, output: &str, ctx: &Value) -> Result<Scored, ScoreError>;
    /// The templated arguments, by key, so the loader can check their variables.
    fn templates(&self) -> Vec<(&'static str, &Template)>;
    /// Variables this evaluator gives its templates besides the dataset
    /// columns and `output` (a judge's prompt may use `rubric`).
    fn provides(&self) -> &'static [&'static str] {
        &[]
    }
    /// For an evaluator that calls a model: the judge, for the runner to
    /// connect before the first sample.
    fn judge(&self) -> Option<&llm_judge::Judge> {
        None
    }
    /// For an evaluator that waits on I/O (a program, a model): how to score
    /// without blocking the runtime; the runner then awaits it instead of
    /// calling [`score`](Self::score). `None` for the pure rules.
    fn external(&self) -> Option<&dyn External> {
        None
    }
    /// Whether scoring `output` may take long enough (a millisecond or more)
    /// to stall the requests that share the runtime with it: it then runs on
    /// a blocking thread, as long templates do.
    fn heavy(&self, _output: &str) -> bool {
        false
    }
    /// What the user should know about how this entry is written, said by
    /// `validate` and before a run (it still runs).
    fn warning(&self) -> Option<&'static str> {
        None
    }
    /// For an evaluator that starts a program: what it runs, as a shell
    /// line and the folder it runs in, shown before a run (a spec that
    /// starts a program is code).
    fn program(&self) -> Option<String> {
        None
    }
}

/// Scoring that waits (see `command/mod.rs` for why it is a separate trait).
pub trait External: Send + Sync {
    /// Scores `output` of a sample whose dataset row is `variables` (a JSON
    /// object, as stored) and whose template context is `ctx` (the row plus
    /// `output`).
    fn score<'a>(
        &'a self,
        output: &'a str,
        variables: &'a str,
        ctx: &'a Value,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<Scored, ScoreError>> + Send + 'a>>;
}

/// One evaluator's verdict on one output: a score in [0, 1] and, when the
/// evaluator has one to give, why (stored with the sample, shown by `show --full`).
/// `Scored::from(0.7)` is a score without a reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    pub score: f64,
    pub reason: Option<String>,
    /// The judge's call, for an evaluator that asked one.
    pub judged: Option<Box<JudgeRecord>>,
}

impl Scored {
    /// A score with its reason.
    pub fn because(score: f64, reason: impl Into<String>) -> Self {
        Scored {
            score,
            reason: Some(reason.into()),
            judged: None,
        }
    }
}

impl From<f64> for Scored {
    fn from(score: f64) -> Self {
        Scored {
            score,
            reason: None,
            judged: None,
        }
    }
}

/// The threshold of an evaluator whose entry sets none and whose type declares
/// none: a sample passes only with a perfect score (the string rules score 0 or 1).
pub const DEFAULT_THRESHOLD: f64 = 1.0;

/// The usual default threshold of a graded evaluator (see [`Arguments::default_threshold`]).
pub const GRADED_THRESHOLD: f64 = 0.5;

/// Whether `score` passes an evaluator with `threshold`: the one place that decides.
pub fn passes(score: f64, threshold: f64) -> bool {
    score >= threshold
}

/// Why an evaluator could not score one output (recorded as an `evaluator` error).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ScoreError {
    /// A templated argument did not render for this sample.
    #[error("{0}")]
    Render(String),
    /// `expected` rendered to something the evaluator cannot compare with.
    #[error("{0}")]
    Expected(String),
    /// A templated pattern rendered to something that is not a regex.
    #[error("invalid regex `{pattern}`: {message}")]
    Regex { pattern: String, message: String },
    /// `expected` did not render to a number.
    #[error(transparent)]
    Number(#[from] NumberError),
    /// A scorer broke the [0, 1] contract.
    #[error("score {0} is outside [0, 1]")]
    OutOfRange(f64),
    /// The blocking thread scoring a heavy output failed.
    #[error("scoring task: {0}")]
    Task(String),
    /// A `command` scorer did not answer with a score (its message says why).
    #[error("{0}")]
    Command(String),
    /// A judge gave no score: its request failed or its reply held none. The
    /// call is kept, raw reply included.
    #[error("{message}")]
    Judge {
        message: String,
        call: Option<Box<JudgeRecord>>,
    },
}

impl ScoreError {
    /// The error kind a sample gets when this is its evaluator's failure.
    pub fn kind(&self) -> crate::error_kind::ErrorKind {
        match self {
            ScoreError::Judge { .. } => crate::error_kind::ErrorKind::Judge,
            _ => crate::error_kind::ErrorKind::Evaluator,
        }
    }
}

/// A built evaluator with its display name; clones share the scorer.
#[derive(Clone)]
pub struct Evaluator {
    /// Name shown in reports: the spec's `name`, else the type.
    pub name: String,
    /// The score a sample needs to pass, in [0, 1].
    pub threshold: f64,
    /// The mean score below which a run fails its gate (`fail_under:`).
    pub fail_under: Option<f64>,
    pub scorer: Arc<dyn Score>,
}

impl Evaluator {
    /// Scores `output`, holding the scorer to [0, 1].
    pub fn score(&self, output: &str, ctx: &Value) -> Result<Scored, ScoreError> {
        in_range(self.scorer.score(output, ctx)?)
    }

    /// Scores `output` of the sample whose row is `variables` (JSON text),
    /// `ctx` being its template context plus `output`: inline for the pure
    /// rules, awaited for [`External`] ones.
    pub async fn score_sample(
        &self,
        output: &str,
        variables: &str,
        ctx: &Value,
    ) -> Result<Scored, ScoreError> {
        match self.scorer.external() {
            None if self.scorer.heavy(output) => {
                let (scorer, output, ctx) =
                    (Arc::clone(&self.scorer), output.to_owned(), ctx.clone());
                let scored = tokio::task::spawn_blocking(move || scorer.score(&output, &ctx))
                    .await
                    .map_err(|e| ScoreError::Task(e.to_string()))?;
                in_range(scored?)
            }
            None => self.score(output, ctx),
            Some(external) => in_range(external.score(output, variables, ctx).await?),
        }
    }

    /// Whether `score` passes this evaluator (see [`passes`]).
    pub fn passes(&self, score: f64) -> bool {
        passes(score, self.threshold)
    }
}

/// Holds a scorer to [0, 1].
fn in_range(scored: Scored) -> Result<Scored, ScoreError> {
    if (0.0..=1.0).contains(&scored.score) {
        Ok(scored)
    } else {
        Err(ScoreError::OutOfRange(scored.score))
    }
}

impl std::fmt::Debug for Evaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluator")
            .field("name", &self.name)
            .field("threshold", &self.threshold)
            .finish()
    }
}

impl EvaluatorSpec {
    /// Builds the evaluator this entry describes.
    pub fn build(&self) -> Result<Evaluator, ArgError> {
        self.build_in(&Build::default())
    }

    /// Builds the evaluator with what the rest of the spec gives (`command`
    /// resolves its program in the spec's folder; a judge calls `with.model`).
    pub fn build_in(&self, with: &Build<'_>) -> Result<Evaluator, ArgError> {
        let (kind, name, [threshold, fail_under], args) = self.parts();
        Ok(Evaluator {
            name: name.unwrap_or(kind).to_owned(),
            threshold: threshold.unwrap_or_else(|| args.default_threshold()),
            fail_under,
            scorer: args.build_in(with)?,
        })
    }

    /// The entry's own `model:` block, for an evaluator that takes one.
    pub fn model_block(&self) -> Option<&RawModel> {
        self.parts().3.model_block()
    }
}

/// An argument problem, naming the key at fault so the loader can point at it.
#[derive(Debug, Clone, PartialEq)]
pub struct ArgError {
    /// The key within the evaluator entry (`type`, `expected`, ...).
    pub key: String,
    pub message: String,
    pub hint: Option<String>,
    /// 1-based line inside a template argument, for template syntax errors.
    pub template_line: Option<usize>,
}

impl ArgError {
    fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        ArgError {
            key: key.into(),
            message: message.into(),
            hint: None,
            template_line: None,
        }
    }

    fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
}

/// The required template argument `key` of evaluator type `kind`, compiled.
fn required_template(
    kind: &str,
    key: &'static str,
    value: Option<&Text>,
) -> Result<Template, ArgError> {
    let Some(text) = value else {
        return Err(ArgError::new(key, format!("{kind} needs `{key}`"))
            .hint(format!("add `{key}: ...` to this evaluator")));
    };
    Template::compile(&text.0).map_err(|e| ArgError {
        template_line: e.line,
        ..ArgError::new(key, format!("template error in `{key}`: {}", e.message))
    })
}

/// A pass or a fail, as a score (without a reason).
fn score_of(passed: bool) -> Scored {
    Scored::from(if passed { 1.0 } else { 0.0 })
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    fn parse(yaml: &str) -> EvaluatorSpec {
        serde_yaml::from_str(yaml).expect("valid evaluator yaml")
    }

    /// Builds an evaluator from a YAML entry, panicking on bad input (tests only).
    pub fn from_yaml(yaml: &str) -> Evaluator {
        parse(yaml).build().expect("evaluator builds")
    }

    pub fn build_err(yaml: &str) -> ArgError {
        parse(yaml).build().expect_err("evaluator must be rejected")
    }

    pub fn score(e: &Evaluator, output: &str, ctx: Value) -> Result<f64, ScoreError> {
        e.score(output, &ctx).map(|s| s.score)
    }

    /// A pass or a fail, as [`score`] returns them.
    pub const PASS: Result<f64, ScoreError> = Ok(1.0);
    pub const FAIL: Result<f64, ScoreError> = Ok(0.0);
}

#[cfg(test)]
mod tests {
    use super::test_support::*;
    use super::*;

    #[test]
    fn missing_argument_is_named() {
        let e = build_err("type: contains");
        assert_eq!(e.key, "expected");
        assert_eq!(e.message, "contains needs `expected`");
    }

    #[test]
    fn the_name_defaults_to_the_type() {
        assert_eq!(from_yaml("type: valid_json").name, "valid_json");
        assert_eq!(from_yaml("{type: valid_json, name: j}").name, "j");
    }

    #[test]
    fn one_threshold_decides() {
        assert!(passes(1.0, DEFAULT_THRESHOLD));
        assert!(!passes(0.0, DEFAULT_THRESHOLD));
        assert!(!passes(0.99, DEFAULT_THRESHOLD));
        assert!(passes(0.5, GRADED_THRESHOLD));
        assert!(!passes(0.49, GRADED_THRESHOLD));
        assert!(passes(0.0, 0.0));
    }

    #[test]
    fn threshold_defaults_per_type_and_is_kept() {
        assert_eq!(from_yaml("type: valid_json").threshold, DEFAULT_THRESHOLD);
        let e = from_yaml("{type: valid_json, threshold: 0.25}");
        assert_eq!(e.threshold, 0.25);
        assert!(e.passes(0.25));
        assert!(!e.passes(0.2));
    }

    #[test]
    fn a_reason_is_optional() {
        assert_eq!(Scored::from(0.5).reason, None);
        assert_eq!(Scored::because(0.5, "half").reason.as_deref(), Some("half"));
    }

    #[test]
    fn argument_keys_are_every_evaluators_in_registry_order() {
        assert_eq!(
            argument_keys(),
            [
                "expected",
                "ignore_case",
                "pattern",
                "tolerance",
                "schema",
                "method",
                "path",
                "choices",
                "command",
                "workers",
                "timeout",
                "config",
                "env",
                "rubric",
                "prompt",
                "messages",
                "model",
                "max_concurrency"
            ]
        );
    }
}
