//! `matrix:`: one spec, one evaluation per cell, run together. Seen from
//! the test servers: cells on one endpoint share its window, cells on
//! different endpoints run side by side, and every prompt of every cell is
//! sent once. Then the grid: an endpoint that answers worse is marked
//! against the baseline by the paired test, identical ones are not; two
//! cells compare; bad axes are refused before any request.

use std::time::Duration;

use serde_json::Value;

use crate::server::{Span, TestServer};
use crate::support::show_json;
use crate::util::{Spec, TestDir};

/// An echo server that answers after `latency`.
fn echo(latency: Duration) -> TestServer {
    TestServer::builder()
        .latency(latency)
        .reply(|p| p.to_owned())
        .start()
}

/// A spec over `n` rows (`sample 0`, ...) scored by exact match on the
/// row's text, with `matrix` appended (the YAML lines of `matrix:`).
fn spec(url: &str, n: usize, window: usize, matrix: &str) -> String {
    Spec::new("qa", url)
        .samples(n)
        .quick()
        .evaluator("{type: exact_match, expected: \"{{ text }}\"}")
        .tail(&format!(
            "concurrency: {{strategy: sliding_window, max_concurrency: {window}}}\nmatrix:\n{matrix}"
        ))
        .to_string()
}

/// A new folder where [`spec`] (`url`, `n`, `window`, `matrix`) ran into
/// experiment `x`, exit 0.
fn ran(url: &str, n: usize, window: usize, matrix: &str) -> TestDir {
    let dir = TestDir::new();
    dir.write("qa.yaml", &spec(url, n, window, matrix));
    dir.cmd(["run", "qa.yaml", "-e", "x", "-q"])
        .output()
        .assert_exit_code(0);
    dir
}

/// The cells of `show`'s grid for `evaluator`, by evaluation name.
fn cells<'a>(report: &'a Value, evaluator: &str) -> Vec<&'a Value> {
    report["matrix"]["cells"]
        .as_array()
        .unwrap_or_else(|| panic!("no matrix in {report:#}"))
        .iter()
        .filter(|c| c["evaluator"] == evaluator)
        .collect()
}

fn cell<'a>(cells: &[&'a Value], evaluation: &str) -> &'a Value {
    cells
        .iter()
        .find(|c| c["evaluation"] == evaluation)
        .unwrap_or_else(|| panic!("no cell {evaluation} in {cells:#?}"))
}

/// Whether some span of `a` overlaps some span of `b` in time.
fn overlap(a: &[Span], b: &[Span]) -> bool {
    let (Some(a_start), Some(a_end)) = (
        a.iter().map(|s| s.start).min(),
        a.iter().map(|s| s.end).max(),
    ) else {
        return false;
    };
    b.iter().any(|s| s.start < a_end && s.end > a_start)
}

/// The two prompt cells (`{{ text }}` and `Q {{ text }}`) on `server` ran
/// at the same time and held at most `window` there together: one window.
#[track_caller]
fn assert_one_window(server: &TestServer, window: usize) {
    let url = server.url();
    let peak = server.stats().peak_in_flight;
    assert!(
        peak <= window,
        "{url} held {peak} at once: its two cells did not share its window of {window}"
    );
    let (bare, q): (Vec<Span>, Vec<Span>) = server
        .spans()
        .into_iter()
        .partition(|s| !s.prompt.starts_with("Q "));
    assert!(
        overlap(&bare, &q),
        "{url}: its two cells ran one after the other"
    );
}

