//! One run per evaluation at a time: an OS file lock per (store, experiment,
//! evaluation). The operating system drops the lock when its holder exits,
//! however it exits (kill -9 included), so a crash never leaves it stuck.
//! Lock files live in the system temp folder, so a refused run writes nothing
//! next to the user's files.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

/// Held while an evaluation runs; released on drop or process exit.
#[derive(Debug)]
pub struct EvaluationLock {
    _file: File,
}

/// Why a lock could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("evaluation `{evaluation}` of experiment `{experiment}` is already being run by another dotevals process{holder}")]
    Busy {
        experiment: String,
        evaluation: String,
        holder: String,
    },
    #[error("cannot create the lock file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Takes the lock for `evaluation` of `experiment` in the store at `db`, without waiting.
pub fn lock(db: &Path, experiment: &str, evaluation: &str) -> Result<EvaluationLock, LockError> {
    let dir = std::env::temp_dir().join("dotevals-locks");
    let db = stable_path(db);
    let key = format!("{}\0{experiment}\0{evaluation}", db.display());
    let path = dir.join(format!(
        "{:016x}.lock",
        xxhash_rust::xxh3::xxh3_64(key.as_bytes())
    ));
    let io = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io)?;
    // A reader checking "is anyone running this?" holds the lock for an instant;
    // a few short retries keep that from refusing a real start.
    let mut result = file.try_lock();
    for _ in 0..5 {
        if !matches!(result, Err(TryLockError::WouldBlock)) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
        result = file.try_lock();
    }
    match result {
        Ok(()) => {
            // Say who holds it, for the message another process will print.
            let _ = file
                .set_len(0)
                .and_then(|_| file.rewind())
                .and_then(|_| write!(file, "{}", std::process::id()));
            Ok(EvaluationLock { _file: file })
        }
        Err(TryLockError::WouldBlock) => {
            let mut pid = String::new();
            let _ = file.read_to_string(&mut pid);
            let holder = if pid.trim().is_empty() {
                String::new()
            } else {
                format!(" (pid {})", pid.trim())
            };
            Err(LockError::Busy {
                experiment: experiment.into(),
                evaluation: evaluation.into(),
                holder,
            })
        }
        Err(TryLockError::Error(e)) => Err(io(e)),
    }
}

/// One spelling per file: `a/../s.db`, `./s.db` and a symlinked folder all name
/// the same store, even before it exists (the nearest existing folder is resolved).
fn stable_path(path: &Path) -> PathBuf {
    use std::path::Component;
    let absolute = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let parts: Vec<Component> = absolute.components().collect();
    let mut split = parts.len();
    while split > 0 && !parts[..split].iter().collect::<PathBuf>().exists() {
        split -= 1;
    }
    let existing: PathBuf = parts[..split].iter().collect();
    let mut out = existing.canonicalize().unwrap_or(existing);
    for part in &parts[split..] {
        match part {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(name) => out.push(name),
            _ => {}
        }
    }
    out
}

/// True while some process runs `evaluation` of `experiment` in the store at `db`.
/// A store that says "running" with no holder was left by a crash.
pub fn is_held(db: &Path, experiment: &str, evaluation: &str) -> bool {
    matches!(
        lock(db, experiment, evaluation),
        Err(LockError::Busy { .. })
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn second_lock_is_refused_until_the_first_drops() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let first = lock(&db, "x", "e").unwrap();
        let err = lock(&db, "x", "e").unwrap_err();
        assert!(err.to_string().contains("already being run"), "{err}");
        assert!(
            err.to_string()
                .contains(&format!("pid {}", std::process::id())),
            "{err}"
        );
        // Other spellings of the same store share the lock.
        let dotted = dir.path().join("sub/../s.db");
        assert!(matches!(
            lock(&dotted, "x", "e"),
            Err(LockError::Busy { .. })
        ));
        // Other evaluations and experiments are independent.
        let _other = lock(&db, "x", "f").unwrap();
        let _other2 = lock(&db, "y", "e").unwrap();
        assert!(is_held(&db, "x", "e"));
        drop(first);
        assert!(!is_held(&db, "x", "e"));
        lock(&db, "x", "e").unwrap();
    }
}
