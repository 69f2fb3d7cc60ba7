//! `run --shard I/N`: each shard a deterministic share of the rows (sorted
//! by sample id, dealt round robin), every row in exactly one shard; four
//! shards run into four stores of their own and merged give the same
//! samples, outputs and scores as one run of the whole dataset.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::server::TestServer;
use crate::util::{Spec, TestDir};

/// 103 rows (not a multiple of 4) with ids in no particular order; a
/// sample passes when its id's number is even (the echo server answers the
/// prompt, the evaluator looks for a `0`, `2`, ... at its end).
fn dataset() -> String {
    (0..103)
        .map(|i| {
            let id = format!("r{:03}", (i * 37) % 103);
            format!("{{\"id\": \"{id}\", \"text\": \"{id} says {}\"}}\n", i % 2)
        })
        .collect()
}

/// Every exported record of experiment `x` in `dir`'s store `store`, by id:
/// (output, scores).
fn records(dir: &TestDir, store: &str) -> BTreeMap<String, (Value, Value)> {
    let out = dir.cmd(["export", "x", "--storage", store]).output();
    out.assert_exit_code(0);
    out.stdout
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).expect("a JSON line");
            let id = v["id"].as_str().unwrap_or_default().to_owned();
            (id, (v["output"].clone(), v["scores"].clone()))
        })
        .collect()
}

/// An echo server, and a folder holding [`dataset`] and a spec over it
/// whose evaluator looks for `expected`.
fn setup(expected: &str) -> (TestServer, TestDir) {
    let server = TestServer::echo();
    let dir = TestDir::new();
    dir.write("data.jsonl", &dataset());
    let spec = Spec::new("sharded", &server.url())
        .dataset("  path: data.jsonl\n  id: id\n")
        .quick()
        .evaluator(&format!("{{type: contains, expected: \"{expected}\"}}"))
        .to_string();
    dir.write("spec.yaml", &spec);
    (server, dir)
}

#[test]
fn four_shards_merged_are_one_run() {
    let (_server, dir) = setup("says 0");

    let mut sizes = Vec::new();
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for i in 1..=4 {
        let store = format!("shard{i}.db");
        let out = dir
            .cmd(["run", "spec.yaml", "-e", "x", "--storage", &store])
            .args(["--shard", &format!("{i}/4"), "-q"])
            .output();
        out.assert_exit_code(0);
        let mine = records(&dir, &store);
        for id in mine.keys() {
            *seen.entry(id.clone()).or_default() += 1;
        }
        sizes.push(mine.len());
    }
    println!("shards: {sizes:?} of 103 rows");
    assert_eq!(seen.len(), 103, "every row in some shard");
    assert!(seen.values().all(|n| *n == 1), "a row in two shards");
    assert!(
        sizes.iter().all(|n| (25..=26).contains(n)),
        "shards of a quarter each: {sizes:?}"
    );

    let out = dir
        .cmd(["merge", "shard1.db", "shard2.db", "shard3.db", "shard4.db"])
        .args(["--into", "merged.db", "-q"])
        .output();
    out.assert_exit_code(0);
    dir.cmd(["run", "spec.yaml", "-e", "x", "--storage", "whole.db", "-q"])
        .output()
        .assert_exit_code(0);
    assert_eq!(
        records(&dir, "merged.db"),
        records(&dir, "whole.db"),
        "the merged shards and one run hold the same records"
    );
    let show = |store: &str| {
        let report = dir
            .cmd(["show", "x", "--format", "json", "--storage", store])
            .output();
        report.assert_exit_code(0);
        let v: Value = report.json();
        let e = v["evaluations"][0].clone();
        (
            e["samples"].clone(),
            e["evaluators"][0]["mean"].clone(),
            e["status"].clone(),
        )
    };
    let (merged, whole) = (show("merged.db"), show("whole.db"));
    println!("merged {merged:?}, whole {whole:?}");
    assert_eq!(merged, whole);
}

/// The same shard read twice is the same rows, and a shard number out of
/// range or a shard on a PostgreSQL store is refused before any request.
#[test]
fn a_shard_is_the_same_every_time_and_a_bad_one_is_refused() {
    let (server, dir) = setup("says");
    for (i, store) in ["a.db", "b.db"].iter().enumerate() {
        dir.cmd([
            "run",
            "spec.yaml",
            "-e",
            "x",
            "--storage",
            store,
            "--shard",
            "3/7",
            "-q",
        ])
        .output()
        .assert_exit_code(0);
        assert_eq!(server.count(), 15 * (i + 1), "shard 3 of 7 of 103 rows");
    }
    assert_eq!(records(&dir, "a.db"), records(&dir, "b.db"));
    for bad in ["0/4", "5/4", "4", "a/b", "1/0"] {
        let out = dir
            .cmd(["run", "spec.yaml", "-e", "y", "--shard", bad])
            .output();
        out.assert_exit_code(2);
        assert!(out.stderr.contains("--shard"), "{bad}: {}", out.stderr);
    }
    let out = dir
        .cmd(["run", "spec.yaml", "-e", "y", "--shard", "1/2"])
        .args(["--storage", "postgres://nobody@127.0.0.1:1/none"])
        .output();
    out.assert_exit_code(2);
    assert!(
        out.stderr.contains("without --shard on every machine"),
        "{}",
        out.stderr
    );
    assert_eq!(server.count(), 30, "a refused run sent requests");
}
