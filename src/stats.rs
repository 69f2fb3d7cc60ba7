//! Error bars and paired comparisons: the statistics behind `show`, `list`
//! and `compare`, following Miller (2024), "Adding Error Bars to Evals"
//! (arXiv 2411.00640).
//!
//! Everything here is pure arithmetic on counters that a caller streams into:
//! no I/O, no allocation per sample, O(n) over the samples and O(1) memory, so
//! `compare` on 100k matched pairs costs well under a millisecond here.
//!
//! - [`Sums`] keeps `n`, the sum and the sum of squares of one evaluator's
//!   scores (what the store can keep in counters); [`Summary`] turns them into
//!   mean, sample standard deviation, standard error and a 95% interval:
//!   Wilson's for pass/fail, Student's t for graded scores.
//! - [`Clustered`] gives Miller's clustered standard error when samples come
//!   in groups (`dataset.cluster`).
//! - [`PassFailTable`] and [`PairedSums`] compare two evaluations on matched
//!   samples: exact McNemar or paired t, the paired standard error of the
//!   difference, its interval, and [`mde`], the smallest difference this many
//!   samples could detect.
//!
//! Scores in dotevals are in [0, 1]; intervals are clipped to that range
//! (differences to [-1, 1]). Sums of squares lose precision only when the
//! variance is tiny next to the squared mean, which scores in [0, 1] cannot
//! make worse than about 1e-16 * n in the variance; a negative rounding residue
//! is read as zero.
//!
//! Undefined quantities are `None`, never NaN or infinity, so JSON never sees
//! them: with no sample there is no mean; with one sample there is a mean but
//! no standard deviation, standard error or t interval (the Wilson interval of
//! a pass rate is defined from one sample on).
//!
//! The special functions (log-gamma, the regularized incomplete beta, the t
//! distribution and the binomial tail) are implemented here rather than pulled
//! from a crate; the tests check them against SciPy.

/// z such that P(Z < z) = 0.975 for a standard normal Z: the two-sided 95% quantile.
pub const Z_975: f64 = 1.959_963_984_540_054;
/// z such that P(Z < z) = 0.80: the one-sided quantile for 80% power.
pub const Z_80: f64 = 0.841_621_233_572_914_3;

/// A closed interval `[lo, hi]`, serialized by callers as `[lo, hi]`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub lo: f64,
    pub hi: f64,
}

impl Interval {
    /// `[lo, hi]`, the JSON shape.
    pub fn to_array(self) -> [f64; 2] {
        [self.lo, self.hi]
    }

