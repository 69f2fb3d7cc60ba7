//! Replicas of one model (`base_url` as a list), seen from the servers: each
//! replica holds at most its own window; a slow one gets the share its
//! window drains, not a third; a replica that is down or answers 500 rests
//! and its samples finish on the others, each prompt answered once; one
//! that recovers is tried again; `show` breaks the figures down by replica;
//! a bad list is refused before any request.

use std::time::Duration;

use serde_json::Value;

use crate::server::{Reply, TestServer};
use crate::support::{only, show_json, uint};
use crate::util::{closed_port, Spec, TestDir, QUICK};

/// `[url, url, ...]`: a YAML flow list for `base_url`.
fn list(urls: &[String]) -> String {
    format!("[{}]", urls.join(", "))
}

fn echo(latency: Duration) -> TestServer {
    TestServer::builder()
        .latency(latency)
        .reply(|p| p.to_owned())
        .start()
}

/// Runs `n` samples (`sample 0`, ...) into experiment `x` in a new folder,
/// against the replicas `urls`, `window` in flight on each, with `model`
/// lines under `model:`; the run must exit with `code`.
fn run(urls: &[String], n: usize, window: usize, model: &str, code: i32) -> TestDir {
    let dir = TestDir::new();
    let spec = Spec::new("replicas", &list(urls))
        .samples(n)
        .model(model)
        .evaluator("{type: contains, expected: sample}")
        .tail(&format!(
            "concurrency: {{strategy: sliding_window, max_concurrency: {window}}}\n"
        ));
    dir.write("spec.yaml", &spec.to_string());
    dir.cmd(["run", "spec.yaml", "-e", "x", "-q"])
        .output()
        .assert_exit_code(code);
    dir
}

/// The `endpoints` of the only evaluation of experiment `x`, by URL.
fn endpoints(dir: &TestDir) -> Vec<Value> {
    let report = show_json(dir, "x", &[]);
    let e = only(&report);
    assert_eq!(
        uint(e, "/samples/errored"),
        0,
        "every sample finished: {e:#}"
    );
    e["endpoints"]
        .as_array()
        .unwrap_or_else(|| panic!("no endpoints in {e:#}"))
        .clone()
}

fn by_url<'a>(endpoints: &'a [Value], url: &str) -> &'a Value {
    endpoints
        .iter()
        .find(|e| e["url"] == url)
        .unwrap_or_else(|| panic!("no replica {url} in {endpoints:#?}"))
}

/// Two replicas at 50 ms and one ten times slower, a window of 4 each: the
/// slow one drains its window a tenth as often, so it answers about 1 in
/// 21 samples (at most 12% here), no replica ever holds more than its
/// window, and the run goes at the two fast replicas' pace (the bench
/// stage `replicas` measures how close; here, at least half).
#[test]
fn a_slow_replica_gets_the_share_its_window_drains() {
    const N: usize = 400;
    let fast = [
        echo(Duration::from_millis(50)),
        echo(Duration::from_millis(50)),
    ];
    let slow = echo(Duration::from_millis(500));
    let urls = [fast[0].url(), fast[1].url(), slow.url()];
    let dir = run(&urls, N, 4, QUICK, 0);

    let served = [fast[0].count(), fast[1].count(), slow.count()];
    assert_eq!(served.iter().sum::<usize>(), N, "each sample sent once");
    for s in [&fast[0], &fast[1], &slow] {
        assert!(
            s.peak_in_flight() <= 4,
            "a replica held {} at once",
            s.peak_in_flight()
        );
    }
    assert!(
        slow.count() * 100 <= N * 12,
        "the slow replica answered {} of {N}",
        slow.count()
    );
    let full = show_json(&dir, "x", &["--full"]);
    assert_eq!(crate::schema::problems("show", &full), Vec::<String>::new());
    let endpoints = endpoints(&dir);
    for (url, count) in urls.iter().zip(served) {
        let e = by_url(&endpoints, url);
        assert_eq!(uint(e, "/samples"), count as u64, "{e:#}");
        assert_eq!(uint(e, "/failed_attempts"), 0, "{e:#}");
    }
    let slow_p50 = by_url(&endpoints, &urls[2])["latency_seconds"]["p50"]
        .as_f64()
        .unwrap_or(0.0);
    assert!(
        slow_p50 >= 0.5,
        "the slow replica's own latency: {slow_p50}"
    );

    let report = show_json(&dir, "x", &[]);
    let wall = only(&report)["timing"]["wall_seconds"]
        .as_f64()
        .unwrap_or(f64::MAX);
    // Two fast replicas of window 4 at 50 ms serve 160 samples a second.
    let ideal = N as f64 / 160.0;
    assert!(
        wall < 2.0 * ideal,
        "wall {wall:.2} s against {ideal:.2} s at the fast replicas' pace"
    );

    // Every exported record names its replica, as the servers counted.
    let jsonl = dir.cmd(["export", "x", "--format", "jsonl"]).output();
    jsonl.assert_exit_code(0);
    let mut per_url = std::collections::BTreeMap::<String, usize>::new();
    for line in jsonl.stdout.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        *per_url
            .entry(v["endpoint"].as_str().unwrap_or("none").to_owned())
            .or_default() += 1;
    }
    let expected: std::collections::BTreeMap<String, usize> =
        urls.iter().cloned().zip(served).collect();
    assert_eq!(per_url, expected);
    let csv = dir.cmd(["export", "x", "--format", "csv"]).output();
    csv.assert_exit_code(0);
    assert!(
        csv.stdout
            .lines()
            .next()
            .unwrap_or("")
            .ends_with(",endpoint"),
        "{}",
        csv.stdout
    );

    // So does the HTML report.
    dir.cmd(["report", "x", "-o", "x.html"])
        .output()
        .assert_exit_code(0);
    let page = dir.read("x.html");
    assert!(
        page.contains("<table class=\"endpoints\">"),
        "no replica table"
    );
    for url in &urls {
        assert!(page.contains(url.as_str()), "{url} missing from the report");
    }

    // The table has a row per replica.
    let table = dir.cmd(["show", "x"]).output();
    table.assert_exit_code(0);
    for url in &urls {
        assert!(table.stdout.contains(url.as_str()), "{}", table.stdout);
    }
}

