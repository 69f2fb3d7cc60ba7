//! The grid of a matrix experiment (`matrix:` in a spec): one cell per
//! evaluation and evaluator, each with its mean and interval, and its
//! difference from a baseline cell by the paired test `compare` uses
//! (samples paired by id and row), so a lead that noise explains is not
//! marked.

use std::collections::{BTreeMap, HashMap, HashSet};

use serde::Serialize;
use serde_json::Value;

use super::{EvaluationView, ViewError};
use crate::compare::{by_sample, pair};
use crate::human::{duration, p_value};
use crate::spec::Coordinate;
use crate::stats::TestName;
use crate::store::read::EvaluationRow;
use crate::store::{ExperimentRow, SampleScores, Store};

/// Differences at this p-value or below are marked.
pub const ALPHA: f64 = 0.05;

/// What the cells show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// Mean score with its 95% interval, and the difference from the baseline.
    Score,
    /// Median latency.
    P50,
    /// Median time to the first token (streamed replies).
    Ttft,
    /// Samples recorded per wall second.
    Throughput,
    /// Completion tokens per recorded sample.
    Tokens,
}

impl Metric {
    /// What a cell shows, in words.
    pub fn what(self) -> &'static str {
        match self {
            Metric::Score => "mean score ± half its 95% interval",
            Metric::P50 => "median latency",
            Metric::Ttft => "median time to first token",
            Metric::Throughput => "samples per second",
            Metric::Tokens => "completion tokens per sample",
        }
    }

    /// Whether more is better (a score, a throughput) or less (a latency).
    fn higher_is_better(self) -> bool {
        matches!(self, Metric::Score | Metric::Throughput)
    }
}

/// How to lay the grid out, as `show` was asked.
#[derive(Debug, Clone, Default)]
pub struct Layout {
    /// The axis down the side (`--rows PATH`); default the first.
    pub rows: Option<String>,
    /// The axis across the top (`--columns PATH`); default the last.
    pub columns: Option<String>,
    /// The baseline cell, by evaluation name or its labels (`a/plain`).
    pub baseline: Option<String>,
    pub metric: Option<Metric>,
}

/// `matrix` in show's JSON.
#[derive(Debug, Clone, Serialize)]
pub struct MatrixView {
    pub axes: Vec<AxisView>,
    /// The axes down the side, outermost first (all but `columns`).
    pub rows: Vec<String>,
    /// The axis across the top; null with a single axis.
    pub columns: Option<String>,
    /// The evaluation every other cell is compared with.
    pub baseline: String,
    pub metric: Metric,
    /// One per evaluation and evaluator, in the order of the evaluations.
    pub cells: Vec<CellView>,
}

/// One axis and its values, in the order the matrix gave them.
#[derive(Debug, Clone, Serialize)]
pub struct AxisView {
    pub path: String,
    pub labels: Vec<String>,
    pub values: Vec<Value>,
}

/// One evaluator's figures for one cell.
#[derive(Debug, Clone, Serialize)]
pub struct CellView {
    pub evaluation: String,
    /// Axis path -> the value this cell ran with.
    pub values: BTreeMap<String, Value>,
    /// Axis path -> that value's label.
    pub labels: BTreeMap<String, String>,
    pub evaluator: String,
    pub scored: u64,
    /// Mean score, and its 95% interval (as `show` gives them).
    pub mean: Option<f64>,
    pub ci95: Option<[f64; 2]>,
    /// Mean minus the baseline's over the samples both scored, with its
    /// 95% interval and two-sided p-value; null for the baseline itself
    /// (and when no sample pairs).
    pub difference: Option<f64>,
    pub difference_ci95: Option<[f64; 2]>,
    pub p_value: Option<f64>,
    /// The test: `mcnemar_exact` (pass/fail), `paired_t` (graded) or
    /// `clustered_paired_t` (`dataset.cluster`); null for the baseline.
    pub test: Option<TestName>,
    /// `p_value` at most 0.05.
    pub significant: bool,
    /// The best cell of its row by the metric (of the whole axis when the
    /// matrix has one; ties all marked).
    pub best_in_row: bool,
    pub timing: CellTiming,
}

