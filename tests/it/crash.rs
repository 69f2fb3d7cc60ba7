//! kill -9 at random moments. One experiment is started again and again and
//! SIGKILLed after a random delay each time (seeded, so a failure can be
//! replayed); after every kill the store is read directly (read-only SQLite)
//! and must be readable, `dotevals show` must work and say `interrupted`, and
//! the server must never again receive the prompt of a sample the store had
//! as finished before a kill. A last run then completes the experiment: every
//! sample recorded exactly once, with the right output.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::process::ExitStatusExt;
use std::time::{Duration, Instant};

use crate::server::{TestServer, XorShift};
use crate::support::{finished, stored_rows, wait_bounded};
use crate::util::{wait_until, Spec, TestDir};

/// Samples in the dataset: more than the kills let finish, so every kill lands mid-run.
const N: usize = 2400;
/// Runs to start and kill.
const ROUNDS: usize = 24;
/// Kills that must have hit a live process.
const MIN_KILLS: usize = 20;
const SEED: u64 = 0xC0FFEE;

fn prompt(key: &str) -> String {
    format!("sample {}", key.trim_start_matches('s'))
}

#[test]
fn sigkill_at_random_moments_loses_nothing_and_resends_nothing_finished() {
    let dir = TestDir::new();
    let server = TestServer::builder()
        .latency_between(Duration::from_millis(5), Duration::from_millis(30))
        .seed(SEED)
        .reply(|p| p.to_owned())
        .start();
    let mut data = String::new();
    for i in 0..N {
        data.push_str(&format!("{{\"id\": \"s{i}\", \"text\": \"sample {i}\"}}\n"));
    }
    dir.write("data.jsonl", &data);
    dir.write(
        "spec.yaml",
        &Spec::new("crashy", &server.url())
            .dataset("  path: data.jsonl\n  id: id\n")
            .model_name("m")
            .model("  timeout: 5s\n")
            .evaluator("{type: contains, expected: sample}")
            .tail("concurrency: {strategy: sliding_window, max_concurrency: 8}\n")
            .to_string(),
    );
    let run = || dir.cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"]);

    let mut rng = XorShift::new(SEED);
    // Prompts of samples the store had as finished after the last kill.
    let mut finished_before: BTreeMap<String, String> = BTreeMap::new();
    let mut kills = 0;
    let mut resent: Vec<String> = Vec::new();
    let started = Instant::now();
    for round in 0..ROUNDS {
        let first_request = server.count();
        let delay = Duration::from_millis(rng.below(401));
        let mut child = run().spawn_logged(&dir, &format!("round{round}"));
        std::thread::sleep(delay);
        child.kill().expect("SIGKILL the run");
        let status = wait_bounded(&mut child, Duration::from_secs(10), "a killed run");
        if status.signal() == Some(9) {
            kills += 1;
        } else {
            assert_eq!(
                status.code(),
                Some(0),
                "round {round}: the run ended by itself, and not cleanly:\n{}",
                dir.read(&format!("round{round}.err"))
            );
        }
        // Requests of the dead process still on the wire arrive, then nothing moves.
        std::thread::sleep(Duration::from_millis(50));
        wait_until(Duration::from_secs(5), "the server to drain", || {
            server.in_flight() == 0
        });

        let requests = server.requests();
        let this_round = &requests[first_request..];
        let mut once = BTreeSet::new();
        for r in this_round {
            assert!(
                once.insert(r.prompt.as_str()),
                "round {round}: `{}` sent twice by one run",
                r.prompt
            );
            if finished_before.contains_key(&r.prompt) {
                resent.push(r.prompt.clone());
            }
        }

        // The store, read directly: readable, and finished samples stay finished.
        let rows = stored_rows(&dir.store());
        let now: BTreeMap<String, String> = finished(&rows)
            .into_iter()
            .map(|(key, output)| (prompt(&key), output))
            .collect();
        for (p, output) in &now {
            assert_eq!(p, output, "round {round}: wrong output recorded");
        }
        let lost: Vec<&String> = finished_before
            .keys()
            .filter(|p| !now.contains_key(*p))
            .collect();
        assert!(
            lost.is_empty(),
            "round {round}: finished samples disappeared: {lost:?}"
        );
        let keys: BTreeSet<&str> = rows.iter().map(|r| r.key.as_str()).collect();
        assert_eq!(
            keys.len(),
            rows.len(),
            "round {round}: a sample stored twice"
        );

        // `show` reads the store after the kill and calls the run interrupted.
        let show = dir.cmd(["show", "x", "--format", "json"]).output();
        if server.count() > 0 {
            show.assert_exit_code(0);
            let report: serde_json::Value = serde_json::from_str(&show.stdout).unwrap();
            let status = report["evaluations"][0]["status"].as_str().unwrap_or("");
            if status != "completed" {
                assert_eq!(
                    status, "interrupted",
                    "round {round}, killed after {delay:?}: {report:#}"
                );
                assert_eq!(report["status"], "interrupted", "{report:#}");
            }
        } else {
            // Killed before it sent anything: there may be no experiment yet.
            assert!(
                matches!(show.code, Some(0 | 2)),
                "round {round}: show failed: {}",
                show.stderr
            );
        }
        finished_before = now;
    }

    // Resume to the end.
    let finished_by_killed_runs = finished_before.len();
    let first_request = server.count();
    run().output().assert_exit_code(0);
    for r in &server.requests()[first_request..] {
        if finished_before.contains_key(&r.prompt) {
            resent.push(r.prompt.clone());
        }
    }
    let rows = stored_rows(&dir.store());
    let done = finished(&rows);
    let keys: BTreeSet<&str> = rows.iter().map(|r| r.key.as_str()).collect();
    let lost = N - done.len();
    println!(
        "crash test: {kills} kills survived, {lost} samples lost, {} finished samples re-sent ({finished_by_killed_runs} of {N} finished between kills, {:.1} s)",
        resent.len(),
        started.elapsed().as_secs_f64()
    );
    assert!(
        kills >= MIN_KILLS,
        "only {kills} of {ROUNDS} kills hit a running process"
    );
    assert_eq!(rows.len(), N, "one record per sample");
    assert_eq!(keys.len(), N, "no sample recorded twice");
    assert_eq!(lost, 0, "samples without a finished record");
    for (key, output) in &done {
        assert_eq!(*output, prompt(key), "the output of {key}");
    }
    assert!(
        resent.is_empty(),
        "{} finished samples were sent again after a kill: {:?}",
        resent.len(),
        &resent[..resent.len().min(10)]
    );
    let report = dir.show_full("x");
    assert_eq!(report.status, "completed");
    assert_eq!(report.only().samples.finished, N as u64);
}
