//! One evaluator's scores: sums, mean, standard error and interval (Wilson
//! for pass/fail, Student's t for graded scores), clustered when samples
//! come in groups.

use super::*;

/// Running sums of one evaluator's scores: all [`Summary`] needs.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Sums {
    pub n: u64,
    pub sum: f64,
    pub sum_sq: f64,
}

impl Sums {
    pub const fn new() -> Self {
        Sums {
            n: 0,
            sum: 0.0,
            sum_sq: 0.0,
        }
    }

    /// Adds one score.
    pub fn push(&mut self, x: f64) {
        self.n += 1;
        self.sum += x;
        self.sum_sq += x * x;
    }

    /// Adds another set of scores (pooling, as `list` does).
    pub fn merge(&mut self, other: &Sums) {
        self.n += other.n;
        self.sum += other.sum;
        self.sum_sq += other.sum_sq;
    }

    /// The mean; `None` with no score.
    pub fn mean(&self) -> Option<f64> {
        (self.n > 0).then(|| self.sum / self.n as f64)
    }

    /// Σ (x - mean)², never negative.
    fn sum_sq_dev(&self) -> f64 {
        if self.n == 0 {
            return 0.0;
        }
        (self.sum_sq - self.sum * self.sum / self.n as f64).max(0.0)
    }

    /// The sample variance Σ (x - mean)² / (n - 1); `None` below two scores.
    pub fn variance(&self) -> Option<f64> {
        (self.n > 1).then(|| self.sum_sq_dev() / (self.n - 1) as f64)
    }

    /// The standard error of the mean, sd / √n (Miller's SE_CLT); `None`
    /// below two scores.
    pub fn stderr(&self) -> Option<f64> {
        self.variance().map(|v| (v / self.n as f64).sqrt())
    }
}

/// Which 95% interval a [`Summary`] carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Wilson score interval on a pass rate.
    Wilson,
    /// mean ± t(0.975, n - 1) · SE, for graded scores.
    T,
    /// mean ± t(0.975, clusters - 1) · clustered SE (the usual cluster-robust
    /// convention: as many degrees of freedom as clusters, less one).
    ClusteredT,
}

/// One evaluator's scores, summarised with an error bar.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub n: u64,
    /// `None` when `n == 0`.
    pub mean: Option<f64>,
    /// Sample standard deviation (divides by n - 1); `None` when `n < 2`.
    pub sd: Option<f64>,
    /// Standard error of the mean; `None` when `n < 2` (or, clustered, with
    /// fewer than two clusters).
    pub stderr: Option<f64>,
    /// 95% interval, clipped to [0, 1]; see [`Summary::method`].
    pub ci95: Option<Interval>,
    pub method: Method,
    /// Number of clusters when the standard error is clustered.
    pub clusters: Option<u64>,
}

impl Summary {
    /// A pass rate: `passes` of `n` samples passed. The standard error is
    /// sd / √n with the sample sd, √(p(1-p)·n/(n-1)); the interval is Wilson's
    /// (see [`wilson`]), defined from `n = 1` on.
    pub fn pass_fail(passes: u64, n: u64) -> Self {
        let passes = passes.min(n);
        let sums = Sums {
            n,
            sum: passes as f64,
            sum_sq: passes as f64,
        };
        Summary {
            n,
            mean: sums.mean(),
            sd: sums.variance().map(f64::sqrt),
            stderr: sums.stderr(),
            ci95: wilson(passes, n, Z_975),
            method: Method::Wilson,
            clusters: None,
        }
    }

    /// Graded scores: mean ± t(0.975, n-1) · sd/√n, the exact t quantile at
    /// every n (no switch to the normal; at n = 100k they agree to 1e-5).
    pub fn graded(sums: &Sums) -> Self {
        Summary::t(sums, sums.stderr(), sums.n, Method::T, None)
    }

    /// Either kind of score with the clustered standard error of
    /// [`Clustered::stderr`] and the interval mean ± t(0.975, G-1) · SE for G
    /// clusters. Wilson's interval assumes independent samples, so a
    /// clustered pass rate gets this interval too (clipped to [0, 1]).
    pub fn clustered(c: &Clustered) -> Self {
        let clusters = c.clusters();
        Summary::t(
            &c.total(),
            c.stderr(),
            clusters,
            Method::ClusteredT,
            Some(clusters),
        )
    }

