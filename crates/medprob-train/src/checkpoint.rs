//! Crash-safe checkpoints. Each checkpoint is a complete folder written under a fresh
//! name; only when every file in it is on disk does a small pointer file (`LATEST` or
//! `BEST`, written atomically) switch to it, and only then are older folders removed. A
//! run killed at any instant leaves the pointer on a complete checkpoint.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Result, TrainError};

/// Where training stands: enough to resume exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainState {
    /// Epoch in progress (0-based).
    pub epoch: usize,
    /// Next loader batch of that epoch.
    pub batch: usize,
    /// Optimisation steps taken.
    pub step: usize,
    /// Best validation RSUM so far (−1 before the first validation).
    pub best_rsum: f64,
    /// Epoch (1-based) of the best checkpoint, 0 if none yet.
    pub best_epoch: usize,
    /// Consecutive skipped (non-finite) steps.
    pub bad_steps: usize,
}

impl Default for TrainState {
    fn default() -> Self {
        Self {
            epoch: 0,
            batch: 0,
            step: 0,
            best_rsum: -1.0,
            best_epoch: 0,
            bad_steps: 0,
        }
    }
}

/// The checkpoint folder a pointer file (`LATEST`, `BEST`) in `root` names, if any.
pub fn resolve(root: &Path, pointer: &str) -> Result<Option<PathBuf>> {
    let p = root.join(pointer);
    if !p.exists() {
        return Ok(None);
    }
    let name = std::fs::read_to_string(&p).map_err(|e| TrainError::io(&p, e))?;
    let dir = root.join(name.trim());
    if !dir.is_dir() {
        return Err(TrainError::Checkpoint {
            path: p,
            reason: format!("points to {}, which does not exist", dir.display()),
        });
    }
    Ok(Some(dir))
}

/// Write a checkpoint into `root/<name>` with `write` (which fills the folder), then point
/// `pointer` at it and remove the folders it replaced (those starting with `prefix`).
pub fn publish(
    root: &Path,
    pointer: &str,
    prefix: &str,
    name: &str,
    write: impl FnOnce(&Path) -> Result<()>,
) -> Result<PathBuf> {
    let dir = root.join(name);
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))?;
    }
    std::fs::create_dir_all(&dir).map_err(|e| TrainError::io(&dir, e))?;
    write(&dir)?;
    abort_hook();
    let p = root.join(pointer);
    medprob_core::fs::write_atomic(&p, name.as_bytes()).map_err(|e| TrainError::io(&p, e))?;
    let entries = std::fs::read_dir(root).map_err(|e| TrainError::io(root, e))?;
    for entry in entries.flatten() {
        let n = entry.file_name().to_string_lossy().into_owned();
        if n.starts_with(prefix) && n != name && entry.path().is_dir() {
            // A failure here only leaves an old folder behind.
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    Ok(dir)
}

/// Fault injection for tests: abort the process (as `kill -9` would stop it) inside the
/// N-th checkpoint publication of this process, after its files are written and before the
/// pointer moves to it.
pub const ABORT_IN_CHECKPOINT_ENV: &str = "MEDPROB_ABORT_IN_CHECKPOINT";

fn abort_hook() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static PUBLISHED: AtomicUsize = AtomicUsize::new(0);
    let n = PUBLISHED.fetch_add(1, Ordering::SeqCst) + 1;
    if std::env::var(ABORT_IN_CHECKPOINT_ENV)
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        == Some(n)
    {
        std::process::abort();
    }
}

/// Save the state as JSON, atomically.
pub fn save_state(dir: &Path, state: &TrainState) -> Result<()> {
    let p = dir.join("state.json");
    let json = serde_json::to_vec_pretty(state).expect("state serialises");
    medprob_core::fs::write_atomic(&p, &json).map_err(|e| TrainError::io(&p, e))
}

/// Read a state written by [`save_state`].
pub fn load_state(dir: &Path) -> Result<TrainState> {
    let p = dir.join("state.json");
    let text = std::fs::read_to_string(&p).map_err(|e| TrainError::io(&p, e))?;
    serde_json::from_str(&text).map_err(|e| TrainError::Checkpoint {
        path: p,
        reason: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pointer_moves_only_to_complete_folders() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        assert!(resolve(r, "LATEST").unwrap().is_none());
        publish(r, "LATEST", "step-", "step-1", |d| {
            std::fs::write(d.join("a"), "1").map_err(|e| TrainError::io(d, e))
        })
        .unwrap();
        // A write that fails leaves the pointer where it was.
        let e = publish(r, "LATEST", "step-", "step-2", |d| {
            Err(TrainError::Checkpoint {
                path: d.to_path_buf(),
                reason: "disk full".into(),
            })
        })
        .unwrap_err();
        assert!(e.to_string().contains("disk full"));
        assert_eq!(resolve(r, "LATEST").unwrap().unwrap(), r.join("step-1"));
        publish(r, "LATEST", "step-", "step-3", |_| Ok(())).unwrap();
        assert_eq!(resolve(r, "LATEST").unwrap().unwrap(), r.join("step-3"));
        assert!(!r.join("step-1").exists() && !r.join("step-2").exists());
        let s = TrainState {
            epoch: 2,
            batch: 5,
            step: 17,
            ..TrainState::default()
        };
        save_state(&r.join("step-3"), &s).unwrap();
        assert_eq!(load_state(&r.join("step-3")).unwrap(), s);
    }
}