/// A cell's timing, as the other metrics read it.
#[derive(Debug, Clone, Serialize)]
pub struct CellTiming {
    pub p50_seconds: Option<f64>,
    pub time_to_first_token_p50_seconds: Option<f64>,
    pub throughput_per_second: Option<f64>,
    pub completion_tokens_per_sample: Option<f64>,
}

impl CellView {
    /// The figure `metric` reads, as text: `88.0% ±4.5`, `520 ms`, `12.3/s`.
    pub fn figure_text(&self, metric: Metric) -> String {
        let dash = || "–".to_owned();
        match metric {
            Metric::Score => match (self.mean, self.ci95) {
                (Some(mean), Some([lo, hi])) => {
                    format!("{:.1}% ±{:.1}", 100.0 * mean, 50.0 * (hi - lo))
                }
                (Some(mean), None) => format!("{:.1}%", 100.0 * mean),
                _ => dash(),
            },
            Metric::P50 | Metric::Ttft => self.figure(metric).map_or_else(dash, duration),
            Metric::Throughput => self
                .figure(metric)
                .map_or_else(dash, |v| format!("{v:.1}/s")),
            Metric::Tokens => self.figure(metric).map_or_else(dash, |v| format!("{v:.1}")),
        }
    }

    /// `-12.0 pts (p < 0.001)` when the score differs from the baseline's
    /// at p <= [`ALPHA`].
    pub fn difference_text(&self) -> Option<String> {
        let (d, p) = (self.difference?, self.p_value?);
        self.significant
            .then(|| format!("{:+.1} pts (p {})", 100.0 * d, p_value(p)))
    }

    /// The figure `metric` reads.
    pub fn figure(&self, metric: Metric) -> Option<f64> {
        match metric {
            Metric::Score => self.mean,
            Metric::P50 => self.timing.p50_seconds,
            Metric::Ttft => self.timing.time_to_first_token_p50_seconds,
            Metric::Throughput => self.timing.throughput_per_second,
            Metric::Tokens => self.timing.completion_tokens_per_sample,
        }
    }
}

/// One evaluator's grid, laid out: the label combinations down the side
/// (rows without any cell left out), the labels across, and the cell (its
/// index in [`MatrixView::cells`]) at each place.
pub struct Grid<'a> {
    pub evaluator: &'a str,
    pub rows: Vec<Vec<&'a str>>,
    pub columns: Vec<&'a str>,
    pub at: HashMap<(Vec<&'a str>, &'a str), usize>,
}

impl MatrixView {
    /// How many cells (evaluations) the grid has; `cells` holds one per
    /// evaluation and evaluator.
    pub fn evaluations(&self) -> usize {
        let names: HashSet<&str> = self.cells.iter().map(|c| c.evaluation.as_str()).collect();
        names.len()
    }

