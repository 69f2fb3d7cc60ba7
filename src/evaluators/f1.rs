//! `f1`: token F1 between the output and `expected`, normalised as SQuAD's official
//! evaluation script does (`normalize_answer` in `evaluate-v2.0.py`): lower-case, drop
//! ASCII punctuation (Python's `string.punctuation`), replace the words `a`, `an` and
//! `the` by a space, then split on whitespace. Tokens are counted as a multiset
//! (a token that appears twice in both counts twice). As in SQuAD v2, when either side
//! has no tokens the score is 1 if both have none, else 0.
//!
//! Several gold answers (SQuAD has several per question): `expected` may be a list,
//! each item a template, or one template that renders to a JSON list of strings
//! (`"{{ answers | tojson }}"`); the score is the best F1 over them, as SQuAD's
//! `metric_max_over_ground_truths`.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use ::regex::Regex;
use minijinja::Value;
use serde::{Deserialize, Serialize};

use super::{
    required_template, ArgError, Arguments, Score, ScoreError, Scored, TypeName, GRADED_THRESHOLD,
};
use crate::spec::raw::Text;
use crate::template::Template;

/// SQuAD's `\b(a|an|the)\b`; Rust's `\b`, like Python 3's, is Unicode-aware.
static ARTICLES: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"\b(a|an|the)\b").expect("static regex"));

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    expected: Option<Golds>,
}

/// One gold answer, or several.
#[derive(Debug, Deserialize, Serialize)]
#[serde(untagged, expecting = "a string, or a list of strings")]
enum Golds {
    One(Text),
    Many(Vec<Text>),
}

impl Arguments for Args {
    fn build(&self) -> Result<Arc<dyn Score>, ArgError> {
        let expected = match &self.expected {
            Some(Golds::Many(list)) if list.is_empty() => {
                return Err(ArgError::new("expected", "expected is an empty list")
                    .hint("list at least one answer, or write one as a string"))
            }
            Some(Golds::Many(list)) => list
                .iter()
                .map(|text| required_template(Self::TYPE, "expected", Some(text)))
                .collect::<Result<_, _>>()?,
            Some(Golds::One(text)) => {
                vec![required_template(Self::TYPE, "expected", Some(text))?]
            }
            None => vec![required_template(Self::TYPE, "expected", None)?],
        };
        Ok(Arc::new(F1 { expected }))
    }

    fn default_threshold(&self) -> f64 {
        GRADED_THRESHOLD
    }
}

struct F1 {
    /// Never empty.
    expected: Vec<Template>,
}

impl Score for F1 {
    fn score(&self, output: &str, ctx: &Value) -> Result<Scored, ScoreError> {
        let mut best = 0.0f64;
        for template in &self.expected {
            let rendered = template.render(ctx).map_err(ScoreError::Render)?;
            for gold in golds(&rendered) {
                best = best.max(f1(output, &gold));
            }
        }
        Ok(Scored::from(best))
    }

    fn templates(&self) -> Vec<(&'static str, &Template)> {
        self.expected.iter().map(|t| ("expected", t)).collect()
    }
}

/// The gold answers in one rendered `expected`: the strings of a non-empty JSON list
/// of strings (`["Denver Broncos", "Broncos"]`), else the text itself.
fn golds(rendered: &str) -> Vec<Cow<'_, str>> {
    let trimmed = rendered.trim();
    if trimmed.starts_with('[') {
        // `Cow` borrows where it can; a string with escapes is owned.
        if let Ok(list) = serde_json::from_str::<Vec<Cow<'_, str>>>(trimmed) {
            if !list.is_empty() {
                return list;
            }
        }
    }
    vec![Cow::Borrowed(rendered)]
}

/// SQuAD's `normalize_answer`, then split into tokens.
fn tokens(text: &str) -> Vec<String> {
    let lower = text.to_lowercase();
    let no_punctuation: String = lower
        .chars()
        .filter(|c| !c.is_ascii_punctuation())
        .collect();
    ARTICLES
        .replace_all(&no_punctuation, " ")
        // Python's `str.split()` also splits on the separators U+001C..U+001F.
        .split(|c: char| c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c))
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect()
}

