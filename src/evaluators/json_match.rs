//! `json_match`: the output is JSON and the value at `path` equals `expected`.
//!
//! The output is read as JSON when the trimmed whole parses; else the first fenced
//! block (```` ```json ```` or a bare ```` ``` ````) whose contents parse is taken;
//! else the first JSON object or array in the prose (`Result: {"a": 1}. Done.`).
//! `path` is a JSON Pointer (RFC 6901: `/answer`, `/items/0/name`, `~1` for `/` and
//! `~0` for `~` in a key); without it the whole value is compared. Equality is
//! structural: object keys in any order, arrays in order, numbers by value (`1` equals
//! `1.0`), strings exactly. `expected` is any YAML value; a string is a template
//! rendered per sample, and the rendered text is taken as JSON when it parses (so
//! `"42"` is the number 42 and `"{{ answer | tojson }}"` passes a structured column
//! through), else as that string (`Paris`). Output that is not JSON, or has nothing
//! at `path`, scores 0: the model got it wrong, the evaluator did not fail.

use std::sync::Arc;

use minijinja::Value;
use serde::{Deserialize, Serialize};
use serde_json::Value as Json;

use super::{score_of, ArgError, Arguments, Score, ScoreError, Scored, TypeName};
use crate::template::Template;

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    /// `expected: null` is the JSON null, not a missing key.
    #[serde(default, deserialize_with = "present")]
    expected: Option<Json>,
    path: Option<String>,
}

impl Arguments for Args {
    fn build(&self) -> Result<Arc<dyn Score>, ArgError> {
        let expected = match &self.expected {
            None => {
                return Err(
                    ArgError::new("expected", format!("{} needs `expected`", Self::TYPE)).hint(
                        "add `expected: ...` to this evaluator (any YAML value, or a template)",
                    ),
                )
            }
            Some(Json::String(source)) => {
                Expected::Template(Template::compile(source).map_err(|e| ArgError {
                    template_line: e.line,
                    ..ArgError::new(
                        "expected",
                        format!("template error in `expected`: {}", e.message),
                    )
                })?)
            }
            Some(value) => Expected::Value(value.clone()),
        };
        let path = self.path.clone().unwrap_or_default();
        check_pointer(&path).map_err(|message| {
            let key = path.trim_start_matches("$.").replace('.', "/");
            ArgError::new("path", message).hint(format!(
                "write a JSON Pointer such as `/{}` (`/items/0` for an array element)",
                key.trim_start_matches('/')
            ))
        })?;
        Ok(Arc::new(JsonMatch { expected, path }))
    }
}

fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Json>, D::Error> {
    Json::deserialize(d).map(Some)
}

/// Whether `path` is a JSON Pointer: empty, or `/` segments whose `~` escapes are
/// `~0` or `~1`.
fn check_pointer(path: &str) -> Result<(), String> {
    if !path.is_empty() && !path.starts_with('/') {
        return Err(format!(
            "path `{path}` is not a JSON Pointer: it must start with `/`"
        ));
    }
    let mut chars = path.chars();
    while let Some(c) = chars.next() {
        if c == '~' && !matches!(chars.next(), Some('0' | '1')) {
            return Err(format!(
                "path `{path}` is not a JSON Pointer: `~` must be followed by 0 or 1"
            ));
        }
    }
    Ok(())
}

enum Expected {
    Value(Json),
    Template(Template),
}

struct JsonMatch {
    expected: Expected,
    path: String,
}

impl Score for JsonMatch {
    fn score(&self, output: &str, ctx: &Value) -> Result<Scored, ScoreError> {
        let rendered;
        let expected = match &self.expected {
            Expected::Value(v) => v,
            Expected::Template(t) => {
                let text = t.render(ctx).map_err(ScoreError::Render)?;
                rendered = serde_json::from_str(&text).unwrap_or(Json::String(text));
                &rendered
            }
        };
        let Some(found) = parse_output(output) else {
            return Ok(Scored::because(
                0.0,
                "the output is not JSON, nor holds a JSON object or array",
            ));
        };
        Ok(match found.pointer(&self.path) {
            None => Scored::because(0.0, format!("the JSON has nothing at `{}`", self.path)),
            Some(v) if same(v, expected) => score_of(true),
            Some(v) => Scored::because(
                0.0,
                format!("found {}, expected {}", excerpt(v), excerpt(expected)),
            ),
        })
    }

    fn templates(&self) -> Vec<(&'static str, &Template)> {
        match &self.expected {
            Expected::Template(t) => vec![("expected", t)],
            Expected::Value(_) => Vec::new(),
        }
    }
}

/// The output as JSON: the whole of it, else the first fenced block that parses,
/// else the first object or array in the text.
fn parse_output(output: &str) -> Option<Json> {
    parse_whole_or_fenced(output).or_else(|| first_in_text(output))
}

