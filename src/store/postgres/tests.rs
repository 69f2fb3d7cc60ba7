//! The PostgreSQL backend against a real server: `DOTEVALS_TEST_POSTGRES`
//! names one where the tests may create schemas (`.ci/run` starts a
//! throwaway cluster; locally, `eval "$(scripts/throwaway-postgres start)"`).
//! Each test works in a schema of its own, dropped at its end.

use super::*;
use crate::store::conformance;

/// The server the tests use; `None` (recorded as a skip) without one.
pub fn server(test: &str) -> Option<String> {
    match std::env::var("DOTEVALS_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            let why =
                "DOTEVALS_TEST_POSTGRES is not set (scripts/throwaway-postgres starts a server)";
            eprintln!("skipped: {test}: {why}");
            if let Some(path) = std::env::var_os("DOTEVALS_SKIPS") {
                use std::io::Write;
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .expect("the skips file opens");
                writeln!(file, "{test}: {why}").expect("the skip is recorded");
            }
            None
        }
    }
}

/// A schema of its own on `url`, dropped when this is.
pub struct Scratch {
    url: String,
    schema: String,
}

impl Scratch {
    pub fn new(url: &str, tag: &str) -> Scratch {
        let schema = format!("t_{tag}_{}_{}", std::process::id(), fastrand::u32(..));
        Scratch {
            url: url.to_owned(),
            schema,
        }
    }

    /// The store's URL: the server's, with this schema.
    pub fn url(&self) -> String {
        let sep = if self.url.contains('?') { '&' } else { '?' };
        format!("{}{sep}schema={}", self.url, self.schema)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Ok(mut c) = postgres::Client::connect(&self.url, postgres::NoTls) {
            let _ = c.batch_execute(&format!(
                "DROP SCHEMA IF EXISTS {} CASCADE",
                quote_ident(&self.schema)
            ));
        }
    }
}

#[test]
fn postgres_passes_the_conformance_suite() {
    let Some(url) = server("postgres_passes_the_conformance_suite") else {
        return;
    };
    for (name, case) in conformance::CASES {
        let scratch = Scratch::new(&url, "conformance");
        let storage = PgStorage::new(&scratch.url());
        eprintln!("conformance: {name}");
        case(&storage);
    }
}

