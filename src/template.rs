//! Jinja templates (minijinja) for prompts, messages and evaluator arguments.
//!
//! Each template is compiled when the spec is loaded, so a syntax error or an
//! unknown variable is found before any request; rendering a sample is then a
//! plain render. Text without any Jinja markup skips the engine entirely.
//!
//! Rendering is bounded: a render may take at most [`MAX_STEPS`] engine steps and
//! write at most [`MAX_OUTPUT_BYTES`], so a runaway template (three nested loops
//! over a long text) fails its sample quickly instead of holding a worker for ever.
//! The runner first renders within [`INLINE_STEPS`] on its async worker (real
//! prompts take a few thousand steps, about 10 µs) and only a render that needs
//! more goes to a blocking thread with the full budget, so a heavy template
//! never stalls the workers that carry requests.

use std::collections::BTreeSet;
use std::sync::{Arc, LazyLock};

use minijinja::{Environment, ErrorKind, UndefinedBehavior, Value};

const NAME: &str = "t";

/// The most engine steps (minijinja "fuel": about one per instruction) one render may
/// take. A long realistic prompt (system text, 100 few-shot examples in a loop with
/// filters and conditions, a 3,000-character column) takes about 2,000; this leaves
/// room for templates 500 times busier, and fails a runaway one within a fraction
/// of a second.
pub const MAX_STEPS: u64 = 1_000_000;

/// The most steps a render may take on an async worker before it is moved to a
/// blocking thread (a few-shot loop over 100 examples takes about 2,300).
pub const INLINE_STEPS: u64 = 20_000;

/// How much work a render may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Budget {
    /// [`INLINE_STEPS`]: running out is [`RenderError::OverInline`], not a failure.
    Inline,
    /// [`MAX_STEPS`]: running out fails the render.
    Full,
}

/// The most text one render may produce: four times the largest row we read.
pub const MAX_OUTPUT_BYTES: usize = 4 * crate::dataset::MAX_ROW_BYTES;

/// The name under which every row is given whole, as a mapping, for columns whose
/// names are not identifiers: `{{ row["review text"] }}`.
pub const ROW: &str = "row";

/// Names minijinja itself defines (`range`, `dict`, `namespace`, `debug`): usable in
/// any template without being a dataset column.
static BUILTINS: LazyLock<BTreeSet<String>> = LazyLock::new(|| {
    Environment::new()
        .globals()
        .map(|(name, _)| name.to_owned())
        .collect()
});

/// Whether `name` is one of the engine's own globals (see [`BUILTINS`]).
pub fn is_builtin(name: &str) -> bool {
    BUILTINS.contains(name)
}

/// Whether `name` can be written bare in a template (`{{ name }}`).
pub fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// How a template reads column `name`: `name`, or `row["name"]` when it is not an identifier.
pub fn column_reference(name: &str) -> String {
    if is_identifier(name) {
        name.to_owned()
    } else {
        format!("{ROW}[{}]", serde_json::Value::String(name.to_owned()))
    }
}

/// The variables of one row: every column by name, and the whole row as [`ROW`]
/// (unless a column is itself named `row`; then that column wins).
pub fn context(values: &serde_json::Map<String, serde_json::Value>) -> Value {
    let columns = Value::from_serialize(values);
    if values.contains_key(ROW) {
        return columns;
    }
    minijinja::context! { row => columns.clone(), ..columns }
}

/// `text` in a Markdown code fence longer than any run of backticks inside it,
/// so nothing in `text` can close the block (how a judge's prompt keeps an
/// output from writing instructions after its data; `{{ output | fence }}`).
pub fn fence(text: &str) -> String {
    let longest = text.split(|c| c != '`').map(str::len).max().unwrap_or(0);
    let fence = "`".repeat(longest.max(2) + 1);
    format!("{fence}\n{text}\n{fence}")
}

/// A compiled template, cheap to clone and safe to render from any thread.
#[derive(Clone)]
pub struct Template {
    source: Arc<str>,
    /// `None` for literal text.
    env: Option<Arc<Engines>>,
}

/// One compiled template in two environments that differ only in their fuel.
#[derive(Debug)]
struct Engines {
    full: Environment<'static>,
    inline: Environment<'static>,
}

