//! `matrix:`: one spec, many evaluations. Each axis maps a dotted path (the
//! paths `--set` takes) to a list of values; the run covers their cross
//! product, each cell one evaluation named `NAME/LABEL/LABEL`, checked as a
//! spec of its own. A cell records where it sits (path, label and value per
//! axis) in its stored spec text, which [`coordinates`] reads back for the
//! grid of `show`.

use std::path::Path;

use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use super::locate::{Locator, Step};
use super::overrides::Override;
use crate::diagnostic::Diagnostic;

/// The most cells one matrix may make.
pub const MAX_CELLS: usize = 10_000;
/// A scalar value this long or shorter labels itself.
const LABEL_CHARS: usize = 32;

/// One `--matrix PATH=V1,V2`, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct MatrixArg {
    /// As written.
    pub arg: String,
    path: String,
    values: Vec<Value>,
}

impl MatrixArg {
    /// Parses `PATH=V1,V2` (clap's value parser for `--matrix`): the values
    /// split at commas, each read as YAML, or a YAML list (`PATH=[a, "b, c"]`).
    pub fn parse(arg: &str) -> Result<MatrixArg, String> {
        let example = "write PATH=V1,V2, such as model.name=gpt-4o,gpt-4o-mini";
        let Some((path, text)) = arg.split_once('=') else {
            return Err(format!("`{arg}` has no `=`; {example}"));
        };
        let path = path.trim();
        if path.is_empty() || path.split('.').any(str::is_empty) {
            return Err(format!("`{path}` is not a dotted path; {example}"));
        }
        let values: Vec<Value> = if text.trim_start().starts_with('[') {
            serde_yaml::from_str(text).map_err(|e| {
                format!("`{text}` is not a YAML list ({e}); {example}, or PATH=[a, \"b, c\"]")
            })?
        } else {
            text.split(',')
                .map(|v| match v.trim() {
                    "" => Err(format!(
                        "`{arg}` has an empty value; {example} (a list: PATH=[a, \"b, c\"])"
                    )),
                    v => serde_yaml::from_str(v).map_err(|e| {
                        format!("the value `{v}` is not valid YAML ({e}); quote it: PATH='\"...\"'")
                    }),
                })
                .collect::<Result<_, _>>()?
        };
        if values.is_empty() {
            return Err(format!("`{arg}` has no values; {example}"));
        }
        Ok(MatrixArg {
            arg: arg.to_owned(),
            path: path.to_owned(),
            values,
        })
    }
}

/// Where one axis's values came from, for messages.
#[derive(Debug, Clone)]
enum Origin {
    /// `matrix:` in the spec; the key's place in the file.
    Spec { line: usize },
    /// `--matrix ARG`.
    Arg(String),
}

#[derive(Debug, Clone)]
struct Axis {
    path: String,
    origin: Origin,
    /// (label, value), labels unique.
    values: Vec<(String, Value)>,
}

/// A cell's place on one axis, as recorded with its evaluation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Coordinate {
    pub path: String,
    pub label: String,
    pub value: serde_json::Value,
}

/// The axes of a spec's `matrix:` and `--matrix`.
#[derive(Debug, Clone)]
pub struct Matrix {
    axes: Vec<Axis>,
}

/// One cell: its name's suffix, the overrides that make it, its coordinates.
pub struct Cell {
    pub suffix: String,
    pub overrides: Vec<Override>,
    pub coordinates: Vec<Coordinate>,
}

