//! Flushing freshly written objects to disk before a ref may point at them.
//!
//! gix writes loose objects through a temporary file and a rename, without fsync. A process
//! killed afterwards loses nothing (the page cache survives it), but a machine that loses power
//! could come back with a ref pointing at an object that never reached the disk. So before the
//! ref moves, every loose object this commit wrote is flushed, and so are the fan-out
//! directories holding them. Objects already in packs were durable before.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::PathBuf;

use gix::ObjectId;

use crate::Error;

/// Flushes the loose files of `ids` and their directories.
pub(crate) fn sync_objects(
    repo: &gix::Repository,
    ids: impl IntoIterator<Item = ObjectId>,
) -> Result<(), Error> {
    let objects = repo.objects.store_ref().path().to_owned();
    let mut dirs = BTreeSet::new();
    for id in ids {
        let hex = id.to_hex().to_string();
        let dir: PathBuf = objects.join(&hex[..2]);
        let path = dir.join(&hex[2..]);
        match File::open(&path) {
            Ok(file) => file.sync_all().map_err(|source| Error::io(&path, source))?,
            // In a pack, or the empty tree git never stores: nothing to flush.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(Error::io(&path, source)),
        }
        dirs.insert(dir);
    }
    for dir in &dirs {
        crate::refs::sync_dir(dir)?;
    }
    Ok(())
}
