//! Token counts: what one reply reports ([`Usage`]) and their sums over an
//! evaluation ([`TokenTotals`]). Every provider maps its own names onto
//! these, so a count means the same whichever API reported it:
//! - `prompt`: every input token, cached ones included (Anthropic reports
//!   `input_tokens` without its cache reads and writes: they are added);
//! - `completion`: every output token, reasoning included (as the APIs bill
//!   them);
//! - `cached_prompt`: input tokens read from the provider's prompt cache
//!   (OpenAI `cached_tokens`, Anthropic `cache_read_input_tokens`), billed
//!   lower;
//! - `cache_write`: input tokens written to it (Anthropic
//!   `cache_creation_input_tokens`), billed higher;
//! - `reasoning`: output tokens spent thinking, not in the answer.

use serde::Serialize;

/// The tokens one reply reports, each `None` when the API did not say.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt: Option<u64>,
    pub completion: Option<u64>,
    pub cached_prompt: Option<u64>,
    pub cache_write: Option<u64>,
    pub reasoning: Option<u64>,
}

/// Tokens summed over many replies (a count not reported adds nothing).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct TokenTotals {
    pub prompt: u64,
    pub completion: u64,
    pub cached_prompt: u64,
    pub cache_write: u64,
    pub reasoning: u64,
}

impl TokenTotals {
    /// Every token, in and out.
    pub fn all(&self) -> u64 {
        self.prompt + self.completion
    }

    /// `120 prompt (80 cached, 10 written to cache) · 40 completion (12
    /// reasoning)`, as tables and pages show it: the parts only when reported.
    pub fn describe(&self) -> String {
        let parts = |parts: &[(u64, &str)]| {
            let named: Vec<String> = parts
                .iter()
                .filter(|(n, _)| *n > 0)
                .map(|(n, what)| format!("{n} {what}"))
                .collect();
            if named.is_empty() {
                String::new()
            } else {
                format!(" ({})", named.join(", "))
            }
        };
        format!(
            "{} prompt{} · {} completion{}",
            self.prompt,
            parts(&[
                (self.cached_prompt, "cached"),
                (self.cache_write, "written to cache")
            ]),
            self.completion,
            parts(&[(self.reasoning, "reasoning")])
        )
    }
}
