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

mod paired;
mod special;
mod summary;

pub use paired::*;
pub use special::*;
pub use summary::*;

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