/// One replica is down (nothing listens) and one answers 500 to everything:
/// after a few failed attempts each rests, the samples they held go to the
/// healthy one, and every prompt is answered exactly once. `show` names the
/// failures against the replicas that had them.
#[test]
fn failing_replicas_rest_and_their_samples_finish_on_the_others() {
    const N: usize = 120;
    let healthy = echo(Duration::from_millis(20));
    let broken = TestServer::builder()
        .respond(|_| Reply::status(500, "{\"error\": \"replica down\"}"))
        .start();
    let down = format!("http://127.0.0.1:{}/v1", closed_port());
    let urls = [healthy.url(), broken.url(), down.clone()];
    let dir = run(&urls, N, 4, QUICK, 0);

    let mut answered = healthy.sorted_prompts();
    answered.dedup();
    assert_eq!(
        answered.len(),
        N,
        "every prompt reached the healthy replica"
    );
    assert_eq!(healthy.count(), N, "and only once");
    // It rests after 3 failures in a row (and for 5 s): the window it held
    // when the failures came, not the run's samples.
    assert!(
        broken.count() <= 8,
        "the broken replica got {} requests",
        broken.count()
    );

    let endpoints = endpoints(&dir);
    assert_eq!(uint(by_url(&endpoints, &urls[0]), "/samples"), N as u64);
    for url in [&urls[1], &down] {
        let e = by_url(&endpoints, url);
        assert_eq!(uint(e, "/samples"), 0, "{e:#}");
        assert!(uint(e, "/failed_attempts") >= 3, "{e:#}");
        assert!(uint(e, "/rests") >= 1, "{e:#}");
    }
    assert_eq!(
        uint(by_url(&endpoints, &urls[1]), "/failed_attempts"),
        broken.count() as u64,
        "each failed attempt counted against its replica"
    );
}

/// A replica that fails for its first second rests (5 s), and is tried
/// again when its rest is over: it then takes samples like the others.
#[test]
fn a_rested_replica_that_recovers_takes_samples_again() {
    const N: usize = 260;
    let steady = echo(Duration::from_millis(50));
    let recovering = TestServer::builder()
        .latency(Duration::from_millis(50))
        .respond(|r| match r.at < Duration::from_secs(1) {
            true => Reply::status(502, "{\"error\": \"warming up\"}"),
            false => Reply::text(r.prompt.clone()),
        })
        .start();
    let urls = [steady.url(), recovering.url()];
    let dir = run(&urls, N, 2, QUICK, 0);
    let endpoints = endpoints(&dir);
    let back = by_url(&endpoints, &urls[1]);
    assert!(uint(back, "/rests") >= 1, "it rested: {back:#}");
    assert!(
        uint(back, "/samples") >= 10,
        "the recovered replica answered again: {back:#}"
    );
}

