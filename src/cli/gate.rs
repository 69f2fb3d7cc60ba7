//! The CI gate: an evaluator whose mean score is below its bar (`fail_under:`
//! in the spec, or `--fail-under` for every evaluator) makes `run` and `show`
//! exit 3, after the report is printed, with a line saying which.

use crate::view::ExperimentView;

/// `--fail-under`: a score from 0 to 1.
pub fn parse_bar(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(bar) if (0.0..=1.0).contains(&bar) => Ok(bar),
        _ => Err(format!(
            "`{text}` is not a score from 0 to 1 (a mean below it fails the gate)"
        )),
    }
}

/// Holds every evaluator of `report` to `bar`, replacing the spec's bars.
pub fn raise(report: &mut ExperimentView, bar: f64) {
    for e in &mut report.evaluations {
        for ev in &mut e.evaluators {
            *ev = ev.clone().with_bar(Some(bar));
        }
    }
}

/// One line per evaluator below its bar; empty when the gate passes.
pub fn failures(report: &ExperimentView) -> Vec<String> {
    let mut lines = Vec::new();
    for e in &report.evaluations {
        for ev in &e.evaluators {
            let (Some(bar), Some(true)) = (ev.fail_under, ev.below_fail_under) else {
                continue;
            };
            let mean = ev
                .mean
                .map_or("no score".to_owned(), |m| format!("a mean score of {m:.3}"));
            lines.push(format!(
                "fail-under: {} / {} has {mean}, below its bar {bar}",
                e.name, ev.name
            ));
        }
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bar_is_a_score() {
        assert_eq!(parse_bar("0.8"), Ok(0.8));
        assert_eq!(parse_bar("1"), Ok(1.0));
        for bad in ["1.5", "-0.1", "high", "NaN"] {
            assert!(parse_bar(bad).is_err(), "{bad}");
        }
    }
}