/// Three endpoints x two prompts, 40 rows, a window of 4: the six cells
/// run at once (each server's two prompts overlap in time, and so do the
/// servers), each server holds at most its window (the two cells on it
/// share one: 8 would mean a window each), and every prompt of every cell
/// is answered once.
#[test]
fn cells_run_together_and_share_each_endpoints_window() {
    const N: usize = 40;
    let servers = [
        echo(Duration::from_millis(60)),
        echo(Duration::from_millis(60)),
        echo(Duration::from_millis(60)),
    ];
    let urls: Vec<String> = servers.iter().map(|s| s.url()).collect();
    let matrix = format!(
        "  model.base_url:\n    values: [{}]\n    labels: [a, b, c]\n  prompt:\n    values: [\"{{{{ text }}}}\", \"Q {{{{ text }}}}\"]\n    labels: [bare, q]\n",
        urls.join(", ")
    );
    let dir = TestDir::new();
    dir.write("qa.yaml", &spec(&urls[0], N, 4, &matrix));
    let out = dir.cmd(["run", "qa.yaml", "-e", "x"]).output();
    out.assert_exit_code(0);
    out.assert_stderr_contains("qa: running 240 of 240 samples in 6 cells at once");

    for (server, url) in servers.iter().zip(&urls) {
        let stats = server.stats();
        assert_eq!(stats.answered, 2 * N, "{url}: {stats:?}");
        assert_eq!(stats.answered_prompts, 2 * N, "{url}: a prompt sent twice");
        assert_one_window(server, 4);
    }
    assert!(
        overlap(&servers[0].spans(), &servers[2].spans()),
        "the endpoints ran one after the other"
    );

    let report = show_json(&dir, "x", &[]);
    let problems = crate::schema::problems("show", &report);
    assert!(problems.is_empty(), "{problems:#?}");
    let evals: Vec<&str> = report["evaluations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        evals,
        [
            "qa/a/bare",
            "qa/a/q",
            "qa/b/bare",
            "qa/b/q",
            "qa/c/bare",
            "qa/c/q"
        ]
    );
    let m = &report["matrix"];
    assert_eq!(m["rows"], serde_json::json!(["model.base_url"]));
    assert_eq!(m["columns"], "prompt");
    assert_eq!(m["baseline"], "qa/a/bare");
    let grid = cells(&report, "exact_match");
    assert_eq!(grid.len(), 6);
    // Each cell's run counts its own samples and slot time, not its
    // endpoint's: with two cells on a window of 4, each held at most 4.
    for e in report["evaluations"].as_array().unwrap() {
        let run = &e["timing"]["runs"][0];
        assert_eq!(run["samples"], N, "{}: {run:#}", e["name"]);
        let held = run["mean_in_flight"].as_f64().unwrap();
        assert!(held > 0.5 && held <= 4.05, "{}: {run:#}", e["name"]);
    }
    assert_eq!(
        cell(&grid, "qa/b/q")["values"]["model.base_url"],
        urls[1].as_str()
    );
    assert_eq!(cell(&grid, "qa/b/q")["labels"]["prompt"], "q");
}