    /// The mean of `sums` with standard error `stderr` and the interval
    /// mean ± t(0.975, units - 1) · SE on [0, 1], where `units` are the
    /// independent units (samples, or clusters).
    fn t(
        sums: &Sums,
        stderr: Option<f64>,
        units: u64,
        method: Method,
        clusters: Option<u64>,
    ) -> Self {
        let mean = sums.mean();
        let ci95 = match (mean, stderr) {
            (Some(m), Some(se)) => Some(Interval::around(
                m,
                t_quantile(0.975, (units - 1) as f64) * se,
                0.0,
                1.0,
            )),
            _ => None,
        };
        Summary {
            n: sums.n,
            mean,
            sd: sums.variance().map(f64::sqrt),
            stderr,
            ci95,
            method,
            clusters,
        }
    }
}

/// Wilson score interval for `passes` successes in `n` trials at normal
/// quantile `z` (use [`Z_975`] for 95%):
///
/// ```text
/// center = (p + z²/2n) / (1 + z²/n)
/// half   = z / (1 + z²/n) · √(p(1-p)/n + z²/4n²)
/// ```
///
/// Exactly 0 at `passes = 0` and 1 at `passes = n`; `None` when `n = 0`.
pub fn wilson(passes: u64, n: u64, z: f64) -> Option<Interval> {
    if n == 0 {
        return None;
    }
    let passes = passes.min(n);
    let nf = n as f64;
    let p = passes as f64 / nf;
    let z2 = z * z;
    let denom = 1.0 + z2 / nf;
    let center = (p + z2 / (2.0 * nf)) / denom;
    let half = z / denom * (p * (1.0 - p) / nf + z2 / (4.0 * nf * nf)).sqrt();
    let mut ci = Interval::around(center, half, 0.0, 1.0);
    if passes == 0 {
        ci.lo = 0.0;
    }
    if passes == n {
        ci.hi = 1.0;
    }
    Some(ci)
}

/// Miller's clustered standard error (section 2.2), accumulated one cluster
/// at a time: feed the rows sorted by cluster, keep a [`Sums`] for the current
/// cluster and hand it to [`Clustered::push_cluster`] when the cluster key
/// changes (or push per-cluster `GROUP BY` sums directly).
///
/// With s̄ the overall mean and e_i = s_i - s̄,
///
/// ```text
/// SE_clustered² = SE_CLT² + (1/n²) Σ_c Σ_{i∈c} Σ_{j∈c, j≠i} e_i e_j
///               = SE_CLT² + (1/n²) Σ_c [ (Σ_{i∈c} e_i)² - Σ_{i∈c} e_i² ]
/// SE_CLT²       = Σ_i e_i² / (n (n-1))
/// ```
///
/// Σ_{i∈c} e_i = S_c - n_c s̄ for the cluster sum S_c, so only Σ S_c²,
/// Σ n_c S_c and Σ n_c² are kept. Because SE_CLT uses n - 1, clusters of one
/// sample each give exactly the plain [`Sums::stderr`] (the textbook CR0
/// estimator, (1/n²) Σ_c (Σ_{i∈c} e_i)², would give (n-1)/n times its square).
/// The result is never below (1/n)·√(Σ_c (Σ_{i∈c} e_i)²), so never negative.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Clustered {
    total: Sums,
    clusters: u64,
    /// Σ S_c²
    sum_cluster_sq: f64,
    /// Σ n_c S_c
    sum_n_s: f64,
    /// Σ n_c²
    sum_n_sq: f64,
}

impl Clustered {
    pub const fn new() -> Self {
        Clustered {
            total: Sums::new(),
            clusters: 0,
            sum_cluster_sq: 0.0,
            sum_n_s: 0.0,
            sum_n_sq: 0.0,
        }
    }

    /// Adds one cluster's scores; an empty one is ignored.
    pub fn push_cluster(&mut self, c: &Sums) {
        if c.n == 0 {
            return;
        }
        let n = c.n as f64;
        self.total.merge(c);
        self.clusters += 1;
        self.sum_cluster_sq += c.sum * c.sum;
        self.sum_n_s += n * c.sum;
        self.sum_n_sq += n * n;
    }

    /// All scores pooled.
    pub fn total(&self) -> Sums {
        self.total
    }

    pub fn clusters(&self) -> u64 {
        self.clusters
    }

    /// The clustered standard error; `None` with fewer than two samples or
    /// fewer than two clusters (one cluster says nothing about the variance
    /// between clusters).
    pub fn stderr(&self) -> Option<f64> {
        let n = self.total.n;
        if n < 2 || self.clusters < 2 {
            return None;
        }
        let nf = n as f64;
        let mean = self.total.sum / nf;
        // Σ_c (S_c - n_c s̄)²
        let between = (self.sum_cluster_sq - 2.0 * mean * self.sum_n_s
            + mean * mean * self.sum_n_sq)
            .max(0.0);
        let within = self.total.sum_sq_dev();
        let var = within / (nf * (nf - 1.0)) + (between - within) / (nf * nf);
        Some(var.max(0.0).sqrt())
    }
}