/// A template that does not compile: minijinja's message and the 1-based line
/// within the template where it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    pub message: String,
    pub line: Option<usize>,
}

impl Template {
    /// Compiles `source`.
    pub fn compile(source: &str) -> Result<Self, TemplateError> {
        let is_literal = !source.contains("{{") && !source.contains("{%") && !source.contains("{#");
        if is_literal {
            return Ok(Template {
                source: source.into(),
                env: None,
            });
        }
        let mut env = Environment::new();
        // A missing variable is an error, never silently empty text.
        env.set_undefined_behavior(UndefinedBehavior::Strict);
        env.set_keep_trailing_newline(true);
        env.set_fuel(Some(MAX_STEPS));
        env.add_filter("fence", |text: String| fence(&text));
        env.add_template_owned(NAME, source.to_owned())
            .map_err(|e| TemplateError {
                message: e.detail().unwrap_or("invalid template").to_owned(),
                line: e.line(),
            })?;
        let mut inline = env.clone();
        inline.set_fuel(Some(INLINE_STEPS));
        Ok(Template {
            source: source.into(),
            env: Some(Arc::new(Engines { full: env, inline })),
        })
    }

    /// Variables the template reads from its context (loop variables and `set` excluded).
    pub fn variables(&self) -> BTreeSet<String> {
        let Some(env) = &self.env else {
            return BTreeSet::new();
        };
        match env.full.get_template(NAME) {
            Ok(t) => t.undeclared_variables(false).into_iter().collect(),
            Err(_) => BTreeSet::new(),
        }
    }

    /// Whether some `{{ ... }}` of the template shows `var` without passing
    /// it through the `fence` filter (text that could then pose as the
    /// template's own).
    pub fn shows_unfenced(&self, var: &str) -> bool {
        let pattern = format!(r"\b{}\b", regex::escape(var));
        let fenced = format!(r"\b{}\s*\|\s*fence\b", regex::escape(var));
        let (Ok(uses), Ok(fenced)) = (regex::Regex::new(&pattern), regex::Regex::new(&fenced))
        else {
            return false;
        };
        let mut rest = &*self.source;
        while let Some(start) = rest.find("{{") {
            let Some(len) = rest[start..].find("}}") else {
                break;
            };
            let expression = &rest[start + 2..start + len];
            if uses.find_iter(expression).count() > fenced.find_iter(expression).count() {
                return true;
            }
            rest = &rest[start + len + 2..];
        }
        false
    }

    /// The text of a template without any Jinja markup, which renders as itself.
    pub fn literal(&self) -> Option<&str> {
        self.env.is_none().then_some(&*self.source)
    }

    /// Renders with `ctx` (see [`context`]), within [`MAX_STEPS`] and
    /// [`MAX_OUTPUT_BYTES`]; the error is minijinja's message.
    pub fn render(&self, ctx: &Value) -> Result<String, String> {
        self.render_checked(ctx).map_err(|e| e.to_string())
    }

    /// [`render`](Self::render), telling a template that does too much work from
    /// one that fails on this row's values.
    pub fn render_checked(&self, ctx: &Value) -> Result<String, RenderError> {
        self.render_within(ctx, Budget::Full)
    }

    /// [`render_checked`](Self::render_checked) within `budget`.
    pub fn render_within(&self, ctx: &Value, budget: Budget) -> Result<String, RenderError> {
        let Some(env) = &self.env else {
            return Ok(self.source.to_string());
        };
        let env = match budget {
            Budget::Full => &env.full,
            Budget::Inline => &env.inline,
        };
        let template = env
            .get_template(NAME)
            .map_err(|e| RenderError::Failed(e.to_string()))?;
        let mut out = Capped {
            buf: Vec::with_capacity(self.source.len() * 2),
            full: false,
        };
        match template.render_captured_to(ctx, &mut out) {
            Ok(_) => String::from_utf8(out.buf).map_err(|e| RenderError::Failed(e.to_string())),
            Err(_) if out.full => Err(RenderError::TooMuchWork(format!(
                "template output is longer than {} MiB",
                MAX_OUTPUT_BYTES / (1024 * 1024)
            ))),
            Err(e) if e.kind() == ErrorKind::OutOfFuel && budget == Budget::Inline => {
                Err(RenderError::OverInline)
            }
            Err(e) if e.kind() == ErrorKind::OutOfFuel => Err(RenderError::TooMuchWork(format!(
                "template used more than {MAX_STEPS} steps (nested loops over a long text or list?)"
            ))),
            Err(e) => Err(RenderError::Failed(match e.detail() {
                Some(detail) => format!("{}: {detail}", e.kind()),
                None => e.kind().to_string(),
            })),
        }
    }
}

