//! `dotevals delete` and `dotevals rename`.

use clap::Args;
use serde_json::json;

use super::{
    emit, json as to_json, known_experiment, open_for_writing, unknown_experiment, CliError,
    Format, Style,
};
use crate::store::{Storage, Store};
use crate::Exit;

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Experiment to delete, with all its evaluations and samples
    pub name: String,
}

#[derive(Debug, Args)]
pub struct RenameArgs {
    /// Current name
    pub from: String,
    /// New name (must not exist yet; up to 100 characters, not starting with `-`)
    #[arg(value_parser = super::experiment_name)]
    pub to: String,
}

/// Opens the store and checks that experiment `name` exists and no run of it is alive.
fn open_idle(storage: &dyn Storage, name: &str) -> Result<Box<dyn Store>, CliError> {
    let store = open_for_writing(storage)?.ok_or_else(|| unknown_experiment(name, &[]))?;
    let x = store
        .experiment(name)
        .map_err(|e| known_experiment(store.as_ref(), name, e))?;
    if let Some(e) = x
        .evaluations
        .iter()
        .find(|e| store.is_running(name, &e.name))
    {
        return Err(CliError::usage(
            format!(
                "experiment `{name}` is being run right now (evaluation `{}`)",
                e.name
            ),
            Some("wait for the run to finish, or stop it with Ctrl-C".into()),
        ));
    }
    Ok(store)
}

pub fn delete(args: DeleteArgs, storage: &dyn Storage, style: Style) -> Result<Exit, CliError> {
    let store = open_idle(storage, &args.name)?;
    let samples = store
        .delete_experiment(&args.name)
        .map_err(|e| known_experiment(store.as_ref(), &args.name, e))?;
    match style.format {
        Format::Json => emit(&to_json(
            &json!({"deleted": args.name, "samples": samples}),
        )?)?,
        Format::Table => emit(&format!(
            "deleted experiment {} ({samples} samples)\n",
            args.name
        ))?,
    }
    Ok(Exit::Success)
}

pub fn rename(args: RenameArgs, storage: &dyn Storage, style: Style) -> Result<Exit, CliError> {
    let store = open_idle(storage, &args.from)?;
    store
        .rename_experiment(&args.from, &args.to)
        .map_err(|e| known_experiment(store.as_ref(), &args.from, e))?;
    match style.format {
        Format::Json => emit(&to_json(&json!({"renamed": args.from, "to": args.to}))?)?,
        Format::Table => emit(&format!(
            "renamed experiment {} to {}\n",
            args.from, args.to
        ))?,
    }
    Ok(Exit::Success)
}
