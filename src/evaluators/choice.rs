//! `choice`: multiple choice. The answer letter is read from the output and compared
//! with `expected`, a letter, case-insensitively.
//!
//! How the letter is read (README, Evaluators):
//! 1. The last `ANSWER:` (any case, e.g. `Final answer: **(c)**`, `**Answer**: c`) followed by
//!    a lone letter, possibly in `( )` or `[ ]`, decides, whatever the letter.
//! 2. Else the last `answer is` or `answer would be` (any case, e.g. `The correct answer
//!    is (C)`, `the answer would be: **B**`) followed by a lone upper-case letter among
//!    `choices`, possibly in `( )`, `[ ]` or bold, and not glued to a word (`B.5`, `Bravo`).
//! 3. Else the first upper-case letter among `choices` written as `(B)`, `B.` or
//!    `B)` (not glued to a word: not `U.S.`, `AB.` or `B.5`), or alone on its line
//!    (bold or quotes allowed: `**B**`).
//! 4. Else there is no answer and the sample scores 0.
//!
//! `choices` (default `[A, B, C, D, E]`) are the allowed letters; an `expected` that
//! is not one of them is a spec error, or an `evaluator` error when rendered per row.

use std::sync::{Arc, LazyLock};

use ::regex::Regex;
use minijinja::Value;
use serde::{Deserialize, Serialize};

use super::{required_template, ArgError, Arguments, Score, ScoreError, Scored, TypeName};
use crate::spec::raw::Text;
use crate::template::Template;

/// `ANSWER:` and what may stand between it and the letter; the letter's right side is
/// checked in code (no look-around in `regex`).
static ANSWER: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?i:\banswer)[ \t*_]*:[\s*_]*[(\[]?[ \t]*([A-Za-z])[)\]]?").expect("static regex")
});

/// `answer is X` in prose; the letter is upper case (so `the answer is a dog` reads no
/// letter) and its right side is checked in code.
static ANSWER_IS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r"(?i:\banswer[ \t]+(?:is|would[ \t]+be))[ \t]*:?[ \t*_]*[(\[]?[ \t]*([A-Z])[)\]]?[*_]*",
    )
    .expect("static regex")
});

const DEFAULT_CHOICES: &[char] = &['A', 'B', 'C', 'D', 'E'];

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    expected: Option<Text>,
    choices: Option<Vec<Text>>,
}

impl Arguments for Args {
    fn build(&self) -> Result<Arc<dyn Score>, ArgError> {
        let choices = match &self.choices {
            None => DEFAULT_CHOICES.to_vec(),
            Some(list) => {
                let bad = |message: String| {
                    ArgError::new("choices", message)
                        .hint("list the option letters, e.g. choices: [A, B, C, D]")
                };
                if list.is_empty() {
                    return Err(bad("choices is empty".into()));
                }
                let mut letters = Vec::new();
                for Text(text) in list {
                    let letter = letter(text)
                        .ok_or_else(|| bad(format!("choice `{text}` is not a single letter")))?;
                    if letters.contains(&letter) {
                        return Err(bad(format!("choice `{letter}` is listed twice")));
                    }
                    letters.push(letter);
                }
                letters
            }
        };
        let expected = required_template(Self::TYPE, "expected", self.expected.as_ref())?;
        if let Some(text) = expected.literal() {
            expected_letter(text, &choices).map_err(|e| {
                ArgError::new("expected", e.to_string()).hint(format!(
                    "write one of the choices ({}), or set `choices`",
                    list(&choices)
                ))
            })?;
        }
        Ok(Arc::new(Choice { expected, choices }))
    }
}

struct Choice {
    expected: Template,
    choices: Vec<char>,
}

impl Score for Choice {
    fn score(&self, output: &str, ctx: &Value) -> Result<Scored, ScoreError> {
        let expected = self.expected.render(ctx).map_err(ScoreError::Render)?;
        let expected = expected_letter(&expected, &self.choices)?;
        // The letter read is the reason, so a misread can be seen in `show --full`.
        Ok(match answer(output, &self.choices) {
            None => Scored::because(0.0, "no answer letter found"),
            Some(c) if c == expected => Scored::because(1.0, format!("answered {c}")),
            Some(c) => Scored::because(0.0, format!("answered {c}, expected {expected}")),
        })
    }

    fn templates(&self) -> Vec<(&'static str, &Template)> {
        vec![("expected", &self.expected)]
    }
}

/// `text`, trimmed, as one upper-case ASCII letter.
fn letter(text: &str) -> Option<char> {
    let mut chars = text.trim().chars();
    match (chars.next(), chars.next()) {
        (Some(c), None) if c.is_ascii_alphabetic() => Some(c.to_ascii_uppercase()),
        _ => None,
    }
}

