//! When a throttled answer says to try again: `Retry-After` and the
//! retry hint headers OpenAI, Azure, LiteLLM and Anthropic send.

use std::time::{Duration, SystemTime};

use reqwest::header::{HeaderMap, RETRY_AFTER};

/// The longest wait a server's hint may ask for. A longer one (a date years
/// ahead, `Retry-After: 1e9`) is taken for garbage and ignored, like a
/// negative or unparsable one, so the next header in line is read instead.
const MAX_HINT: Duration = Duration::from_secs(24 * 60 * 60);

/// The Anthropic quotas, each with `anthropic-ratelimit-{kind}-remaining` and
/// `anthropic-ratelimit-{kind}-reset` (an RFC 3339 time).
const ANTHROPIC_QUOTAS: [&str; 4] = ["requests", "tokens", "input-tokens", "output-tokens"];

/// How long a throttling server (429, 503, or Anthropic's 529) asks us to wait; `None` for any
/// other status, or when it does not say. The headers are read most specific
/// first, and the first that gives a usable value wins:
///
/// 1. `retry-after-ms`: milliseconds, maybe fractional (OpenAI, Azure).
/// 2. `Retry-After`: seconds, or an HTTP date (RFC 9110).
/// 3. `llm_provider-retry-after`: seconds (LiteLLM's proxy sends only this).
/// 4. The reset time of every quota the answer marks exhausted, the latest of
///    them: `x-ratelimit-reset-requests` / `x-ratelimit-reset-tokens` (`1s`,
///    `6m0s`, `20ms` or seconds) when `x-ratelimit-remaining-*` is 0, and
///    `anthropic-ratelimit-{requests,tokens,input-tokens,output-tokens}-reset`
///    (RFC 3339 times) when the matching `...-remaining` is 0.
/// 5. On a 429 that marks no quota exhausted, the soonest Anthropic reset: we
///    cannot tell which quota was hit, and the soonest costs at most one more 429.
///
/// Negative, NaN, unparsable and absurd values (over a day) are skipped.
/// Times in the past mean "now" (zero).
pub fn retry_hint(status: u16, headers: &HeaderMap) -> Option<Duration> {
    retry_hint_at(status, headers, SystemTime::now())
}

/// [`retry_hint`] with the clock passed in, for dates.
fn retry_hint_at(status: u16, headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    if !matches!(status, 429 | 503 | 529) {
        return None;
    }
    let text = |name: &str| header_text(headers, name);
    text("retry-after-ms")
        .and_then(|v| v.parse::<f64>().ok())
        .and_then(|ms| seconds(ms / 1000.0))
        .or_else(|| text(RETRY_AFTER.as_str()).and_then(|v| seconds_or_httpdate(v, now)))
        .or_else(|| {
            text("llm_provider-retry-after")
                .and_then(|v| v.parse::<f64>().ok())
                .and_then(seconds)
        })
        .or_else(|| exhausted_quota_reset(headers, now))
        .or_else(|| {
            (status == 429)
                .then(|| anthropic_resets(headers, now).min())
                .flatten()
        })
}

/// A header's value as trimmed text, if it is there and is text.
fn header_text<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

fn seconds_or_httpdate(value: &str, now: SystemTime) -> Option<Duration> {
    if let Ok(secs) = value.parse::<f64>() {
        return seconds(secs);
    }
    until(httpdate(value)?, now)
}

/// The latest reset among the quotas this answer marks exhausted (remaining 0).
fn exhausted_quota_reset(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let text = |name: String| header_text(headers, &name);
    let openai = ["requests", "tokens"].into_iter().filter_map(|kind| {
        if text(format!("x-ratelimit-remaining-{kind}")) != Some("0") {
            return None;
        }
        let value = text(format!("x-ratelimit-reset-{kind}"))?;
        match value.parse::<f64>() {
            Ok(secs) => seconds(secs),
            Err(_) => go_duration(value).filter(|d| *d <= MAX_HINT),
        }
    });
    let anthropic = ANTHROPIC_QUOTAS.into_iter().filter_map(|kind| {
        if text(format!("anthropic-ratelimit-{kind}-remaining")) != Some("0") {
            return None;
        }
        anthropic_reset(headers, kind, now)
    });
    openai.chain(anthropic).max()
}

