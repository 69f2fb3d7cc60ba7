//! What makes two specs the same evaluation: the hash a resume compares, and
//! the names of the parts that changed when it differs.

use std::collections::BTreeSet;

use serde_json::Value;

use super::raw::RawSpec;

/// The parts of a spec that decide each sample's result: dataset source, model
/// identity and parameters, prompt and evaluators. Timeouts, retries, latency,
/// limits and concurrency may change between runs of one experiment.
pub(super) fn identity(raw: &RawSpec) -> Value {
    let mut v = serde_json::to_value(raw).unwrap_or(Value::Null);
    normalize(&mut v);
    v
}

/// Whether a stored identity, `old`, decides results as `new` does: equal
/// once `old` is put through today's rules (a key that stopped counting, a
/// command scorer's `timeout` say, no longer refuses a resume of an
/// experiment stored when it did).
pub fn same_results(old: &Value, new: &Value) -> bool {
    let mut old = old.clone();
    normalize(&mut old);
    old == *new
}

/// Drops from an identity what never changes a sample's result; idempotent.
fn normalize(v: &mut Value) {
    if let Value::Object(top) = v {
        // `repeats` says how many times to send each sample, not what a sample's
        // result is: raising it on resume sends only the missing repeats.
        // Nor does the cache: it decides what is sent again, not a reply.
        for key in ["description", "concurrency", "name", "repeats", "cache"] {
            top.remove(key);
        }
        // How much to read and how to cluster errors never change a sample's result.
        if let Some(Value::Object(d)) = top.get_mut("dataset") {
            d.remove("limit");
            d.remove("cluster");
        }
        if let Some(model) = top.get_mut("model") {
            drop_pacing(model);
        }
        // Evaluator entries once had every argument, null when unset; stored
        // experiments hash them so, and must still resume.
        if let Some(Value::Array(evaluators)) = top.get_mut("evaluators") {
            for e in evaluators.iter_mut().filter_map(Value::as_object_mut) {
                for key in EVALUATOR_KEYS_OF_V1 {
                    e.entry(key).or_insert(Value::Null);
                }
                // A judge's pacing may change between runs, as the model's may,
                // and so may the CI gate's bar, a command scorer's pace
                // (`timeout`, `workers`) and which key variables it may see
                // (a scorer that failed for lack of one is resumed once `env`
                // lists it).
                for key in ["max_concurrency", "fail_under", "timeout", "workers", "env"] {
                    e.remove(key);
                }
                if let Some(model) = e.get_mut("model") {
                    drop_pacing(model);
                }
            }
        }
        top.retain(|_, v| !v.is_null());
    }
}

/// Removes from a model block what only paces requests (timeouts, retries,
/// limits, the mock's latency), finds the key, or says how the reply is
/// read (streamed or whole): none of it changes a reply.
fn drop_pacing(model: &mut Value) {
    if let Value::Object(m) = model {
        for key in [
            "timeout",
            "connect_timeout",
            "read_timeout",
            "stream",
            "retry",
            "rate_limit",
            "latency",
            "api_key_env",
        ] {
            m.remove(key);
        }
    }
}

/// The keys an evaluator entry held before each type had its own arguments.
const EVALUATOR_KEYS_OF_V1: [&str; 6] = [
    "name",
    "expected",
    "ignore_case",
    "pattern",
    "tolerance",
    "schema",
];

/// Top-level parts of two identities that differ, for "what changed" messages.
pub fn changed_parts(old: &Value, new: &Value) -> Vec<String> {
    let (Value::Object(a), Value::Object(b)) = (old, new) else {
        return vec!["spec".into()];
    };
    let mut keys: BTreeSet<&String> = a.keys().collect();
    keys.extend(b.keys());
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}
