//! `dotevals compare A B`, error bars in `show` and `list`, and the CI gate,
//! on an echo server: each sample's output is a column of its row, so which
//! samples pass on each side is known, and every figure is computed here by
//! hand (or pasted from SciPy, with the line that computed it).

use serde_json::Value;

use crate::server::TestServer;
use crate::util::{Spec, TestDir};

/// Runs rows `rows` (YAML flow mappings with `id`) into experiment `name`, each
/// output being column `reply` of its row, graded by `evaluators`.
fn run(
    dir: &TestDir,
    server: &TestServer,
    name: &str,
    rows: &str,
    reply: &str,
    evaluators: &str,
) -> i32 {
    let spec = Spec::new("paired", &server.url())
        .dataset(&format!("  id: id\n  rows:\n{rows}"))
        .quick()
        .prompt(&format!("\"{{{{ {reply} }}}}\""))
        .evaluators(evaluators)
        .to_string();
    let file = format!("{name}.yaml");
    dir.write(&file, &spec);
    dir.cmd(["run", file.as_str(), "-e", name, "-q"])
        .output()
        .code
        .unwrap_or(-1)
}

fn json(dir: &TestDir, args: &[&str]) -> Value {
    let mut all = args.to_vec();
    all.extend(["--format", "json"]);
    let out = dir.cmd(all).output();
    out.assert_exit_code(0);
    out.json()
}

/// 13 rows: both pass on 0-4, A only on 5-6, B only on 7-11, neither on 12.
fn pass_fail_rows() -> String {
    (0..13)
        .map(|i| {
            let (a, b) = match i {
                0..=4 => ("yes", "yes"),
                5 | 6 => ("yes", "no"),
                7..=11 => ("no", "yes"),
                _ => ("no", "no"),
            };
            format!("    - {{id: s{i:02}, a: {a}, b: {b}}}\n")
        })
        .collect()
}

const EXACT: &str = "  - {type: exact_match, expected: \"yes\"}\n";

#[test]
fn compare_reports_exactly_the_flipped_samples_and_hand_computed_figures() {
    let server = TestServer::echo();
    let dir = TestDir::new();
    let rows = pass_fail_rows();
    assert_eq!(
        run(&dir, &server, "A", &rows, "a", EXACT),
        0,
        "failed samples are no errors"
    );
    run(&dir, &server, "B", &rows, "b", EXACT);
    let report = json(&dir, &["compare", "A", "B", "--flips"]);
    assert_eq!(
        (report["a"].as_str(), report["b"].as_str()),
        (Some("A"), Some("B"))
    );
    let e = &report["evaluations"][0];
    assert_eq!(e["samples"]["matched"], 13);
    let ev = &e["evaluators"][0];
    assert_eq!(ev["kind"], "pass_fail");
    assert_eq!(ev["test"], "mcnemar_exact");
    assert_eq!(
        (ev["pass_to_fail"].as_u64(), ev["fail_to_pass"].as_u64()),
        (Some(2), Some(5))
    );
    let flips: Vec<(&str, f64, f64, &str, &str)> = ev["flips"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["id"].as_str().unwrap(),
                f["score_a"].as_f64().unwrap(),
                f["score_b"].as_f64().unwrap(),
                f["output_a"].as_str().unwrap(),
                f["output_b"].as_str().unwrap(),
            )
        })
        .collect();
    let mut expected = vec![
        ("s05", 1.0, 0.0, "yes", "no"),
        ("s06", 1.0, 0.0, "yes", "no"),
    ];
    expected.extend(["s07", "s08", "s09", "s10", "s11"].map(|id| (id, 0.0, 1.0, "no", "yes")));
    assert_eq!(flips, expected);
    // By hand: A passes 7 of 13, B 10; per-sample differences are -1 (twice),
    // +1 (five times) and 0 (six times).
    let n = 13.0;
    let d: Vec<f64> = [-1.0; 2]
        .into_iter()
        .chain([1.0; 5])
        .chain([0.0; 6])
        .collect();
    let mean = d.iter().sum::<f64>() / n;
    let sd = (d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0)).sqrt();
    let se = sd / n.sqrt();
    let close = |v: &Value, x: f64| (v.as_f64().unwrap() - x).abs() < 1e-12;
    assert!(close(&ev["mean_a"], 7.0 / 13.0));
    assert!(close(&ev["mean_b"], 10.0 / 13.0));
    assert!(close(&ev["difference"], 3.0 / 13.0));
    assert!(close(&ev["stderr"], se), "{} vs {se}", ev["stderr"]);
    // The interval inverts the same exact test: Clopper-Pearson of the 5
    // fail->pass among 7 flips (bisection on exact binomial tails: 0.290421
    // to 0.963307), as a difference (7/13)(2 theta - 1).
    let near = |v: &Value, x: f64| (v.as_f64().unwrap() - x).abs() < 1e-9;
    assert!(near(
        &ev["ci95"][0],
        7.0 / n * (2.0 * 0.29042086373734266 - 1.0)
    ));
    assert!(near(
        &ev["ci95"][1],
        7.0 / n * (2.0 * 0.9633074338239145 - 1.0)
    ));
    // Exact McNemar: 2 x P(X <= 2), X ~ Bin(7, 1/2) = 2 x 29/128
    // (scipy.stats.binomtest(2, 7, 0.5).pvalue == 0.453125).
    assert!(close(&ev["p_value"], 0.453125));
    assert!(close(
        &ev["min_detectable_difference"],
        (1.959963984540054 + 0.8416212335729143) * se
    ));
    // The table says the same.
    let out = dir.cmd(["compare", "A", "B"]).output();
    out.assert_exit_code(0);
    out.assert_stdout_contains("exact_match");
    out.assert_stdout_contains("+23.1 pts");
    out.assert_stdout_contains("0.453");
}