#[test]
fn a_store_is_created_once_and_knows_its_version() {
    let Some(url) = server("a_store_is_created_once_and_knows_its_version") else {
        return;
    };
    let scratch = Scratch::new(&url, "create");
    let storage = PgStorage::new(&scratch.url());
    assert!(storage.open_existing().unwrap().is_none(), "no store yet");
    // Two processes creating it at once agree (the second finds it made).
    std::thread::scope(|s| {
        let a = s.spawn(|| storage.open_or_create().map(|_| ()));
        let b = s.spawn(|| storage.open_or_create().map(|_| ()));
        a.join().unwrap().unwrap();
        b.join().unwrap().unwrap();
    });
    assert!(storage.open_existing().unwrap().is_some());
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let version: String = c
        .query_one(
            &format!(
                "SELECT value FROM {}.meta WHERE key = 'schema_version'",
                quote_ident(&scratch.schema)
            ),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(version, crate::store::SCHEMA_VERSION.to_string());
    // A newer store is refused, not written.
    c.execute(
        &format!(
            "UPDATE {}.meta SET value = '999' WHERE key = 'schema_version'",
            quote_ident(&scratch.schema)
        ),
        &[],
    )
    .unwrap();
    assert!(matches!(
        storage.open_existing(),
        Err(StoreError::TooNew { found: 999, .. })
    ));
}

#[test]
fn a_server_that_is_not_there_is_an_error_that_says_so_within_the_timeout() {
    // A port nothing listens on: refused at once.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let storage = PgStorage::new(&format!("postgres://someone:s3cret-pw@127.0.0.1:{port}/db"));
    assert!(
        !storage.location().contains("s3cret"),
        "{}",
        storage.location()
    );
    let started = std::time::Instant::now();
    let err = storage.open_or_create().err().expect("no server, no store");
    assert!(started.elapsed() < db::CONNECT_TIMEOUT);
    let text = format!("{err}");
    assert!(text.contains(&format!("127.0.0.1:{port}")), "{text}");
    assert!(!text.contains("s3cret"), "the password leaked: {text}");
    // The same over TLS (see tls_connections_verify_the_server_certificate).
    let tls = PgStorage::new(&format!("postgres://u@127.0.0.1:{port}/db?sslmode=require"));
    let err = tls.open_or_create().err().expect("no server, no store");
    assert!(format!("{err}").contains("Connection refused"), "{err}");
}

#[test]
fn refused_credentials_and_a_missing_database_are_named() {
    let Some(url) = server("refused_credentials_and_a_missing_database_are_named") else {
        return;
    };
    let missing = match url.rsplit_once('/') {
        Some((server, _)) => format!("{server}/no_such_database"),
        None => panic!("a URL with a database: {url}"),
    };
    let err = PgStorage::new(&missing)
        .open_or_create()
        .err()
        .expect("no database");
    assert!(format!("{err}").contains("no_such_database"), "{err}");
}

/// A store of the first version this backend shipped is brought up to date
/// when opened, and then has every column a new store has.
#[test]
fn an_older_store_is_upgraded_when_opened() {
    let Some(url) = server("an_older_store_is_upgraded_when_opened") else {
        return;
    };
    let (old, fresh) = (Scratch::new(&url, "old"), Scratch::new(&url, "fresh"));
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let q = quote_ident(&old.schema);
    c.batch_execute(&format!("CREATE SCHEMA {q}")).unwrap();
    c.batch_execute(&super::schema::CURRENT.replace("{schema}", &q))
        .unwrap();
    c.execute(
        &format!(
            "INSERT INTO {q}.meta (key, value) VALUES ('app', 'dotevals'), ('schema_version', $1)"
        ),
        &[&super::schema::BASE.to_string()],
    )
    .unwrap();
    assert!(PgStorage::new(&old.url())
        .open_existing()
        .unwrap()
        .is_some());
    PgStorage::new(&fresh.url()).open_or_create().unwrap();
    let layout = |c: &mut postgres::Client, schema: &str| -> Vec<(String, String, String)> {
        c.query(
            "SELECT table_name::text, column_name::text, data_type::text FROM information_schema.columns
             WHERE table_schema = $1 ORDER BY table_name, column_name",
            &[&schema],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect()
    };
    assert_eq!(layout(&mut c, &old.schema), layout(&mut c, &fresh.schema));
    let indexes = |c: &mut postgres::Client, schema: &str| -> Vec<(String, String)> {
        c.query(
            "SELECT indexname::text, replace(indexdef, $1 || '.', '') FROM pg_indexes
             WHERE schemaname = $1 ORDER BY indexname",
            &[&schema],
        )
        .unwrap()
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect()
    };
    let fresh_indexes = indexes(&mut c, &fresh.schema);
    assert!(fresh_indexes
        .iter()
        .any(|(name, _)| name == "samples_endpoint"));
    assert_eq!(indexes(&mut c, &old.schema), fresh_indexes);
    let version: String = c
        .query_one(
            &format!("SELECT value FROM {q}.meta WHERE key = 'schema_version'"),
            &[],
        )
        .unwrap()
        .get(0);
    assert_eq!(version, crate::store::SCHEMA_VERSION.to_string());
}

/// With `sslmode=require` every connection is TLS and the server's
/// certificate is verified: against `sslrootcert`'s CA the store works (the
/// conformance suite passes over it), without it the connection is refused
/// naming the unknown issuer and saying what to add.
#[test]
fn tls_connections_verify_the_server_certificate() {
    let Some(url) = server("tls_connections_verify_the_server_certificate") else {
        return;
    };
    let ca = std::env::var("DOTEVALS_TEST_POSTGRES_CA")
        .expect("DOTEVALS_TEST_POSTGRES_CA: scripts/throwaway-postgres sets it beside the URL");
    let scratch = Scratch::new(&url, "tls");
    let verified = format!("{}&sslmode=require&sslrootcert={ca}", scratch.url());
    let storage = PgStorage::new(&verified);
    let store = storage.open_or_create().unwrap();
    drop(store);
    let target = storage.target().unwrap();
    let db = Db::connect(target).unwrap();
    let ssl: bool = db
        .with(|c| {
            Ok(c.query_one(
                "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
                &[],
            )?
            .get(0))
        })
        .unwrap();
    assert!(ssl, "the connection is encrypted");
    for (name, case) in conformance::CASES {
        let scratch = Scratch::new(&url, "tlsc");
        eprintln!("conformance over TLS: {name}");
        case(&PgStorage::new(&format!(
            "{}&sslmode=require&sslrootcert={ca}",
            scratch.url()
        )));
    }

    let unverified = PgStorage::new(&format!("{}&sslmode=require", scratch.url()));
    let err = unverified
        .open_existing()
        .err()
        .expect("an unknown issuer is refused");
    let text = format!("{err}");
    assert!(text.contains("UnknownIssuer"), "{text}");
    assert!(
        matches!(&err, StoreError::Unreadable { fix, .. } if fix.contains("sslrootcert")),
        "{err:?}"
    );
    for (query, says) in [
        ("sslmode=bogus", "is not one of"),
        ("sslrootcert=/x.pem", "add sslmode=require"),
        (
            "sslmode=verify-full&sslrootcert=/no/such.pem",
            "cannot read PEM",
        ),
    ] {
        let err = PgStorage::new(&format!("{}&{query}", scratch.url()))
            .open_existing()
            .err()
            .expect("refused");
        assert!(format!("{err}").contains(says), "{query}: {err}");
    }
}

#[test]
fn a_run_lock_is_released_when_its_holder_goes() {
    let Some(url) = server("a_run_lock_is_released_when_its_holder_goes") else {
        return;
    };
    let scratch = Scratch::new(&url, "lock");
    let storage = PgStorage::new(&scratch.url());
    let store = storage.open_or_create().unwrap();
    let held = storage.lock("x", "e").unwrap();
    assert!(store.is_running("x", "e"));
    let busy = storage.lock("x", "e").err().expect("held elsewhere");
    assert!(format!("{busy}").contains("already being run"), "{busy}");
    // Another evaluation is free.
    let other = storage.lock("x", "f").unwrap();
    drop(other);
    drop(held);
    assert!(!store.is_running("x", "e"));
    storage.lock("x", "e").unwrap();
}
