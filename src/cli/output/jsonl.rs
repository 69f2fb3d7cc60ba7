//! Export's JSON lines: one record per line.

use std::collections::BTreeMap;
use std::io::{self, Write};

use serde::Serialize;

use super::{Of, Sink};
use crate::view::{CallUsageView, JudgeCallView, RecordView};

/// One JSON object per line: a record of `show --full --format json` with
/// `evaluation` and `repeat`, and every key present on every line (empty
/// `reasons` and `judges` included), so tools infer one schema.
#[derive(Serialize)]
struct Line<'a> {
    evaluation: &'a str,
    /// A cell of a matrix: each axis's label by path.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    matrix: &'a BTreeMap<String, String>,
    id: &'a str,
    index: u64,
    repeat: u32,
    variables: &'a serde_json::Value,
    prompt: &'a serde_json::Value,
    output: &'a Option<String>,
    scores: &'a serde_json::Map<String, serde_json::Value>,
    passed: &'a serde_json::Map<String, serde_json::Value>,
    reasons: &'a serde_json::Map<String, serde_json::Value>,
    error_kind: &'a Option<String>,
    error: &'a Option<String>,
    cached: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    endpoint: &'a Option<String>,
    attempts: u32,
    latency_seconds: Option<f64>,
    start_seconds: f64,
    end_seconds: f64,
    #[serde(flatten)]
    usage: CallUsageView,
    judges: &'a BTreeMap<String, JudgeCallView>,
}

impl<'a> Line<'a> {
    fn new(of: &Of<'a>, r: &'a RecordView) -> Line<'a> {
        Line {
            evaluation: of.evaluation,
            matrix: of.cell,
            id: &r.id,
            index: r.index,
            repeat: of.repeat,
            variables: &r.variables,
            prompt: &r.prompt,
            output: &r.output,
            scores: &r.scores,
            passed: &r.passed,
            reasons: &r.reasons,
            error_kind: &r.error_kind,
            error: &r.error,
            cached: r.cached,
            endpoint: &r.endpoint,
            attempts: r.attempts,
            latency_seconds: r.latency_seconds,
            start_seconds: r.start_seconds,
            end_seconds: r.end_seconds,
            usage: r.usage,
            judges: &r.judges,
        }
    }
}

pub struct Jsonl<W: Write> {
    pub out: W,
}

impl<W: Write> Sink for Jsonl<W> {
    fn start(&mut self) -> io::Result<()> {
        Ok(())
    }

    fn write(&mut self, of: &Of<'_>, r: &RecordView) -> io::Result<()> {
        serde_json::to_writer(&mut self.out, &Line::new(of, r))?;
        self.out.write_all(b"\n")
    }

    fn finish(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field of a `show --full` record is on an export line.
    #[test]
    fn a_line_carries_every_record_field() {
        let mut judges = BTreeMap::new();
        judges.insert(
            "j".to_string(),
            JudgeCallView {
                prompt: serde_json::json!([]),
                reply: None,
                score: None,
                reason: None,
                error: None,
                attempts: 1,
                throttled: 0,
                wait_seconds: 0.0,
                queue_seconds: 0.0,
                latency_seconds: None,
                usage: CallUsageView::default(),
            },
        );
        let mut reasons = serde_json::Map::new();
        reasons.insert("j".into(), "why".into());
        let r = RecordView {
            id: "a".into(),
            index: 0,
            variables: serde_json::json!({}),
            prompt: serde_json::json!("p"),
            output: None,
            scores: serde_json::Map::new(),
            passed: serde_json::Map::new(),
            reasons,
            error_kind: None,
            error: None,
            cached: false,
            endpoint: None,
            attempts: 1,
            latency_seconds: None,
            start_seconds: 0.0,
            end_seconds: 0.0,
            usage: CallUsageView::default(),
            judges,
        };
        let record = serde_json::to_value(&r).unwrap();
        let cell = BTreeMap::new();
        let of = Of {
            evaluation: "e",
            repeat: 0,
            cell: &cell,
        };
        let line = serde_json::to_value(Line::new(&of, &r)).unwrap();
        for (k, v) in record.as_object().unwrap() {
            assert_eq!(line.get(k), Some(v), "{k}");
        }
        assert!(line.get("matrix").is_none(), "no cell, no `matrix`");
    }
}
