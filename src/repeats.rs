//! Repeats: each sample sent N times (`repeats: N`, `--repeats N`).
//!
//! Repeat 0 of a sample keeps its plain id as its key, so an experiment with
//! one repeat is what it always was; repeat r >= 1 is stored under
//! `{id}#repeat-{r}`. An evaluation with more than one repeat refuses ids
//! holding [`MARK`], so its base id is its key minus the suffix.

use std::borrow::Cow;

use crate::stats::{t_quantile, Clustered, Method, Summary, Sums};
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
/// repeats are not independent samples, so the standard error is that of the
/// per-sample means (one per dataset row, n = rows), with a t interval around
/// the mean of every score; with `dataset.cluster` the per-sample means are
/// clustered (a clustered t interval over the clusters).
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
/// [`RepeatSums`]) around `mean`, the mean of every score; `clustered` when
/// `dataset.cluster` is set.
pub fn bars(rows: &[RepeatSums], mean: Option<f64>, clustered: bool) -> RepeatBars {
    let mut means = Sums::new();
    let mut by_cluster = Clustered::new();
    let mut cluster = Sums::new();
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
        let m = r.sum / r.n as f64;
        means.push(m);
        if current != Some(r.cluster) {
            by_cluster.push_cluster(&cluster);
            cluster = Sums::new();
            current = Some(r.cluster);
        }
        cluster.push(m);
    }
    by_cluster.push_cluster(&cluster);
    let (summary, df) = if clustered {
        (Summary::clustered(&by_cluster), by_cluster.clusters())
    } else {
        (Summary::graded(&means), means.n)
    };
    let ci95 = match (mean, summary.stderr) {
        (Some(m), Some(se)) if df >= 2 => {
            let half = t_quantile(0.975, (df - 1) as f64) * se;
            Some([(m - half).clamp(0.0, 1.0), (m + half).clamp(0.0, 1.0)])
        }
        _ => None,
    };
    RepeatBars {
        stderr: summary.stderr,
        ci95,
        method: summary.method,
        clusters: summary.clusters,
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
        let b = bars(&rows, Some(7.0 / 9.0), false);
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
        assert_eq!(bars(&single, Some(0.5), false).within_sample_variance, None);
        // Clustered: each cluster holds per-sample means.
        let rows = [
            row(0, &[1.0, 0.0]),
            row(0, &[1.0, 1.0]),
            row(1, &[0.0, 0.0]),
            row(2, &[1.0, 1.0]),
        ];
        let b = bars(&rows, Some(0.625), true);
        assert_eq!(b.method, Method::ClusteredT);
        assert_eq!(b.clusters, Some(3));
        let mut c = Clustered::new();
        c.push_cluster(&Sums {
            n: 2,
            sum: 1.5,
            sum_sq: 1.25,
        });
        c.push_cluster(&Sums {
            n: 1,
            sum: 0.0,
            sum_sq: 0.0,
        });
        c.push_cluster(&Sums {
            n: 1,
            sum: 1.0,
            sum_sq: 1.0,
        });
        assert_eq!(b.stderr, c.stderr());
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
