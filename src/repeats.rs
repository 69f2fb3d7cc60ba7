//! Repeats: each sample sent N times (`repeats: N`, `--repeats N`).
//!
//! Repeat 0 of a sample keeps its plain id as its key, so an experiment with
//! one repeat is what it always was; repeat r >= 1 is stored under
//! `{id}#repeat-{r}`. An evaluation with more than one repeat refuses ids
//! holding [`MARK`], so its base id is its key minus the suffix.

use std::borrow::Cow;

use crate::stats::{t_quantile, Method, Sums};
use crate::store::RepeatSums;

/// What separates a sample's id from its repeat number in a key.
pub const MARK: &str = "#repeat-";
/// The most repeats a spec may ask for.
pub const MAX: u32 = 100;

/// The key repeat `repeat` of sample `id` is stored under.
pub fn key(id: &str, repeat: u32) -> Cow<'_, str> {
    if repeat == 0 {
        Cow::Borrowed(id)
    } else {
        Cow::Owned(format!("{id}{MARK}{repeat}"))
    }
}

/// The sample id of `key` in an evaluation with more than one repeat.
pub fn base_id(key: &str) -> &str {
    match key.rfind(MARK) {
        Some(i) if key[i + MARK.len()..].parse::<u32>().is_ok() => &key[..i],
        _ => key,
    }
}

/// An evaluator's error bars when each sample was sent several times. Its
/// repeats are not independent samples: the mean of every score is a ratio
/// (Σ sums / Σ counts over samples), and its standard error is the ratio
/// estimator's, with each sample's repeats as one draw (with
/// `dataset.cluster`, each cluster's samples): SE² = G/(G-1) · Σ_g (S_g -
/// mean·n_g)² / N² over G groups of n_g scores summing to S_g, N in all. The
/// interval is a t interval on G - 1 degrees of freedom around that same
/// mean. When every repeat is scored this is exactly the standard error of
/// the per-sample means; when some errored, centre and spread still come
/// from one estimator.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RepeatBars {
    pub stderr: Option<f64>,
    /// `[lo, hi]`, clipped to [0, 1].
    pub ci95: Option<[f64; 2]>,
    pub method: Method,
    pub clusters: Option<u64>,
    /// The mean over samples of the sample variance (divides by r - 1) of
    /// their repeats' scores; samples with fewer than two scored repeats are
    /// left out, and it is `None` when none has two.
    pub within_sample_variance: Option<f64>,
}