#[test]
fn graded_scores_are_compared_by_a_paired_t_test() {
    // similarity to "aaaa": each `b` in place of an `a` costs a quarter.
    let word = |s: f64| ["bbbb", "abbb", "aabb", "aaab", "aaaa"][(s * 4.0) as usize];
    let a = [0.5, 1.0, 0.25, 0.75, 1.0, 0.0, 0.5, 1.0];
    let b = [1.0, 1.0, 0.5, 0.75, 0.5, 0.25, 1.0, 1.0];
    let rows: String = (0..8)
        .map(|i| format!("    - {{id: g{i}, a: {}, b: {}}}\n", word(a[i]), word(b[i])))
        .collect();
    let server = TestServer::echo();
    let dir = TestDir::new();
    let sim = "  - {type: similarity, expected: aaaa}\n";
    run(&dir, &server, "A", &rows, "a", sim);
    run(&dir, &server, "B", &rows, "b", sim);
    let ev = json(&dir, &["compare", "A", "B"])["evaluations"][0]["evaluators"][0].clone();
    assert_eq!(
        (ev["kind"].as_str(), ev["test"].as_str()),
        (Some("graded"), Some("paired_t"))
    );
    let close = |v: &Value, x: f64| (v.as_f64().unwrap() - x).abs() < 1e-9;
    // a = [0.5,1,0.25,0.75,1,0,0.5,1]; b = [1,1,0.5,0.75,0.5,0.25,1,1]
    // scipy.stats.ttest_rel(b, a) -> statistic 1.0801234497346435, pvalue 0.3158906629549424
    // d = b - a: mean 0.125, se d.std(ddof=1)/sqrt(8) = 0.11572751247156891,
    // 95% CI mean -/+ t.ppf(0.975, 7) * se = [-0.1486520825667782, 0.3986520825667782]
    assert!(close(&ev["difference"], 0.125));
    assert!(close(&ev["stderr"], 0.11572751247156891));
    assert!(close(&ev["p_value"], 0.3158906629549424));
    assert!(close(&ev["ci95"][0], -0.1486520825667782));
    assert!(close(&ev["ci95"][1], 0.3986520825667782));
}

