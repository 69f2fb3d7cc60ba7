//! A connection to a PostgreSQL server, usable from anywhere in the program.
//!
//! The `postgres` crate's client blocks on a runtime of its own, which tokio
//! forbids inside an async task (the runner calls the store from one): such
//! a call runs on a scoped thread of its own instead. Every connection puts
//! the store's schema first on its `search_path`, so the queries name tables
//! as SQLite's do.

use std::cell::RefCell;
use std::time::Duration;

use postgres::{Client, Config, NoTls};

use crate::store::StoreError;

/// How long connecting may take before the server counts as unreachable.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where a store lives on a server: its connection settings and schema.
#[derive(Clone)]
pub struct Target {
    pub config: Config,
    /// Set when the URL asks for TLS (`sslmode=require`).
    pub tls: Option<std::sync::Arc<rustls::ClientConfig>>,
    /// The schema the tables live in (`dotevals` unless the URL says).
    pub schema: String,
    /// The URL without its password, for messages.
    pub location: String,
}

/// One connection, with the schema on its search path.
pub struct Db {
    /// `None` only while dropping.
    client: RefCell<Option<Client>>,
    pub schema: String,
}

impl Db {
    /// Connects to `target` within [`CONNECT_TIMEOUT`]; a server that cannot
    /// be reached, refuses the credentials or lacks the database is an
    /// error that says which, naming the server.
    pub fn connect(target: &Target) -> Result<Db, StoreError> {
        let mut client = outside_runtime(|| match &target.tls {
            None => target.config.connect(NoTls),
            Some(tls) => target
                .config
                .connect(tokio_postgres_rustls::MakeRustlsConnect::new(
                    (**tls).clone(),
                )),
        })
        .map_err(|e| connect_error(target, e))?;
        let path = format!("SET search_path TO {}", quote_ident(&target.schema));
        outside_runtime(|| client.batch_execute(&path)).map_err(backend)?;
        Ok(Db {
            client: RefCell::new(Some(client)),
            schema: target.schema.clone(),
        })
    }

    /// Whether the connection is known to be gone.
    pub fn is_closed(&self) -> bool {
        self.client.borrow().as_ref().is_none_or(Client::is_closed)
    }

    /// Runs `f` with the client (on a thread of its own inside an async task).
    pub fn with<R: Send>(
        &self,
        f: impl FnOnce(&mut Client) -> Result<R, postgres::Error> + Send,
    ) -> Result<R, StoreError> {
        let mut client = self.client.borrow_mut();
        let Some(client) = client.as_mut() else {
            return Err(StoreError::WriterLost);
        };
        outside_runtime(|| f(client)).map_err(backend)
    }
}

/// Closing a client blocks as its queries do: outside the runtime too.
impl Drop for Db {
    fn drop(&mut self) {
        if let Some(client) = self.client.get_mut().take() {
            outside_runtime(move || drop(client));
        }
    }
}

/// Runs `f` where the client may block: here, or on a scoped thread when
/// this thread drives async tasks.
fn outside_runtime<R: Send>(f: impl FnOnce() -> R + Send) -> R {
    if tokio::runtime::Handle::try_current().is_err() {
        return f();
    }
    std::thread::scope(|s| match s.spawn(f).join() {
        Ok(r) => r,
        Err(panic) => std::panic::resume_unwind(panic),
    })
}

/// A server's error as the store's, with the server's own message (the
/// client's error text alone says only "db error").
pub fn backend(e: postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => {
            let mut text = db.message().to_owned();
            if let Some(detail) = db.detail() {
                text.push_str(&format!(" ({detail})"));
            }
            StoreError::Backend(text.into())
        }
        None => StoreError::Backend(Box::new(e)),
    }
}

/// `name` as a quoted SQL identifier.
pub fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Why connecting failed, in words that say what to fix.
fn connect_error(target: &Target, e: postgres::Error) -> StoreError {
    let why = match e.as_db_error() {
        Some(db) => match db.code().code() {
            // invalid_password, invalid_authorization_specification
            "28P01" | "28000" => format!("the server refused the credentials ({})", db.message()),
            // invalid_catalog_name
            "3D000" => format!(
                "{}; create it (createdb) or name another in the URL",
                db.message()
            ),
            _ => db.message().to_owned(),
        },
        None if e.to_string().contains("timed out") => format!(
            "no answer within {} s: is the server running and reachable?",
            CONNECT_TIMEOUT.as_secs()
        ),
        None => {
            // The TLS handshake's own words (an unknown issuer, a name that
            // does not match) are in the error's sources.
            let mut why = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                why = format!("{why}: {s}");
                source = s.source();
            }
            why
        }
    };
    let fix = match (&target.tls, why.contains("certificate")) {
        (Some(_), true) => "the server's certificate is not one this machine trusts for that address: add its CA with sslrootcert=CA.pem in the URL (a PEM file; cloud providers publish theirs)",
        (None, _) if why.contains("SSL") || why.contains("encryption") => "the server wants TLS: add sslmode=require to the URL (and sslrootcert=CA.pem for a private CA)",
        _ => "check the URL given to --storage (or DOTEVALS_STORAGE), and that the server accepts connections from here",
    };
    StoreError::Unreadable {
        location: target.location.clone(),
        why,
        fix: fix.into(),
    }
}
