//! `dotevals cache stats`, `cache clear` and `cache explain`: what the
//! response cache holds, making room in it, and why a sample was (not)
//! served from it.

use std::fmt::Write;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde::Serialize;
use tabled::builder::Builder;
use tabled::settings::Style as TableStyle;

use super::output::table::{printable, size};
use super::output::{print, Render};
use super::{known_experiment, open_for_reading, open_for_writing, unknown_experiment, CliError};
use super::{FormatArg, Style};
use crate::cache::explain::{self, Explanation};
use crate::cache::CacheStats;
use crate::store::{Storage, Store};
use crate::Exit;

pub const AFTER_HELP: &str = "\
A run uses the cache with `--cache`, or `cache: true` (`cache: {ttl: 7d}`) in its spec: a request
the same as one answered before (API keys aside) gets that reply from the store, and nothing is sent.

Examples:
  dotevals cache stats
  dotevals cache clear --older-than 30d
  dotevals cache explain baseline q17";

const CLEAR_HELP: &str = "\
Sample records are never touched: experiments keep their outputs and scores.

Examples:
  dotevals cache clear                         # every entry
  dotevals cache clear --older-than 7d         # entries written more than a week ago
  dotevals cache clear --model gpt-4o-mini --older-than 12h";

const STATS_HELP: &str = "\
Examples:
  dotevals cache stats
  dotevals cache stats --format json | jq '.models[] | {model, bytes}'";

const EXPLAIN_HELP: &str = "\
Examples:
  dotevals cache explain baseline q17
  dotevals cache explain baseline q17 --format json | jq '.[].differences'";

#[derive(Debug, Args)]
pub struct CacheArgs {
    #[command(subcommand)]
    pub command: CacheCommand,
}

#[derive(Debug, Subcommand)]
pub enum CacheCommand {
    /// Entries, size and hits of the response cache, in all and per model
    ///
    /// JSON: {"entries", "bytes", "hits", "models": [{"model", "entries", "bytes", "hits",
    /// "oldest", "newest"}]}; bytes count the replies and the requests kept with them,
    /// oldest and newest are when entries were written (RFC 3339, UTC). An empty or
    /// missing store counts zeros.
    #[command(after_help = STATS_HELP)]
    Stats(FormatArg),
    /// Delete cache entries: every one, those older than a duration, or one model's
    ///
    /// JSON: {"deleted": N}.
    #[command(after_help = CLEAR_HELP)]
    Clear(ClearArgs),
    /// Say why a sample's reply came, or did not come, from the cache
    ///
    /// For each evaluation of EXPERIMENT holding sample SAMPLE_ID: the cache was off
    /// for it; it was served from the cache (and when that entry was written); or it
    /// was sent, and then which parts of its request (`params.max_tokens`,
    /// `messages[0].content`, `model`, `url`, `repeat`, ...) differ from the closest
    /// request cached for the same sample before it was sent.
    ///
    /// JSON: a list, one object per evaluation: {"evaluation", "sample",
    /// "status": "off" | "hit" | "sent", "written_at"? (the entry under the sample's
    /// key, RFC 3339), "differences": [{"part", "this", "cached"}] (values as JSON),
    /// "compared_with"?: {"key", "written_at"}, "note" (the explanation in words)}.
    #[command(after_help = EXPLAIN_HELP)]
    Explain(ExplainArgs),
}

#[derive(Debug, Args)]
pub struct ClearArgs {
    /// Only entries written longer ago than this (30s, 12h, 7d, 2w, 1month)
    #[arg(long, value_name = "DURATION", value_parser = parse_age)]
    pub older_than: Option<Duration>,
    /// Only entries of this model (as `cache stats` lists them)
    #[arg(long, value_name = "NAME")]
    pub model: Option<String>,
    #[command(flatten)]
    pub output: FormatArg,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    /// Experiment holding the sample
    pub experiment: String,
    /// The sample's id, as `show --full` lists it (a repeat's is ID#repeat-N)
    pub sample_id: String,
    #[command(flatten)]
    pub output: FormatArg,
}

impl CacheArgs {
    /// The subcommand's `--format`.
    pub fn output(&self) -> FormatArg {
        match &self.command {
            CacheCommand::Stats(a) => *a,
            CacheCommand::Clear(a) => a.output,
            CacheCommand::Explain(a) => a.output,
        }
    }
}

/// `--older-than`: a humantime duration.
fn parse_age(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e} (write it as 30s, 12h, 7d or 2w)"))
}

