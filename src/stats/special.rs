//! Special functions, implemented here rather than pulled from a crate (the
//! tests check them against SciPy): log-gamma, the regularized incomplete
//! beta, the t distribution and the binomial tail.

pub(super) const LN_SQRT_2PI: f64 = 0.918_938_533_204_672_8;

/// ln Γ(x) - ((x - ½) ln x - x + ln √(2π)), the Stirling series, for x ≥ 10
/// (the first omitted term is below 1e-17 there).
pub(super) fn stirling_correction(x: f64) -> f64 {
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
pub(super) fn ln_gamma(x: f64) -> f64 {
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
pub(super) fn ln_beta(a: f64, b: f64) -> f64 {
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
pub(super) fn beta_inc(a: f64, b: f64, x: f64, y: f64) -> f64 {
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

pub(super) fn beta_cf(a: f64, b: f64, x: f64) -> f64 {
    const TINY: f64 = 1e-300;
    const EPS: f64 = 1e-16;
    let (qab, qap, qam) = (a + b, a + 1.0, a - 1.0);
    // Lentz's method: every step keeps c and d away from zero.
    let nonzero = |v: f64| if v.abs() < TINY { TINY } else { v };
    let mut c = 1.0;
    let mut d = 1.0 / nonzero(1.0 - qab * x / qap);
    let mut h = d;
    // One term of the fraction: the factor it multiplies h by.
    let mut step = |aa: f64| {
        d = 1.0 / nonzero(1.0 + aa * d);
        c = nonzero(1.0 + aa / c);
        d * c
    };
    for m in 1..100_000 {
        let m = m as f64;
        let m2 = 2.0 * m;
        h *= step(m * (b - m) * x / ((qam + m2) * (a + m2)));
        let del = step(-(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)));
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
pub(super) fn bisect(mut lo: f64, mut hi: f64, below: impl Fn(f64) -> bool) -> f64 {
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
pub(super) fn binomial_half_cdf(k: u64, n: u64) -> f64 {
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
