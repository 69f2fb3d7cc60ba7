//! What people see: control characters in tables, experiment names, the
//! "saved as" hint, progress without a terminal (CI logs) and on one
//! (`--color never`, the ETA before the first reply), and the mock server's
//! `/v1/models`.

use std::process::Command;
use std::time::Duration;

use crate::server::TestServer;
use crate::support::spec;
use crate::util::{http_get, TestDir, BIN};

/// Model output, a model name and an error message holding ESC, CR, NUL and a
/// bidi override reach `show --full`, `show --errors` and `list` escaped.
#[test]
fn control_characters_are_escaped_in_tables() {
    let dir = TestDir::new();
    let hostile = "\u{1b}[2J\u{1b}]0;pwned\u{7}over\rwritten\u{0}\u{202e}txt";
    let server = TestServer::builder()
        .reply(move |_| hostile.to_owned())
        .start();
    dir.write(
        "a.yaml",
        &spec("a", &server.url(), 2, "", "").replace("name: test-model", "name: \"model\\e[31m\""),
    );
    dir.cmd(["run", "a.yaml", "--experiment", "x", "--quiet"])
        .output()
        .assert_exit_code(0);
    for args in [
        &["show", "x", "--full"][..],
        &["show", "x", "--errors"][..],
        &["list"][..],
    ] {
        let out = dir.cmd(args).output();
        out.assert_exit_code(0);
        for bad in ['\u{1b}', '\r', '\0', '\u{7}', '\u{202e}'] {
            assert!(
                !out.stdout.contains(bad),
                "{args:?} printed {bad:?} raw:\n{}",
                out.stdout
            );
        }
        if args[0] == "show" {
            assert!(out.stdout.contains(r"model\u{1b}[31m"), "{}", out.stdout);
        }
        if args[1..] == ["--full"] {
            assert!(out.stdout.contains(r"\u{1b}[2J"), "{}", out.stdout);
            assert!(out.stdout.contains(r"\u{d}written"), "{}", out.stdout);
        }
    }
    // JSON keeps the text exactly (it is escaped by JSON itself).
    let report = dir.show_full("x");
    assert_eq!(
        report.only().records()[0].output.as_deref(),
        Some(hostile),
        "JSON must keep the output as recorded"
    );
}

#[test]
fn experiment_names_can_be_typed_back() {
    let dir = TestDir::new();
    let server = TestServer::echo();
    dir.write("a.yaml", &spec("a", &server.url(), 1, "", ""));
    let long = "n".repeat(101);
    for (name, message) in [
        ("-x", "may not start with `-`"),
        (long.as_str(), "101 characters; the most is 100"),
        ("a\u{1b}b", "control characters"),
        ("  ", "the name is empty"),
    ] {
        let out = dir
            .cmd(["run", "a.yaml", "--quiet"])
            .arg(format!("--experiment={name}"))
            .output();
        out.assert_exit_code(2);
        out.assert_stderr_contains(message);
    }
    assert_eq!(server.count(), 0, "a refused name sends nothing");
    let ok = "n".repeat(100);
    dir.cmd(["run", "a.yaml", "--quiet", "--experiment", &ok])
        .output()
        .assert_exit_code(0);
    let out = dir.cmd(["rename", &ok]).arg("--=-y").output();
    assert_ne!(out.code, Some(0));
    let out = dir.cmd(["rename", &ok, "--", "-y"]).output();
    out.assert_exit_code(2);
    out.assert_stderr_contains("may not start with `-`");
}

/// The hint after a run can be pasted back into a shell as it is.
#[test]
fn saved_as_hint_is_shell_quoted() {
    let dir = TestDir::new();
    let server = TestServer::echo();
    dir.write("a.yaml", &spec("a", &server.url(), 1, "", ""));
    let out = dir
        .cmd(["run", "a.yaml", "--experiment", "my run's best"])
        .output();
    out.assert_exit_code(0);
    out.assert_stderr_contains(r"dotevals show 'my run'\''s best'");
}

/// Writes `a.yaml`: `n` samples sent one at a time to a server answering after `latency`.
fn sequential_spec(dir: &TestDir, latency: Duration, n: usize) -> TestServer {
    let server = TestServer::builder().latency(latency).start();
    let tail = "concurrency: {strategy: sequential}\n";
    dir.write("a.yaml", &spec("a", &server.url(), n, "", tail));
    server
}

