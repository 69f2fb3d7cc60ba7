//! Pairing two evaluations sample by sample, for `dotevals compare`.
//!
//! Samples are matched by id and row hash (both sides hold the scores of the
//! same dataset row); an id on one side only, or one whose row differs, is
//! counted and named, never silently dropped. Per evaluator that both sides
//! have (matched by name), [`pair`] gathers what a paired test needs: the
//! 2x2 table of passes, the sums of the scores and of their differences, and
//! the samples whose verdict flipped. It is one merge over two key-ordered
//! lists: O(n), no allocation per sample but the flips.

use std::collections::BTreeMap;

use crate::stats::{self, Clustered, Comparison, PairedSums, PassFailTable, Sums};
use crate::store::{SampleScores, ScorePoint};

mod build;
pub mod view;

pub use build::{by_sample, load, rows, NothingInCommon, Pick};

/// Two evaluations' samples, paired.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Pairing {
    /// Samples in both with the same row.
    pub matched: u64,
    /// Ids recorded only in A, and only in B.
    pub only_a: Vec<String>,
    pub only_b: Vec<String>,
    /// Ids in both whose rows differ (the dataset was edited): not compared.
    pub changed: Vec<String>,
    /// One per evaluator both sides have, in A's order.
    pub evaluators: Vec<Paired>,
}

/// One evaluator's scores on the matched samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Paired {
    pub name: String,
    /// Matched samples left unscored on one side or both (not compared).
    pub unscored: u64,
    /// The scores of the samples scored on both sides, and their differences.
    pub scores: PairedSums,
    /// Their verdicts, as a 2x2 table.
    pub verdicts: PassFailTable,
    /// Every score on both sides is 0 or 1: a pass/fail evaluator, compared
    /// by McNemar's test on the verdicts; else by a paired t-test.
    pub binary: bool,
    /// Samples whose verdict changed, in key order.
    pub flips: Vec<Flip>,
    /// With a cluster column: the differences `b - a`, per cluster of A's rows.
    pub clusters: BTreeMap<String, Sums>,
}

/// A sample that passed on one side and failed on the other.
#[derive(Debug, Clone, PartialEq)]
pub struct Flip {
    pub key: String,
    pub a: f64,
    pub b: f64,
}

/// Pairs `a` and `b` (each ordered by key, as the store reads them), whose
/// evaluators are named `a_names` and `b_names`.
pub fn pair(
    a: &[SampleScores],
    a_names: &[String],
    b: &[SampleScores],
    b_names: &[String],
) -> Pairing {
    let columns: Vec<(usize, usize)> = a_names
        .iter()
        .enumerate()
        .filter_map(|(i, name)| Some((i, b_names.iter().position(|n| n == name)?)))
        .collect();
    let mut out = Pairing {
        evaluators: columns
            .iter()
            .map(|&(i, _)| Paired {
                name: a_names[i].clone(),
                unscored: 0,
                scores: PairedSums::new(),
                verdicts: PassFailTable::default(),
                binary: true,
                flips: Vec::new(),
                clusters: BTreeMap::new(),
            })
            .collect(),
        ..Pairing::default()
    };
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x.key == y.key => {
                if x.row_hash == y.row_hash {
                    out.matched += 1;
                    for (paired, &(ia, ib)) in out.evaluators.iter_mut().zip(&columns) {
                        let sa = x.scores.get(ia).copied().flatten();
                        let sb = y.scores.get(ib).copied().flatten();
                        paired.add(&x.key, x.cluster.as_deref(), sa, sb);
                    }
                } else {
                    out.changed.push(x.key.clone());
                }
                i += 1;
                j += 1;
            }
            (Some(x), Some(y)) if x.key < y.key => {
                out.only_a.push(x.key.clone());
                i += 1;
            }
            (Some(_), Some(y)) | (None, Some(y)) => {
                out.only_b.push(y.key.clone());
                j += 1;
            }
            (Some(x), None) => {
                out.only_a.push(x.key.clone());
                i += 1;
            }
            (None, None) => break,
        }
    }
    out
}

