//! The HTML report in a real browser: headless Chromium (Debian's `chromium`
//! package; `.ci/run` installs it) opens the file from a `file://` URL, with
//! an empty profile and no network, and the test reads back the DOM the page
//! built, what it wrote to the console, and a screenshot. Where Chromium is
//! missing the test says so and skips, as the other tests of optional tools do.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::server::{Reply, TestServer};
use crate::util::{Spec, TestDir};

/// The Chromium binary, if this machine has one.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    ["chromium", "chromium-browser", "google-chrome"]
        .iter()
        .flat_map(|name| std::env::split_paths(&path).map(move |d| d.join(name)))
        .find(|p| p.is_file())
}

/// What one headless load of a page gave.
struct Loaded {
    dom: String,
    /// Lines the page wrote to the console (its logs and uncaught errors).
    console: Vec<String>,
}

/// Loads `url` in a fresh headless Chromium and dumps the DOM once the page
/// has run its timers (virtual time).
fn load(bin: &Path, dir: &TestDir, url: &str) -> Loaded {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut cmd = Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--enable-logging=stderr",
        "--v=0",
        "--virtual-time-budget=10000",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .current_dir(dir.path());
    let out = cmd
        .arg("--dump-dom")
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(out.status.success(), "chromium failed: {out:?}");
    let console = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.contains(":CONSOLE"))
        .map(str::to_owned)
        .collect();
    Loaded {
        dom: String::from_utf8_lossy(&out.stdout).into_owned(),
        console,
    }
}

/// The number in `<span id="ID">N</span>` (or its `data-count`).
fn number(dom: &str, id: &str) -> Option<u64> {
    let at = dom.find(&format!("id=\"{id}\""))?;
    let tag_end = at + dom[at..].find('>')?;
    if let Some(count) = dom[at..tag_end].split("data-count=\"").nth(1) {
        return count.split('"').next()?.parse().ok();
    }
    dom[tag_end + 1..].split('<').next()?.trim().parse().ok()
}

/// A 1280-pixel-wide PNG of `url` written to `path`, checked to be a PNG of
/// some substance, and its bytes.
fn screenshot(bin: &Path, url: &str, path: &Path) -> Vec<u8> {
    let profile = tempfile::tempdir().expect("profile dir");
    let mut cmd = Command::new(bin);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--hide-scrollbars",
        "--window-size=1280,1400",
        "--virtual-time-budget=10000",
    ])
    .arg(format!("--user-data-dir={}", profile.path().display()))
    .arg(format!("--screenshot={}", path.display()));
    let out = cmd.arg(url).output().expect("run chromium");
    assert!(out.status.success(), "{out:?}");
    let png = std::fs::read(path).expect("screenshot written");
    assert!(
        png.starts_with(b"\x89PNG") && png.len() > 10_000,
        "{} bytes",
        png.len()
    );
    png
}

/// `<svg class="plot" ...>` elements holding a drawn path or bar.
fn drawn_plots(dom: &str) -> usize {
    dom.split("<svg")
        .skip(1)
        .filter(|svg| svg.starts_with(" class=\"plot") || svg.contains("class=\"plot"))
        .filter(|svg| {
            let body = svg.split("</svg>").next().unwrap_or("");
            body.contains("<path") || body.contains("<rect") || body.contains("<polyline")
        })
        .count()
}

/// Console lines other than the page's own `dotevals:` notes: errors,
/// uncaught exceptions, stray logs.
fn console_errors(loaded: &Loaded) -> Vec<&String> {
    loaded
        .console
        .iter()
        .filter(|l| !l.contains("] \"dotevals:"))
        .collect()
}

#[test]
fn the_console_check_catches_a_failing_page() {
    let Some(bin) = chromium() else {
        crate::support::skip(
            "the_console_check_catches_a_failing_page",
            "no chromium on PATH (.ci/run installs Debian's `chromium`)",
        );
        return;
    };
    let dir = TestDir::new();
    dir.write(
        "bad.html",
        "<!doctype html><script>console.error('boom'); missing();</script>",
    );
    let url = format!("file://{}/bad.html", dir.path().display());
    let loaded = load(&bin, &dir, &url);
    let errors = console_errors(&loaded);
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert!(errors[1].contains("Uncaught ReferenceError"), "{errors:?}");
}

