//! Workers that run one experiment together on PostgreSQL (`run` started
//! several times against one store), seen from the test server and the
//! store: each prompt sent once between them, a killed worker's samples
//! finished by the others, one rate limit and one pause for all of them, a
//! worker with another dataset refused, and `show` listing the workers while
//! they run. Timing (how much faster four workers are) is the bench stage
//! `fleet`.

use std::process::Child;
use std::time::Duration;

use serde_json::Value;

use crate::postgres::{counts, schema_for, slow_echo, window, Schema};
use crate::server::{Span, TestServer};
use crate::support::{spec, wait_bounded};
use crate::util::{wait_until, Spec, TestDir, QUICK};

/// `n` workers of `spec.yaml` into experiment `x`, started together.
fn start(schema: &Schema, dir: &TestDir, n: usize, extra: &[&str]) -> Vec<Child> {
    (0..n)
        .map(|i| {
            let mut args = vec!["run", "spec.yaml", "--experiment", "x", "-q"];
            args.extend_from_slice(extra);
            schema.cmd(dir, &args).spawn_logged(dir, &format!("w{i}"))
        })
        .collect()
}

/// Waits for each worker (killing one that outlives the bound), then
/// checks that each exited 0: a failure leaves no worker running.
fn finish(dir: &TestDir, children: Vec<Child>) {
    let codes: Vec<Option<i32>> = children
        .into_iter()
        .map(|mut child| {
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                wait_bounded(&mut child, Duration::from_secs(120), "a worker").code()
            }))
            .unwrap_or(None)
        })
        .collect();
    for (i, code) in codes.into_iter().enumerate() {
        let err = dir.read(&format!("w{i}.err"));
        assert_eq!(code, Some(0), "w{i}: {err}");
    }
}