/// Why a render failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderError {
    /// More than [`MAX_STEPS`] steps or [`MAX_OUTPUT_BYTES`] of text: the template
    /// itself is at fault, whatever the row.
    TooMuchWork(String),
    /// Anything else minijinja reports (an undefined value, a bad filter argument).
    Failed(String),
    /// More than [`INLINE_STEPS`] with [`Budget::Inline`]: render it again with
    /// [`Budget::Full`], off the async workers.
    OverInline,
}

impl std::fmt::Display for RenderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RenderError::TooMuchWork(m) | RenderError::Failed(m) => f.write_str(m),
            RenderError::OverInline => write!(f, "template used more than {INLINE_STEPS} steps"),
        }
    }
}

/// A buffer that refuses to grow past [`MAX_OUTPUT_BYTES`].
struct Capped {
    buf: Vec<u8>,
    full: bool,
}

impl std::io::Write for Capped {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if self.buf.len() + data.len() > MAX_OUTPUT_BYTES {
            self.full = true;
            return Err(std::io::Error::other("template output too long"));
        }
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl std::fmt::Debug for Template {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Template").field(&self.source).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_output_shown_without_its_fence_is_found() {
        let shows = |src: &str| Template::compile(src).unwrap().shows_unfenced("output");
        assert!(shows("Grade: {{ output }}"));
        assert!(shows("{{ output | fence }} then {{ output|upper }}"));
        assert!(shows("{{ output ~ output | fence }}"));
        assert!(!shows("Grade: {{ output | fence }} {{ output|fence }}"));
        assert!(!shows("{{ outputs }} {{ my_output }} and output in prose"));
    }

    #[test]
    fn a_fence_outlasts_every_backtick_run() {
        assert_eq!(fence("plain"), "```\nplain\n```");
        assert_eq!(fence("a ```` b"), "`````\na ```` b\n`````");
        let t = Template::compile("{{ output | fence }}").unwrap();
        assert_eq!(
            t.render(&minijinja::context! { output => "x ``` y" })
                .unwrap(),
            "````\nx ``` y\n````"
        );
    }

    #[test]
    fn renders_and_lists_variables() {
        let t =
            Template::compile("Review: {{ text | upper }}{% for x in items %}{{ x }}{% endfor %}")
                .unwrap();
        assert_eq!(
            t.variables().into_iter().collect::<Vec<_>>(),
            vec!["items", "text"]
        );
        let out = t
            .render(&minijinja::context! { text => "ok", items => vec![1, 2] })
            .unwrap();
        assert_eq!(out, "Review: OK12");
    }

    #[test]
    fn literal_text_renders_as_is() {
        let t = Template::compile("positive").unwrap();
        assert!(t.variables().is_empty());
        assert_eq!(t.render(&minijinja::context! {}).unwrap(), "positive");
    }

    #[test]
    fn missing_variable_is_an_error() {
        let t = Template::compile("{{ nope }}").unwrap();
        assert!(t.render(&minijinja::context! {}).is_err());
    }

    #[test]
    fn syntax_error_has_line() {
        let err = Template::compile("a\n{{ oops").unwrap_err();
        assert!(!err.message.is_empty());
        assert_eq!(err.line, Some(2));
    }

    /// A long prompt of the kind people write: a system text, few-shot examples
    /// in a loop with filters and a condition, and a 3,000-character column.
    const REALISTIC: &str = "You are a careful annotator. Read the review and answer with one word.\n\
        {% for ex in examples %}Example {{ loop.index }}:\nReview: {{ ex.text | trim }}\n\
        {% if ex.label == 'positive' %}Answer: positive{% else %}Answer: {{ ex.label | lower }}{% endif %}\n\
        {% endfor %}Now this one ({{ text | length }} characters):\n{{ text }}\n\
        {% if hint %}Hint: {{ hint | upper }}{% endif %}Answer:";

