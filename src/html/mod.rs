//! `dotevals report`: one self-contained HTML file per experiment (or pair of
//! experiments). Everything is inline (CSS, script, data); the summary and the
//! plots are plain HTML and SVG, so the page reads with JavaScript off; only
//! the sample browser and the sample lists of a matrix's heat map
//! ([`page.js`](page.js)) need it.
//!
//! The samples are streamed into `<script type="application/json"
//! id="samples-data">` as compact JSON, with every `<` written `\u003c` so
//! no output can close the script element. Every text from the store that
//! lands in HTML goes through [`escape`].

mod file;
mod grid;
pub mod plots;
mod samples;
mod summary;

use std::io::{self, Write};

use crate::compare::view::CompareView;
use crate::store::read::LimitStep;
use crate::store::SampleRow;
use crate::view::{EvaluationView, ExperimentView};

pub use file::{check_target, write, PageError};
pub use samples::Source;

const CSS: &str = include_str!("page.css");
const JS: &str = include_str!("page.js");

/// HTML-escapes `&`, `<`, `>`, `"` and `'`.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// What the page shows of one evaluation, read from the store.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Its view (`show`'s, with error kinds).
    pub view: EvaluationView,
    /// Every sample record, in dataset order.
    pub samples: Vec<SampleRow>,
    /// The adaptive limit's steps in the latest run (empty for fixed strategies).
    pub limit: Vec<LimitStep>,
    /// Successful latencies, µs.
    pub latencies: Vec<u64>,
}

/// One experiment with its evaluations.
#[derive(Debug, Clone)]
pub struct Experiment {
    pub view: ExperimentView,
    pub evaluations: Vec<Evaluation>,
}

impl Experiment {
    /// Recorded samples over every evaluation.
    pub fn recorded(&self) -> u64 {
        self.view
            .evaluations
            .iter()
            .map(|e| e.samples.recorded)
            .sum()
    }
}

/// Writes the report page of one experiment.
pub fn write_single(out: &mut impl Write, x: &Experiment) -> io::Result<()> {
    head(out, &format!("dotevals report: {}", x.view.experiment))?;
    write!(
        out,
        r#"<header><h1>{}</h1><p class="meta">created {} · {} · <span id="sample-count" data-count="{n}">{n}</span> samples recorded</p></header>"#,
        escape(&x.view.experiment),
        escape(&x.view.created_at),
        escape(&x.view.status.to_string()),
        n = x.recorded()
    )?;
    if let Some(m) = &x.view.matrix {
        grid::write(out, m)?;
    }
    for e in &x.evaluations {
        write!(
            out,
            r#"<section class="evaluation"><h2>{}</h2>"#,
            escape(&e.view.name)
        )?;
        summary::write(out, &e.view)?;
        out.write_all(b"<h3>Over time</h3>")?;
        out.write_all(plots::timeline_svg(&[timeline(e, "")]).as_bytes())?;
        plots_below(out, e)?;
        out.write_all(b"</section>")?;
    }
    if let Some(m) = &x.view.matrix {
        grid::write_data(out, m, x)?;
    }
    let sources: Vec<Source<'_>> = x
        .evaluations
        .iter()
        .map(|e| Source {
            label: e.view.name.clone(),
            evaluation: e,
        })
        .collect();
    browser(out, &sources)
}

/// Writes the comparison page of experiments `a` and `b`: the flipped
/// samples first, then both summaries side by side and both timelines on one
/// time axis.
pub fn write_comparison(
    out: &mut impl Write,
    a: &Experiment,
    b: &Experiment,
    compared: &CompareView,
) -> io::Result<()> {
    let (na, nb) = (&a.view.experiment, &b.view.experiment);
    head(out, &format!("dotevals report: {na} vs {nb}"))?;
    write!(
        out,
        r#"<header><h1>{} <span class="vs">vs</span> {}</h1><p class="meta">differences are {} − {} · <span id="sample-count" data-count="{n}">{n}</span> samples recorded in both</p></header>"#,
        escape(na),
        escape(nb),
        escape(nb),
        escape(na),
        n = a.recorded() + b.recorded()
    )?;
    for c in &compared.evaluations {
        write!(
            out,
            r#"<section class="evaluation"><h2>{}</h2>"#,
            escape(&c.name)
        )?;
        summary::comparison(out, c, (na, nb))?;
        out.write_all(b"</section>")?;
    }
    out.write_all(b"<section class=\"side-by-side\">")?;
    for x in [a, b] {
        write!(
            out,
            r#"<div class="side"><h2>{}</h2>"#,
            escape(&x.view.experiment)
        )?;
        for e in &x.evaluations {
            write!(out, "<h3>{}</h3>", escape(&e.view.name))?;
            summary::write(out, &e.view)?;
            plots_below(out, e)?;
        }
        out.write_all(b"</div>")?;
    }
    out.write_all(b"</section>")?;
    let names: Vec<&String> = a
        .evaluations
        .iter()
        .chain(&b.evaluations)
        .map(|e| &e.view.name)
        .collect();
    let mut seen = Vec::new();
    for name in names {
        if seen.contains(&name) {
            continue;
        }
        seen.push(name);
        let lines: Vec<plots::Timeline> = [(na, a), (nb, b)]
            .iter()
            .filter_map(|(label, x)| {
                let e = x.evaluations.iter().find(|e| &e.view.name == name)?;
                Some(timeline(e, label))
            })
            .collect();
        write!(
            out,
            r#"<section class="evaluation"><h2>{}: over time</h2>"#,
            escape(name)
        )?;
        out.write_all(plots::timeline_svg(&lines).as_bytes())?;
        out.write_all(b"</section>")?;
    }
    let mut sources = Vec::new();
    for (label, x) in [(na, a), (nb, b)] {
        for e in &x.evaluations {
            sources.push(Source {
                label: format!("{label}: {}", e.view.name),
                evaluation: e,
            });
        }
    }
    browser(out, &sources)
}

