//! Reading one evaluator entry so that its errors still name the key at fault.
//!
//! serde reads an internally tagged enum (`type:` picks the variant) by buffering
//! the entry and then deserializing the variant from the buffer, where
//! `serde_path_to_error` no longer sees the keys: `ignore_case: maybe` would be
//! reported at the entry, not at `ignore_case`. So each variant holds an
//! [`Entry`], which tracks the path itself and hands the loader an [`EntryError`]
//! inside serde's error text (the only channel serde offers); [`entry_error`]
//! reads it back out.

use serde::de::{self, DeserializeOwned, Deserializer};
use serde::{Deserialize, Serialize};

use super::{argument_keys, ArgError, TypeName, TYPES};
use crate::diagnostic::did_you_mean;
use crate::serde_names::keys;
use crate::spec::locate::Step;

/// An evaluator entry: its optional display name and threshold, and its type's arguments.
#[derive(Debug, Serialize)]
pub struct Entry<A> {
    /// Optional display name, to tell two evaluators of one type apart.
    pub name: Option<String>,
    /// The score a sample needs to pass, in [0, 1]; `None`: the type's default.
    /// Left out of the serialized entry when unset, so specs written before
    /// thresholds keep their identity.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub threshold: Option<f64>,
    /// The CI gate: a run whose mean score falls below it exits 3.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail_under: Option<f64>,
    #[serde(flatten)]
    pub args: A,
}

impl<'de, A: DeserializeOwned + TypeName> Deserialize<'de> for Entry<A> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let mut map = serde_yaml::Mapping::deserialize(d)?;
        let name = match map.remove("name") {
            None => None,
            // The entry was buffered, so YAML has already typed `name: 2024` or
            // `name: true`; the name is the scalar as text, as it was read when
            // entries were one struct.
            Some(serde_yaml::Value::Number(n)) => Some(n.to_string()),
            Some(serde_yaml::Value::Bool(b)) => Some(b.to_string()),
            Some(v) => serde_yaml::from_value(v).map_err(|e| {
                EntryError::At {
                    key: Some("name".into()),
                    message: e.to_string(),
                }
                .into_serde::<D::Error>()
            })?,
        };
        let threshold = match map.remove("threshold") {
            None => None,
            Some(v) => Some(fraction("threshold", v).map_err(|e| e.into_serde::<D::Error>())?),
        };
        let fail_under = match map.remove("fail_under") {
            None => None,
            Some(v) => Some(fraction("fail_under", v).map_err(|e| e.into_serde::<D::Error>())?),
        };
        let args = serde_path_to_error::deserialize(serde_yaml::Value::Mapping(map))
            .map_err(|e| explain::<A>(e).into_serde::<D::Error>())?;
        Ok(Entry {
            name,
            threshold,
            fail_under,
            args,
        })
    }
}

/// A `threshold` or `fail_under` value (`key`): a number in [0, 1].
fn fraction(key: &str, v: serde_yaml::Value) -> Result<f64, EntryError> {
    let t: f64 = serde_yaml::from_value(v).map_err(|e| EntryError::At {
        key: Some(key.into()),
        message: e.to_string(),
    })?;
    if (0.0..=1.0).contains(&t) {
        Ok(t)
    } else {
        let hint = match key {
            "threshold" => "a sample passes when its score (0 to 1) is at least the threshold",
            _ => "a run fails its gate (exit 3) when the evaluator's mean score (0 to 1) is below this",
        };
        Err(EntryError::Arg {
            key: key.into(),
            message: format!("{key} {t} is outside [0, 1]"),
            hint: Some(hint.into()),
        })
    }
}

/// What went wrong inside one evaluator entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum EntryError {
    /// serde's own message about `key` (the entry itself when `None`), to be
    /// reported as any other key's would be.
    At {
        key: Option<String>,
        message: String,
    },
    /// A refusal written for evaluators, with its key and hint.
    Arg {
        key: String,
        message: String,
        hint: Option<String>,
    },
}

/// Marks an [`EntryError`] inside serde's error text.
const MARK: &str = "\u{1}evaluator entry error\u{1}";

impl EntryError {
    fn arg(e: ArgError) -> Self {
        EntryError::Arg {
            key: e.key,
            message: e.message,
            hint: e.hint,
        }
    }

    fn into_serde<E: de::Error>(self) -> E {
        E::custom(format!(
            "{MARK}{}",
            serde_json::to_string(&self).unwrap_or_default()
        ))
    }

    fn from_serde(message: &str) -> Option<Self> {
        let json = &message[message.find(MARK)? + MARK.len()..];
        serde_json::Deserializer::from_str(json)
            .into_iter()
            .next()?
            .ok()
    }
}

/// For a serde error at `path` with `message` (as serde_yaml prints it), the entry's path
/// (`evaluators[2]`) and what to report, when the error is inside an evaluator.
pub fn entry_error(path: &[Step], message: &str) -> Option<(String, EntryError)> {
    let [Step::Key(top), Step::Index(i), rest @ ..] = path else {
        return None;
    };
    if top != "evaluators" {
        return None;
    }
    let entry = format!("evaluators[{i}]");
    if let Some(found) = EntryError::from_serde(message) {
        return Some((entry, found));
    }
    const UNKNOWN: &str = "unknown variant `";
    let word = message[message.find(UNKNOWN)? + UNKNOWN.len()..]
        .split('`')
        .next()?;
    (rest == [Step::Key("type".into())]).then(|| (entry, EntryError::arg(unknown_type(word))))
}

