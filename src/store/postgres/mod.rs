//! The PostgreSQL backend: a team's store on a server (`--storage
//! postgres://user@host:port/db`), the same tables as SQLite's in a schema
//! of their own (`dotevals`, or `?schema=NAME` in the URL), versioned in
//! its `meta` table. Several processes and machines write at once: each run
//! commits its batches on a connection of its own ([`writer`]), and the run
//! lock of an evaluation is a session advisory lock, which the server drops
//! with the connection of a process that dies.
//!
//! The `postgres` crate (synchronous, over tokio-postgres) matches the
//! store's synchronous traits; sqlx could not be linked beside rusqlite
//! (both link `sqlite3`). Connections are plain TCP unless the URL asks for
//! TLS (`sslmode=require`, `verify-ca` or `verify-full`): then the server's
//! certificate is always verified, against the system's roots and the CA
//! certificates of `sslrootcert=FILE` ([`tls`]).

mod cache;
mod db;
mod fleet;
mod lookup;
mod read;
mod record;
mod schema;
#[cfg(test)]
mod tests;
mod tls;
mod writer;

use std::str::FromStr;

pub use db::Db;
use db::{quote_ident, Target};

use super::{RunLock, Storage, Store, StoreError};

/// The schema the tables live in unless the URL names one.
pub const DEFAULT_SCHEMA: &str = "dotevals";

/// Whether `arg` (`--storage`) names a PostgreSQL server.
pub fn is_url(arg: &str) -> bool {
    arg.starts_with("postgres://") || arg.starts_with("postgresql://")
}

/// A store on a PostgreSQL server, opened on demand.
pub struct PgStorage {
    target: Result<Target, String>,
    /// The URL without its password, for messages.
    location: String,
}

impl PgStorage {
    /// The store `url` names. A URL the client cannot read is reported when
    /// the store is first used (`locate` never fails).
    pub fn new(url: &str) -> PgStorage {
        let target = parse(url);
        let location = match &target {
            Ok(t) => t.location.clone(),
            Err(_) => without_password(url),
        };
        PgStorage { target, location }
    }

    fn target(&self) -> Result<&Target, StoreError> {
        self.target.as_ref().map_err(|why| StoreError::Unreadable {
            location: self.location.clone(),
            why: why.clone(),
            fix: "write it as postgres://USER[:PASSWORD]@HOST[:PORT]/DATABASE[?schema=NAME][&sslmode=require[&sslrootcert=CA.pem]]".into(),
        })
    }
}

/// Reads `url`: the `schema` parameter is ours, the rest the client's; the
/// password comes from the URL or `PGPASSWORD`.
fn parse(url: &str) -> Result<Target, String> {
    let mut schema = DEFAULT_SCHEMA.to_owned();
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut kept = Vec::new();
    let (mut tls, mut root) = (false, None);
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("schema", name)) if !name.is_empty() => schema = name.to_owned(),
            Some(("sslmode", "disable" | "allow" | "prefer")) => tls = false,
            Some(("sslmode", "require" | "verify-ca" | "verify-full")) => tls = true,
            Some(("sslmode", mode)) => {
                return Err(format!(
                    "sslmode={mode} is not one of disable, allow, prefer, require, verify-ca, verify-full"
                ))
            }
            Some(("sslrootcert", path)) if !path.is_empty() => root = Some(path.to_owned()),
            _ => kept.push(pair),
        }
    }
    if root.is_some() && !tls {
        return Err("sslrootcert= is used only with TLS: add sslmode=require".into());
    }
    let tls = tls.then(|| tls::config(root.as_deref())).transpose()?;
    let client_url = match kept.is_empty() {
        true => base.to_owned(),
        false => format!("{base}?{}", kept.join("&")),
    };
    let mut config = postgres::Config::from_str(&client_url)
        .map_err(|e| format!("not a PostgreSQL URL the client can read ({e})"))?;
    if config.get_password().is_none() {
        if let Ok(password) = std::env::var("PGPASSWORD") {
            config.password(password);
        }
    }
    config.connect_timeout(db::CONNECT_TIMEOUT);
    // A server that vanished mid-run fails a query within this, instead of
    // the system's retransmission timeout (a quarter of an hour).
    config.tcp_user_timeout(db::CONNECT_TIMEOUT * 3);
    config.application_name("dotevals");
    if tls.is_some() {
        config.ssl_mode(postgres::config::SslMode::Require);
    }
    Ok(Target {
        config,
        tls,
        schema,
        location: without_password(url),
    })
}

