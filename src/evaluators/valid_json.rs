//! `valid_json`: the output parses as JSON and, when `schema` is given, validates
//! against that JSON Schema (checked with the `jsonschema` crate).

use std::sync::Arc;

use minijinja::Value;
use serde::{Deserialize, Serialize};

use super::{score_of, ArgError, Arguments, Score, ScoreError, Scored};
use crate::template::Template;

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Args {
    schema: Option<serde_json::Value>,
}

impl Arguments for Args {
    fn build(&self) -> Result<Arc<dyn Score>, ArgError> {
        let validator = match &self.schema {
            None => None,
            Some(schema) => Some(jsonschema::validator_for(schema).map_err(|e| {
                ArgError::new("schema", format!("invalid JSON Schema: {e}"))
                    .hint("write a JSON Schema object, e.g. {type: object, required: [answer]}")
            })?),
        };
        Ok(Arc::new(ValidJson { validator }))
    }
}

struct ValidJson {
    validator: Option<jsonschema::Validator>,
}

impl Score for ValidJson {
    fn score(&self, output: &str, _ctx: &Value) -> Result<Scored, ScoreError> {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(output.trim()) else {
            return Ok(score_of(false));
        };
        Ok(score_of(
            self.validator.as_ref().is_none_or(|v| v.is_valid(&value)),
        ))
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
        assert_eq!(score(&e, " {\"a\": 1} ", context! {}), PASS);
        assert_eq!(score(&e, "{a: 1}", context! {}), FAIL);
    }

    #[test]
    fn validates_schema() {
        let e = from_yaml(
            "type: valid_json\nschema: {type: object, required: [answer], properties: {answer: {type: integer}}}",
        );
        assert_eq!(score(&e, "{\"answer\": 4}", context! {}), PASS);
        assert_eq!(score(&e, "{\"answer\": \"four\"}", context! {}), FAIL);
        assert_eq!(score(&e, "{}", context! {}), FAIL);
    }

    #[test]
    fn bad_schema_fails_at_load() {
        let err = build_err("type: valid_json\nschema: {type: 12}");
        assert_eq!(err.key, "schema");
    }
}