/// The workers `show` lists for the only evaluation of `x`.
fn workers(schema: &Schema, dir: &TestDir) -> Vec<Value> {
    let report = schema.show(dir, "x");
    report["evaluations"][0]["workers"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Four workers at once on 1200 samples (enough work that a worker slow to
/// start still finds some): every prompt reaches the server exactly once,
/// `show` accounts for all of them and names four workers whose shares add
/// up, each of which did some of the work.
#[test]
fn four_workers_send_each_prompt_once_between_them() {
    let Some(schema) = schema_for("four_workers_send_each_prompt_once") else {
        return;
    };
    const N: usize = 1200;
    let dir = TestDir::new();
    let server = slow_echo(10, 20);
    dir.write(
        "spec.yaml",
        &spec("fleet", &server.url(), N, QUICK, &window(8)),
    );
    let children = start(&schema, &dir, 4, &[]);
    finish(&dir, children);

    let counts = counts(&server);
    assert_eq!(counts.len(), N, "every prompt reached the server");
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "sent more than once: {twice:?}");
    let report = schema.show(&dir, "x");
    let found = crate::schema::problems("show", &report);
    assert!(found.is_empty(), "show's JSON: {found:#?}");
    let e = &report["evaluations"][0];
    assert_eq!(report["status"], "completed", "{report:#}");
    assert_eq!(e["samples"]["recorded"], N);
    assert_eq!(e["samples"]["finished"], N);
    assert_eq!(e["runs"], 4, "{e:#}");
    let shares: Vec<u64> = workers(&schema, &dir)
        .iter()
        .map(|w| {
            assert_eq!(w["state"], "finished", "{w:#}");
            w["samples"].as_u64().unwrap_or(0)
        })
        .collect();
    println!("fleet: shares of {N} samples between 4 workers: {shares:?}");
    assert_eq!(shares.len(), 4);
    assert_eq!(shares.iter().sum::<u64>(), N as u64);
    assert!(
        shares.iter().all(|n| *n > 0),
        "a worker did nothing: {shares:?}"
    );
    let stored = schema.int(
        &format!(
            "SELECT count(DISTINCT sample_key) FROM {}",
            schema.table("samples")
        ),
        &[],
    );
    assert_eq!(stored, N as i64, "one record per sample");
}

/// kill -9 of one of four workers halfway: the other three exit 0 with
/// every sample finished and stored once; the only prompts the server saw
/// twice are ones the killed worker held (its window, what it had claimed
/// ahead, replies not yet committed), and `show` says it was lost.
#[test]
fn a_killed_workers_samples_are_finished_by_the_others() {
    let Some(schema) = schema_for("a_killed_workers_samples_are_finished") else {
        return;
    };
    const N: usize = 1200;
    const WINDOW: usize = 8;
    let dir = TestDir::new();
    let server = slow_echo(20, 40);
    dir.write(
        "spec.yaml",
        &spec("fleet", &server.url(), N, QUICK, &window(WINDOW)),
    );
    let mut children = start(&schema, &dir, 4, &[]);
    wait_until(Duration::from_secs(60), "a third of the samples", || {
        server.count() >= N / 3
    });
    let mut killed = children.remove(0);
    killed.kill().expect("SIGKILL a worker");
    let _ = killed.wait();
    finish(&dir, children);

    let counts = counts(&server);
    assert_eq!(counts.len(), N, "every prompt reached the server");
    let twice = counts.values().filter(|n| **n > 1).count();
    // The killed worker held at most its window, the claim waiting for the
    // dispatcher and the one in hand (half a window each), and the replies
    // its writer had not yet committed (as `postgres.rs`'s kill test allows
    // for: a few windows).
    let bound = 4 * WINDOW;
    println!("fleet kill -9: {twice} prompts sent twice (at most {bound})");
    assert!(
        twice <= bound,
        "{twice} prompts sent twice, more than {bound}"
    );
    assert!(
        counts.values().all(|n| *n <= 2),
        "a prompt sent three times"
    );
    let report = schema.show(&dir, "x");
    let e = &report["evaluations"][0];
    assert_eq!(e["samples"]["finished"], N, "{e:#}");
    assert_eq!(report["status"], "completed", "{report:#}");
    let states: Vec<String> = workers(&schema, &dir)
        .iter()
        .map(|w| w["state"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(
        states.iter().filter(|s| *s == "lost").count(),
        1,
        "{states:?}"
    );
    assert_eq!(
        states.iter().filter(|s| *s == "finished").count(),
        3,
        "{states:?}"
    );
}

/// Four workers under `rate_limit: {requests_per_minute: 600}` against a
/// server that takes 660 a minute: the limit holds for the fleet, not per
/// worker (which would send 2400 a minute): no 429, and the rate the server
/// sees is 600 a minute within 5%.
#[test]
fn one_rate_limit_holds_for_the_whole_fleet() {
    let Some(schema) = schema_for("one_rate_limit_holds_for_the_fleet") else {
        return;
    };
    const N: usize = 160;
    let dir = TestDir::new();
    let server = TestServer::builder()
        .requests_per_minute(660)
        .latency(Duration::from_millis(20))
        .reply(|p| p.to_owned())
        .start();
    let model = "  timeout: 5s\n  rate_limit: {requests_per_minute: 600}\n";
    dir.write(
        "spec.yaml",
        &spec("fleet", &server.url(), N, model, &window(16)),
    );
    let children = start(&schema, &dir, 4, &[]);
    finish(&dir, children);

    let at: Vec<Duration> = server.requests().iter().map(|r| r.at).collect();
    let span = at[at.len() - 1].saturating_sub(at[0]).as_secs_f64();
    let per_minute = 60.0 * (at.len() - 1) as f64 / span;
    println!(
        "fleet rate: {} requests, {} refused, {per_minute:.1}/min over {span:.1} s",
        at.len(),
        server.throttled()
    );
    assert_eq!(server.throttled(), 0, "the server refused requests");
    assert_eq!(at.len(), N);
    assert!(
        (570.0..=630.0).contains(&per_minute),
        "the fleet sent {per_minute:.1} a minute, not 600 within 5%"
    );
    assert!(
        workers(&schema, &dir)
            .iter()
            .all(|w| w["samples"].as_u64().unwrap_or(0) > 0),
        "a worker sent nothing"
    );
}

/// A 429 with `Retry-After: 2` met by one worker pauses all four: once the
/// pause has reached every worker (within a fraction of a second), the
/// server hears nothing until it ends; then all finish.
#[test]
fn a_pause_one_worker_meets_holds_for_all() {
    let Some(schema) = schema_for("a_pause_one_worker_meets_holds_for_all") else {
        return;
    };
    const N: usize = 400;
    let dir = TestDir::new();
    let server = TestServer::builder()
        .latency(Duration::from_millis(20))
        .throttle_during(Duration::from_millis(200), "2")
        .reply(|p| p.to_owned())
        .start();
    let model = "  timeout: 5s\n  retry: {max_attempts: 10, backoff: 50ms, max_backoff: 1s}\n";
    // The first worker alone until the pause, then three more beside it.
    dir.write(
        "spec.yaml",
        &spec("fleet", &server.url(), N, model, &window(4)),
    );
    let mut children = start(&schema, &dir, 1, &[]);
    wait_until(Duration::from_secs(30), "a first 429", || {
        server.throttled() > 0
    });
    children.extend((1..4).map(|i| {
        schema
            .cmd(&dir, &["run", "spec.yaml", "--experiment", "x", "-q"])
            .spawn_logged(&dir, &format!("w{i}"))
    }));
    finish(&dir, children);

    let requests = server.requests();
    let first = requests[0].at;
    // The server refuses for 200 ms from the first request and asks for 2 s.
    let quiet = |from: f64, to: f64| {
        requests
            .iter()
            .filter(|r| {
                let t = r.at.saturating_sub(first).as_secs_f64();
                t > from && t < to
            })
            .count()
    };
    let during = quiet(0.7, 1.9);
    println!(
        "fleet pause: {} refused; {during} requests between 0.7 s and 1.9 s",
        server.throttled()
    );
    assert_eq!(during, 0, "workers sent during the fleet's pause");
    assert_eq!(
        schema.show(&dir, "x")["evaluations"][0]["samples"]["finished"],
        N
    );
}

/// While a worker runs, a second one with an edited dataset is refused with
/// exit 2 before sending anything, naming the first sample that differs;
/// `show` lists the running worker (host, pid, heartbeat), and once it ends
/// alone no worker list is shown (as on SQLite).
#[test]
fn a_worker_with_another_dataset_is_refused_and_show_lists_the_running_one() {
    let Some(schema) = schema_for("a_worker_with_another_dataset_is_refused") else {
        return;
    };
    const N: usize = 40;
    let dir = TestDir::new();
    let server = slow_echo(100, 100);
    let data = |edited: usize| -> String {
        (0..N)
            .map(|i| match i == edited {
                true => format!("{{\"id\": \"s{i}\", \"text\": \"sample {i} edited\"}}\n"),
                false => format!("{{\"id\": \"s{i}\", \"text\": \"sample {i}\"}}\n"),
            })
            .collect()
    };
    dir.write("data.jsonl", &data(N));
    let text = Spec::new("fleet", &server.url())
        .dataset("  path: data.jsonl\n  id: id\n")
        .model(QUICK)
        .evaluator("{type: contains, expected: sample}")
        .tail(&window(1))
        .to_string();
    dir.write("spec.yaml", &text);
    let mut first = start(&schema, &dir, 1, &[]);
    wait_until(Duration::from_secs(30), "the first worker to send", || {
        server.count() >= 3
    });

    let listed = workers(&schema, &dir);
    assert_eq!(listed.len(), 1, "{listed:#?}");
    let w = &listed[0];
    assert_eq!(w["state"], "running", "{w:#}");
    assert_eq!(w["pid"], u64::from(first[0].id()), "{w:#}");
    assert!(w["last_heartbeat_seconds_ago"].as_f64().is_some(), "{w:#}");
    assert_eq!(w["late"], false, "{w:#}");
    let table = schema.cmd(&dir, &["show", "x"]).output();
    table.assert_exit_code(0);
    assert!(table.stdout.contains("last heartbeat"), "{}", table.stdout);

    // Sample s7 edited in this worker's copy.
    let other = TestDir::new();
    other.write("data.jsonl", &data(7));
    other.write("spec.yaml", &text);
    let sent = server.count();
    let out = schema
        .cmd(&other, &["run", "spec.yaml", "--experiment", "x", "-q"])
        .output();
    out.assert_exit_code(2);
    assert!(
        out.stderr
            .contains("differs from the one the 1 worker running `x` loaded")
            && out.stderr.contains("`s7`"),
        "{}",
        out.stderr
    );
    let others = counts(&server)
        .keys()
        .filter(|p| p.contains("edited"))
        .count();
    assert_eq!(others, 0, "the refused worker sent requests");
    assert!(server.count() <= sent + 2, "the refusal took long");

    finish(&dir, std::mem::take(&mut first));
    assert!(
        workers(&schema, &dir).is_empty(),
        "a fleet of one lists no workers once it ended"
    );
}

/// A server that serves one request at a time (50 ms each, echoing the
/// prompt) and a spec of `n` samples sent to it with adaptive concurrency.
fn adaptive_on_a_serial_server(n: usize) -> (TestServer, TestDir) {
    let server = TestServer::builder()
        .serial(Duration::from_millis(50))
        .reply(|p| p.to_owned())
        .start();
    let dir = TestDir::new();
    let tail = "concurrency: {strategy: adaptive}\n";
    dir.write("spec.yaml", &spec("fleet", &server.url(), n, QUICK, tail));
    (server, dir)
}

/// Requests the server had at a time, on average over `spans`' stretch.
fn mean_in_flight(spans: &[Span]) -> f64 {
    let first = spans.iter().map(|s| s.start).min().unwrap_or_default();
    let last = spans.iter().map(|s| s.end).max().unwrap_or_default();
    let busy: f64 = spans.iter().map(|s| (s.end - s.start).as_secs_f64()).sum();
    busy / (last - first).as_secs_f64()
}

/// Four adaptive workers against a server that serves one request at a
/// time share one window: the server sees about one request at a time,
/// not one or more per worker. (Measured: one worker keeps 1.3 there on
/// average, four with a controller each kept 6.5, four sharing one 1.5 to 1.9.)
#[test]
fn adaptive_workers_share_one_window() {
    let Some(schema) = schema_for("adaptive_workers_share_one_window") else {
        return;
    };
    const N: usize = 150;
    let (server, dir) = adaptive_on_a_serial_server(N);
    finish(&dir, start(&schema, &dir, 4, &[]));
    let report = schema.show(&dir, "x");
    assert_eq!(report["status"], "completed", "{report:#}");
    assert_eq!(report["evaluations"][0]["samples"]["finished"], N);
    let spans = server.spans();
    assert_eq!(spans.len(), N, "each prompt sent once");
    let mean = mean_in_flight(&spans);
    println!(
        "fleet: four adaptive workers, one request at a time: {mean:.2} at the server on average"
    );
    assert!(
        mean <= 3.0,
        "the server had {mean:.2} requests at a time on average (peak {})",
        server.peak_in_flight()
    );
}

/// The worker that steers the fleet's adaptive window is killed (kill -9):
/// the next oldest takes the window over and the fleet finishes every sample,
/// still about one request at a time at a server that serves one.
#[test]
fn when_the_adaptive_leader_dies_the_next_worker_steers() {
    let Some(schema) = schema_for("when_the_adaptive_leader_dies") else {
        return;
    };
    const N: usize = 150;
    let (server, dir) = adaptive_on_a_serial_server(N);
    // The first worker starts the fleet and leads it.
    let mut leader = start(&schema, &dir, 1, &[]).remove(0);
    wait_until(Duration::from_secs(60), "the first replies", || {
        server.count() >= 5
    });
    let children: Vec<Child> = (1..3)
        .map(|i| {
            schema
                .cmd(&dir, &["run", "spec.yaml", "--experiment", "x", "-q"])
                .spawn_logged(&dir, &format!("w{i}"))
        })
        .collect();
    wait_until(Duration::from_secs(60), "a third of the samples", || {
        server.count() >= N / 3
    });
    leader.kill().expect("SIGKILL the leader");
    let _ = leader.wait();
    let at_kill = server
        .spans()
        .iter()
        .map(|s| s.end)
        .max()
        .unwrap_or_default();
    for (i, mut child) in children.into_iter().enumerate() {
        let status = wait_bounded(&mut child, Duration::from_secs(120), "a worker");
        assert_eq!(
            status.code(),
            Some(0),
            "{}",
            dir.read(&format!("w{}.err", i + 1))
        );
    }
    let report = schema.show(&dir, "x");
    assert_eq!(report["status"], "completed", "{report:#}");
    assert_eq!(report["evaluations"][0]["samples"]["finished"], N);
    // After the kill, the two left kept the server about as busy as one.
    let spans: Vec<_> = server
        .spans()
        .into_iter()
        .filter(|s| s.start >= at_kill)
        .collect();
    let mean = mean_in_flight(&spans);
    println!("fleet: after the leader's kill, {mean:.2} at the server on average");
    assert!(mean <= 3.0, "{mean:.2} requests at a time on average");
}

/// How adaptive workers add up on one server (printed, not asserted: the
/// bench stage `fleet` reports it). `cargo test --test it fleet::adaptive_fleet_shapes -- --ignored --nocapture`
#[test]
#[ignore]
fn adaptive_fleet_shapes() {
    let Some(schema) = schema_for("adaptive_fleet_shapes") else {
        return;
    };
    for (shape, workers) in [
        ("serial", 1),
        ("serial", 4),
        ("capacity8", 1),
        ("capacity8", 4),
    ] {
        let server = match shape {
            "serial" => TestServer::builder().serial(Duration::from_millis(50)),
            _ => TestServer::builder().capacity(8, Duration::from_millis(50), 0.1),
        }
        .reply(|p| p.to_owned())
        .start();
        let dir = TestDir::new();
        let n = if shape == "serial" { 150 } else { 600 };
        dir.write(
            "spec.yaml",
            &spec(
                "fleet",
                &server.url(),
                n,
                QUICK,
                "concurrency: {strategy: adaptive}\n",
            ),
        );
        let exp = format!("{shape}{workers}");
        let children: Vec<Child> = (0..workers)
            .map(|i| {
                schema
                    .cmd(&dir, &["run", "spec.yaml", "--experiment", &exp, "-q"])
                    .spawn_logged(&dir, &format!("w{i}"))
            })
            .collect();
        finish(&dir, children);
        let report = schema.show(&dir, &exp);
        let e = &report["evaluations"][0];
        let spans = server.spans();
        let first = spans.iter().map(|s| s.start).min().unwrap_or_default();
        let last = spans.iter().map(|s| s.end).max().unwrap_or_default();
        let wall = (last - first).as_secs_f64();
        println!(
            "{shape} x{workers}: mean in flight at the server {:.2}, peak {}, p50 {:.3} s, {:.1}/s",
            mean_in_flight(&spans),
            server.peak_in_flight(),
            e["timing"]["latency_seconds"]["p50"]
                .as_f64()
                .unwrap_or(0.0),
            n as f64 / wall
        );
    }
}

/// A worker on a machine with the spec alone (no dataset file) joins the
/// fleet at work and takes its samples from the store; with no fleet at
/// work it is refused as before: the dataset file is not found, exit 2.
#[test]
fn a_worker_with_only_the_spec_joins_the_fleet() {
    let Some(schema) = schema_for("a_worker_with_only_the_spec_joins") else {
        return;
    };
    const N: usize = 300;
    let dir = TestDir::new();
    let server = slow_echo(20, 20);
    let data: String = (0..N)
        .map(|i| format!("{{\"id\": \"s{i}\", \"text\": \"sample {i}\"}}\n"))
        .collect();
    dir.write("data.jsonl", &data);
    let text = Spec::new("fleet", &server.url())
        .dataset("  path: data.jsonl\n  id: id\n")
        .model(QUICK)
        .evaluator("{type: contains, expected: sample}")
        .tail(&window(2))
        .to_string();
    dir.write("spec.yaml", &text);
    let bare = TestDir::new();
    bare.write("spec.yaml", &text);

    let out = schema
        .cmd(&bare, &["run", "spec.yaml", "--experiment", "x", "-q"])
        .output();
    out.assert_exit_code(2);
    assert!(out.stderr.contains("not found"), "{}", out.stderr);
    assert_eq!(server.count(), 0);

    let first = start(&schema, &dir, 1, &[]);
    wait_until(Duration::from_secs(30), "the first worker to send", || {
        server.count() >= 10
    });
    let joiner = schema
        .cmd(&bare, &["run", "spec.yaml", "--experiment", "x", "-q"])
        .spawn_logged(&bare, "w0");
    finish(&dir, first);
    finish(&bare, vec![joiner]);
    let counts = counts(&server);
    assert_eq!(counts.len(), N);
    assert!(counts.values().all(|n| *n == 1), "a prompt sent twice");
    let shares: Vec<u64> = workers(&schema, &dir)
        .iter()
        .map(|w| w["samples"].as_u64().unwrap_or(0))
        .collect();
    println!("fleet: a worker without the dataset wrote {shares:?} of {N}");
    assert_eq!(shares.len(), 2);
    assert!(shares[1] > 0, "the worker without the dataset did nothing");
    assert_eq!(
        schema.show(&dir, "x")["evaluations"][0]["samples"]["finished"],
        N
    );
}

/// A worker that stops answering without dying (SIGSTOP: its connection to
/// the store stays open, as a machine cut off from the network leaves it)
/// keeps its samples only until its lease (`--lease 2s`) runs out: the
/// others take them and finish the run, even when it stopped holding row
/// locks in the middle of a commit. Woken up (SIGCONT), what it writes is
/// dropped, so every sample has one record.
#[test]
fn a_stopped_workers_lease_runs_out_and_the_others_take_its_samples() {
    let Some(schema) = schema_for("a_stopped_workers_lease_runs_out") else {
        return;
    };
    const N: usize = 400;
    let dir = TestDir::new();
    let server = slow_echo(20, 20);
    dir.write(
        "spec.yaml",
        &spec("fleet", &server.url(), N, QUICK, &window(4)),
    );
    let mut children = start(&schema, &dir, 2, &["--lease", "2s"]);
    wait_until(Duration::from_secs(60), "a quarter of the samples", || {
        server.count() >= N / 4
    });
    let stopped = children.remove(0);
    let pid = stopped.id().to_string();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid}");
    };
    signal("-STOP");
    let at_stop = server.count();
    // The other worker (w1) finishes everything, its partner's claims included.
    for mut child in children {
        let status = wait_bounded(&mut child, Duration::from_secs(120), "the other worker");
        assert_eq!(status.code(), Some(0), "w1: {}", dir.read("w1.err"));
    }
    let counts = counts(&server);
    assert_eq!(counts.len(), N, "every prompt reached the server");
    let report = schema.show(&dir, "x");
    assert_eq!(
        report["evaluations"][0]["samples"]["finished"], N,
        "the other worker finished the stopped one's samples"
    );
    let states: Vec<String> = workers(&schema, &dir)
        .iter()
        .map(|w| w["state"].as_str().unwrap_or("").to_owned())
        .collect();
    assert!(states.contains(&"lost".to_owned()), "{states:?}");
    signal("-CONT");
    // Stopped in the middle of a commit, its transaction was ended by the
    // server after the lease (so its locks held nobody up): it then fails
    // on a store error. Between two commits, it finishes.
    let mut stopped = stopped;
    let status = wait_bounded(&mut stopped, Duration::from_secs(60), "the woken worker");
    let err = dir.read("w0.err");
    match status.code() {
        Some(0) => {}
        Some(1) => assert!(err.contains("store error"), "{err}"),
        other => panic!("the woken worker ended with {other:?}: {err}"),
    }
    let twice = counts.values().filter(|n| **n > 1).count();
    println!("fleet SIGSTOP: {twice} prompts sent twice; {at_stop} requests before the stop");
    let stored = schema.int(
        &format!("SELECT count(*) FROM {}", schema.table("samples")),
        &[],
    );
    assert_eq!(stored, N as i64, "one record per sample");
}
