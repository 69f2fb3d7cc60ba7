//! `dotevals validate SPEC...`: every check `run` makes before its first
//! request (spec, templates, evaluators, every dataset row), without sending one.

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;

use super::{emit, json, print_error, CliError, Format, Style};
use crate::Exit;

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Spec files to check
    #[arg(required = true, value_name = "SPEC")]
    pub specs: Vec<PathBuf>,
}

/// One valid spec, as `--format json` prints it.
#[derive(Debug, Serialize)]
struct Checked {
    spec: String,
    name: String,
    samples: u64,
    provider: String,
    model: String,
    evaluators: Vec<String>,
    strategy: String,
}

pub fn validate(args: ValidateArgs, style: Style) -> Result<Exit, CliError> {
    let mut checked = Vec::new();
    let mut failed = false;
    for path in &args.specs {
        match check(path) {
            Ok(c) => checked.push(c),
            Err(e) => {
                print_error(&e, style.color);
                failed = true;
            }
        }
    }
    match style.format {
        Format::Json => emit(&json(&checked)?)?,
        Format::Table => {
            let mut out = String::new();
            for c in &checked {
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
            }
            emit(&out)?;
        }
    }
    Ok(if failed { Exit::Usage } else { Exit::Success })
}

fn check(path: &std::path::Path) -> Result<Checked, CliError> {
    let eval = crate::spec::load(path)?;
    let scan = crate::dataset::scan(&eval.dataset, &eval.required_columns, |_, _| Ok(()))?;
    Ok(Checked {
        spec: path.display().to_string(),
        name: eval.name.clone(),
        samples: scan.rows,
        provider: eval.model.provider.as_str().into(),
        model: eval.model.name.clone(),
        evaluators: eval.evaluators.iter().map(|e| e.name.clone()).collect(),
        strategy: eval.concurrency.to_string(),
    })
}
