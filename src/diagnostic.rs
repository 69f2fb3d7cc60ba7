//! A problem in the user's input (spec or dataset) pinned to file, line and column.
//!
//! Everything that can be wrong before the first request is sent ends up as a
//! `Diagnostic`; `main` prints it rustc-style with the offending source line and
//! exits 2. This module knows nothing about specs or datasets themselves.

use std::fmt;
use std::path::{Path, PathBuf};

/// One located input error, with an optional hint saying what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// The file at fault.
    pub file: PathBuf,
    /// 1-based line; 0 when the whole file is at fault.
    pub line: usize,
    /// 1-based column; 0 when unknown.
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
    /// The text of the offending line, shown under the message.
    pub source_line: Option<String>,
}

impl Diagnostic {
    /// A diagnostic for `file` at `line`:`column` (1-based).
    pub fn new(file: &Path, line: usize, column: usize, message: impl Into<String>) -> Self {
        Diagnostic {
            file: file.to_path_buf(),
            line,
            column,
            message: message.into(),
            hint: None,
            source_line: None,
        }
    }

    /// Adds a hint ("did you mean ...", "write ... instead").
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Adds an optional hint.
    pub fn with_hint_opt(mut self, hint: Option<String>) -> Self {
        self.hint = hint;
        self
    }

    /// Attaches the offending line taken from `source`, the text of the file.
    pub fn with_source(mut self, source: &str) -> Self {
        if self.line > 0 {
            self.source_line = source.lines().nth(self.line - 1).map(str::to_owned);
        }
        self
    }

    /// `file:line:column`, the form editors and terminals turn into links.
    pub fn location(&self) -> String {
        match (self.line, self.column) {
            (0, _) => self.file.display().to_string(),
            (l, 0) => format!("{}:{l}", self.file.display()),
            (l, c) => format!("{}:{l}:{c}", self.file.display()),
        }
    }
}

impl fmt::Display for Diagnostic {
    /// Renders as
    /// ```text
    /// evals/a.yaml:3:1: unknown key `promt`
    ///    |
    ///  3 | promt: "..."
    ///    | ^
    ///    = hint: did you mean `prompt`?
    /// ```
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location(), self.message)?;
        let gutter = self.line.to_string().len();
        if let Some(text) = &self.source_line {
            let shown: String = text.chars().take(160).collect();
            write!(f, "\n{:gutter$} |\n{} | {}", "", self.line, shown)?;
            if self.column > 0 {
                let pad: String = text
                    .chars()
                    .take(self.column.saturating_sub(1).min(160))
                    .map(|c| if c == '\t' { '\t' } else { ' ' })
                    .collect();
                write!(f, "\n{:gutter$} | {pad}^", "")?;
            }
        }
        if let Some(hint) = &self.hint {
            if self.source_line.is_some() {
                write!(f, "\n{:gutter$} = hint: {hint}", "")?;
            } else {
                write!(f, "\n  hint: {hint}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostic {}

/// The closest of `candidates` to `word`, if any is close enough to be a likely typo.
pub fn did_you_mean<'a>(
    word: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_location_source_caret_and_hint() {
        let d = Diagnostic::new(Path::new("a.yaml"), 2, 3, "unknown key `promt`")
            .with_hint("did you mean `prompt`?")
            .with_source("name: x\n  promt: y\n");
        let text = d.to_string();
        assert!(
            text.starts_with("a.yaml:2:3: unknown key `promt`"),
            "{text}"
        );
        assert!(text.contains("2 |   promt: y"), "{text}");
        assert!(text.contains("  |   ^"), "{text}");
        assert!(text.ends_with("= hint: did you mean `prompt`?"), "{text}");
    }

    #[test]
    fn suggests_close_words_only() {
        let keys = ["prompt", "messages", "dataset"];
        assert_eq!(did_you_mean("promt", keys), Some("prompt"));
        assert_eq!(did_you_mean("zzz", keys), None);
    }
}
