//! The integration tests' loopback servers as a standalone program, for the
//! benchmark script:
//!
//! ```text
//! cargo run --release --example test_server -- capacity --k 32 --base 100ms --jitter 0.2
//! cargo run --release --example test_server -- capacity --k 32 --base 100ms --sigma 0.3
//! cargo run --release --example test_server -- serial --service 200ms --cold 600ms
//! cargo run --release --example test_server -- sharing --service 200ms --cold 600ms
//! cargo run --release --example test_server -- batching --batch 64 --base 100ms --max-factor 2
//! cargo run --release --example test_server -- rpm --per-minute 600
//! cargo run --release --example test_server -- rpm --per-minute 60 --window fixed --retry-header llm_provider-retry-after
//! cargo run --release --example test_server -- faulty --error-rate 0.1 --hang-rate 0.02
//! cargo run --release --example test_server -- echo --stream-first 200ms --stream-total 1s --cached-tokens 8
//! ```
//!
//! It prints `listening on http://127.0.0.1:PORT/v1` and serves until killed.
//! `GET /stats` reports `requests`, `in_flight`, `peak_in_flight` (queue
//! included), `throttled` (429s sent), `faults`, `peak_in_service` (the most
//! in service at once in capacity, serial and batching modes), `answered`
//! (2xx replies) and `answered_prompts` (distinct prompts among them). Every
//! reply echoes the prompt. The modes are documented in `tests/it/server/mod.rs`.
//!
//! Every mode serves `POST /v1/chat/completions`, `/v1/messages` (Anthropic,
//! whose base URL is the printed one without `/v1`) and `/v1/responses`, and
//! answers a request with `"stream": true` as server-sent events.
//!
//! Options of every mode: `--port P` (default: a free one), `--latency D` (added
//! to every answer), `--seed N` (random latencies and faults), `--stream-first D`
//! and `--stream-total D` (a stream's first text D after its headers, its end
//! D after them; either alone sets both), `--cached-tokens N`,
//! `--reasoning-tokens N` and `--cache-write-tokens N` (reported in every
//! usage; reasoning tokens count as output too).
//! Faulty mode also takes `--reset-rate`, `--trickle-rate`, `--huge-rate`,
//! `--not-json-rate`, `--no-choices-rate` and `--wrong-types-rate`.

#[path = "../tests/it/server/mod.rs"]
mod server;

use std::collections::HashMap;
use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use server::{Faults, TestServer};

const USAGE: &str = "\
usage: test_server MODE [OPTIONS]

modes:
  echo                                          no limits: every request after --latency
  capacity --k N --base DURATION [--jitter F | --sigma S]
                                                serve N at a time, the rest queue; service
                                                is base x uniform[1-F, 1+F] (default F = 0)
                                                or base x exp(S x N(0,1)) (median base)
  serial --service DURATION [--sigma S]         one at a time, first come first served, each
                                                for DURATION (llama.cpp on a CPU), times
                                                exp(S x N(0,1)) if given; the same as
                                                capacity --k 1 --base DURATION
  sharing --service DURATION [--sigma S]        one processor shared equally by every request
                                                at it: n at once each progress at 1/n speed
  batching --batch B --base DURATION --max-factor F [--sigma S]
                                                at most B in service, the rest queue; one
                                                entering with n in service takes
                                                base x (1 + (F-1)(n-1)/(B-1)), times
                                                exp(S x N(0,1)) noise if given (vLLM, TGI)
  rpm --per-minute N [--window bucket|fixed] [--retry-header NAME]
                                                429 + Retry-After over N requests a minute:
                                                a token bucket (burst ~1 s), or N per fixed
                                                minute from the first request (LiteLLM's
                                                proxy); the wait goes in header NAME instead
                                                of Retry-After (LiteLLM: llm_provider-retry-after)
  faulty --error-rate P --hang-rate P [...]     inject faults with these probabilities

options of every mode: --port P, --latency DURATION, --seed N,
  --stream-first DURATION --stream-total DURATION
                     pace streamed replies (requests with stream: true are
                     answered as server-sent events): the first text this
                     long after the headers, the end this long after them
                     (either alone sets both)
  --cached-tokens N, --reasoning-tokens N, --cache-write-tokens N
                     report these in every usage (reasoning counts as output)
every mode serves /v1/chat/completions, /v1/messages and /v1/responses
capacity, serial, sharing and batching also take --cold DURATION: the first
request served takes DURATION instead (a cold start)
faulty also takes --reset-rate, --trickle-rate, --huge-rate, --not-json-rate,
--no-choices-rate, --wrong-types-rate";

/// `--key value` pairs after the mode.
struct Options(HashMap<String, String>);

impl Options {
    fn parse(args: &[String]) -> Result<Options, String> {
        let mut map = HashMap::new();
        let mut it = args.iter();
        while let Some(key) = it.next() {
            let Some(name) = key.strip_prefix("--") else {
                return Err(format!("unexpected argument `{key}`"));
            };
            let value = it.next().ok_or_else(|| format!("`{key}` needs a value"))?;
            map.insert(name.to_owned(), value.clone());
        }
        Ok(Options(map))
    }

    /// Takes option `name`, parsed by `parse`.
    fn take<T>(
        &mut self,
        name: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, String> {
        self.0
            .remove(name)
            .map(|v| parse(&v).map_err(|e| format!("--{name} {v}: {e}")))
            .transpose()
    }

    fn required<T>(
        &mut self,
        name: &str,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, String> {
        self.take(name, parse)?
            .ok_or_else(|| format!("--{name} is required"))
    }

    fn done(self) -> Result<(), String> {
        match self.0.keys().next() {
            Some(k) => Err(format!("unknown option --{k}")),
            None => Ok(()),
        }
    }
}

fn duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| e.to_string())
}