    fn realistic_context() -> Value {
        let examples: Vec<_> = (0..100)
            .map(|i| {
                minijinja::context! {
                    text => format!("  review number {i} with some words  "),
                    label => if i % 2 == 0 { "positive" } else { "NEGATIVE" },
                }
            })
            .collect();
        minijinja::context! { examples => examples, text => "x".repeat(3000), hint => "be brief" }
    }

    #[test]
    fn a_realistic_long_prompt_stays_far_under_the_step_budget() {
        let t = Template::compile(REALISTIC).unwrap();
        let env = t.env.as_ref().unwrap();
        let template = env.full.get_template(NAME).unwrap();
        let captured = template.render_captured(realistic_context()).unwrap();
        let (used, _) = captured.state().fuel_levels().unwrap();
        println!("a realistic long prompt used {used} steps of {MAX_STEPS}");
        assert!(used * 100 < MAX_STEPS, "used {used} steps");
        assert!(used * 4 < INLINE_STEPS, "renders inline: {used} steps");
        assert!(t
            .render_within(&realistic_context(), Budget::Inline)
            .is_ok());
    }

    #[test]
    fn heavy_templates_leave_the_inline_budget_and_finish_with_the_full_one() {
        // 300 x 300 iterations: legal, but too much for an async worker.
        let t =
            Template::compile("{% for a in text %}{% for b in text %}{% endfor %}{% endfor %}done")
                .unwrap();
        let ctx = minijinja::context! { text => "x".repeat(300) };
        assert_eq!(
            t.render_within(&ctx, Budget::Inline),
            Err(RenderError::OverInline)
        );
        assert_eq!(t.render_within(&ctx, Budget::Full).as_deref(), Ok("done"));
    }

    #[test]
    fn a_runaway_template_fails_quickly_with_the_step_budget() {
        let t = Template::compile(
            "{% for a in text %}{% for b in text %}{% for c in text %}{% endfor %}{% endfor %}{% endfor %}",
        )
        .unwrap();
        let started = std::time::Instant::now();
        let err = t
            .render(&minijinja::context! { text => "x".repeat(3000) })
            .unwrap_err();
        assert!(
            err.contains(&format!("template used more than {MAX_STEPS} steps")),
            "{err}"
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
    }

    #[test]
    fn output_is_capped() {
        let t = Template::compile("{% for i in range(100000) %}{{ text }}{% endfor %}").unwrap();
        let err = t
            .render(&minijinja::context! { text => "x".repeat(3000) })
            .unwrap_err();
        assert!(err.contains("template output is longer than"), "{err}");
    }

    #[test]
    fn the_row_mapping_reads_any_column_name() {
        let values: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(r#"{"review text": "good", "note-1": "a", "naïve": "b", "n": 1}"#)
                .unwrap();
        let t = Template::compile(r#"{{ row["review text"] }} {{ row["note-1"] }} {{ row["naïve"] }} {{ n }} {{ row.n }}"#)
            .unwrap();
        assert_eq!(
            t.variables().into_iter().collect::<Vec<_>>(),
            vec!["n", "row"]
        );
        assert_eq!(t.render(&context(&values)).unwrap(), "good a b 1 1");
        // A column named `row` wins over the mapping.
        let values: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(r#"{"row": "mine"}"#).unwrap();
        assert_eq!(
            Template::compile("{{ row }}")
                .unwrap()
                .render(&context(&values))
                .unwrap(),
            "mine"
        );
    }

    #[test]
    fn builtins_and_references() {
        for name in ["range", "dict", "namespace", "debug"] {
            assert!(is_builtin(name), "{name}");
        }
        assert!(!is_builtin("text"));
        assert_eq!(column_reference("text_1"), "text_1");
        assert_eq!(column_reference("review text"), r#"row["review text"]"#);
        assert_eq!(column_reference("naïve"), r#"row["naïve"]"#);
        assert_eq!(column_reference("1st"), r#"row["1st"]"#);
        assert_eq!(column_reference(r#"say "hi""#), r#"row["say \"hi\""]"#);
    }
}
