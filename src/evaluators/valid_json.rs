//! `valid_json`: the output parses as JSON and, when `schema` is given, validates
//! against that JSON Schema (checked with the `jsonschema` crate).

use minijinja::Value;

use super::{ArgError, Args, Score};
use crate::template::Template;

pub struct ValidJson {
    validator: Option<jsonschema::Validator>,
}

impl ValidJson {
    pub(super) fn build(args: &Args) -> Result<Self, ArgError> {
        args.only(&["schema"])?;
        let validator = match &args.raw.schema {
            None => None,
            Some(schema) => Some(jsonschema::validator_for(schema).map_err(|e| {
                ArgError::new("schema", format!("invalid JSON Schema: {e}"))
                    .hint("write a JSON Schema object, e.g. {type: object, required: [answer]}")
            })?),
        };
        Ok(ValidJson { validator })
    }
}

impl Score for ValidJson {
    fn score(&self, output: &str, _ctx: &Value) -> Result<bool, String> {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(output.trim()) else {
            return Ok(false);
        };
        Ok(self.validator.as_ref().is_none_or(|v| v.is_valid(&value)))
    }

    fn templates(&self) -> Vec<(&'static str, &Template)> {
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use minijinja::context;

    #[test]
    fn parses_json() {
        let e = from_yaml("type: valid_json");
        assert_eq!(score(&e, " {\"a\": 1} ", context! {}), Ok(true));
        assert_eq!(score(&e, "{a: 1}", context! {}), Ok(false));
    }

    #[test]
    fn validates_schema() {
        let e = from_yaml(
            "type: valid_json\nschema: {type: object, required: [answer], properties: {answer: {type: integer}}}",
        );
        assert_eq!(score(&e, "{\"answer\": 4}", context! {}), Ok(true));
        assert_eq!(score(&e, "{\"answer\": \"four\"}", context! {}), Ok(false));
        assert_eq!(score(&e, "{}", context! {}), Ok(false));
    }

    #[test]
    fn bad_schema_fails_at_load() {
        let err = build_err("type: valid_json\nschema: {type: 12}");
        assert_eq!(err.key, "schema");
    }
}