/// Every Anthropic quota's reset, exhausted or not.
fn anthropic_resets(headers: &HeaderMap, now: SystemTime) -> impl Iterator<Item = Duration> + '_ {
    ANTHROPIC_QUOTAS
        .into_iter()
        .filter_map(move |kind| anthropic_reset(headers, kind, now))
}

fn anthropic_reset(headers: &HeaderMap, kind: &str, now: SystemTime) -> Option<Duration> {
    let value = header_text(headers, &format!("anthropic-ratelimit-{kind}-reset"))?;
    until(rfc3339(value)?, now)
}

/// Time from `now` to `when` (zero if it is past); `None` if absurdly far.
fn until(when: SystemTime, now: SystemTime) -> Option<Duration> {
    let wait = when.duration_since(now).unwrap_or(Duration::ZERO);
    (wait <= MAX_HINT).then_some(wait)
}

/// Seconds from a server as a duration; `None` for negative, NaN or absurdly large.
fn seconds(secs: f64) -> Option<Duration> {
    Duration::try_from_secs_f64(secs)
        .ok()
        .filter(|d| *d <= MAX_HINT)
}

/// A Go duration as OpenAI writes its resets: `6m0s`, `1s`, `20ms`, `1.5s`,
/// `1h2m3.5s`: numbers (maybe fractional), each followed by its unit.
fn go_duration(value: &str) -> Option<Duration> {
    let mut rest = value;
    let mut total = 0.0f64;
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "h" => 3600.0,
            "m" => 60.0,
            "s" => 1.0,
            "ms" => 1e-3,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1e-6,
            "ns" => 1e-9,
            _ => return None,
        };
        rest = &rest[unit_len..];
        total += number * scale;
    }
    seconds(total)
}

/// An RFC 3339 time: `2026-11-28T05:39:21Z`, with optional fractional
/// seconds and a `Z` or `+HH:MM` / `-HH:MM` offset.
fn rfc3339(value: &str) -> Option<SystemTime> {
    let split = value
        .len()
        .checked_sub(6)
        .filter(|i| value.is_char_boundary(*i));
    let (local, offset) = match split.map(|i| value.split_at(i)) {
        Some((local, o))
            if (o.starts_with('+') || o.starts_with('-')) && o.get(3..4) == Some(":") =>
        {
            let hours: u64 = o.get(1..3)?.parse().ok()?;
            let minutes: u64 = o.get(4..6)?.parse().ok()?;
            let secs = Duration::from_secs(hours * 3600 + minutes * 60);
            (local, Some((o.starts_with('-'), secs)))
        }
        _ => (value.strip_suffix('Z').unwrap_or(value), None),
    };
    let utc = humantime::parse_rfc3339(&format!("{local}Z")).ok()?;
    match offset {
        // 10:00-05:00 is 15:00 UTC; 10:00+02:00 is 08:00 UTC.
        Some((true, by)) => utc.checked_add(by),
        Some((false, by)) => utc.checked_sub(by),
        None => Some(utc),
    }
}

