//! `--format json`: the view as pretty JSON, its documented shape.

use serde::Serialize;

use crate::cli::CliError;

/// Pretty JSON plus a newline.
pub fn pretty<T: Serialize>(value: &T) -> Result<String, CliError> {
    serde_json::to_string_pretty(value)
        .map(|s| s + "\n")
        .map_err(|e| CliError::Failed(e.to_string()))
}