    fn around(center: f64, half: f64, min: f64, max: f64) -> Self {
        Interval {
            lo: (center - half).clamp(min, max),
            hi: (center + half).clamp(min, max),
        }
    }
}

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
        let mean = sums.mean();
        let stderr = sums.stderr();
        let ci95 = match (mean, stderr) {
            (Some(m), Some(se)) => Some(Interval::around(
                m,
                t_quantile(0.975, (sums.n - 1) as f64) * se,
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
            method: Method::T,
            clusters: None,
        }
    }

    /// Either kind of score with the clustered standard error of
    /// [`Clustered::stderr`] and the interval mean ± t(0.975, G-1) · SE for G
    /// clusters. Wilson's interval assumes independent samples, so a
    /// clustered pass rate gets this interval too (clipped to [0, 1]).
    pub fn clustered(c: &Clustered) -> Self {
        let sums = c.total();
        let mean = sums.mean();
        let stderr = c.stderr();
        let ci95 = match (mean, stderr) {
            (Some(m), Some(se)) => Some(Interval::around(
                m,
                t_quantile(0.975, (c.clusters() - 1) as f64) * se,
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
            method: Method::ClusteredT,
            clusters: Some(c.clusters()),
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

/// Which test produced a [`Comparison`]'s p-value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Test {
    /// Exact McNemar: binomial test on the `discordant` pairs.
    McNemarExact { discordant: u64 },
    /// Paired t-test; `t` is `None` when every difference is the same (the
    /// statistic is 0/0 or infinite).
    PairedT { t: Option<f64>, df: u64 },
    /// Paired t-test on the clustered standard error of the differences
    /// (samples in groups), with `df` = clusters - 1.
    ClusteredPairedT { t: Option<f64>, df: u64 },
}

/// Two evaluations compared on matched samples: B minus A.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Comparison {
    /// Matched samples.
    pub n: u64,
    /// `None` when `n == 0` (as are the mean of B and the difference).
    pub mean_a: Option<f64>,
    pub mean_b: Option<f64>,
    /// mean B - mean A.
    pub diff: Option<f64>,
    /// Paired standard error of the difference: sd of the per-sample
    /// differences / √n (Miller section 4); `None` when `n < 2`.
    pub stderr: Option<f64>,
    /// 95% interval of the difference, clipped to [-1, 1].
    pub ci95: Option<Interval>,
    /// Two-sided p-value of "no difference".
    pub p_value: Option<f64>,
    pub test: Test,
    /// Smallest true difference this comparison would detect with 80% power
    /// at two-sided α = 0.05: [`mde`] of the standard error.
    pub mde: Option<f64>,
}

/// Counts of the 2×2 table of pass/fail on matched samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PassFailTable {
    pub both: u64,
    /// Passed in A, failed in B (pass→fail).
    pub a_only: u64,
    /// Failed in A, passed in B (fail→pass).
    pub b_only: u64,
    pub neither: u64,
}

impl PassFailTable {
    pub fn push(&mut self, a: bool, b: bool) {
        match (a, b) {
            (true, true) => self.both += 1,
            (true, false) => self.a_only += 1,
            (false, true) => self.b_only += 1,
            (false, false) => self.neither += 1,
        }
    }

    pub fn n(&self) -> u64 {
        self.both + self.a_only + self.b_only + self.neither
    }

    /// Difference of pass rates (b_only - a_only)/n, its paired standard
    /// error (the per-sample differences are -1, 0 or 1, so
    /// sd² = ((b+c) - n·d̄²)/(n-1) for b = a_only, c = b_only), the exact
    /// McNemar p-value [`mcnemar_exact`] and the interval that inverts the
    /// same test, [`mcnemar_interval`]: the two never disagree on whether
    /// the difference is significant at 5%.
    pub fn compare(&self) -> Comparison {
        let n = self.n();
        let discordant = self.a_only + self.b_only;
        let test = Test::McNemarExact { discordant };
        if n == 0 {
            return Comparison {
                n,
                mean_a: None,
                mean_b: None,
                diff: None,
                stderr: None,
                ci95: None,
                p_value: None,
                test,
                mde: None,
            };
        }
        let nf = n as f64;
        let diff = (self.b_only as f64 - self.a_only as f64) / nf;
        let stderr = (n > 1).then(|| {
            let ss = (discordant as f64 - nf * diff * diff).max(0.0);
            (ss / (nf - 1.0) / nf).sqrt()
        });
        Comparison {
            n,
            mean_a: Some((self.both + self.a_only) as f64 / nf),
            mean_b: Some((self.both + self.b_only) as f64 / nf),
            diff: Some(diff),
            stderr,
            ci95: Some(mcnemar_interval(self.a_only, self.b_only, n)),
            p_value: Some(mcnemar_exact(self.a_only, self.b_only)),
            test,
            mde: stderr.map(mde),
        }
    }
}

/// Running sums of matched graded scores, for the paired t-test.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PairedSums {
    pub a: Sums,
    pub b: Sums,
    /// Differences b - a.
    pub diff: Sums,
}

impl PairedSums {
    pub const fn new() -> Self {
        PairedSums {
            a: Sums::new(),
            b: Sums::new(),
            diff: Sums::new(),
        }
    }

    pub fn push(&mut self, a: f64, b: f64) {
        self.a.push(a);
        self.b.push(b);
        self.diff.push(b - a);
    }

    /// Paired t-test on d_i = b_i - a_i: d̄, SE = sd(d)/√n, t = d̄/SE with
    /// n - 1 degrees of freedom, the two-sided p-value from Student's t and
    /// the interval d̄ ± t(0.975, n-1)·SE. When every difference is equal
    /// (SE = 0) there is no t: p = 1 if they are all zero, else 0.
    pub fn compare(&self) -> Comparison {
        let n = self.diff.n;
        let df = n.saturating_sub(1);
        let diff = self.diff.mean();
        let stderr = self.diff.stderr();
        let (t, p_value, ci95) = match (diff, stderr) {
            (Some(d), Some(se)) if se > 0.0 => {
                let t = d / se;
                let half = t_quantile(0.975, df as f64) * se;
                (
                    Some(t),
                    Some(t_two_sided_p(t, df as f64)),
                    Some(Interval::around(d, half, -1.0, 1.0)),
                )
            }
            (Some(d), Some(_)) => (
                None,
                Some(if d == 0.0 { 1.0 } else { 0.0 }),
                Some(Interval::around(d, 0.0, -1.0, 1.0)),
            ),
            _ => (None, None, None),
        };
        Comparison {
            n,
            mean_a: self.a.mean(),
            mean_b: self.b.mean(),
            diff,
            stderr,
            ci95,
            p_value,
            test: Test::PairedT { t, df },
            mde: stderr.map(mde),
        }
    }
}

/// Exact two-sided McNemar p-value for `b` pairs that passed only in A and
/// `c` that passed only in B: p = min(1, 2·P(X ≤ min(b, c))) with
/// X ~ Binomial(b + c, 1/2). No discordant pair gives p = 1.
pub fn mcnemar_exact(b: u64, c: u64) -> f64 {
    let n = b + c;
    if n == 0 {
        return 1.0;
    }
    (2.0 * binomial_half_cdf(b.min(c), n)).min(1.0)
}

/// The 95% interval of the difference of pass rates (c - b)/n that is
/// consistent with [`mcnemar_exact`]: the exact conditional interval.
/// Given the m = b + c discordant pairs, the share θ of them that went
/// fail→pass has the Clopper-Pearson interval, which excludes 1/2 exactly
/// when the doubled-tail binomial test (McNemar's exact test) rejects at 5%;
/// the difference is (m/n)(2θ - 1). No discordant pair gives [0, 0].
pub fn mcnemar_interval(b: u64, c: u64, n: u64) -> Interval {
    let m = b + c;
    if m == 0 || n == 0 {
        return Interval { lo: 0.0, hi: 0.0 };
    }
    let (lo, hi) = clopper_pearson(c, m, 0.05);
    let share = m as f64 / n as f64;
    Interval {
        lo: (share * (2.0 * lo - 1.0)).clamp(-1.0, 1.0),
        hi: (share * (2.0 * hi - 1.0)).clamp(-1.0, 1.0),
    }
}

/// The Clopper-Pearson interval of a proportion, `x` of `n`, at level
/// 1 - `alpha`: the Beta(α/2; x, n-x+1) and Beta(1-α/2; x+1, n-x) quantiles.
fn clopper_pearson(x: u64, n: u64, alpha: f64) -> (f64, f64) {
    let (xf, nf) = (x as f64, n as f64);
    let lo = if x == 0 {
        0.0
    } else {
        beta_quantile(alpha / 2.0, xf, nf - xf + 1.0)
    };
    let hi = if x == n {
        1.0
    } else {
        beta_quantile(1.0 - alpha / 2.0, xf + 1.0, nf - xf)
    };
    (lo, hi)
}

/// The `q` quantile of Beta(a, b): I_p(a, b) = q by bisection (I is
/// increasing in p), to full precision.
fn beta_quantile(q: f64, a: f64, b: f64) -> f64 {
    bisect(0.0, 1.0, |p| beta_inc(a, b, p, 1.0 - p) < q)
}

/// B against A on paired samples that come in groups (`dataset.cluster`):
/// Miller's paired analysis (section 4) with the clustered standard error of
/// section 2.2 applied to the per-sample differences `diffs` (one [`Sums`] of
/// differences per cluster pushed into it). The interval and the p-value use
/// a t distribution with clusters - 1 degrees of freedom; `None` throughout
/// with fewer than two clusters.
pub fn clustered_paired(a: &Sums, b: &Sums, diffs: &Clustered) -> Comparison {
    let total = diffs.total();
    let diff = total.mean();
    let stderr = diffs.stderr();
    let df = diffs.clusters().saturating_sub(1);
    let t = match (diff, stderr) {
        (Some(d), Some(se)) if se > 0.0 => Some(d / se),
        _ => None,
    };
    let p_value = match (t, diff, stderr) {
        (Some(t), _, _) => Some(t_two_sided_p(t, df as f64)),
        // No spread between clusters: certain when every difference is 0.
        (None, Some(d), Some(_)) => Some(if d == 0.0 { 1.0 } else { 0.0 }),
        _ => None,
    };
    let ci95 = match (diff, stderr) {
        (Some(d), Some(se)) if df > 0 => Some(Interval::around(
            d,
            t_quantile(0.975, df as f64) * se,
            -1.0,
            1.0,
        )),
        _ => None,
    };
    Comparison {
        n: total.n,
        mean_a: a.mean(),
        mean_b: b.mean(),
        diff,
        stderr,
        ci95,
        p_value,
        test: Test::ClusteredPairedT { t, df },
        mde: stderr.map(mde),
    }
}

/// Minimum detectable effect: the smallest true difference a two-sided test
/// at α = 0.05 detects with 80% power, given the standard error of the
/// difference: MDE = (z_0.975 + z_0.80) · SE ≈ 2.8 · SE.
pub fn mde(stderr: f64) -> f64 {
    (Z_975 + Z_80) * stderr
}

/// Matched samples needed to detect a difference `d` with 80% power at
/// two-sided α = 0.05, when per-sample differences have standard deviation
/// `sd_diff`: n = ⌈((z_0.975 + z_0.80) · sd / d)²⌉. `None` when `d` is zero
/// or either input is not finite.
pub fn samples_for(d: f64, sd_diff: f64) -> Option<u64> {
    if d == 0.0 || !d.is_finite() || !sd_diff.is_finite() {
        return None;
    }
    let n = ((Z_975 + Z_80) * sd_diff / d).powi(2).ceil();
    (n < u64::MAX as f64).then_some((n as u64).max(1))
}

// ---------------------------------------------------------------------------
// Special functions.

const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_8;

/// ln Γ(x) - ((x - ½) ln x - x + ln √(2π)), the Stirling series, for x ≥ 10
/// (the first omitted term is below 1e-17 there).
fn stirling_correction(x: f64) -> f64 {
    // B_2k / (2k (2k-1)) for k = 1..8.
    const C: [f64; 8] = [
        1.0 / 12.0,
        -1.0 / 360.0,
        1.0 / 1260.0,
        -1.0 / 1680.0,
        1.0 / 1188.0,
        -691.0 / 360_360.0,
        1.0 / 156.0,
        -3617.0 / 122_400.0,
    ];
    let x2 = 1.0 / (x * x);
    let mut acc = 0.0;
    for c in C.iter().rev() {
        acc = acc * x2 + c;
    }
    acc / x
}

/// ln Γ(x) for x > 0: shifted up to x ≥ 10, then Stirling's series.
fn ln_gamma(x: f64) -> f64 {
    let mut x = x;
    let mut prod = 1.0;
    while x < 10.0 {
        prod *= x;
        x += 1.0;
    }
    (x - 0.5) * x.ln() - x + LN_SQRT_2PI + stirling_correction(x) - prod.ln()
}

/// ln B(a, b) without the cancellation of three large log-gammas (the
/// arrangement of R's `lbeta`).
fn ln_beta(a: f64, b: f64) -> f64 {
    let (p, q) = if a < b { (a, b) } else { (b, a) };
    if p >= 10.0 {
        let corr = stirling_correction(p) + stirling_correction(q) - stirling_correction(p + q);
        -0.5 * q.ln()
            + LN_SQRT_2PI
            + corr
            + (p - 0.5) * (p / (p + q)).ln()
            + q * (-p / (p + q)).ln_1p()
    } else if q >= 10.0 {
        let corr = stirling_correction(q) - stirling_correction(p + q);
        ln_gamma(p) + corr + p - p * (p + q).ln() + (q - 0.5) * (-p / (p + q)).ln_1p()
    } else {
        ln_gamma(p) + ln_gamma(q) - ln_gamma(p + q)
    }
}

/// Regularized incomplete beta I_x(a, b), with `y = 1 - x` passed apart so
/// that x near 1 keeps its precision. Continued fraction (modified Lentz) on
/// the side where it converges fast.
fn beta_inc(a: f64, b: f64, x: f64, y: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if y <= 0.0 {
        return 1.0;
    }
    if x > (a + 1.0) / (a + b + 2.0) {
        return 1.0 - beta_inc(b, a, y, x);
    }
    let ln_x = if x < 0.5 { x.ln() } else { (-y).ln_1p() };
    let ln_y = if y < 0.5 { y.ln() } else { (-x).ln_1p() };
    let front = (a * ln_x + b * ln_y - ln_beta(a, b)).exp() / a;
    front * beta_cf(a, b, x)
}

fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    const EPS: f64 = 1e-16;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    let mut c = 1.0;
    let mut d = 1.0 - qab * x / qap;
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut h = d;
    for m in 1..100_000 {
        let m = m as f64;
        let m2 = 2.0 * m;
        let aa = m * (b - m) * x / ((qam + m2) * (a + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        h *= d * c;
        let aa = -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2));
        d = 1.0 + aa * d;
        if d.abs() < TINY {
            d = TINY;
        }
        c = 1.0 + aa / c;
        if c.abs() < TINY {
            c = TINY;
        }
        d = 1.0 / d;
        let del = d * c;
        h *= del;
        if (del - 1.0).abs() < EPS {
            break;
        }
    }
    h
}

