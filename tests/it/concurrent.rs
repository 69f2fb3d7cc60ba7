//! Two dotevals processes on one store. Different experiments started at the
//! same moment (on a store neither has created yet, so they also race to
//! create it) must both complete; the same evaluation of the same experiment
//! started twice at once must be refused to one of them, at start, before it
//! sends anything; and the lock must die with a SIGKILLed holder.

use std::collections::BTreeMap;
use std::process::Child;
use std::time::Duration;

use crate::server::TestServer;
use crate::support::{spec, wait_bounded};
use crate::util::{prompt, wait_until, TestDir, QUICK};

/// Times each prompt was received.
fn counts(server: &TestServer) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for p in server.prompts() {
        *out.entry(p).or_default() += 1;
    }
    out
}

/// Runs experiments `a` and `b` (specs `alpha` and `beta` of `n` samples) in
/// two processes started together on `dir`'s store; describes what went wrong.
fn race(dir: &TestDir, n: usize) -> Result<(), String> {
    let server = TestServer::builder()
        .latency(Duration::from_millis(10))
        .reply(|p| p.to_owned())
        .start();
    dir.write("a.yaml", &spec("alpha", &server.url(), n, QUICK, ""));
    dir.write("b.yaml", &spec("beta", &server.url(), n, QUICK, ""));
    let children: Vec<(&str, Child)> = [("a", "a.yaml"), ("b", "b.yaml")]
        .iter()
        .map(|(experiment, file)| {
            let child = dir
                .cmd(["run", file, "--experiment", experiment, "--quiet"])
                .spawn_logged(dir, experiment);
            (*experiment, child)
        })
        .collect();
    let mut failed = Vec::new();
    for (experiment, mut child) in children {
        let status = wait_bounded(&mut child, Duration::from_secs(30), "a run");
        if status.code() != Some(0) {
            failed.push(format!(
                "experiment {experiment} exited {:?}: {}",
                status.code(),
                dir.read(&format!("{experiment}.err")).trim()
            ));
        }
    }
    if !failed.is_empty() {
        return Err(failed.join("; "));
    }
    for experiment in ["a", "b"] {
        let report = dir.show_full(experiment);
        let e = report.only();
        if (e.samples.total, e.samples.finished) != (n as u64, n as u64) {
            return Err(format!("experiment {experiment}: {:?}", e.samples));
        }
    }
    let counts = counts(&server);
    if counts.len() != n || counts.values().any(|c| *c != 2) {
        return Err(format!("each prompt once per experiment: {counts:?}"));
    }
    Ok(())
}

#[test]
fn different_experiments_on_one_store_at_once_both_complete() {
    const N: usize = 30;
    let mut failures = Vec::new();
    // On a store that exists: two writers side by side.
    let dir = TestDir::new();
    let warm = TestServer::echo();
    dir.write("warm.yaml", &spec("warm", &warm.url(), 1, QUICK, ""));
    dir.cmd(["run", "warm.yaml", "--experiment", "warm", "--quiet"])
        .output()
        .assert_exit_code(0);
    for round in 0..2 {
        if let Err(e) = race(&dir, N) {
            failures.push(format!("existing store, round {round}: {e}"));
        }
        dir.cmd(["delete", "a"]).output();
        dir.cmd(["delete", "b"]).output();
    }
    // On a store neither has created yet: they also race to create it.
    for round in 0..3 {
        if let Err(e) = race(&TestDir::new(), N) {
            failures.push(format!("new store, round {round}: {e}"));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[test]
fn same_evaluation_twice_at_once_is_refused_and_the_lock_dies_with_its_holder() {
    const N: usize = 40;
    let dir = TestDir::new();
    let server = TestServer::builder()
        .latency(Duration::from_millis(100))
        .reply(|p| p.to_owned())
        .start();
    dir.write(
        "spec.yaml",
        &spec(
            "locked",
            &server.url(),
            N,
            QUICK,
            "concurrency: {strategy: sliding_window, max_concurrency: 2}\n",
        ),
    );
    // The store exists already (another experiment, another server), so this
    // test is about the lock alone; creating a store from two processes is
    // the test above.
    let warm = TestServer::echo();
    dir.write("warm.yaml", &spec("warm", &warm.url(), 1, QUICK, ""));
    dir.cmd(["run", "warm.yaml", "--experiment", "warm", "--quiet"])
        .output()
        .assert_exit_code(0);

    let run = || dir.cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"]);
    let mut children: Vec<Child> = (0..2)
        .map(|i| run().spawn_logged(&dir, &format!("run{i}")))
        .collect();

    // One of them is refused at once; the other keeps running (N x 100 ms / 2).
    let mut refused = None;
    wait_until(Duration::from_secs(10), "one run to be refused", || {
        refused = children
            .iter_mut()
            .position(|c| c.try_wait().unwrap().is_some());
        refused.is_some()
    });
    let loser = refused.unwrap();
    let winner = 1 - loser;
    let status = children[loser].wait().unwrap();
    let err = dir.read(&format!("run{loser}.err"));
    assert_eq!(status.code(), Some(2), "the second run exits 2: {err}");
    assert!(err.contains("already being run"), "{err}");
    assert!(
        children[winner].try_wait().unwrap().is_none(),
        "the first run is still going"
    );

    // Only the winner has sent anything: no prompt twice so far.
    wait_until(Duration::from_secs(10), "a few requests", || {
        server.count() >= 4
    });
    let twice: Vec<_> = counts(&server)
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .collect();
    assert!(twice.is_empty(), "the refused run sent requests: {twice:?}");
    let sent_before_kill = server.count();
    assert!(sent_before_kill < N, "the first run should still be going");

    // While it runs, a third is refused too.
    let out = run().output();
    out.assert_exit_code(2);
    out.assert_stderr_contains("already being run");

    children[winner].kill().expect("SIGKILL the first run");
    children[winner].wait().unwrap();
    // The lock died with it: a new run goes through and completes the experiment.
    let out = run().output();
    out.assert_exit_code(0);
    let report = dir.show_full("x");
    assert_eq!(report.only().samples.finished, N as u64);
    assert_eq!(report.status, "completed");
    let counts = counts(&server);
    assert_eq!(counts.len(), N);
    for i in 0..N {
        assert!(counts[&prompt(i)] <= 2, "{counts:?}");
    }
}
