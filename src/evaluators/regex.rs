//! `regex`: the output matches `pattern` (Rust regex syntax, unanchored).
//!
//! A literal pattern is compiled once at load, so a bad one is a spec error; a
//! templated pattern is rendered and compiled per sample.

use ::regex::Regex;
use minijinja::Value;

use super::{ArgError, Args, Score};
use crate::template::Template;

pub struct RegexMatch {
    pattern: Template,
    compiled: Option<Regex>,
}

impl RegexMatch {
    pub(super) fn build(args: &Args) -> Result<Self, ArgError> {
        args.only(&["pattern"])?;
        let pattern = args.template("pattern", args.raw.pattern.as_ref())?;
        let compiled = if pattern.variables().is_empty() {
            let text = pattern
                .render(&Value::UNDEFINED)
                .map_err(|e| ArgError::new("pattern", e))?;
            Some(Regex::new(&text).map_err(|e| {
                ArgError::new("pattern", format!("invalid regex: {e}"))
                    .hint("patterns use Rust regex syntax: https://docs.rs/regex/#syntax")
            })?)
        } else {
            None
        };
        Ok(RegexMatch { pattern, compiled })
    }
}

impl Score for RegexMatch {
    fn score(&self, output: &str, ctx: &Value) -> Result<bool, String> {
        match &self.compiled {
            Some(re) => Ok(re.is_match(output)),
            None => {
                let text = self.pattern.render(ctx)?;
                let re = Regex::new(&text).map_err(|e| format!("invalid regex `{text}`: {e}"))?;
                Ok(re.is_match(output))
            }
        }
    }

    fn templates(&self) -> Vec<(&'static str, &Template)> {
        vec![("pattern", &self.pattern)]
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use minijinja::context;

    #[test]
    fn matches_literal_and_templated_patterns() {
        let e = from_yaml("type: regex\npattern: \"^(?i)pos\"");
        assert_eq!(score(&e, "Positive", context! {}), Ok(true));
        assert_eq!(score(&e, "negative", context! {}), Ok(false));
        let e = from_yaml("type: regex\npattern: \"^{{ expected }}$\"");
        assert_eq!(
            score(&e, "neutral", context! { expected => "neutral" }),
            Ok(true)
        );
    }

    #[test]
    fn bad_pattern_fails_at_load() {
        let err = build_err("type: regex\npattern: \"(unclosed\"");
        assert_eq!(err.key, "pattern");
        assert!(err.message.contains("invalid regex"), "{}", err.message);
    }
}