pub fn cache(args: CacheArgs, storage: &dyn Storage, style: Style) -> Result<Exit, CliError> {
    match args.command {
        CacheCommand::Stats(_) => stats(storage, style),
        CacheCommand::Clear(a) => clear(a, storage, style),
        CacheCommand::Explain(a) => explain(a, storage, style),
    }
}

fn stats(storage: &dyn Storage, style: Style) -> Result<Exit, CliError> {
    let stats = match open_for_reading(storage)? {
        Some(store) => store.cache_stats()?,
        None => CacheStats::default(),
    };
    print(style, &stats)?;
    Ok(Exit::Success)
}

fn clear(args: ClearArgs, storage: &dyn Storage, style: Style) -> Result<Exit, CliError> {
    let Some(store) = open_for_writing(storage)? else {
        print(style, &Cleared::of(0, &args))?;
        return Ok(Exit::Success);
    };
    let deleted = store.cache_clear(args.older_than, args.model.as_deref())?;
    if let (0, Some(model)) = (deleted, &args.model) {
        // Most likely a misspelt name: say which ones the cache has.
        let models: Vec<String> = store
            .cache_stats()
            .map(|s| s.models.into_iter().map(|m| m.model).collect())
            .unwrap_or_default();
        if !models.iter().any(|m| m == model) {
            let known = if models.is_empty() {
                "the cache is empty".to_owned()
            } else {
                format!("its models are {}", quoted(&models))
            };
            eprintln!(
                "note: the cache has no entries of model `{}`; {}",
                printable(model),
                printable(&known)
            );
        }
    }
    print(style, &Cleared::of(deleted, &args))?;
    Ok(Exit::Success)
}

fn explain(args: ExplainArgs, storage: &dyn Storage, style: Style) -> Result<Exit, CliError> {
    let Some(store) = open_for_reading(storage)? else {
        return Err(unknown_experiment(&args.experiment, &[]));
    };
    let reads = store
        .cache_explain_reads(&args.experiment, &args.sample_id)
        .map_err(|e| known_experiment(store.as_ref(), &args.experiment, e))?;
    if reads.is_empty() {
        return Err(unknown_sample(
            store.as_ref(),
            &args.experiment,
            &args.sample_id,
        ));
    }
    let explained = reads
        .iter()
        .map(|r| explain::explain(&args.sample_id, r))
        .collect();
    print(style, &Explained(explained))?;
    Ok(Exit::Success)
}

/// The error for a sample id the experiment does not hold, naming the
/// closest id or a few that exist.
fn unknown_sample(store: &dyn Store, experiment: &str, sample: &str) -> CliError {
    let mut keys: Vec<String> = store
        .experiment(experiment)
        .map(|x| x.evaluations)
        .unwrap_or_default()
        .iter()
        .flat_map(|e| store.sample_scores(e.id, 0, None).unwrap_or_default())
        .map(|s| s.key)
        .collect();
    keys.sort_unstable();
    keys.dedup();
    let message = format!("experiment `{experiment}` has no sample `{sample}`");
    let hint = match crate::diagnostic::did_you_mean(sample, keys.iter().map(String::as_str)) {
        Some(m) => format!("did you mean `{m}`?"),
        None if keys.is_empty() => "it has no sample records yet".into(),
        None => {
            const SHOWN: usize = 5;
            let more = if keys.len() > SHOWN {
                format!(", ... ({} in all)", keys.len())
            } else {
                String::new()
            };
            format!(
                "its samples are {}{more}; `dotevals show {experiment} --full` lists them",
                quoted(&keys[..keys.len().min(SHOWN)])
            )
        }
    };
    CliError::usage(message, Some(hint))
}

/// `` `a`, `b`, `c` ``.
fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

impl Render for CacheStats {
    fn table(&self) -> String {
        let mut out = format!(
            "cache: {} entries, {}, {} hits\n",
            self.entries,
            size(self.bytes),
            self.hits
        );
        if self.models.is_empty() {
            out.push_str(
                "nothing cached yet: runs with `--cache` or `cache: true` keep their replies\n",
            );
            return out;
        }
        let mut b = Builder::default();
        b.push_record(["model", "entries", "size", "hits", "oldest", "newest"]);
        for m in &self.models {
            b.push_record([
                printable(&m.model).into_owned(),
                m.entries.to_string(),
                size(m.bytes),
                m.hits.to_string(),
                m.oldest.clone().unwrap_or_default(),
                m.newest.clone().unwrap_or_default(),
            ]);
        }
        let mut t = b.build();
        t.with(TableStyle::rounded());
        let _ = writeln!(out, "{t}");
        out
    }
}