impl Matrix {
    /// Takes `matrix:` out of `doc` (a spec read from `path` as `text`) and
    /// adds or replaces axes with `args`; `None` when there is no axis.
    pub fn take(
        doc: &mut Value,
        path: &Path,
        text: &str,
        args: &[MatrixArg],
    ) -> Result<Option<Matrix>, Diagnostic> {
        let locator = Locator::new(text);
        let at = |steps: &[Step]| locator.key(steps).map_or((0, 0), |p| (p.line, p.column));
        let fail = |(line, column): (usize, usize), message: String, hint: &str| {
            Diagnostic::new(path, line, column, message)
                .with_source(text)
                .with_hint(hint.to_owned())
        };
        let mut axes = Vec::new();
        let taken = match doc {
            Value::Mapping(map) => map.remove("matrix"),
            _ => None,
        };
        match taken {
            None | Some(Value::Null) => {}
            Some(Value::Mapping(map)) => {
                for (key, spec) in map {
                    let Some(key) = key.as_str().map(str::to_owned) else {
                        return Err(fail(
                            at(&[Step::Key("matrix".into())]),
                            "a `matrix:` key must be a dotted path such as model.name".into(),
                            "write `PATH: [V1, V2]` under `matrix:`",
                        ));
                    };
                    let here = [Step::Key("matrix".into()), Step::Key(key.clone())];
                    let origin = Origin::Spec { line: at(&here).0 };
                    let (values, labels) = match spec {
                        Value::Sequence(values) => (values, None),
                        Value::Mapping(mut m) if m.contains_key("values") => {
                            let labels = m.remove("labels");
                            let values = m.remove("values");
                            if let Some(extra) = m.keys().next() {
                                let extra = serde_yaml::to_string(extra).unwrap_or_default();
                                return Err(fail(
                                    at(&here),
                                    format!(
                                        "matrix axis `{key}` has an unknown key `{}`",
                                        extra.trim()
                                    ),
                                    "an axis is a list, or {values: [...], labels: [...]}",
                                ));
                            }
                            let Some(Value::Sequence(values)) = values else {
                                return Err(fail(
                                    at(&here),
                                    format!("matrix axis `{key}`: `values` must be a list"),
                                    "write values: [V1, V2]",
                                ));
                            };
                            let labels = match labels {
                                None => None,
                                Some(Value::Sequence(l)) => Some(
                                    l.iter()
                                        .map(|v| scalar_text(v).unwrap_or_default())
                                        .collect::<Vec<_>>(),
                                ),
                                Some(_) => {
                                    return Err(fail(
                                        at(&here),
                                        format!(
                                            "matrix axis `{key}`: `labels` must be a list of names"
                                        ),
                                        "write labels: [short, long], one per value",
                                    ))
                                }
                            };
                            (values, labels)
                        }
                        _ => {
                            return Err(fail(
                                at(&here),
                                format!("matrix axis `{key}` must be a list of values"),
                                "write `PATH: [V1, V2]`, or {values: [V1, V2], labels: [a, b]}",
                            ))
                        }
                    };
                    axes.push(
                        Axis::new(key, origin, values, labels)
                            .map_err(|(m, h)| fail(at(&here), m, &h))?,
                    );
                }
            }
            Some(_) => {
                return Err(fail(
                    at(&[Step::Key("matrix".into())]),
                    "`matrix:` must be a mapping from dotted paths to lists of values".into(),
                    "write matrix: {model.name: [a, b], model.params.temperature: [0, 0.7]}",
                ))
            }
        }
        for arg in args {
            let axis = Axis::new(
                arg.path.clone(),
                Origin::Arg(arg.arg.clone()),
                arg.values.clone(),
                None,
            )
            .map_err(|(m, h)| Diagnostic::new(path, 0, 0, m).with_hint(h))?;
            match axes.iter_mut().find(|a| a.path == axis.path) {
                Some(same) => *same = axis,
                None => axes.push(axis),
            }
        }
        if axes.is_empty() {
            return Ok(None);
        }
        let cells = axes
            .iter()
            .try_fold(1usize, |n, a| n.checked_mul(a.values.len()))
            .filter(|n| *n <= MAX_CELLS);
        if cells.is_none() {
            let sizes: Vec<String> = axes.iter().map(|a| a.values.len().to_string()).collect();
            return Err(fail(
                at(&[Step::Key("matrix".into())]),
                format!(
                    "the matrix makes {} cells, more than {MAX_CELLS}",
                    sizes.join(" x ")
                ),
                "split it into several experiments, or use fewer values",
            ));
        }
        Ok(Some(Matrix { axes }))
    }

    /// How many cells the matrix makes.
    pub fn len(&self) -> usize {
        self.axes.iter().map(|a| a.values.len()).product()
    }

