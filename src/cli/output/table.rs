//! Table text of the reports: aligned blocks for `show` (and `run`), tables
//! for `list`, `--errors` and `--full`.

use std::borrow::Cow;
use std::fmt::Write;

use tabled::settings::{object::Columns, Modify, Style, Width};
use tabled::{builder::Builder, Table};

use super::Render;
use crate::concurrency::StrategyName;
use crate::store::EvaluationStatus;
use crate::view::{
    EndpointView, ErrorKindView, ErrorView, EvaluationView, EvaluatorView, JudgeView, Latency,
    ListView, RecordView, WorkerView,
};

pub use crate::human::{duration, size};

/// `s` safe to print on a terminal: control characters (ESC, CR, NUL, ...) and
/// bidirectional overrides are shown escaped (`\u{1b}`), so model output or a
/// name cannot move the cursor, recolour the terminal or hide text. Newlines
/// and tabs are kept.
pub fn printable(s: &str) -> Cow<'_, str> {
    let unsafe_char = |c: char| {
        (c.is_control() && c != '\n' && c != '\t')
            || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
    };
    if !s.chars().any(unsafe_char) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if unsafe_char(c) {
            let _ = write!(out, "{}", c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Adds a row of cells to a table, each made [`printable`].
pub(in crate::cli) fn push_row<I, S>(b: &mut Builder, cells: I)
where
    I: IntoIterator<Item = S>,
    S: AsRef<str>,
{
    b.push_record(
        cells
            .into_iter()
            .map(|c| printable(c.as_ref()).into_owned()),
    );
}

fn percent(x: Option<f64>) -> String {
    x.map_or("–".into(), crate::human::percent)
}

/// `87.5% (53–98%)`: a rate and its 95% interval, in percent.
pub(super) fn with_interval(x: Option<f64>, ci: Option<[f64; 2]>) -> String {
    match (x, ci) {
        (Some(x), Some([lo, hi])) => {
            format!("{:.1}% ({:.0}–{:.0}%)", 100.0 * x, 100.0 * lo, 100.0 * hi)
        }
        _ => percent(x),
    }
}

/// What a judge's calls took, under its evaluator's line.
fn judge_line(j: &JudgeView) -> String {
    let mut line = format!("{} calls", j.calls);
    if j.failed > 0 {
        let _ = write!(line, " · {} without a score", j.failed);
    }
    if let Some(l) = &j.latency_seconds {
        let _ = write!(line, " · p50 {} · p90 {}", duration(l.p50), duration(l.p90));
    }
    if j.retries + j.throttled > 0 {
        let _ = write!(line, " · {} retries · {} throttled", j.retries, j.throttled);
    }
    if j.tokens.all() > 0 {
        let _ = write!(line, " · {} tokens", j.tokens.describe());
    }
    line
}

/// An evaluation's aligned summary (model, samples, scores, timing), then
/// whichever detail tables its view carries.
pub(super) fn evaluation(out: &mut String, e: &EvaluationView) {
    let mut rows = setup_rows(e);
    for ev in &e.evaluators {
        rows.push((ev.name.clone(), evaluator_line(e, ev)));
        if let Some(j) = &ev.judge {
            rows.push(("judge".into(), judge_line(j)));
        }
    }
    timing_rows(e, &mut rows);
    let status = if e.status == EvaluationStatus::Interrupted {
        " · interrupted: run it again to resume".to_owned()
    } else {
        format!(" · {}", e.status)
    };
    let _ = writeln!(
        out,
        "{} ({}){}",
        printable(&e.name),
        printable(&e.spec),
        printable(&status)
    );
    let width = rows
        .iter()
        .map(|(k, _)| k.chars().count())
        .max()
        .unwrap_or(0);
    for (k, v) in rows {
        let _ = writeln!(out, "  {:width$}  {}", printable(&k), printable(&v));
    }
    if !e.endpoints.is_empty() {
        endpoints_table(out, &e.endpoints);
    }
    if !e.workers.is_empty() {
        workers_table(out, &e.workers);
    }
    if let Some(kinds) = &e.error_kinds {
        error_kinds(out, kinds);
    }
    if let Some(errors) = e.errors.as_ref().filter(|x| !x.is_empty()) {
        errors_table(out, errors);
    }
    if let Some(records) = &e.records {
        records_table(out, e, records);
    }
}

/// The rows before the scores: model, overrides, strategy, samples.
fn setup_rows(e: &EvaluationView) -> Vec<(String, String)> {
    let mut rows: Vec<(String, String)> = Vec::new();
    rows.push(("model".into(), format!("{} ({})", e.model, e.provider)));
    if !e.overrides.is_empty() {
        // One line: a value's newline shows as `\n`.
        let sets: Vec<String> = e.overrides.iter().map(|o| o.replace('\n', "\\n")).collect();
        rows.push(("overrides".into(), sets.join(" · ")));
    }
    let mut strategy = match e.strategy {
        StrategyName::Sequential => "sequential, 1 in flight".to_owned(),
        s => format!("{s}, up to {} in flight", e.max_concurrency),
    };
    if e.endpoints.len() > 1 {
        let _ = write!(strategy, " per replica, {} replicas", e.endpoints.len());
    }
    rows.push(("strategy".into(), strategy));
    let s = &e.samples;
    let missing = s.total.saturating_sub(s.recorded);
    let mut samples = format!(
        "{}/{} recorded · {} finished · {} errored",
        s.recorded, s.total, s.finished, s.errored
    );
    if missing > 0 {
        let _ = write!(samples, " · {missing} not run yet");
    }
    if s.cached > 0 {
        let sent = s.recorded.saturating_sub(s.cached);
        let _ = write!(
            samples,
            " · {} cached (timing covers the {sent} sent)",
            s.cached
        );
    }
    rows.push(("samples".into(), samples));
    rows
}

/// One evaluator's line: pass rate, mean, interval, repeats, bar.
fn evaluator_line(e: &EvaluationView, ev: &EvaluatorView) -> String {
    let mut line = format!("{} ({}/{})", percent(ev.pass_rate), ev.passed, ev.scored);
    // The mean says more than the pass rate only for fractional scores or a
    // threshold below 1.
    let mean_differs =
        matches!((ev.mean, ev.pass_rate), (Some(m), Some(r)) if (m - r).abs() > 1e-9);
    if let (Some(mean), true) = (ev.mean, mean_differs) {
        let _ = write!(line, " · mean score {mean:.2}");
    }
    // The interval is the mean's: of the pass rate itself when they agree.
    if let (Some(se), Some([lo, hi])) = (ev.stderr, ev.ci95) {
        let _ = if mean_differs {
            write!(line, " · 95% CI {lo:.2}–{hi:.2} (SE {se:.3}")
        } else {
            let p = |x: f64| 100.0 * x;
            write!(
                line,
                " · 95% CI {:.1}–{:.1}% (SE {:.1} pts",
                p(lo),
                p(hi),
                p(se)
            )
        };
        if let Some(k) = ev.clusters {
            let _ = write!(line, ", clustered over {k} groups");
        }
        line.push(')');
    }
    if e.repeats > 1 {
        // The interval above is over the per-sample means.
        let _ = write!(line, " · repeats {}", e.repeats);
        if let Some(v) = ev.within_sample_variance {
            let _ = write!(line, " · within-sample variance {v:.3}");
        }
    }
    if ev.unscored > 0 {
        let _ = write!(line, " · {} unscored", ev.unscored);
    }
    if let (Some(bar), Some(below)) = (ev.fail_under, ev.below_fail_under) {
        let verdict = if below { "BELOW" } else { "met" };
        let _ = write!(line, " · fail_under {bar}: {verdict}");
    }
    line
}

/// The timing rows: wall time, latency, concurrency, limit, retries, runs, tokens.
fn timing_rows(e: &EvaluationView, rows: &mut Vec<(String, String)>) {
    let t = &e.timing;
    let runs = if e.runs > 1 {
        format!(" over {} runs", e.runs)
    } else {
        String::new()
    };
    // A rate of samples that all failed (a refused key stops a run at
    // once) would read as speed: none is shown then.
    let throughput = t
        .throughput_per_second
        .filter(|_| e.samples.finished > 0)
        .map_or(String::new(), |x| format!(" · {x:.2} samples/s"));
    rows.push((
        "wall time".into(),
        format!("{}{throughput}{runs}", duration(t.wall_seconds)),
    ));
    if let Some(l) = &t.latency_seconds {
        rows.push(("latency".into(), l.percentiles()));
    }
    if let Some(l) = &t.time_to_first_token_seconds {
        rows.push(("first token".into(), l.percentiles()));
    }
    if let Some(q) = &t.output_tokens_per_second {
        rows.push((
            "output speed".into(),
            format!(
                "p50 {:.1} · p90 {:.1} · p99 {:.1} tokens/s after the first",
                q.p50, q.p90, q.p99
            ),
        ));
    }
    if t.streamed_without_usage > 0 {
        rows.push((
            "usage".into(),
            format!(
                "{} of {} streamed replies reported no tokens (the server ignores stream_options.include_usage): their output speed is unknown",
                t.streamed_without_usage, t.streamed_replies
            ),
        ));
    }
    if let Some(c) = t.mean_in_flight {
        let mut line = format!("{c:.2} in flight on average");
        if let Some(a) = t.mean_at_server.filter(|a| (c - a).abs() >= 0.005) {
            let _ = write!(line, " ({a:.2} at the server)");
        }
        // Absent when the run mostly waited on a quota: the `retries` line
        // says how long it was blocked instead.
        if let (Some(x), Some(u)) = (t.speedup_over_sequential, t.unloaded_latency_seconds) {
            let _ = write!(
                line,
                " · {x:.2}x faster than sequential (unloaded latency {})",
                duration(u)
            );
        }
        rows.push(("concurrency".into(), line));
    }
    if let Some(l) = &t.concurrency_limit {
        rows.push((
            "limit".into(),
            format!(
                "min {} · median {} · max {} · {} changes",
                l.min, l.median, l.max, l.changes
            ),
        ));
        rows.push((
            String::new(),
            format!("{}  limit over time", l.limit_sparkline),
        ));
        rows.push((
            String::new(),
            format!("{}  throughput", l.throughput_sparkline),
        ));
    }
    if t.retries + t.throttled > 0 || t.blocked_seconds > 0.0 {
        rows.push((
            "retries".into(),
            format!(
                "{} retries · {} throttled (429/503) · blocked {} (nothing at the server while samples waited)",
                t.retries,
                t.throttled,
                duration(t.blocked_seconds)
            ),
        ));
    }
    if t.runs.len() > 1 {
        for r in &t.runs {
            let in_flight = r
                .mean_in_flight
                .map_or(String::new(), |c| format!(" · {c:.2} in flight"));
            let limit = r.limit.map_or(String::new(), |l| {
                format!(" · limit {}/{}/{}", l.min, l.median, l.max)
            });
            rows.push((
                format!("run {}", r.run),
                format!(
                    "{} · {} · {} samples · {} retries · {} throttled{in_flight}{limit}",
                    r.strategy,
                    duration(r.wall_seconds),
                    r.samples,
                    r.retries,
                    r.throttled
                ),
            ));
        }
    }
    if e.tokens.all() > 0 {
        rows.push(("tokens".into(), e.tokens.describe()));
    }
}

/// Each replica's share, errors, speed and latency.
fn endpoints_table(out: &mut String, endpoints: &[EndpointView]) {
    let mut b = Builder::default();
    b.push_record([
        "replica",
        "samples",
        "share",
        "errors",
        "failed attempts",
        "rests",
        "replies/s",
        "latency p50",
        "p90",
    ]);
    for x in endpoints {
        let latency = |f: fn(&Latency) -> f64| {
            x.latency_seconds
                .as_ref()
                .map_or("–".into(), |l| duration(f(l)))
        };
        push_row(
            &mut b,
            [
                x.url.clone(),
                x.samples.to_string(),
                format!("{:.1}%", 100.0 * x.share),
                x.errors.to_string(),
                format!("{} of {}", x.failed_attempts, x.attempts),
                x.rests.to_string(),
                x.throughput_per_second
                    .map_or("–".into(), |r| format!("{r:.2}")),
                latency(|l| l.p50),
                latency(|l| l.p90),
            ],
        );
    }
    let _ = writeln!(out, "{}", table(b, 0));
}

/// The workers of a fleet; one whose heartbeat is late is marked.
fn workers_table(out: &mut String, workers: &[WorkerView]) {
    let mut b = Builder::default();
    b.push_record([
        "worker",
        "host",
        "pid",
        "state",
        "samples",
        "samples/s",
        "in flight",
        "last heartbeat",
    ]);
    for w in workers {
        let mut heartbeat = format!("{} ago", duration(w.last_heartbeat_seconds_ago));
        if w.late {
            heartbeat.push_str(" LATE");
        }
        push_row(
            &mut b,
            [
                format!("run {}", w.run),
                w.host.clone(),
                w.pid.to_string(),
                w.state.clone(),
                w.samples.to_string(),
                w.throughput_per_second
                    .map_or("–".into(), |r| format!("{r:.1}")),
                w.in_flight.to_string(),
                heartbeat,
            ],
        );
    }
    let _ = writeln!(out, "{}", table(b, 0));
}

/// Errors by kind, with an example each (`--errors`).
fn error_kinds(out: &mut String, kinds: &[ErrorKindView]) {
    out.push('\n');
    if kinds.is_empty() {
        let _ = writeln!(out, "  no errors");
    } else {
        let mut b = Builder::default();
        b.push_record(["error kind", "samples", "example"]);
        for k in kinds {
            push_row(
                &mut b,
                [
                    k.kind.clone(),
                    k.count.to_string(),
                    format!("{}: {}", k.example_id, k.example),
                ],
            );
        }
        let _ = writeln!(out, "{}", table(b, 2));
    }
}

/// Every errored sample (`--errors`).
fn errors_table(out: &mut String, errors: &[ErrorView]) {
    let mut b = Builder::default();
    b.push_record(["id", "kind", "attempts", "message"]);
    for x in errors {
        push_row(
            &mut b,
            [
                x.id.clone(),
                x.kind.clone(),
                x.attempts.to_string(),
                x.message.clone(),
            ],
        );
    }
    let _ = writeln!(out, "{}", table(b, 3));
}

/// Every sample: output, verdicts, latency, error, reasons (`--full`).
fn records_table(out: &mut String, e: &EvaluationView, records: &[RecordView]) {
    out.push('\n');
    let mut b = Builder::default();
    let mut head = vec!["id".to_owned(), "output".to_owned()];
    head.extend(e.evaluators.iter().map(|x| x.name.clone()));
    head.extend(["latency".to_owned(), "error".to_owned()]);
    // Reasons get a column only when some evaluator gave one.
    let reasons = records.iter().any(|r| !r.reasons.is_empty());
    if reasons {
        head.push("reason".to_owned());
    }
    push_row(&mut b, head);
    for r in records {
        let mut row = vec![r.id.clone(), r.output.clone().unwrap_or_default()];
        for ev in &e.evaluators {
            let score = r.scores.get(&ev.name).and_then(|v| v.as_f64());
            let passed = r.passed.get(&ev.name).and_then(|v| v.as_bool());
            row.push(match (score, passed) {
                (Some(v), Some(p)) if v != 0.0 && v != 1.0 => {
                    format!("{} {v:.2}", if p { "pass" } else { "fail" })
                }
                (_, Some(true)) => "pass".into(),
                (_, Some(false)) => "fail".into(),
                _ => "–".into(),
            });
        }
        row.push(r.latency_seconds.map_or("–".into(), duration));
        row.push(r.error.clone().unwrap_or_default());
        if reasons {
            let text: Vec<String> = r
                .reasons
                .iter()
                .map(|(name, why)| format!("{name}: {}", why.as_str().unwrap_or_default()))
                .collect();
            row.push(text.join("; "));
        }
        push_row(&mut b, row);
    }
    let mut t = table(b, 1);
    if reasons {
        let last = 4 + e.evaluators.len();
        t.with(Modify::new(Columns::one(last)).with(Width::wrap(60)));
    }
    let _ = writeln!(out, "{t}");
}

/// A table whose column `wrap` (long free text) is wrapped to fit a terminal.
pub(in crate::cli) fn table(b: Builder, wrap: usize) -> Table {
    let mut t = b.build();
    t.with(Style::rounded())
        .with(Modify::new(Columns::one(wrap)).with(Width::wrap(60)));
    t
}

/// The table `list` prints.
impl Render for ListView {
    fn table(&self) -> String {
        if self.experiments.is_empty() {
            return "no experiments yet: run one with `dotevals run SPEC --experiment NAME`\n"
                .into();
        }
        let mut b = Builder::default();
        b.push_record([
            "experiment",
            "created",
            "evals",
            "samples",
            "errors",
            "accuracy",
            "wall time",
            "status",
        ]);
        for x in &self.experiments {
            push_row(
                &mut b,
                [
                    x.name.clone(),
                    x.created_at.clone(),
                    x.evaluations.to_string(),
                    format!("{}/{}", x.samples.recorded, x.samples.total),
                    x.samples.errored.to_string(),
                    with_interval(x.accuracy, x.accuracy_ci95),
                    duration(x.wall_seconds),
                    x.status.to_string(),
                ],
            );
        }
        let mut t = b.build();
        t.with(Style::rounded());
        format!("{t}\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("plain\ttext\nnext"), "plain\ttext\nnext");
        assert_eq!(printable("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(printable("x\ry\0z"), "x\\u{d}y\\u{0}z");
        assert_eq!(printable("\u{202e}gnp.exe"), "\\u{202e}gnp.exe");
        assert_eq!(printable("\u{9b}31m"), "\\u{9b}31m");
    }
}
