//! `numeric_match`: the last number in the output equals `expected` within `tolerance`.
//!
//! The grammar (README, Evaluators): a number is ASCII decimal digits with an optional
//! fraction (`.5`, `2.50`) and exponent (`1e3`, `1E-3`); thousands separators are
//! commas in groups of exactly three (`1,234,567`); a sign (`-`, `+`, or the Unicode
//! minus `−`) counts when it is not glued to a word or number before it. A number
//! glued to another by `-`, `/`, `:`, `.` or `,` is part of something else (a date
//! `2024-01-05`, a time `12:30`, a fraction `3/4`, a version `1.2.3`, `1,2`), and
//! so is one glued to a letter before it (`gpt4`); none of those count. `NaN` and
//! `inf` are not numbers. Numbers are compared exactly as decimals, so
//! 20-digit integers that differ in their last digit differ; `tolerance` is
//! applied to the exact difference.

use std::sync::{Arc, LazyLock};

use ::regex::Regex;
use minijinja::Value;
use serde::{Deserialize, Serialize};

use super::{
    required_template, score_of, ArgError, Arguments, Score, ScoreError, Scored, TypeName,
};
use crate::spec::raw::Text;
use crate::template::Template;

/// A number without its sign; neighbours are checked in code (no look-around in `regex`).
static NUMBER: LazyLock<Regex> = LazyLock::new(|| {
    // `[0-9]`, not `\d`: `\d` is any Unicode digit, which the digit strings below cannot hold.
    Regex::new(
        r"(?:([0-9]{1,3}(?:,[0-9]{3})+|[0-9]+)(?:\.([0-9]+))?|\.([0-9]+))(?:[eE]([-+\x{2212}]?[0-9]+))?",
    )
        .expect("static regex")
});

const MINUS: char = '\u{2212}';

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    expected: Option<Text>,
    tolerance: Option<f64>,
}

impl Arguments for Args {
    fn build(&self) -> Result<Arc<dyn Score>, ArgError> {
        let tolerance = self.tolerance.unwrap_or(0.0);
        if !(tolerance.is_finite() && tolerance >= 0.0) {
            return Err(ArgError::new(
                "tolerance",
                "tolerance must be a number >= 0",
            ));
        }
        let expected = required_template(Self::TYPE, "expected", self.expected.as_ref())?;
        if let Some(text) = expected.literal() {
            parse_expected(text).map_err(|e| {
                ArgError::new("expected", e.to_string()).hint(
                    "write a finite number such as 42, -1.5, 1,234 or 2.5e3 (quote integers longer than 15 digits, or YAML reads them as floats)",
                )
            })?;
        }
        Ok(Arc::new(NumericMatch {
            expected,
            tolerance,
        }))
    }
}

struct NumericMatch {
    expected: Template,
    tolerance: f64,
}

/// Why `expected` is not a number this evaluator can compare with.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NumberError {
    #[error("expected `{0}` is not a number")]
    NotANumber(String),
    #[error("expected `{0}` is too large (the limit is about 1.8e308)")]
    TooLarge(String),
}

/// A number as written, exactly: `(-1)^negative × digits × 10^exponent`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decimal {
    negative: bool,
    /// Significant digits (ASCII), without leading or trailing zeros; empty for zero.
    digits: String,
    exponent: i64,
}

impl Decimal {
    /// From the regex's parts: integer digits (commas allowed), fraction, exponent.
    fn new(negative: bool, int: &str, fraction: &str, exponent: Option<&str>) -> Option<Self> {
        let exponent: i64 = match exponent {
            None => 0,
            Some(e) => e.replace(MINUS, "-").parse().ok()?,
        };
        let all: String = int
            .chars()
            .filter(char::is_ascii_digit)
            .chain(fraction.chars())
            .collect();
        let exponent = exponent.checked_sub(i64::try_from(fraction.len()).ok()?)?;
        let trimmed = all.trim_start_matches('0');
        let digits = trimmed.trim_end_matches('0');
        let exponent = exponent.checked_add(i64::try_from(trimmed.len() - digits.len()).ok()?)?;
        Some(Decimal {
            negative: negative && !digits.is_empty(),
            digits: digits.to_owned(),
            exponent: if digits.is_empty() { 0 } else { exponent },
        })
    }

