//! `exact_match`: the trimmed output equals `expected`.

use std::sync::Arc;

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
    expected: Option<Text>,
    ignore_case: Option<bool>,
}

impl Arguments for Args {
    fn build(&self) -> Result<Arc<dyn Score>, ArgError> {
        Ok(Arc::new(ExactMatch {
            expected: required_template(Self::TYPE, "expected", self.expected.as_ref())?,
            ignore_case: self.ignore_case.unwrap_or(false),
        }))
    }
}

struct ExactMatch {
    expected: Template,
    ignore_case: bool,
}

impl Score for ExactMatch {
    fn score(&self, output: &str, ctx: &Value) -> Result<Scored, ScoreError> {
        let expected = self.expected.render(ctx).map_err(ScoreError::Render)?;
        let (a, b) = (output.trim(), expected.trim());
        Ok(score_of(if self.ignore_case {
            a.to_lowercase() == b.to_lowercase()
        } else {
            a == b
        }))
    }

    fn templates(&self) -> Vec<(&'static str, &Template)> {
        vec![("expected", &self.expected)]
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use minijinja::context;

    #[test]
    fn trims_and_compares() {
        let e = from_yaml("type: exact_match\nexpected: \"{{ expected }}\"");
        assert_eq!(
            score(&e, " positive\n", context! { expected => "positive" }),
            PASS
        );
        assert_eq!(
            score(&e, "Positive", context! { expected => "positive" }),
            FAIL
        );
        assert_eq!(
            score(&e, "positive!", context! { expected => "positive" }),
            FAIL
        );
    }

    #[test]
    fn ignore_case() {
        let e = from_yaml("type: exact_match\nexpected: positive\nignore_case: true");
        assert_eq!(score(&e, "POSITIVE", context! {}), PASS);
    }
}
