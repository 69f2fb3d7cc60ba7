//! An evaluation's summary, and a comparison's, as plain HTML tables.

use std::io::{self, Write};

use super::escape;
use crate::compare::view::{EvaluationComparison, Kind};
use crate::human::{duration, percent};
use crate::view::{EndpointView, ErrorKindView, EvaluationView, EvaluatorView, Latency};

fn or_dash(x: Option<String>) -> String {
    x.unwrap_or_else(|| "–".to_owned())
}

/// A mean with its 95% interval on [0, 1], as a small inline SVG.
fn error_bar(ev: &EvaluatorView) -> String {
    let Some(mean) = ev.mean else {
        return String::new();
    };
    let x = |v: f64| 2.0 + v.clamp(0.0, 1.0) * 116.0;
    let interval = ev.ci95.map_or(String::new(), |[lo, hi]| {
        format!(
            r#"<line class="ci" x1="{:.1}" y1="7" x2="{:.1}" y2="7"/><line class="ci" x1="{:.1}" y1="3" x2="{:.1}" y2="11"/><line class="ci" x1="{:.1}" y1="3" x2="{:.1}" y2="11"/>"#,
            x(lo),
            x(hi),
            x(lo),
            x(lo),
            x(hi),
            x(hi)
        )
    });
    format!(
        r#"<svg class="errorbar" viewBox="0 0 120 14" width="120" height="14" role="img" aria-label="mean and 95% interval"><line class="track" x1="2" y1="7" x2="118" y2="7"/>{interval}<circle class="mean" cx="{:.1}" cy="7" r="3"/></svg>"#,
        x(mean)
    )
}

/// An evaluation's figures: run facts, evaluators with their intervals,
/// errors by kind, timing and tokens.
pub fn write(out: &mut impl Write, r: &EvaluationView) -> io::Result<()> {
    out.write_all(b"<table class=\"facts\"><tbody>")?;
    for (k, v) in facts(r) {
        write!(out, "<tr><th>{}</th><td>{}</td></tr>", k, escape(&v))?;
    }
    out.write_all(b"</tbody></table>")?;
    if !r.evaluators.is_empty() {
        evaluators(out, &r.evaluators)?;
    }
    if !r.endpoints.is_empty() {
        endpoints(out, &r.endpoints)?;
    }
    if let Some(kinds) = r.error_kinds.as_ref().filter(|k| !k.is_empty()) {
        error_kinds(out, kinds)?;
    }
    Ok(())
}

/// Per replica: samples, errors, failed attempts, rests, speed, latency.
fn endpoints(out: &mut impl Write, endpoints: &[EndpointView]) -> io::Result<()> {
    out.write_all(b"<table class=\"endpoints\"><thead><tr><th>replica</th><th>samples</th><th>share</th><th>errors</th><th>failed attempts</th><th>rests</th><th>replies/s</th><th>latency p50</th><th>p90</th></tr></thead><tbody>")?;
    for e in endpoints {
        let latency =
            |f: fn(&Latency) -> f64| or_dash(e.latency_seconds.as_ref().map(|l| duration(f(l))));
        write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{:.1}%</td><td>{}</td><td>{} of {}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&e.url),
            e.samples,
            100.0 * e.share,
            e.errors,
            e.failed_attempts,
            e.attempts,
            e.rests,
            or_dash(e.throughput_per_second.map(|r| format!("{r:.2}"))),
            latency(|l| l.p50),
            latency(|l| l.p90),
        )?;
    }
    out.write_all(b"</tbody></table>")?;
    Ok(())
}

/// The run's facts, label and text.
fn facts(r: &EvaluationView) -> Vec<(&'static str, String)> {
    let s = &r.samples;
    let t = &r.timing;
    let mut facts: Vec<(&'static str, String)> = vec![
        ("model", format!("{} ({})", r.model, r.provider)),
        (
            "strategy",
            format!("{} (max {} in flight)", r.strategy, r.max_concurrency),
        ),
        ("status", r.status.to_string()),
        (
            "samples",
            format!(
                "{} of {} recorded · {} finished · {} errored{}",
                s.recorded,
                s.total,
                s.finished,
                s.errored,
                match s.cached {
                    0 => String::new(),
                    n => format!(" · {n} cached (timing covers the rest)"),
                }
            ),
        ),
        ("runs", r.runs.to_string()),
        ("wall time", duration(t.wall_seconds)),
        (
            "throughput",
            or_dash(t.throughput_per_second.map(|x| format!("{x:.1} samples/s"))),
        ),
        (
            "latency",
            or_dash(t.latency_seconds.as_ref().map(|l| l.percentiles())),
        ),
        (
            "first token",
            or_dash(
                t.time_to_first_token_seconds
                    .as_ref()
                    .map(|l| l.percentiles()),
            ),
        ),
        (
            "output speed",
            or_dash(t.output_tokens_per_second.as_ref().map(|q| {
                format!(
                    "p50 {:.1} · p90 {:.1} · p99 {:.1} tokens/s",
                    q.p50, q.p90, q.p99
                )
            })),
        ),
        (
            "in flight",
            or_dash(t.mean_in_flight.map(|x| format!("{x:.1} on average"))),
        ),
        (
            "retries",
            format!(
                "{} retries · {} throttled (429/503)",
                t.retries, t.throttled
            ),
        ),
        ("tokens", r.tokens.describe()),
    ];
    if r.repeats > 1 {
        facts.insert(4, ("repeats", r.repeats.to_string()));
    }
    if let Some(l) = &t.concurrency_limit {
        facts.push((
            "adaptive limit",
            format!(
                "min {} · median {} · max {} · {} changes",
                l.min, l.median, l.max, l.changes
            ),
        ));
    }
    facts
}

