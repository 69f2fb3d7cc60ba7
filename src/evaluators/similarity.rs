//! `similarity`: how close the trimmed output is to the trimmed `expected`, in [0, 1],
//! by the `strsim` crate: `method: levenshtein` (the default) is
//! `1 - edit distance / length of the longer string`, counted in Unicode characters;
//! `method: jaro_winkler` is the Jaro-Winkler similarity, which favours a shared
//! prefix. Two empty strings are identical (1). `ignore_case` lower-cases both first.
//!
//! Both methods take time in proportion to the product of the two lengths
//! (about 1 ns per pair of characters, measured: 40 000 x 40 000 characters
//! took 1.6 s). A long output is scored on a blocking thread, so it never
//! stalls other samples' requests, and a pair past [`MAX_PAIRS`] is not
//! compared: the sample is unscored, with the lengths in its error.

use std::sync::Arc;

use minijinja::Value;
use serde::{Deserialize, Serialize};

use super::{
    required_template, ArgError, Arguments, Score, ScoreError, Scored, TypeName, GRADED_THRESHOLD,
};
use crate::spec::raw::Text;
use crate::template::Template;

/// How two strings are compared.
#[derive(Debug, Clone, Copy, Default, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    #[default]
    Levenshtein,
    JaroWinkler,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    expected: Option<Text>,
    method: Option<Method>,
    ignore_case: Option<bool>,
}

impl Arguments for Args {
    fn build(&self) -> Result<Arc<dyn Score>, ArgError> {
        Ok(Arc::new(Similarity {
            expected: required_template(Self::TYPE, "expected", self.expected.as_ref())?,
            method: self.method.unwrap_or_default(),
            ignore_case: self.ignore_case.unwrap_or(false),
        }))
    }

    fn default_threshold(&self) -> f64 {
        GRADED_THRESHOLD
    }
}

/// Most character pairs compared (20 000 x 20 000: about 0.4 s of CPU).
pub const MAX_PAIRS: u64 = 400_000_000;

/// Outputs longer than this are scored on a blocking thread (compared with
/// as long an `expected`, a millisecond or more).
const HEAVY_BYTES: usize = 1024;

struct Similarity {
    expected: Template,
    method: Method,
    ignore_case: bool,
}

impl Score for Similarity {
    fn score(&self, output: &str, ctx: &Value) -> Result<Scored, ScoreError> {
        let expected = self.expected.render(ctx).map_err(ScoreError::Render)?;
        let (a, b) = (output.trim(), expected.trim());
        let (n, m) = (a.chars().count() as u64, b.chars().count() as u64);
        if n.saturating_mul(m) > MAX_PAIRS {
            return Err(ScoreError::Expected(format!(
                "the output ({n} characters) and `expected` ({m}) are too long to compare: similarity compares at most {MAX_PAIRS} character pairs (20000 x 20000)"
            )));
        }
        Ok(Scored::from(if self.ignore_case {
            similarity(self.method, &a.to_lowercase(), &b.to_lowercase())
        } else {
            similarity(self.method, a, b)
        }))
    }

    fn templates(&self) -> Vec<(&'static str, &Template)> {
        vec![("expected", &self.expected)]
    }

    fn heavy(&self, output: &str) -> bool {
        output.len() > HEAVY_BYTES
    }
}

fn similarity(method: Method, a: &str, b: &str) -> f64 {
    let s = match method {
        Method::Levenshtein => strsim::normalized_levenshtein(a, b),
        Method::JaroWinkler => strsim::jaro_winkler(a, b),
    };
    // Rounding must never take a score out of [0, 1].
    s.clamp(0.0, 1.0)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use minijinja::context;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn levenshtein_by_default() {
        let e = from_yaml("type: similarity\nexpected: \"{{ answer }}\"");
        // kitten -> sitting: 3 edits over 7 characters.
        let s = score(&e, " kitten\n", context! { answer => "sitting" }).unwrap();
        assert!(close(s, 1.0 - 3.0 / 7.0), "{s}");
        assert_eq!(score(&e, "Paris", context! { answer => "Paris" }), PASS);
        assert_eq!(
            score(&e, "Paris", context! { answer => "paris" }).ok(),
            Some(0.8)
        );
        assert_eq!(e.threshold, super::super::GRADED_THRESHOLD);
        let e = from_yaml("{type: similarity, expected: x, threshold: 0.9}");
        assert_eq!(e.threshold, 0.9);
    }

    #[test]
    fn counts_characters_not_bytes() {
        // One substitution in four characters (é is two bytes).
        let e = from_yaml("type: similarity\nexpected: café");
        assert!(close(score(&e, "cafe", context! {}).unwrap(), 0.75));
        assert!(close(score(&e, "日本語", context! {}).unwrap(), 0.0));
    }

    #[test]
    fn empty_strings() {
        let e = from_yaml("type: similarity\nexpected: \"{{ answer }}\"");
        assert_eq!(score(&e, "  ", context! { answer => "" }), PASS);
        assert_eq!(score(&e, "", context! { answer => "abc" }), FAIL);
        let e = from_yaml("type: similarity\nexpected: \"{{ answer }}\"\nmethod: jaro_winkler");
        assert_eq!(score(&e, "", context! { answer => "" }), PASS);
        assert_eq!(score(&e, "abc", context! { answer => "" }), FAIL);
    }

    #[test]
    fn jaro_winkler_and_ignore_case() {
        let e = from_yaml("type: similarity\nexpected: MARTHA\nmethod: jaro_winkler");
        let s = score(&e, "MARHTA", context! {}).unwrap();
        assert!(close(s, strsim::jaro_winkler("MARTHA", "MARHTA")), "{s}");
        assert!((0.96..0.97).contains(&s), "{s}");
        assert!(score(&e, "martha", context! {}).unwrap() < 0.5);
        let e = from_yaml(
            "type: similarity\nexpected: MARTHA\nmethod: jaro_winkler\nignore_case: true",
        );
        assert_eq!(score(&e, "martha", context! {}), PASS);
    }
}
