//! `--set KEY=VALUE`: a spec field replaced by its dotted path before the
//! spec is checked, and the record of it kept in the stored spec text.
//!
//! The file is read as YAML, every override is applied in order, and the
//! merged document goes through [`super::from_text`], so it meets every check
//! a spec file does. A diagnostic about a path an override wrote names that
//! `--set` argument; one about any other path points at the line of the
//! original file. The stored spec text is the file as written plus a trailing
//! comment block with one `--set` argument a line (see [`snapshot`]), which
//! [`recorded`] reads back for `show`.

use std::path::Path;

use serde_yaml::{Mapping, Value};

use super::locate::{Locator, Pos, Step};
use super::{from_text, Evaluation};
use crate::diagnostic::Diagnostic;

/// One `--set KEY=VALUE`, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Override {
    /// As written: `model.name=gpt-4o-mini`.
    pub arg: String,
    /// The path's steps (`evaluators`, `0`, `threshold`); a number is an
    /// index where the document holds a list there, a key elsewhere.
    steps: Vec<String>,
    value: Value,
    /// A number as typed (`1e3`): written into the merged spec as is, so a
    /// text field reads `1e3` and a number field 1000, as in a spec file.
    raw: Option<String>,
    /// Who wrote it, for messages: `` `--set ARG` ``, or a matrix value.
    shown: String,
}

impl Override {
    /// Parses `KEY=VALUE` (clap's value parser for `--set`): KEY a dotted path
    /// (`evaluators.0.threshold`, or `evaluators[0].threshold`), VALUE YAML.
    pub fn parse(arg: &str) -> Result<Override, String> {
        let Some((key, text)) = arg.split_once('=') else {
            return Err(format!(
                "`{arg}` has no `=`; write KEY=VALUE, such as model.name=gpt-4o-mini"
            ));
        };
        let key = key.trim();
        if key.is_empty() {
            return Err(format!(
                "`{arg}` names no field before `=`; write KEY=VALUE, such as model.name=gpt-4o-mini"
            ));
        }
        let dotted = key.replace('[', ".").replace(']', "");
        let steps: Vec<String> = dotted.split('.').map(str::to_owned).collect();
        if steps.iter().any(String::is_empty) {
            return Err(format!(
                "`{key}` has an empty step; write the path with single dots, such as evaluators.0.threshold"
            ));
        }
        if text.trim_start().starts_with("{{") {
            return Err(format!(
                "the value `{text}` reads as YAML, not as a template; quote it: --set '{key}=\"{}\"'",
                text.trim()
            ));
        }
        let value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_yaml::from_str(text).map_err(|e| {
                format!(
                    "the value `{text}` is not valid YAML ({e}); quote it to pass it as a string: --set '{key}=\"...\"'"
                )
            })?
        };
        let raw = value.is_number().then(|| text.trim().to_owned());
        Ok(Override {
            arg: arg.to_owned(),
            steps,
            value,
            raw,
            shown: format!("`--set {arg}`"),
        })
    }

    /// `value` written at the dotted `path` (a matrix cell's value), named
    /// `shown` in messages.
    pub(super) fn at(path: &str, value: Value, shown: String) -> Override {
        let dotted = path.replace('[', ".").replace(']', "");
        Override {
            arg: format!("{path}=..."),
            steps: dotted.split('.').map(str::to_owned).collect(),
            value,
            raw: None,
            shown,
        }
    }

    /// True when a diagnostic at `path` is about what this override wrote.
    fn covers(&self, path: &[Step]) -> bool {
        self.steps.len() <= path.len()
            && self.steps.iter().zip(path).all(|(s, p)| match p {
                Step::Key(k) => s == k,
                Step::Index(i) => s.parse::<usize>().is_ok_and(|n| n == *i),
            })
    }

    /// Writes the value into `doc` (a number as the placeholder `mark`, for
    /// [`from_text_with`] to replace with its text); an error is (message, hint).
    fn apply(&self, doc: &mut Value, mark: &str) -> Result<(), (String, String)> {
        let value = match self.raw {
            Some(_) => Value::String(mark.to_owned()),
            None => self.value.clone(),
        };
        let mut node = doc;
        let mut walked = String::new();
        let last = self.steps.len() - 1;
        for (i, step) in self.steps.iter().enumerate() {
            while let Value::Tagged(tagged) = node {
                node = &mut tagged.value;
            }
            if i > 0 && node.is_null() {
                // `params:` with nothing after it: a mapping yet to be filled.
                *node = Value::Mapping(Mapping::new());
            }
            let here = if walked.is_empty() {
                step.clone()
            } else {
                format!("{walked}.{step}")
            };
            node = match node {
                Value::Mapping(map) => {
                    let key = Value::String(step.clone());
                    if i == last {
                        map.insert(key, value);
                        return Ok(());
                    }
                    map.entry(key).or_insert(Value::Null)
                }
                Value::Sequence(items) => {
                    let len = items.len();
                    let range = match len {
                        0 => "the list is empty".to_owned(),
                        1 => "its only item is 0".to_owned(),
                        n => format!("its items are 0 to {}", n - 1),
                    };
                    let whole = format!("or set the whole list as YAML: --set '{walked}=[...]'");
                    let Ok(index) = step.parse::<usize>() else {
                        return Err((
                            format!("`{walked}` is a list, so `{step}` must be an item's index"),
                            format!("address an item by its index ({range}), such as {walked}.0.{step}; {whole}"),
                        ));
                    };
                    if index >= len {
                        return Err((
                            format!(
                                "`{walked}` has {len} item{}, so there is no `{here}`",
                                if len == 1 { "" } else { "s" }
                            ),
                            format!(
                                "use an index in range ({range}); to add an item, {}",
                                &whole[3..]
                            ),
                        ));
                    }
                    if i == last {
                        items[index] = value;
                        return Ok(());
                    }
                    &mut items[index]
                }
                scalar => {
                    let shown = serde_yaml::to_string(scalar)
                        .map(|s| s.trim_end().to_owned())
                        .unwrap_or_default();
                    return Err((
                        format!(
                            "`{walked}` is a single value (`{shown}`), not a mapping or a list, so it has no `{step}`"
                        ),
                        format!(
                            "set `{walked}` itself (--set '{walked}=VALUE'), or replace it with a mapping: --set '{walked}={{{step}: ...}}'"
                        ),
                    ));
                }
            };
            walked = here;
        }
        Ok(())
    }
}