/// One row per evaluator: pass rate, mean, interval and its bar, judge.
fn evaluators(out: &mut impl Write, evaluators: &[EvaluatorView]) -> io::Result<()> {
    out.write_all(b"<table class=\"evaluators\"><thead><tr><th>evaluator</th><th>scored</th><th>pass rate</th><th>mean</th><th>95% interval</th><th></th><th>&plusmn; stderr</th><th>unscored</th><th>judge</th></tr></thead><tbody>")?;
    for ev in evaluators {
        let judge = ev.judge.as_ref().map_or(String::new(), |j| {
            let latency = j
                .latency_seconds
                .as_ref()
                .map_or(String::new(), |l| format!(" · p50 {}", duration(l.p50)));
            format!(
                "{} calls · {} failed · {} retries · {} throttled{latency} · {} tokens",
                j.calls,
                j.failed,
                j.retries,
                j.throttled,
                j.tokens.all()
            )
        });
        let below = if ev.below_fail_under == Some(true) {
            " class=\"below\""
        } else {
            ""
        };
        write!(
            out,
            "<tr{below}><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&ev.name),
            ev.scored,
            or_dash(ev.pass_rate.map(percent)),
            or_dash(ev.mean.map(|m| format!("{m:.3}"))),
            or_dash(ev.ci95.map(|[lo, hi]| format!("{lo:.3} – {hi:.3}"))),
            error_bar(ev),
            or_dash(ev.stderr.map(|x| format!("{x:.3}"))),
            ev.unscored,
            escape(&judge)
        )?;
    }
    out.write_all(b"</tbody></table>")?;
    Ok(())
}

/// Errors by kind, with the first sample of each.
fn error_kinds(out: &mut impl Write, kinds: &[ErrorKindView]) -> io::Result<()> {
    out.write_all(b"<table class=\"errors\"><thead><tr><th>error</th><th>samples</th><th>first</th><th>message</th></tr></thead><tbody>")?;
    for k in kinds {
        write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&k.kind),
            k.count,
            escape(&k.example_id),
            escape(&k.example)
        )?;
    }
    out.write_all(b"</tbody></table>")?;
    Ok(())
}

/// A comparison of one evaluation: per evaluator B − A with its interval,
/// then the samples whose verdict flipped, with both outputs.
pub fn comparison(
    out: &mut impl Write,
    c: &EvaluationComparison,
    names: (&str, &str),
) -> io::Result<()> {
    let (na, nb) = (escape(names.0), escape(names.1));
    write!(
        out,
        r#"<p class="meta">{} samples paired · {} only in {na} · {} only in {nb} · {} rows edited</p>"#,
        c.samples.matched,
        c.samples.only_in_a.count,
        c.samples.only_in_b.count,
        c.samples.changed_rows.count
    )?;
    write!(out, "<table class=\"evaluators\"><thead><tr><th>evaluator</th><th>{na}</th><th>{nb}</th><th>B − A</th><th>95% interval</th><th>p</th><th>pass→fail</th><th>fail→pass</th></tr></thead><tbody>")?;
    for ev in &c.evaluators {
        let value = |x: f64| match ev.kind {
            Kind::PassFail => percent(x),
            Kind::Graded => format!("{x:.3}"),
        };
        let diff = |x: f64| match ev.kind {
            Kind::PassFail => format!("{:+.1} pts", 100.0 * x),
            Kind::Graded => format!("{x:+.3}"),
        };
        write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&ev.name),
            or_dash(ev.mean_a.map(value)),
            or_dash(ev.mean_b.map(value)),
            or_dash(ev.difference.map(diff)),
            or_dash(ev.ci95.map(|[lo, hi]| format!("{} to {}", diff(lo), diff(hi)))),
            or_dash(ev.p_value.map(|p| if p < 0.001 { "< 0.001".into() } else { format!("{p:.3}") })),
            ev.pass_to_fail,
            ev.fail_to_pass
        )?;
    }
    out.write_all(b"</tbody></table>")?;
    for ev in &c.evaluators {
        let Some(flips) = ev.flips.as_ref().filter(|f| !f.is_empty()) else {
            continue;
        };
        let head = format!(
            "<table class=\"flips\"><thead><tr><th>id</th><th>{na}</th><th>{nb}</th><th>{na} output</th><th>{nb} output</th></tr></thead><tbody>"
        );
        write!(
            out,
            "<h3>{}: {} flipped</h3>{head}",
            escape(&ev.name),
            flips.len()
        )?;
        for (i, f) in flips.iter().enumerate() {
            if i == FLIPS_SHOWN {
                // The rest folded, so the summaries and plots stay in view.
                write!(
                    out,
                    "</tbody></table><details class=\"more-flips\"><summary>{} more flipped</summary>{head}",
                    flips.len() - FLIPS_SHOWN
                )?;
            }
            write!(
                out,
                "<tr class=\"flip\"><td>{}</td><td>{}</td><td>{}</td><td class=\"text\">{}</td><td class=\"text\">{}</td></tr>",
                escape(&f.id),
                f.score_a,
                f.score_b,
                escape(f.output_a.as_deref().unwrap_or("")),
                escape(f.output_b.as_deref().unwrap_or(""))
            )?;
        }
        out.write_all(b"</tbody></table>")?;
        if flips.len() > FLIPS_SHOWN {
            out.write_all(b"</details>")?;
        }
    }
    Ok(())
}

/// Flipped samples listed open per evaluator; the rest are folded.
const FLIPS_SHOWN: usize = 20;
