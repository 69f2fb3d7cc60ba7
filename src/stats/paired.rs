//! Two evaluations on matched samples: exact McNemar or a paired t-test,
//! the difference's standard error and interval, and the smallest
//! difference the samples could detect.

use super::*;

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
pub(super) fn clopper_pearson(x: u64, n: u64, alpha: f64) -> (f64, f64) {
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
pub(super) fn beta_quantile(q: f64, a: f64, b: f64) -> f64 {
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

/// Which test a comparison made, as the JSON names it.
#[derive(Debug, Clone, Copy, serde::Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TestName {
    McnemarExact,
    PairedT,
    /// A paired t-test on the differences' clustered standard error.
    ClusteredPairedT,
}

impl From<Test> for TestName {
    fn from(test: Test) -> TestName {
        match test {
            Test::McNemarExact { .. } => TestName::McnemarExact,
            Test::PairedT { .. } => TestName::PairedT,
            Test::ClusteredPairedT { .. } => TestName::ClusteredPairedT,
        }
    }
}
