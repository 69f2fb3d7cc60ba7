//! YAML text to the serde mirror [`RawSpec`], with serde's errors moved to
//! the line and column they are about and given did-you-mean hints.

use std::path::Path;

use super::locate::{self, parse_path, Locator};
use super::raw::RawSpec;
use crate::diagnostic::{did_you_mean, Diagnostic};
use crate::evaluators::{self, EntryError};

/// YAML to [`RawSpec`], with serde's errors moved to the right place and given hints.
pub(super) fn parse(path: &Path, text: &str, locator: &Locator) -> Result<RawSpec, Diagnostic> {
    if text.trim().is_empty() {
        return Err(Diagnostic::new(path, 0, 0, "the spec is empty").with_hint(
            "a spec needs at least `dataset`, `model` and `prompt`; see evals/sentiment.yaml",
        ));
    }
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|err| {
        let mut key_path = err.path().to_string();
        let mut steps = parse_path(&key_path);
        let inner = err.inner();
        let mut message = strip_location(&inner.to_string());
        // Inside an evaluator entry: its own refusal, or serde's about one of its keys.
        match evaluators::entry_error(&steps, &inner.to_string()) {
            Some((entry, EntryError::Arg { key, message, hint })) => {
                let steps = parse_path(&format!("{entry}.{key}"));
                let (line, column) = locator
                    .key(&steps)
                    .or_else(|| locate::find_key_text(text, &steps))
                    .map_or((0, 0), |p| (p.line, p.column));
                return Diagnostic::new(path, line, column, message)
                    .with_hint_opt(hint)
                    .with_source(text);
            }
            Some((entry, EntryError::At { key, message: m })) => {
                key_path = key.map_or(entry.clone(), |k| format!("{entry}.{k}"));
                steps = parse_path(&key_path);
                message = m;
            }
            None => {}
        }
        let (message, hint, pos) = if let Some((word, expected)) = unknown_name(&message) {
            let is_field = message.starts_with("unknown field");
            let hint = did_you_mean(&word, expected.iter().map(String::as_str))
                .map(|m| format!("did you mean `{m}`?"))
                .unwrap_or_else(|| format!("expected one of: {}", expected.join(", ")));
            // For an unknown field the path ends with the field itself.
            let parent = if is_field {
                &steps[..steps.len().saturating_sub(1)]
            } else {
                &steps[..]
            };
            let place = match parent_path(&key_path, is_field) {
                Some(p) => format!(" in `{p}`"),
                None => String::new(),
            };
            let what = if is_field { "key" } else { "value" };
            let pos = if is_field {
                locator.key(&steps)
            } else {
                locator.value(parent)
            };
            (format!("unknown {what} `{word}`{place}"), Some(hint), pos)
        } else {
            let place = if steps.is_empty() {
                String::new()
            } else {
                format!("`{key_path}`: ")
            };
            let hint =
                (key_path == "concurrency" && message.contains("a mapping of keys")).then(|| {
                    "write e.g. `concurrency: {strategy: sliding_window, max_concurrency: 16}`, \
                 `{strategy: adaptive}` or `{strategy: sequential}`"
                        .to_owned()
                });
            (format!("{place}{message}"), hint, locator.value(&steps))
        };
        let (line, column) = match (inner.location(), pos) {
            (_, Some(p)) if !steps.is_empty() || hint.is_some() => (p.line, p.column),
            (Some(l), _) => (l.line(), l.column()),
            (None, Some(p)) => (p.line, p.column),
            (None, None) => (0, 0),
        };
        Diagnostic::new(path, line, column, message)
            .with_hint_opt(hint)
            .with_source(text)
    })
}

/// serde_yaml prefixes a path ("model.latency: ...") and appends " at line L
/// column C"; we print both ourselves.
fn strip_location(message: &str) -> String {
    let mut text = match message.find(" at line ") {
        Some(i) => &message[..i],
        None => message,
    };
    if let Some((prefix, rest)) = text.split_once(": ") {
        if !prefix.contains(char::is_whitespace) {
            text = rest;
        }
    }
    plain_types(text)
}

/// serde's message with Rust's type names said in YAML's words: `expected
/// u32` is `expected a whole number (0 or more)`, `expected struct
/// RawDataset` is `expected a mapping of keys`.
fn plain_types(message: &str) -> String {
    let Some((head, expected)) = message.split_once("expected ") else {
        return message.to_owned();
    };
    let said = match expected.trim() {
        "u8" | "u16" | "u32" | "u64" | "usize" => "a whole number (0 or more)",
        "i8" | "i16" | "i32" | "i64" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "a boolean" | "bool" => "true or false",
        "a string" | "a borrowed string" => "text",
        t if t.starts_with("struct ") || t.starts_with("a map") => "a mapping of keys",
        t if t.starts_with("a sequence") => "a list",
        _ => return message.to_owned(),
    };
    format!("{head}expected {said}")
}

/// The path of the mapping that holds an unknown field (`model` for `model.latancy`).
fn parent_path(path: &str, is_field: bool) -> Option<&str> {
    let parent = if is_field {
        path.rsplit_once('.').map(|(p, _)| p)?
    } else {
        path
    };
    (!parent.is_empty() && parent != "?").then_some(parent)
}

/// From "unknown field `x`, expected one of `a`, `b`" (or "unknown variant"),
/// the unknown word and the expected ones.
fn unknown_name(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message
        .strip_prefix("unknown field ")
        .or_else(|| message.strip_prefix("unknown variant "))?;
    let mut ticks = rest.split('`').skip(1).step_by(2);
    let word = ticks.next()?.to_owned();
    Some((word, ticks.map(str::to_owned).collect()))
}