impl Paired {
    fn add(
        &mut self,
        key: &str,
        cluster: Option<&str>,
        a: Option<ScorePoint>,
        b: Option<ScorePoint>,
    ) {
        let (Some(a), Some(b)) = (a, b) else {
            self.unscored += 1;
            return;
        };
        self.scores.push(a.value, b.value);
        if let Some(cluster) = cluster {
            match self.clusters.get_mut(cluster) {
                Some(sums) => sums.push(b.value - a.value),
                None => {
                    let mut sums = Sums::new();
                    sums.push(b.value - a.value);
                    self.clusters.insert(cluster.to_owned(), sums);
                }
            }
        }
        self.verdicts.push(a.passed, b.passed);
        let binary = |v: f64| v == 0.0 || v == 1.0;
        self.binary &= binary(a.value) && binary(b.value);
        if a.passed != b.passed {
            self.flips.push(Flip {
                key: key.to_owned(),
                a: a.value,
                b: b.value,
            });
        }
    }

    /// Samples compared: scored on both sides.
    pub fn n(&self) -> u64 {
        self.scores.diff.n
    }

    /// B against A: with a cluster column, a paired t-test on the clustered
    /// standard error of the differences (samples in one group are not
    /// independent, which McNemar's test and the plain paired t assume);
    /// else McNemar's exact test on the verdicts of a pass/fail evaluator, a
    /// paired t-test on the scores of a graded one.
    pub fn compare(&self) -> Comparison {
        if !self.clusters.is_empty() {
            let mut diffs = Clustered::new();
            for sums in self.clusters.values() {
                diffs.push_cluster(sums);
            }
            stats::clustered_paired(&self.scores.a, &self.scores.b, &diffs)
        } else if self.binary {
            self.verdicts.compare()
        } else {
            self.scores.compare()
        }
    }
}

