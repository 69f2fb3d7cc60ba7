use super::*;

const GOOD: &str = r#"name: sentiment
dataset:
  columns: [text, expected]
  rows:
    - ["This movie is absolutely amazing!", positive]
    - {text: "Terrible plot", expected: negative}
model:
  provider: mock
  latency: 1s
  replies:
    - {when_contains: [great, amazing], reply: positive}
    - {reply: neutral}
prompt: "Classify: {{ text }}"
evaluators:
  - type: exact_match
    expected: "{{ expected }}"
"#;

fn check(text: &str) -> Result<Evaluation, Diagnostic> {
    from_text(Path::new("evals/t.yaml"), text.to_owned())
}

#[test]
fn loads_a_good_spec() {
    let e = check(GOOD).unwrap();
    assert_eq!(e.name, "sentiment");
    assert_eq!(e.concurrency, StrategySpec::SlidingWindow(4));
    assert_eq!(
        e.required_columns.iter().collect::<Vec<_>>(),
        ["expected", "text"]
    );
    let mock = e.model.mock().unwrap();
    assert_eq!(mock.latency, Duration::from_secs(1));
    assert_eq!(mock.reply("An AMAZING film"), "positive");
    assert_eq!(mock.reply("meh"), "neutral");
}

#[test]
fn unknown_key_is_located_with_suggestion() {
    let err = check(&GOOD.replace("prompt:", "promt:")).unwrap_err();
    assert_eq!((err.line, err.column), (13, 1), "{err}");
    assert_eq!(err.message, "unknown key `promt`");
    assert_eq!(err.hint.as_deref(), Some("did you mean `prompt`?"));
}

#[test]
fn nested_unknown_key_and_variant() {
    let err = check(&GOOD.replace("  latency: 1s", "  latancy: 1s")).unwrap_err();
    assert_eq!((err.line, err.column), (9, 3), "{err}");
    assert_eq!(err.message, "unknown key `latancy` in `model`");
    assert!(err.hint.unwrap().contains("latency"));
    let err = check(&GOOD.replace("provider: mock", "provider: mok")).unwrap_err();
    assert_eq!(err.line, 8, "{err}");
    assert!(err.hint.unwrap().contains("mock"));
}

#[test]
fn unknown_template_variable_is_located() {
    let err = check(&GOOD.replace("{{ text }}", "{{ txt }}")).unwrap_err();
    assert_eq!((err.line, err.column), (13, 9), "{err}");
    assert!(err.message.contains("`txt`"), "{err}");
    assert!(err.hint.unwrap().contains("did you mean `text`"));
}

#[test]
fn evaluator_argument_errors_are_located() {
    let err = check(&GOOD.replace("type: exact_match", "type: exact_mach")).unwrap_err();
    assert_eq!((err.line, err.column), (15, 5), "{err}");
    let err =
        check(&GOOD.replace("{{ expected }}\"", "{{ expected }}\"\n    pattern: x")).unwrap_err();
    assert_eq!((err.line, err.column), (17, 5), "{err}");
}

#[test]
fn wrong_type_is_located() {
    let err = check(&GOOD.replace("latency: 1s", "latency: soon")).unwrap_err();
    assert_eq!(err.line, 9, "{err}");
    assert!(err.message.contains("invalid duration"), "{err}");
}

#[test]
fn yaml_syntax_error_has_position() {
    let err = check("name: [unclosed\nmodel: x\n").unwrap_err();
    assert!(err.line >= 1, "{err}");
}

#[test]
fn identity_ignores_concurrency_and_latency() {
    let a = check(GOOD).unwrap();
    let b = check(&format!(
        "{}concurrency: {{max_concurrency: 8}}\n",
        GOOD.replace("latency: 1s", "latency: 2s")
    ))
    .unwrap();
    assert_eq!(a.spec_hash, b.spec_hash);
    let c = check(&GOOD.replace("Classify:", "Label:")).unwrap();
    assert_ne!(a.spec_hash, c.spec_hash);
    assert_eq!(
        changed_parts(&a.identity, &c.identity),
        vec!["prompt".to_string()]
    );
}

/// An experiment stored when an entry's `timeout` still counted resumes:
/// the stored identity is compared under today's rules.
#[test]
fn a_stored_identity_is_compared_under_todays_rules() {
    let now = check(GOOD).unwrap().identity;
    let mut stored = now.clone();
    stored["evaluators"][0]["timeout"] = serde_json::json!("1s");
    stored["evaluators"][0]["workers"] = serde_json::json!(2);
    assert_ne!(stored, now);
    assert!(same_results(&stored, &now));
    stored["evaluators"][0]["expected"] = serde_json::json!("{{ other }}");
    assert!(!same_results(&stored, &now), "a real change still counts");
}

