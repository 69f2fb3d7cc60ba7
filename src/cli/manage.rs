//! `dotevals delete` and `dotevals rename`.

use clap::Args;
use serde::Serialize;

use super::output::{print, Render};
use super::{known_experiment, open_for_writing, unknown_experiment, CliError, Style};
use crate::store::{Storage, Store};
use crate::Exit;

#[derive(Debug, Args)]
pub struct DeleteArgs {
    /// Experiment to delete, with all its evaluations and samples
    pub name: String,
    #[command(flatten)]
    pub output: super::FormatArg,
}

#[derive(Debug, Args)]
pub struct RenameArgs {
    /// Current name
    pub from: String,
    /// New name (must not exist yet; up to 100 characters, not starting with `-`)
    #[arg(value_parser = super::experiment_name)]
    pub to: String,
    #[command(flatten)]
    pub output: super::FormatArg,
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
    print(
        style,
        &Deleted {
            deleted: args.name,
            samples,
        },
    )?;
    Ok(Exit::Success)
}

pub fn rename(args: RenameArgs, storage: &dyn Storage, style: Style) -> Result<Exit, CliError> {
    let store = open_idle(storage, &args.from)?;
    store
        .rename_experiment(&args.from, &args.to)
        .map_err(|e| known_experiment(store.as_ref(), &args.from, e))?;
    print(
        style,
        &Renamed {
            renamed: args.from,
            to: args.to,
        },
    )?;
    Ok(Exit::Success)
}

/// What `delete` prints.
#[derive(Debug, Serialize)]
struct Deleted {
    /// The experiment's name.
    deleted: String,
    /// Sample records deleted with it.
    samples: u64,
}

impl Render for Deleted {
    fn table(&self) -> String {
        format!(
            "deleted experiment {} ({} samples)\n",
            self.deleted, self.samples
        )
    }
}

/// What `rename` prints.
#[derive(Debug, Serialize)]
struct Renamed {
    /// The old name.
    renamed: String,
    /// The new name.
    to: String,
}

impl Render for Renamed {
    fn table(&self) -> String {
        format!("renamed experiment {} to {}\n", self.renamed, self.to)
    }
}