fn number<T: std::str::FromStr>(s: &str) -> Result<T, String>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e: T::Err| e.to_string())
}

fn sigma(s: &str) -> Result<f64, String> {
    let sigma: f64 = number(s)?;
    if sigma.is_finite() && sigma >= 0.0 {
        Ok(sigma)
    } else {
        Err("sigma is a number >= 0".into())
    }
}

fn rate(s: &str) -> Result<f64, String> {
    let p: f64 = number(s)?;
    if (0.0..=1.0).contains(&p) {
        Ok(p)
    } else {
        Err("a probability is between 0 and 1".into())
    }
}

fn build(args: &[String]) -> Result<TestServer, String> {
    let (mode, rest) = args.split_first().ok_or("a mode is required")?;
    let mut o = Options::parse(rest)?;
    let seed = o.take("seed", number::<u64>)?.unwrap_or(1);
    let mut builder = TestServer::builder()
        .reply(|p| p.to_owned())
        .seed(seed)
        .port(o.take("port", number::<u16>)?.unwrap_or(0))
        .latency(o.take("latency", duration)?.unwrap_or(Duration::ZERO))
        .cached_tokens(o.take("cached-tokens", number::<u64>)?.unwrap_or(0))
        .reasoning_tokens(o.take("reasoning-tokens", number::<u64>)?.unwrap_or(0))
        .cache_write_tokens(o.take("cache-write-tokens", number::<u64>)?.unwrap_or(0));
    let first = o.take("stream-first", duration)?;
    match (first, o.take("stream-total", duration)?) {
        (None, None) => {}
        (Some(first), None) => builder = builder.stream_timing(first, first),
        (None, Some(total)) => builder = builder.stream_timing(total, total),
        (Some(first), Some(total)) => {
            if total < first {
                return Err("--stream-total is at least --stream-first".into());
            }
            builder = builder.stream_timing(first, total);
        }
    }
    builder = match mode.as_str() {
        "capacity" => {
            let k = o.required("k", number::<usize>)?;
            let base = o.required("base", duration)?;
            let jitter = o.take("jitter", number::<f64>)?;
            match (jitter, o.take("sigma", sigma)?) {
                (Some(_), Some(_)) => return Err("--jitter and --sigma exclude each other".into()),
                (None, Some(sigma)) => builder.capacity_lognormal(k, base, sigma),
                (jitter, None) => {
                    let jitter = jitter.unwrap_or(0.0);
                    if !(0.0..=1.0).contains(&jitter) {
                        return Err("--jitter is between 0 and 1".into());
                    }
                    builder.capacity(k, base, jitter)
                }
            }
        }
        "echo" => builder,
        "serial" => {
            let service = o.required("service", duration)?;
            match o.take("sigma", sigma)? {
                Some(sigma) => builder.capacity_lognormal(1, service, sigma),
                None => builder.serial(service),
            }
        }
        "sharing" => {
            let service = o.required("service", duration)?;
            builder.sharing(service, o.take("sigma", sigma)?.unwrap_or(0.0))
        }
        "batching" => {
            let batch = o.required("batch", number::<usize>)?;
            let base = o.required("base", duration)?;
            let max_factor = o.required("max-factor", number::<f64>)?;
            if !(max_factor.is_finite() && max_factor >= 0.0) {
                return Err("--max-factor is a number >= 0".into());
            }
            let sigma = o.take("sigma", sigma)?.unwrap_or(0.0);
            builder.batching_lognormal(batch, base, max_factor, sigma)
        }
        "rpm" => {
            let n = o.required("per-minute", number::<u32>)?;
            let builder = match o.take("window", number::<String>)?.as_deref() {
                None | Some("bucket") => builder.requests_per_minute(n),
                Some("fixed") => builder.requests_per_window(n, Duration::from_secs(60)),
                Some(other) => {
                    return Err(format!("--window {other}: `bucket` or `fixed`"));
                }
            };
            match o.take("retry-header", number::<String>)? {
                Some(name) => builder.retry_header(&name),
                None => builder,
            }
        }
        "faulty" => {
            let mut f = Faults::seeded(seed);
            f.server_error = o.take("error-rate", rate)?.unwrap_or(0.0);
            f.hang = o.take("hang-rate", rate)?.unwrap_or(0.0);
            f.reset = o.take("reset-rate", rate)?.unwrap_or(0.0);
            f.trickle = o.take("trickle-rate", rate)?.unwrap_or(0.0);
            f.huge = o.take("huge-rate", rate)?.unwrap_or(0.0);
            f.not_json = o.take("not-json-rate", rate)?.unwrap_or(0.0);
            f.no_choices = o.take("no-choices-rate", rate)?.unwrap_or(0.0);
            f.wrong_types = o.take("wrong-types-rate", rate)?.unwrap_or(0.0);
            builder.faults(f)
        }
        other => return Err(format!("unknown mode `{other}`")),
    };
    if let Some(cold) = o.take("cold", duration)? {
        if !["capacity", "serial", "sharing", "batching"].contains(&mode.as_str()) {
            return Err(format!("--cold needs a server that serves: not `{mode}`"));
        }
        builder = builder.cold(cold);
    }
    o.done()?;
    Ok(builder.start())
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--help" || a == "-h") {
        println!("{USAGE}");
        return ExitCode::SUCCESS;
    }
    let server = match build(&args) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("test_server: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    println!("listening on {}", server.url());
    let _ = std::io::stdout().flush();
    // The server runs on its own thread; serve until killed.
    loop {
        std::thread::park();
    }
}
