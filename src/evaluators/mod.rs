//! Evaluators: each turns a model reply into one score per sample.
//!
//! One file per evaluator behind the [`Score`] trait; [`build`] is the registry
//! that maps a spec's `type:` to a constructor. Construction checks arguments (a
//! bad regex or JSON Schema fails at load, before any request); scoring is pure.

mod contains;
mod exact_match;
mod numeric_match;
mod regex;
mod valid_json;

use std::sync::Arc;

use minijinja::Value;

use crate::spec::raw::RawEvaluator;
use crate::template::Template;

/// The evaluator types the registry knows, in the order `--help` lists them.
pub const TYPES: &[&str] = &[
    "exact_match",
    "contains",
    "regex",
    "numeric_match",
    "valid_json",
];

/// Scores one output. `ctx` holds the sample's variables plus `output`.
pub trait Score: Send + Sync {
    /// `Ok(true)` passes, `Ok(false)` fails, `Err` means the evaluator itself could not
    /// decide (for example, `expected` did not render to a number).
    fn score(&self, output: &str, ctx: &Value) -> Result<bool, String>;
    /// The templated arguments, by key, so the loader can check their variables.
    fn templates(&self) -> Vec<(&'static str, &Template)>;
}

/// A built evaluator with its display name; clones share the scorer.
#[derive(Clone)]
pub struct Evaluator {
    /// Name shown in reports: the spec's `name`, else the type.
    pub name: String,
    pub scorer: Arc<dyn Score>,
}

impl std::fmt::Debug for Evaluator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Evaluator")
            .field("name", &self.name)
            .finish()
    }
}

/// An argument problem, naming the key at fault so the loader can point at it.
#[derive(Debug, Clone, PartialEq)]
pub struct ArgError {
    /// The key within the evaluator entry (`type`, `expected`, ...).
    pub key: &'static str,
    pub message: String,
    pub hint: Option<String>,
    /// 1-based line inside a template argument, for template syntax errors.
    pub template_line: Option<usize>,
}

impl ArgError {
    fn new(key: &'static str, message: impl Into<String>) -> Self {
        ArgError {
            key,
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

/// Builds the evaluator a spec entry describes.
pub fn build(raw: &RawEvaluator) -> Result<Evaluator, ArgError> {
    let Some(kind) = TYPES.iter().copied().find(|t| *t == raw.kind) else {
        let hint = match crate::diagnostic::did_you_mean(&raw.kind, TYPES.iter().copied()) {
            Some(t) => format!("did you mean `{t}`? Known types: {}", TYPES.join(", ")),
            None => format!("known types: {}", TYPES.join(", ")),
        };
        return Err(
            ArgError::new("type", format!("unknown evaluator type `{}`", raw.kind)).hint(hint),
        );
    };
    let args = Args { raw, kind };
    let scorer: Arc<dyn Score> = match kind {
        "exact_match" => Arc::new(exact_match::ExactMatch::build(&args)?),
        "contains" => Arc::new(contains::Contains::build(&args)?),
        "regex" => Arc::new(regex::RegexMatch::build(&args)?),
        "numeric_match" => Arc::new(numeric_match::NumericMatch::build(&args)?),
        _ => Arc::new(valid_json::ValidJson::build(&args)?),
    };
    Ok(Evaluator {
        name: raw.name.clone().unwrap_or_else(|| kind.to_owned()),
        scorer,
    })
}

/// Typed access to an entry's arguments that rejects keys the type does not take.
struct Args<'a> {
    raw: &'a RawEvaluator,
    kind: &'static str,
}

impl Args<'_> {
    /// Fails if any key outside `allowed` is set.
    fn only(&self, allowed: &[&'static str]) -> Result<(), ArgError> {
        let r = self.raw;
        let present = [
            ("expected", r.expected.is_some()),
            ("ignore_case", r.ignore_case.is_some()),
            ("pattern", r.pattern.is_some()),
            ("tolerance", r.tolerance.is_some()),
            ("schema", r.schema.is_some()),
        ];
        for (key, set) in present {
            if set && !allowed.contains(&key) {
                let takes = if allowed.is_empty() {
                    "no arguments".to_owned()
                } else {
                    allowed.join(", ")
                };
                return Err(ArgError::new(
                    key,
                    format!("`{key}` is not an argument of {}", self.kind),
                )
                .hint(format!("{} takes: {takes}", self.kind)));
            }
        }
        Ok(())
    }

    /// A required template argument.
    fn template(
        &self,
        key: &'static str,
        value: Option<&crate::spec::raw::Text>,
    ) -> Result<Template, ArgError> {
        let Some(text) = value else {
            return Err(ArgError::new(key, format!("{} needs `{key}`", self.kind))
                .hint(format!("add `{key}: ...` to this evaluator")));
        };
        Template::compile(&text.0).map_err(|e| ArgError {
            key,
            message: format!("template error in `{key}`: {}", e.message),
            hint: None,
            template_line: e.line,
        })
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// Builds an evaluator from a YAML entry, panicking on bad input (tests only).
    pub fn from_yaml(yaml: &str) -> Evaluator {
        let raw: RawEvaluator = serde_yaml::from_str(yaml).expect("valid evaluator yaml");
        build(&raw).expect("evaluator builds")
    }

    pub fn build_err(yaml: &str) -> ArgError {
        let raw: RawEvaluator = serde_yaml::from_str(yaml).expect("valid evaluator yaml");
        build(&raw).expect_err("evaluator must be rejected")
    }

    pub fn score(e: &Evaluator, output: &str, ctx: Value) -> Result<bool, String> {
        e.scorer.score(output, &ctx)
    }
}

#[cfg(test)]
mod tests {
    use super::test_support::*;

    #[test]
    fn unknown_type_suggests() {
        let e = build_err("type: exact_mach\nexpected: x");
        assert_eq!(e.key, "type");
        assert!(e.hint.unwrap().contains("did you mean `exact_match`"));
    }

    #[test]
    fn foreign_argument_is_rejected() {
        let e = build_err("type: exact_match\nexpected: x\npattern: y");
        assert_eq!(e.key, "pattern");
        assert!(e.hint.unwrap().contains("expected, ignore_case"));
    }

    #[test]
    fn missing_argument_is_named() {
        let e = build_err("type: contains");
        assert_eq!(e.key, "expected");
    }
}
