//! Publishing a report on branch `state` with a 9P transaction, through the mounted
//! `/Database`: the same files a shell script would write.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use super::Error;
use crate::report::{Report, STATE_BRANCH};

static NEXT: AtomicU64 = AtomicU64::new(0);

fn db_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::Database(format!("{what} {}: {e}", path.display()))
}

/// Commits `report` as one commit of branch `state` (created on first use).
pub fn publish(db: &Path, report: &Report) -> Result<(), Error> {
    let branch = db.join("branch").join(STATE_BRANCH);
    if !branch.exists() {
        match std::fs::create_dir(&branch) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(db_err("creating", &branch, e)),
        }
    }
    let boot = report.boot_id.get(..8).unwrap_or("boot");
    let name = format!("agent-{boot}-{}", NEXT.fetch_add(1, Ordering::Relaxed));
    let txn = branch.join("transactions").join(name);
    std::fs::create_dir(&txn).map_err(|e| db_err("starting", &txn, e))?;
    let result = (|| {
        for (file, content) in report.to_files() {
            let path = txn.join("rw").join(file);
            std::fs::write(&path, content).map_err(|e| db_err("writing", &path, e))?;
        }
        let short = report.applied_commit.get(..12).unwrap_or(&report.applied_commit);
        let msg = txn.join("msg");
        std::fs::write(&msg, format!("guest: applied {short}"))
            .map_err(|e| db_err("writing", &msg, e))?;
        let ctl = txn.join("ctl");
        std::fs::write(&ctl, "commit").map_err(|e| {
            let why = std::fs::read_to_string(&ctl).unwrap_or_default();
            Error::Database(format!("committing the report: {e}: {}", why.trim()))
        })
    })();
    if result.is_err() {
        let _ = std::fs::write(txn.join("ctl"), "close");
    }
    result
}
