//! `dotevals compare A B`: is B really better than A? Per evaluation both
//! experiments ran, samples are paired by id and row, and per evaluator the
//! difference B - A gets its paired standard error, 95% interval, p-value,
//! the pass/fail flips and the smallest difference the samples could detect;
//! the timing is set side by side.

use clap::Args;

use std::fmt::Write;

use tabled::builder::Builder;

use super::output::grid::{md_escape, md_row};
use super::output::table::{duration, printable, push_row, table};
use super::output::{note_if_running, print, Render};
use super::{open_for_reading, unknown_experiment, CliError, Style};
use crate::compare;
use crate::compare::view::{
    CompareView, EvaluationComparison, EvaluatorComparison, Kind, TimingSummary,
};
use crate::human::p_value;
use crate::store::Storage;
use crate::Exit;

pub const AFTER_HELP: &str = "\
Example: did the new prompt help?
  dotevals run evals/sentiment.yaml --experiment baseline
  dotevals run evals/sentiment-v2.yaml --experiment candidate   # same `name:`, edited prompt
  dotevals compare baseline candidate --flips

Samples are paired by id and dataset row; ids on one side only are counted and named. A
pass/fail evaluator is compared by McNemar's exact test on the samples whose verdict
changed, a graded one by a paired t-test. The 95% interval holds the true difference in 95
of 100 such comparisons; p is the chance of a difference at least this large if A and B
were equally good. `detectable` is the smallest true difference these samples would find
4 times in 5: a smaller one may be real but needs more samples.";

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// The baseline experiment
    #[arg(value_name = "A")]
    pub a: String,
    /// The experiment compared with it (differences are B - A) [default: A, to compare two of
    /// its evaluations with --eval and --against]
    #[arg(value_name = "B")]
    pub b: Option<String>,
    /// Compare only this evaluation (both experiments must hold it); with --against, A's side.
    /// A cell of a matrix may be named by its labels (`gpt-4o/terse`)
    #[arg(long = "eval", value_name = "NAME")]
    pub eval: Option<String>,
    /// B's evaluation, compared with A's --eval (two cells of a matrix experiment:
    /// `dotevals compare EXP --eval gpt-4o/terse --against gpt-4o-mini/terse`)
    #[arg(long, value_name = "NAME", requires = "eval")]
    pub against: Option<String>,
    /// List every sample whose verdict changed, with both outputs
    #[arg(long)]
    pub flips: bool,
    #[command(flatten)]
    pub output: super::ReviewFormatArg,
}

pub fn compare(args: CompareArgs, storage: &dyn Storage, style: Style) -> Result<Exit, CliError> {
    let Some(store) = open_for_reading(storage)? else {
        return Err(unknown_experiment(&args.a, &[]));
    };
    let b_name = match (&args.b, &args.against) {
        (Some(b), _) => b.as_str(),
        (None, Some(_)) => &args.a,
        (None, None) => {
            return Err(CliError::usage(
                "compare needs a second experiment, or two evaluations of one",
                Some(format!(
                "dotevals compare {0} OTHER, or dotevals compare {0} --eval NAME --against NAME",
                crate::shell::quote(&args.a)
            )),
            ))
        }
    };
    let (a, b) = compare::rows(store.as_ref(), &args.a, b_name)?;
    note_if_running(&a);
    if b.name != a.name {
        note_if_running(&b);
    }
    let pick = match (&args.eval, &args.against) {
        (Some(eval), Some(against)) => compare::Pick::Pair(eval, against),
        (Some(eval), None) => compare::Pick::One(eval),
        (None, _) => compare::Pick::Shared,
    };
    let view = compare::load(storage, store.as_ref(), (&a, &b), pick, args.flips)??;
    print(style, &view)?;
    Ok(Exit::Success)
}