/// One endpoint answers 12% of the rows wrongly (the same rows every
/// time), two answer every row right: the worse one's cell is marked
/// against the baseline with a negative difference, the identical one is
/// not, and the baseline has no difference of its own. The table and
/// Markdown say the same.
#[test]
fn the_grid_marks_the_worse_endpoint_and_no_identical_one() {
    const N: usize = 200;
    let good = [echo(Duration::ZERO), echo(Duration::ZERO)];
    // Rows 0, 1, 2 of every 25: 12% wrong.
    let worse = TestServer::builder()
        .reply(|p| {
            let row: usize = p
                .rsplit(' ')
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            if row % 25 < 3 {
                "wrong".into()
            } else {
                p.to_owned()
            }
        })
        .start();
    let matrix = format!(
        "  model.base_url:\n    values: [{}, {}, {}]\n    labels: [good, same, worse]\n",
        good[0].url(),
        good[1].url(),
        worse.url()
    );
    let dir = TestDir::new();
    dir.write("qa.yaml", &spec(&good[0].url(), N, 8, &matrix));
    dir.cmd(["run", "qa.yaml", "-e", "x", "-q"])
        .output()
        .assert_exit_code(0);

    let report = show_json(&dir, "x", &[]);
    let grid = cells(&report, "exact_match");
    let base = cell(&grid, "qa/good");
    assert!(
        base["difference"].is_null() && base["p_value"].is_null(),
        "{base:#}"
    );
    assert_eq!(base["significant"], false);
    let same = cell(&grid, "qa/same");
    assert_eq!(same["difference"], 0.0, "{same:#}");
    assert_eq!(same["significant"], false, "{same:#}");
    let worse_cell = cell(&grid, "qa/worse");
    let diff = worse_cell["difference"].as_f64().unwrap();
    assert!(
        (diff + 0.12).abs() < 1e-9,
        "difference {diff}, not -0.12: {worse_cell:#}"
    );
    assert_eq!(worse_cell["significant"], true, "{worse_cell:#}");
    assert!(worse_cell["p_value"].as_f64().unwrap() < 0.001);
    assert_eq!(worse_cell["test"], "mcnemar_exact");
    assert_eq!(worse_cell["best_in_row"], false);
    assert_eq!(base["best_in_row"], true);
    assert_eq!(
        same["best_in_row"], true,
        "a tie for best is marked on both"
    );

    let table = dir.cmd(["show", "x"]).output();
    table.assert_exit_code(0);
    table.assert_stdout_contains("88.0% ±4.5 -12.0 pts (p < 0.001)");
    table.assert_stdout_contains("100.0% ±0.9 * (base)");
    let md = dir.cmd(["show", "x", "--format", "markdown"]).output();
    md.assert_exit_code(0);
    md.assert_stdout_contains("| worse | 88.0% ±4.5 -12.0 pts (p < 0.001) |");
    md.assert_stdout_contains("| good | **100.0% ±0.9** (base) |");

    // Against another baseline, the worse cell is still the one marked.
    let rebased = show_json(&dir, "x", &["--baseline", "same"]);
    let grid = cells(&rebased, "exact_match");
    assert_eq!(rebased["matrix"]["baseline"], "qa/same");
    assert_eq!(cell(&grid, "qa/good")["significant"], false);
    assert_eq!(cell(&grid, "qa/worse")["significant"], true);

    // Two cells compared sample by sample, as two experiments would be.
    let out = dir
        .cmd([
            "compare",
            "x",
            "--eval",
            "good",
            "--against",
            "worse",
            "--format",
            "json",
        ])
        .output();
    out.assert_exit_code(0);
    let compared: Value = out.json();
    let ev = &compared["evaluations"][0]["evaluators"][0];
    assert_eq!(ev["pass_to_fail"], 24, "{compared:#}");
    assert_eq!(ev["fail_to_pass"], 0);
    assert_eq!(compared["a"], "qa/good");
    assert_eq!(compared["b"], "qa/worse");
    let md = dir
        .cmd([
            "compare",
            "x",
            "--eval",
            "good",
            "--against",
            "worse",
            "--format",
            "markdown",
        ])
        .output();
    md.assert_exit_code(0);
    md.assert_stdout_contains("| exact_match | 100.0% | 88.0% | -12.0 pts |");
}

/// `--rows`, `--columns` and `--baseline` that name nothing in the grid are
/// refused with what it has; markdown is for show and compare only.
#[test]
fn a_grid_asked_for_what_it_lacks_says_what_it_has() {
    let dir = TestDir::new();
    dir.write(
        "m.yaml",
        "name: m\ndataset: {rows: [{q: a}, {q: b}]}\nmodel: {provider: mock, replies: [{reply: a}]}\nprompt: \"{{ q }}\"\nevaluators: [{type: exact_match, expected: a}]\nmatrix:\n  model.latency: [1ms, 2ms]\n  evaluators.0.expected: [a, b]\n",
    );
    dir.cmd(["run", "m.yaml", "-e", "x", "-q"])
        .output()
        .assert_exit_code(0);
    let out = dir.cmd(["show", "x", "--rows", "model.name"]).output();
    out.assert_exit_code(2);
    out.assert_stderr_contains("the matrix has no axis `model.name`");
    out.assert_stderr_contains("its axes are model.latency, evaluators.0.expected");
    let out = dir.cmd(["show", "x", "--baseline", "9/9"]).output();
    out.assert_exit_code(2);
    out.assert_stderr_contains("no cell of the matrix is `9/9`");
    out.assert_stderr_contains("1ms/a");
    let swapped = show_json(&dir, "x", &["--rows", "evaluators.0.expected"]);
    assert_eq!(
        swapped["matrix"]["rows"],
        serde_json::json!(["evaluators.0.expected"])
    );
    assert_eq!(swapped["matrix"]["columns"], "model.latency");
    let out = dir.cmd(["list", "--format", "markdown"]).output();
    out.assert_exit_code(2);
}

