//! Commands as a user can paste them into a shell.

/// `s` as one shell word: as is when safe, else single-quoted.
pub fn quote(s: &str) -> String {
    if s.chars()
        .all(|c| c.is_ascii_alphanumeric() || "-_./=:".contains(c))
    {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_quoted_only_when_needed() {
        assert_eq!(quote("evals/a.yaml"), "evals/a.yaml");
        assert_eq!(quote("it's here"), r"'it'\''s here'");
    }
}