/// Checks the spec `text` read from `path` with `overrides` applied in order.
pub(super) fn from_text_with(
    path: &Path,
    text: String,
    overrides: &[Override],
    options: super::Options,
) -> Result<Evaluation, Diagnostic> {
    let doc = read_doc(path, &text)?;
    let stored = snapshot(&text, overrides);
    check_with(path, &text, doc, overrides, &stored, options)
}

/// The spec `text` read from `path` as a YAML mapping, for overrides to
/// change; one that does not read as a mapping fails as it would without them.
pub(super) fn read_doc(path: &Path, text: &str) -> Result<Value, Diagnostic> {
    let doc = if Locator::new(text).too_deep().is_some() {
        None
    } else {
        match serde_yaml::from_str::<Value>(text) {
            Ok(Value::Null) => Some(Value::Mapping(Mapping::new())),
            Ok(doc @ Value::Mapping(_)) => Some(doc),
            _ => None,
        }
    };
    match doc {
        Some(doc) => Ok(doc),
        None => from_text(path, text.to_owned()).and_then(|_| {
            Err(
                Diagnostic::new(path, 0, 0, "the spec is not a YAML mapping").with_hint(
                    "`--set` and `matrix:` change the keys of a spec written as `key: value` lines",
                ),
            )
        }),
    }
}

