//! The grid of a matrix experiment, as a table per evaluator: one axis
//! across, the others down the side; for people (a terminal table) and
//! for pull requests (Markdown).

use std::fmt::Write;

use tabled::builder::Builder;
use tabled::settings::Style;

use super::table::{printable, push_row};
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
    /// `-12.0 pts (p < 0.001)`, when significant.
    difference: Option<String>,
}

fn shown(c: &CellView, m: &MatrixView) -> Shown {
    Shown {
        figure: c.figure_text(m.metric),
        best: c.best_in_row,
        baseline: c.evaluation == m.baseline,
        difference: (m.metric == Metric::Score)
            .then(|| c.difference_text())
            .flatten(),
    }
}

/// The grids, one per evaluator, each cell made text by `cell`.
fn lay_out(m: &MatrixView, cell: impl Fn(&Shown) -> String) -> Vec<Laid> {
    m.grids()
        .into_iter()
        .map(|g| {
            let mut header: Vec<String> = m.rows.clone();
            match &m.columns {
                Some(_) => header.extend(g.columns.iter().map(|c| c.to_string())),
                None => header.push(g.evaluator.to_owned()),
            }
            let rows = g
                .rows
                .iter()
                .map(|key| {
                    let mut row: Vec<String> = key.iter().map(|l| l.to_string()).collect();
                    for column in &g.columns {
                        let text =
                            g.at.get(&(key.clone(), *column))
                                .map_or(String::new(), |&i| cell(&shown(&m.cells[i], m)));
                        row.push(text);
                    }
                    row
                })
                .collect();
            Laid {
                evaluator: g.evaluator.to_owned(),
                header,
                rows,
            }
        })
        .collect()
}

/// What the marks mean, and what the figures are.
fn legend(m: &MatrixView, best: &str) -> String {
    let what = m.metric.what();
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
        m.evaluations(),
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
