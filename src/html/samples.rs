//! The samples as compact JSON for the page's sample browser, streamed.
//!
//! Shape (read by `page.js`):
//! `{"evals":[{"label":L,"evaluators":[N,...]}],"rows":[[eval, id, prompt,
//! output, variables, scores, passed, reasons, error_kind, error, latency_s,
//! attempts], ...]}`; `scores`, `passed` and `reasons` hold one entry per
//! evaluator of the row's evaluation (null: not scored / no reason).

use std::io::{self, Write};

use serde::Serialize;
use serde_json::Value;

use super::Evaluation;

/// One evaluation's samples, under a label.
pub struct Source<'a> {
    pub label: String,
    pub evaluation: &'a Evaluation,
}

/// Writes JSON with every `<` as `\u003c`: serde_json writes `<` only inside
/// strings, where the escape means the same, and the HTML parser then never
/// sees `</script` or `<!--` in the data.
pub struct ScriptSafe<W>(pub W);

impl<W: Write> Write for ScriptSafe<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut rest = buf;
        while let Some(i) = rest.iter().position(|&b| b == b'<') {
            self.0.write_all(&rest[..i])?;
            self.0.write_all(b"\\u003c")?;
            rest = &rest[i + 1..];
        }
        self.0.write_all(rest)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[derive(Serialize)]
struct Header<'a> {
    label: &'a str,
    evaluators: Vec<&'a str>,
}

/// Writes the samples of `sources`, one row at a time.
pub fn write_json(out: &mut impl Write, sources: &[Source<'_>]) -> io::Result<()> {
    let headers: Vec<Header<'_>> = sources
        .iter()
        .map(|s| Header {
            label: &s.label,
            evaluators: s
                .evaluation
                .view
                .evaluators
                .iter()
                .map(|e| e.name.as_str())
                .collect(),
        })
        .collect();
    out.write_all(b"{\"evals\":")?;
    serde_json::to_writer(&mut *out, &headers)?;
    out.write_all(b",\"rows\":[")?;
    let mut first = true;
    for (k, source) in sources.iter().enumerate() {
        for s in &source.evaluation.samples {
            if !first {
                out.write_all(b",")?;
            }
            first = false;
            let scores: Vec<Option<f64>> = s
                .scores
                .iter()
                .map(|x| x.as_ref().map(|x| x.value))
                .collect();
            let passed: Vec<Option<bool>> = s
                .scores
                .iter()
                .map(|x| x.as_ref().map(|x| x.passed))
                .collect();
            let reasons: Vec<Option<&str>> = s
                .scores
                .iter()
                .map(|x| x.as_ref().and_then(|x| x.reason.as_deref()))
                .collect();
            let row = (
                k,
                &s.key,
                prompt_text(&s.prompt),
                &s.output,
                variables(&s.variables),
                scores,
                passed,
                reasons,
                &s.error_kind,
                &s.error,
                s.call.latency_us.map(|v| v as f64 / 1e6),
                s.call.attempts,
            );
            serde_json::to_writer(&mut *out, &row)?;
        }
    }
    out.write_all(b"]}")
}

/// The prompt as read: a string as is, a list of messages as `role: content`
/// paragraphs; anything else as stored.
fn prompt_text(stored: &str) -> String {
    match serde_json::from_str::<Value>(stored) {
        Ok(Value::String(s)) => s,
        Ok(Value::Array(messages)) => messages
            .iter()
            .map(|m| {
                let field = |k: &str| m.get(k).and_then(Value::as_str).unwrap_or_default();
                format!("{}: {}", field("role"), field("content"))
            })
            .collect::<Vec<_>>()
            .join("\n\n"),
        _ => stored.to_owned(),
    }
}

/// The row's variables as JSON, or the stored text when it is not JSON.
fn variables(stored: &str) -> Value {
    serde_json::from_str(stored).unwrap_or_else(|_| Value::String(stored.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn script_safe_escapes_every_less_than() {
        let mut out = Vec::new();
        serde_json::to_writer(ScriptSafe(&mut out), &"</script><!--").unwrap();
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text, r#""\u003c/script>\u003c!--""#);
        let back: String = serde_json::from_str(&text).unwrap();
        assert_eq!(back, "</script><!--");
    }

    #[test]
    fn prompts_read_as_text() {
        assert_eq!(prompt_text(r#""hi""#), "hi");
        assert_eq!(
            prompt_text(
                r#"[{"role":"system","content":"be brief"},{"role":"user","content":"hi"}]"#
            ),
            "system: be brief\n\nuser: hi"
        );
        assert_eq!(prompt_text(""), "");
    }
}