    /// The nearest `f64` (infinite when out of range).
    pub fn to_f64(&self) -> f64 {
        if self.digits.is_empty() {
            return 0.0;
        }
        let sign = if self.negative { "-" } else { "" };
        format!("{sign}{}e{}", self.digits, self.exponent)
            .parse()
            .unwrap_or(f64::NAN)
    }

    /// `|self - other|`, exact when both fit in 38 significant digits once aligned.
    fn distance(&self, other: &Decimal) -> f64 {
        let low = self.exponent.min(other.exponent);
        let aligned = |d: &Decimal| -> Option<i128> {
            if d.digits.is_empty() {
                return Some(0);
            }
            // Exponents span all of i64 (`1e-9223372036854775808`): the gap may not fit.
            let shift = usize::try_from(d.exponent.checked_sub(low)?).ok()?;
            if d.digits.len() + shift > 38 {
                return None;
            }
            let magnitude: i128 = format!("{}{}", d.digits, "0".repeat(shift)).parse().ok()?;
            Some(if d.negative { -magnitude } else { magnitude })
        };
        match (aligned(self), aligned(other)) {
            (Some(a), Some(b)) if a.checked_sub(b).is_some() => {
                format!("{}e{low}", (a - b).unsigned_abs())
                    .parse()
                    .unwrap_or(f64::INFINITY)
            }
            _ => (self.to_f64() - other.to_f64()).abs(),
        }
    }
}

/// Every number written in `text`, in order, by the grammar of this module.
fn numbers(text: &str) -> impl Iterator<Item = Decimal> + '_ {
    NUMBER.captures_iter(text).filter_map(move |c| {
        let whole = c.get(0)?;
        let before: Vec<char> = text[..whole.start()].chars().rev().take(3).collect();
        let after: Vec<char> = text[whole.end()..].chars().take(2).collect();
        let (before, after) = (|i| before.get(i).copied(), |i| after.get(i).copied());
        let glue = |ch: Option<char>| matches!(ch, Some('-' | '/' | ':' | '.' | ',' | MINUS));
        let digit = |ch: Option<char>| ch.is_some_and(|c| c.is_ascii_digit());
        let word = |ch: Option<char>| ch.is_some_and(|c| c.is_alphanumeric() || c == '_');
        // Joined to what follows: another digit, or a separator and a digit.
        if digit(after(0)) || (glue(after(0)) && digit(after(1))) {
            return None;
        }
        // A sign counts when nothing word-like is glued to it.
        let signed = matches!(before(0), Some('-' | '+' | MINUS)) && !word(before(1));
        let negative = signed && before(0) != Some('+');
        let skip = usize::from(signed);
        if word(before(skip)) || (glue(before(skip)) && digit(before(skip + 1))) {
            return None;
        }
        let int = c.get(1).map_or("", |m| m.as_str());
        let fraction = c.get(2).or(c.get(3)).map_or("", |m| m.as_str());
        Decimal::new(negative, int, fraction, c.get(4).map(|m| m.as_str()))
    })
}

/// The last number written in `text`.
pub fn last_number(text: &str) -> Option<Decimal> {
    numbers(text).last()
}

/// `text` (trimmed) as one finite number, or why not.
pub fn parse_expected(text: &str) -> Result<Decimal, NumberError> {
    let trimmed = text.trim();
    let unsigned = trimmed.strip_prefix(['-', '+', MINUS]).unwrap_or(trimmed);
    let whole = NUMBER
        .find(unsigned)
        .is_some_and(|m| m.start() == 0 && m.end() == unsigned.len());
    let number = match numbers(trimmed).next() {
        Some(n) if whole => n,
        _ => return Err(NumberError::NotANumber(trimmed.to_owned())),
    };
    if !number.to_f64().is_finite() {
        return Err(NumberError::TooLarge(trimmed.to_owned()));
    }
    Ok(number)
}