/// A bad axis, or a value that makes a bad spec, is exit 2 naming where it
/// was written, before any request; `validate` counts the cells and their
/// requests; `--matrix` replaces an axis of the spec.
#[test]
fn bad_axes_are_refused_before_any_request_and_validate_counts_cells() {
    let server = echo(Duration::ZERO);
    let dir = TestDir::new();
    let url = server.url();
    dir.write("ok.yaml", &spec(&url, 5, 2, "  model.name: [m1, m2, m3]\n"));
    let out = dir.cmd(["validate", "ok.yaml"]).output();
    out.assert_exit_code(0);
    out.assert_stdout_contains("ok  ok.yaml: qa/m1 · 5 samples");
    out.assert_stdout_contains("3 evaluations, 15 requests at most");
    let out = dir
        .cmd([
            "validate",
            "ok.yaml",
            "--matrix",
            "model.name=x,y",
            "--format",
            "json",
        ])
        .output();
    out.assert_exit_code(0);
    let checked: Value = out.json();
    let names: Vec<&str> = checked
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["qa/x", "qa/y"]);

    for (matrix, said) in [
        (
            "  model.name: m1\n",
            "matrix axis `model.name` must be a list of values",
        ),
        (
            "  model.name: {values: [a, b], labels: [x]}\n",
            "has 2 values but 1 labels",
        ),
        ("  name: [a, b]\n", "`name` cannot be a matrix axis"),
        (
            "  concurrency.max_concurrency: [2, 0]\n",
            "matrix `concurrency.max_concurrency` value 2 (`0`, line",
        ),
    ] {
        dir.write("bad.yaml", &spec(&url, 5, 2, matrix));
        let out = dir.cmd(["run", "bad.yaml", "-e", "bad"]).output();
        out.assert_exit_code(2);
        out.assert_stderr_contains(said);
        out.assert_stderr_contains("bad.yaml");
    }
    let out = dir
        .cmd(["run", "ok.yaml", "-e", "bad", "--matrix", "model.name"])
        .output();
    out.assert_exit_code(2);
    out.assert_stderr_contains("has no `=`");
    assert_eq!(server.count(), 0, "a request was sent before the checks");
}

/// A matrix run cut short (`--samples`) resumes cell by cell: the second
/// run sends only what each cell lacks.
#[test]
fn a_matrix_resumes_cell_by_cell() {
    let server = echo(Duration::from_millis(5));
    let dir = TestDir::new();
    dir.write(
        "qa.yaml",
        &spec(
            &server.url(),
            12,
            4,
            "  model.name: [m1, m2]\n  prompt: [\"{{ text }}\", \"Q {{ text }}\"]\n",
        ),
    );
    dir.cmd(["run", "qa.yaml", "-e", "x", "-q", "--samples", "5"])
        .output()
        .assert_exit_code(0);
    assert_eq!(server.count(), 20);
    let out = dir.cmd(["run", "qa.yaml", "-e", "x"]).output();
    out.assert_exit_code(0);
    out.assert_stderr_contains("running 28 of 48 samples in 4 cells at once, 20 already recorded");
    let stats = server.stats();
    assert_eq!(stats.answered, 48);
    // Two cells send each prompt text (one per model name).
    assert_eq!(stats.answered_prompts, 24);
}