/// Two-sided p-value P(|T| ≥ |t|) for Student's t with `df` degrees of
/// freedom: I_{df/(df+t²)}(df/2, 1/2).
pub fn t_two_sided_p(t: f64, df: f64) -> f64 {
    if t.is_nan() || df <= 0.0 {
        return 1.0;
    }
    let t2 = t * t;
    if t2.is_infinite() {
        return 0.0;
    }
    let x = df / (df + t2);
    let y = t2 / (df + t2);
    beta_inc(df / 2.0, 0.5, x, y).clamp(0.0, 1.0)
}

/// The `q` quantile of Student's t with `df` degrees of freedom, for
/// 0.5 ≤ q < 1 (closed forms at df = 1 and 2, else the two-sided tail
/// inverted by bisection to full precision). `df ≤ 0` or q outside the
/// range gives NaN; callers here pass df ≥ 1 and q = 0.975.
pub fn t_quantile(q: f64, df: f64) -> f64 {
    if !(0.5..1.0).contains(&q) || df <= 0.0 || df.is_nan() {
        return f64::NAN;
    }
    if q == 0.5 {
        return 0.0;
    }
    if df == 1.0 {
        return (std::f64::consts::PI * (q - 0.5)).tan();
    }
    if df == 2.0 {
        let a = 4.0 * q * (1.0 - q);
        return 2.0 * (q - 0.5) * (2.0 / a).sqrt();
    }
    let target = 2.0 * (1.0 - q);
    let (mut lo, mut hi) = (0.0_f64, 2.0_f64);
    while t_two_sided_p(hi, df) > target {
        lo = hi;
        hi *= 2.0;
    }
    bisect(lo, hi, |t| t_two_sided_p(t, df) > target)
}