/// Without a terminal (CI logs), a run prints a status line every few seconds.
#[test]
fn progress_lines_without_a_terminal() {
    let dir = TestDir::new();
    let _server = sequential_spec(&dir, Duration::from_millis(600), 12);
    let out = dir.cmd(["run", "a.yaml", "--experiment", "x"]).output();
    out.assert_exit_code(0);
    let lines: Vec<&str> = out
        .stderr
        .lines()
        .filter(|l| l.starts_with("a: ") && l.contains("/12 · ") && l.contains("/s · eta "))
        .collect();
    assert!(
        !lines.is_empty(),
        "no status line in a 7 s run:\n{}",
        out.stderr
    );
    assert!(lines[0].contains("in flight 1/1"), "{}", lines[0]);
    let quiet = dir
        .cmd(["run", "a.yaml", "--experiment", "y", "--quiet"])
        .output();
    assert!(
        !quiet.stderr.contains("/12 · "),
        "--quiet printed progress:\n{}",
        quiet.stderr
    );
}

/// On a terminal (a pseudo-terminal from `script`), `--color never` draws the
/// bar without colour, and the ETA is `?` until the first sample is back.
#[test]
fn progress_bar_on_a_terminal() {
    if Command::new("script").arg("--version").output().is_err() {
        crate::support::skip(
            "progress_bar_on_a_terminal",
            "`script` (util-linux) is not installed",
        );
        return;
    }
    let dir = TestDir::new();
    let _server = sequential_spec(&dir, Duration::from_millis(1500), 2);
    let run = |color: &str, experiment: &str| -> String {
        let command = format!(
            "{BIN} run a.yaml --experiment {experiment} --color {color} --storage store.db"
        );
        let out = Command::new("script")
            .args(["-qec", &command, "/dev/null"])
            .current_dir(dir.path())
            .env_remove("NO_COLOR")
            .env("TERM", "xterm")
            .env("NO_PROXY", "127.0.0.1")
            .output()
            .expect("run script");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let sgr = regex::Regex::new(r"\x1b\[[0-9;]*m").expect("regex");
    let always = run("always", "c");
    assert!(
        sgr.is_match(&always),
        "the bar is drawn in colour with --color always:\n{always:?}"
    );
    let never = run("never", "n");
    assert!(never.contains("0/2"), "no bar drawn:\n{never:?}");
    assert!(
        !sgr.is_match(&never),
        "colour codes with --color never:\n{never:?}"
    );
    assert!(never.contains("eta ?"), "{never:?}");
    assert!(!never.contains("0/2 0.0/s eta 0s"), "{never:?}");
}

#[test]
fn mock_server_lists_its_model() {
    let dir = TestDir::new();
    dir.write(
        "m.yaml",
        "name: m\ndataset:\n  rows: [{text: a}]\nmodel:\n  provider: mock\n  name: tiny-mock\n  replies: [{reply: ok}]\nprompt: \"{{ text }}\"\nevaluators:\n  - {type: contains, expected: ok}\n",
    );
    let mut child = dir
        .cmd(["mock-server", "--spec", "m.yaml", "--port", "0"])
        .spawn_piped();
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
        .expect("read the first line");
    let base = line
        .split_whitespace()
        .last()
        .expect("a URL on the first line")
        .to_owned();
    let addr = base
        .strip_prefix("http://")
        .and_then(|rest| rest.split('/').next())
        .expect("an http URL");
    let body = http_get(addr, "/v1/models");
    let _ = child.kill();
    let _ = child.wait();
    let json: serde_json::Value = serde_json::from_str(&body).expect("JSON");
    assert_eq!(json["object"], "list", "{json}");
    assert_eq!(json["data"][0]["id"], "tiny-mock", "{json}");
}

/// Every hint that names an experiment can be pasted back into a shell.
#[test]
fn refusal_hints_are_shell_quoted() {
    let dir = TestDir::new();
    let server = TestServer::echo();
    dir.write("a.yaml", &spec("a", &server.url(), 2, "", ""));
    dir.cmd(["run", "a.yaml", "--quiet", "--experiment", "my run"])
        .output()
        .assert_exit_code(0);
    dir.write(
        "a.yaml",
        &spec("a", &server.url(), 2, "", "").replace("expected: sample", "expected: other"),
    );
    let out = dir
        .cmd(["run", "a.yaml", "--quiet", "--experiment", "my run"])
        .output();
    out.assert_exit_code(2);
    out.assert_stderr_contains("--experiment 'my run-2'");
    out.assert_stderr_contains("`dotevals delete 'my run'`");
}

/// An evaluation's name is printed on stderr by progress lines and notes, so
/// one holding a control character is refused where it is written.
#[test]
fn evaluation_names_with_control_characters_are_refused() {
    let dir = TestDir::new();
    let server = TestServer::echo();
    dir.write(
        "a.yaml",
        &spec("a", &server.url(), 1, "", "").replace("name: a\n", "name: \"a\\e[2Jb\"\n"),
    );
    for command in ["validate", "run"] {
        let out = dir.cmd([command, "a.yaml", "--quiet"]).output();
        out.assert_exit_code(2);
        out.assert_stderr_contains("a.yaml:1:7: `name` may not hold control characters");
        assert!(!out.stderr.contains('\u{1b}'), "{}", out.stderr);
    }
    assert_eq!(server.count(), 0);
}