impl Render for CompareView {
    /// Per evaluation, the scores' table and both sides' timing, for a pull
    /// request's comment.
    fn markdown(&self) -> String {
        let mut out = format!(
            "### {} → {}\n\n_differences are {} − {}; p: exact McNemar for pass/fail scores, paired t for graded ones_\n",
            md_escape(&self.a),
            md_escape(&self.b),
            md_escape(&self.b),
            md_escape(&self.a)
        );
        for e in &self.evaluations {
            let _ = writeln!(
                out,
                "\n#### {} ({} samples paired)\n",
                md_escape(&e.name),
                e.samples.matched
            );
            let head = [
                "evaluator",
                &self.a,
                &self.b,
                "B − A",
                "95% CI",
                "p",
                "pass→fail",
                "fail→pass",
            ];
            md_row(&mut out, &head.map(String::from));
            md_row(&mut out, &vec!["---".to_owned(); head.len()]);
            for ev in &e.evaluators {
                md_row(&mut out, &score_cells(ev));
            }
            let t = &e.timing;
            let _ = writeln!(out);
            md_row(
                &mut out,
                &["timing", "wall", "p50", "p99", "first token p50"].map(String::from),
            );
            md_row(&mut out, &vec!["---".to_owned(); 5]);
            for (name, x) in [(&self.a, &t.a), (&self.b, &t.b)] {
                let or_dash = |x: Option<f64>| x.map_or("–".to_owned(), duration);
                md_row(
                    &mut out,
                    &[
                        name.clone(),
                        duration(x.wall_seconds),
                        or_dash(x.latency_p50_seconds),
                        or_dash(x.latency_p99_seconds),
                        or_dash(x.time_to_first_token_p50_seconds),
                    ],
                );
            }
        }
        out
    }

    fn table(&self) -> String {
        let mut out = format!(
            "compare {} → {} (differences are {} − {})\n",
            printable(&self.a),
            printable(&self.b),
            printable(&self.b),
            printable(&self.a)
        );
        for e in &self.evaluations {
            out.push('\n');
            evaluation(&mut out, e, (&self.a, &self.b));
        }
        out
    }
}

fn evaluation(out: &mut String, e: &EvaluationComparison, names: (&str, &str)) {
    let s = &e.samples;
    let _ = write!(out, "{}: {} samples paired", printable(&e.name), s.matched);
    for (what, u) in [
        (format!("only in {}", names.0), &s.only_in_a),
        (format!("only in {}", names.1), &s.only_in_b),
        ("rows edited".to_owned(), &s.changed_rows),
    ] {
        if u.count > 0 {
            let more = if u.count > u.ids.len() as u64 {
                ", ..."
            } else {
                ""
            };
            let _ = write!(out, " · {what}: {} ({}{more})", u.count, u.ids.join(", "));
        }
    }
    out.push('\n');
    if e.evaluators.is_empty() {
        let _ = writeln!(out, "  no evaluator in common: nothing to compare");
    } else {
        scores(out, e, names);
    }
    if !e.not_compared.is_empty() {
        let _ = writeln!(
            out,
            "  not compared (on one side only): {}",
            printable(&e.not_compared.join(", "))
        );
    }
    timing(out, e, names);
}

/// The table of the evaluators both sides have, and how it was tested.
fn scores(out: &mut String, e: &EvaluationComparison, names: (&str, &str)) {
    let mut b = Builder::default();
    b.push_record([
        "evaluator",
        names.0,
        names.1,
        "B − A",
        "95% CI",
        "p",
        "pass→fail",
        "fail→pass",
        "detectable",
    ]);
    for ev in &e.evaluators {
        let [_, diff] = figures(ev.kind);
        let mut cells = score_cells(ev).to_vec();
        cells.push(
            ev.min_detectable_difference
                .map_or("–".to_owned(), |x| diff(x).replace('+', "±")),
        );
        push_row(&mut b, cells);
    }
    let _ = writeln!(out, "{}", table(b, 0));
    let clustered: Vec<String> = e
        .evaluators
        .iter()
        .filter_map(|ev| Some(format!("{} over {} groups", ev.name, ev.clusters?)))
        .collect();
    match (&e.cluster, clustered.is_empty()) {
        (Some(column), false) => {
            let _ = writeln!(
                out,
                "  p and CI: paired t on the differences, standard error clustered by `{}` ({})",
                printable(column),
                printable(&clustered.join(", "))
            );
        }
        _ => {
            let _ = writeln!(
                out,
                "  p: exact McNemar for pass/fail scores, paired t for graded ones"
            );
        }
    }
    for ev in &e.evaluators {
        if ev.unscored > 0 {
            let _ = writeln!(
                out,
                "  {}: {} paired samples left out (unscored on a side)",
                printable(&ev.name),
                ev.unscored
            );
        }
    }
}