/// The error bars of per-row sums `rows` (in cluster order, see
/// [`RepeatSums`]); `clustered` when `dataset.cluster` is set.
pub fn bars(rows: &[RepeatSums], clustered: bool) -> RepeatBars {
    let mut groups: Vec<(f64, f64)> = Vec::new();
    let mut current = None;
    let mut variances = Sums::new();
    for r in rows.iter().filter(|r| r.n > 0) {
        let sums = Sums {
            n: r.n,
            sum: r.sum,
            sum_sq: r.sum_sq,
        };
        if let Some(v) = sums.variance() {
            variances.push(v);
        }
        match groups.last_mut() {
            Some(g) if clustered && current == Some(r.cluster) => {
                g.0 += r.sum;
                g.1 += r.n as f64;
            }
            _ => groups.push((r.sum, r.n as f64)),
        }
        current = Some(r.cluster);
    }
    let (total, count) = groups
        .iter()
        .fold((0.0, 0.0), |(s, n), g| (s + g.0, n + g.1));
    let k = groups.len();
    let stderr = (k >= 2 && count > 0.0).then(|| {
        let mean = total / count;
        let ss: f64 = groups.iter().map(|(s, n)| (s - mean * n).powi(2)).sum();
        (k as f64 / (k - 1) as f64 * ss).sqrt() / count
    });
    let ci95 = stderr.map(|se| {
        let mean = total / count;
        let half = t_quantile(0.975, (k - 1) as f64) * se;
        [(mean - half).clamp(0.0, 1.0), (mean + half).clamp(0.0, 1.0)]
    });
    RepeatBars {
        stderr,
        ci95,
        method: if clustered {
            Method::ClusteredT
        } else {
            Method::T
        },
        clusters: clustered.then_some(k as u64),
        within_sample_variance: variances.mean(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(cluster: u64, values: &[f64]) -> RepeatSums {
        RepeatSums {
            cluster,
            n: values.len() as u64,
            sum: values.iter().sum(),
            sum_sq: values.iter().map(|v| v * v).sum(),
        }
    }

    #[test]
    fn bars_are_those_of_the_per_sample_means_with_the_within_variance() {
        // Two samples right 2 times of 3, one always right.
        let rows = [
            row(0, &[1.0, 1.0, 0.0]),
            row(0, &[1.0, 0.0, 1.0]),
            row(0, &[1.0; 3]),
        ];
        let b = bars(&rows, false);
        // Means 2/3, 2/3, 1: sd √(1/27), so SE = √(1/27)/√3 = 1/9.
        assert!((b.stderr.unwrap() - 1.0 / 9.0).abs() < 1e-12);
        // Variances 1/3, 1/3, 0.
        assert!((b.within_sample_variance.unwrap() - 2.0 / 9.0).abs() < 1e-12);
        assert_eq!(b.method, Method::T);
        let half = t_quantile(0.975, 2.0) / 9.0;
        let ci = b.ci95.unwrap();
        assert!((ci[0] - (7.0 / 9.0 - half).max(0.0)).abs() < 1e-12);
        assert_eq!(ci[1], 1.0);
        // One repeat each: no within-sample variance.
        let single = [row(0, &[1.0]), row(0, &[0.0])];
        assert_eq!(bars(&single, false).within_sample_variance, None);
    }

    /// Some repeats errored: the interval is centred on the mean of every
    /// score (3/7), with that ratio's standard error, never on another mean.
    #[test]
    fn unequal_repeats_centre_and_spread_on_one_estimator() {
        let rows = [row(0, &[1.0, 1.0, 0.0]), row(0, &[1.0]), row(0, &[0.0; 3])];
        let b = bars(&rows, false);
        // Residuals 2 - 3(3/7), 1 - 3/7, 0 - 3(3/7): squares sum to 122/49;
        // times 3/2, rooted, over 7 scores.
        let se = (1.5_f64 * 122.0 / 49.0).sqrt() / 7.0;
        assert!((b.stderr.unwrap() - se).abs() < 1e-12);
        let ci = b.ci95.unwrap();
        let half = t_quantile(0.975, 2.0) * se;
        assert!((ci[0] - (3.0 / 7.0 - half).max(0.0)).abs() < 1e-12);
        assert!((ci[1] - (3.0 / 7.0 + half).min(1.0)).abs() < 1e-12);
    }

    #[test]
    fn clustered_bars_take_each_cluster_as_one_draw() {
        let rows = [
            row(0, &[1.0, 0.0]),
            row(0, &[1.0, 1.0]),
            row(1, &[0.0, 0.0]),
            row(2, &[1.0, 1.0]),
        ];
        let b = bars(&rows, true);
        assert_eq!(b.method, Method::ClusteredT);
        assert_eq!(b.clusters, Some(3));
        // Mean 5/8; clusters (3 of 4), (0 of 2), (2 of 2): residuals 0.5,
        // -1.25, 0.75, squares 2.375, times 3/2, rooted, over 8.
        let se = (1.5_f64 * 2.375).sqrt() / 8.0;
        assert!((b.stderr.unwrap() - se).abs() < 1e-12);
    }

    #[test]
    fn repeat_zero_keeps_the_id_and_the_rest_strip_back_to_it() {
        assert_eq!(key("a", 0), "a");
        assert_eq!(key("a", 2), "a#repeat-2");
        for r in 0..4 {
            assert_eq!(base_id(&key("q-7", r)), "q-7");
        }
        assert_eq!(base_id("a#repeat-x"), "a#repeat-x");
    }
}