/// Checks `doc` (the spec `text` read from `path`) with `overrides` applied
/// in order; `stored` is the text to record (see [`snapshot`]).
pub(super) fn check_with(
    path: &Path,
    text: &str,
    mut doc: Value,
    overrides: &[Override],
    stored: &str,
    options: super::Options,
) -> Result<Evaluation, Diagnostic> {
    // Ended by a letter, so mark 1 is no prefix of mark 10.
    let mark = |i: usize| format!("dotevals-set-number-{i}-n");
    for (i, o) in overrides.iter().enumerate() {
        o.apply(&mut doc, &mark(i)).map_err(|(message, hint)| {
            Diagnostic::new(path, 0, 0, format!("{}: {message}", o.shown)).with_hint(hint)
        })?;
    }
    let mut merged = serde_yaml::to_string(&doc).map_err(|e| {
        Diagnostic::new(
            path,
            0,
            0,
            format!("cannot write the spec with its `--set` values: {e}"),
        )
    })?;
    for (i, o) in overrides.iter().enumerate() {
        if let Some(raw) = &o.raw {
            merged = merged.replace(&mark(i), raw);
        }
    }
    match super::from_text_with_options(path, merged.clone(), options) {
        Ok(mut eval) => {
            eval.spec_text = eval.secrets.scrub(stored).into_owned();
            Ok(eval)
        }
        Err(d) => Err(relocate(d, path, text, &merged, overrides)),
    }
}

/// Moves a diagnostic about the merged document to where the user wrote the
/// thing at fault: the `--set` argument that wrote its path (the last one,
/// when several did), or the same path in the original file.
fn relocate(
    d: Diagnostic,
    path: &Path,
    original: &str,
    merged: &str,
    overrides: &[Override],
) -> Diagnostic {
    let found = (d.line > 0)
        .then(|| {
            Locator::new(merged).path_at(Pos {
                line: d.line,
                column: d.column.max(1),
            })
        })
        .flatten();
    let Some((steps, at_key)) = found else {
        // About the whole spec (or a place the merged text alone has).
        let mut d = Diagnostic::new(path, 0, 0, d.message).with_hint_opt(d.hint);
        d.message += &format!(" (with {})", args(overrides));
        return d;
    };
    // A key the file does not have, written by an override: that argument's
    // (the merged text puts the key wherever it likes).
    let unknown = d
        .message
        .strip_prefix("unknown key `")
        .and_then(|m| m.split('`').next());
    if let Some(o) = unknown.and_then(|k| {
        overrides
            .iter()
            .rev()
            .find(|o| o.steps.iter().any(|s| s == k))
    }) {
        return Diagnostic::new(path, 0, 0, format!("{}: {}", o.shown, d.message))
            .with_hint_opt(d.hint);
    }
    if let Some(o) = overrides.iter().rev().find(|o| o.covers(&steps)) {
        return Diagnostic::new(path, 0, 0, format!("{}: {}", o.shown, d.message))
            .with_hint_opt(d.hint);
    }
    let locator = Locator::new(original);
    let pos = if at_key {
        locator.key(&steps)
    } else {
        locator.value(&steps)
    };
    let (line, column) = pos.map_or((0, 0), |p| (p.line, p.column));
    Diagnostic::new(path, line, column, d.message)
        .with_hint_opt(d.hint)
        .with_source(original)
}

/// A diagnostic about the value at `key` (`prompt`, `evaluators[0].expected`)
/// of a loaded spec, found after its checks (validate's rendered rows): at the
/// `--set` argument recorded in `spec_text` that wrote it, else at its line.
pub fn at_value(spec_path: &Path, spec_text: &str, key: &str, message: String) -> Diagnostic {
    let steps = super::locate::parse_path(key);
    let recorded = recorded(spec_text);
    if let Some(arg) = recorded
        .iter()
        .rev()
        .find(|arg| Override::parse(arg).is_ok_and(|o| o.covers(&steps)))
    {
        return Diagnostic::new(spec_path, 0, 0, format!("`--set {arg}`: {message}"));
    }
    let pos = Locator::new(spec_text).value(&steps);
    let (line, column) = pos.map_or((0, 0), |p| (p.line, p.column));
    Diagnostic::new(spec_path, line, column, message).with_source(spec_text)
}

