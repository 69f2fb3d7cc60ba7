//! The shape of a spec as serde reads it: every key of every mapping and
//! every name of every choice, asked of the parsing types themselves. The
//! spec's JSON Schema (`schema/spec.schema.json`) is checked against it, so
//! the two cannot drift.

use std::fmt;

use serde::de::{self, value::MapDeserializer, value::StrDeserializer, DeserializeOwned};

use super::raw::{
    Provider, RawConcurrency, RawDataset, RawMessage, RawModel, RawRateLimit, RawReply, RawRetry,
    RawSpec, StrategyName,
};

/// Each mapping's keys and each choice's names, by the place the schema
/// describes it (`spec`, `model`, `model.provider`, `evaluator.contains`, ...).
pub fn spec_shape() -> Vec<(String, &'static [&'static str])> {
    let mut shape: Vec<(String, &'static [&'static str])> = vec![
        ("spec".into(), keys::<RawSpec>()),
        ("dataset".into(), keys::<RawDataset>()),
        ("model".into(), keys::<RawModel>()),
        ("model.provider".into(), variants::<Provider>()),
        ("retry".into(), keys::<RawRetry>()),
        ("rate_limit".into(), keys::<RawRateLimit>()),
        ("reply".into(), keys::<RawReply>()),
        ("message".into(), keys::<RawMessage>()),
        ("concurrency".into(), keys::<RawConcurrency>()),
        ("concurrency.strategy".into(), variants::<StrategyName>()),
    ];
    for (name, keys) in crate::evaluators::arguments_by_type() {
        shape.push((format!("evaluator.{name}"), keys));
    }
    shape
}

/// The keys of `A`, asked of serde: a struct that denies unknown fields lists
/// them all when it meets one.
pub fn keys<A: DeserializeOwned>() -> &'static [&'static str] {
    let probe = MapDeserializer::<_, Probe>::new(std::iter::once(("\u{0}", ())));
    match A::deserialize(probe) {
        Err(Probe(Some(keys))) => keys,
        _ => &[],
    }
}

/// The variants of `E` by the names specs write, asked of serde.
pub fn variants<E: DeserializeOwned>() -> &'static [&'static str] {
    match E::deserialize(StrDeserializer::<Probe>::new("\u{0}")) {
        Err(Probe(Some(names))) => names,
        _ => &[],
    }
}

/// The error type of [`keys`] and [`variants`]: it keeps the list serde
/// gives `unknown_field` or `unknown_variant`.
#[derive(Debug)]
struct Probe(Option<&'static [&'static str]>);

impl fmt::Display for Probe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("probe")
    }
}

impl std::error::Error for Probe {}

impl de::Error for Probe {
    fn custom<T: fmt::Display>(_: T) -> Self {
        Probe(None)
    }

    fn unknown_field(_: &str, expected: &'static [&'static str]) -> Self {
        Probe(Some(expected))
    }

    fn unknown_variant(_: &str, expected: &'static [&'static str]) -> Self {
        Probe(Some(expected))
    }
}