#[test]
fn the_report_renders_its_plots_and_filters_samples_in_chromium() {
    let Some(bin) = chromium() else {
        crate::support::skip(
            "the_report_renders_its_plots_and_filters_samples_in_chromium",
            "no chromium on PATH (.ci/run installs Debian's `chromium`)",
        );
        return;
    };
    // 12 samples: 8 pass, 3 fail, 1 refused by the server (an error).
    let server = TestServer::builder()
        .respond(|r| {
            if r.prompt.contains("boom") {
                Reply::status(400, "bad request")
            } else {
                Reply::text(r.prompt.clone())
            }
        })
        .start();
    let answers = [
        "yes", "yes", "no", "yes", "yes", "boom", "no", "yes", "yes", "no", "yes", "yes",
    ];
    let rows: Vec<String> = answers
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{{id: s{i:02}, a: {a}}}"))
        .collect();
    let dir = TestDir::new();
    let spec = Spec::new("browsed", &server.url())
        .dataset(&format!("  id: id\n  rows: [{}]\n", rows.join(", ")))
        .quick()
        .prompt("\"{{ a }}\"")
        .evaluator("{type: exact_match, expected: \"yes\"}")
        .to_string();
    dir.write("spec.yaml", &spec);
    dir.cmd(["run", "spec.yaml", "-e", "x", "-q"]).output();
    dir.cmd(["report", "x", "-o", "report.html"])
        .output()
        .assert_exit_code(0);
    let url = format!("file://{}/report.html", dir.path().display());

    let all = load(&bin, &dir, &format!("{url}#filter=all"));
    assert!(
        all.dom.contains("data-ready=\"1\""),
        "the sample browser never finished"
    );
    assert_eq!(
        console_errors(&all),
        Vec::<&String>::new(),
        "console errors"
    );
    assert_eq!(number(&all.dom, "sample-count"), Some(12));
    assert_eq!(number(&all.dom, "shown-count"), Some(12));
    assert!(all.dom.matches("<tr class=\"sample").count() >= 12);
    assert!(
        drawn_plots(&all.dom) >= 2,
        "plots: {}",
        drawn_plots(&all.dom)
    );

    // The pass/fail filter changes the rows shown.
    for (filter, expected) in [("pass", 8), ("fail", 3), ("error", 1)] {
        let page = load(&bin, &dir, &format!("{url}#filter={filter}"));
        assert_eq!(
            number(&page.dom, "shown-count"),
            Some(expected),
            "filter {filter}"
        );
        assert_eq!(
            page.dom.matches("<tr class=\"sample").count() as u64,
            expected,
            "rows under filter {filter}"
        );
    }

    // The summary and the plots need no JavaScript: they are in the file as
    // written, not made by a script. (Headless Chromium cannot check this by
    // itself: with `scriptEnabled=false` it dumps and captures nothing, and
    // `--disable-javascript` leaves page scripts on.)
    let raw = dir.read("report.html");
    assert_eq!(number(&raw, "sample-count"), Some(12));
    assert!(drawn_plots(&raw) >= 2);

    // Two runs, compared: the page loads as cleanly and browses both. B's
    // prompt turns every "no" into "yes": s02, s06 and s09 flip to pass.
    let b_spec = spec.replace("{{ a }}", "{{ a | replace('no', 'yes') }}");
    assert_ne!(b_spec, spec);
    dir.write("b.yaml", &b_spec);
    dir.cmd(["run", "b.yaml", "-e", "y", "-q"]).output();
    dir.cmd(["report", "x", "y", "-o", "both.html"])
        .output()
        .assert_exit_code(0);
    let both = load(
        &bin,
        &dir,
        &format!("file://{}/both.html", dir.path().display()),
    );
    assert!(both.dom.contains("data-ready=\"1\""));
    assert_eq!(
        console_errors(&both),
        Vec::<&String>::new(),
        "console errors"
    );
    assert_eq!(number(&both.dom, "sample-count"), Some(24));
    let flips: Vec<&str> = both
        .dom
        .split("<tr class=\"flip\"><td>")
        .skip(1)
        .filter_map(|row| row.split('<').next())
        .collect();
    assert_eq!(
        flips,
        ["s02", "s06", "s09"],
        "the flipped samples, listed first"
    );
    let first_flip = both.dom.find("class=\"flip\"").unwrap_or(usize::MAX);
    let browser = both.dom.find("id=\"samples\"").unwrap_or(0);
    assert!(first_flip < browser, "flips come before the sample browser");

    // A screenshot, kept for the README (DOTEVALS_SCREENSHOT=docs/report.png).
    let png = screenshot(&bin, &url, &dir.path().join("report.png"));
    if let Some(keep) = std::env::var_os("DOTEVALS_SCREENSHOT") {
        std::fs::write(keep, &png).expect("keep the screenshot");
    }
}

/// Loads a copy of `page` (in `dir`) with `script` run once it has loaded,
/// as a click or a key press would: the DOM it leaves.
fn load_then(bin: &Path, dir: &TestDir, page: &str, script: &str) -> Loaded {
    let copy = format!("then-{page}");
    dir.write(
        &copy,
        &format!("{}<script>{script}</script>", dir.read(page)),
    );
    load(bin, dir, &format!("file://{}/{copy}", dir.path().display()))
}

