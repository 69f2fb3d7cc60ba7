//! The names serde knows of a type: a struct's keys and an enum's variants,
//! asked of its `Deserialize` (for suggestions and the spec's schema check).

use std::fmt;

use serde::de::{self, value::MapDeserializer, value::StrDeserializer, DeserializeOwned};

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
