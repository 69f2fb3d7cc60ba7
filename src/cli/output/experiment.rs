//! The report `show` and `run` print: a matrix experiment's grid first,
//! then each evaluation's summary.

use std::fmt::Write;

use super::grid::{self, md_escape, md_row};
use super::table::{duration, evaluation, printable, with_interval};
use super::Render;
use crate::view::ExperimentView;

/// The report `show` (and `run`) prints.
impl Render for ExperimentView {
    fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "experiment {} · created {} · {}",
            printable(&self.experiment),
            printable(&self.created_at),
            self.status
        );
        if let Some(m) = &self.matrix {
            out.push('\n');
            out += &grid::table(m);
        }
        for e in &self.evaluations {
            out.push('\n');
            evaluation(&mut out, e);
        }
        out
    }

    /// The grid of a matrix experiment, else each evaluator's score.
    fn markdown(&self) -> String {
        let mut out = format!("### {}\n\n", md_escape(&self.experiment));
        if let Some(m) = &self.matrix {
            out += &grid::markdown(m);
            return out;
        }
        md_row(
            &mut out,
            &[
                "evaluation",
                "evaluator",
                "score (95% CI)",
                "samples",
                "errors",
                "p50",
            ]
            .map(String::from),
        );
        md_row(&mut out, &vec!["---".to_owned(); 6]);
        for e in &self.evaluations {
            for ev in &e.evaluators {
                md_row(
                    &mut out,
                    &[
                        e.name.clone(),
                        ev.name.clone(),
                        with_interval(ev.mean, ev.ci95),
                        ev.scored.to_string(),
                        e.samples.errored.to_string(),
                        e.timing
                            .latency_seconds
                            .as_ref()
                            .map_or("–".into(), |l| duration(l.p50)),
                    ],
                );
            }
        }
        out
    }
}