/// The heat map's list below its table, as the DOM has it.
fn detail(dom: &str) -> &str {
    let start = dom
        .find("<div class=\"matrix-detail\"")
        .expect("the list under the heat map");
    let end = start + dom[start..].find("</div>").unwrap_or(dom.len() - start);
    &dom[start..end]
}

#[test]
fn a_click_on_a_heat_map_cell_lists_the_samples_that_differ_from_the_baseline() {
    let Some(bin) = chromium() else {
        crate::support::skip(
            "a_click_on_a_heat_map_cell_lists_the_samples_that_differ_from_the_baseline",
            "no chromium on PATH (.ci/run installs Debian's `chromium`)",
        );
        return;
    };
    let dir = TestDir::new();
    dir.write("grid.yaml", &crate::html_report::matrix_spec());
    dir.cmd(["run", "grid.yaml", "-e", "grid", "-q"])
        .output()
        .assert_exit_code(0);
    dir.cmd(["report", "grid", "-o", "grid.html"])
        .output()
        .assert_exit_code(0);
    let html = dir.read("grid.html");
    let data: serde_json::Value =
        serde_json::from_str(crate::html_report::embedded(&html, "matrix-data")).unwrap();
    let index = |name: &str| {
        data["cells"]
            .as_array()
            .unwrap()
            .iter()
            .position(|c| c["evaluation"] == name)
            .unwrap_or_else(|| panic!("no cell {name}"))
    };
    let (base, worse) = (index("grid/1ms/plain"), index("grid/2ms/<script>"));

    // Before any click the list is empty and hidden, and the page is clean.
    let page = load(
        &bin,
        &dir,
        &format!("file://{}/grid.html", dir.path().display()),
    );
    assert_eq!(console_errors(&page), Vec::<&String>::new());
    assert!(
        detail(&page.dom).contains(" hidden"),
        "{}",
        detail(&page.dom)
    );

    // A click on the worse cell: the seven samples it fails and the
    // baseline passes, with both outputs as text.
    let clicked = load_then(
        &bin,
        &dir,
        "grid.html",
        &format!("document.querySelector('td[data-i=\"{worse}\"]').click();"),
    );
    assert_eq!(console_errors(&clicked), Vec::<&String>::new());
    let list = detail(&clicked.dom);
    assert!(!list.contains(" hidden"), "{list}");
    assert!(
        list.contains("7 of the 8 samples both cells ran differ"),
        "{list}"
    );
    let ids: Vec<&str> = list
        .split("<tr class=\"differ\"><td>")
        .skip(1)
        .filter_map(|row| row.split('<').next())
        .collect();
    assert_eq!(ids, ["s1", "s2", "s3", "s4", "s5", "s6", "s7"], "{list}");
    assert!(list.contains(
        "<td class=\"pass\">passed (1)</td><td class=\"fail\">failed (0)</td><td>yes</td><td>&lt;/script&gt;&lt;script&gt;alert(1)&lt;/script&gt;</td>"
    ), "{list}");
    assert!(clicked.dom.contains(&format!("data-shown=\"{worse}\"")));

    // The baseline says it is the baseline.
    let clicked = load_then(
        &bin,
        &dir,
        "grid.html",
        &format!("document.querySelector('td[data-i=\"{base}\"]').click();"),
    );
    assert!(detail(&clicked.dom).contains("is the baseline"));

    // From the keyboard: Tab lands on the grid's first cell (the baseline);
    // down, right and Enter list the same cell's samples.
    let keyed = load_then(
        &bin,
        &dir,
        "grid.html",
        "document.querySelector('table.heat td[tabindex=\"0\"]').focus();\
         ['ArrowDown', 'ArrowRight', 'Enter'].forEach(function (k) {\
           document.activeElement.dispatchEvent(new KeyboardEvent('keydown', {key: k, bubbles: true}));\
         });",
    );
    assert_eq!(console_errors(&keyed), Vec::<&String>::new());
    assert!(
        keyed.dom.contains(&format!("data-shown=\"{worse}\"")),
        "{}",
        detail(&keyed.dom)
    );
    assert!(detail(&keyed.dom).contains("<tr class=\"differ\"><td>s7</td>"));
    // Tab now lands where the arrows left off.
    let td = |i: usize| {
        let at = keyed.dom.find(&format!("data-i=\"{i}\"")).unwrap();
        let start = keyed.dom[..at].rfind("<td").unwrap();
        &keyed.dom[start..at + keyed.dom[at..].find('>').unwrap()]
    };
    assert!(td(worse).contains("tabindex=\"0\""), "{}", td(worse));
    assert!(td(base).contains("tabindex=\"-1\""), "{}", td(base));
}
