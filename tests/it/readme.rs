//! README's console examples, run as written: every `$ ` line of every
//! ```` ```console ```` block is run with `sh` in a copy of the repository's
//! `evals/` (one store, the default `.dotevals/` there, for the whole README,
//! after the walk-through's three runs), and what it prints must match the lines below it. Figures that
//! change from run to run (times, rates, dates, the average in flight) and a
//! table's padding are compared as placeholders; a line `...` stands for any
//! number of lines.

use std::path::Path;
use std::process::Command;

use regex::Regex;

use crate::util::{TestDir, BIN};

/// A `$ command` and the lines README shows it printing.
struct Example {
    /// README's line number of the command.
    line: usize,
    command: String,
    expected: Vec<String>,
}

/// The console examples of `readme`, in order.
fn examples(readme: &str) -> Vec<Example> {
    let mut out: Vec<Example> = Vec::new();
    let mut inside = false;
    for (i, line) in readme.lines().enumerate() {
        if line.starts_with("```") {
            inside = line == "```console";
            continue;
        }
        if !inside {
            continue;
        }
        match line.strip_prefix("$ ") {
            Some(command) => out.push(Example {
                line: i + 1,
                command: command.to_owned(),
                expected: Vec::new(),
            }),
            None => out
                .last_mut()
                .expect("a console block starts with a `$ ` line")
                .expected
                .push(line.to_owned()),
        }
    }
    out
}

/// The walk-through's runs: the `sh` block of `dotevals run` lines that
/// makes the experiments its console block lists.
fn walkthrough(readme: &str) -> Vec<String> {
    let mut block = Vec::new();
    let mut inside = false;
    for line in readme.lines() {
        if line.starts_with("```") {
            if inside && block.iter().any(|l: &String| l.contains("sync_baseline")) {
                return block;
            }
            inside = line == "```sh";
            block.clear();
            continue;
        }
        if inside {
            block.push(line.to_owned());
        }
    }
    panic!("README has no sh block with the walk-through's runs");
}

/// `text` with what changes between runs replaced by placeholders.
fn normalized(text: &str) -> String {
    let rules: [(&str, &str); 9] = [
        (r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", "[when]"),
        (r"\d+(\.\d+)? samples/s", "[rate]"),
        (r"\b\d+(\.\d+)? (ms|s)\b", "[time]"),
        (r"\b\d+\.\d+ (in flight|at the server)", "[n] $1"),
        // Said only when it differs enough from the figure in flight.
        (r" \(\[n\] at the server\)", ""),
        (r"\b\d+\.\d+x\b", "[x]"),
        (r"─+", "─"),
        (r" +", " "),
        (r" ([│╮╯┤])", "$1"),
    ];
    let mut text = text.to_owned();
    for (pattern, with) in rules {
        let re = Regex::new(pattern).expect("a placeholder pattern");
        text = re.replace_all(&text, with).into_owned();
    }
    text.lines()
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Whether `got` matches `expected`, where a line `...` matches any lines.
fn matches(expected: &[String], got: &[&str]) -> bool {
    match expected.split_first() {
        None => got.is_empty(),
        Some((first, rest)) if first.trim() == "..." => {
            (0..=got.len()).any(|skip| matches(rest, &got[skip..]))
        }
        Some((first, rest)) => {
            got.first()
                .is_some_and(|g| normalized(first) == normalized(g))
                && matches(rest, &got[1..])
        }
    }
}

/// Runs `command` with `sh` in `dir`, `dotevals` being this build and its
/// store the default one there; stdout and stderr together, as a terminal
/// shows them.
fn sh(dir: &TestDir, command: &str) -> String {
    let bin_dir = Path::new(BIN).parent().expect("the binary's folder");
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![bin_dir.to_path_buf()];
    paths.extend(std::env::split_paths(&path));
    let out = Command::new("sh")
        .args(["-c", &format!("{{ {command}; }} 2>&1")])
        .current_dir(dir.path())
        .env("PATH", std::env::join_paths(paths).expect("a PATH"))
        .env("NO_COLOR", "1")
        .env_remove("DOTEVALS_STORAGE")
        .env_remove("RUST_LOG")
        .output()
        .expect("run sh");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("create a folder");
    for entry in std::fs::read_dir(from).expect("read a folder") {
        let entry = entry.expect("a folder entry");
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).expect("copy a file");
        }
    }
}

#[test]
fn every_console_example_prints_what_readme_shows() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let dir = TestDir::new();
    copy_dir(&root.join("evals"), &dir.path().join("evals"));
    for command in walkthrough(&readme) {
        sh(&dir, &command);
    }
    let examples = examples(&readme);
    assert!(
        examples.len() >= 6,
        "README's console examples were not found"
    );
    let mut wrong = Vec::new();
    for e in &examples {
        let got = sh(&dir, &e.command);
        let lines: Vec<&str> = got.lines().collect();
        if !matches(&e.expected, &lines) {
            wrong.push(format!(
                "README line {}: $ {}\n--- README shows ---\n{}\n--- it printed ---\n{}",
                e.line,
                e.command,
                e.expected.join("\n"),
                got.trim_end()
            ));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
}

#[test]
fn placeholders_hide_only_what_changes() {
    assert_eq!(
        normalized("wall time 2.01 s · 3.98 samples/s · created 2026-11-28T05:39:21Z"),
        "wall time [time] · [rate] · created [when]"
    );
    assert_eq!(
        normalized("│ a   │ 1.00 s    │\n├───┼──┤"),
        normalized("│ a │ 998 ms │\n├──────┼────┤")
    );
    assert_ne!(normalized("8/8 recorded"), normalized("7/8 recorded"));
    assert_eq!(
        normalized("concurrency  3.99 in flight on average (3.98 at the server)"),
        normalized("concurrency  3.99 in flight on average")
    );
    let expected = ["a".to_owned(), "...".to_owned(), "d".to_owned()];
    assert!(matches(&expected, &["a", "b", "c", "d"]));
    assert!(matches(&expected, &["a", "d"]));
    assert!(!matches(&expected, &["a", "b"]));
}