/// Ctrl-C during a matrix run: every cell winds down (saying so once),
/// every reply the server gave is stored, and the resume sends each cell
/// only what it lacks, each prompt of each cell once over both runs.
#[test]
fn an_interrupted_matrix_keeps_every_reply_and_resumes() {
    const N: usize = 30;
    let server = echo(Duration::from_millis(150));
    let dir = TestDir::new();
    dir.write(
        "qa.yaml",
        &spec(
            &server.url(),
            N,
            2,
            "  prompt: [\"{{ text }}\", \"Q {{ text }}\"]\n",
        ),
    );
    let mut child = dir
        .cmd(["run", "qa.yaml", "-e", "x"])
        .spawn_logged(&dir, "first");
    crate::support::interrupt_once_recorded(&dir, &child, "x", 3);
    let status = child.wait().unwrap();
    let stderr = dir.read("first.err");
    assert_eq!(status.code(), Some(130), "stderr:\n{stderr}");
    assert_eq!(
        stderr.matches("letting requests in flight finish").count(),
        1,
        "said once for all cells:\n{stderr}"
    );
    let report = show_json(&dir, "x", &[]);
    let recorded: u64 = report["evaluations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["samples"]["recorded"].as_u64().unwrap())
        .sum();
    assert!(recorded < 2 * N as u64, "{report:#}");
    assert_eq!(
        server.count() as u64,
        recorded,
        "a reply the server gave was lost"
    );

    dir.cmd(["run", "qa.yaml", "-e", "x", "-q"])
        .output()
        .assert_exit_code(0);
    let stats = server.stats();
    assert_eq!(stats.answered, 2 * N, "{stats:?}");
    assert_eq!(stats.answered_prompts, 2 * N, "a prompt was sent twice");
}

/// Cells whose datasets differ (an axis on `dataset.limit`) each count
/// their own rows: a dataset read for one cell stands only for cells that
/// read the same.
#[test]
fn cells_over_different_rows_count_their_own() {
    let server = echo(Duration::ZERO);
    let dir = ran(
        &server.url(),
        8,
        2,
        "  dataset.limit: [3, 5]\n  model.name: [m1, m2]\n",
    );
    let report = show_json(&dir, "x", &[]);
    let totals: Vec<(String, u64)> = report["evaluations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().to_owned(),
                e["samples"]["total"].as_u64().unwrap(),
            )
        })
        .collect();
    let expected: Vec<(String, u64)> = [
        ("qa/3/m1", 3),
        ("qa/3/m2", 3),
        ("qa/5/m1", 5),
        ("qa/5/m2", 5),
    ]
    .iter()
    .map(|(n, t)| (n.to_string(), *t))
    .collect();
    assert_eq!(totals, expected);
    assert_eq!(server.count(), 16);
}

/// Two models behind one server (a proxy, a hosted API: quotas per
/// model): a 429 with `Retry-After: 2` for one model pauses its cell, and
/// the other model's cell goes on meanwhile.
#[test]
fn a_pause_for_one_model_leaves_the_other_models_cell_running() {
    use crate::server::Reply;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let once = Arc::new(AtomicBool::new(false));
    let server = TestServer::builder()
        .latency(Duration::from_millis(20))
        .respond(move |r| {
            if r.body["model"] == "a" && !once.swap(true, Ordering::SeqCst) {
                return Reply::retry_after(429, "2");
            }
            Reply::text(r.prompt.clone())
        })
        .start();
    let _dir = ran(&server.url(), 60, 2, "  model.name: [a, b]\n");
    let requests = server.requests();
    let model = |r: &crate::server::Received| r.body["model"].as_str().unwrap_or("").to_owned();
    let throttled_at = requests
        .iter()
        .find(|r| model(r) == "a")
        .map(|r| r.at)
        .expect("model a was asked");
    let during = |m: &str| {
        requests
            .iter()
            .filter(|r| model(r) == m)
            .filter(|r| r.at > throttled_at + Duration::from_millis(100))
            .filter(|r| r.at < throttled_at + Duration::from_millis(1800))
            .count()
    };
    assert_eq!(during("a"), 0, "model a was sent to during its pause");
    assert!(
        during("b") >= 10,
        "model b's cell waited out a's pause: {} requests during it",
        during("b")
    );
    assert_eq!(
        requests.len(),
        121,
        "each prompt once per model, plus the one 429"
    );
}

/// `rescore` with a matrix spec grades each cell's stored outputs again,
/// matched by name, sending nothing; the new experiment has its grid.
#[test]
fn a_matrix_is_rescored_cell_by_cell() {
    let server = echo(Duration::ZERO);
    let dir = ran(&server.url(), 6, 2, "  model.name: [m1, m2]\n");
    let sent = server.count();
    let out = dir
        .cmd([
            "rescore",
            "x",
            "--spec",
            "qa.yaml",
            "--set",
            "evaluators.0={type: contains, expected: \"sample 1\"}",
            "-q",
        ])
        .output();
    out.assert_exit_code(0);
    assert_eq!(server.count(), sent, "rescore sent a request");
    let report = show_json(&dir, "x-rescored", &[]);
    let grid = cells(&report, "contains");
    assert_eq!(grid.len(), 2, "{report:#}");
    for c in grid {
        // Of `sample 0` .. `sample 5`, only `sample 1` contains it.
        assert_eq!(c["scored"], 6, "{c:#}");
        assert!(
            (c["mean"].as_f64().unwrap() - 1.0 / 6.0).abs() < 1e-9,
            "{c:#}"
        );
    }
}

