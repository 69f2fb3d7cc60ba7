//! `dotevals validate SPEC...`: every check `run` makes before its first
//! request (spec, templates, evaluators, every dataset row, evaluation names
//! unique across the specs, the API key variable), without sending one. It also
//! renders the templates for the first rows, so a template that fails or does
//! too much work is found here rather than on every sample of a run.

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use super::output::{print, Render};
use super::{print_error, CliError, Style};
use crate::runner::api_key;
use crate::spec::{check_unique, Evaluation, MatrixArg, Override, Prompt};
use crate::template::RenderError;
use crate::Exit;

/// Rows whose templates are rendered as a check.
const RENDERED_ROWS: usize = 10;

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Spec files to check
    #[arg(required = true, value_name = "SPEC")]
    pub specs: Vec<PathBuf>,

    /// Override a spec field by its dotted path, the value read as YAML (repeatable; as `run --set`)
    #[arg(long = "set", value_name = "KEY=VALUE", value_parser = Override::parse)]
    pub overrides: Vec<Override>,

    /// Add or replace a matrix axis: PATH=V1,V2 (repeatable; as `run --matrix`)
    #[arg(long = "matrix", value_name = "PATH=V1,V2", value_parser = MatrixArg::parse)]
    pub matrix: Vec<MatrixArg>,
    #[command(flatten)]
    pub output: super::FormatArg,
}

/// The valid specs, as `validate` prints them (a JSON list).
#[derive(Debug, Serialize)]
#[serde(transparent)]
struct Validated(Vec<Checked>);

/// One valid spec.
#[derive(Debug, Serialize)]
struct Checked {
    spec: String,
    name: String,
    samples: u64,
    /// Requests a run sends at most: samples times repeats.
    requests: u64,
    provider: String,
    model: String,
    evaluators: Vec<String>,
    /// The strategy with its settings, such as `sliding_window(4)`.
    strategy: String,
    /// What its `command` scorers will run.
    commands: Vec<String>,
}

impl Render for Validated {
    fn table(&self) -> String {
        let mut out = String::new();
        for c in &self.0 {
            out += &format!(
                "ok  {}: {} · {} samples · {} ({}) · {} · {}\n",
                c.spec,
                c.name,
                c.samples,
                c.model,
                c.provider,
                c.strategy,
                if c.evaluators.is_empty() {
                    "no evaluators".into()
                } else {
                    c.evaluators.join(", ")
                }
            );
            for command in &c.commands {
                out += &format!("    {command}\n");
            }
        }
        if self.0.len() > 1 {
            let requests: u64 = self.0.iter().map(|c| c.requests).sum();
            out += &format!(
                "{} evaluations, {requests} requests at most\n",
                self.0.len()
            );
        }
        out
    }
}

pub fn validate(args: ValidateArgs, style: Style) -> Result<Exit, CliError> {
    let mut checked = Vec::new();
    let mut loaded = Vec::new();
    // Rows per dataset checked: the cells of a matrix over one dataset read it once.
    let mut rows = std::collections::HashMap::new();
    let mut failed = false;
    for path in &args.specs {
        let cells = crate::spec::load_cells(
            path,
            &args.overrides,
            &args.matrix,
            crate::spec::Options::default(),
        );
        let cells = match cells {
            Ok(cells) => cells,
            Err(e) => {
                print_error(&e.into(), style.color);
                failed = true;
                continue;
            }
        };
        for eval in cells {
            match check(path, eval, &loaded, &mut rows) {
                Ok((c, eval)) => {
                    for warning in eval.warnings() {
                        eprintln!("warning: {}: {warning}", eval.name);
                    }
                    checked.push(c);
                    loaded.push(eval);
                }
                Err(e) => {
                    print_error(&e, style.color);
                    failed = true;
                    // The other cells of a matrix would say the same.
                    break;
                }
            }
        }
    }
    print(style, &Validated(checked))?;
    Ok(if failed { Exit::Usage } else { Exit::Success })
}

/// The checks `run` makes, in its order: the spec, a name no earlier spec took,
/// every dataset row, the API keys (the model's and its judges'); then the
/// first rows rendered.
fn check(
    path: &std::path::Path,
    eval: Evaluation,
    earlier: &[Evaluation],
    read: &mut std::collections::HashMap<u64, u64>,
) -> Result<(Checked, Evaluation), CliError> {
    check_unique(earlier, &eval)?;
    let key = crate::runner::Reads::key(&eval);
    let rows = match read.get(&key) {
        Some(rows) => *rows,
        None => {
            let scan = crate::dataset::scan(&eval.dataset, &eval.required_columns, |row, id| {
                crate::runner::refuse_marked_id(&eval, row.line, id)
            })?;
            read.insert(key, scan.rows);
            scan.rows
        }
    };
    let key = api_key(&eval.model, &eval.spec_path)?;
    crate::runner::judge_keys(&eval, key.as_ref())?;
    render_first_rows(&eval)?;
    let checked = Checked {
        spec: path.display().to_string(),
        name: eval.name.clone(),
        samples: rows,
        requests: rows * u64::from(eval.repeats),
        provider: eval.model.provider.as_str().into(),
        model: eval.model.name.clone(),
        evaluators: eval.evaluators.iter().map(|e| e.name.clone()).collect(),
        strategy: match eval.model.provider.http().map_or(0, |h| h.replicas.len()) {
            0 => eval.concurrency.to_string(),
            n => format!("{} per replica, {n} replicas", eval.concurrency),
        },
        commands: eval.programs(),
    };
    Ok((checked, eval))
}

/// Renders the prompt of the first [`RENDERED_ROWS`] rows, as a run would. Any
/// failure is an error at the template in the spec, naming the row. Evaluator
/// arguments are rendered too (with an empty `output`), but only a template that
/// does too much work fails there: other errors may depend on the real output.
fn render_first_rows(eval: &Evaluation) -> Result<(), CliError> {
    let mut prompts = match &eval.prompt {
        Prompt::Text(t) => vec![("prompt".to_owned(), t, true)],
        Prompt::Messages(ms) => ms
            .iter()
            .enumerate()
            .map(|(i, (_, t))| (format!("messages[{i}].content"), t, true))
            .collect(),
    };
    for (i, e) in eval.evaluators.iter().enumerate() {
        for (key, t) in e.scorer.templates() {
            prompts.push((format!("evaluators[{i}].{key}"), t, false));
        }
    }
    for row in eval.dataset.rows()?.take(RENDERED_ROWS) {
        let row = row?;
        let vars = crate::template::context(&row.values);
        let with_output = minijinja::context! { output => "", ..vars.clone() };
        for (key, template, is_prompt) in &prompts {
            let ctx = if *is_prompt { &vars } else { &with_output };
            let (message, hint) = match template.render_checked(ctx) {
                Ok(_) => continue,
                Err(RenderError::Failed(_)) if !is_prompt => continue,
                Err(e @ (RenderError::TooMuchWork(_) | RenderError::OverInline)) => (
                    e.to_string(),
                    "a render may take at most this much work; loop over less (a slice such as `text[:200]`)",
                ),
                Err(RenderError::Failed(m)) => (
                    m,
                    "a run would record this error for the sample instead of a reply",
                ),
            };
            let d = crate::spec::at_value(
                &eval.spec_path,
                &eval.spec_text,
                key,
                format!(
                    "template in `{key}` fails on row {} ({}:{}): {message}",
                    row.index + 1,
                    eval.dataset.file().display(),
                    row.line
                ),
            )
            .with_hint(hint);
            return Err(d.into());
        }
    }
    Ok(())
}