/// A bad list is refused before any request, with the line, the column and
/// what to write instead.
#[test]
fn a_bad_list_of_replicas_is_refused_with_its_position() {
    let server = echo(Duration::ZERO);
    let url = server.url();
    let cases: [(String, &str, &str); 4] = [
        ("[]".into(), "the list of replicas is empty", "6:13"),
        (format!("[{url}, {url}]"), "is listed twice", "6:"),
        (
            format!("[{url}, not-a-url]"),
            "`not-a-url` is not an http(s) URL",
            "6:",
        ),
        (format!("[{url}, [x]]"), "a URL or a list of URLs", "6:"),
    ];
    for (value, message, at) in cases {
        let dir = TestDir::new();
        let spec = Spec::new("bad", &value)
            .quick()
            .evaluator("{type: contains, expected: x}");
        dir.write("spec.yaml", &spec.to_string());
        let out = dir.cmd(["run", "spec.yaml", "-e", "x", "-q"]).output();
        out.assert_exit_code(2);
        assert!(out.stderr.contains(message), "{value}: {}", out.stderr);
        assert!(
            out.stderr.contains(&format!("spec.yaml:{at}")),
            "{value}: {}",
            out.stderr
        );
    }
    // A judge calls one server.
    let dir = TestDir::new();
    let spec = Spec::new("judged", &url).quick().evaluators(&format!(
        "  - type: llm_judge\n    rubric: Is it right?\n    model:\n      provider: openai\n      name: judge\n      base_url: [{url}, {url}/2]\n"
    ));
    dir.write("spec.yaml", &spec.to_string());
    let out = dir.cmd(["run", "spec.yaml", "-e", "x", "-q"]).output();
    out.assert_exit_code(2);
    assert!(
        out.stderr.contains("a judge calls one server"),
        "{}",
        out.stderr
    );
    assert_eq!(server.count(), 0, "nothing was sent");
}

/// With no retries at all (`max_attempts: 1`), a sample whose one attempt
/// failed on a replica that is down is sent to another replica instead of
/// being recorded as an error; one that fails everywhere is an error.
#[test]
fn a_failed_sample_tries_the_other_replicas_before_it_is_an_error() {
    const N: usize = 30;
    let healthy = TestServer::builder()
        .respond(|r| match r.prompt.contains("sample 7") {
            true => Reply::status(500, "{\"error\": \"always\"}"),
            false => Reply::text(r.prompt.clone()),
        })
        .start();
    let down = format!("http://127.0.0.1:{}/v1", closed_port());
    let no_retries = "  timeout: 5s\n  retry: {max_attempts: 1}\n";
    let dir = run(&[down, healthy.url()], N, 2, no_retries, 1);
    let report = show_json(&dir, "x", &["--errors"]);
    let e = only(&report);
    assert_eq!(uint(e, "/samples/errored"), 1, "{e:#}");
    assert_eq!(e["errors"][0]["id"], "7", "{e:#}");
    assert_eq!(uint(e, "/samples/finished"), N as u64 - 1);
    // Sample 7 failed on the healthy replica, and on the other too unless
    // that one rested by then (it fails: nothing waits for it).
    let attempts = uint(&e["errors"][0], "/attempts");
    assert!((1..=2).contains(&attempts), "{e:#}");
    let failed = healthy
        .requests()
        .iter()
        .filter(|r| r.prompt.contains("sample 7"))
        .count();
    assert_eq!(failed, 1);
}

/// Credentials in a replica's URL (any replica, not only the first) are
/// never stored, shown or exported: the recorded replica is its address.
#[test]
fn replica_credentials_are_kept_out_of_the_store_and_the_output() {
    let servers = [echo(Duration::ZERO), echo(Duration::ZERO)];
    let with_password = |s: &TestServer, who: &str| {
        s.url()
            .replacen("http://", &format!("http://{who}:{who}-s3cret-pw@"), 1)
    };
    let urls = [
        with_password(&servers[0], "first"),
        with_password(&servers[1], "second"),
    ];
    let dir = run(&urls, 20, 2, QUICK, 0);
    assert!(
        servers.iter().all(|s| s.count() > 0),
        "both replicas served"
    );
    let mut printed = String::new();
    for args in [
        &["show", "x", "--full", "--format", "json"][..],
        &["show", "x"],
        &["export", "x", "--format", "csv"],
    ] {
        let out = dir.cmd(args).output();
        out.assert_exit_code(0);
        printed += &out.stdout;
    }
    dir.cmd(["report", "x", "-o", "x.html"])
        .output()
        .assert_exit_code(0);
    printed += &dir.read("x.html");
    for who in ["first", "second"] {
        let secret = format!("{who}-s3cret-pw");
        assert!(!printed.contains(&secret), "{secret} printed");
        for file in crate::support::files_under(dir.store().parent().unwrap_or(dir.path())) {
            let bytes = std::fs::read(&file).unwrap_or_default();
            assert!(
                !crate::support::contains_bytes(&bytes, secret.as_bytes()),
                "{secret} in {}",
                file.display()
            );
        }
    }
    assert!(
        printed.contains(&servers[1].url()),
        "the replica's address is shown"
    );
}
