//! `numeric_match`: the last number in the output equals `expected` within `tolerance`.

use std::sync::LazyLock;

use ::regex::Regex;
use minijinja::Value;

use super::{ArgError, Args, Score};
use crate::template::Template;

/// Integers, decimals, thousands separators and exponents: `-1,234.5e3`.
static NUMBER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?(?:[eE][-+]?\d+)?")
        .expect("static regex")
});

pub struct NumericMatch {
    expected: Template,
    tolerance: f64,
}

impl NumericMatch {
    pub(super) fn build(args: &Args) -> Result<Self, ArgError> {
        args.only(&["expected", "tolerance"])?;
        let tolerance = args.raw.tolerance.unwrap_or(0.0);
        if !(tolerance.is_finite() && tolerance >= 0.0) {
            return Err(ArgError::new(
                "tolerance",
                "tolerance must be a number >= 0",
            ));
        }
        Ok(NumericMatch {
            expected: args.template("expected", args.raw.expected.as_ref())?,
            tolerance,
        })
    }
}

/// The last number written in `text`.
pub fn last_number(text: &str) -> Option<f64> {
    NUMBER
        .find_iter(text)
        .filter(|m| m.as_str().bytes().any(|b| b.is_ascii_digit()))
        .filter_map(|m| m.as_str().replace(',', "").parse::<f64>().ok())
        .last()
}

impl Score for NumericMatch {
    fn score(&self, output: &str, ctx: &Value) -> Result<bool, String> {
        let text = self.expected.render(ctx)?;
        let expected: f64 = text
            .trim()
            .replace(',', "")
            .parse()
            .map_err(|_| format!("expected `{}` is not a number", text.trim()))?;
        Ok(last_number(output).is_some_and(|got| (got - expected).abs() <= self.tolerance))
    }

    fn templates(&self) -> Vec<(&'static str, &Template)> {
        vec![("expected", &self.expected)]
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::last_number;
    use minijinja::context;

    #[test]
    fn finds_the_last_number() {
        assert_eq!(last_number("3 apples and 4 pears: 7"), Some(7.0));
        assert_eq!(last_number("total -1,234.5 units"), Some(-1234.5));
        assert_eq!(last_number("1e3."), Some(1000.0));
        assert_eq!(last_number("none"), None);
    }

    #[test]
    fn compares_within_tolerance() {
        let e = from_yaml("type: numeric_match\nexpected: \"{{ answer }}\"\ntolerance: 0.01");
        assert_eq!(
            score(&e, "The answer is 2.71828", context! { answer => 2.72 }),
            Ok(true)
        );
        assert_eq!(
            score(&e, "The answer is 2.8", context! { answer => 2.72 }),
            Ok(false)
        );
        assert_eq!(score(&e, "no idea", context! { answer => 2.72 }), Ok(false));
        let e = from_yaml("type: numeric_match\nexpected: 42");
        assert_eq!(score(&e, "42", context! {}), Ok(true));
    }

    #[test]
    fn expected_must_be_numeric() {
        let e = from_yaml("type: numeric_match\nexpected: \"{{ answer }}\"");
        assert!(score(&e, "1", context! { answer => "n/a" }).is_err());
    }
}
