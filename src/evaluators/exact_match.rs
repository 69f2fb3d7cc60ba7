//! `exact_match`: the trimmed output equals `expected`.

use minijinja::Value;

use super::{ArgError, Args, Score};
use crate::template::Template;

pub struct ExactMatch {
    expected: Template,
    ignore_case: bool,
}

impl ExactMatch {
    pub(super) fn build(args: &Args) -> Result<Self, ArgError> {
        args.only(&["expected", "ignore_case"])?;
        Ok(ExactMatch {
            expected: args.template("expected", args.raw.expected.as_ref())?,
            ignore_case: args.raw.ignore_case.unwrap_or(false),
        })
    }
}

impl Score for ExactMatch {
    fn score(&self, output: &str, ctx: &Value) -> Result<bool, String> {
        let expected = self.expected.render(ctx)?;
        let (a, b) = (output.trim(), expected.trim());
        Ok(if self.ignore_case {
            a.to_lowercase() == b.to_lowercase()
        } else {
            a == b
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
    fn trims_and_compares() {
        let e = from_yaml("type: exact_match\nexpected: \"{{ expected }}\"");
        assert_eq!(
            score(&e, " positive\n", context! { expected => "positive" }),
            Ok(true)
        );
        assert_eq!(
            score(&e, "Positive", context! { expected => "positive" }),
            Ok(false)
        );
        assert_eq!(
            score(&e, "positive!", context! { expected => "positive" }),
            Ok(false)
        );
    }

    #[test]
    fn ignore_case() {
        let e = from_yaml("type: exact_match\nexpected: positive\nignore_case: true");
        assert_eq!(score(&e, "POSITIVE", context! {}), Ok(true));
    }
}