/// SQuAD v2's `compute_f1`.
fn f1(prediction: &str, truth: &str) -> f64 {
    let (predicted, truth) = (tokens(prediction), tokens(truth));
    if predicted.is_empty() || truth.is_empty() {
        return if predicted.is_empty() && truth.is_empty() {
            1.0
        } else {
            0.0
        };
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for t in &truth {
        *counts.entry(t).or_default() += 1;
    }
    let mut same = 0usize;
    for t in &predicted {
        if let Some(n) = counts.get_mut(t.as_str()).filter(|n| **n > 0) {
            *n -= 1;
            same += 1;
        }
    }
    if same == 0 {
        return 0.0;
    }
    let precision = same as f64 / predicted.len() as f64;
    let recall = same as f64 / truth.len() as f64;
    (2.0 * precision * recall) / (precision + recall)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use minijinja::context;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn normalises_as_squad() {
        // Punctuation is dropped, not replaced by a space: "eiffel-tower" is one token.
        assert_eq!(
            tokens("The  Eiffel-Tower, in Paris!"),
            ["eiffeltower", "in", "paris"]
        );
        assert_eq!(
            tokens("A cat and an apple; THE end"),
            ["cat", "and", "apple", "end"]
        );
        // Articles only as whole words; punctuation goes first, so "a." is an article.
        assert_eq!(tokens("theatre an. anthem a"), ["theatre", "anthem"]);
        // Unicode: lower-cased, non-ASCII punctuation kept (as Python's string.punctuation).
        assert_eq!(tokens("ÉCOLE «Été»"), ["école", "«été»"]);
        assert_eq!(tokens("naïve\u{a0}café\u{1f}x"), ["naïve", "café", "x"]);
    }

    #[test]
    fn squad_examples() {
        // Exact up to normalisation.
        assert!(close(f1("the Denver Broncos", "Denver Broncos"), 1.0));
        // 2 of 3 predicted tokens, both truth tokens: P = 2/3, R = 1, F1 = 0.8.
        assert!(close(f1("Denver Broncos team", "Denver Broncos"), 0.8));
        // 1 common: P = 1/2, R = 1/3, F1 = 0.4.
        assert!(close(f1("Santa Clara", "Levi's Stadium Santa"), 0.4));
        assert_eq!(f1("Carolina Panthers", "Denver Broncos"), 0.0);
        // Repeated tokens count once per occurrence on each side.
        assert!(close(f1("paris paris", "paris"), 2.0 * 0.5 * 1.0 / 1.5));
    }

    #[test]
    fn empty_sides() {
        assert_eq!(f1("", ""), 1.0);
        assert_eq!(f1("the a an ...", ""), 1.0);
        assert_eq!(f1("", "Paris"), 0.0);
        assert_eq!(f1("Paris", " "), 0.0);
    }

    #[test]
    fn scores_against_a_template() {
        let e = from_yaml("type: f1\nexpected: \"{{ answer }}\"");
        let s = score(&e, "It is Paris, France.", context! { answer => "Paris" }).unwrap();
        // P = 1/4 ("it", "is", "paris", "france"), R = 1.
        assert!(close(s, 0.4), "{s}");
        assert_eq!(score(&e, "PARIS.", context! { answer => "paris" }), PASS);
        assert_eq!(build_err("type: f1").key, "expected");
        // Graded: half an answer passes by default.
        assert_eq!(e.threshold, super::super::GRADED_THRESHOLD);
    }

    #[test]
    fn the_best_of_several_answers() {
        // A list in the spec: each item a template; the best F1 counts.
        let e = from_yaml("type: f1\nexpected: [\"{{ a }}\", Denver Broncos, \"{{ b }}\"]");
        let ctx = || context! { a => "Santa Clara", b => "Broncos" };
        assert_eq!(score(&e, "Broncos", ctx()), PASS);
        assert!(close(score(&e, "Denver Broncos team", ctx()).unwrap(), 0.8));
        assert!(close(score(&e, "Clara", ctx()).unwrap(), 2.0 / 3.0));
        assert_eq!(score(&e, "Panthers", ctx()), FAIL);
        assert_eq!(e.scorer.templates().len(), 3);
        // One template that renders to a JSON list of strings (a SQuAD `answers` column).
        let e = from_yaml("type: f1\nexpected: \"{{ answers | tojson }}\"");
        let answers = || context! { answers => vec!["Denver Broncos", "the \"Broncos\""] };
        assert_eq!(score(&e, "broncos", answers()), PASS);
        assert!(close(score(&e, "Denver", answers()).unwrap(), 2.0 / 3.0));
        // Anything else stays one answer: text, an empty list, a list of numbers.
        for text in ["[Broncos]", "[]", "[1, 2]"] {
            assert_eq!(golds(text), [text], "{text}");
        }
        assert_eq!(build_err("type: f1\nexpected: []").key, "expected");
        assert_eq!(build_err("type: f1\nexpected: [\"{{ x\"]").key, "expected");
    }

    proptest::proptest! {
        /// F1 is symmetric, in [0, 1], and 1 for a text against itself.
        #[test]
        fn f1_is_a_symmetric_score(a in "\\PC{0,40}", b in "[a-c ,.]{0,20}") {
            let s = f1(&a, &b);
            proptest::prop_assert!((0.0..=1.0).contains(&s));
            proptest::prop_assert!((s - f1(&b, &a)).abs() < 1e-12);
            proptest::prop_assert_eq!(f1(&a, &a), 1.0);
        }
    }
}
