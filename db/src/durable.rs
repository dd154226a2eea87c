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

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::testing::{blob, git, git_with_input};

    /// Where git keeps `id` as a loose object.
    fn loose_path(git_dir: &Path, id: ObjectId) -> PathBuf {
        let hex = id.to_hex().to_string();
        git_dir.join("objects").join(&hex[..2]).join(&hex[2..])
    }

    #[test]
    fn loose_objects_are_flushed() {
        let (_dir, repo) = crate::testing::bare_repo();
        let ids = ["one\n", "two\n", "three\n"].map(|c| blob(repo.git_dir(), c));
        for id in ids {
            assert!(loose_path(repo.git_dir(), id).is_file(), "{id} is loose");
        }
        sync_objects(&repo, ids).expect("loose objects flush");
    }

    #[test]
    fn objects_that_are_not_loose_are_skipped() {
        let (_dir, repo) = crate::testing::bare_repo();
        let packed = blob(repo.git_dir(), "packed\n");
        let pack = repo.git_dir().join("objects/pack/pack");
        let list = format!("{packed}\n");
        git_with_input(
            repo.git_dir(),
            &["pack-objects", "-q", &pack.to_string_lossy()],
            list.as_bytes(),
        );
        git(repo.git_dir(), &["prune-packed"]);
        assert!(!loose_path(repo.git_dir(), packed).exists(), "only in the pack");
        git(repo.git_dir(), &["cat-file", "-e", &packed.to_string()]);
        // git knows the empty tree without storing it.
        let empty_tree = ObjectId::empty_tree(gix::hash::Kind::Sha1);
        assert!(!loose_path(repo.git_dir(), empty_tree).exists(), "never stored");
        let loose = blob(repo.git_dir(), "loose\n");
        sync_objects(&repo, [packed, empty_tree, loose]).expect("what is not loose is skipped");
    }

    #[test]
    fn a_path_that_cannot_be_opened_is_an_error() {
        let (_dir, repo) = crate::testing::bare_repo();
        let id = blob(repo.git_dir(), "one\n");
        let path = loose_path(repo.git_dir(), id);
        // The fan-out directory is a file: opening the object fails with ENOTDIR, not NotFound.
        let fan_out = path.parent().expect("a fan-out directory");
        std::fs::remove_dir_all(fan_out).expect("remove the fan-out directory");
        std::fs::write(fan_out, "").expect("a file in its place");
        let err = sync_objects(&repo, [id]).expect_err("not openable");
        let Error::Io { path: failed, source } = &err else { panic!("an I/O error: {err}") };
        assert_eq!(*failed, path);
        assert_eq!(source.kind(), std::io::ErrorKind::NotADirectory, "{source}");
    }

    #[test]
    fn an_object_path_in_a_symlink_loop_is_an_error() {
        let (_dir, repo) = crate::testing::bare_repo();
        let id = blob(repo.git_dir(), "one\n");
        let path = loose_path(repo.git_dir(), id);
        std::fs::remove_file(&path).expect("remove the object");
        std::os::unix::fs::symlink(&path, &path).expect("a link to itself");
        let err = sync_objects(&repo, [id]).expect_err("not openable");
        let Error::Io { path: failed, source } = &err else { panic!("an I/O error: {err}") };
        assert_eq!(*failed, path);
        assert_eq!(source.raw_os_error(), Some(rustix::io::Errno::LOOP.raw_os_error()), "{source}");
    }
}