/// What `cache clear` prints.
#[derive(Debug, Serialize)]
struct Cleared {
    /// Entries deleted.
    deleted: u64,
    /// Which ones, in words (table only).
    #[serde(skip)]
    which: String,
}

impl Cleared {
    fn of(deleted: u64, args: &ClearArgs) -> Cleared {
        let mut which = String::new();
        if let Some(model) = &args.model {
            let _ = write!(which, " of model {}", printable(model));
        }
        if let Some(age) = args.older_than {
            let _ = write!(
                which,
                " written more than {} ago",
                humantime::format_duration(age)
            );
        }
        Cleared { deleted, which }
    }
}

impl Render for Cleared {
    fn table(&self) -> String {
        let s = if self.deleted == 1 { "y" } else { "ies" };
        format!("deleted {} cache entr{s}{}\n", self.deleted, self.which)
    }
}

/// What `cache explain` prints: one explanation per evaluation.
#[derive(Debug, Serialize)]
#[serde(transparent)]
struct Explained(Vec<Explanation>);

impl Render for Explained {
    fn table(&self) -> String {
        let mut out = String::new();
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            let status = match e.status {
                explain::Status::Off => "cache off",
                explain::Status::Hit => "served from the cache",
                explain::Status::Sent => "sent",
            };
            let _ = writeln!(
                out,
                "sample {} of evaluation {}: {status}",
                printable(&e.sample),
                printable(&e.evaluation)
            );
            let when = e
                .compared_with
                .as_ref()
                .map_or("", |c| c.written_at.as_str());
            for (j, sentence) in e.sentences.iter().enumerate() {
                let _ = writeln!(out, "  {}", printable(sentence));
                if j > 0 {
                    continue;
                }
                // The parts that differ, under the sentence that counts them.
                for d in &e.differences {
                    let _ = writeln!(
                        out,
                        "    {}: {} here, {} in the entry cached {when}",
                        printable(&d.part),
                        printable(&d.this),
                        printable(&d.cached)
                    );
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::ModelStats;

    #[test]
    fn stats_print_zeros_when_empty() {
        let text = CacheStats::default().table();
        assert!(
            text.starts_with("cache: 0 entries, 0 KB, 0 hits\n"),
            "{text}"
        );
        let json = serde_json::to_value(CacheStats::default()).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"entries": 0, "bytes": 0, "hits": 0, "models": []})
        );
    }

    #[test]
    fn stats_list_each_model() {
        let stats = CacheStats {
            entries: 2,
            bytes: 3000,
            hits: 5,
            models: vec![ModelStats {
                model: "gpt-4o-mini".into(),
                entries: 2,
                bytes: 3000,
                hits: 5,
                oldest: Some("2026-12-07T10:00:00Z".into()),
                newest: Some("2026-12-08T10:00:00Z".into()),
            }],
        };
        let text = stats.table();
        assert!(
            text.contains("gpt-4o-mini") && text.contains("2026-12-08T10:00:00Z"),
            "{text}"
        );
    }

    #[test]
    fn clear_says_what_it_deleted() {
        let args = ClearArgs {
            older_than: Some(Duration::from_secs(7 * 86400)),
            model: Some("m".into()),
            output: FormatArg {
                format: super::super::Format::Table,
            },
        };
        assert_eq!(
            Cleared::of(1, &args).table(),
            "deleted 1 cache entry of model m written more than 7days ago\n"
        );
        let json = serde_json::to_value(Cleared::of(3, &args)).unwrap();
        assert_eq!(json, serde_json::json!({"deleted": 3}));
    }

    #[test]
    fn durations_read_as_humantime() {
        assert_eq!(parse_age("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_age("12h"), Ok(Duration::from_secs(12 * 3600)));
        assert!(parse_age("seven days").is_err());
    }

    #[test]
    fn explain_names_each_difference_with_both_values() {
        let e = Explanation {
            evaluation: "sentiment".into(),
            sample: "q1".into(),
            status: explain::Status::Sent,
            written_at: None,
            differences: vec![explain::Difference {
                part: "params.max_tokens".into(),
                this: "17".into(),
                cached: "16".into(),
            }],
            compared_with: Some(explain::ComparedWith {
                key: "k".into(),
                written_at: "2026-12-07T10:00:00Z".into(),
            }),
            note: "n".into(),
            sentences: vec!["n".into()],
        };
        let text = Explained(vec![e]).table();
        assert!(
            text.contains(
                "params.max_tokens: 17 here, 16 in the entry cached 2026-12-07T10:00:00Z"
            ),
            "{text}"
        );
        assert!(
            text.starts_with("sample q1 of evaluation sentiment: sent\n"),
            "{text}"
        );
    }
}