impl Score for NumericMatch {
    fn score(&self, output: &str, ctx: &Value) -> Result<Scored, ScoreError> {
        let expected = parse_expected(&self.expected.render(ctx).map_err(ScoreError::Render)?)?;
        Ok(score_of(last_number(output).is_some_and(|got| {
            got == expected || (self.tolerance > 0.0 && got.distance(&expected) <= self.tolerance)
        })))
    }

    fn templates(&self) -> Vec<(&'static str, &Template)> {
        vec![("expected", &self.expected)]
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::{last_number, parse_expected};
    use minijinja::context;

    fn last(text: &str) -> Option<f64> {
        last_number(text).map(|d| d.to_f64())
    }

    #[test]
    fn finds_the_last_number() {
        assert_eq!(last("3 apples and 4 pears: 7"), Some(7.0));
        assert_eq!(last("total -1,234.5 units"), Some(-1234.5));
        assert_eq!(last("1e3."), Some(1000.0));
        assert_eq!(last("none"), None);
        assert_eq!(last("The answer is 42."), Some(42.0));
        assert_eq!(last("$1,000,000 and 50%"), Some(50.0));
        assert_eq!(last(".5 or 0.25"), Some(0.25));
        assert_eq!(last("x=-5"), Some(-5.0));
        assert_eq!(last("(+3)"), Some(3.0));
    }

    #[test]
    fn a_unicode_minus_is_a_minus() {
        assert_eq!(last("the result is \u{2212}5"), Some(-5.0));
        assert_eq!(last("2.5e\u{2212}3"), Some(0.0025));
        assert_eq!(parse_expected("\u{2212}5").unwrap().to_f64(), -5.0);
    }

    #[test]
    fn commas_group_by_three_or_are_not_part_of_a_number() {
        assert_eq!(last("1,234,567"), Some(1_234_567.0));
        // `1,2` is not 12; neither half is taken (it may be a decimal comma).
        assert_eq!(last("1,2"), None);
        assert_eq!(last("7 then 1,2"), Some(7.0));
        assert_eq!(last("12,34"), None);
        assert_eq!(last("1,2345"), None);
        assert_eq!(last("5, 6 and 7"), Some(7.0));
        assert!(parse_expected("1,2").is_err());
        assert_eq!(parse_expected("1,234").unwrap().to_f64(), 1234.0);
    }

    #[test]
    fn dates_times_fractions_and_versions_are_not_numbers() {
        assert_eq!(last("2024-01-05"), None);
        assert_eq!(last("answer 3, checked on 2024-01-05"), Some(3.0));
        assert_eq!(last("at 12:30"), None);
        assert_eq!(last("3/4"), None);
        assert_eq!(last("version 1.2.3"), None);
        assert_eq!(last("gpt4"), None);
        assert_eq!(last("COVID-19"), Some(19.0));
        assert!(parse_expected("2024-01-05").is_err());
    }

    #[test]
    fn non_finite_expected_values_are_errors() {
        for text in [
            "NaN", "nan", "inf", "-inf", "Infinity", "1e309", "-1e400", "",
        ] {
            assert!(parse_expected(text).is_err(), "{text}");
        }
        assert!(parse_expected("1e308").is_ok());
        let e = from_yaml("type: numeric_match\nexpected: \"{{ answer }}\"");
        let err = score(&e, "5", context! { answer => "1e309" }).unwrap_err();
        assert!(err.to_string().contains("`1e309` is too large"), "{err}");
        let err = score(&e, "5", context! { answer => "NaN" }).unwrap_err();
        assert!(err.to_string().contains("`NaN` is not a number"), "{err}");
    }

    #[test]
    fn a_literal_non_finite_expected_is_refused_when_built() {
        for yaml in [
            "expected: NaN",
            "expected: .nan",
            "expected: .inf",
            "expected: \"1e309\"",
            "expected: \"2024-01-05\"",
        ] {
            let e = build_err(&format!("type: numeric_match\n{yaml}"));
            assert_eq!(e.key, "expected", "{yaml}");
        }
    }

    #[test]
    fn big_integers_compare_exactly() {
        let e = from_yaml("type: numeric_match\nexpected: \"{{ answer }}\"");
        let ctx = || context! { answer => "12345678901234567890" };
        assert_eq!(score(&e, "12345678901234567891", ctx()), FAIL);
        assert_eq!(score(&e, "12345678901234567890", ctx()), PASS);
        assert_eq!(score(&e, "12,345,678,901,234,567,890", ctx()), PASS);
        let e = from_yaml("type: numeric_match\nexpected: \"{{ answer }}\"\ntolerance: 0.5");
        assert_eq!(score(&e, "12345678901234567891", ctx()), FAIL);
        let e = from_yaml("type: numeric_match\nexpected: \"{{ answer }}\"\ntolerance: 1");
        assert_eq!(score(&e, "12345678901234567891", ctx()), PASS);
    }

    #[test]
    fn equal_values_written_differently_match() {
        let e = from_yaml("type: numeric_match\nexpected: \"1000\"");
        for output in ["1e3", "1,000", "1000.00", "+1000", "1.000e3"] {
            assert_eq!(score(&e, output, context! {}), PASS, "{output}");
        }
        let e = from_yaml("type: numeric_match\nexpected: 0");
        assert_eq!(score(&e, "-0", context! {}), PASS);
        assert_eq!(score(&e, "0.000", context! {}), PASS);
    }

    #[test]
    fn compares_within_tolerance() {
        let e = from_yaml("type: numeric_match\nexpected: \"{{ answer }}\"\ntolerance: 0.01");
        assert_eq!(
            score(&e, "The answer is 2.71828", context! { answer => 2.72 }),
            PASS
        );
        assert_eq!(
            score(&e, "The answer is 2.8", context! { answer => 2.72 }),
            FAIL
        );
        assert_eq!(score(&e, "no idea", context! { answer => 2.72 }), FAIL);
        assert_eq!(score(&e, "2.73", context! { answer => 2.72 }), PASS);
        let e = from_yaml("type: numeric_match\nexpected: 42");
        assert_eq!(score(&e, "42", context! {}), PASS);
    }

    #[test]
    fn only_ascii_digits_are_digits() {
        // `\d` alone is Unicode: Arabic-Indic or fullwidth digits were read as 0.
        for text in ["\u{664}\u{662}", "\u{ff14}\u{ff12}"] {
            assert_eq!(last(text), None, "{text}");
            assert!(parse_expected(text).is_err(), "{text}");
        }
        assert!(parse_expected("0.\u{665}").is_err());
        let e = from_yaml("type: numeric_match\nexpected: 0");
        assert_eq!(score(&e, "\u{ff14}\u{ff12}", context! {}), FAIL);
        assert_eq!(last("\u{ff14}\u{ff12} or 7"), Some(7.0));
    }

    #[test]
    fn extreme_exponents_do_not_overflow_the_distance() {
        let e = from_yaml("type: numeric_match\nexpected: 0.5\ntolerance: 0.1");
        assert_eq!(score(&e, "1e9223372036854775807", context! {}), FAIL);
        let e = from_yaml("type: numeric_match\nexpected: 5\ntolerance: 0.1");
        assert_eq!(score(&e, "1e-9223372036854775808", context! {}), FAIL);
        assert_eq!(score(&e, "5.05", context! {}), PASS);
    }

    #[test]
    fn expected_must_be_numeric() {
        let e = from_yaml("type: numeric_match\nexpected: \"{{ answer }}\"");
        assert!(score(&e, "1", context! { answer => "n/a" }).is_err());
    }
}