/// One score per sample id for `compare`: the scores of an evaluation with
/// more than one repeat (ordered by key, as the store reads them) collapsed
/// over each sample's repeats, ordered by sample id. Per evaluator, the score
/// is the mean of the scored repeats and the sample passes when at least half
/// of them passed (so 2 of 3 pass, 1 of 3 fails, 1 of 2 passes); unscored
/// when no repeat was scored. A mean that is not 0 or 1 makes the evaluator
/// graded when the two sides are paired. The row hash is the first repeat's
/// (every repeat of a row has the same).
pub fn collapse_repeats(samples: &[SampleScores]) -> Vec<SampleScores> {
    use std::collections::BTreeMap;
    #[derive(Default, Clone, Copy)]
    struct Acc {
        n: u64,
        sum: f64,
        passed: u64,
    }
    let mut by_id: BTreeMap<&str, (u64, Option<&str>, Vec<Acc>)> = BTreeMap::new();
    for s in samples {
        let (_, _, accs) = by_id
            .entry(crate::repeats::base_id(&s.key))
            .or_insert_with(|| {
                let accs = vec![Acc::default(); s.scores.len()];
                (s.row_hash, s.cluster.as_deref(), accs)
            });
        if accs.len() < s.scores.len() {
            accs.resize(s.scores.len(), Acc::default());
        }
        for (acc, score) in accs.iter_mut().zip(&s.scores) {
            if let Some(p) = score {
                acc.n += 1;
                acc.sum += p.value;
                acc.passed += u64::from(p.passed);
            }
        }
    }
    by_id
        .into_iter()
        .map(|(id, (row_hash, cluster, accs))| SampleScores {
            key: id.to_owned(),
            row_hash,
            cluster: cluster.map(str::to_owned),
            scores: accs
                .iter()
                .map(|a| {
                    (a.n > 0).then(|| ScorePoint {
                        value: a.sum / a.n as f64,
                        passed: 2 * a.passed >= a.n,
                    })
                })
                .collect(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collapse_means_the_repeats_of_each_id_and_passes_on_half() {
        // Byte order puts `a!` between `a` and `a#repeat-1`: grouping is by id.
        let stored = [
            sample("a", 1, &[Some(1.0), None]),
            sample("a!", 2, &[Some(0.0), Some(0.0)]),
            sample("a#repeat-1", 1, &[Some(1.0), None]),
            sample("a#repeat-2", 1, &[Some(0.0), None]),
            sample("a!#repeat-1", 2, &[Some(0.0), Some(1.0)]),
        ];
        let c = collapse_repeats(&stored);
        let keys: Vec<&str> = c.iter().map(|s| s.key.as_str()).collect();
        assert_eq!(keys, ["a", "a!"]);
        let a = c[0].scores[0].unwrap();
        assert!((a.value - 2.0 / 3.0).abs() < 1e-12);
        assert!(a.passed, "2 of 3 passed");
        assert_eq!(c[0].scores[1], None, "no repeat scored");
        assert_eq!(c[0].row_hash, 1);
        assert_eq!(
            c[1].scores[0],
            Some(ScorePoint {
                value: 0.0,
                passed: false
            })
        );
        assert_eq!(
            c[1].scores[1],
            Some(ScorePoint {
                value: 0.5,
                passed: true
            }),
            "1 of 2 passes"
        );
    }

    fn sample(key: &str, row_hash: u64, scores: &[Option<f64>]) -> SampleScores {
        SampleScores {
            key: key.into(),
            row_hash,
            cluster: None,
            scores: scores
                .iter()
                .map(|s| {
                    s.map(|value| ScorePoint {
                        value,
                        passed: value >= 0.5,
                    })
                })
                .collect(),
        }
    }

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn samples_pair_by_id_and_row_and_the_rest_are_named() {
        let a = [
            sample("1", 1, &[Some(1.0)]),
            sample("2", 2, &[Some(0.0)]),
            sample("3", 3, &[Some(1.0)]),
            sample("5", 5, &[None]),
        ];
        let b = [
            sample("2", 2, &[Some(1.0)]),
            sample("3", 9, &[Some(1.0)]),
            sample("4", 4, &[Some(1.0)]),
            sample("5", 5, &[Some(1.0)]),
        ];
        let p = pair(&a, &names(&["m"]), &b, &names(&["m"]));
        assert_eq!(p.matched, 2);
        assert_eq!(p.only_a, ["1"]);
        assert_eq!(p.only_b, ["4"]);
        assert_eq!(p.changed, ["3"]);
        let m = &p.evaluators[0];
        assert_eq!((m.n(), m.unscored), (1, 1));
        let v = m.verdicts;
        assert_eq!((v.b_only, v.a_only, v.both, v.neither), (1, 0, 0, 0));
        assert_eq!(
            m.flips,
            [Flip {
                key: "2".into(),
                a: 0.0,
                b: 1.0
            }]
        );
        assert!(m.binary);
    }

    #[test]
    fn evaluators_pair_by_name_and_graded_scores_are_summed() {
        let a = [
            sample("1", 1, &[Some(0.25), Some(1.0)]),
            sample("2", 2, &[Some(0.75), Some(0.0)]),
        ];
        let b = [
            sample("1", 1, &[Some(1.0), Some(0.5)]),
            sample("2", 2, &[Some(0.0), Some(0.5)]),
        ];
        let p = pair(&a, &names(&["x", "g"]), &b, &names(&["g", "y"]));
        assert_eq!(p.evaluators.len(), 1, "only `g` is on both sides");
        let g = &p.evaluators[0];
        assert_eq!(g.name, "g");
        assert_eq!(g.n(), 2);
        // A's g is column 1 (1.0, 0.0); B's g is column 0 (1.0, 0.0).
        let s = g.scores;
        assert_eq!((s.a.sum, s.b.sum, s.diff.sum), (1.0, 1.0, 0.0));
        assert!(g.binary);
        let p = pair(&a, &names(&["g", "x"]), &b, &names(&["g", "x"]));
        let g = &p.evaluators[0];
        assert!(!g.binary);
        assert_eq!(
            (g.scores.a.mean(), g.scores.b.mean()),
            (Some(0.5), Some(0.5))
        );
        let d = g.scores.diff;
        assert_eq!((d.sum, d.sum_sq), (0.0, 2.0 * 0.75f64.powi(2)));
        assert_eq!((g.verdicts.a_only, g.verdicts.b_only), (1, 1));
        assert!(matches!(
            g.compare().test,
            crate::stats::Test::PairedT { .. }
        ));
    }
}
