//! A matrix experiment's grid as a heat map: per evaluator, a table laid
//! out as `show` lays out its grid (one axis across, the others down the
//! side), each cell coloured by its mean score on a light-to-dark blue
//! scale (grey: no score), with its figure, its marks (best of its row,
//! the baseline) and a significant difference from the baseline as text.
//!
//! The table is plain HTML. What a click on a cell lists (the samples whose
//! verdict differs from the baseline cell's, paired by sample id and
//! repeat) is worked out here and embedded as JSON in `<script
//! type="application/json" id="matrix-data">` (every `<` written
//! `\u003c`), which `page.js` parses on the first click only, so a grid of
//! thousands of cells costs the page nothing at load.
//!
//! Shape (read by `page.js`): `{"baseline": NAME, "cap": N, "base": [[id,
//! output], ...], "cells": [{"evaluation", "evaluator", "base"?,
//! "paired", "differ", "rows": [[b, base_verdict, base_score, verdict,
//! score, output], ...], "note"?}]}`: one entry per cell of the grid, in
//! the order of `MatrixView.cells` (a cell's `data-i`); `b` indexes `base`
//! (the baseline's sample, written once however many cells list it); at
//! most `cap` rows, `differ` counting them all.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::{self, Write};

use serde::Serialize;

use super::samples::ScriptSafe;
use super::{escape, Evaluation, Experiment};
use crate::store::SampleRow;
use crate::view::matrix::{Grid, MatrixView, Metric, ALPHA};

/// The most disagreeing samples listed per cell.
pub const CAP: usize = 200;
/// Outputs are cut to this many characters.
const OUTPUT_CHARS: usize = 300;
/// Steps of the colour scale (`h0`..`h9` in `page.css`).
const STEPS: usize = 10;

/// Writes the heat map section of `m`, a matrix experiment's grid.
pub fn write(out: &mut impl Write, m: &MatrixView) -> io::Result<()> {
    let mut html = String::with_capacity(256 + 96 * m.cells.len());
    let across = m
        .columns
        .as_deref()
        .map(|c| format!(" · {} across", escape(c)))
        .unwrap_or_default();
    let _ = write!(
        html,
        r#"<section id="matrix" class="matrix"><h2>Matrix</h2><p class="meta">{} cells · {} down{across} · baseline <span class="base-name">{}</span></p>"#,
        m.evaluations(),
        escape(&m.rows.join(", ")),
        escape(&m.baseline),
    );
    legend(&mut html, m);
    let range = range(m);
    for grid in m.grids() {
        table(&mut html, m, &grid, range);
    }
    html.push_str("</section>");
    out.write_all(html.as_bytes())
}

