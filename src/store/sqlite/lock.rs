//! One run per evaluation at a time: an OS file lock per (store, experiment,
//! evaluation). The operating system drops the lock when its holder exits,
//! however it exits (kill -9 included), so a crash never leaves it stuck.
//!
//! Lock files live beside the store (`dotevals.db.<hash>.lock`), so whoever
//! may write the store may lock it: nothing is shared with other users through
//! a world folder, and a run needs no folder that SQLite does not need already.
//! A lock file exists only while its lock is held (or after a crash, until the
//! next look at it): the holder removes it before releasing the lock. Removing
//! a file that another process has just opened is the classic race of this
//! scheme, so every taker checks, once it holds the lock, that the path still
//! names the file it locked, and starts over if not. Only a holder removes the
//! path, so a taker that passes the check owns the one live lock file.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use crate::store::LockError;

/// Held while an evaluation runs; released on drop or process exit.
#[derive(Debug)]
pub struct EvaluationLock {
    file: File,
    path: PathBuf,
    /// The store's folder, when taking this lock created it: removed again on
    /// release if nothing else is in it (a refused first run leaves nothing).
    created_dir: Option<PathBuf>,
}

impl Drop for EvaluationLock {
    fn drop(&mut self) {
        // Remove while still holding the lock; see the module doc.
        if can_remove_open_files() {
            let _ = std::fs::remove_file(&self.path);
        }
        let _ = self.file.unlock();
        if let Some(dir) = &self.created_dir {
            // Fails, as it should, unless the folder is empty.
            let _ = std::fs::remove_dir(dir);
        }
    }
}

/// Where the lock of `evaluation` of `experiment` in the store at `db` lives.
fn lock_path(db: &Path, experiment: &str, evaluation: &str) -> PathBuf {
    let db = stable_path(db);
    let key = format!("{experiment}\0{evaluation}");
    let hash = xxhash_rust::xxh3::xxh3_64(key.as_bytes());
    let name = db
        .file_name()
        .map_or_else(|| "dotevals.db".into(), |n| n.to_string_lossy());
    let dir = db.parent().unwrap_or(Path::new("."));
    dir.join(format!("{name}.{hash:016x}.lock"))
}

/// Takes the lock for `evaluation` of `experiment` in the store at `db`, without waiting.
pub fn lock(db: &Path, experiment: &str, evaluation: &str) -> Result<EvaluationLock, LockError> {
    let path = lock_path(db, experiment, evaluation);
    let io = |source| LockError::Failed {
        what: format!("cannot create the lock file {}", path.display()),
        source,
    };
    let dir = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let created_dir = (!dir.exists()).then(|| dir.clone());
    // Each round that loses the race described in the module doc starts over;
    // losing it a hundred times in a row means something else is wrong.
    let mut last = None;
    for _ in 0..100 {
        std::fs::create_dir_all(&dir).map_err(io)?;
        let mut file = match open(&path) {
            Ok(file) => file,
            // The folder or the file went away between creating and opening.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                last = Some(e);
                continue;
            }
            Err(e) => return Err(io(e)),
        };
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
                if !still_at(&file, &path) {
                    // Its holder removed it before we locked it: not the live lock.
                    let _ = file.unlock();
                    continue;
                }
                // Say who holds it, for the message another process will print.
                let _ = file
                    .set_len(0)
                    .and_then(|_| file.rewind())
                    .and_then(|_| write!(file, "{}", std::process::id()));
                return Ok(EvaluationLock {
                    file,
                    path,
                    created_dir,
                });
            }
            Err(TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = file.read_to_string(&mut pid);
                let holder = if pid.trim().is_empty() {
                    String::new()
                } else {
                    format!(" (pid {})", pid.trim())
                };
                return Err(LockError::Busy {
                    experiment: experiment.into(),
                    evaluation: evaluation.into(),
                    holder,
                });
            }
            Err(TryLockError::Error(e)) => return Err(io(e)),
        }
    }
    Err(io(last.unwrap_or_else(|| {
        std::io::Error::other("the lock file kept being replaced while it was being locked")
    })))
}

/// Opens (creating) a lock file. One left by a crashed run of another user may
/// not be writable by this one; a read-only handle locks just as well.
fn open(path: &Path) -> std::io::Result<File> {
    let created = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path);
    match created {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && path.exists() => {
            File::open(path)
        }
        other => other,
    }
}

/// Whether `path` still names the open `file`.
#[cfg(unix)]
fn still_at(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

/// Elsewhere lock files are never removed (an open file cannot be), so the
/// path always names the file.
#[cfg(not(unix))]
fn still_at(_: &File, _: &Path) -> bool {
    true
}

fn can_remove_open_files() -> bool {
    cfg!(unix)
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
/// A store that says "running" with no holder was left by a crash. Never
/// creates anything (readers may have a read-only folder); a lock file left by a
/// crash is removed on the way.
pub fn is_held(db: &Path, experiment: &str, evaluation: &str) -> bool {
    let path = lock_path(db, experiment, evaluation);
    let Ok(file) = File::open(&path) else {
        return false;
    };
    match file.try_lock() {
        Ok(()) => {
            if can_remove_open_files() && still_at(&file, &path) {
                let _ = std::fs::remove_file(&path);
            }
            false
        }
        Err(TryLockError::WouldBlock) => true,
        Err(TryLockError::Error(_)) => false,
    }
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

    #[test]
    fn lock_files_sit_beside_the_store_and_go_with_their_lock() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("store/s.db");
        let held = lock(&db, "x", "e").unwrap();
        let path = lock_path(&db, "x", "e");
        assert_eq!(path.parent(), Some(dir.path().join("store").as_path()));
        assert!(path.exists());
        drop(held);
        assert!(!path.exists(), "released locks leave no file");
        assert!(
            !dir.path().join("store").exists(),
            "the folder the lock created goes too while empty"
        );
        // A file left by a crash is taken over, then removed.
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, "123").unwrap();
        assert!(!is_held(&db, "x", "e"));
        assert!(!path.exists(), "a reader clears a leftover");
        std::fs::write(&path, "123").unwrap();
        drop(lock(&db, "x", "e").unwrap());
        assert!(!path.exists());
    }

    #[test]
    fn a_lock_on_a_removed_file_is_not_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let path = lock_path(&db, "x", "e");
        let first = lock(&db, "x", "e").unwrap();
        // Another taker opened the file, then lost the race to the release.
        let stale = File::open(&path).unwrap();
        drop(first);
        stale.try_lock().unwrap();
        assert!(!still_at(&stale, &path));
        // Its lock on the removed file does not block the real one.
        let second = lock(&db, "x", "e").unwrap();
        assert!(is_held(&db, "x", "e"));
        drop(second);
    }

    #[test]
    fn never_two_holders_while_locks_are_taken_and_removed_at_once() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        use std::sync::Arc;
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("s.db");
        let holders = Arc::new(AtomicUsize::new(0));
        let taken = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let (db, holders, taken) = (db.clone(), holders.clone(), taken.clone());
                std::thread::spawn(move || {
                    for _ in 0..200 {
                        if let Ok(held) = lock(&db, "x", "e") {
                            assert_eq!(holders.fetch_add(1, Ordering::SeqCst), 0);
                            taken.fetch_add(1, Ordering::SeqCst);
                            std::thread::yield_now();
                            holders.fetch_sub(1, Ordering::SeqCst);
                            drop(held);
                        }
                        is_held(&db, "x", "e");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(taken.load(Ordering::SeqCst) > 0);
        assert!(!lock_path(&db, "x", "e").exists());
    }
}