    /// The grids, one per evaluator in the cells' order: the row axes'
    /// label combinations (the first axis outermost) down the side, the
    /// column axis's labels across (one unnamed column with a single axis).
    pub fn grids(&self) -> Vec<Grid<'_>> {
        let labels_of = |path: &str| -> Vec<&str> {
            self.axes
                .iter()
                .find(|a| a.path == path)
                .map(|a| a.labels.iter().map(String::as_str).collect())
                .unwrap_or_default()
        };
        let columns: Vec<&str> = match &self.columns {
            Some(path) => labels_of(path),
            None => vec![""],
        };
        let mut rows: Vec<Vec<&str>> = vec![Vec::new()];
        for path in &self.rows {
            let labels = labels_of(path);
            rows = rows
                .into_iter()
                .flat_map(|key| {
                    labels.iter().map(move |l| {
                        let mut k = key.clone();
                        k.push(*l);
                        k
                    })
                })
                .collect();
        }
        let mut grids: Vec<Grid<'_>> = Vec::new();
        for (i, c) in self.cells.iter().enumerate() {
            let key: Vec<&str> = self
                .rows
                .iter()
                .map(|p| c.labels.get(p).map_or("", String::as_str))
                .collect();
            let column = match &self.columns {
                Some(p) => c.labels.get(p).map_or("", String::as_str),
                None => "",
            };
            let g = match grids.iter().position(|g| g.evaluator == c.evaluator) {
                Some(g) => g,
                None => {
                    grids.push(Grid {
                        evaluator: &c.evaluator,
                        rows: Vec::new(),
                        columns: columns.clone(),
                        at: HashMap::new(),
                    });
                    grids.len() - 1
                }
            };
            grids[g].at.entry((key, column)).or_insert(i);
        }
        for grid in &mut grids {
            let filled: HashSet<&Vec<&str>> = grid.at.keys().map(|(k, _)| k).collect();
            grid.rows = rows
                .iter()
                .filter(|k| filled.contains(k))
                .cloned()
                .collect();
        }
        grids
    }
}

/// Why a grid cannot be drawn as asked.
#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("the matrix has no axis `{path}`")]
    NoAxis { path: String, axes: Vec<String> },
    #[error("no cell of the matrix is `{name}`")]
    NoCell { name: String, cells: Vec<String> },
    #[error("--rows and --columns both name `{0}`")]
    SameAxis(String),
}

impl LayoutError {
    pub fn hint(&self) -> String {
        match self {
            LayoutError::NoAxis { axes, .. } => format!("its axes are {}", axes.join(", ")),
            LayoutError::NoCell { cells, .. } => {
                let shown: Vec<&str> = cells.iter().take(6).map(String::as_str).collect();
                format!(
                    "name a cell by its evaluation or its labels, such as {}",
                    shown.join(", ")
                )
            }
            LayoutError::SameAxis(_) => "put one axis down the side and another across".into(),
        }
    }
}

/// The grid of the cells of `x` (those whose spec recorded coordinates,
/// of the first matrix among them), whose views are `views`; `None` when
/// `x` holds no cell of a matrix.
pub fn build(
    store: &dyn Store,
    x: &ExperimentRow,
    views: &[EvaluationView],
    layout: &Layout,
) -> Result<Option<Result<MatrixView, LayoutError>>, ViewError> {
    let by_name: HashMap<&str, &EvaluationView> =
        views.iter().map(|v| (v.name.as_str(), v)).collect();
    let cells: Vec<(&EvaluationRow, &EvaluationView, Vec<Coordinate>)> = x
        .evaluations
        .iter()
        .filter_map(|e| {
            let view = *by_name.get(e.name.as_str())?;
            let coordinates = crate::spec::coordinates(&e.spec_text);
            (!coordinates.is_empty()).then_some((e, view, coordinates))
        })
        .collect();
    let Some(first) = cells.first() else {
        return Ok(None);
    };
    // The cells of the first matrix: the same spec and the same axes.
    let prefix = |e: &EvaluationRow| e.name.split('/').next().unwrap_or_default().to_owned();
    let (spec, paths) = (
        (prefix(first.0), first.0.spec_path.clone()),
        first.2.iter().map(|c| c.path.clone()).collect::<Vec<_>>(),
    );
    let cells: Vec<_> = cells
        .into_iter()
        .filter(|(e, _, c)| {
            (prefix(e), e.spec_path.clone()) == spec && c.iter().map(|c| &c.path).eq(paths.iter())
        })
        .collect();
    let axes: Vec<AxisView> = paths
        .iter()
        .enumerate()
        .map(|(i, path)| {
            let mut axis = AxisView {
                path: path.clone(),
                labels: Vec::new(),
                values: Vec::new(),
            };
            for (_, _, c) in &cells {
                if !axis.labels.contains(&c[i].label) {
                    axis.labels.push(c[i].label.clone());
                    axis.values.push(c[i].value.clone());
                }
            }
            axis
        })
        .collect();
    let (rows, columns) = match arrange(&paths, layout) {
        Ok(layout) => layout,
        Err(e) => return Ok(Some(Err(e))),
    };
    let suffix = |e: &EvaluationRow| e.name.split_once('/').map_or("", |(_, s)| s).to_owned();
    let baseline = match &layout.baseline {
        None => cells[0].0,
        Some(wanted) => match cells
            .iter()
            .find(|(e, _, _)| &e.name == wanted || &suffix(e) == wanted)
        {
            Some((e, _, _)) => e,
            None => {
                return Ok(Some(Err(LayoutError::NoCell {
                    name: wanted.clone(),
                    cells: cells.iter().map(|(e, _, _)| suffix(e)).collect(),
                })))
            }
        },
    };
    let cluster = baseline.cluster.as_deref();
    let base_scores = by_sample(store, baseline, cluster)?;
    let metric = layout.metric.unwrap_or(Metric::Score);
    let mut out = Vec::new();
    for (e, view, coordinates) in &cells {
        let scores = if e.id == baseline.id {
            None
        } else {
            Some(by_sample(store, e, cluster)?)
        };
        out.extend(cell_views(
            e,
            view,
            coordinates,
            (baseline, &base_scores),
            scores.as_deref(),
        ));
    }
    // With one axis the grid is one column: the best is the best of it.
    let grouped = if columns.is_some() { &rows[..] } else { &[] };
    mark_best(&mut out, grouped, metric);
    Ok(Some(Ok(MatrixView {
        axes,
        rows,
        columns,
        baseline: baseline.name.clone(),
        metric,
        cells: out,
    })))
}