fn unknown_type(word: &str) -> ArgError {
    let hint = match did_you_mean(word, TYPES.iter().copied()) {
        Some(t) => format!("did you mean `{t}`? Known types: {}", TYPES.join(", ")),
        None => format!("known types: {}", TYPES.join(", ")),
    };
    ArgError::new("type", format!("unknown evaluator type `{word}`")).hint(hint)
}

/// Rewrites an error in the arguments of type `A` for [`entry_error`].
fn explain<A: DeserializeOwned + TypeName>(
    e: serde_path_to_error::Error<serde_yaml::Error>,
) -> EntryError {
    let path = e.path().to_string();
    let message = e.into_inner().to_string();
    let key = (!path.is_empty() && path != ".").then_some(path);
    match (&key, message.strip_prefix("unknown field `")) {
        (Some(key), Some(_)) if argument_keys().contains(&key.as_str()) => {
            let takes = match keys::<A>() {
                [] => "no arguments".to_owned(),
                keys => keys.join(", "),
            };
            EntryError::arg(
                ArgError::new(key, format!("`{key}` is not an argument of {}", A::TYPE))
                    .hint(format!("{} takes: {takes}", A::TYPE)),
            )
        }
        // Unknown to every evaluator: list every key an entry may have.
        (Some(key), Some(_)) => {
            let all: Vec<String> = ["type", "name", "threshold", "fail_under"]
                .into_iter()
                .chain(argument_keys())
                .map(|k| format!("`{k}`"))
                .collect();
            EntryError::At {
                message: format!("unknown field `{key}`, expected one of {}", all.join(", ")),
                key: Some(key.clone()),
            }
        }
        _ => EntryError::At { key, message },
    }
}

#[cfg(test)]
mod tests {
    use super::super::EvaluatorSpec;
    use super::*;
    use crate::spec::locate::parse_path;

    /// What the loader hears about `yaml`, an entry at `evaluators[0]`.
    fn error(yaml: &str) -> (String, EntryError) {
        let yaml = format!("evaluators:\n  - {}\n", yaml.replace('\n', "\n    "));
        #[derive(Debug, Deserialize)]
        #[allow(dead_code)]
        struct Spec {
            evaluators: Vec<EvaluatorSpec>,
        }
        let de = serde_yaml::Deserializer::from_str(&yaml);
        let err = serde_path_to_error::deserialize::<_, Spec>(de).expect_err("refused");
        entry_error(
            &parse_path(&err.path().to_string()),
            &err.inner().to_string(),
        )
        .expect("an evaluator error")
    }

    #[test]
    fn unknown_type_suggests() {
        let (entry, EntryError::Arg { key, message, hint }) = error("type: exact_mach") else {
            panic!()
        };
        assert_eq!((entry.as_str(), key.as_str()), ("evaluators[0]", "type"));
        assert_eq!(message, "unknown evaluator type `exact_mach`");
        assert_eq!(
            hint.as_deref(),
            Some("did you mean `exact_match`? Known types: exact_match, contains, regex, numeric_match, valid_json, f1, similarity, json_match, choice, command, llm_judge")
        );
    }

    #[test]
    fn foreign_argument_is_rejected() {
        let (_, EntryError::Arg { key, message, hint }) =
            error("type: exact_match\nexpected: x\npattern: y")
        else {
            panic!()
        };
        assert_eq!(key, "pattern");
        assert_eq!(message, "`pattern` is not an argument of exact_match");
        assert_eq!(
            hint.as_deref(),
            Some("exact_match takes: expected, ignore_case")
        );
    }

    #[test]
    fn unknown_key_lists_every_key() {
        let (_, found) = error("type: regex\nexpectd: x");
        assert_eq!(
            found,
            EntryError::At {
                key: Some("expectd".into()),
                message: "unknown field `expectd`, expected one of `type`, `name`, `threshold`, `fail_under`, `expected`, `ignore_case`, `pattern`, `tolerance`, `schema`, `method`, `path`, `choices`, `command`, `workers`, `timeout`, `config`, `env`, `rubric`, `prompt`, `messages`, `model`, `max_concurrency`".into()
            }
        );
    }

    #[test]
    fn threshold_outside_0_1_is_refused() {
        for t in ["1.5", "-0.1", ".nan"] {
            let (_, EntryError::Arg { key, message, .. }) =
                error(&format!("type: valid_json\nthreshold: {t}"))
            else {
                panic!("{t}")
            };
            assert_eq!(key, "threshold");
            assert!(message.ends_with("is outside [0, 1]"), "{message}");
        }
    }

    #[test]
    fn a_bad_value_names_its_key() {
        for (yaml, at) in [
            (
                "type: contains\nexpected: x\nignore_case: maybe",
                "ignore_case",
            ),
            (
                "type: numeric_match\nexpected: 1\ntolerance: [1]",
                "tolerance",
            ),
            ("type: valid_json\nname: [j]", "name"),
            ("type: valid_json\nthreshold: high", "threshold"),
        ] {
            let (_, EntryError::At { key, message }) = error(yaml) else {
                panic!("{yaml}")
            };
            assert_eq!(key.as_deref(), Some(at), "{yaml}");
            assert!(message.starts_with("invalid type: "), "{message}");
        }
    }
}
