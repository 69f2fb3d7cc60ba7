//! Jinja templates (minijinja) for prompts, messages and evaluator arguments.
//!
//! Each template is compiled when the spec is loaded, so a syntax error or an
//! unknown variable is found before any request; rendering a sample is then a
//! plain render. Text without any Jinja markup skips the engine entirely.

use std::collections::BTreeSet;
use std::sync::Arc;

use minijinja::{Environment, UndefinedBehavior, Value};

const NAME: &str = "t";

/// A compiled template, cheap to clone and safe to render from any thread.
#[derive(Clone)]
pub struct Template {
    source: Arc<str>,
    /// `None` for literal text.
    env: Option<Arc<Environment<'static>>>,
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
        env.add_template_owned(NAME, source.to_owned())
            .map_err(|e| TemplateError {
                message: e.detail().unwrap_or("invalid template").to_owned(),
                line: e.line(),
            })?;
        Ok(Template {
            source: source.into(),
            env: Some(Arc::new(env)),
        })
    }

    /// Variables the template reads from its context (loop variables and `set` excluded).
    pub fn variables(&self) -> BTreeSet<String> {
        let Some(env) = &self.env else {
            return BTreeSet::new();
        };
        match env.get_template(NAME) {
            Ok(t) => t.undeclared_variables(false).into_iter().collect(),
            Err(_) => BTreeSet::new(),
        }
    }

    /// Renders with `ctx`; the error is minijinja's message.
    pub fn render(&self, ctx: &Value) -> Result<String, String> {
        let Some(env) = &self.env else {
            return Ok(self.source.to_string());
        };
        let template = env.get_template(NAME).map_err(|e| e.to_string())?;
        template.render(ctx).map_err(|e| match e.detail() {
            Some(detail) => format!("{}: {detail}", e.kind()),
            None => e.kind().to_string(),
        })
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
}