fn list(choices: &[char]) -> String {
    let letters: Vec<String> = choices.iter().map(char::to_string).collect();
    letters.join(", ")
}

fn expected_letter(text: &str, choices: &[char]) -> Result<char, ScoreError> {
    match letter(text) {
        Some(c) if choices.contains(&c) => Ok(c),
        _ => Err(ScoreError::Expected(format!(
            "expected `{text}` is not one of the choices {}",
            list(choices)
        ))),
    }
}

fn is_word(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// The answer letter in `output`, upper-cased (see the module comment).
fn answer(output: &str, choices: &[char]) -> Option<char> {
    let explicit = ANSWER
        .captures_iter(output)
        .filter(|m| {
            let end = m.get(0).map_or(0, |m| m.end());
            !output[end..].chars().next().is_some_and(is_word)
        })
        .last()
        .and_then(|m| m.get(1))
        .and_then(|m| m.as_str().chars().next());
    if let Some(c) = explicit {
        return Some(c.to_ascii_uppercase());
    }
    let stated = ANSWER_IS
        .captures_iter(output)
        .filter(|m| {
            let end = m.get(0).map_or(0, |m| m.end());
            let mut rest = output[end..].chars();
            // Not glued to a word: `Bravo`, `B's`, nor `B.5` (`B.` ends a sentence).
            !match (rest.next(), rest.next()) {
                (Some(c), _) if is_word(c) => true,
                (Some('.' | '\'' | '-'), Some(d)) => is_word(d),
                _ => false,
            }
        })
        .filter_map(|m| m.get(1).and_then(|m| m.as_str().chars().next()))
        .filter(|c| choices.contains(c))
        .last();
    if stated.is_some() {
        return stated;
    }
    let chars: Vec<char> = output.chars().collect();
    let mut line_start = 0;
    for (i, &c) in chars.iter().enumerate() {
        if c == '\n' {
            line_start = i + 1;
        }
        if !(c.is_ascii_uppercase() && choices.contains(&c)) {
            continue;
        }
        let before = i.checked_sub(1).map(|j| chars[j]);
        let (next, after) = (chars.get(i + 1).copied(), chars.get(i + 2).copied());
        let marked = matches!(next, Some('.' | ')'))
            && !before.is_some_and(is_word)
            && !after.is_some_and(is_word);
        if marked || alone_on_line(&chars, line_start, i) {
            return Some(c);
        }
    }
    None
}

/// Whether the letter at `i` is the only thing on its line, but for spaces, bold and
/// quote marks.
fn alone_on_line(chars: &[char], line_start: usize, i: usize) -> bool {
    let filler =
        |c: &&char| c.is_whitespace() && **c != '\n' || matches!(c, '*' | '_' | '"' | '\'' | '`');
    chars[line_start..i].iter().rev().all(|c| filler(&c))
        && chars[i + 1..]
            .iter()
            .take_while(|c| **c != '\n')
            .all(|c| filler(&c))
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;
    use minijinja::context;

    const ABCDE: &[char] = DEFAULT_CHOICES;

    #[test]
    fn reads_the_letter() {
        for (output, letter) in [
            ("ANSWER: B", Some('B')),
            ("Answer: (B)", Some('B')),
            ("answer: [c]", Some('C')),
            ("**Final answer:** D", Some('D')),
            ("**Answer**: (a)", Some('A')),
            ("Answers: none of them", None),
            ("Answer:\n\nE.", Some('E')),
            ("(B)", Some('B')),
            ("I think it is (C), because...", Some('C')),
            ("B.", Some('B')),
            ("B) Paris", Some('B')),
            ("The answer is D.", Some('D')),
            ("B", Some('B')),
            ("  **C**  ", Some('C')),
            ("Let me think.\nA\nThat is all.", Some('A')),
            // Not standalone: inside words, abbreviations, decimals, lower case.
            ("ABC.", None),
            ("The U.S. and E.U.", None),
            ("Bravo.", None),
            ("b.", None),
            ("Version B.5", None),
            ("A dog is an animal", None),
            ("", None),
            // Outside the choices.
            ("F.", None),
        ] {
            assert_eq!(answer(output, ABCDE), letter, "{output:?}");
        }
    }

    #[test]
    fn the_last_answer_line_wins() {
        let out = "ANSWER: A\nWait, that is wrong.\nANSWER: C";
        assert_eq!(answer(out, ABCDE), Some('C'));
        // An ANSWER: without a lone letter does not count; the last real one does.
        let out = "Answer: B\nAnswer: Because of gravity.";
        assert_eq!(answer(out, ABCDE), Some('B'));
        // An explicit answer beats an earlier standalone letter.
        assert_eq!(answer("(A) looks tempting.\nANSWER: D", ABCDE), Some('D'));
        // The explicit letter decides even outside the choices.
        assert_eq!(answer("(A) or...\nANSWER: Z", ABCDE), Some('Z'));
        // Otherwise the first standalone letter.
        assert_eq!(answer("A. no. B. yes", ABCDE), Some('A'));
        // Answer: Paris has no letter, so the first marked one is taken.
        assert_eq!(answer("Answer: Paris (C)", ABCDE), Some('C'));
    }

    #[test]
    fn reads_the_answer_in_a_sentence() {
        for (output, letter) in [
            ("The answer is B", Some('B')),
            ("the correct answer is (C)", Some('C')),
            ("The correct answer is: B", Some('B')),
            ("So the answer would be **D**, since...", Some('D')),
            ("I believe the answer is [A] here", Some('A')),
            ("The answer is **(E)**", Some('E')),
            ("ANSWER IS B because", Some('B')),
            ("The answer is B, not C", Some('B')),
            // A later statement revises an earlier one, and beats a marked letter.
            ("The answer is A. No: the answer is C", Some('C')),
            ("(A) looks right, but the answer is B", Some('B')),
            // Glued to a word, lower case or outside the choices: not a letter.
            ("The answer is Bravo", None),
            ("The answer is B.5 units", None),
            ("The answer is B's", None),
            ("The answer is a dog", None),
            ("The answer is F", None),
            ("The answer is clear", None),
            ("Their answer isn't C", None),
            // `ANSWER:` still decides.
            ("The answer is B.\nANSWER: C", Some('C')),
        ] {
            assert_eq!(answer(output, ABCDE), letter, "{output:?}");
        }
        // An explicit letter outside the choices falls back to the other rules.
        assert_eq!(answer("The answer is F, or (B)", ABCDE), Some('B'));
    }

    #[test]
    fn unicode_around_the_letter() {
        assert_eq!(answer("Réponse : (B) — c'est ça", ABCDE), Some('B'));
        assert_eq!(answer("éB. x", ABCDE), None);
        assert_eq!(answer("答案：\nC\n", ABCDE), Some('C'));
    }

    #[test]
    fn scores_against_expected() {
        let e = from_yaml("type: choice\nexpected: \"{{ answer }}\"");
        assert_eq!(score(&e, "ANSWER: b", context! { answer => "B" }), PASS);
        assert_eq!(score(&e, "(B)", context! { answer => " b " }), PASS);
        assert_eq!(score(&e, "(C)", context! { answer => "B" }), FAIL);
        assert_eq!(score(&e, "no idea", context! { answer => "B" }), FAIL);
        let reason = |out: &str| e.score(out, &context! { answer => "b" }).map(|s| s.reason);
        assert_eq!(reason("B)"), Ok(Some("answered B".into())));
        assert_eq!(
            reason("ANSWER: c"),
            Ok(Some("answered C, expected B".into()))
        );
        assert_eq!(reason("hmm"), Ok(Some("no answer letter found".into())));
        assert_eq!(
            score(&e, "(B)", context! { answer => "F" }),
            Err(ScoreError::Expected(
                "expected `F` is not one of the choices A, B, C, D, E".into()
            ))
        );
        let e =
            from_yaml("type: choice\nexpected: \"{{ answer }}\"\nchoices: [a, b, c, d, e, f, g]");
        assert_eq!(score(&e, "G)", context! { answer => "g" }), PASS);
    }

    #[test]
    fn bad_arguments_fail_at_load() {
        let err = build_err("type: choice\nexpected: F");
        assert_eq!(err.key, "expected");
        assert_eq!(
            err.message,
            "expected `F` is not one of the choices A, B, C, D, E"
        );
        assert_eq!(
            build_err("type: choice\nexpected: AB\nchoices: [A, B]").key,
            "expected"
        );
        for choices in ["[]", "[A, AB]", "[A, a]", "[1, 2]"] {
            let err = build_err(&format!("type: choice\nexpected: A\nchoices: {choices}"));
            assert_eq!(err.key, "choices", "{choices}");
        }
        assert_eq!(build_err("type: choice").key, "expected");
    }

    proptest::proptest! {
        /// Any text reads as at most one letter, without panicking.
        #[test]
        fn any_text_reads_safely(output in "(\\PC|\n|[()ABC.:]|answer|ANSWER: ){0,30}") {
            if let Some(c) = answer(&output, ABCDE) {
                proptest::prop_assert!(c.is_ascii_uppercase());
            }
        }
    }
}
