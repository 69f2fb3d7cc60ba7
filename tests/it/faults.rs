//! Hostile servers: injected 5xx and hangs under retries and timeouts, then
//! each broken body on its own (a reset mid-body, a body trickling past the
//! timeout, a 100 MB body, bodies that are not the OpenAI shape). Every sample
//! must be recorded exactly once, finished or errored with a kind and a
//! message; the process must never crash or hang.
//!
//! The fault server decides each attempt's fate from (seed, prompt, attempt),
//! so the test works out what every sample must have gone through from the
//! server's own log instead of hard-coding results.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::server::{Fault, Faults, Reply, TestServer};
use crate::support::{only, show_json, spec, uint};
use crate::util::{prompt, text_rows, wait_until, Spec, TestDir};

const ATTEMPTS: usize = 3;

/// 10% 5xx and 2% hangs, from `seed`.
fn flaky(seed: u64) -> Faults {
    Faults {
        server_error: 0.10,
        hang: 0.02,
        ..Faults::seeded(seed)
    }
}

/// The prompts that fault on every attempt under `faults`.
fn doomed(faults: &Faults, n: usize) -> Vec<usize> {
    (0..n)
        .filter(|i| (1..=ATTEMPTS).all(|a| faults.decide(&prompt(*i), a).is_some()))
        .collect()
}

#[test]
fn flaky_server_every_sample_is_recorded_exactly_once() {
    const N: usize = 100;
    // The first seed under which some samples fail all their attempts, so both
    // outcomes (finished after retries, errored for good) are exercised.
    let faults = (1..).map(flaky).find(|f| doomed(f, N).len() >= 2).unwrap();
    let expected_errored = doomed(&faults, N);
    let dir = TestDir::new();
    let server = TestServer::builder()
        .faults(faults)
        .latency(Duration::from_millis(5))
        .reply(|p| p.to_owned())
        .start();
    dir.write(
        "spec.yaml",
        &spec(
            "flaky",
            &server.url(),
            N,
            "  timeout: 300ms\n  retry: {max_attempts: 3, backoff: 10ms, max_backoff: 50ms}\n",
            "concurrency: {strategy: sliding_window, max_concurrency: 8}\n",
        ),
    );
    let out = dir
        .cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .output();
    assert!(
        out.elapsed < Duration::from_secs(30),
        "took {:?}",
        out.elapsed
    );

    let report = show_json(&dir, "x", &["--full"]);
    let e = only(&report);
    let records = e["records"].as_array().expect("records");
    assert_eq!(records.len(), N, "one record per sample");
    let errored: Vec<usize> = records
        .iter()
        .filter(|r| !r["error_kind"].is_null())
        .map(|r| r["id"].as_str().unwrap().parse().unwrap())
        .collect();
    out.assert_exit_code(if errored.is_empty() { 0 } else { 1 });
    assert_eq!(
        errored, expected_errored,
        "errored samples vs those the server failed {ATTEMPTS} times"
    );

    // Each record agrees with what the server did to that sample.
    let mut sent: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for r in server.requests() {
        sent.entry(r.prompt).or_default().push(r.attempt);
    }
    let mut ids = std::collections::BTreeSet::new();
    for r in records {
        let id: usize = r["id"].as_str().unwrap().parse().unwrap();
        assert!(ids.insert(id), "sample {id} recorded twice");
        let p = prompt(id);
        let attempts = sent.get(&p).map_or(0, Vec::len);
        assert_eq!(
            r["attempts"].as_u64(),
            Some(attempts as u64),
            "sample {id}: the server saw {attempts} attempts: {r:#}"
        );
        let last = faults.decide(&p, attempts);
        match r["error_kind"].as_str() {
            None => {
                assert_eq!(
                    last, None,
                    "sample {id} finished on a faulty attempt: {r:#}"
                );
                assert_eq!(r["output"], p.as_str(), "{r:#}");
                assert!(r["error"].is_null());
            }
            Some(kind) => {
                let expected = match last {
                    Some(Fault::ServerError) => "http_500",
                    Some(Fault::Hang) => "timeout",
                    other => panic!("sample {id} errored after a {other:?} attempt: {r:#}"),
                };
                assert_eq!(kind, expected, "{r:#}");
                assert_eq!(attempts, ATTEMPTS, "{r:#}");
                assert!(
                    r["error"].as_str().is_some_and(|m| !m.is_empty()),
                    "an error has a message: {r:#}"
                );
                assert!(r["output"].is_null());
            }
        }
    }

    let report = show_json(&dir, "x", &["--errors"]);
    let e = only(&report);
    let kinds = e["error_kinds"]
        .as_array()
        .expect("error_kinds with --errors");
    let counted: u64 = kinds.iter().map(|k| uint(k, "/count")).sum();
    assert_eq!(counted, uint(e, "/samples/errored"), "{kinds:#?}");
    assert_eq!(counted as usize, expected_errored.len());
    assert_eq!(
        e["errors"].as_array().map(Vec::len),
        Some(expected_errored.len())
    );
    assert_eq!(
        uint(e, "/samples/finished") + uint(e, "/samples/errored"),
        N as u64
    );
}

