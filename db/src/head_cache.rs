//! Branch heads for readers that ask very often: the 9P server resolves a head for nearly
//! every request, and reading a ref through gix costs an open, a read and a close, plus stats
//! of packed-refs. The last value read is kept while the file that holds it is unchanged, which
//! one stat tells: git and cairn both replace a ref file by renaming a new one over it, so its
//! inode, size or times change with every update, whoever makes it.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;

use gix::ObjectId;

/// What identifies one version of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime: (i64, i64),
    ctime: (i64, i64),
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        let m = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            dev: m.dev(),
            ino: m.ino(),
            size: m.size(),
            mtime: (m.mtime(), m.mtime_nsec()),
            ctime: (m.ctime(), m.ctime_nsec()),
        })
    }
}

/// Where a branch's value came from: its loose file, or (when there is none) packed-refs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stamp {
    Loose(FileStamp),
    Packed(Option<FileStamp>),
}

/// Heads by full ref name, each with the stamp of the file it was read from.
#[derive(Debug, Default)]
pub(crate) struct HeadCache {
    entries: Mutex<HashMap<String, (Stamp, Option<ObjectId>)>>,
}

impl HeadCache {
    /// The head of `name` (a full ref name): the cached value when its file is unchanged, else
    /// `read()`'s, which is then cached. The stamp is taken before reading, so a change that
    /// races with the read is seen next time.
    pub(crate) fn get<E>(
        &self,
        git_dir: &Path,
        name: &str,
        read: impl FnOnce() -> Result<Option<ObjectId>, E>,
    ) -> Result<Option<ObjectId>, E> {
        let stamp = match FileStamp::of(&git_dir.join(name)) {
            Some(loose) => Stamp::Loose(loose),
            None => Stamp::Packed(FileStamp::of(&git_dir.join("packed-refs"))),
        };
        let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((cached, head)) = entries.get(name) {
            if *cached == stamp {
                return Ok(*head);
            }
        }
        drop(entries);
        let head = read()?;
        entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
        entries.insert(name.to_owned(), (stamp, head));
        Ok(head)
    }

    /// Forgets everything: this process just moved a ref.
    pub(crate) fn clear(&self) {
        self.entries.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}
