//! `regex`: the output matches `pattern` (Rust regex syntax, unanchored).
//!
//! A pattern without template markup is compiled once, at load, so a bad one is
//! a spec error; a templated pattern is rendered and compiled per sample.

use std::sync::Arc;

use ::regex::Regex;
use minijinja::Value;
use serde::{Deserialize, Serialize};

use super::{
    required_template, score_of, ArgError, Arguments, Score, ScoreError, Scored, TypeName,
};
use crate::spec::raw::Text;
use crate::template::Template;

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    pattern: Option<Text>,
}

impl Arguments for Args {
    fn build(&self) -> Result<Arc<dyn Score>, ArgError> {
        let template = required_template(Self::TYPE, "pattern", self.pattern.as_ref())?;
        if !template.variables().is_empty() {
            return Ok(Arc::new(RegexMatch::PerSample(template)));
        }
        let text = template
            .render(&Value::UNDEFINED)
            .map_err(|e| ArgError::new("pattern", e))?;
        let regex = Regex::new(&text).map_err(|e| {
            ArgError::new("pattern", format!("invalid regex: {e}"))
                .hint("patterns use Rust regex syntax: https://docs.rs/regex/#syntax")
        })?;
        Ok(Arc::new(RegexMatch::Fixed(regex)))
    }
}

enum RegexMatch {
    /// Compiled at load.
    Fixed(Regex),
    /// Rendered with each sample's variables, then compiled.
    PerSample(Template),
}

impl Score for RegexMatch {
    fn score(&self, output: &str, ctx: &Value) -> Result<Scored, ScoreError> {
        let matched = match self {
            RegexMatch::Fixed(re) => re.is_match(output),
            RegexMatch::PerSample(template) => {
                let pattern = template.render(ctx).map_err(ScoreError::Render)?;
                let re = Regex::new(&pattern).map_err(|e| ScoreError::Regex {
                    message: e.to_string(),
                    pattern,
                })?;
                re.is_match(output)
            }
        };
        Ok(score_of(matched))
    }

    fn templates(&self) -> Vec<(&'static str, &Template)> {
        match self {
            RegexMatch::Fixed(_) => Vec::new(),
            RegexMatch::PerSample(template) => vec![("pattern", template)],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use minijinja::context;

    #[test]
    fn matches_literal_and_templated_patterns() {
        let e = from_yaml("type: regex\npattern: \"^(?i)pos\"");
        assert_eq!(score(&e, "Positive", context! {}), PASS);
        assert_eq!(score(&e, "negative", context! {}), FAIL);
        let e = from_yaml("type: regex\npattern: \"^{{ expected }}$\"");
        assert_eq!(
            score(&e, "neutral", context! { expected => "neutral" }),
            PASS
        );
    }

    #[test]
    fn a_pattern_without_variables_is_compiled_once_at_load() {
        let e = from_yaml("type: regex\npattern: \"^{{ 'pos' }}\"");
        assert!(e.scorer.templates().is_empty(), "nothing left to render");
        assert_eq!(score(&e, "positive", context! {}), PASS);
    }

    #[test]
    fn a_templated_pattern_that_is_no_regex_is_a_sample_error() {
        let e = from_yaml("type: regex\npattern: \"{{ p }}\"");
        let err = score(&e, "x", context! { p => "(" }).unwrap_err();
        assert!(err.to_string().starts_with("invalid regex `(`: "), "{err}");
    }

    #[test]
    fn bad_pattern_fails_at_load() {
        let err = build_err("type: regex\npattern: \"(unclosed\"");
        assert_eq!(err.key, "pattern");
        assert!(err.message.contains("invalid regex"), "{}", err.message);
    }
}