#[test]
fn unmatched_samples_are_counted_and_named_never_dropped_silently() {
    let server = TestServer::echo();
    let dir = TestDir::new();
    let rows = pass_fail_rows();
    run(&dir, &server, "A", &rows, "a", EXACT);
    // B lost s12, gained s13, and s11's row was edited.
    let edited = rows
        .replace(
            "    - {id: s12, a: no, b: no}\n",
            "    - {id: s13, a: no, b: yes}\n",
        )
        .replace("{id: s11, a: no, b: yes}", "{id: s11, a: maybe, b: yes}");
    run(&dir, &server, "B", &edited, "b", EXACT);
    let e = json(&dir, &["compare", "A", "B"])["evaluations"][0].clone();
    let s = &e["samples"];
    assert_eq!(s["matched"], 11);
    assert_eq!(s["only_in_a"]["ids"], serde_json::json!(["s12"]));
    assert_eq!(s["only_in_b"]["ids"], serde_json::json!(["s13"]));
    assert_eq!(s["changed_rows"]["ids"], serde_json::json!(["s11"]));
    assert_eq!(e["evaluators"][0]["n"], 11);
    let out = dir.cmd(["compare", "A", "B"]).output();
    out.assert_stdout_contains("only in A: 1 (s12)");
    out.assert_stdout_contains("only in B: 1 (s13)");
    out.assert_stdout_contains("rows edited: 1 (s11)");
}

#[test]
fn compare_refuses_what_it_cannot_pair() {
    let server = TestServer::echo();
    let dir = TestDir::new();
    run(&dir, &server, "A", &pass_fail_rows(), "a", EXACT);
    let out = dir.cmd(["compare", "A", "Z"]).output();
    out.assert_exit_code(2);
    out.assert_stderr_contains("no experiment named `Z`");
    let out = dir.cmd(["compare", "A", "A", "--eval", "other"]).output();
    out.assert_exit_code(2);
    // One experiment against itself: what it holds, said once.
    out.assert_stderr_contains("`A` holds no evaluation `other`");
    out.assert_stderr_contains("it holds `paired`");
}

#[test]
fn show_and_list_give_error_bars() {
    let server = TestServer::echo();
    let dir = TestDir::new();
    // 7 of 8 pass.
    let rows: String = (0..8)
        .map(|i| {
            format!(
                "    - {{id: e{i}, a: {}}}\n",
                if i == 3 { "no" } else { "yes" }
            )
        })
        .collect();
    run(&dir, &server, "A", &rows, "a", EXACT);
    let ev = json(&dir, &["show", "A"])["evaluations"][0]["evaluators"][0].clone();
    assert_eq!(ev["interval"], "wilson");
    // statsmodels proportion_confint(7, 8, method='wilson') = (0.5291118177871466, 0.9775825085499434)
    let close = |v: &Value, x: f64| (v.as_f64().unwrap() - x).abs() < 1e-9;
    assert!(close(&ev["ci95"][0], 0.5291118177871466));
    assert!(close(&ev["ci95"][1], 0.9775825085499434));
    // sd of seven 1s and one 0 (n - 1 = 7) is sqrt(1/8); / sqrt(8) = 0.125.
    assert!(close(&ev["stderr"], 0.125));
    let list = json(&dir, &["list"]);
    let x = &list["experiments"][0];
    assert!(close(&x["accuracy_ci95"][0], 0.5291118177871466));
    assert_eq!(x["scored"], 8);
    let out = dir.cmd(["show", "A"]).output();
    out.assert_stdout_contains("87.5% (7/8) · 95% CI 52.9–97.8% (SE 12.5 pts)");
}

