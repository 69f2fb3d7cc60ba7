//! `dotevals compare A B`: is B really better than A? Per evaluation both
//! experiments ran, samples are paired by id and row, and per evaluator the
//! difference B - A gets its paired standard error, 95% interval, p-value,
//! the pass/fail flips and the smallest difference the samples could detect;
//! the timing is set side by side.

use clap::Args;

use std::fmt::Write;

use tabled::builder::Builder;

use super::format::{duration, printable, push_row, table};
use super::output::{print, Render};
use super::{known_experiment, open_for_reading, unknown_experiment, CliError, Style};
use crate::compare::pair;
use crate::compare::report::{CompareReport, EvaluationComparison, Kind, Outputs, TimingSummary};
use crate::report;
use crate::store::read::EvaluationRow;
use crate::store::{SampleScores, Storage, Store};
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
    /// The experiment compared with it (differences are B - A)
    #[arg(value_name = "B")]
    pub b: String,
    /// Compare only this evaluation (both experiments must hold it)
    #[arg(long = "eval", value_name = "NAME")]
    pub eval: Option<String>,
    /// List every sample whose verdict changed, with both outputs
    #[arg(long)]
    pub flips: bool,
}

pub fn compare(args: CompareArgs, storage: &dyn Storage, style: Style) -> Result<Exit, CliError> {
    let Some(store) = open_for_reading(storage)? else {
        return Err(unknown_experiment(&args.a, &[]));
    };
    let report = comparison(storage, store.as_ref(), &args)?;
    print(style, &report)?;
    Ok(Exit::Success)
}

/// Says on stderr when a run of experiment `name` is going on now (a killed one reads as
/// interrupted): a comparison or report of it is a snapshot.
pub(super) fn still_running(name: &str, status: crate::report::ExperimentStatus) {
    if status == crate::report::ExperimentStatus::Running {
        eprintln!(
            "note: experiment `{}` is still running: these figures are a snapshot",
            printable(name)
        );
    }
}

/// The comparison `args` asks for (`report A B` builds one with `--flips`).
pub(super) fn comparison(
    storage: &dyn Storage,
    store: &dyn Store,
    args: &CompareArgs,
) -> Result<CompareReport, CliError> {
    let a = store
        .experiment(&args.a)
        .map_err(|e| known_experiment(store, &args.a, e))?;
    let b = store
        .experiment(&args.b)
        .map_err(|e| known_experiment(store, &args.b, e))?;
    for x in [&a, &b] {
        still_running(&x.name, crate::report::experiment_status(&x.evaluations));
    }
    let names = |x: &crate::store::ExperimentRow| -> Vec<String> {
        x.evaluations.iter().map(|e| e.name.clone()).collect()
    };
    let shared: Vec<String> = names(&a)
        .into_iter()
        .filter(|n| b.evaluations.iter().any(|e| &e.name == n))
        .filter(|n| args.eval.as_ref().is_none_or(|only| only == n))
        .collect();
    if shared.is_empty() {
        let held = |x: &crate::store::ExperimentRow| {
            names(x)
                .iter()
                .map(|n| format!("`{n}`"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let what = match &args.eval {
            Some(only) => format!(
                "`{}` and `{}` do not both hold evaluation `{only}`",
                a.name, b.name
            ),
            None => format!("`{}` and `{}` share no evaluation", a.name, b.name),
        };
        return Err(CliError::usage(
            what,
            Some(format!(
                "evaluations are matched by name: `{}` holds {}; `{}` holds {}",
                a.name,
                held(&a),
                b.name,
                held(&b)
            )),
        ));
    }
    let mut evaluations = Vec::with_capacity(shared.len());
    for name in &shared {
        let (Some(ea), Some(eb)) = (
            a.evaluations.iter().find(|e| &e.name == name),
            b.evaluations.iter().find(|e| &e.name == name),
        ) else {
            continue;
        };
        // Clustered by A's cluster column, when its spec set one. B is read
        // on a second connection at the same time: each side is 100k rows
        // on a big experiment, and this halves the wait.
        let cluster = ea.cluster.as_deref();
        let (scores_a, scores_b) = std::thread::scope(|scope| {
            let b_side = scope.spawn(|| -> Result<_, CliError> {
                match storage.open_read_only()? {
                    Some(store) => by_sample(store.as_ref(), eb, None),
                    None => Err(unknown_experiment(&b.name, &[])),
                }
            });
            let a_side = by_sample(store, ea, cluster);
            let b_side = b_side
                .join()
                .unwrap_or_else(|_| Err(CliError::Failed("reading B's samples failed".into())));
            Ok::<_, CliError>((a_side?, b_side?))
        })?;
        let pairing = pair(&scores_a, &ea.evaluators, &scores_b, &eb.evaluators);
        let side = |e: &EvaluationRow| -> Result<_, CliError> {
            Ok(report::evaluation(
                e,
                &store.latencies(e.id)?,
                &store.runs(e.id)?,
            )?)
        };
        let (ra, rb) = (side(ea)?, side(eb)?);
        let lookups = if args.flips {
            Some((store.lookup(ea.id)?, store.lookup(eb.id)?))
        } else {
            None
        };
        let outputs = lookups.as_ref().map(|(la, lb)| {
            move |key: &str| {
                let output = |l: &dyn crate::store::SampleLookup| {
                    l.call(key).ok().flatten().and_then(|c| c.output)
                };
                (output(la.as_ref()), output(lb.as_ref()))
            }
        });
        evaluations.push(EvaluationComparison::new(
            name,
            cluster,
            &pairing,
            (&ra, &rb),
            (scores_a.len() as u64, scores_b.len() as u64),
            outputs.as_ref().map(|f| f as &Outputs<'_>),
        ));
    }
    Ok(CompareReport {
        a: a.name.clone(),
        b: b.name.clone(),
        evaluations,
    })
}

impl Render for CompareReport {
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
        let (value, diff): (Figure, Figure) = match ev.kind {
            Kind::PassFail => (
                |x| format!("{:.1}%", 100.0 * x),
                |x| format!("{:+.1} pts", 100.0 * x),
            ),
            Kind::Graded => (|x| format!("{x:.3}"), |x| format!("{x:+.3}")),
        };
        let or_dash = |x: Option<f64>, f: Figure| x.map_or("–".to_owned(), f);
        push_row(
            &mut b,
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
                ev.min_detectable_difference
                    .map_or("–".to_owned(), |x| diff(x).replace('+', "±")),
            ],
        );
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

/// The scores of evaluation `e`, one entry per sample id ordered by id:
/// samples sent several times (`repeats`) pair by id, one mean each.
fn by_sample(
    store: &dyn Store,
    e: &EvaluationRow,
    cluster: Option<&str>,
) -> Result<Vec<SampleScores>, CliError> {
    let scores = store.sample_scores(e.id, e.evaluators.len(), cluster)?;
    Ok(match e.repeats {
        1 => scores,
        _ => crate::compare::collapse_repeats(&scores),
    })
}

/// `0.021`, `< 0.001`.
fn p_value(p: f64) -> String {
    if p < 0.001 {
        "< 0.001".to_owned()
    } else {
        format!("{p:.3}")
    }
}
