//! The shape of a spec as serde reads it: every key of every mapping and
//! every name of every choice, asked of the parsing types themselves. The
//! spec's JSON Schema (`schema/spec.schema.json`) is checked against it, so
//! the two cannot drift.

use super::raw::{
    Provider, RawConcurrency, RawDataset, RawMessage, RawModel, RawRateLimit, RawReply, RawRetry,
    RawSpec, StrategyName,
};
use crate::serde_names::{keys, variants};

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
