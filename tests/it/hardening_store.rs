//! Stores and other users (issue 8, items 5-8): where run locks live and that
//! they are cleaned up, a read-only store, a dataset that lost rows, and a
//! sample whose evaluator errored being rescored on resume instead of resent.
//!
//! Some checks are about file permissions, which do not bind root. When these
//! tests run as root they run the binary as user `nobody` through `setpriv`
//! for those checks; without `setpriv` they print why the check was skipped.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::server::TestServer;
use crate::support::{spec, wait_bounded};
use crate::util::{wait_until, Out, Spec, TestDir, BIN, QUICK};

/// The uid of `nobody`, used when the tests run as root.
const NOBODY: u32 = 65534;

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn have_setpriv() -> bool {
    Command::new("setpriv")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Who to run a permission check as: the current user when permissions bind
/// it, `nobody` when running as root with `setpriv`, else nobody at all
/// (`None`, after printing why).
fn unprivileged(what: &str) -> Option<Option<u32>> {
    if !is_root() {
        return Some(None);
    }
    if have_setpriv() {
        return Some(Some(NOBODY));
    }
    crate::support::skip(
        what,
        "running as root, which file permissions do not bind, and `setpriv` is not available to run as another user",
    );
    None
}

/// `dotevals ARGS...` in `dir` against its store, as user `uid` when given
/// (through `setpriv`), with the environment `TestDir::cmd` sets.
fn run_as(dir: &TestDir, uid: Option<u32>, args: &[&str], env: &[(&str, &Path)]) -> Out {
    let mut cmd = match uid {
        Some(uid) => {
            let mut c = Command::new("setpriv");
            c.args([
                format!("--reuid={uid}"),
                format!("--regid={uid}"),
                "--clear-groups".into(),
                BIN.into(),
            ]);
            c
        }
        None => Command::new(BIN),
    };
    cmd.current_dir(dir.path());
    for (key, _) in std::env::vars_os() {
        let key_text = key.to_string_lossy();
        if key_text.starts_with("OPENAI_") || key_text.starts_with("DOTEVALS_") {
            cmd.env_remove(&key);
        }
    }
    cmd.env("NO_COLOR", "1")
        .env("DOTEVALS_STORAGE", dir.store())
        .env("NO_PROXY", "127.0.0.1,localhost")
        .env("no_proxy", "127.0.0.1,localhost")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .args(args);
    for (key, value) in env {
        cmd.env(key, value);
    }
    let started = Instant::now();
    let output = cmd.output().expect("run dotevals");
    Out {
        code: output.status.code(),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        elapsed: started.elapsed(),
        command: format!("{cmd:?}"),
    }
}

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {mode:o} {}: {e}", path.display()));
}

/// Names of the files in `dir` (none when it does not exist), sorted.
fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// Every file below `dir`, as paths relative to it.
fn tree(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries {
            let path = e.unwrap().path();
            if path.is_dir() {
                stack.push(path.clone());
            }
            out.push(path.strip_prefix(dir).unwrap().to_path_buf());
        }
    }
    out.sort();
    out
}

fn lock_files(store_dir: &Path) -> Vec<String> {
    files_in(store_dir)
        .into_iter()
        .filter(|n| n.contains("lock"))
        .collect()
}

// ---------------------------------------------------------------------------
// 5. Locks