/// The first `{...}` or `[...]` in `text` that parses, read from its opening bracket to
/// where the value ends (what follows is prose). A bracket that does not start a value
/// (`[1]` of a citation does) is passed over, so a value nested in broken JSON is found.
fn first_in_text(text: &str) -> Option<Json> {
    text.match_indices(['{', '[']).find_map(|(start, _)| {
        serde_json::Deserializer::from_str(&text[start..])
            .into_iter::<Json>()
            .next()
            .and_then(Result::ok)
    })
}

fn parse_whole_or_fenced(output: &str) -> Option<Json> {
    if let Ok(v) = serde_json::from_str(output.trim()) {
        return Some(v);
    }
    let mut rest = output;
    while let Some(start) = rest.find("```") {
        let after = &rest[start + 3..];
        // The info string (`json`, `JSON`, or nothing) runs to the end of the line.
        let (info, body) = after.split_once('\n').unwrap_or((after, ""));
        // An unclosed fence holds nothing to read.
        let end = body.find("```")?;
        let info = info.trim();
        if info.is_empty() || info.eq_ignore_ascii_case("json") {
            if let Ok(v) = serde_json::from_str(body[..end].trim()) {
                return Some(v);
            }
        }
        rest = &body[end + 3..];
    }
    None
}

/// `value` as compact JSON, cut after 100 characters.
fn excerpt(value: &Json) -> String {
    let text = value.to_string();
    match text.char_indices().nth(100) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

/// Structural equality, numbers by value.
fn same(a: &Json, b: &Json) -> bool {
    match (a, b) {
        (Json::Number(x), Json::Number(y)) => {
            if let (Some(x), Some(y)) = (x.as_i64(), y.as_i64()) {
                x == y
            } else if let (Some(x), Some(y)) = (x.as_u64(), y.as_u64()) {
                x == y
            } else {
                x.as_f64() == y.as_f64()
            }
        }
        (Json::Array(x), Json::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Json::Object(x), Json::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use minijinja::context;

    #[test]
    fn whole_value_ignoring_key_order() {
        let e = from_yaml("type: json_match\nexpected: {b: [1, {y: null, x: true}], a: \"s\"}");
        assert_eq!(
            score(
                &e,
                r#" {"a": "s", "b": [1.0, {"x": true, "y": null}]} "#,
                context! {}
            ),
            PASS
        );
        // Arrays keep their order; extra keys differ; strings are not numbers.
        for wrong in [
            r#"{"a": "s", "b": [{"x": true, "y": null}, 1]}"#,
            r#"{"a": "s", "b": [1, {"x": true, "y": null}], "c": 0}"#,
            r#"{"a": "s", "b": ["1", {"x": true, "y": null}]}"#,
        ] {
            assert_eq!(score(&e, wrong, context! {}), FAIL, "{wrong}");
        }
    }

    #[test]
    fn pointer_into_nested_objects() {
        let e = from_yaml("type: json_match\npath: /result/items/1/name\nexpected: Zoë");
        let out = r#"{"result": {"items": [{"name": "x"}, {"name": "Zoë"}]}}"#;
        assert_eq!(score(&e, out, context! {}), PASS);
        assert_eq!(score(&e, r#"{"result": {"items": []}}"#, context! {}), FAIL);
        let e = from_yaml("type: json_match\npath: /a~1b/c~0d\nexpected: 1");
        assert_eq!(score(&e, r#"{"a/b": {"c~d": 1}}"#, context! {}), PASS);
    }

    #[test]
    fn fenced_json_and_non_json() {
        let e = from_yaml("type: json_match\npath: /answer\nexpected: 42");
        let fenced = "Sure! Here it is:\n```json\n{\"answer\": 42}\n```\nAnything else?";
        assert_eq!(score(&e, fenced, context! {}), PASS);
        let bare = "```\n{\"answer\": 42.0}\n```";
        assert_eq!(score(&e, bare, context! {}), PASS);
        // The first fence that parses is taken.
        let two = "```python\nprint(1)\n```\n```json\n{oops}\n```\n```JSON\n{\"answer\": 42}\n```";
        assert_eq!(score(&e, two, context! {}), PASS);
        for not_json in ["", "42 is the answer", "{answer: 42}"] {
            assert_eq!(score(&e, not_json, context! {}), FAIL, "{not_json:?}");
        }
        // An unclosed fence is no fence, but the object in its text is still found.
        let unclosed = "```json\n{\"answer\": 42}";
        assert_eq!(score(&e, unclosed, context! {}), PASS);
    }

    #[test]
    fn json_in_prose() {
        let e = from_yaml("type: json_match\npath: /a\nexpected: 1");
        assert_eq!(
            score(&e, r#"Here is the result: {"a": 1}. Done."#, context! {}),
            PASS
        );
        // The first object or array that parses; broken ones and citations are passed over.
        for out in [
            r#"See [citation] and {oops}, then {"a": 1} and {"a": 2}."#,
            r#"{"b": {"a": 1}"#,
            "Sure!\n{\"a\": 1, \"b\": [2, 3]}\nAnything else?",
            "```python\nx = 1\n```\n{\"a\": 1.0}",
        ] {
            assert_eq!(score(&e, out, context! {}), PASS, "{out:?}");
        }
        // An earlier value decides even when a later one would match.
        assert_eq!(score(&e, r#"{"a": 2} or {"a": 1}"#, context! {}), FAIL);
        // A fence that parses comes first; an array in the prose counts.
        let fenced = "[0] first.\n```json\n{\"a\": 1}\n```";
        assert_eq!(score(&e, fenced, context! {}), PASS);
        let e = from_yaml("type: json_match\nexpected: [1, {x: y}]");
        assert_eq!(score(&e, r#"It is [1, {"x": "y"}]."#, context! {}), PASS);
        // A bare number or string in prose is not taken.
        let e = from_yaml("type: json_match\nexpected: 42");
        assert_eq!(score(&e, "The answer is 42.", context! {}), FAIL);
    }

    #[test]
    fn templated_expected_is_json_when_it_parses() {
        let e = from_yaml("type: json_match\npath: /answer\nexpected: \"{{ answer }}\"");
        assert_eq!(
            score(&e, r#"{"answer": 42}"#, context! { answer => "42" }),
            PASS
        );
        assert_eq!(
            score(&e, r#"{"answer": "42"}"#, context! { answer => "42" }),
            FAIL
        );
        assert_eq!(
            score(&e, r#"{"answer": "Paris"}"#, context! { answer => "Paris" }),
            PASS
        );
        assert_eq!(
            score(&e, r#"{"answer": ""}"#, context! { answer => "" }),
            PASS
        );
        let e = from_yaml("type: json_match\nexpected: \"{{ answer | tojson }}\"");
        let answer = serde_json::json!({"city": "Paris", "n": [1, 2]});
        let ctx = minijinja::Value::from_serialize(&answer);
        assert_eq!(
            score(
                &e,
                r#"{"n": [1, 2], "city": "Paris"}"#,
                context! { answer => ctx }
            ),
            PASS
        );
        // A quoted JSON string in the spec expects a string.
        let e = from_yaml("type: json_match\nexpected: '\"42\"'");
        assert_eq!(score(&e, r#""42""#, context! {}), PASS);
        assert_eq!(score(&e, "42", context! {}), FAIL);
        let e = from_yaml("type: json_match\npath: /answer\nexpected: null");
        assert_eq!(score(&e, r#"{"answer": null}"#, context! {}), PASS);
        assert_eq!(score(&e, r#"{}"#, context! {}), FAIL);
    }

    #[test]
    fn a_fail_says_why() {
        let e = from_yaml("type: json_match\npath: /a\nexpected: [1, 2]");
        let reason = |out: &str| {
            e.score(out, &context! {})
                .expect("scored")
                .reason
                .unwrap_or_default()
        };
        assert_eq!(
            reason("nope"),
            "the output is not JSON, nor holds a JSON object or array"
        );
        assert_eq!(reason("{}"), "the JSON has nothing at `/a`");
        assert_eq!(reason(r#"{"a": [2, 1]}"#), "found [2,1], expected [1,2]");
        assert_eq!(reason(r#"{"a": [1, 2]}"#), "");
        let long = format!(r#"{{"a": "{}"}}"#, "é".repeat(300));
        assert_eq!(reason(&long).chars().filter(|c| *c == 'é').count(), 99);
    }

    #[test]
    fn bad_arguments_fail_at_load() {
        assert_eq!(build_err("type: json_match").key, "expected");
        let err = build_err("type: json_match\nexpected: 1\npath: $.answer");
        assert_eq!(err.key, "path");
        assert_eq!(
            err.message,
            "path `$.answer` is not a JSON Pointer: it must start with `/`"
        );
        assert_eq!(
            err.hint.as_deref(),
            Some("write a JSON Pointer such as `/answer` (`/items/0` for an array element)")
        );
        assert_eq!(
            build_err("type: json_match\nexpected: 1\npath: /a~2").key,
            "path"
        );
        assert_eq!(
            build_err("type: json_match\nexpected: \"{{ x\"").key,
            "expected"
        );
    }

    proptest::proptest! {
        /// Reading arbitrary text (fences included) never panics, and a value
        /// equals itself after a round trip through text.
        #[test]
        fn reading_is_total(output in "(\\PC|\n|```|json|[{}\":1]){0,40}") {
            if let Some(v) = super::parse_output(&output) {
                let again = super::parse_output(&v.to_string());
                proptest::prop_assert!(again.is_some_and(|w| super::same(&v, &w)));
            }
        }
    }
}