/// `--set a=1 --set b=2`, for messages.
fn args(overrides: &[Override]) -> String {
    overrides
        .iter()
        .map(|o| o.shown.clone())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The first line of the block [`snapshot`] appends.
const MARKER: &str = "# dotevals: applied over the spec above, one `--set KEY=VALUE` a line:";
/// What starts each argument's line (the argument follows as a JSON string).
const LINE: &str = "# --set ";

/// The spec text to store: `text` as written, then a comment block listing
/// the `--set` arguments as JSON strings (a value may hold a newline).
pub fn snapshot(text: &str, overrides: &[Override]) -> String {
    if overrides.is_empty() {
        return text.to_owned();
    }
    let mut out = text.to_owned();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(MARKER);
    out.push('\n');
    for o in overrides {
        let quoted = serde_json::to_string(&o.arg).unwrap_or_default();
        out.push_str(&format!("{LINE}{quoted}\n"));
    }
    out
}

/// The `--set` arguments recorded in a stored spec text by [`snapshot`], in
/// the order they were applied; none when it has no such block.
pub fn recorded(spec_text: &str) -> Vec<String> {
    let Some(at) = spec_text.rfind(MARKER) else {
        return Vec::new();
    };
    if at > 0 && !spec_text[..at].ends_with('\n') {
        return Vec::new();
    }
    let block = spec_text[at + MARKER.len()..].lines().skip(1);
    let mut args = Vec::new();
    for line in block.filter(|l| !l.trim().is_empty()) {
        match line
            .strip_prefix(LINE)
            .and_then(|q| serde_json::from_str::<String>(q).ok())
        {
            Some(arg) => args.push(arg),
            None => return Vec::new(),
        }
    }
    args
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(doc: &str, arg: &str) -> Result<String, (String, String)> {
        let mut doc: Value = serde_yaml::from_str(doc).unwrap();
        let o = Override::parse(arg).unwrap();
        o.apply(&mut doc, "mark")?;
        let text = serde_yaml::to_string(&doc).unwrap();
        Ok(match &o.raw {
            Some(raw) => text.replace("mark", raw),
            None => text,
        })
    }

    #[test]
    fn writes_keys_items_and_new_keys() {
        let doc = "model:\n  name: a\n  params: {t: 1}\nevaluators:\n- type: x\n- type: y\n";
        assert!(set(doc, "model.name=b").unwrap().contains("name: b"));
        assert!(set(doc, "model.params.seed=1").unwrap().contains("seed: 1"));
        assert!(set(doc, "model.extra.deep=1").unwrap().contains("deep: 1"));
        let out = set(doc, "evaluators[1].type=z").unwrap();
        assert!(out.contains("type: x") && out.contains("type: z"), "{out}");
        assert!(set(doc, "model.params.stop=[a, b]")
            .unwrap()
            .contains("- a"));
        assert!(set(doc, "model.name=\"001\"").unwrap().contains("'001'"));
    }

    #[test]
    fn refuses_out_of_range_and_scalars() {
        let doc = "model:\n  name: a\nevaluators:\n- type: x\n";
        let (m, h) = set(doc, "evaluators.3.type=y").unwrap_err();
        assert_eq!(m, "`evaluators` has 1 item, so there is no `evaluators.3`");
        assert!(h.contains("its only item is 0"), "{h}");
        let (m, _) = set(doc, "evaluators.first=y").unwrap_err();
        assert!(m.contains("is a list"), "{m}");
        let (m, h) = set(doc, "model.name.x=1").unwrap_err();
        assert_eq!(
            m,
            "`model.name` is a single value (`a`), not a mapping or a list, so it has no `x`"
        );
        assert!(h.contains("--set 'model.name=VALUE'"), "{h}");
    }

    #[test]
    fn parses_arguments() {
        assert!(Override::parse("model.name")
            .unwrap_err()
            .contains("no `=`"));
        assert!(Override::parse("=1").is_err());
        assert!(Override::parse("a..b=1").is_err());
        assert!(Override::parse("a=[")
            .unwrap_err()
            .contains("not valid YAML"));
        assert_eq!(Override::parse("a=").unwrap().value, Value::Null);
        assert_eq!(
            Override::parse("a=b=c").unwrap().value,
            Value::String("b=c".into())
        );
    }

    #[test]
    fn snapshot_round_trips() {
        let sets = ["model.name=x".to_owned(), "prompt=two\nlines".to_owned()];
        let parsed: Vec<Override> = sets.iter().map(|s| Override::parse(s).unwrap()).collect();
        let text = snapshot("name: a", &parsed);
        assert!(text.starts_with("name: a\n# dotevals"), "{text}");
        assert_eq!(recorded(&text), sets);
        assert_eq!(snapshot("name: a\n", &[]), "name: a\n");
        assert!(recorded("name: a\n# --set \"x=1\"\n").is_empty());
    }
}