#[test]
fn locks_live_beside_the_store_and_are_removed_when_runs_end() {
    let dir = TestDir::new();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    let env = [("TMPDIR", tmp.as_path())];
    let server = TestServer::builder()
        .latency(Duration::from_millis(100))
        .reply(|p| p.to_owned())
        .start();
    dir.write("spec.yaml", &spec("locked", &server.url(), 6, QUICK, ""));
    let store_dir = dir.store().parent().unwrap().to_path_buf();

    // While a run is alive its lock is a file next to the store.
    let mut child = dir
        .cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .env("TMPDIR", &tmp)
        .spawn_logged(&dir, "first");
    wait_until(Duration::from_secs(10), "the lock beside the store", || {
        lock_files(&store_dir).len() == 1
    });
    assert_eq!(
        wait_bounded(&mut child, Duration::from_secs(30), "run").code(),
        Some(0)
    );
    assert_eq!(
        lock_files(&store_dir),
        Vec::<String>::new(),
        "released locks are removed"
    );

    // Many runs leave nothing behind: not beside the store, not in the temp folder.
    for i in 0..5 {
        let name = format!("e{i}");
        run_as(
            &dir,
            None,
            &["run", "spec.yaml", "--experiment", &name, "--quiet"],
            &env,
        )
        .assert_exit_code(0);
    }
    // A refused run (same evaluation already running) leaves nothing either.
    let mut child = dir
        .cmd(["run", "spec.yaml", "--experiment", "busy", "--quiet"])
        .env("TMPDIR", &tmp)
        .spawn_logged(&dir, "busy");
    wait_until(Duration::from_secs(10), "the busy run to start", || {
        lock_files(&store_dir).len() == 1
    });
    let refused = run_as(
        &dir,
        None,
        &["run", "spec.yaml", "--experiment", "busy"],
        &env,
    );
    refused.assert_exit_code(2);
    refused.assert_stderr_contains("already being run");
    assert_eq!(
        wait_bounded(&mut child, Duration::from_secs(30), "run").code(),
        Some(0)
    );

    assert_eq!(lock_files(&store_dir), Vec::<String>::new());
    assert_eq!(
        tree(&tmp),
        Vec::<PathBuf>::new(),
        "nothing in the temp folder"
    );
}

#[test]
fn a_run_refused_before_its_store_exists_leaves_no_folder_behind() {
    let dir = TestDir::new();
    let server = TestServer::echo();
    let model = format!("{QUICK}  api_key_env: DOTEVALS_TEST_UNSET_KEY\n");
    dir.write("a.yaml", &spec("a", &server.url(), 2, &model, ""));
    dir.write("b.yaml", &spec("b", &server.url(), 2, &model, ""));
    let out = dir
        .cmd(["run", "a.yaml", "b.yaml", "--experiment", "x"])
        .output();
    out.assert_exit_code(2);
    out.assert_stderr_contains("DOTEVALS_TEST_UNSET_KEY is not set");
    let store_dir = dir.store().parent().unwrap().to_path_buf();
    assert!(!store_dir.exists(), "{:?}", files_in(&store_dir));
}

#[test]
fn a_lock_left_by_a_killed_run_is_cleaned_up_and_does_not_block() {
    let dir = TestDir::new();
    let server = TestServer::builder()
        .latency(Duration::from_millis(200))
        .reply(|p| p.to_owned())
        .start();
    dir.write("spec.yaml", &spec("locked", &server.url(), 20, QUICK, ""));
    let store_dir = dir.store().parent().unwrap().to_path_buf();
    let mut child = dir
        .cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .spawn_logged(&dir, "first");
    wait_until(Duration::from_secs(10), "a recorded sample", || {
        dir.try_show("x").is_some_and(|r| {
            r.evaluations
                .first()
                .is_some_and(|e| e.samples.recorded >= 1)
        })
    });
    child.kill().expect("SIGKILL the run");
    child.wait().unwrap();
    assert_eq!(lock_files(&store_dir).len(), 1, "kill -9 cannot clean up");

    // A reader finds nobody holding it: the run is reported interrupted, and the
    // leftover goes.
    let report = dir.show_full("x");
    assert_eq!(report.only().status, "interrupted");
    assert_eq!(lock_files(&store_dir), Vec::<String>::new());

    server.set_latency(Duration::ZERO);
    dir.cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .output()
        .assert_exit_code(0);
    assert_eq!(dir.show_full("x").only().samples.finished, 20);
    assert_eq!(lock_files(&store_dir), Vec::<String>::new());
}