/// The latency histogram, the time to first token's when replies streamed,
/// and, when there were any, retries on the time axis.
fn plots_below(out: &mut impl Write, e: &Evaluation) -> io::Result<()> {
    out.write_all(b"<h3>Latency</h3>")?;
    out.write_all(plots::histogram_svg(&e.latencies).as_bytes())?;
    let first_tokens: Vec<u64> = e
        .samples
        .iter()
        .filter(|s| s.error_kind.is_none())
        .filter_map(|s| s.call.first_token_us)
        .collect();
    if !first_tokens.is_empty() {
        out.write_all(b"<h3>Time to first token</h3>")?;
        let svg = plots::histogram_titled("Time to first token histogram", &first_tokens);
        out.write_all(svg.as_bytes())?;
    }
    let end = |s: &SampleRow| s.end_us;
    let retried: Vec<u64> = e
        .samples
        .iter()
        .filter(|s| s.call.attempts > 1)
        .map(end)
        .collect();
    let throttled: Vec<u64> = e
        .samples
        .iter()
        .filter(|s| s.call.throttled > 0)
        .map(end)
        .collect();
    let span = e.samples.iter().map(|s| s.end_us).max().unwrap_or(0);
    if let Some(svg) = plots::retries_svg(&retried, &throttled, span) {
        out.write_all(b"<h3>Retries and throttling</h3>")?;
        out.write_all(svg.as_bytes())?;
    }
    Ok(())
}

/// An evaluation's timeline from its samples' start and end times (a reply
/// from the cache was never in flight).
fn timeline(e: &Evaluation, name: &str) -> plots::Timeline {
    let sent = || e.samples.iter().filter(|s| !s.cached);
    let intervals: Vec<(u64, u64)> = sent().map(|s| (s.start_us, s.end_us)).collect();
    plots::Timeline {
        name: name.to_owned(),
        in_flight: plots::in_flight(&intervals),
        limit: e.limit.iter().map(|s| (s.t_us, s.limit)).collect(),
        ends: sent().map(|s| s.end_us).collect(),
    }
}

fn head(out: &mut impl Write, title: &str) -> io::Result<()> {
    write!(
        out,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><meta name="generator" content="dotevals {}"><title>{}</title><style>{CSS}</style></head><body>"#,
        env!("CARGO_PKG_VERSION"),
        escape(title)
    )
}

/// The sample browser's controls, its empty table, the samples as JSON and
/// the script; then the end of the page.
fn browser(out: &mut impl Write, sources: &[Source<'_>]) -> io::Result<()> {
    let mut evaluators: Vec<&str> = Vec::new();
    for s in sources {
        for ev in &s.evaluation.view.evaluators {
            if !evaluators.contains(&ev.name.as_str()) {
                evaluators.push(&ev.name);
            }
        }
    }
    out.write_all(
        br#"<section id="browser"><h2>Samples</h2><div class="controls"><label>Show <select id="filter"><option value="all">all</option><option value="pass">passed</option><option value="fail">failed</option><option value="error">errored</option></select></label> <label>by evaluator <select id="evaluator"><option value="">any</option>"#,
    )?;
    for name in evaluators {
        let name = escape(name);
        write!(out, r#"<option value="{name}">{name}</option>"#)?;
    }
    out.write_all(
        br#"</select></label> <label>search <input id="search" type="search" placeholder="id, prompt, output, reason..."></label> <span class="meta"><span id="shown-count"></span> shown</span></div><noscript><p>The sample browser needs JavaScript; the summary and plots above do not.</p></noscript><table class="samples"><thead><tr><th>id</th><th>evaluation</th><th>prompt</th><th>output</th><th>expected (row)</th><th>scores</th><th>error</th><th>latency</th></tr></thead><tbody id="samples"></tbody></table><p><button id="more" type="button" hidden>Show more</button></p></section><script type="application/json" id="samples-data">"#,
    )?;
    samples::write_json(&mut samples::ScriptSafe(&mut *out), sources)?;
    write!(out, "</script><script>{JS}</script></body></html>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_the_five() {
        assert_eq!(
            escape(r#"<a href="x">'&'</a>"#),
            "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;"
        );
    }
}