/// `url` with any password replaced, for messages.
fn without_password(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

impl Storage for PgStorage {
    fn location(&self) -> &str {
        &self.location
    }

    fn open_or_create(&self) -> Result<Box<dyn Store>, StoreError> {
        let store = PgStore::connect(self.target()?)?;
        store.create()?;
        Ok(Box::new(store))
    }

    fn open_existing(&self) -> Result<Option<Box<dyn Store>>, StoreError> {
        let store = PgStore::connect(self.target()?)?;
        match store.check()? {
            Found::Nothing => Ok(None),
            Found::Older => {
                store.create()?;
                Ok(Some(Box::new(store)))
            }
            Found::Current => Ok(Some(Box::new(store))),
        }
    }

    fn open_read_only(&self) -> Result<Option<Box<dyn Store>>, StoreError> {
        self.open_existing()
    }

    fn lock(&self, experiment: &str, evaluation: &str) -> Result<RunLock, StoreError> {
        record::lock(self.target()?, experiment, evaluation, false)
    }

    fn lock_worker(&self, experiment: &str, evaluation: &str) -> Result<RunLock, StoreError> {
        record::lock(self.target()?, experiment, evaluation, true)
    }
}

/// Whether schema `$1` has the `meta` table. Read from `pg_class` with the
/// statement's snapshot: a name lookup (`to_regclass`) may answer from a
/// cache that has not yet seen another process create it.
const META_EXISTS: &str = "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
    WHERE n.nspname = $1 AND c.relname = 'meta')";

/// A connection to a store on a server.
pub struct PgStore {
    db: Db,
    target: Target,
}

impl PgStore {
    fn connect(target: &Target) -> Result<PgStore, StoreError> {
        Ok(PgStore {
            db: Db::connect(target)?,
            target: target.clone(),
        })
    }

    /// What the schema holds: nothing yet, a store at some version, or
    /// (`TooNew`, `NotAStore`) something this build cannot use.
    fn check(&self) -> Result<Found, StoreError> {
        let schema = self.db.schema.clone();
        let version = self.db.with(move |c| stored_version(c, &schema))?;
        match version {
            None => Ok(Found::Nothing),
            Some(v) => match v.and_then(|v| v.parse::<i64>().ok()) {
                Some(v) if v == crate::store::SCHEMA_VERSION => Ok(Found::Current),
                Some(found) if found > crate::store::SCHEMA_VERSION => Err(StoreError::TooNew {
                    location: self.target.location.clone(),
                    found,
                }),
                Some(v) if v >= schema::BASE => Ok(Found::Older),
                _ => Err(StoreError::NotAStore {
                    location: self.target.location.clone(),
                }),
            },
        }
    }

    /// Creates the schema and its tables unless they exist, and brings an
    /// older store up to date (under a lock, so two processes starting at
    /// once agree).
    fn create(&self) -> Result<(), StoreError> {
        if self.check()? == Found::Current {
            return Ok(());
        }
        let schema = self.db.schema.clone();
        self.db.with(move |c| {
            let mut tx = c.transaction()?;
            tx.execute("SELECT pg_advisory_xact_lock(hashtext('dotevals schema'))", &[])?;
            let quoted = quote_ident(&schema);
            let meta = format!("{quoted}.meta");
            let mut version = match stored_version(&mut tx, &schema)? {
                Some(v) => v.and_then(|v| v.parse::<i64>().ok()).unwrap_or(schema::BASE),
                None => {
                    tx.batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {quoted}"))?;
                    tx.batch_execute(&schema::CURRENT.replace("{schema}", &quoted))?;
                    tx.execute(
                        &format!("INSERT INTO {meta} (key, value) VALUES ('app', 'dotevals'), ('schema_version', $1)"),
                        &[&schema::BASE.to_string()],
                    )?;
                    schema::BASE
                }
            };
            for (from, step) in schema::MIGRATIONS {
                if *from == version {
                    tx.batch_execute(&step.replace("{schema}", &quoted))?;
                    version += 1;
                }
            }
            tx.execute(
                &format!("UPDATE {meta} SET value = $1 WHERE key = 'schema_version'"),
                &[&version.to_string()],
            )?;
            tx.commit()
        })?;
        self.check().map(|_| ())
    }
}

/// How the schema stands, as [`PgStore::check`] reads it.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    Nothing,
    Older,
    Current,
}

/// The schema's `meta.schema_version`: `None` without a `meta` table.
fn stored_version(
    c: &mut impl postgres::GenericClient,
    schema: &str,
) -> Result<Option<Option<String>>, postgres::Error> {
    if !c.query_one(META_EXISTS, &[&schema])?.get::<_, bool>(0) {
        return Ok(None);
    }
    let meta = format!("{}.meta", quote_ident(schema));
    let row = c.query_opt(
        &format!("SELECT value FROM {meta} WHERE key = 'schema_version'"),
        &[],
    )?;
    Ok(Some(row.map(|r| r.get(0))))
}

impl Store for PgStore {
    fn location(&self) -> &str {
        &self.target.location
    }
}