#[test]
fn a_cluster_column_clusters_the_standard_error() {
    let server = TestServer::echo();
    let dir = TestDir::new();
    // Three groups: g0 all pass, g1 all fail, g2 half: outcomes cluster.
    let outcomes = [
        ("g0", "yes"),
        ("g0", "yes"),
        ("g0", "yes"),
        ("g1", "no"),
        ("g1", "no"),
        ("g1", "no"),
        ("g2", "yes"),
        ("g2", "no"),
    ];
    let rows: String = outcomes
        .iter()
        .enumerate()
        .map(|(i, (g, a))| format!("    - {{id: c{i}, group: {g}, a: {a}}}\n"))
        .collect();
    let spec = Spec::new("paired", &server.url())
        .dataset(&format!("  id: id\n  cluster: group\n  rows:\n{rows}"))
        .quick()
        .prompt("\"{{ a }}\"")
        .evaluators(EXACT)
        .to_string();
    dir.write("c.yaml", &spec);
    dir.cmd(["run", "c.yaml", "-e", "C", "-q"]).output();
    let ev = json(&dir, &["show", "C"])["evaluations"][0]["evaluators"][0].clone();
    assert_eq!(ev["interval"], "clustered_t");
    assert_eq!(ev["clusters"], 3);
    // Miller eq. 4: SE^2 = s^2/n + (1/n^2) sum_c sum_{i != j in c} e_i e_j, with
    // e = x - mean, s^2 the sample variance (n - 1).
    let x: Vec<f64> = outcomes
        .iter()
        .map(|(_, a)| f64::from(u8::from(*a == "yes")))
        .collect();
    let n = x.len() as f64;
    let mean = x.iter().sum::<f64>() / n;
    let var = x.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let mut cross = 0.0;
    for g in ["g0", "g1", "g2"] {
        let e: Vec<f64> = outcomes
            .iter()
            .zip(&x)
            .filter(|((c, _), _)| *c == g)
            .map(|(_, v)| v - mean)
            .collect();
        let sum: f64 = e.iter().sum();
        cross += sum * sum - e.iter().map(|v| v * v).sum::<f64>();
    }
    let se = (var / n + cross / (n * n)).sqrt();
    assert!(
        (ev["stderr"].as_f64().unwrap() - se).abs() < 1e-12,
        "{} vs {se}",
        ev["stderr"]
    );
    assert!(
        se > (var / n).sqrt(),
        "clustered outcomes widen the error bar"
    );
    // A column that is not there is a spec error.
    let bad = spec.replace("cluster: group", "cluster: grp");
    dir.write("bad.yaml", &bad);
    let out = dir.cmd(["run", "bad.yaml", "-e", "D"]).output();
    out.assert_exit_code(2);
    out.assert_stderr_contains("`cluster` names `grp`, which is not a dataset column");
    out.assert_stderr_contains("group");
}

#[test]
fn the_ci_gate_exits_3_naming_the_evaluator_below_its_bar() {
    let server = TestServer::echo();
    let dir = TestDir::new();
    let rows = pass_fail_rows(); // A passes 7 of 13 (0.538)
    assert_eq!(run(&dir, &server, "A", &rows, "a", EXACT), 0);
    let out = dir.cmd(["show", "A", "--fail-under", "0.6"]).output();
    out.assert_exit_code(3);
    out.assert_stderr_contains(
        "fail-under: paired / exact_match has a mean score of 0.538, below its bar 0.6",
    );
    dir.cmd(["show", "A", "--fail-under", "0.5"])
        .output()
        .assert_exit_code(0);
    // The spec's own bar, kept with the experiment for `show`.
    let gated = "  - {type: exact_match, expected: \"yes\", fail_under: 0.9}\n";
    assert_eq!(run(&dir, &server, "G", &rows, "a", gated), 3);
    let out = dir.cmd(["show", "G"]).output();
    out.assert_exit_code(3);
    out.assert_stdout_contains("fail_under 0.9: BELOW");
    let ev = json(&dir, &["show", "G", "--fail-under", "0.5"]);
    assert_eq!(
        ev["evaluations"][0]["evaluators"][0]["below_fail_under"],
        false
    );
    // A bar outside [0, 1] is a usage error.
    let out = dir.cmd(["show", "A", "--fail-under", "80"]).output();
    out.assert_exit_code(2);
}