#[test]
fn hostile_bodies_are_recorded_never_a_crash_or_hang() {
    // (prompt, reply, expected kind, attempts). Garbled bodies are retried (a
    // proxy's passing trouble); an oversized one is not (it would come again).
    let cases: Vec<(&str, Reply, &str, u64)> = vec![
        ("reset", Reply::ResetMidBody("ok".into()), "connection", 2),
        (
            "trickle",
            Reply::Trickle {
                content: "ok".into(),
                interval: Duration::from_millis(100),
            },
            "timeout",
            2,
        ),
        (
            "huge declared",
            Reply::Huge {
                bytes: 100 << 20,
                chunked: false,
            },
            "malformed",
            1,
        ),
        (
            "huge chunked",
            Reply::Huge {
                bytes: 100 << 20,
                chunked: true,
            },
            "malformed",
            1,
        ),
        (
            "not json",
            Fault::NotJson.reply(String::new(), 0),
            "malformed",
            2,
        ),
        (
            "no choices",
            Fault::NoChoices.reply(String::new(), 0),
            "malformed",
            2,
        ),
        (
            "wrong types",
            Fault::WrongTypes.reply(String::new(), 0),
            "malformed",
            2,
        ),
    ];
    let replies: BTreeMap<String, Reply> = cases
        .iter()
        .map(|(p, reply, _, _)| (p.to_string(), reply.clone()))
        .collect();
    let server = TestServer::builder()
        .raw_http()
        .respond(move |r| {
            replies
                .get(&r.prompt)
                .cloned()
                .unwrap_or_else(|| Reply::text(r.prompt.clone()))
        })
        .start();
    let dir = TestDir::new();
    let mut prompts: Vec<&str> = cases.iter().map(|c| c.0).collect();
    prompts.push("fine");
    dir.write(
        "spec.yaml",
        &Spec::new("hostile", &server.url())
            .rows(&text_rows(&prompts))
            .model_name("m")
            .model(
                "  timeout: 1500ms\n  retry: {max_attempts: 2, backoff: 10ms, max_backoff: 20ms}\n",
            )
            .tail("concurrency: {strategy: sliding_window, max_concurrency: 8}\n")
            .to_string(),
    );
    let out = dir
        .cmd(["run", "spec.yaml", "--experiment", "x", "--quiet"])
        .output();
    out.assert_exit_code(1);
    assert!(
        out.elapsed < Duration::from_secs(20),
        "the run took {:?}",
        out.elapsed
    );

    let report = show_json(&dir, "x", &["--full"]);
    let e = only(&report);
    let records = e["records"].as_array().expect("records");
    assert_eq!(records.len(), prompts.len(), "{e:#}");
    // Every case is checked before failing, so one report names every wrong kind.
    let mut wrong = Vec::new();
    for (i, (name, _, kind, attempts)) in cases.iter().enumerate() {
        let r = &records[i];
        assert_eq!(r["id"], i.to_string().as_str());
        assert!(r["output"].is_null(), "{name}: {r:#}");
        assert!(
            r["error"].as_str().is_some_and(|m| !m.is_empty()),
            "{name}: {r:#}"
        );
        if r["error_kind"] != *kind || r["attempts"] != *attempts {
            wrong.push(format!(
                "{name}: expected {kind} after {attempts} attempt(s), got {} after {}: {}",
                r["error_kind"], r["attempts"], r["error"]
            ));
        }
    }
    assert!(wrong.is_empty(), "\n{}", wrong.join("\n"));
    let fine = &records[cases.len()];
    assert_eq!(fine["output"], "fine", "{fine:#}");
    assert!(fine["error_kind"].is_null());
    for name in ["huge declared", "huge chunked"] {
        let i = prompts.iter().position(|p| *p == name).unwrap();
        let message = records[i]["error"].as_str().unwrap();
        assert!(
            message.contains("larger than"),
            "{name}: the body cap is named: {message}"
        );
    }
    assert_eq!(uint(e, "/samples/errored"), cases.len() as u64);
    // The client is gone, so the server's writers notice and stop (a trickle
    // finds out on its next byte).
    wait_until(Duration::from_secs(5), "the server to let go", || {
        server.in_flight() == 0
    });
}