/// The point in [lo, hi] where `below` turns from true to false, by
/// bisection to full precision (`below` must be true up to it, false after).
fn bisect(mut lo: f64, mut hi: f64, below: impl Fn(f64) -> bool) -> f64 {
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if mid <= lo || mid >= hi {
            break;
        }
        if below(mid) {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// P(X ≤ k) for X ~ Binomial(n, 1/2) with k ≤ n/2, with no overflow at any
/// n. Up to n = 1000 the terms are summed upwards from the exact 2⁻ⁿ
/// (relative error about k·ε); above, the k-th term is taken in log space and
/// the terms below it added by their ratio i/(n-i+1) until they stop counting.
fn binomial_half_cdf(k: u64, n: u64) -> f64 {
    if k >= n {
        return 1.0;
    }
    if 2 * k > n {
        // Not reached from mcnemar_exact; keeps the function total.
        return 1.0 - binomial_half_cdf(n - k - 1, n);
    }
    if n <= 1000 {
        let mut term = (-(n as f64)).exp2();
        let mut sum = term;
        for i in 1..=k {
            term *= (n - i + 1) as f64 / i as f64;
            sum += term;
        }
        return sum.min(1.0);
    }
    let (kf, nf) = (k as f64, n as f64);
    // ln C(n, k) = -ln(n+1) - ln B(n-k+1, k+1)
    let ln_term = -(nf + 1.0).ln() - ln_beta(nf - kf + 1.0, kf + 1.0) - nf * std::f64::consts::LN_2;
    let mut sum = 1.0;
    let mut ratio = 1.0;
    let mut i = k;
    while i > 0 {
        ratio *= i as f64 / (n - i + 1) as f64;
        sum += ratio;
        if ratio < sum * 1e-17 {
            break;
        }
        i -= 1;
    }
    (ln_term.exp() * sum).min(1.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clustered_paired_matches_numpy() {
        // d = [1,0,1,1 | 0,0,-1 | 1,1,0,0,1]; numpy: m = d.mean();
        // se = sqrt(d.var(ddof=1)/n + sum((sum(e_c))**2 - sum(e_c**2))/n**2), e = d - m;
        // t = m/se; p = 2*scipy.stats.t.sf(|t|, 2); ci = m -/+ t.ppf(0.975, 2)*se
        let mut diffs = Clustered::new();
        let (mut a, mut b) = (Sums::new(), Sums::new());
        for cluster in [
            &[1.0, 0.0, 1.0, 1.0][..],
            &[0.0, 0.0, -1.0],
            &[1.0, 1.0, 0.0, 0.0, 1.0],
        ] {
            let mut c = Sums::new();
            for &d in cluster {
                c.push(d);
                // Any a, b with b - a = d.
                a.push(if d < 0.0 { 1.0 } else { 0.0 });
                b.push(if d > 0.0 { 1.0 } else { 0.0 });
            }
            diffs.push_cluster(&c);
        }
        let c = clustered_paired(&a, &b, &diffs);
        let close = |x: Option<f64>, y: f64| (x.unwrap() - y).abs() < 1e-9;
        assert!(close(c.diff, 0.4166666666666667));
        assert!(close(c.stderr, 0.23757345724424037));
        assert!(close(c.p_value, 0.22154870980015118));
        let ci = c.ci95.unwrap();
        assert!((ci.lo - (-0.6055294176612811)).abs() < 1e-9);
        assert!(
            (ci.hi - 1.0).abs() < 1e-12,
            "clipped to the largest difference"
        );
        let Test::ClusteredPairedT { t: Some(t), df: 2 } = c.test else {
            panic!("{:?}", c.test)
        };
        assert!((t - 1.753843512233386).abs() < 1e-9);
    }

    // Expected values come from SciPy 1.17.1 / statsmodels 0.15.0; each has the
    // Python line that produced it, with `from scipy import stats`,
    // `import numpy as np`, `from statsmodels.stats.proportion import
    // proportion_confint`, `from statsmodels.stats.contingency_tables import
    // mcnemar`.

    #[track_caller]
    fn close(got: f64, want: f64, rel: f64) {
        let tol = rel * want.abs().max(1e-300);
        assert!(
            (got - want).abs() <= tol,
            "got {got:e}, want {want:e} (diff {:e}, rel tol {rel:e})",
            (got - want).abs()
        );
    }

    #[track_caller]
    fn close_ci(got: Option<Interval>, lo: f64, hi: f64, rel: f64) {
        let got = got.expect("an interval");
        if lo == 0.0 {
            assert_eq!(got.lo, 0.0);
        } else {
            close(got.lo, lo, rel);
        }
        close(got.hi, hi, rel);
    }

    #[test]
    fn normal_quantiles() {
        // stats.norm.ppf(0.975), stats.norm.ppf(0.80)
        assert_eq!(Z_975, 1.959963984540054);
        assert_eq!(Z_80, 0.8416212335729143);
    }

    #[test]
    fn wilson_matches_statsmodels() {
        // proportion_confint(k, n, alpha=0.05, method='wilson')
        let cases = [
            (0, 10, 0.0, 0.27753279986288926),
            (10, 10, 0.7224672001371106, 1.0),
            (7, 8, 0.5291118177871466, 0.9775825085499434),
            (50, 100, 0.4038315303659956, 0.5961684696340044),
            (1, 1, 0.2065493143772374, 1.0),
            (0, 1, 0.0, 0.7934506856227627),
        ];
        for (k, n, lo, hi) in cases {
            close_ci(wilson(k, n, Z_975), lo, hi, 1e-12);
        }
        assert_eq!(wilson(0, 0, Z_975), None);
        assert_eq!(wilson(10, 10, Z_975).map(|c| c.hi), Some(1.0));
    }

    #[test]
    fn pass_fail_summary() {
        let s = Summary::pass_fail(7, 8);
        assert_eq!(s.mean, Some(0.875));
        // np.array([1]*7+[0]).std(ddof=1), and / np.sqrt(8)
        close(s.sd.unwrap(), 0.3535533905932738, 1e-12);
        close(s.stderr.unwrap(), 0.125, 1e-12);
        close_ci(s.ci95, 0.5291118177871466, 0.9775825085499434, 1e-12);
        assert_eq!(s.method, Method::Wilson);
    }

    #[test]
    fn zero_and_one_sample() {
        let empty = Summary::pass_fail(0, 0);
        assert_eq!(
            (empty.mean, empty.sd, empty.stderr, empty.ci95),
            (None, None, None, None)
        );
        let g = Summary::graded(&Sums::new());
        assert_eq!((g.mean, g.sd, g.stderr, g.ci95), (None, None, None, None));

        let mut one = Sums::new();
        one.push(0.4);
        let g = Summary::graded(&one);
        assert_eq!(
            (g.mean, g.sd, g.stderr, g.ci95),
            (Some(0.4), None, None, None)
        );
        // A pass rate has a Wilson interval from one sample on.
        let p = Summary::pass_fail(1, 1);
        assert_eq!((p.mean, p.sd, p.stderr), (Some(1.0), None, None));
        close_ci(p.ci95, 0.2065493143772374, 1.0, 1e-12);
    }

    #[test]
    fn t_quantiles_match_scipy() {
        // stats.t.ppf(0.975, df)
        let cases = [
            (1.0, 12.706204736174694),
            (2.0, 4.302652729749462),
            (3.0, 3.1824463052837078),
            (4.0, 2.7764451051977934),
            (7.0, 2.364624251592784),
            (10.0, 2.228138851986274),
            (30.0, 2.0422724563012378),
            (99.0, 1.9842169515864174),
            (1000.0, 1.9623390808264083),
            (99999.0, 1.9599877077718442),
        ];
        for (df, want) in cases {
            close(t_quantile(0.975, df), want, 1e-12);
        }
        // stats.t.ppf(0.9, 5), stats.t.ppf(0.995, 3)
        close(t_quantile(0.9, 5.0), 1.4758840488244815, 1e-12);
        close(t_quantile(0.995, 3.0), 5.840909309733355, 1e-12);
        assert!(t_quantile(0.975, 0.0).is_nan());
    }

    #[test]
    fn t_p_values_match_scipy() {
        // 2*stats.t.sf(t, df)
        let cases = [
            (0.5, 3.0, 0.651447964848151),
            (2.0, 10.0, 0.07338803477074037),
            (10.0, 5.0, 0.00017094757574296363),
            (2.5, 99999.0, 0.012420919208444996),
            (40.0, 30.0, 1.3726045194406417e-27),
        ];
        for (t, df, want) in cases {
            close(t_two_sided_p(t, df), want, 1e-10);
            close(t_two_sided_p(-t, df), want, 1e-10);
        }
        assert_eq!(t_two_sided_p(0.0, 4.0), 1.0);
    }

    #[test]
    fn graded_t_interval_small_n() {
        let mut s = Sums::new();
        for x in [0.2, 0.5, 0.9, 0.4, 0.7] {
            s.push(x);
        }
        let g = Summary::graded(&s);
        // x = np.array([0.2, 0.5, 0.9, 0.4, 0.7]); x.mean(); x.std(ddof=1);
        // se = x.std(ddof=1)/np.sqrt(5); tq = stats.t.ppf(0.975, 4); x.mean() -+ tq*se
        close(g.mean.unwrap(), 0.54, 1e-12);
        close(g.sd.unwrap(), 0.2701851217221259, 1e-12);
        close(g.stderr.unwrap(), 0.1208304597359457, 1e-12);
        close_ci(g.ci95, 0.20452086150733456, 0.8754791384926655, 1e-12);
        assert_eq!(g.method, Method::T);
    }

    const SCORES: [f64; 10] = [1.0, 1.0, 0.5, 0.0, 0.25, 1.0, 0.75, 1.0, 0.0, 0.2];
    const CLUSTER: [u32; 10] = [0, 0, 0, 1, 2, 2, 2, 2, 3, 3];

    /// Streams (cluster, score) rows sorted by cluster, as a caller would.
    fn clustered_of(rows: impl Iterator<Item = (u32, f64)>) -> Clustered {
        let mut acc = Clustered::new();
        let mut current = Sums::new();
        let mut key = None;
        for (k, x) in rows {
            if key != Some(k) {
                acc.push_cluster(&current);
                current = Sums::new();
                key = Some(k);
            }
            current.push(x);
        }
        acc.push_cluster(&current);
        acc
    }

    // def clustered(scores, clusters):
    //     s = np.asarray(scores, float); n = len(s); e = s - s.mean()
    //     se_clt2 = (e**2).sum()/(n*(n-1)); off = 0.0
    //     for c in np.unique(clusters):
    //         ec = e[np.asarray(clusters)==c]; off += ec.sum()**2 - (ec**2).sum()
    //     return np.sqrt(se_clt2 + off/n**2)
    // sc = [1,1,0.5, 0, 0.25,1,0.75,1, 0,0.2]; cl = [0,0,0, 1, 2,2,2,2, 3,3]

    #[test]
    fn clustered_se_unequal_clusters() {
        let c = clustered_of(CLUSTER.into_iter().zip(SCORES));
        assert_eq!(c.clusters(), 4);
        // clustered(sc, cl)
        close(c.stderr().unwrap(), 0.15925172247455005, 1e-12);
        let s = Summary::clustered(&c);
        // tq = stats.t.ppf(0.975, 3); m - tq*clustered(sc, cl); hi is 1.0768 → clipped to 1
        close_ci(s.ci95, 0.06318994420080182, 1.0, 1e-12);
        assert_eq!((s.method, s.clusters), (Method::ClusteredT, Some(4)));
        // np.std(sc, ddof=1)/np.sqrt(10): clustering widens it here.
        close(c.total().stderr().unwrap(), 0.136055544213057, 1e-12);
    }

    #[test]
    fn clustered_se_with_singletons_is_the_plain_se() {
        let c = clustered_of((0..10).zip(SCORES));
        assert_eq!(c.clusters(), 10);
        // clustered(sc, list(range(10)))
        close(c.stderr().unwrap(), 0.13605554421305702, 1e-12);
        close(c.stderr().unwrap(), c.total().stderr().unwrap(), 1e-12);
    }

    #[test]
    fn clustered_se_needs_two_clusters() {
        let c = clustered_of(std::iter::repeat(7).zip(SCORES));
        assert_eq!(c.clusters(), 1);
        assert_eq!(c.stderr(), None);
        assert_eq!(Summary::clustered(&c).ci95, None);
        assert_eq!(Clustered::new().stderr(), None);
    }

    #[test]
    fn clopper_pearson_matches_the_binomial_tails() {
        // Bisection on exact binomial tail sums (Python, math.comb).
        for (x, n, lo, hi) in [
            (14, 19, 0.48797065465412715, 0.9085342150923335),
            (1, 10, 0.002528578544461784, 0.4450161170281953),
            (30, 50, 0.4517940284791804, 0.7359216049054631),
        ] {
            let (l, h) = clopper_pearson(x, n, 0.05);
            close(l, lo, 1e-9);
            close(h, hi, 1e-9);
        }
        assert_eq!(clopper_pearson(0, 5, 0.05).0, 0.0);
        assert_eq!(clopper_pearson(5, 5, 0.05).1, 1.0);
    }

    /// The interval and the p-value never give opposite verdicts: the issue's
    /// 5 pass→fail and 14 fail→pass of 48 (p = 0.064), and every table with
    /// up to 60 discordant pairs each way.
    #[test]
    fn the_mcnemar_interval_agrees_with_its_p_value() {
        let t = PassFailTable {
            both: 20,
            a_only: 5,
            b_only: 14,
            neither: 9,
        };
        let c = t.compare();
        let ci = c.ci95.unwrap();
        // 2 * (C(19,0) + ... + C(19,5)) / 2^19
        close(c.p_value.unwrap(), 33328.0 / 524288.0, 1e-12);
        assert!(ci.lo < 0.0 && ci.hi > 0.0, "{ci:?}");
        close(ci.lo, 19.0 / 48.0 * (2.0 * 0.48797065465412715 - 1.0), 1e-9);
        for b in 0..=60u64 {
            for c in 0..=60u64 {
                let n = b + c + 7;
                let ci = mcnemar_interval(b, c, n);
                let significant = mcnemar_exact(b, c) < 0.05;
                let excludes_zero = ci.lo > 0.0 || ci.hi < 0.0;
                assert_eq!(significant, excludes_zero, "b {b}, c {c}: {ci:?}");
                let d = (c as f64 - b as f64) / n as f64;
                assert!(ci.lo <= d && d <= ci.hi, "b {b}, c {c}: {d} outside {ci:?}");
            }
        }
    }

    #[test]
    fn mcnemar_matches_statsmodels() {
        // mcnemar([[both, b],[c, neither]], exact=True).pvalue
        // (equal to stats.binomtest(min(b,c), b+c, 0.5).pvalue when b+c > 0)
        assert_eq!(mcnemar_exact(0, 0), 1.0); // [[5,0],[0,3]] → 1.0
        assert_eq!(mcnemar_exact(1, 0), 1.0); // [[0,1],[0,0]] → 1.0
        close(mcnemar_exact(5, 1), 0.21875, 1e-12); // [[10,5],[1,4]]
        close(mcnemar_exact(1, 5), 0.21875, 1e-12);
        close(mcnemar_exact(30, 20), 0.20263875106454066, 1e-10); // [[100,30],[20,50]]
        close(mcnemar_exact(5000, 4800), 0.04440414879984631, 1e-9); // [[1000,5000],[4800,200]]
        assert_eq!(mcnemar_exact(5000, 5000), 1.0);
        // Far past where factorials overflow.
        // stats.binomtest(48000, 100000, 0.5).pvalue
        close(mcnemar_exact(52_000, 48_000), 1.1530938666727834e-36, 1e-9);
        // stats.binomtest(0, 1000, 0.5).pvalue == 2*0.5**1000
        assert_eq!(mcnemar_exact(0, 1000), 1.8665272370064378e-301);
        // 2*0.5**5000 underflows: 0, not NaN.
        assert_eq!(mcnemar_exact(0, 5000), 0.0);
    }

    #[test]
    fn binomial_tail_on_both_sides_of_the_linear_path() {
        // stats.binom.cdf(480, 1000, 0.5): summed upwards from 2^-1000
        close(binomial_half_cdf(480, 1000), 0.10872414660207075, 1e-12);
        // stats.binom.cdf(481, 1001, 0.5): log space
        close(binomial_half_cdf(481, 1001), 0.11485440734325317, 1e-11);
        // stats.binom.cdf(3, 1200, 0.5) underflows to 0.0
        assert_eq!(binomial_half_cdf(3, 1200), 0.0);
    }

    #[test]
    fn sums_pool() {
        let (mut a, mut b, mut all) = (Sums::new(), Sums::new(), Sums::new());
        for (i, x) in SCORES.into_iter().enumerate() {
            if i < 4 {
                a.push(x)
            } else {
                b.push(x)
            }
            all.push(x);
        }
        a.merge(&b);
        assert_eq!(a.n, all.n);
        close(a.stderr().unwrap(), all.stderr().unwrap(), 1e-12);
    }

    #[test]
    fn paired_pass_fail() {
        let t = PassFailTable {
            both: 100,
            a_only: 30,
            b_only: 20,
            neither: 50,
        };
        let c = t.compare();
        assert_eq!(c.n, 200);
        assert_eq!((c.mean_a, c.mean_b), (Some(0.65), Some(0.6)));
        // d = np.array([0]*100 + [-1]*30 + [1]*20 + [0]*50, float)
        // se = d.std(ddof=1)/np.sqrt(200)
        close(c.diff.unwrap(), -0.05, 1e-12);
        close(c.stderr.unwrap(), 0.035266394669214836, 1e-12);
        // Clopper-Pearson of 20 fail->pass in 50 discordant is 1 minus that of
        // 30 in 50 (see above), scaled by 50/200: 0.25 * (2 * theta - 1).
        close_ci(
            c.ci95,
            0.25 * (2.0 * (1.0 - 0.7359216049054631) - 1.0),
            0.25 * (2.0 * (1.0 - 0.4517940284791804) - 1.0),
            1e-9,
        );
        close(c.p_value.unwrap(), 0.20263875106454066, 1e-10);
        assert_eq!(c.test, Test::McNemarExact { discordant: 50 });
        // (stats.norm.ppf(0.975)+stats.norm.ppf(0.8))*se
        close(c.mde.unwrap(), 0.09880181000141026, 1e-12);
    }

    #[test]
    fn paired_pass_fail_edges() {
        let c = PassFailTable::default().compare();
        assert_eq!((c.n, c.diff, c.stderr, c.p_value), (0, None, None, None));
        let c = PassFailTable {
            both: 5,
            neither: 3,
            ..Default::default()
        }
        .compare();
        assert_eq!(
            (c.diff, c.stderr, c.p_value),
            (Some(0.0), Some(0.0), Some(1.0))
        );
        assert_eq!(c.ci95, Some(Interval { lo: 0.0, hi: 0.0 }));
        let mut t = PassFailTable::default();
        t.push(true, false);
        let c = t.compare();
        assert_eq!((c.diff, c.stderr, c.p_value), (Some(-1.0), None, Some(1.0)));
    }

    #[test]
    fn paired_t_matches_scipy() {
        let a = [0.1, 0.4, 0.35, 0.8, 0.6, 0.2, 0.9];
        let b = [0.3, 0.45, 0.5, 0.7, 0.85, 0.4, 0.95];
        let mut p = PairedSums::new();
        for (x, y) in a.into_iter().zip(b) {
            p.push(x, y);
        }
        let c = p.compare();
        // res = stats.ttest_rel(b, a); res.statistic, res.pvalue
        let Test::PairedT { t: Some(t), df: 6 } = c.test else {
            panic!("{:?}", c.test)
        };
        close(t, 2.48868406735302, 1e-9);
        close(c.p_value.unwrap(), 0.04724633111139015, 1e-9);
        // dd = b - a; se = dd.std(ddof=1)/np.sqrt(7); tq = stats.t.ppf(0.975, 6); dd.mean() -+ tq*se
        close(c.diff.unwrap(), 0.11428571428571428, 1e-9);
        close(c.stderr.unwrap(), 0.04592214648091884, 1e-9);
        close_ci(c.ci95, 0.0019182698315382968, 0.22665315873989028, 1e-9);
        // (stats.norm.ppf(0.975)+stats.norm.ppf(0.8))*se
        close(c.mde.unwrap(), 0.1286548067649607, 1e-9);
    }

    #[test]
    fn paired_t_without_spread() {
        let mut same = PairedSums::new();
        let mut shifted = PairedSums::new();
        for x in [0.25, 0.5, 0.75] {
            same.push(x, x);
            shifted.push(x, x + 0.25);
        }
        let c = same.compare();
        assert_eq!(c.test, Test::PairedT { t: None, df: 2 });
        assert_eq!(c.p_value, Some(1.0));
        let c = shifted.compare();
        assert_eq!(c.p_value, Some(0.0));
        assert_eq!(PairedSums::new().compare().p_value, None);
    }

    #[test]
    fn power() {
        // (stats.norm.ppf(0.975)+stats.norm.ppf(0.8))*0.035266394669214836
        close(mde(0.035266394669214836), 0.09880181000141026, 1e-12);
        // int(np.ceil(((stats.norm.ppf(0.975)+stats.norm.ppf(0.8))*0.5/0.05)**2)) → 785
        assert_eq!(samples_for(0.05, 0.5), Some(785));
        assert_eq!(samples_for(-0.05, 0.5), Some(785));
        assert_eq!(samples_for(0.0, 0.5), None);
        assert_eq!(samples_for(0.1, 0.0), Some(1));
    }

    #[test]
    fn hundred_thousand_pairs_are_fast() {
        let start = std::time::Instant::now();
        let mut t = PassFailTable::default();
        let mut p = PairedSums::new();
        for i in 0..100_000u32 {
            let a = i % 3 == 0;
            let b = i % 5 != 0;
            t.push(a, b);
            p.push(f64::from(i % 7) / 7.0, f64::from(i % 11) / 11.0);
        }
        let (c, d) = (t.compare(), p.compare());
        assert!(c.p_value.is_some() && d.p_value.is_some());
        // Debug build on a shared machine; the real figure is far below this.
        assert!(start.elapsed() < std::time::Duration::from_millis(200));
    }
}