#[test]
fn a_second_user_can_run_after_the_first() {
    // The old lock folder was one shared folder in the system temp folder,
    // created 0755 by whoever ran first: nobody else could lock anything.
    if !is_root() || !have_setpriv() {
        crate::support::skip(
            "a_second_user_can_run_after_the_first",
            "needs root and `setpriv` to run as two users (root only)",
        );
        return;
    }
    let server = TestServer::echo();
    let first = TestDir::new();
    first.write("spec.yaml", &spec("mine", &server.url(), 2, QUICK, ""));
    run_as(
        &first,
        None,
        &["run", "spec.yaml", "--experiment", "x", "--quiet"],
        &[],
    )
    .assert_exit_code(0);

    let second = TestDir::new();
    chmod(second.path(), 0o755);
    std::os::unix::fs::chown(second.path(), Some(NOBODY), Some(NOBODY)).unwrap();
    second.write("spec.yaml", &spec("theirs", &server.url(), 2, QUICK, ""));
    run_as(
        &second,
        Some(NOBODY),
        &["run", "spec.yaml", "--experiment", "x", "--quiet"],
        &[],
    )
    .assert_exit_code(0);
    run_as(&second, Some(NOBODY), &["show", "x"], &[])
        .assert_exit_code(0)
        .assert_stdout_contains("theirs");
}

// ---------------------------------------------------------------------------
// 6. A read-only store

#[test]
fn a_read_only_store_can_be_listed_and_shown_and_run_says_it_is_read_only() {
    let dir = TestDir::new();
    let server = TestServer::echo();
    dir.write("spec.yaml", &spec("ro", &server.url(), 3, QUICK, ""));
    dir.cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .output()
        .assert_exit_code(0);
    let store = dir.store();
    chmod(&store, 0o444);

    // The file's write protection is honoured by everyone, root included: a run
    // would record into it, so it is refused before anything is sent.
    let sent = server.count();
    let out = dir
        .cmd(["run", "spec.yaml", "--experiment", "y", "--quiet"])
        .output();
    out.assert_exit_code(2);
    out.assert_stderr_contains("is read-only");
    out.assert_stderr_contains("chmod u+w");
    out.assert_stderr_contains("--storage");
    assert_eq!(server.count(), sent, "nothing sent");
    let out = dir.cmd(["delete", "x"]).output();
    out.assert_exit_code(2);
    out.assert_stderr_contains("is read-only");
    dir.cmd(["list"])
        .output()
        .assert_exit_code(0)
        .assert_stdout_contains("x");
    assert_eq!(dir.show_full("x").only().samples.finished, 3);

    // A store another user can only read, in a folder they cannot write either
    // (SQLite cannot make its shared-memory file there): still readable.
    let store_dir = store.parent().unwrap();
    chmod(store_dir, 0o555);
    if let Some(uid) = unprivileged("reading a store in a read-only folder") {
        chmod(dir.path(), 0o755);
        let out = run_as(&dir, uid, &["list"], &[]);
        out.assert_exit_code(0).assert_stdout_contains("completed");
        let out = run_as(&dir, uid, &["show", "x", "--full"], &[]);
        out.assert_exit_code(0).assert_stdout_contains("sample 2");
        let out = run_as(&dir, uid, &["run", "spec.yaml", "--experiment", "y"], &[]);
        out.assert_exit_code(2);
        out.assert_stderr_contains("is read-only");
        assert_eq!(server.count(), sent, "nothing sent");
    }
    chmod(store_dir, 0o755);
}

/// A new store in a folder this user cannot write: the lock file beside it
/// cannot be made either, which is the same "read-only" refusal (exit 2), not
/// a failure to create a lock file (exit 1).
#[test]
fn a_new_store_in_a_read_only_folder_is_refused_as_read_only() {
    let Some(uid) = unprivileged("a new store in a read-only folder") else {
        return;
    };
    let dir = TestDir::new();
    let server = TestServer::echo();
    dir.write("spec.yaml", &spec("ro", &server.url(), 2, QUICK, ""));
    let folder = dir.path().join("ro");
    std::fs::create_dir(&folder).unwrap();
    chmod(&folder, 0o555);
    chmod(dir.path(), 0o755);
    for store in [folder.join("new.db"), folder.join("sub/new.db")] {
        let storage = store.display().to_string();
        let out = run_as(
            &dir,
            uid,
            &[
                "run",
                "spec.yaml",
                "--experiment",
                "y",
                "--storage",
                &storage,
            ],
            &[],
        );
        out.assert_exit_code(2);
        out.assert_stderr_contains("is read-only");
        assert!(!store.exists());
    }
    assert_eq!(server.count(), 0, "nothing sent");
    chmod(&folder, 0o755);
}

// ---------------------------------------------------------------------------
// 7. Rows removed from a dataset

