//! `contains`: the output contains `expected`.

use minijinja::Value;

use super::{ArgError, Args, Score};
use crate::template::Template;

pub struct Contains {
    expected: Template,
    ignore_case: bool,
}

impl Contains {
    pub(super) fn build(args: &Args) -> Result<Self, ArgError> {
        args.only(&["expected", "ignore_case"])?;
        Ok(Contains {
            expected: args.template("expected", args.raw.expected.as_ref())?,
            ignore_case: args.raw.ignore_case.unwrap_or(false),
        })
    }
}

impl Score for Contains {
    fn score(&self, output: &str, ctx: &Value) -> Result<bool, String> {
        let expected = self.expected.render(ctx)?;
        Ok(if self.ignore_case {
            output.to_lowercase().contains(&expected.to_lowercase())
        } else {
            output.contains(&expected)
        })
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
            Ok(true)
        );
        assert_eq!(
            score(&e, "The capital is paris.", context! { city => "Paris" }),
            Ok(false)
        );
        let e = from_yaml("type: contains\nexpected: Paris\nignore_case: true");
        assert_eq!(score(&e, "PARIS", context! {}), Ok(true));
    }
}