#[test]
fn with_a_cluster_column_compare_clusters_the_paired_standard_error() {
    let server = TestServer::echo();
    let dir = TestDir::new();
    // Differences b - a by group: g0 +1 +1 0, g1 0 0, g2 -1 +1 +1 0.
    let rows = [
        ("g0", "no", "yes"),
        ("g0", "no", "yes"),
        ("g0", "yes", "yes"),
        ("g1", "yes", "yes"),
        ("g1", "no", "no"),
        ("g2", "yes", "no"),
        ("g2", "no", "yes"),
        ("g2", "no", "yes"),
        ("g2", "yes", "yes"),
    ];
    let yaml: String = rows
        .iter()
        .enumerate()
        .map(|(i, (g, a, b))| format!("    - {{id: k{i}, group: {g}, a: {a}, b: {b}}}\n"))
        .collect();
    for (name, reply) in [("A", "a"), ("B", "b")] {
        let spec = Spec::new("paired", &server.url())
            .dataset(&format!("  id: id\n  cluster: group\n  rows:\n{yaml}"))
            .quick()
            .prompt(&format!("\"{{{{ {reply} }}}}\""))
            .evaluators(EXACT)
            .to_string();
        dir.write(&format!("{name}.yaml"), &spec);
        dir.cmd(["run", &format!("{name}.yaml"), "-e", name, "-q"])
            .output();
    }
    let ev = json(&dir, &["compare", "A", "B"])["evaluations"][0]["evaluators"][0].clone();
    assert_eq!(ev["test"], "clustered_paired_t");
    assert_eq!(ev["clusters"], 3);
    // The clustered SE of the mean difference, computed here as in Miller eq. 4.
    let groups: [&[f64]; 3] = [&[1.0, 1.0, 0.0], &[0.0, 0.0], &[-1.0, 1.0, 1.0, 0.0]];
    let d: Vec<f64> = groups.iter().flat_map(|g| g.iter().copied()).collect();
    let n = d.len() as f64;
    let mean = d.iter().sum::<f64>() / n;
    let var = d.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let cross: f64 = groups
        .iter()
        .map(|g| {
            let e: Vec<f64> = g.iter().map(|x| x - mean).collect();
            e.iter().sum::<f64>().powi(2) - e.iter().map(|x| x * x).sum::<f64>()
        })
        .sum();
    let se = (var / n + cross / (n * n)).sqrt();
    let close = |v: &Value, x: f64| (v.as_f64().unwrap() - x).abs() < 1e-12;
    assert!(close(&ev["difference"], mean));
    assert!(close(&ev["stderr"], se), "{} vs {se}", ev["stderr"]);
    let out = dir.cmd(["compare", "A", "B"]).output();
    out.assert_stdout_contains("standard error clustered by `group`");
}

#[test]
fn the_shipped_comparison_gives_the_readme_figures() {
    let dir = TestDir::new();
    let root = env!("CARGO_MANIFEST_DIR");
    for (spec, name) in [
        ("evals/reviews.yaml", "baseline"),
        ("evals/reviews-negation.yaml", "negation"),
    ] {
        let out = std::process::Command::new(crate::util::BIN)
            .current_dir(root)
            .args(["run", spec, "--experiment", name, "--quiet"])
            .env("DOTEVALS_STORAGE", dir.store())
            .env("NO_COLOR", "1")
            .output()
            .expect("run dotevals");
        assert_eq!(out.status.code(), Some(0), "{out:?}");
    }
    let ev =
        json(&dir, &["compare", "baseline", "negation"])["evaluations"][0]["evaluators"][0].clone();
    assert_eq!(
        (ev["mean_a"].as_f64(), ev["mean_b"].as_f64()),
        (Some(0.85), Some(0.975))
    );
    assert_eq!(
        (ev["pass_to_fail"].as_u64(), ev["fail_to_pass"].as_u64()),
        (Some(5), Some(30))
    );
    assert_eq!(
        (ev["test"].as_str(), ev["clusters"].as_u64()),
        (Some("clustered_paired_t"), Some(10))
    );
    let out = dir.cmd(["compare", "baseline", "negation"]).output();
    out.assert_stdout_contains("│ exact_match │ 85.0%    │ 97.5%    │ +12.5 pts │ +7.1 to +17.9 pts │ < 0.001 │ 5         │ 30        │ ±6.7 pts   │");
    let out = dir
        .cmd(["show", "baseline", "--fail-under", "0.9"])
        .output();
    out.assert_exit_code(3);
    out.assert_stderr_contains(
        "fail-under: reviews / exact_match has a mean score of 0.850, below its bar 0.9",
    );
}