#[test]
fn concurrency_rules() {
    let e = check(&format!("{GOOD}concurrency: {{strategy: sequential}}\n")).unwrap();
    assert_eq!(e.concurrency, StrategySpec::Sequential);
    let err = check(&format!(
        "{GOOD}concurrency: {{strategy: sequential, max_concurrency: 4}}\n"
    ))
    .unwrap_err();
    assert!(err.hint.unwrap().contains("sliding_window"));
}

#[test]
fn retry_max_wait_defaults_parses_and_is_located_when_bad() {
    let e = check(GOOD).unwrap();
    assert_eq!(e.model.retry, RetryPolicy::default());
    assert_eq!(e.model.retry.max_wait, Duration::from_secs(300));
    let with = |retry: &str| GOOD.replace("  latency: 1s\n", &format!("  latency: 1s\n{retry}"));
    let e = check(&with("  retry: {max_attempts: 2, max_wait: 90s}\n")).unwrap();
    assert_eq!(e.model.retry.max_wait, Duration::from_secs(90));
    assert_eq!(e.model.retry.max_attempts, 2);
    assert_eq!(
        e.model.retry.max_backoff,
        RetryPolicy::default().max_backoff
    );
    // Zero is allowed: give up on the first 429.
    let e = check(&with("  retry: {max_wait: 0s}\n")).unwrap();
    assert_eq!(e.model.retry.max_wait, Duration::ZERO);
    let e = check(&with("  retry: {max_wait: 1.5}\n")).unwrap();
    assert_eq!(e.model.retry.max_wait, Duration::from_millis(1500));

    let err = check(&with("  retry:\n    max_attempts: 2\n    max_wait: soon\n")).unwrap_err();
    assert_eq!((err.line, err.column), (12, 15), "{err}");
    assert!(err.message.contains("invalid duration"), "{err}");
    let err = check(&with("  retry: {max_wait: -5}\n")).unwrap_err();
    assert_eq!(err.line, 10, "{err}");
    assert!(err.message.contains("invalid duration"), "{err}");
    let err = check(&with("  retry:\n    max_wiat: 1m\n")).unwrap_err();
    assert_eq!((err.line, err.column), (11, 5), "{err}");
    assert_eq!(err.hint.as_deref(), Some("did you mean `max_wait`?"));
    // Retry settings may change between runs of one experiment.
    assert_eq!(
        check(GOOD).unwrap().spec_hash,
        check(&with("  retry: {max_wait: 1m}\n")).unwrap().spec_hash
    );
}

#[test]
fn an_evaluator_name_yaml_types_as_a_number_or_boolean_is_taken_as_written() {
    // `name: 2024` read as the text `2024` before evaluator entries were a
    // tagged enum, and specs stored with such names must load and resume.
    for (written, name) in [("2024", "2024"), ("true", "true"), ("-7", "-7")] {
        let spec = |value: &str| {
            GOOD.replace(
                "  - type: exact_match\n",
                &format!("  - type: exact_match\n    name: {value}\n"),
            )
        };
        let plain = check(&spec(written)).unwrap_or_else(|e| panic!("{written}: {e}"));
        let quoted = check(&spec(&format!("\"{written}\""))).unwrap();
        assert_eq!(plain.evaluators[0].name, name);
        assert_eq!(plain.spec_hash, quoted.spec_hash, "{written}");
    }
}

#[test]
fn a_threshold_is_part_of_the_identity_and_absent_when_unset() {
    // Passes are stored as decided by the threshold, so a changed threshold is a
    // changed evaluation; a spec without one hashes as it did before thresholds.
    let plain = check(GOOD).unwrap();
    assert!(
        plain.identity["evaluators"][0].get("threshold").is_none(),
        "{}",
        plain.identity
    );
    let with = |t: &str| {
        GOOD.replace(
            "    expected: \"{{ expected }}\"\n",
            &format!("    expected: \"{{{{ expected }}}}\"\n    threshold: {t}\n"),
        )
    };
    let half = check(&with("0.5")).unwrap();
    assert_eq!(half.evaluators[0].threshold, 0.5);
    assert_eq!(plain.evaluators[0].threshold, 1.0);
    assert_ne!(plain.spec_hash, half.spec_hash);
    assert_eq!(
        changed_parts(&plain.identity, &half.identity),
        vec!["evaluators".to_string()]
    );
    let err = check(&with("1.01")).unwrap_err();
    assert_eq!((err.line, err.column), (17, 5), "{err}");
    assert_eq!(err.message, "threshold 1.01 is outside [0, 1]");
}
