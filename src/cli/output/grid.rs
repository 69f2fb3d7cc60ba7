//! The grid of a matrix experiment, as a table per evaluator: one axis
//! across, the others down the side; for people (a terminal table) and
//! for pull requests (Markdown).

use std::fmt::Write;

use tabled::builder::Builder;
use tabled::settings::Style;

use super::table::{printable, push_row};
use crate::human::{duration, p_value};
use crate::view::matrix::{CellView, MatrixView, Metric, ALPHA};

/// One evaluator's grid, laid out: the header and the rows of text cells.
struct Laid {
    evaluator: String,
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

/// How a cell reads: its figure, the best of its row, the baseline, and a
/// significant difference from the baseline.
struct Shown {
    figure: String,
    best: bool,
    baseline: bool,
    /// `-12.0 pts (p 0.001)`, when significant.
    difference: Option<String>,
}

fn shown(c: &CellView, m: &MatrixView) -> Shown {
    let figure = match m.metric {
        Metric::Score => match (c.mean, c.ci95) {
            (Some(mean), Some([lo, hi])) => {
                format!("{:.1}% ±{:.1}", 100.0 * mean, 50.0 * (hi - lo))
            }
            (Some(mean), None) => format!("{:.1}%", 100.0 * mean),
            _ => "–".into(),
        },
        Metric::P50 | Metric::Ttft => c.figure(m.metric).map_or("–".into(), duration),
        Metric::Throughput => c
            .figure(m.metric)
            .map_or("–".into(), |v| format!("{v:.1}/s")),
        Metric::Tokens => c.figure(m.metric).map_or("–".into(), |v| format!("{v:.1}")),
    };
    let difference = (m.metric == Metric::Score && c.significant)
        .then(|| {
            let d = c.difference?;
            let p = c.p_value?;
            Some(format!("{:+.1} pts (p {})", 100.0 * d, p_value(p)))
        })
        .flatten();
    Shown {
        figure,
        best: c.best_in_row,
        baseline: c.evaluation == m.baseline,
        difference,
    }
}

/// The grids, one per evaluator, each cell made text by `cell`.
fn lay_out(m: &MatrixView, cell: impl Fn(&Shown) -> String) -> Vec<Laid> {
    let labels_of = |path: &str| {
        m.axes
            .iter()
            .find(|a| a.path == path)
            .map(|a| a.labels.clone())
            .unwrap_or_default()
    };
    let columns: Vec<String> = match &m.columns {
        Some(path) => labels_of(path),
        None => vec![String::new()],
    };
    // Every combination of the row axes' labels, the first axis outermost.
    let mut row_keys: Vec<Vec<String>> = vec![Vec::new()];
    for path in &m.rows {
        row_keys = row_keys
            .into_iter()
            .flat_map(|key| {
                labels_of(path).into_iter().map(move |l| {
                    let mut k = key.clone();
                    k.push(l);
                    k
                })
            })
            .collect();
    }
    let mut evaluators: Vec<&str> = Vec::new();
    for c in &m.cells {
        if !evaluators.contains(&c.evaluator.as_str()) {
            evaluators.push(&c.evaluator);
        }
    }
    evaluators
        .into_iter()
        .map(|evaluator| {
            let mut header: Vec<String> = m.rows.clone();
            header.extend(match &m.columns {
                Some(_) => columns.clone(),
                None => vec![evaluator.to_owned()],
            });
            let rows = row_keys
                .iter()
                .filter_map(|key| {
                    let in_row = |c: &&CellView| {
                        c.evaluator == evaluator
                            && m.rows
                                .iter()
                                .zip(key)
                                .all(|(p, l)| c.labels.get(p) == Some(l))
                    };
                    let cells: Vec<&CellView> = m.cells.iter().filter(in_row).collect();
                    if cells.is_empty() {
                        return None;
                    }
                    let mut row = key.clone();
                    for column in &columns {
                        let found = cells.iter().find(|c| match &m.columns {
                            Some(p) => c.labels.get(p) == Some(column),
                            None => true,
                        });
                        row.push(found.map_or(String::new(), |c| cell(&shown(c, m))));
                    }
                    Some(row)
                })
                .collect();
            Laid {
                evaluator: evaluator.to_owned(),
                header,
                rows,
            }
        })
        .collect()
}

/// What the marks mean, and what the figures are.
fn legend(m: &MatrixView, best: &str) -> String {
    let what = match m.metric {
        Metric::Score => "mean score ± half its 95% interval",
        Metric::P50 => "median latency",
        Metric::Ttft => "median time to first token",
        Metric::Throughput => "samples per second",
        Metric::Tokens => "completion tokens per sample",
    };
    let of = if m.columns.is_some() {
        "its row"
    } else {
        "the axis"
    };
    let mut text = format!(
        "{what}; {best} best of {of}; (base) the baseline, {}",
        m.baseline
    );
    if m.metric == Metric::Score {
        let _ = write!(
            text,
            "; ±N pts: differs from the baseline at p < {ALPHA} (paired test, as `compare`)"
        );
    }
    text
}

/// The grids for a terminal.
pub fn table(m: &MatrixView) -> String {
    let mut out = String::new();
    let across = m
        .columns
        .as_deref()
        .map(|c| format!(" · {} across", printable(c)))
        .unwrap_or_default();
    let _ = writeln!(
        out,
        "matrix: {} cells · {} down{across}\n  {}",
        m.cells
            .iter()
            .map(|c| &c.evaluation)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        printable(&m.rows.join(", ")),
        legend(m, "*")
    );
    for laid in lay_out(m, |s| {
        let mut text = s.figure.clone();
        if s.best {
            text.push_str(" *");
        }
        if s.baseline {
            text.push_str(" (base)");
        }
        if let Some(d) = &s.difference {
            let _ = write!(text, " {d}");
        }
        text
    }) {
        let mut b = Builder::default();
        push_row(&mut b, &laid.header);
        for row in &laid.rows {
            push_row(&mut b, row);
        }
        let mut t = b.build();
        t.with(Style::rounded());
        let _ = writeln!(out, "\n{}\n{t}", printable(&laid.evaluator));
    }
    out
}

/// The grids as Markdown tables, for a pull request's comment.
pub fn markdown(m: &MatrixView) -> String {
    let mut out = format!("_{}_\n", md_escape(&legend(m, "**bold**")));
    for laid in lay_out(m, |s| {
        let mut text = if s.best {
            format!("**{}**", s.figure)
        } else {
            s.figure.clone()
        };
        if s.baseline {
            text.push_str(" (base)");
        }
        if let Some(d) = &s.difference {
            let _ = write!(text, " {d}");
        }
        text
    }) {
        let _ = writeln!(out, "\n#### {}\n", md_escape(&laid.evaluator));
        md_row(&mut out, &laid.header);
        md_row(&mut out, &vec!["---".to_owned(); laid.header.len()]);
        for row in &laid.rows {
            md_row(&mut out, row);
        }
    }
    out
}

/// One Markdown table row.
pub fn md_row(out: &mut String, cells: &[String]) {
    out.push('|');
    for c in cells {
        let _ = write!(out, " {} |", md_escape(c));
    }
    out.push('\n');
}

/// `text` safe in a Markdown table cell: pipes escaped, newlines as spaces,
/// control characters shown as escapes.
pub fn md_escape(text: &str) -> String {
    printable(text)
        .replace('|', "\\|")
        .replace(['\n', '\r'], " ")
}