    /// Every cell, the first axis outermost.
    pub fn cells(&self) -> Vec<Cell> {
        let mut cells = Vec::with_capacity(self.len());
        let mut index = vec![0usize; self.axes.len()];
        loop {
            let mut cell = Cell {
                suffix: String::new(),
                overrides: Vec::new(),
                coordinates: Vec::new(),
            };
            for (axis, &i) in self.axes.iter().zip(&index) {
                let (label, value) = &axis.values[i];
                cell.suffix.push('/');
                cell.suffix.push_str(label);
                let shown = match &axis.origin {
                    Origin::Spec { line, .. } => {
                        format!(
                            "matrix `{}` value {} (`{label}`, line {line})",
                            axis.path,
                            i + 1
                        )
                    }
                    Origin::Arg(arg) => format!("`--matrix {arg}` value `{label}`"),
                };
                cell.overrides
                    .push(Override::at(&axis.path, value.clone(), shown));
                cell.coordinates.push(Coordinate {
                    path: axis.path.clone(),
                    label: label.clone(),
                    value: serde_json::to_value(value).unwrap_or(serde_json::Value::Null),
                });
            }
            cells.push(cell);
            // The last axis turns fastest.
            let mut k = self.axes.len();
            loop {
                if k == 0 {
                    return cells;
                }
                k -= 1;
                index[k] += 1;
                if index[k] < self.axes[k].values.len() {
                    break;
                }
                index[k] = 0;
            }
        }
    }
}

impl Axis {
    /// An axis of `values`, labelled by `labels` or by the values themselves;
    /// an error is (message, hint).
    fn new(
        path: String,
        origin: Origin,
        values: Vec<Value>,
        labels: Option<Vec<String>>,
    ) -> Result<Axis, (String, String)> {
        let first = path.split(['.', '[']).next().unwrap_or_default();
        if matches!(first, "name" | "matrix") {
            return Err((
                format!("`{path}` cannot be a matrix axis"),
                "each cell is named after the spec's name and its values' labels".into(),
            ));
        }
        if values.is_empty() {
            return Err((
                format!("matrix axis `{path}` has no values"),
                "give it a list of at least one value".into(),
            ));
        }
        let labels = match labels {
            Some(labels) if labels.len() != values.len() => {
                return Err((
                    format!(
                        "matrix axis `{path}` has {} values but {} labels",
                        values.len(),
                        labels.len()
                    ),
                    "give one label per value, in the same order".into(),
                ))
            }
            Some(labels) => labels,
            None => {
                let last = path
                    .rsplit(['.', '[', ']'])
                    .find(|s| !s.is_empty())
                    .unwrap_or("v");
                values
                    .iter()
                    .enumerate()
                    .map(|(i, v)| {
                        scalar_text(v)
                            .filter(|t| good_label(t))
                            .unwrap_or_else(|| format!("{last}{}", i + 1))
                    })
                    .collect()
            }
        };
        for (i, label) in labels.iter().enumerate() {
            if !good_label(label) {
                return Err((
                    format!("matrix axis `{path}`: the label `{label}` is not a short name"),
                    format!("a label has 1 to {LABEL_CHARS} characters, without `/`, spaces or control characters"),
                ));
            }
            if labels[..i].contains(label) {
                return Err((
                    format!("matrix axis `{path}` has the label `{label}` twice"),
                    "each value of an axis needs a label of its own (write `labels:`)".into(),
                ));
            }
        }
        Ok(Axis {
            path,
            origin,
            values: labels.into_iter().zip(values).collect(),
        })
    }
}

/// The text of a scalar value (`gpt-4o`, `0.7`, `true`).
fn scalar_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn good_label(label: &str) -> bool {
    let n = label.chars().count();
    (1..=LABEL_CHARS).contains(&n)
        && !label
            .chars()
            .any(|c| c == '/' || c.is_whitespace() || c.is_control())
}

/// The first line of the block [`record`] appends to a cell's spec text.
const MARKER: &str = "# dotevals: a cell of the matrix above, one axis a line:";
/// What starts each axis's line (a [`Coordinate`] as JSON follows).
const LINE: &str = "# axis ";

/// `spec_text` with the block that records `coordinates`.
pub fn record(spec_text: &str, coordinates: &[Coordinate]) -> String {
    let mut out = spec_text.to_owned();
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(MARKER);
    out.push('\n');
    for c in coordinates {
        out.push_str(LINE);
        out.push_str(&serde_json::to_string(c).unwrap_or_default());
        out.push('\n');
    }
    out
}

