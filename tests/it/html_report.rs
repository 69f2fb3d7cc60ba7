//! `dotevals report NAME [NAME2] [-o FILE]` and `run --report FILE`: one
//! self-contained HTML file, checked as text (the browser test opens it in
//! Chromium).

use crate::util::TestDir;

const HOSTILE: &str = "</script><script>alert(1)</script>";

/// A mock spec named `pairs` over rows s1 (`a`), s2 (`b`), s3 (`ab`), s4 (`c`):
/// the reply is `yes` when the prompt holds `word`, else `other`.
fn spec(word: &str, other: &str) -> String {
    format!(
        "name: pairs
dataset:
  id: id
  rows: [{{id: s1, text: a}}, {{id: s2, text: b}}, {{id: s3, text: ab}}, {{id: s4, text: c}}]
model:
  provider: mock
  replies:
    - {{when_contains: [{word}], reply: \"yes\"}}
    - {{reply: {other}}}
prompt: \"{{{{ text }}}}\"
evaluators:
  - {{type: exact_match, expected: \"yes\"}}
"
    )
}

/// Runs `spec` into experiment `name`.
fn run(dir: &TestDir, name: &str, spec: &str, extra: &[&str]) {
    let file = format!("{name}.yaml");
    dir.write(&file, spec);
    let mut args = vec!["run", file.as_str(), "-e", name, "-q"];
    args.extend(extra);
    dir.cmd(args).output().assert_exit_code(0);
}

/// Every `src="..."` and `href="..."` value in `html`.
fn links(html: &str) -> Vec<String> {
    let mut out = Vec::new();
    for attr in ["src=", "href="] {
        for (i, _) in html.match_indices(attr) {
            let rest = &html[i + attr.len()..];
            out.push(rest.chars().take(60).collect());
        }
    }
    out
}

/// The `<svg class="plot"...>...</svg>` elements of `html`.
fn plots(html: &str) -> Vec<&str> {
    html.match_indices("<svg class=\"plot\"")
        .map(|(i, _)| {
            let end = html[i..].find("</svg>").map_or(html.len(), |e| i + e + 6);
            &html[i..end]
        })
        .collect()
}

#[test]
fn report_is_one_offline_file_with_plots_and_every_sample() {
    let dir = TestDir::new();
    run(&dir, "base", &spec("a", "no"), &[]);
    let out = dir.cmd(["report", "base"]).output();
    out.assert_exit_code(0);
    out.assert_stderr_contains("wrote base.html");
    let html = dir.read("base.html");
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.trim_end().ends_with("</html>"));
    // No network: nothing is loaded from anywhere.
    for link in links(&html) {
        assert!(
            !link.contains("http:") && !link.contains("https:") && !link.starts_with("\"//"),
            "a link out: {link}"
        );
    }
    assert!(!html.contains("@import") && !html.contains("url("));
    // The sample count, in plain HTML.
    assert!(
        html.contains(r#"<span id="sample-count" data-count="4">4</span>"#),
        "{html}"
    );
    // Timeline and latency histogram, with content, axes and units.
    let svgs = plots(&html);
    assert_eq!(svgs.len(), 2, "{svgs:?}");
    assert!(svgs[0].contains("<path class=\"flight s0\" d=\"M"));
    assert!(svgs[0].contains("time (s)") && svgs[0].contains("requests in flight"));
    assert!(svgs[1].contains("<rect class=\"bar s0\""));
    assert!(svgs[1].contains("latency (ms)"));
    // The summary: model, evaluator with its interval.
    assert!(html.contains("<th>model</th><td>mock (mock)</td>"));
    assert!(html.contains("<td>exact_match</td><td>4</td><td>50.0%</td>"));
    assert!(html.contains("class=\"errorbar\""));
    // The browser's controls and data.
    for id in [
        "<select id=\"filter\">",
        "<option value=\"fail\">",
        "<select id=\"evaluator\"><option value=\"\">any</option><option value=\"exact_match\">",
        "<input id=\"search\"",
        "<span id=\"shown-count\">",
        "<tbody id=\"samples\">",
        "<script type=\"application/json\" id=\"samples-data\">",
    ] {
        assert!(html.contains(id), "missing {id}");
    }
    assert!(!html.contains(" onclick=") && !html.contains(" onload="));
    // The data parses, one row per sample.
    let start = html.find("id=\"samples-data\">").unwrap() + "id=\"samples-data\">".len();
    let end = start + html[start..].find("</script>").unwrap();
    let data: serde_json::Value = serde_json::from_str(&html[start..end]).unwrap();
    let rows = data["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0][1], "s1");
    assert_eq!(rows[0][3], "yes");
    assert_eq!(rows[0][4]["text"], "a");
    assert_eq!(rows[1][6][0], false);
}

#[test]
fn hostile_outputs_are_escaped() {
    let dir = TestDir::new();
    let spec = spec("a", "\"</script><script>alert(1)</script>\"");
    let spec = spec.replace("id: s4, text: c", "id: \"<b>s4</b>\", text: c");
    run(&dir, "evil", &spec, &[]);
    dir.cmd(["report", "evil", "-o", "evil.html"])
        .output()
        .assert_exit_code(0);
    let html = dir.read("evil.html");
    assert!(!html.contains(HOSTILE), "raw output in the page");
    assert!(!html.contains("<b>s4"));
    // Two scripts only: the data and the browser.
    assert_eq!(html.matches("<script").count(), 2);
    assert!(html.contains("\\u003c/script>\\u003cscript>alert(1)\\u003c/script>"));
    // Also when the output lands in HTML: the errors table, a comparison's flips.
    let good = self::spec("a", "\"yes\"").replace("id: s4, text: c", "id: \"<b>s4</b>\", text: c");
    run(&dir, "good", &good, &[]);
    dir.cmd(["report", "good", "evil"])
        .output()
        .assert_exit_code(0);
    let html = dir.read("good-vs-evil.html");
    assert!(!html.contains(HOSTILE));
    assert!(html.contains("&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;"));
    assert_eq!(html.matches("<script").count(), 2);
}

#[test]
fn comparison_lists_the_flipped_samples_first() {
    let dir = TestDir::new();
    run(&dir, "a", &spec("a", "no"), &[]);
    run(&dir, "b", &spec("b", "no"), &[]);
    let out = dir.cmd(["report", "a", "b"]).output();
    out.assert_exit_code(0);
    let html = dir.read("a-vs-b.html");
    // s1 passed in A only, s2 in B only: both flipped, listed before the summaries.
    let flips: Vec<usize> = html
        .match_indices("<tr class=\"flip\"><td>")
        .map(|(i, _)| i)
        .collect();
    assert_eq!(flips.len(), 2, "{html}");
    assert!(html[flips[0]..].starts_with("<tr class=\"flip\"><td>s1</td><td>1</td><td>0</td>"));
    assert!(html[flips[1]..].starts_with("<tr class=\"flip\"><td>s2</td><td>0</td><td>1</td>"));
    let summaries = html.find("class=\"side-by-side\"").unwrap();
    assert!(flips[1] < summaries);
    assert!(html.contains("<td>exact_match</td><td>50.0%</td><td>50.0%</td><td>+0.0 pts</td>"));
    // Both sides' samples and both timelines on one axis.
    assert!(html.contains(r#"data-count="8""#));
    assert!(html.contains("class=\"flight s0\"") && html.contains("class=\"flight s1\""));
    assert!(html.contains("a: in flight") && html.contains("b: in flight"));
    // With -o.
    dir.cmd(["report", "a", "b", "-o", "cmp.html", "-q"])
        .output()
        .assert_exit_code(0);
    assert!(dir.path().join("cmp.html").exists());
}

#[test]
fn run_writes_the_report_when_it_ends() {
    let dir = TestDir::new();
    run(
        &dir,
        "live",
        &spec("a", "no"),
        &["--report", "live-report.html", "-c", "adaptive"],
    );
    let html = dir.read("live-report.html");
    assert!(html.contains(r#"data-count="4""#));
    // Adaptive: the limit is drawn beside the requests in flight.
    assert!(html.contains("<path class=\"limit s0\""), "{html}");
    assert!(html.contains("<th>adaptive limit</th>"));
    assert!(!dir.path().join("live-report.html.part").exists());
}

#[test]
fn a_report_that_cannot_be_written_keeps_the_run() {
    let dir = TestDir::new();
    dir.write("kept.yaml", &spec("a", "no"));
    // A missing folder is refused before anything runs.
    let out = dir
        .cmd([
            "run",
            "kept.yaml",
            "-e",
            "kept",
            "--report",
            "nowhere/r.html",
        ])
        .output();
    out.assert_exit_code(2);
    out.assert_stderr_contains("the folder nowhere does not exist");
    assert!(dir.try_show("kept").is_none());
    // A folder is refused too.
    std::fs::create_dir(dir.path().join("out")).unwrap();
    let out = dir.cmd(["report", "kept", "-o", "out"]).output();
    out.assert_exit_code(2);
}

#[test]
fn unknown_experiment_is_a_usage_error() {
    let dir = TestDir::new();
    dir.cmd(["report", "nothing"]).output().assert_exit_code(2);
    run(&dir, "base", &spec("a", "no"), &[]);
    let out = dir.cmd(["report", "bsae"]).output();
    out.assert_exit_code(2);
    out.assert_stderr_contains("did you mean `base`?");
    let out = dir.cmd(["report", "base", "other"]).output();
    out.assert_exit_code(2);
    assert!(!dir.path().join("bsae.html").exists());
    assert!(!dir.path().join("base-vs-other.html").exists());
}

#[test]
fn retries_and_429s_are_drawn_when_there_were_any() {
    let server = crate::server::TestServer::builder()
        .throttle_first(2, "0")
        .start();
    let dir = TestDir::new();
    let spec = crate::util::Spec::new("throttled", &server.url())
        .samples(4)
        .quick()
        .to_string();
    dir.write("t.yaml", &spec);
    dir.cmd(["run", "t.yaml", "-e", "t", "-q", "--report", "t.html"])
        .output()
        .assert_exit_code(0);
    assert_eq!(server.throttled(), 2);
    let html = dir.read("t.html");
    let svgs = plots(&html);
    assert_eq!(svgs.len(), 3, "timeline, latency, retries");
    assert!(svgs[2].contains("<rect class=\"bar e1\""), "{}", svgs[2]);
    assert!(svgs[2].contains("throttled samples (429/503): 2"));
    assert!(html.contains("<h3>Retries and throttling</h3>"));
    // A run without any has no such plot: see the first test (two plots).
}

/// A matrix spec named `grid`: 8 rows, s1..s7 (`a`) and s8 (`keep`); two
/// latencies down, two prompts across. The prompt labelled `<script>` says
/// `bad`, and the mock answers it with [`HOSTILE`] except for s8 (`keep`
/// wins): s1..s7 fail there and pass under `plain`, a drop McNemar's test
/// calls significant (p = 2 / 2^7).
pub(crate) fn matrix_spec() -> String {
    let rows: Vec<String> = (1..=8)
        .map(|i| format!("{{id: s{i}, text: {}}}", if i == 8 { "keep" } else { "a" }))
        .collect();
    format!(
        "name: grid
dataset:
  id: id
  rows: [{}]
model:
  provider: mock
  replies:
    - {{when_contains: [keep], reply: \"yes\"}}
    - {{when_contains: [bad], reply: \"{HOSTILE}\"}}
    - {{reply: \"yes\"}}
prompt: \"{{{{ text }}}}\"
evaluators:
  - {{type: exact_match, expected: \"yes\"}}
matrix:
  model.latency: [1ms, 2ms]
  prompt:
    values: [\"{{{{ text }}}}\", \"bad {{{{ text }}}}\"]
    labels: [plain, \"<script>\"]
",
        rows.join(", ")
    )
}

/// The text of `<script type="application/json" id="ID">` in `html`.
pub(crate) fn embedded<'a>(html: &'a str, id: &str) -> &'a str {
    let open = format!("<script type=\"application/json\" id=\"{id}\">");
    let start = html.find(&open).unwrap_or_else(|| panic!("no {id}")) + open.len();
    &html[start..start + html[start..].find("</script>").unwrap()]
}

/// The `<td ... data-i="I">...</td>` of a heat map cell.
fn heat_cell(html: &str, i: usize) -> &str {
    let at = html
        .find(&format!(" data-i=\"{i}\">"))
        .unwrap_or_else(|| panic!("no cell {i}"));
    let start = html[..at].rfind("<td").unwrap();
    &html[start..at + html[at..].find("</td>").unwrap()]
}

#[test]
fn a_matrix_report_opens_with_a_heat_map_of_its_cells() {
    let dir = TestDir::new();
    run(&dir, "grid", &matrix_spec(), &[]);
    dir.cmd(["report", "grid", "-o", "grid.html", "-q"])
        .output()
        .assert_exit_code(0);
    let html = dir.read("grid.html");
    // Near the top: after the header, before the evaluations.
    let section = html.find("<section id=\"matrix\"").expect("a heat map");
    assert!(section > html.find("</header>").unwrap());
    assert!(section < html.find("<section class=\"evaluation\">").unwrap());
    // The caption names the baseline; the legend says what the colours mean.
    assert!(
        html.contains("the baseline, <span class=\"base-name\">grid/1ms/plain</span></caption>")
    );
    assert!(html.contains("light (0%) to dark blue (100%)"));
    // The layout: latency down, prompt across (its label escaped).
    assert!(html.contains("<th scope=\"col\">plain</th><th scope=\"col\">&lt;script&gt;</th>"));
    assert!(html.contains("<h2>grid/1ms/&lt;script&gt;</h2>"));
    let data: serde_json::Value = serde_json::from_str(embedded(&html, "matrix-data")).unwrap();
    let cells = data["cells"].as_array().unwrap();
    assert_eq!(cells.len(), 4, "{data:#}");
    let index = |name: &str| {
        cells
            .iter()
            .position(|c| c["evaluation"] == name)
            .unwrap_or_else(|| panic!("no cell {name} in {data:#}"))
    };
    // Every cell, coloured by its score, with its marks in text.
    let base = heat_cell(&html, index("grid/1ms/plain"));
    assert!(base.contains(" h9 best base\""), "{base}");
    assert!(base.contains("100.0% ±16.2 <b class=\"mk\">★</b> <b class=\"mk\">(base)</b>"));
    let plain = heat_cell(&html, index("grid/2ms/plain"));
    assert!(
        plain.contains(" h9 best\"") && !plain.contains("(base)"),
        "{plain}"
    );
    for name in ["grid/1ms/<script>", "grid/2ms/<script>"] {
        let worse = heat_cell(&html, index(name));
        assert!(worse.contains("class=\"c h1 sig\""), "{worse}");
        assert!(worse.contains("12.5% ±22.4<span class=\"d\">-87.5 pts (p 0.016)</span>"));
    }
    // What a click lists: the disagreeing samples, by id, both sides'.
    assert_eq!(data["baseline"], "grid/1ms/plain");
    assert_eq!(cells[index("grid/1ms/plain")]["base"], true);
    assert_eq!(cells[index("grid/2ms/plain")]["differ"], 0);
    let worse = &cells[index("grid/2ms/<script>")];
    assert_eq!(
        (worse["paired"].as_u64(), worse["differ"].as_u64()),
        (Some(8), Some(7))
    );
    let ids: Vec<&str> = worse["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            data["base"][r[0].as_u64().unwrap() as usize][0]
                .as_str()
                .unwrap()
        })
        .collect();
    assert_eq!(ids, ["s1", "s2", "s3", "s4", "s5", "s6", "s7"]);
    let first = &worse["rows"][0];
    assert_eq!(
        (first[1].as_str(), first[3].as_str()),
        (Some("passed"), Some("failed"))
    );
    assert_eq!(
        (first[2].as_f64(), first[4].as_f64()),
        (Some(1.0), Some(0.0))
    );
    assert_eq!(first[5], HOSTILE);
    assert_eq!(data["base"][0][1], "yes");
    // Store text escaped: in HTML as entities, in the JSON as \u003c.
    assert!(!html.contains(HOSTILE));
    assert!(!html.contains(">grid/1ms/<script>") && !html.contains("<th scope=\"col\"><script>"));
    assert!(embedded(&html, "matrix-data").contains("\"grid/1ms/\\u003cscript>\""));
    // Three scripts: the samples, the matrix's lists, the page's code.
    assert_eq!(html.matches("<script").count(), 3);
}