fn httpdate(value: &str) -> Option<SystemTime> {
    // "Wed, 21 Oct 2015 07:28:00 GMT" is RFC 2822-like; humantime reads RFC 3339.
    let parts: Vec<&str> = value.split_whitespace().collect();
    let [_, day, month, year, time, "GMT"] = parts[..] else {
        return None;
    };
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let m = MONTHS.iter().position(|x| *x == month)? + 1;
    humantime::parse_rfc3339(&format!("{year}-{m:02}-{:0>2}T{time}Z", day)).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.insert(*name, HeaderValue::from_static(value));
        }
        h
    }

    /// 2015-10-21T07:28:00Z, the date in RFC 9110's Retry-After example.
    fn at_example_date() -> SystemTime {
        humantime::parse_rfc3339("2015-10-21T07:28:00Z").unwrap()
    }

    fn hint(pairs: &[(&'static str, &'static str)]) -> Option<Duration> {
        retry_hint_at(429, &headers(pairs), at_example_date())
    }

    const fn secs(n: u64) -> Option<Duration> {
        Some(Duration::from_secs(n))
    }

    #[test]
    fn reads_retry_after_ms() {
        assert_eq!(
            hint(&[("retry-after-ms", "1500")]),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(
            hint(&[("retry-after-ms", "20.5")]),
            Some(Duration::from_micros(20_500))
        );
    }

    #[test]
    fn reads_retry_after_seconds_and_http_dates() {
        assert_eq!(hint(&[("retry-after", "2")]), secs(2));
        assert_eq!(
            hint(&[("retry-after", " 0.5 ")]),
            Some(Duration::from_millis(500))
        );
        assert_eq!(
            hint(&[("retry-after", "Wed, 21 Oct 2015 07:29:30 GMT")]),
            secs(90)
        );
        // A date already past: go now.
        assert_eq!(
            hint(&[("retry-after", "Wed, 21 Oct 2015 07:27:00 GMT")]),
            secs(0)
        );
        assert!(httpdate("Wed, 21 Oct 2015 07:28:00 GMT").is_some());
        assert!(httpdate("Wed, 21 Foo 2015 07:28:00 GMT").is_none());
    }

    #[test]
    fn reads_litellm_retry_after() {
        assert_eq!(hint(&[("llm_provider-retry-after", "60")]), secs(60));
        assert_eq!(
            hint(&[("llm_provider-retry-after", "1.25")]),
            Some(Duration::from_millis(1250))
        );
    }

    #[test]
    fn reads_openai_resets_of_exhausted_quotas() {
        let h = [
            ("x-ratelimit-remaining-requests", "12"),
            ("x-ratelimit-reset-requests", "1s"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ];
        assert_eq!(hint(&h), secs(360));
        // Both exhausted: the later reset.
        let both = [
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "20ms"),
            ("x-ratelimit-remaining-tokens", "0"),
            ("x-ratelimit-reset-tokens", "1.5s"),
        ];
        assert_eq!(hint(&both), Some(Duration::from_millis(1500)));
        let plain = [
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "7"),
        ];
        assert_eq!(hint(&plain), secs(7));
        // A quota with requests left says nothing about when to retry.
        let left = [
            ("x-ratelimit-remaining-tokens", "5"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ];
        assert_eq!(hint(&left), None);
        assert_eq!(
            go_duration("1h2m3.5s"),
            Some(Duration::from_millis(3_723_500))
        );
        assert_eq!(go_duration("250us"), Some(Duration::from_micros(250)));
        for bad in ["", "s", "5", "5x", "1.2.3s", "-1s", "1s-"] {
            assert_eq!(go_duration(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn reads_anthropic_resets() {
        // An exhausted quota's reset is used, on a 429 or a 503.
        let h = [
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2015-10-21T07:28:30Z"),
            ("anthropic-ratelimit-tokens-remaining", "9000"),
            ("anthropic-ratelimit-tokens-reset", "2015-10-21T07:28:05Z"),
        ];
        assert_eq!(hint(&h), secs(30));
        assert_eq!(
            retry_hint_at(503, &headers(&h), at_example_date()),
            secs(30)
        );
        // The latest of the exhausted ones, whatever the offset notation.
        let h = [
            ("anthropic-ratelimit-input-tokens-remaining", "0"),
            (
                "anthropic-ratelimit-input-tokens-reset",
                "2015-10-21T09:28:10.5+02:00",
            ),
            ("anthropic-ratelimit-output-tokens-remaining", "0"),
            (
                "anthropic-ratelimit-output-tokens-reset",
                "2015-10-21T02:28:20-05:00",
            ),
        ];
        assert_eq!(hint(&h), secs(20));
        // Nothing marked exhausted: on a 429 the soonest reset, on a 503 nothing.
        let h = [
            ("anthropic-ratelimit-requests-remaining", "3"),
            ("anthropic-ratelimit-requests-reset", "2015-10-21T07:28:40Z"),
            ("anthropic-ratelimit-tokens-reset", "2015-10-21T07:28:12Z"),
        ];
        assert_eq!(hint(&h), secs(12));
        assert_eq!(retry_hint_at(503, &headers(&h), at_example_date()), None);
        assert!(rfc3339("2015-10-21T07:28:00").is_some());
        for bad in [
            "",
            "tomorrow",
            "2015-10-21T07:28:00+0",
            "2015-10-21T07:28:00+xx:00",
            "2015-13-01T00:00:00Z",
        ] {
            assert_eq!(rfc3339(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_most_specific_hint_wins() {
        let all = [
            ("retry-after-ms", "250"),
            ("retry-after", "2"),
            ("llm_provider-retry-after", "3"),
            ("x-ratelimit-remaining-requests", "0"),
            ("x-ratelimit-reset-requests", "4s"),
            ("anthropic-ratelimit-requests-remaining", "0"),
            ("anthropic-ratelimit-requests-reset", "2015-10-21T07:28:05Z"),
        ];
        assert_eq!(hint(&all), Some(Duration::from_millis(250)));
        assert_eq!(hint(&all[1..]), secs(2));
        assert_eq!(hint(&all[2..]), secs(3));
        // OpenAI's and Anthropic's exhausted quotas together: the later reset.
        assert_eq!(hint(&all[3..]), secs(5));
        assert_eq!(hint(&all[5..]), secs(5));
        // A bad value is skipped, and the next header in line is read.
        let h = [
            ("retry-after-ms", "soon"),
            ("retry-after", "NaN"),
            ("llm_provider-retry-after", "9"),
        ];
        assert_eq!(hint(&h), secs(9));
    }

    #[test]
    fn hints_apply_only_to_throttling_answers() {
        let h = headers(&[("retry-after", "2")]);
        let now = at_example_date();
        assert_eq!(retry_hint_at(429, &h, now), secs(2));
        assert_eq!(retry_hint_at(503, &h, now), secs(2));
        for status in [200, 400, 500, 502] {
            assert_eq!(retry_hint_at(status, &h, now), None, "{status}");
        }
    }

    #[test]
    fn bad_hints_are_ignored_never_a_panic() {
        for value in [
            "-1",
            "-0.5",
            "NaN",
            "nan",
            "inf",
            "-inf",
            "1e20",
            "1e400",
            "86401",
            "",
            " ",
            "soon",
            "Wed, 21 Oct 9999 07:28:00 GMT",
            "Wed, 32 Oct 2015 07:28:00 GMT",
            "\u{2603}",
        ] {
            for name in ["retry-after-ms", "retry-after", "llm_provider-retry-after"] {
                let mut h = HeaderMap::new();
                if let Ok(v) = HeaderValue::from_str(value) {
                    h.insert(name, v);
                }
                let got = retry_hint_at(429, &h, at_example_date());
                let ok = got.is_none() || (name == "retry-after-ms" && value == "86401");
                assert!(ok, "{name}: {value:?} gave {got:?}");
            }
            let mut h = HeaderMap::new();
            h.insert(
                "x-ratelimit-remaining-requests",
                HeaderValue::from_static("0"),
            );
            h.insert(
                "anthropic-ratelimit-requests-remaining",
                HeaderValue::from_static("0"),
            );
            if let Ok(v) = HeaderValue::from_str(value) {
                h.insert("x-ratelimit-reset-requests", v.clone());
                h.insert("anthropic-ratelimit-requests-reset", v);
            }
            assert_eq!(retry_hint_at(429, &h, at_example_date()), None, "{value:?}");
        }
        // Not text at all.
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_bytes(b"\xff\xfe").unwrap());
        assert_eq!(retry_hint_at(429, &h, at_example_date()), None);
    }
}