/// Where the evaluation of `spec_text` sits in its matrix; empty when it is
/// not a cell of one.
pub fn coordinates(spec_text: &str) -> Vec<Coordinate> {
    let Some(at) = spec_text.rfind(MARKER) else {
        return Vec::new();
    };
    spec_text[at + MARKER.len()..]
        .lines()
        .skip(1)
        .map_while(|l| l.strip_prefix(LINE))
        .filter_map(|j| serde_json::from_str(j).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(yaml: &str, args: &[&str]) -> Result<Option<Matrix>, Diagnostic> {
        let mut doc: Value = serde_yaml::from_str(yaml).unwrap();
        let args: Vec<MatrixArg> = args.iter().map(|a| MatrixArg::parse(a).unwrap()).collect();
        Matrix::take(&mut doc, Path::new("s.yaml"), yaml, &args)
    }

    #[test]
    fn cells_cover_the_cross_product_last_axis_fastest() {
        let yaml = "matrix:\n  model.name: [a, b]\n  prompt:\n    values: ['x {{ q }}', 'y {{ q }}', z]\n    labels: [px, py, pz]\n";
        let m = take(yaml, &[]).unwrap().unwrap();
        assert_eq!(m.len(), 6);
        let names: Vec<String> = m.cells().into_iter().map(|c| c.suffix).collect();
        assert_eq!(
            names,
            ["/a/px", "/a/py", "/a/pz", "/b/px", "/b/py", "/b/pz"]
        );
    }

    #[test]
    fn values_label_themselves_when_short() {
        let yaml = "matrix:\n  model.params.temperature: [0, 0.7]\n  prompt: ['a long prompt with spaces {{ q }}', b]\n";
        let m = take(yaml, &[]).unwrap().unwrap();
        let names: Vec<String> = m.cells().into_iter().map(|c| c.suffix).collect();
        assert_eq!(names[0], "/0/prompt1");
        assert_eq!(names[3], "/0.7/b");
    }

    #[test]
    fn a_command_line_axis_adds_or_replaces() {
        let yaml = "matrix:\n  model.name: [a, b]\n";
        let m = take(yaml, &["model.name=c,d,e", "model.params.seed=1,2"])
            .unwrap()
            .unwrap();
        assert_eq!(m.len(), 6);
        assert!(take("name: x\n", &[]).unwrap().is_none());
        let arg = MatrixArg::parse("prompt=[\"a, b\", c]").unwrap();
        assert_eq!(arg.values.len(), 2);
        assert!(MatrixArg::parse("model.name").is_err());
        assert!(MatrixArg::parse("model.name=a,,b").is_err());
    }

    #[test]
    fn bad_axes_are_refused_with_their_line() {
        let e = take("x: 1\nmatrix:\n  model.name: a\n", &[]).unwrap_err();
        assert_eq!(
            (e.line, e.message.as_str()),
            (3, "matrix axis `model.name` must be a list of values")
        );
        let e = take(
            "matrix:\n  model.name: {values: [a, b], labels: [x]}\n",
            &[],
        )
        .unwrap_err();
        assert!(e.message.contains("2 values but 1 labels"), "{}", e.message);
        let e = take("matrix:\n  model.name: [a, a]\n", &[]).unwrap_err();
        assert!(e.message.contains("twice"), "{}", e.message);
        let e = take("matrix:\n  name: [a, b]\n", &[]).unwrap_err();
        assert!(
            e.message.contains("cannot be a matrix axis"),
            "{}",
            e.message
        );
        let e = take("matrix:\n  a: [1,2,3,4,5,6,7,8,9,10]\n  b: [1,2,3,4,5,6,7,8,9,10]\n  c: [1,2,3,4,5,6,7,8,9,10]\n  d: [1,2,3,4,5,6,7,8,9,10,11]\n", &[]).unwrap_err();
        assert!(e.message.contains("more than 10000"), "{}", e.message);
    }

    #[test]
    fn coordinates_round_trip_through_the_spec_text() {
        let c = vec![Coordinate {
            path: "model.name".into(),
            label: "a".into(),
            value: serde_json::json!("a"),
        }];
        let text = record("name: s\n", &c);
        assert_eq!(coordinates(&text), c);
        let with_set = super::super::overrides::snapshot(&text, &[Override::parse("x=1").unwrap()]);
        assert_eq!(coordinates(&with_set), c);
        assert_eq!(super::super::overrides::recorded(&with_set), ["x=1"]);
        assert!(coordinates("name: s\n").is_empty());
    }
}
