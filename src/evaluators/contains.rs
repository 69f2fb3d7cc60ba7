//! `contains`: the output contains `expected`.

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
        Ok(Arc::new(Contains {
            expected: required_template(Self::TYPE, "expected", self.expected.as_ref())?,
            ignore_case: self.ignore_case.unwrap_or(false),
        }))
    }
}

struct Contains {
    expected: Template,
    ignore_case: bool,
}

impl Score for Contains {
    fn score(&self, output: &str, ctx: &Value) -> Result<Scored, ScoreError> {
        let expected = self.expected.render(ctx).map_err(ScoreError::Render)?;
        Ok(score_of(if self.ignore_case {
            output.to_lowercase().contains(&expected.to_lowercase())
        } else {
            output.contains(&expected)
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
    fn finds_substring() {
        let e = from_yaml("type: contains\nexpected: \"{{ city }}\"");
        assert_eq!(
            score(&e, "The capital is Paris.", context! { city => "Paris" }),
            PASS
        );
        assert_eq!(
            score(&e, "The capital is paris.", context! { city => "Paris" }),
            FAIL
        );
        let e = from_yaml("type: contains\nexpected: Paris\nignore_case: true");
        assert_eq!(score(&e, "PARIS", context! {}), PASS);
    }
}