/// Writes what a click on a cell of `m` lists, as JSON in a script element;
/// below the rest of the page, so its bytes never delay the grid.
pub fn write_data(out: &mut impl Write, m: &MatrixView, x: &Experiment) -> io::Result<()> {
    out.write_all(br#"<script type="application/json" id="matrix-data">"#)?;
    serde_json::to_writer(&mut ScriptSafe(&mut *out), &data(m, x))?;
    out.write_all(b"</script>")
}

/// The lowest and highest figure, for metrics other than the score (whose
/// scale is 0 to 100%).
fn range(m: &MatrixView) -> Option<(f64, f64)> {
    let figures = m.cells.iter().filter_map(|c| c.figure(m.metric));
    figures.fold(None, |r, v| match r {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// The colour step of a figure.
fn step(m: &MatrixView, v: f64, range: Option<(f64, f64)>) -> usize {
    let t = match (m.metric, range) {
        (Metric::Score, _) => v,
        (_, Some((lo, hi))) if hi > lo => (v - lo) / (hi - lo),
        _ => 1.0,
    };
    ((t.clamp(0.0, 1.0) * STEPS as f64) as usize).min(STEPS - 1)
}

/// How to read the grids: what the colours and marks mean, and what a
/// click shows; then the colour scale's key.
fn legend(html: &mut String, m: &MatrixView) {
    let colours = match m.metric {
        Metric::Score => "light (0%) to dark blue (100%)",
        _ => "light (lowest) to dark blue (highest)",
    };
    let _ = write!(
        html,
        r#"<p class="legend">Each cell shows its {what}, coloured {colours} (grey: no score). <b>★</b> marks the best cell of its row, <b>(base)</b> the baseline, <span class="base-name">{baseline}</span>, which every other cell is compared with sample by sample"#,
        what = m.metric.what(),
        baseline = escape(&m.baseline),
    );
    if m.metric == Metric::Score {
        let _ = write!(
            html,
            "; <q>±N pts (p …)</q> under a figure: it differs from the baseline's at p ≤ {ALPHA} (paired test, as <code>compare</code>)"
        );
    }
    html.push_str(". Click a cell (or Tab to the grid, move with the arrow keys and press Enter) to list below it the samples whose verdict differs from the baseline's.</p>");
    if m.metric != Metric::Score {
        return;
    }
    html.push_str(r#"<p class="scale"><span class="meta">mean score:</span> "#);
    for k in 0..STEPS {
        let _ = write!(
            html,
            r#"<span class="h{k}">{}–{}%</span>"#,
            k * 100 / STEPS,
            (k + 1) * 100 / STEPS
        );
    }
    html.push_str(r#" <span class="na">no score</span></p>"#);
}

/// A cell as shown: its figure, marks and significant difference.
struct Shown {
    i: usize,
    figure: String,
    best: bool,
    base: bool,
    /// `-12.0 pts (p 0.003)`, when significant.
    difference: Option<String>,
}

impl Shown {
    fn of(m: &MatrixView, i: usize) -> Shown {
        let c = &m.cells[i];
        let difference = (m.metric == Metric::Score)
            .then(|| c.difference_text())
            .flatten();
        Shown {
            i,
            figure: c.figure_text(m.metric),
            best: c.best_in_row,
            base: c.evaluation == m.baseline,
            difference,
        }
    }

    /// Its width in characters: the longer of its lines (the difference's is set
    /// smaller).
    fn width(&self) -> usize {
        let first = self.figure.chars().count()
            + if self.best { 2 } else { 0 }
            + if self.base { 7 } else { 0 };
        let second = self
            .difference
            .as_ref()
            .map_or(0, |d| d.chars().count() * 6 / 7 + 1);
        first.max(second)
    }
}

/// A width of `chars` characters in `em`, enough for digits in bold
/// (widths are in `em`, not `ch`: a bold cell's `ch` is wider).
fn em(chars: usize) -> String {
    format!("{:.1}", chars as f64 * 0.62)
}

/// `text`'s width in characters, within what a column gets (longer labels
/// wrap).
fn chars(text: &str) -> usize {
    text.chars().count().clamp(3, 24)
}

/// One evaluator's grid as a table. Its rows are laid out as flex boxes of
/// fixed-width cells (widths worked out here from the texts) rather than
/// by the table algorithm, so that a row out of view skips layout and
/// paint (`content-visibility`) and a grid of thousands of cells costs
/// the page little more than one of four.
fn table(html: &mut String, m: &MatrixView, g: &Grid<'_>, range: Option<(f64, f64)>) {
    let rows: Vec<Vec<Option<Shown>>> = g
        .rows
        .iter()
        .map(|key| {
            g.columns
                .iter()
                .map(|column| g.at.get(&(key.clone(), *column)).map(|&i| Shown::of(m, i)))
                .collect()
        })
        .collect();
    let headers: Vec<&str> = match m.columns {
        Some(_) => g.columns.clone(),
        None => vec![g.evaluator],
    };
    let cell_width = rows
        .iter()
        .flatten()
        .flatten()
        .map(Shown::width)
        .chain(headers.iter().map(|h| chars(h)))
        .max()
        .unwrap_or(6)
        .clamp(6, 28)
        + 1;
    let side: Vec<usize> = m
        .rows
        .iter()
        .enumerate()
        .map(|(j, path)| {
            g.rows
                .iter()
                .map(|key| chars(key[j]))
                .chain([chars(path)])
                .max()
                .unwrap_or(3)
                + 1
        })
        .collect();
    let _ = write!(
        html,
        r#"<div class="heatmap"><table class="heat" role="grid" style="--w:{}em"><caption><b>{}</b>: {} per cell; <b>(base)</b> the baseline, <span class="base-name">{}</span></caption><thead>"#,
        em(cell_width),
        escape(g.evaluator),
        m.metric.what(),
        escape(&m.baseline),
    );
    let side_cell = |html: &mut String, tag: &str, attrs: &str, width: usize, text: &str| {
        let _ = write!(
            html,
            r#"<{tag} {attrs}style="width:{}em">{}</{tag}>"#,
            em(width),
            escape(text)
        );
    };
    if let Some(path) = &m.columns {
        html.push_str("<tr>");
        // Under the side's headers (their widths and their gaps).
        let _ = write!(
            html,
            r#"<td class="side" style="width:calc({}em + {}px)"></td><th scope="colgroup" colspan="{}" class="axis">{} →</th></tr>"#,
            em(side.iter().sum()),
            18 * side.len().saturating_sub(1),
            g.columns.len(),
            escape(path)
        );
    }
    html.push_str("<tr>");
    for (path, width) in m.rows.iter().zip(&side) {
        side_cell(html, "th", r#"scope="col" class="axis" "#, *width, path);
    }
    for header in &headers {
        let _ = write!(html, r#"<th scope="col">{}</th>"#, escape(header));
    }
    html.push_str("</tr></thead><tbody>");
    // One stop for Tab per grid, on its first cell: the arrow keys move on.
    let mut first = true;
    for (key, cells) in g.rows.iter().zip(&rows) {
        html.push_str("<tr>");
        for (label, width) in key.iter().zip(&side) {
            side_cell(html, "th", r#"scope="row" "#, *width, label);
        }
        for shown in cells {
            match shown {
                Some(shown) => {
                    cell(html, m, shown, range, first);
                    first = false;
                }
                None => html.push_str(r#"<td class="c empty"></td>"#),
            }
        }
        html.push_str("</tr>");
    }
    html.push_str(
        r#"</tbody></table><div class="matrix-detail" aria-live="polite" hidden></div></div>"#,
    );
}

/// One cell: `<td>` with its colour step, marks and figure; `data-i` its
/// index in the data; the `first` of its grid is where Tab lands.
fn cell(html: &mut String, m: &MatrixView, s: &Shown, range: Option<(f64, f64)>, first: bool) {
    let mut class = match m.cells[s.i].figure(m.metric) {
        Some(v) => format!("c h{}", step(m, v, range)),
        None => "c na".to_owned(),
    };
    for (on, name) in [
        (s.best, " best"),
        (s.base, " base"),
        (s.difference.is_some(), " sig"),
    ] {
        if on {
            class.push_str(name);
        }
    }
    let _ = write!(
        html,
        r#"<td class="{class}"{} data-i="{}">{}"#,
        if first { r#" tabindex="0""# } else { "" },
        s.i,
        s.figure
    );
    if s.best {
        html.push_str(r#" <b class="mk">★</b>"#);
    }
    if s.base {
        html.push_str(r#" <b class="mk">(base)</b>"#);
    }
    if let Some(d) = &s.difference {
        let _ = write!(html, r#"<span class="d">{}</span>"#, escape(d));
    }
    html.push_str("</td>");
}

/// A verdict: `passed`, `failed`, `not scored` or `errored`, and the score.
type Verdict = (&'static str, Option<f64>);

fn verdict(s: &SampleRow, evaluator: Option<usize>) -> Verdict {
    if s.error_kind.is_some() {
        return ("errored", None);
    }
    match evaluator
        .and_then(|k| s.scores.get(k))
        .and_then(Option::as_ref)
    {
        Some(r) if r.passed => ("passed", Some(r.value)),
        Some(r) => ("failed", Some(r.value)),
        None => ("not scored", None),
    }
}

/// What a sample answered (or its error), cut to [`OUTPUT_CHARS`].
fn output(s: &SampleRow) -> Option<String> {
    let text = match (&s.output, &s.error_kind) {
        (_, Some(kind)) => format!("{kind}: {}", s.error.as_deref().unwrap_or_default()),
        (Some(o), None) => o.clone(),
        (None, None) => return None,
    };
    Some(truncate(&text, OUTPUT_CHARS))
}

fn truncate(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

/// A sample's id, with its repeat when it was sent more than once.
fn id(s: &SampleRow) -> String {
    match s.repeat {
        0 => s.key.clone(),
        r => format!("{} (repeat {})", s.key, r + 1),
    }
}

#[derive(Serialize)]
struct Data<'a> {
    baseline: &'a str,
    cap: usize,
    base: Vec<(String, Option<String>)>,
    cells: Vec<CellData<'a>>,
}

/// A sample whose verdict differs: the baseline's sample (its index in
/// `Data.base`), its verdict and score there, and here, and its output here.
type Differing = (
    usize,
    &'static str,
    Option<f64>,
    &'static str,
    Option<f64>,
    Option<String>,
);

#[derive(Serialize)]
struct CellData<'a> {
    evaluation: &'a str,
    evaluator: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    base: bool,
    /// Samples found in both.
    paired: usize,
    /// Samples whose verdicts differ (all of them, not only those listed).
    differ: usize,
    rows: Vec<Differing>,
    #[serde(skip_serializing_if = "Option::is_none")]
    note: Option<String>,
}

/// The disagreement lists of every cell of `m`.
fn data<'a>(m: &'a MatrixView, x: &'a Experiment) -> Data<'a> {
    let by_name: HashMap<&str, &Evaluation> = x
        .evaluations
        .iter()
        .map(|e| (e.view.name.as_str(), e))
        .collect();
    let baseline = by_name.get(m.baseline.as_str()).copied();
    let base_samples: HashMap<(&str, u32), usize> = baseline
        .map(|b| {
            b.samples
                .iter()
                .enumerate()
                .map(|(i, s)| ((s.key.as_str(), s.repeat), i))
                .collect()
        })
        .unwrap_or_default();
    // Baseline samples listed so far: their index in `base`.
    let mut listed: BTreeMap<usize, usize> = BTreeMap::new();
    let mut base = Vec::new();
    let index = |e: &Evaluation, name: &str| e.view.evaluators.iter().position(|v| v.name == name);
    let cells = m
        .cells
        .iter()
        .map(|c| {
            let mut cell = CellData {
                evaluation: &c.evaluation,
                evaluator: &c.evaluator,
                base: c.evaluation == m.baseline,
                paired: 0,
                differ: 0,
                rows: Vec::new(),
                note: None,
            };
            if cell.base {
                return cell;
            }
            let (Some(b), Some(e)) = (baseline, by_name.get(c.evaluation.as_str())) else {
                cell.note = Some("its samples are not in this report".into());
                return cell;
            };
            let (bk, k) = (index(b, &c.evaluator), index(e, &c.evaluator));
            if bk.is_none() {
                cell.note = Some(format!("the baseline has no evaluator {}", c.evaluator));
                return cell;
            }
            for s in &e.samples {
                let Some(&j) = base_samples.get(&(s.key.as_str(), s.repeat)) else {
                    continue;
                };
                cell.paired += 1;
                let bs = &b.samples[j];
                let (was, now) = (verdict(bs, bk), verdict(s, k));
                if was.0 == now.0 {
                    continue;
                }
                cell.differ += 1;
                if cell.rows.len() < CAP {
                    let next = listed.len();
                    let at = *listed.entry(j).or_insert_with(|| {
                        base.push((id(bs), output(bs)));
                        next
                    });
                    cell.rows.push((at, was.0, was.1, now.0, now.1, output(s)));
                }
            }
            cell
        })
        .collect();
    Data {
        baseline: &m.baseline,
        cap: CAP,
        base,
        cells,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::view::matrix::CellView;

    #[test]
    fn outputs_are_cut_on_a_character() {
        assert_eq!(truncate("héllo", 2), "hé…");
        assert_eq!(truncate("hé", 2), "hé");
        assert_eq!(truncate("", 2), "");
    }

    fn cell(evaluation: &str, labels: [&str; 2], mean: Option<f64>) -> CellView {
        let paths = ["model.name", "prompt"];
        CellView {
            evaluation: evaluation.into(),
            values: BTreeMap::new(),
            labels: paths
                .iter()
                .zip(labels)
                .map(|(p, l)| (p.to_string(), l.to_string()))
                .collect(),
            evaluator: "exact".into(),
            scored: 10,
            mean,
            ci95: mean.map(|m| [m - 0.05, m + 0.05]),
            difference: None,
            difference_ci95: None,
            p_value: None,
            test: None,
            significant: false,
            best_in_row: false,
            timing: crate::view::matrix::CellTiming {
                p50_seconds: None,
                time_to_first_token_p50_seconds: None,
                throughput_per_second: None,
                completion_tokens_per_sample: None,
            },
        }
    }

    fn axis(path: &str, labels: &[&str]) -> crate::view::matrix::AxisView {
        crate::view::matrix::AxisView {
            path: path.into(),
            labels: labels.iter().map(|l| l.to_string()).collect(),
            values: Vec::new(),
        }
    }

    /// Two models down, two prompts across: a cell that was not run is a
    /// hole, one without a score is grey, and the baseline and the best of
    /// a row carry their marks in text.
    #[test]
    fn the_grid_is_laid_out_as_show_lays_it_out() {
        let mut best = cell("x/b/p", ["b", "p"], Some(0.91));
        best.best_in_row = true;
        let mut worse = cell("x/a/q", ["a", "q"], Some(0.25));
        worse.significant = true;
        worse.difference = Some(-0.5);
        worse.p_value = Some(0.0004);
        let mut base = cell("x/a/p", ["a", "p"], Some(0.75));
        base.best_in_row = true;
        let m = MatrixView {
            axes: vec![axis("model.name", &["a", "b"]), axis("prompt", &["p", "q"])],
            rows: vec!["model.name".into()],
            columns: Some("prompt".into()),
            baseline: "x/a/p".into(),
            metric: Metric::Score,
            cells: vec![base, worse, best, cell("x/b/q", ["b", "q"], None)],
        };
        let mut out = Vec::new();
        write(&mut out, &m).unwrap();
        let html = String::from_utf8(out).unwrap();
        let rows: Vec<&str> = html.split("<tr>").skip(3).collect();
        assert_eq!(rows.len(), 2, "{html}");
        assert!(rows[0].contains(">a</th>") && rows[1].contains(">b</th>"));
        assert!(rows[0].contains(
            r#"<td class="c h7 best base" tabindex="0" data-i="0">75.0% ±5.0 <b class="mk">★</b> <b class="mk">(base)</b></td>"#
        ), "{}", rows[0]);
        assert!(rows[0].contains(
            r#"<td class="c h2 sig" data-i="1">25.0% ±5.0<span class="d">-50.0 pts (p &lt; 0.001)</span></td>"#
        ), "{}", rows[0]);
        assert!(rows[1]
            .contains(r#"<td class="c h9 best" data-i="2">91.0% ±5.0 <b class="mk">★</b></td>"#));
        assert!(rows[1].contains(r#"<td class="c na" data-i="3">–</td>"#));
        // A hole where no evaluation ran.
        let mut holed = m.clone();
        holed.cells.truncate(3);
        let mut out = Vec::new();
        write(&mut out, &holed).unwrap();
        let html = String::from_utf8(out).unwrap();
        assert!(html.contains(r#"<td class="c empty"></td></tr>"#), "{html}");
        assert_eq!(html.matches("tabindex=").count(), 1);
    }
}
