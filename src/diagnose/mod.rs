//! `cairn diagnose`: what a bug report needs, gathered by one command (Docker Desktop's
//! Diagnose & Feedback): a list of checks, each `[OK]` or `[FAIL] why` ([`checks`]), and one
//! archive of logs and state with its secrets masked ([`archive`], [`mask`]).

pub mod archive;
pub mod checks;
pub mod mask;

use std::path::{Path, PathBuf};

use crate::up::status::{Status, VmState};
use crate::Error;
pub use checks::{Check, Verdict};

/// What `cairn diagnose` found, and where it left the archive.
#[derive(Debug, Clone)]
pub struct Report {
    pub checks: Vec<Check>,
    pub archive: PathBuf,
}

impl Report {
    /// Whether no check failed.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.verdict != Verdict::Fail)
    }
}

/// Runs the checks on the data directory `home` and its database `db`, telling `each` as each
/// ends, then writes the archive under `home/diagnostics` (private, like the rest of it).
pub fn run(home: &Path, db: &Path, each: &mut dyn FnMut(&Check)) -> Result<Report, Error> {
    let run = crate::up::run_dir(home);
    let up = crate::up::instance::running(&run.pid());
    let mut status = Status::load(&run.status()).unwrap_or_default();
    if up.is_none() {
        status.vm = VmState::Stopped;
    }
    let probe = checks::Probe { home, db, run, status, up };
    let checks = checks::run(&probe, each);
    let dir = home.join("diagnostics");
    std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    // 2026-12-07 23:16:12Z -> 20261207T231612Z
    let stamp: String = crate::utc(i64::try_from(now).unwrap_or_default())
        .replace(' ', "T")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    let mut archive = dir.join(format!("cairn-diagnose-{stamp}.tar.gz"));
    for n in 2.. {
        if !archive.exists() {
            break;
        }
        archive = dir.join(format!("cairn-diagnose-{stamp}-{n}.tar.gz"));
    }
    archive::write(&probe, &checks, &archive)?;
    Ok(Report { checks, archive })
}
