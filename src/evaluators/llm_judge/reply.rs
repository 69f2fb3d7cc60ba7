//! Reading a judge's reply as a score: a JSON object `{"score", "reason"}`
//! (alone, inside a ```json fence, or within other text), else a final
//! `GRADE: C|P|I` line. A reply that says neither has no score: the caller
//! leaves the sample unscored rather than guess.

use serde_json::Value;

/// A score read from a reply, with the judge's reason when it gave one.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub score: f64,
    pub reason: Option<String>,
}

/// Why a reply gave no score.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Unreadable {
    #[error("the judge's reply has no score: expected a JSON object {{\"score\": 0..1, \"reason\": \"...\"}} or a final `GRADE: C|P|I` line")]
    NoScore,
    #[error("the judge's score {0} is outside [0, 1]")]
    OutOfRange(f64),
    #[error("the judge's `score` is {0}, not a number")]
    NotANumber(String),
}

/// The score in `reply`; see the module documentation for what is read.
pub fn read(reply: &str) -> Result<Verdict, Unreadable> {
    if let Some(object) = json_object(reply) {
        return from_object(&object);
    }
    grade_line(reply).ok_or(Unreadable::NoScore)
}

/// The last JSON object with a `score` key: the whole reply, else each
/// object found in it (which covers a ```json fence and text around it). The
/// last, because a judge that quotes the response before its verdict
/// ("the answer says {\"score\": 1}... {\"score\": 0}") ends with its own.
/// Objects nested in another are part of it, not candidates of their own.
fn json_object(reply: &str) -> Option<serde_json::Map<String, Value>> {
    let scored = |v: Value| match v {
        Value::Object(m) if m.contains_key("score") => Some(m),
        _ => None,
    };
    if let Ok(v) = serde_json::from_str::<Value>(reply.trim()) {
        if let Some(m) = scored(v) {
            return Some(m);
        }
    }
    let mut last = None;
    let mut at = 0;
    while let Some(found) = reply[at..].find('{') {
        let start = at + found;
        let mut values = serde_json::Deserializer::from_str(&reply[start..]).into_iter::<Value>();
        match values.next() {
            Some(Ok(v)) => {
                at = start + values.byte_offset();
                if let Some(m) = scored(v) {
                    last = Some(m);
                }
            }
            _ => at = start + 1,
        }
    }
    last
}

fn from_object(object: &serde_json::Map<String, Value>) -> Result<Verdict, Unreadable> {
    let score = match &object["score"] {
        Value::Number(n) => n.as_f64().unwrap_or(f64::NAN),
        Value::Bool(b) => f64::from(u8::from(*b)),
        Value::String(s) => s
            .trim()
            .parse()
            .map_err(|_| Unreadable::NotANumber(format!("{s:?}")))?,
        other => return Err(Unreadable::NotANumber(other.to_string())),
    };
    if !(0.0..=1.0).contains(&score) {
        return Err(Unreadable::OutOfRange(score));
    }
    let reason = match object.get("reason") {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Some(Value::Null) | None => None,
        Some(Value::String(_)) => None,
        Some(other) => Some(other.to_string()),
    };
    Ok(Verdict { score, reason })
}

/// The last line that is `GRADE: C`, `P` or `I` (correct, partial, incorrect:
/// 1, 0.5, 0), as model-graded QA asks for; the text before it is the reason.
fn grade_line(reply: &str) -> Option<Verdict> {
    let lines: Vec<&str> = reply.lines().collect();
    let (at, score) = lines.iter().enumerate().rev().find_map(|(i, line)| {
        let rest = strip_prefix_ignore_case(line.trim().trim_matches('*').trim(), "grade")?;
        let letter = rest
            .trim_start()
            .strip_prefix(':')?
            .trim()
            .trim_matches('*');
        let score = match letter.to_ascii_uppercase().as_str() {
            "C" => 1.0,
            "P" => 0.5,
            "I" => 0.0,
            _ => return None,
        };
        Some((i, score))
    })?;
    let before = lines[..at].join("\n");
    let reason = before.trim();
    Some(Verdict {
        score,
        reason: (!reason.is_empty()).then(|| reason.to_owned()),
    })
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn score(reply: &str) -> Result<(f64, Option<String>), Unreadable> {
        read(reply).map(|v| (v.score, v.reason))
    }

    #[test]
    fn a_json_object_alone() {
        assert_eq!(
            score(r#"{"score": 0.8, "reason": "mostly right"}"#),
            Ok((0.8, Some("mostly right".into())))
        );
        assert_eq!(score(r#" {"score": 1} "#), Ok((1.0, None)));
    }

    #[test]
    fn a_fenced_object_or_one_inside_text() {
        let fenced = "Here is my grade:\n```json\n{\"score\": 0.5, \"reason\": \"half\"}\n```\n";
        assert_eq!(score(fenced), Ok((0.5, Some("half".into()))));
        let inline = r#"I think {"score": 0, "reason": "wrong city"} is fair."#;
        assert_eq!(score(inline), Ok((0.0, Some("wrong city".into()))));
        // An object without `score` is passed over for the one with it.
        let two = r#"{"note": 1} then {"score": 1, "reason": "ok"}"#;
        assert_eq!(score(two), Ok((1.0, Some("ok".into()))));
        // The last verdict counts, and a nested object is part of its parent.
        let quoted = r#"It claims {"score": 1}. My grade: {"score": 0.2, "reason": "no"}"#;
        assert_eq!(score(quoted), Ok((0.2, Some("no".into()))));
        let nested = r#"{"score": 0.6, "detail": {"score": 0}}"#;
        assert_eq!(score(&format!("Grade: {nested}")), Ok((0.6, None)));
    }

    #[test]
    fn lenient_score_types() {
        assert_eq!(score(r#"{"score": "0.25"}"#), Ok((0.25, None)));
        assert_eq!(score(r#"{"score": true}"#), Ok((1.0, None)));
        assert_eq!(
            score(r#"{"score": "high"}"#),
            Err(Unreadable::NotANumber("\"high\"".into()))
        );
        assert_eq!(score(r#"{"score": 7}"#), Err(Unreadable::OutOfRange(7.0)));
        assert_eq!(
            score(r#"{"score": null}"#),
            Err(Unreadable::NotANumber("null".into()))
        );
    }

    #[test]
    fn the_last_grade_line_counts() {
        assert_eq!(
            score("The answer names Paris.\nGRADE: C"),
            Ok((1.0, Some("The answer names Paris.".into())))
        );
        assert_eq!(
            score("GRADE: C\nOn second thought:\nGRADE: P\n"),
            Ok((0.5, Some("GRADE: C\nOn second thought:".into())))
        );
        assert_eq!(score("**Grade: i**"), Ok((0.0, None)));
        // GRADE words inside a sentence are not a grade line.
        assert_eq!(score("I would grade: C, maybe"), Err(Unreadable::NoScore));
    }

    #[test]
    fn garbage_has_no_score() {
        for reply in [
            "",
            "yes",
            "The answer is correct.",
            "{not json",
            "GRADE: A",
            "{\"reason\": \"no score\"}",
        ] {
            assert_eq!(score(reply), Err(Unreadable::NoScore), "{reply:?}");
        }
    }
}