/// Both sides' timing, one line each.
fn timing(out: &mut String, e: &EvaluationComparison, names: (&str, &str)) {
    let t = &e.timing;
    let side = |x: &TimingSummary| {
        let mut line = duration(x.wall_seconds);
        if let Some(r) = x.throughput_per_second {
            let _ = write!(line, " · {r:.1} samples/s");
        }
        if let (Some(p50), Some(p99)) = (x.latency_p50_seconds, x.latency_p99_seconds) {
            let _ = write!(line, " · p50 {} · p99 {}", duration(p50), duration(p99));
        }
        if let Some(first) = x.time_to_first_token_p50_seconds {
            let _ = write!(line, " · first token p50 {}", duration(first));
        }
        if let Some(speed) = x.output_tokens_per_second_p50 {
            let _ = write!(line, " · {speed:.1} tokens/s");
        }
        let _ = write!(line, " · {} tokens", x.prompt_tokens + x.completion_tokens);
        line
    };
    let _ = writeln!(
        out,
        "  timing  {:<w$}  {}",
        printable(names.0),
        side(&t.a),
        w = names.0.len().max(names.1.len())
    );
    let _ = writeln!(
        out,
        "          {:<w$}  {}",
        printable(names.1),
        side(&t.b),
        w = names.0.len().max(names.1.len())
    );
    for ev in &e.evaluators {
        let Some(flips) = &ev.flips else { continue };
        if flips.is_empty() {
            continue;
        }
        let mut b = Builder::default();
        let (out_a, out_b) = (format!("{} output", names.0), format!("{} output", names.1));
        b.push_record(["id", names.0, names.1, &out_a, &out_b]);
        for f in flips {
            push_row(
                &mut b,
                [
                    f.id.clone(),
                    format!("{}", f.score_a),
                    format!("{}", f.score_b),
                    f.output_a.clone().unwrap_or_default(),
                    f.output_b.clone().unwrap_or_default(),
                ],
            );
        }
        let _ = writeln!(out, "\n  {}: {} flipped", printable(&ev.name), flips.len());
        let mut t = table(b, 3);
        t.with(
            tabled::settings::Modify::new(tabled::settings::object::Columns::one(4))
                .with(tabled::settings::Width::wrap(40)),
        );
        let _ = writeln!(out, "{t}");
    }
}

/// How a figure is written: a rate in percent or points, a graded mean as is.
type Figure = fn(f64) -> String;

/// An evaluator's row: its name, both means, B - A, the interval, p and
/// the flips each way.
fn score_cells(ev: &EvaluatorComparison) -> [String; 8] {
    let [value, diff] = figures(ev.kind);
    let or_dash = |x: Option<f64>, f: Figure| x.map_or("–".to_owned(), f);
    [
        ev.name.clone(),
        or_dash(ev.mean_a, value),
        or_dash(ev.mean_b, value),
        or_dash(ev.difference, diff),
        ev.ci95.map_or("–".to_owned(), |[lo, hi]| {
            // `+7.0 to +18.0 pts`: the unit once.
            let lo = diff(lo);
            format!("{} to {}", lo.trim_end_matches(" pts"), diff(hi))
        }),
        or_dash(ev.p_value, p_value),
        ev.pass_to_fail.to_string(),
        ev.fail_to_pass.to_string(),
    ]
}

/// How a value and a difference of this kind read: `87.5%` and `+6.0 pts`
/// for pass/fail, `0.875` and `+0.060` for graded scores.
fn figures(kind: Kind) -> [Figure; 2] {
    match kind {
        Kind::PassFail => [
            |x| format!("{:.1}%", 100.0 * x),
            |x| format!("{:+.1} pts", 100.0 * x),
        ],
        Kind::Graded => [|x| format!("{x:.3}"), |x| format!("{x:+.3}")],
    }
}