/// The axes down the side and across the top: `--columns` (default the
/// last axis, none with one axis) across, the rest down, `--rows` first.
fn arrange(
    paths: &[String],
    layout: &Layout,
) -> Result<(Vec<String>, Option<String>), LayoutError> {
    let known = |p: &String| -> Result<(), LayoutError> {
        match paths.contains(p) {
            true => Ok(()),
            false => Err(LayoutError::NoAxis {
                path: p.clone(),
                axes: paths.to_vec(),
            }),
        }
    };
    if let Some(p) = &layout.rows {
        known(p)?;
    }
    if let Some(p) = &layout.columns {
        known(p)?;
    }
    if layout.rows.is_some() && layout.rows == layout.columns {
        return Err(LayoutError::SameAxis(
            layout.rows.clone().unwrap_or_default(),
        ));
    }
    let columns = match &layout.columns {
        Some(p) => Some(p.clone()),
        None if paths.len() > 1 => paths
            .iter()
            .rev()
            .find(|p| Some(*p) != layout.rows.as_ref())
            .cloned(),
        None => None,
    };
    let mut rows: Vec<String> = paths
        .iter()
        .filter(|p| Some(*p) != columns.as_ref())
        .cloned()
        .collect();
    if let Some(first) = &layout.rows {
        rows.retain(|p| p != first);
        rows.insert(0, first.clone());
    }
    Ok((rows, columns))
}