fn jsonl(rows: impl IntoIterator<Item = usize>) -> String {
    rows.into_iter()
        .map(|i| format!("{{\"id\": \"r{i}\", \"text\": \"row {i}\"}}\n"))
        .collect()
}

#[test]
fn resuming_with_rows_removed_from_the_dataset_is_refused() {
    let dir = TestDir::new();
    let server = TestServer::echo();
    dir.write("rows.jsonl", &jsonl(0..10));
    dir.write(
        "spec.yaml",
        &Spec::new("shrinking", &server.url())
            .dataset("  path: rows.jsonl\n")
            .quick()
            .to_string(),
    );
    dir.cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .output()
        .assert_exit_code(0);
    assert_eq!(server.count(), 10);

    // The last rows removed (row ids are the index): 10 -> 7.
    dir.write("rows.jsonl", &jsonl(0..7));
    let out = dir
        .cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .output();
    out.assert_exit_code(2);
    out.assert_stderr_contains(
        "3 samples that experiment `x` recorded are no longer in the dataset",
    );
    out.assert_stderr_contains("`7`");
    out.assert_stderr_contains("--experiment x-2");
    assert_eq!(server.count(), 10, "nothing sent");

    // A run of the first rows only (`--samples`) has not lost anything.
    dir.cmd([
        "run",
        "spec.yaml",
        "--experiment",
        "x",
        "--samples",
        "5",
        "--quiet",
    ])
    .output()
    .assert_exit_code(0);
    assert_eq!(server.count(), 10);

    // With an id column, one row taken out of the middle.
    dir.write("rows.jsonl", &jsonl(0..10));
    let with_ids = Spec::new("ids", &server.url())
        .dataset("  path: rows.jsonl\n  id: id\n")
        .quick()
        .to_string();
    dir.write("ids.yaml", &with_ids);
    dir.cmd(["run", "ids.yaml", "--experiment", "y", "--quiet"])
        .output()
        .assert_exit_code(0);
    dir.write("rows.jsonl", &jsonl((0..10).filter(|i| *i != 4)));
    let out = dir
        .cmd(["run", "ids.yaml", "--experiment", "y", "--quiet"])
        .output();
    out.assert_exit_code(2);
    out.assert_stderr_contains("1 sample that experiment `y` recorded is no longer in the dataset");
    out.assert_stderr_contains("`r4`");
    assert_eq!(server.count(), 20, "nothing sent");
    assert_eq!(dir.show_full("y").only().samples.total, 10);
}

// ---------------------------------------------------------------------------
// 8. An evaluator error is rescored, not resent

#[test]
fn a_sample_whose_evaluator_errored_is_rescored_on_resume_not_resent() {
    let dir = TestDir::new();
    let server = TestServer::builder().reply(|_| "42".to_owned()).start();
    dir.write(
        "spec.yaml",
        &Spec::new("numbers", &server.url())
            .dataset("  rows:\n    - {q: one, answer: \"42\"}\n    - {q: two, answer: \"n/a\"}\n")
            .quick()
            .prompt("\"{{ q }}\"")
            .evaluator("{type: numeric_match, expected: \"{{ answer }}\"}")
            .to_string(),
    );
    for _ in 0..3 {
        let out = dir
            .cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
            .output();
        out.assert_exit_code(1);
    }
    let sent = server.prompts();
    assert_eq!(
        sent.iter().filter(|p| *p == "two").count(),
        1,
        "the errored sample's reply is stored; it was sent again: {sent:?}"
    );
    assert_eq!(sent.len(), 2, "{sent:?}");
    let report = dir.show_full("x");
    let eval = report.only();
    let two = eval.record("1");
    assert_eq!(two.error_kind.as_deref(), Some("evaluator"));
    assert_eq!(two.output.as_deref(), Some("42"), "the reply is kept");
    assert!(
        two.error
            .as_deref()
            .unwrap_or_default()
            .contains("`n/a` is not a number"),
        "{two:?}"
    );
    // The model call's own facts are kept with the reply.
    assert!(two.latency_seconds.is_some(), "{two:?}");
    assert_eq!(
        (two.attempts, two.completion_tokens.is_some()),
        (1, true),
        "{two:?}"
    );
    assert_eq!((eval.samples.recorded, eval.samples.errored), (2, 1));
    assert_eq!(eval.runs, 3);
}
