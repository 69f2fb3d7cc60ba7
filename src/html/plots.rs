//! Plots as inline SVG: pure functions from numbers to an SVG string.
//!
//! Every plot is one `<svg class="plot">` with axes, tick labels and units;
//! colours come from CSS classes (`s0`, `s1`, `limit`, `axis`, ...) the page's
//! stylesheet sets for light and dark schemes, so nothing here knows a colour.
//! Long series are reduced to at most [`COLUMNS`] points per series before
//! drawing, so a 100k-sample run makes a plot of a few kilobytes.

use std::fmt::Write;

use super::escape;

/// Plot size in SVG units, and the margins the axes' labels sit in.
const WIDTH: f64 = 760.0;
const HEIGHT: f64 = 240.0;
const LEFT: f64 = 56.0;
const RIGHT: f64 = 60.0;
const TOP: f64 = 26.0;
const BOTTOM: f64 = 40.0;

/// Time slices a timeline is drawn in (points per series, at most).
pub const COLUMNS: usize = 200;

/// Time slices throughput is counted in: coarser, so a rate is an average.
pub const RATE_SLICES: usize = 50;

/// Ticks of an axis from 0 to at least `max`: round steps (1, 2 or 5 times a
/// power of ten), at most about `n` of them; the last tick is the axis' end.
pub fn ticks(max: f64, n: usize) -> Vec<f64> {
    let max = if max.is_finite() && max > 0.0 {
        max
    } else {
        1.0
    };
    let rough = max / n.max(1) as f64;
    let power = 10f64.powf(rough.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        .find(|s| *s >= rough)
        .unwrap_or(10.0 * power);
    let count = (max / step - 1e-9).ceil().max(1.0) as usize;
    (0..=count).map(|i| i as f64 * step).collect()
}

/// A tick label: no trailing zeros, at most three decimals.
pub fn label(x: f64) -> String {
    if x == x.round() && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        let s = format!("{x:.3}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// Requests in flight over time from each sample's (start, end) in µs: the
/// count after each change, as (t, count) steps ascending in t, the first at
/// the first start. Empty input gives no steps.
pub fn in_flight(intervals: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut events: Vec<(u64, i64)> = Vec::with_capacity(intervals.len() * 2);
    for &(start, end) in intervals {
        events.push((start, 1));
        events.push((end.max(start), -1));
    }
    events.sort_unstable();
    let mut steps: Vec<(u64, u64)> = Vec::new();
    let mut now: i64 = 0;
    for (t, d) in events {
        now += d;
        let count = now.max(0) as u64;
        match steps.last_mut() {
            Some(last) if last.0 == t => last.1 = count,
            _ => steps.push((t, count)),
        }
    }
    steps
}

/// The highest value of a step series in each of `columns` equal slices of
/// [0, span], carrying the value in force into slices with no change.
pub fn step_max(steps: &[(u64, u64)], span: u64, columns: usize) -> Vec<u64> {
    let columns = columns.max(1);
    let span = span.max(1);
    let mut out = vec![0u64; columns];
    let slice = |t: u64| ((t as u128 * columns as u128 / span as u128) as usize).min(columns - 1);
    let mut current = 0u64;
    let mut i = 0;
    for (c, cell) in out.iter_mut().enumerate() {
        // Changes at or before the slice's start only set what is in force.
        let start = (c as u128 * span as u128).div_ceil(columns as u128) as u64;
        while i < steps.len() && steps[i].0 <= start && slice(steps[i].0) <= c {
            current = steps[i].1;
            i += 1;
        }
        let mut high = current;
        while i < steps.len() && slice(steps[i].0) <= c {
            current = steps[i].1;
            high = high.max(current);
            i += 1;
        }
        *cell = high;
    }
    out
}

/// How many of `times` (µs) fall in each of `columns` equal slices of [0, span].
pub fn counts(times: &[u64], span: u64, columns: usize) -> Vec<u64> {
    let columns = columns.max(1);
    let span = span.max(1);
    let mut out = vec![0u64; columns];
    for &t in times {
        let c = ((t as u128 * columns as u128 / span as u128) as usize).min(columns - 1);
        out[c] += 1;
    }
    out
}

/// One run on a timeline.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    /// Shown in the legend.
    pub name: String,
    /// Requests in flight, as [`in_flight`] steps.
    pub in_flight: Vec<(u64, u64)>,
    /// The adaptive limit's steps (t µs, limit); empty for fixed strategies.
    pub limit: Vec<(u64, u64)>,
    /// When each sample finished, µs.
    pub ends: Vec<u64>,
}

/// The end of the last thing on these timelines, µs.
pub fn span(timelines: &[Timeline]) -> u64 {
    timelines
        .iter()
        .flat_map(|t| {
            t.in_flight
                .last()
                .map(|s| s.0)
                .into_iter()
                .chain(t.ends.iter().copied().max())
                .chain(t.limit.last().map(|s| s.0))
        })
        .max()
        .unwrap_or(0)
}

/// Requests in flight (and the adaptive limit, dashed) on the left axis, and
/// samples finished per second on the right axis, over one time axis shared
/// by every timeline given.
pub fn timeline_svg(timelines: &[Timeline]) -> String {
    let span = span(timelines);
    let mut svg = open("Requests in flight and throughput over time");
    if span == 0 || timelines.iter().all(|t| t.in_flight.is_empty()) {
        empty(&mut svg, "no samples recorded");
        return close(svg);
    }
    let slice_s = span as f64 / 1e6 / RATE_SLICES as f64;
    let flights: Vec<Vec<u64>> = timelines
        .iter()
        .map(|t| step_max(&t.in_flight, span, COLUMNS))
        .collect();
    let limits: Vec<Vec<u64>> = timelines
        .iter()
        .map(|t| step_max(&t.limit, span, COLUMNS))
        .collect();
    let rates: Vec<Vec<f64>> = timelines
        .iter()
        .map(|t| {
            counts(&t.ends, span, RATE_SLICES)
                .into_iter()
                .map(|n| n as f64 / slice_s)
                .collect()
        })
        .collect();
    let top_left = flights
        .iter()
        .chain(&limits)
        .flatten()
        .copied()
        .max()
        .unwrap_or(1) as f64;
    let top_right = rates.iter().flatten().copied().fold(0.0, f64::max);
    let x_ticks = ticks(span as f64 / 1e6, 8);
    let left_ticks = ticks(top_left, 5);
    let right_ticks = ticks(top_right, 5);
    let frame = Frame {
        x_max: *x_ticks.last().unwrap_or(&1.0),
        y_max: *left_ticks.last().unwrap_or(&1.0),
    };
    let right_max = *right_ticks.last().unwrap_or(&1.0);
    axes(
        &mut svg,
        &frame,
        &x_ticks,
        &left_ticks,
        "time (s)",
        "requests in flight",
    );
    right_axis(&mut svg, &right_ticks, right_max);
    let x_at = |c: usize, of: usize| {
        LEFT + c as f64 * plot_w() * (span as f64 / 1e6 / frame.x_max) / of as f64
    };
    let x_of = |c: usize| x_at(c, COLUMNS);
    for (k, rate) in rates.iter().enumerate() {
        let mut d = String::new();
        for (c, r) in rate.iter().enumerate() {
            let y = TOP + (1.0 - r / right_max) * plot_h();
            let _ = write!(
                d,
                "{}{:.1},{:.1}H{:.1}",
                if c == 0 { "M" } else { "L" },
                x_at(c, RATE_SLICES),
                y,
                x_at(c + 1, RATE_SLICES)
            );
        }
        let _ = write!(svg, r#"<path class="rate s{k}" d="{d}"/>"#);
    }
    for (k, (flight, limit)) in flights.iter().zip(&limits).enumerate() {
        let _ = write!(
            svg,
            r#"<path class="flight s{k}" d="{}"/>"#,
            steps_path(flight, &frame, &x_of)
        );
        if !timelines[k].limit.is_empty() {
            let _ = write!(
                svg,
                r#"<path class="limit s{k}" d="{}"/>"#,
                steps_path(limit, &frame, &x_of)
            );
        }
    }
    legend(&mut svg, timelines);
    close(svg)
}

/// The timeline's right axis: samples finished per second, up to `max`.
fn right_axis(svg: &mut String, ticks: &[f64], max: f64) {
    for t in ticks {
        let y = TOP + (1.0 - t / max) * plot_h();
        let _ = write!(
            svg,
            r#"<text class="tick" x="{:.1}" y="{:.1}" text-anchor="start">{}</text>"#,
            WIDTH - RIGHT + 6.0,
            y + 4.0,
            label(*t)
        );
    }
    let _ = write!(
        svg,
        r#"<text class="axis-label rate" transform="translate({:.1},{:.1}) rotate(90)" text-anchor="middle">samples finished / s</text>"#,
        WIDTH - 12.0,
        TOP + plot_h() / 2.0
    );
}

/// The timeline's legend: per timeline, its in-flight, rate and limit lines.
fn legend(svg: &mut String, timelines: &[Timeline]) {
    let mut x = LEFT;
    for (k, t) in timelines.iter().enumerate() {
        let prefix = if t.name.is_empty() {
            String::new()
        } else {
            format!("{}: ", t.name)
        };
        let mut items = vec![
            ("flight", format!("{prefix}in flight")),
            ("rate", format!("{prefix}finished/s")),
        ];
        if !t.limit.is_empty() {
            items.push(("limit", format!("{prefix}adaptive limit")));
        }
        for (class, text) in items {
            let _ = write!(
                svg,
                r#"<rect class="key {class} s{k}" x="{x:.1}" y="8" width="14" height="4"/><text class="legend" x="{:.1}" y="14">{}</text>"#,
                x + 18.0,
                escape(&text)
            );
            x += 28.0 + 6.5 * text.chars().count() as f64;
        }
    }
}

/// A latency histogram of `latencies_us` (any order): 40 bins from 0 to the
/// largest latency (or to 1.5 x p99 when the largest is far out, the rest
/// counted in a note), with p50, p90 and p99 marked.
pub fn histogram_svg(latencies_us: &[u64]) -> String {
    histogram_titled("Latency histogram", latencies_us)
}

/// A histogram of durations (µs) under `title`, as [`histogram_svg`].
pub fn histogram_titled(title: &str, latencies_us: &[u64]) -> String {
    let mut svg = open(title);
    if latencies_us.is_empty() {
        empty(&mut svg, "no successful requests");
        return close(svg);
    }
    let mut sorted = latencies_us.to_vec();
    sorted.sort_unstable();
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize] as f64 / 1e3;
    let (p50, p90, p99) = (at(0.5), at(0.9), at(0.99));
    let max = sorted[sorted.len() - 1] as f64 / 1e3;
    let end = if max > 3.0 * p99 && p99 > 0.0 {
        1.5 * p99
    } else {
        max
    };
    let x_ticks = ticks(end.max(0.001), 8);
    let x_max = *x_ticks.last().unwrap_or(&1.0);
    const BINS: usize = 40;
    let mut bins = [0u64; BINS];
    let mut beyond = 0u64;
    for &v in &sorted {
        let ms = v as f64 / 1e3;
        if ms > x_max {
            beyond += 1;
            continue;
        }
        let b = ((ms / x_max * BINS as f64) as usize).min(BINS - 1);
        bins[b] += 1;
    }
    let y_ticks = ticks(bins.iter().copied().max().unwrap_or(1) as f64, 5);
    let frame = Frame {
        x_max,
        y_max: *y_ticks.last().unwrap_or(&1.0),
    };
    axes(
        &mut svg,
        &frame,
        &x_ticks,
        &y_ticks,
        "latency (ms)",
        "requests",
    );
    let w = plot_w() / BINS as f64;
    for (i, &n) in bins.iter().enumerate() {
        if n == 0 {
            continue;
        }
        let h = n as f64 / frame.y_max * plot_h();
        let _ = write!(
            svg,
            r#"<rect class="bar s0" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}"><title>{} requests</title></rect>"#,
            LEFT + i as f64 * w,
            TOP + plot_h() - h,
            (w - 1.0).max(0.5),
            h.max(0.5),
            n
        );
    }
    for (name, v) in [("p50", p50), ("p90", p90), ("p99", p99)] {
        if v > x_max {
            continue;
        }
        let x = LEFT + v / x_max * plot_w();
        // Labels right of their line, or left of it near the right edge.
        let (dx, anchor) = if v / x_max > 0.75 {
            (-3.0, "end")
        } else {
            (3.0, "start")
        };
        let row = ["p50", "p90", "p99"]
            .iter()
            .position(|n| *n == name)
            .unwrap_or(0);
        let _ = write!(
            svg,
            r#"<line class="marker" x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}"/><text class="legend" x="{:.1}" y="{:.1}" text-anchor="{anchor}">{name} {} ms</text>"#,
            TOP + plot_h(),
            x + dx,
            TOP + 10.0 + 12.0 * row as f64,
            label((v * 10.0).round() / 10.0)
        );
    }
    if beyond > 0 {
        let _ = write!(
            svg,
            r#"<text class="legend" x="{:.1}" y="14" text-anchor="end">{beyond} slower, up to {} ms, not drawn</text>"#,
            WIDTH - RIGHT,
            label(max.round())
        );
    }
    close(svg)
}

/// Samples retried and samples throttled (429/503), counted per slice of
/// time at their end (µs), over [0, span]. `None` when there were none.
pub fn retries_svg(retried: &[u64], throttled: &[u64], span: u64) -> Option<String> {
    if retried.is_empty() && throttled.is_empty() {
        return None;
    }
    const SLICES: usize = 100;
    let span = span
        .max(retried.iter().chain(throttled).copied().max().unwrap_or(0))
        .max(1);
    let series = [
        ("retried samples", counts(retried, span, SLICES)),
        (
            "throttled samples (429/503)",
            counts(throttled, span, SLICES),
        ),
    ];
    let mut svg = open("Retries and throttling over time");
    let x_ticks = ticks(span as f64 / 1e6, 8);
    let y_ticks = ticks(
        series
            .iter()
            .flat_map(|s| s.1.iter().copied())
            .max()
            .unwrap_or(1) as f64,
        4,
    );
    let frame = Frame {
        x_max: *x_ticks.last().unwrap_or(&1.0),
        y_max: *y_ticks.last().unwrap_or(&1.0),
    };
    axes(&mut svg, &frame, &x_ticks, &y_ticks, "time (s)", "samples");
    let slice_w = plot_w() * (span as f64 / 1e6 / frame.x_max) / SLICES as f64;
    for (k, (_, bins)) in series.iter().enumerate() {
        for (i, &n) in bins.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let h = n as f64 / frame.y_max * plot_h();
            let _ = write!(
                svg,
                r#"<rect class="bar e{k}" x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}"/>"#,
                LEFT + i as f64 * slice_w + k as f64 * slice_w / 2.0,
                TOP + plot_h() - h,
                (slice_w / 2.0).max(0.5),
                h.max(0.5)
            );
        }
    }
    let mut x = LEFT;
    for (k, (name, _)) in series.iter().enumerate() {
        let total: u64 = if k == 0 {
            retried.len()
        } else {
            throttled.len()
        } as u64;
        let text = format!("{name}: {total}");
        let _ = write!(
            svg,
            r#"<rect class="bar e{k}" x="{x:.1}" y="6" width="10" height="10"/><text class="legend" x="{:.1}" y="14">{}</text>"#,
            x + 14.0,
            escape(&text)
        );
        x += 30.0 + 6.5 * text.len() as f64;
    }
    Some(close(svg))
}

/// The data range an axis pair covers (both from 0).
struct Frame {
    x_max: f64,
    y_max: f64,
}

fn plot_w() -> f64 {
    WIDTH - LEFT - RIGHT
}

fn plot_h() -> f64 {
    HEIGHT - TOP - BOTTOM
}

fn open(title: &str) -> String {
    format!(
        r#"<svg class="plot" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{t}"><title>{t}</title>"#,
        t = escape(title)
    )
}

fn close(mut svg: String) -> String {
    svg.push_str("</svg>");
    svg
}

/// A framed empty plot with a note in the middle.
fn empty(svg: &mut String, note: &str) {
    let _ = write!(
        svg,
        r#"<rect class="frame" x="{LEFT}" y="{TOP}" width="{:.1}" height="{:.1}"/><text class="legend" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
        plot_w(),
        plot_h(),
        LEFT + plot_w() / 2.0,
        TOP + plot_h() / 2.0,
        escape(note)
    );
}

/// Grid, ticks and axis labels.
fn axes(
    svg: &mut String,
    f: &Frame,
    x_ticks: &[f64],
    y_ticks: &[f64],
    x_label: &str,
    y_label: &str,
) {
    for t in y_ticks {
        let y = TOP + (1.0 - t / f.y_max) * plot_h();
        let _ = write!(
            svg,
            r#"<line class="grid" x1="{LEFT}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}"/><text class="tick" x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"#,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y + 4.0,
            label(*t)
        );
    }
    for t in x_ticks {
        let x = LEFT + t / f.x_max * plot_w();
        let _ = write!(
            svg,
            r#"<line class="grid" x1="{x:.1}" y1="{TOP}" x2="{x:.1}" y2="{:.1}"/><text class="tick" x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            TOP + plot_h(),
            TOP + plot_h() + 16.0,
            label(*t)
        );
    }
    let _ = write!(
        svg,
        r#"<path class="axis" d="M{LEFT},{TOP}V{:.1}H{:.1}"/><text class="axis-label" x="{:.1}" y="{:.1}" text-anchor="middle">{}</text><text class="axis-label" transform="translate(14,{:.1}) rotate(-90)" text-anchor="middle">{}</text>"#,
        TOP + plot_h(),
        WIDTH - RIGHT,
        LEFT + plot_w() / 2.0,
        HEIGHT - 6.0,
        escape(x_label),
        TOP + plot_h() / 2.0,
        escape(y_label)
    );
}

/// A step path through per-column values on the left axis.
fn steps_path(values: &[u64], f: &Frame, x_of: &dyn Fn(usize) -> f64) -> String {
    let mut d = String::new();
    for (c, v) in values.iter().enumerate() {
        let y = TOP + (1.0 - *v as f64 / f.y_max) * plot_h();
        let _ = write!(
            d,
            "{}{:.1},{:.1}H{:.1}",
            if c == 0 { "M" } else { "L" },
            x_of(c),
            y,
            x_of(c + 1)
        );
    }
    d
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_maximum() {
        assert_eq!(ticks(10.0, 5), vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        assert_eq!(ticks(7.3, 4), vec![0.0, 2.0, 4.0, 6.0, 8.0]);
        assert_eq!(ticks(0.013, 3), vec![0.0, 0.005, 0.01, 0.015]);
        assert_eq!(*ticks(95_000.0, 5).last().unwrap(), 100_000.0);
        // Nothing to scale: one unit.
        assert_eq!(ticks(0.0, 5).last(), Some(&1.0));
        assert_eq!(ticks(f64::NAN, 5).last(), Some(&1.0));
    }

    #[test]
    fn labels_drop_trailing_zeros() {
        assert_eq!(label(2.0), "2");
        assert_eq!(label(0.005), "0.005");
        assert_eq!(label(1.25), "1.25");
    }

    #[test]
    fn in_flight_counts_overlaps() {
        assert!(in_flight(&[]).is_empty());
        assert_eq!(in_flight(&[(5, 9)]), vec![(5, 1), (9, 0)]);
        assert_eq!(
            in_flight(&[(0, 10), (2, 4), (4, 12)]),
            vec![(0, 1), (2, 2), (4, 2), (10, 1), (12, 0)]
        );
    }

    #[test]
    fn step_max_keeps_peaks_and_carries_values() {
        // A peak of 3 inside column 0 is kept; column 1 carries the 1 in force.
        let steps = [(0, 1), (1, 3), (2, 1), (30, 0)];
        assert_eq!(step_max(&steps, 40, 4), vec![3, 1, 1, 0]);
        assert_eq!(step_max(&[], 40, 2), vec![0, 0]);
    }

    #[test]
    fn counts_fall_in_their_slice() {
        assert_eq!(counts(&[0, 9, 10, 39, 40], 40, 4), vec![2, 1, 0, 2]);
        assert_eq!(counts(&[], 0, 3), vec![0, 0, 0]);
    }

    #[test]
    fn empty_timeline_is_a_framed_note() {
        let svg = timeline_svg(&[]);
        assert!(svg.starts_with("<svg class=\"plot\""));
        assert!(svg.contains("no samples recorded"));
        assert!(svg.ends_with("</svg>"));
    }

    #[test]
    fn timeline_of_one_point_draws() {
        let t = Timeline {
            name: String::new(),
            in_flight: in_flight(&[(0, 1000)]),
            limit: vec![],
            ends: vec![1000],
        };
        let svg = timeline_svg(&[t]);
        assert!(svg.contains("class=\"flight s0\""), "{svg}");
        assert!(svg.contains("class=\"rate s0\""));
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        assert!(svg.contains("time (s)") && svg.contains("requests in flight"));
    }

    #[test]
    fn timeline_scales_to_the_longest_run_and_shows_limits() {
        let a = Timeline {
            name: "a<b".into(),
            in_flight: in_flight(&[(0, 2_000_000), (0, 1_000_000)]),
            limit: vec![(0, 4), (1_000_000, 8)],
            ends: vec![1_000_000, 2_000_000],
        };
        let b = Timeline {
            name: "b".into(),
            in_flight: in_flight(&[(0, 10_000_000)]),
            limit: vec![],
            ends: vec![10_000_000],
        };
        let svg = timeline_svg(&[a, b]);
        assert!(svg.contains("class=\"limit s0\""));
        assert!(!svg.contains("class=\"limit s1\""));
        assert!(svg.contains("class=\"flight s1\""));
        // x axis to 10 s; left axis to the limit 8; the name escaped.
        assert!(svg.contains(">10</text>"));
        assert!(svg.contains(">8</text>"));
        assert!(svg.contains("a&lt;b: in flight"));
        assert!(!svg.contains("NaN"));
    }

    #[test]
    fn histogram_handles_empty_one_and_outliers() {
        assert!(histogram_svg(&[]).contains("no successful requests"));
        let one = histogram_svg(&[0]);
        assert!(one.contains("<rect class=\"bar s0\""), "{one}");
        assert!(!one.contains("NaN"));
        let mut many: Vec<u64> = (1..=1000).map(|i| i * 1000).collect();
        many.push(1_000_000_000);
        let svg = histogram_svg(&many);
        assert!(
            svg.contains("1 slower, up to 1000000 ms, not drawn"),
            "{svg}"
        );
        assert!(svg.contains("latency (ms)"));
        assert!(svg.contains("p50 "));
    }

    #[test]
    fn retries_only_when_there_were_any() {
        assert!(retries_svg(&[], &[], 100).is_none());
        let svg = retries_svg(&[1_000_000], &[2_000_000, 2_000_001], 0).unwrap();
        assert!(svg.contains("retried samples: 1"));
        assert!(svg.contains("throttled samples (429/503): 2"));
        assert!(svg.contains("<rect class=\"bar e1\""));
    }
}