/// One cell per evaluator of `e`, compared with the baseline's `scores`
/// (`mine`: `e`'s own; `None` when `e` is the baseline).
fn cell_views(
    e: &EvaluationRow,
    view: &EvaluationView,
    coordinates: &[Coordinate],
    (baseline, base_scores): (&EvaluationRow, &[SampleScores]),
    mine: Option<&[SampleScores]>,
) -> Vec<CellView> {
    let pairing = mine.map(|m| pair(base_scores, &baseline.evaluators, m, &e.evaluators));
    let t = &view.timing;
    let recorded = view.samples.recorded;
    let timing = CellTiming {
        p50_seconds: t.latency_seconds.as_ref().map(|l| l.p50),
        time_to_first_token_p50_seconds: t.time_to_first_token_seconds.as_ref().map(|l| l.p50),
        throughput_per_second: t.throughput_per_second,
        completion_tokens_per_sample: (recorded > 0 && view.tokens.completion > 0)
            .then(|| view.tokens.completion as f64 / recorded as f64),
    };
    view.evaluators
        .iter()
        .map(|ev| {
            let compared = pairing
                .as_ref()
                .and_then(|p| p.evaluators.iter().find(|x| x.name == ev.name))
                .filter(|p| p.n() > 0)
                .map(|p| p.compare());
            let p_value = compared.as_ref().and_then(|c| c.p_value);
            CellView {
                evaluation: e.name.clone(),
                values: coordinates
                    .iter()
                    .map(|c| (c.path.clone(), c.value.clone()))
                    .collect(),
                labels: coordinates
                    .iter()
                    .map(|c| (c.path.clone(), c.label.clone()))
                    .collect(),
                evaluator: ev.name.clone(),
                scored: ev.scored,
                mean: ev.mean,
                ci95: ev.ci95,
                difference: compared.as_ref().and_then(|c| c.diff),
                difference_ci95: compared.as_ref().and_then(|c| c.ci95.map(|i| [i.lo, i.hi])),
                p_value,
                test: compared.as_ref().map(|c| c.test.into()),
                significant: p_value.is_some_and(|p| p <= ALPHA),
                best_in_row: false,
                timing: timing.clone(),
            }
        })
        .collect()
}

/// Marks, per evaluator and row (the cells sharing the labels of `rows`),
/// the cells with the best figure.
fn mark_best(cells: &mut [CellView], rows: &[String], metric: Metric) {
    let row_of = |c: &CellView| -> (String, Vec<String>) {
        let labels = rows
            .iter()
            .map(|p| c.labels.get(p).cloned().unwrap_or_default())
            .collect();
        (c.evaluator.clone(), labels)
    };
    let mut best: BTreeMap<(String, Vec<String>), f64> = BTreeMap::new();
    for c in cells.iter() {
        let Some(v) = c.figure(metric) else { continue };
        let entry = best.entry(row_of(c)).or_insert(v);
        let better = if metric.higher_is_better() {
            v > *entry
        } else {
            v < *entry
        };
        if better {
            *entry = v;
        }
    }
    for c in cells.iter_mut() {
        c.best_in_row = c
            .figure(metric)
            .zip(best.get(&row_of(c)))
            .is_some_and(|(v, b)| v == *b);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_axis_goes_across_unless_asked() {
        let paths: Vec<String> = ["a", "b", "c"].iter().map(|s| s.to_string()).collect();
        let (rows, cols) = arrange(&paths, &Layout::default()).unwrap();
        assert_eq!(
            (rows, cols),
            (vec!["a".into(), "b".into()], Some("c".into()))
        );
        let asked = Layout {
            rows: Some("c".into()),
            columns: Some("a".into()),
            ..Layout::default()
        };
        let (rows, cols) = arrange(&paths, &asked).unwrap();
        assert_eq!(
            (rows, cols),
            (vec!["c".into(), "b".into()], Some("a".into()))
        );
        let rows_only = Layout {
            rows: Some("c".into()),
            ..Layout::default()
        };
        let (rows, cols) = arrange(&paths, &rows_only).unwrap();
        assert_eq!(
            (rows, cols),
            (vec!["c".into(), "a".into()], Some("b".into()))
        );
        let (rows, cols) = arrange(&paths[..1], &Layout::default()).unwrap();
        assert_eq!((rows, cols), (vec!["a".into()], None));
        let bad = Layout {
            rows: Some("x".into()),
            ..Layout::default()
        };
        assert!(matches!(
            arrange(&paths, &bad),
            Err(LayoutError::NoAxis { .. })
        ));
    }
}
