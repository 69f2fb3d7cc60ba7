//! Repeats: each sample sent N times (`repeats: N`, `--repeats N`).
//!
//! Repeat 0 of a sample keeps its plain id as its key, so an experiment with
//! one repeat is what it always was; repeat r >= 1 is stored under
//! `{id}#repeat-{r}`. An evaluation with more than one repeat refuses ids
//! holding [`MARK`], so its base id is its key minus the suffix.

use std::borrow::Cow;

/// What separates a sample's id from its repeat number in a key.
pub const MARK: &str = "#repeat-";
/// The most repeats a spec may ask for.
pub const MAX: u32 = 100;

/// The key repeat `repeat` of sample `id` is stored under.
pub fn key(id: &str, repeat: u32) -> Cow<'_, str> {
    if repeat == 0 {
        Cow::Borrowed(id)
    } else {
        Cow::Owned(format!("{id}{MARK}{repeat}"))
    }
}

/// The sample id of `key` in an evaluation with more than one repeat.
pub fn base_id(key: &str) -> &str {
    match key.rfind(MARK) {
        Some(i) if key[i + MARK.len()..].parse::<u32>().is_ok() => &key[..i],
        _ => key,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeat_zero_keeps_the_id_and_the_rest_strip_back_to_it() {
        assert_eq!(key("a", 0), "a");
        assert_eq!(key("a", 2), "a#repeat-2");
        for r in 0..4 {
            assert_eq!(base_id(&key("q-7", r)), "q-7");
        }
        assert_eq!(base_id("a#repeat-x"), "a#repeat-x");
    }
}