/// Experiments whose evaluations share no evaluator: a sentence, not a table
/// with a header and no end.
#[test]
fn no_shared_evaluator_is_said_not_drawn() {
    let server = TestServer::echo();
    let dir = TestDir::new();
    let rows = pass_fail_rows();
    run(&dir, &server, "A", &rows, "a", EXACT);
    run(
        &dir,
        &server,
        "B",
        &rows,
        "b",
        "  - {type: contains, expected: \"yes\"}\n",
    );
    let out = dir.cmd(["compare", "A", "B"]).output();
    out.assert_exit_code(0);
    out.assert_stdout_contains("no evaluator in common: nothing to compare");
    out.assert_stdout_contains("not compared (on one side only): exact_match, contains");
    assert!(
        !out.stdout.contains('├'),
        "no half-drawn table:\n{}",
        out.stdout
    );
}

/// With more than 20 flipped samples, the two-experiment report lists 20 and
/// folds the rest, so the summaries and plots stay in view.
#[test]
fn a_report_folds_flips_past_twenty() {
    let server = TestServer::echo();
    let dir = TestDir::new();
    let rows: String = (0..30)
        .map(|i| format!("    - {{id: f{i:02}, a: \"yes\", b: \"no\"}}\n"))
        .collect();
    run(&dir, &server, "A", &rows, "a", EXACT);
    run(&dir, &server, "B", &rows, "b", EXACT);
    dir.cmd(["report", "A", "B", "-o", "ab.html"])
        .output()
        .assert_exit_code(0);
    let html = dir.read("ab.html");
    assert!(html.contains("30 flipped"), "all are counted");
    let (open, folded) = html
        .split_once("<details class=\"more-flips\"><summary>10 more flipped</summary>")
        .expect("the flips past 20 are folded");
    assert_eq!(open.matches("<tr class=\"flip\">").count(), 20);
    assert_eq!(folded.matches("<tr class=\"flip\">").count(), 10);
}

/// `run --quiet` still says why it exits 3.
#[test]
fn quiet_keeps_the_fail_under_line() {
    let server = TestServer::echo();
    let dir = TestDir::new();
    let spec = Spec::new("gated", &server.url())
        .samples(2)
        .quick()
        .evaluator("{type: contains, expected: never}")
        .to_string();
    dir.write("spec.yaml", &spec);
    let out = dir
        .cmd(["run", "spec.yaml", "-e", "x", "-q", "--fail-under", "0.5"])
        .output();
    out.assert_exit_code(3);
    out.assert_stderr_contains(
        "fail-under: gated / contains has a mean score of 0.000, below its bar 0.5",
    );
}

/// Comparing an experiment while a run of it is going, or writing its
/// report, says the figures are a snapshot.
#[test]
fn compare_and_report_say_when_an_experiment_is_still_running() {
    let server = TestServer::echo();
    let dir = TestDir::new();
    run(&dir, &server, "A", &pass_fail_rows(), "a", EXACT);
    let slow = TestServer::builder()
        .latency(std::time::Duration::from_secs(30))
        .reply(|p| p.to_owned())
        .start();
    let spec = Spec::new("paired", &slow.url())
        .dataset(&format!("  id: id\n  rows:\n{}", pass_fail_rows()))
        .quick()
        .prompt("\"{{ b }}\"")
        .evaluators(EXACT)
        .to_string();
    dir.write("B.yaml", &spec);
    let mut child = dir
        .cmd(["run", "B.yaml", "-e", "B"])
        .spawn_logged(&dir, "b");
    crate::util::wait_until(std::time::Duration::from_secs(20), "B started", || {
        slow.count() > 0
    });
    let note = "experiment `B` is still running: these figures are a snapshot";
    let compared = dir.cmd(["compare", "A", "B"]).output();
    let reported = dir.cmd(["report", "B", "-o", "b.html"]).output();
    let finished = dir.cmd(["compare", "A", "A"]).output();
    child.kill().expect("stop the run");
    child.wait().unwrap();
    compared.assert_exit_code(0);
    compared.assert_stderr_contains(note);
    reported.assert_exit_code(0);
    reported.assert_stderr_contains(note);
    assert!(
        !finished.stderr.contains("still running"),
        "{}",
        finished.stderr
    );
}
