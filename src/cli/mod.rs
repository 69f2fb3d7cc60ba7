//! Command-line interface: clap definitions, one file per subcommand, and the
//! output style. No module below `cli` imports clap; each subcommand turns its
//! arguments into plain values and calls the library.

mod cache;
mod compare;
mod export;
mod finish;
mod gate;
mod list;
mod manage;
mod merge;
mod mock_server;
mod output;
mod report;
mod rescore;
mod run;
mod show;
mod validate;

use std::io::{IsTerminal, Write};

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::diagnostic::Diagnostic;
use crate::store::{Storage, Store, StoreError};
use crate::Exit;

const AFTER_HELP: &str = "\
Examples:
  dotevals run evals/sentiment.yaml --experiment baseline
  dotevals run evals/sentiment.yaml --experiment fast --concurrency 8
  dotevals show baseline
  dotevals compare baseline fast
  dotevals report baseline               # baseline.html: summary, plots, every sample
  dotevals export baseline --format csv -o baseline.csv
  dotevals rescore baseline --spec edited.yaml
  dotevals list
  dotevals validate evals/*.yaml

Results are stored in .dotevals/dotevals.db unless --storage or DOTEVALS_STORAGE says otherwise.
Exit codes: 0 done, 1 samples errored or the run failed, 2 bad usage or spec (nothing sent),
3 an evaluator's mean is below its --fail-under / fail_under bar, 130 interrupted.";

/// Run LLM evaluations declared in YAML, fast.
///
/// A spec names a dataset, a model endpoint (any OpenAI-compatible server, or
/// the built-in mock), a prompt and evaluators. `run` sends every sample through
/// a concurrency strategy and records outputs, scores, errors and timings under
/// a named experiment; `show` and `list` report accuracy and timing.
#[derive(Debug, Parser)]
#[command(name = "dotevals", version, about, long_about, after_help = AFTER_HELP, propagate_version = true)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,

    #[command(flatten)]
    pub global: GlobalArgs,
}

/// Options every subcommand takes.
#[derive(Debug, Clone, Args)]
pub struct GlobalArgs {
    /// Results store: a SQLite file, a folder for one, sqlite://PATH, or a PostgreSQL server shared
    /// by a team, postgres://USER[:PASSWORD]@HOST[:PORT]/DB[?schema=NAME] [default: .dotevals/dotevals.db]
    #[arg(long, global = true, env = "DOTEVALS_STORAGE", value_name = "PATH")]
    pub storage: Option<String>,

    /// No progress bar or progress lines on stderr
    #[arg(long, short, global = true)]
    pub quiet: bool,

    /// When to use colour (NO_COLOR turns it off for `auto`)
    #[arg(long, global = true, value_enum, default_value_t = ColorChoice::Auto, value_name = "WHEN")]
    pub color: ColorChoice,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one or more specs into an experiment
    #[command(after_help = run::AFTER_HELP)]
    Run(run::RunArgs),
    /// Grade an experiment's stored outputs again with edited evaluators, into a new experiment (no model requests)
    #[command(after_help = rescore::AFTER_HELP)]
    Rescore(rescore::RescoreArgs),
    /// Show an experiment: accuracy, errors and timing per evaluation
    Show(show::ShowArgs),
    /// Write every sample record of an experiment as JSON lines or CSV, streamed
    #[command(after_help = export::AFTER_HELP)]
    Export(export::ExportArgs),
    /// Compare two experiments sample by sample: B - A per evaluator, with error bars and p-values
    #[command(after_help = compare::AFTER_HELP)]
    Compare(compare::CompareArgs),
    /// Write an experiment (or two, compared) as one self-contained HTML file: summary, plots, samples
    #[command(after_help = report::AFTER_HELP)]
    Report(report::ReportArgs),
    /// List experiments with date, samples, accuracy, wall time and status
    List(FormatArg),
    /// Check specs and their datasets without sending a request
    Validate(validate::ValidateArgs),
    /// Delete an experiment and all its records
    Delete(manage::DeleteArgs),
    /// Rename an experiment
    Rename(manage::RenameArgs),
    /// Merge the stores of a sharded run (or any stores) into one, as if one run had recorded them
    #[command(after_help = merge::AFTER_HELP)]
    Merge(merge::MergeArgs),
    /// The response cache: what it holds, clearing it, why a sample was not served from it
    #[command(after_help = cache::AFTER_HELP)]
    Cache(cache::CacheArgs),
    /// Serve a spec's mock model over HTTP for other tools
    MockServer(mock_server::MockServerArgs),
}

/// How a command prints its result on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Tables and aligned text, for people
    Table,
    /// Pretty JSON, for scripts (shape in README and schema/dotevals.schema.json)
    Json,
    /// Markdown tables, for a pull request's comment (`show` and `compare` only)
    #[value(skip)]
    Markdown,
}

/// `--format` of the commands that print a view.
#[derive(Debug, Clone, Copy, Args)]
pub struct FormatArg {
    /// Output for people (table) or scripts (json, on stdout; shape in README)
    #[arg(long, value_enum, default_value_t = Format::Table, value_name = "FORMAT")]
    pub format: Format,
}

/// `--format` of the commands whose result also reads well in a pull
/// request (`show`, `compare`).
#[derive(Debug, Clone, Copy, Args)]
pub struct ReviewFormatArg {
    /// Output for people (table), scripts (json, on stdout; shape in README) or a pull
    /// request's comment (markdown)
    #[arg(long, value_enum, default_value_t = ReviewFormat::Table, value_name = "FORMAT")]
    pub format: ReviewFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReviewFormat {
    /// Tables and aligned text, for people
    Table,
    /// Pretty JSON, for scripts (shape in README and schema/dotevals.schema.json)
    Json,
    /// Markdown tables, for a pull request's comment
    Markdown,
}

impl From<ReviewFormatArg> for FormatArg {
    fn from(a: ReviewFormatArg) -> FormatArg {
        FormatArg {
            format: match a.format {
                ReviewFormat::Table => Format::Table,
                ReviewFormat::Json => Format::Json,
                ReviewFormat::Markdown => Format::Markdown,
            },
        }
    }
}

impl Command {
    /// The format the command prints in (a table for those without `--format`).
    fn format(&self) -> Format {
        let arg = match self {
            Command::Run(a) => a.output,
            Command::Rescore(a) => a.output,
            Command::Show(a) => a.output.into(),
            Command::Compare(a) => a.output.into(),
            Command::List(a) => *a,
            Command::Validate(a) => a.output,
            Command::Delete(a) => a.output,
            Command::Rename(a) => a.output,
            Command::Merge(a) => a.output,
            Command::Cache(a) => a.output(),
            Command::Export(_) | Command::Report(_) | Command::MockServer(_) => {
                return Format::Table
            }
        };
        arg.format
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

/// Terminal facts and flags, resolved once.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    pub format: Format,
    /// Colour on stderr messages.
    pub color: bool,
    pub progress: crate::runner::ProgressMode,
}

impl Style {
    fn resolve(g: &GlobalArgs, format: Format) -> Style {
        let stderr_tty = std::io::stderr().is_terminal();
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let dumb = std::env::var("TERM").is_ok_and(|t| t == "dumb");
        let color = match g.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => stderr_tty && !no_color && !dumb,
        };
        use crate::runner::ProgressMode as Mode;
        let progress = if g.quiet {
            Mode::Off
        } else if stderr_tty && !dumb {
            Mode::Bar
        } else {
            Mode::Lines
        };
        Style {
            format,
            color,
            progress,
        }
    }
}

/// An error a subcommand ends with; `main` prints it and picks the exit code.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad spec or dataset: exit 2.
    #[error("{0}")]
    Input(Box<Diagnostic>),
    /// Bad arguments or an unknown name: exit 2.
    #[error("{message}")]
    Usage {
        message: String,
        hint: Option<String>,
    },
    /// The run or store failed: exit 1.
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    pub fn usage(message: impl Into<String>, hint: Option<String>) -> CliError {
        CliError::Usage {
            message: message.into(),
            hint,
        }
    }

    fn exit(&self) -> Exit {
        match self {
            CliError::Input(_) | CliError::Usage { .. } => Exit::Usage,
            CliError::Failed(_) => Exit::Failure,
        }
    }
}

impl From<Diagnostic> for CliError {
    fn from(d: Diagnostic) -> Self {
        CliError::Input(Box::new(d))
    }
}

impl From<crate::concurrency::UnknownStrategy> for CliError {
    fn from(e: crate::concurrency::UnknownStrategy) -> Self {
        CliError::Failed(e.to_string())
    }
}

impl From<crate::view::ViewError> for CliError {
    fn from(e: crate::view::ViewError) -> Self {
        use crate::view::ViewError;
        match e {
            ViewError::UnknownExperiment { name, known } => unknown_experiment(&name, &known),
            ViewError::Store(e) => e.into(),
            ViewError::Strategy(e) => e.into(),
            ViewError::Failed(e) => CliError::Failed(e),
        }
    }
}

impl From<crate::compare::NothingInCommon> for CliError {
    fn from(e: crate::compare::NothingInCommon) -> Self {
        CliError::usage(e.to_string(), Some(e.hint()))
    }
}

impl From<crate::html::PageError> for CliError {
    fn from(e: crate::html::PageError) -> Self {
        use crate::html::PageError;
        match e {
            PageError::View(e) => e.into(),
            PageError::IsFolder(_) | PageError::NoFolder { .. } => {
                let hint = e.hint();
                CliError::usage(e.to_string(), hint)
            }
            PageError::Write { .. } => CliError::Failed(e.to_string()),
        }
    }
}

impl From<crate::spec::SameName> for CliError {
    fn from(e: crate::spec::SameName) -> Self {
        CliError::usage(
            e.to_string(),
            Some("give one of them a different `name:`".into()),
        )
    }
}

impl From<StoreError> for CliError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UnknownExperiment(_) | StoreError::ExperimentExists(_) => CliError::Usage {
                message: e.to_string(),
                hint: None,
            },
            StoreError::ReadOnly { ref fix, .. } => {
                CliError::Usage {
                    message: format!("{e}, so nothing can be recorded or changed in it"),
                    hint: Some(format!(
                        "{fix}, or record into another store with --storage PATH; `list` and `show` read it as it is"
                    )),
                }
            }
            StoreError::Unreadable { ref fix, .. } => CliError::Usage {
                message: e.to_string(),
                hint: Some(fix.clone()),
            },
            StoreError::NotAStore { .. } | StoreError::TooNew { .. } => CliError::Usage {
                message: e.to_string(),
                hint: Some(
                    "point --storage (or DOTEVALS_STORAGE) at a dotevals store or a new file"
                        .into(),
                ),
            },
            other => CliError::Failed(other.to_string()),
        }
    }
}

/// Runs the parsed command line and returns the exit status.
pub fn main(cli: Cli) -> Exit {
    let style = Style::resolve(&cli.global, cli.command.format());
    let storage = crate::store::locate(cli.global.storage.as_deref());
    let storage = storage.as_ref();
    // `--storage` as hints repeat it: a server's URL without its password.
    let storage_arg = cli
        .global
        .storage
        .as_deref()
        .map(|arg| match crate::store::is_server(arg) {
            true => storage.location(),
            false => arg,
        });
    let result = match cli.command {
        Command::Run(args) => run::run(args, storage, storage_arg, style),
        Command::Rescore(args) => rescore::rescore(args, storage, storage_arg, style),
        Command::Show(args) => show::show(args, storage, style),
        Command::Compare(args) => compare::compare(args, storage, style),
        Command::Report(args) => report::report(args, storage, style),
        Command::Export(args) => export::export(args, storage),
        Command::List(_) => list::list(storage, style),
        Command::Validate(args) => validate::validate(args, style),
        Command::Delete(args) => manage::delete(args, storage, style),
        Command::Rename(args) => manage::rename(args, storage, style),
        Command::Merge(args) => merge::merge(args, style),
        Command::Cache(args) => cache::cache(args, storage, style),
        Command::MockServer(args) => mock_server::serve(args),
    };
    match result {
        Ok(exit) => exit,
        Err(e) => {
            print_error(&e, style.color);
            e.exit()
        }
    }
}

/// `error: ...` then an optional `hint: ...`, on stderr.
fn print_error(e: &CliError, color: bool) {
    let label = if color {
        "\x1b[1;31merror\x1b[0m"
    } else {
        "error"
    };
    let mut err = std::io::stderr().lock();
    let _ = match e {
        CliError::Usage {
            message,
            hint: Some(hint),
        } => writeln!(err, "{label}: {message}\n  hint: {hint}"),
        other => writeln!(err, "{label}: {other}"),
    };
}

/// The longest experiment name, in characters.
const NAME_MAX: usize = 100;

/// Checks a new experiment's name (clap value parser): 1 to 100 characters, no
/// control characters, and no leading `-`, so the name can be typed back as an
/// argument (`dotevals show NAME`) and printed safely.
pub fn experiment_name(s: &str) -> Result<String, String> {
    if s.trim().is_empty() {
        return Err("the name is empty".into());
    }
    if s.starts_with('-') {
        return Err("a name may not start with `-` (it would read as an option)".into());
    }
    if s.chars().any(char::is_control) {
        return Err("a name may not hold control characters".into());
    }
    let n = s.chars().count();
    if n > NAME_MAX {
        return Err(format!(
            "the name has {n} characters; the most is {NAME_MAX}"
        ));
    }
    Ok(s.to_owned())
}

/// Reads `--lease` (clap value parser): a duration such as `30s` or `2m`,
/// from 1 second (a heartbeat every sixth of it must have room) to a day.
pub fn parse_lease(s: &str) -> Result<std::time::Duration, String> {
    let d = humantime::parse_duration(s.trim())
        .map_err(|e| format!("{e}; write it as 30s, 2m or 1h"))?;
    if d < std::time::Duration::from_secs(1) || d > std::time::Duration::from_secs(86_400) {
        return Err("a lease is from 1s to 24h".into());
    }
    Ok(d)
}

/// Opens the store for a read command, read-only; a missing store means no experiments.
fn open_for_reading(storage: &dyn Storage) -> Result<Option<Box<dyn Store>>, CliError> {
    Ok(storage.open_read_only()?)
}

/// Opens the store for a command that changes it; a missing store means no experiments.
fn open_for_writing(storage: &dyn Storage) -> Result<Option<Box<dyn Store>>, CliError> {
    Ok(storage.open_existing()?)
}

/// A store error about experiment `name`, with a suggestion when it does not exist.
fn known_experiment(store: &dyn Store, name: &str, e: StoreError) -> CliError {
    match e {
        StoreError::UnknownExperiment(_) => {
            unknown_experiment(name, &store.experiment_names().unwrap_or_default())
        }
        other => other.into(),
    }
}

/// The error for an unknown experiment, with a suggestion when one is close.
fn unknown_experiment(name: &str, known: &[String]) -> CliError {
    let hint = match crate::diagnostic::did_you_mean(name, known.iter().map(String::as_str)) {
        Some(m) => Some(format!("did you mean `{m}`? `dotevals list` shows all experiments")),
        None if known.is_empty() => Some("the store has no experiments yet; create one with `dotevals run SPEC --experiment NAME`".into()),
        None => Some("`dotevals list` shows all experiments".into()),
    };
    CliError::usage(format!("no experiment named `{name}`"), hint)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_valid() {
        Cli::command().debug_assert();
    }
}