/// Six mock cells with a window of 40 each need about 500 open files at
/// once; under a hard limit of 256 (macOS's default soft limit is 256) the
/// run starts as many cells at once as fit, says so, and every sample
/// finishes (all at once, samples failed with "Too many open files").
#[test]
fn cells_start_as_many_at_once_as_the_open_file_limit_allows() {
    let dir = TestDir::new();
    let rows: Vec<String> = (0..40).map(|i| format!("{{q: r{i}}}")).collect();
    dir.write(
        "m.yaml",
        &format!(
            "name: m\ndataset: {{rows: [{}]}}\nmodel: {{provider: mock, latency: 100ms, replies: [{{reply: a}}]}}\nprompt: \"{{{{ q }}}}\"\nevaluators: [{{type: exact_match, expected: a}}]\nconcurrency: {{max_concurrency: 40}}\nmatrix:\n  model.latency: [100ms, 110ms, 120ms, 130ms, 140ms, 150ms]\n",
            rows.join(", ")
        ),
    );
    let script = format!(
        "ulimit -Sn 128 && ulimit -Hn 256 && exec {} run m.yaml -e x --storage {}",
        crate::util::BIN,
        dir.store().display()
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .current_dir(dir.path())
        .env("NO_COLOR", "1")
        .output()
        .expect("run sh");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "stderr:\n{stderr}");
    assert!(
        stderr.contains("allows 2 of these cells to run at once instead of 6"),
        "stderr:\n{stderr}"
    );
    let report = show_json(&dir, "x", &[]);
    for e in report["evaluations"].as_array().unwrap() {
        assert_eq!(e["samples"]["finished"], 40, "{e:#}");
    }
}

/// On a PostgreSQL store too, two cells of a fixed window on one endpoint
/// share it (an adaptive one there is steered with each cell's fleet).
#[test]
fn cells_share_a_window_on_a_postgres_store() {
    let Some(schema) = crate::postgres::schema_for("matrix_window") else {
        return;
    };
    let server = echo(Duration::from_millis(40));
    let dir = TestDir::new();
    dir.write(
        "qa.yaml",
        &spec(
            &server.url(),
            30,
            3,
            "  prompt: [\"{{ text }}\", \"Q {{ text }}\"]\n",
        ),
    );
    dir.cmd(["run", "qa.yaml", "-e", "x", "-q"])
        .env("DOTEVALS_STORAGE", schema.url())
        .output()
        .assert_exit_code(0);
    let stats = server.stats();
    assert_eq!(stats.answered_prompts, 60, "{stats:?}");
    assert_one_window(&server, 3);
}

/// Export says which cell each record is of, for pivoting the grid in
/// pandas or DuckDB: `matrix` (path to label) on each JSON line, a
/// `matrix.PATH` column per axis in CSV.
#[test]
fn export_carries_each_records_cell() {
    let server = echo(Duration::ZERO);
    let dir = ran(&server.url(),
            3,
            2,
            "  model.name: [m1, m2]\n  prompt: {values: [\"{{ text }}\", \"Q {{ text }}\"], labels: [bare, q]}\n",);
    let out = dir.cmd(["export", "x"]).output();
    out.assert_exit_code(0);
    let lines: Vec<Value> = out
        .stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 12);
    let m2q = lines
        .iter()
        .find(|l| l["evaluation"] == "qa/m2/q")
        .expect("a record of qa/m2/q");
    assert_eq!(
        m2q["matrix"],
        serde_json::json!({"model.name": "m2", "prompt": "q"})
    );
    let csv = dir.cmd(["export", "x", "--format", "csv"]).output();
    csv.assert_exit_code(0);
    let mut rows = csv.stdout.lines();
    let header = rows.next().unwrap_or_default();
    assert!(
        header.starts_with("evaluation,matrix.model.name,matrix.prompt,id,"),
        "{header}"
    );
    assert!(csv.stdout.contains("\nqa/m2/q,m2,q,"), "{}", csv.stdout);
}
