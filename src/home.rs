//! Where cairn keeps its data.
//!
//! `CAIRN_HOME` holds everything (the database, later the guest image cache, sockets, logs and
//! status); it defaults to the XDG data directory (`$XDG_DATA_HOME/cairn`, else
//! `~/.local/share/cairn`). The database is `$CAIRN_HOME/db` unless `--db` or `CAIRN_DB` says
//! otherwise.

use std::path::{Path, PathBuf};

use crate::Error;

/// The data directory.
pub fn cairn_home() -> Result<PathBuf, Error> {
    home_from(|name| std::env::var_os(name).filter(|v| !v.is_empty()).map(PathBuf::from))
}

/// The database directory: `explicit` (from `--db` or `CAIRN_DB`) or `$CAIRN_HOME/db`.
pub fn db_dir(explicit: Option<&Path>) -> Result<PathBuf, Error> {
    match explicit {
        Some(path) => Ok(path.to_owned()),
        None => Ok(cairn_home()?.join("db")),
    }
}

/// Keeps what cairn writes to its owner: files are created 0600 and directories 0700 (the
/// umask, inherited by qemu and every other child), and a data directory that others can
/// read or enter is made 0700. Returns the old mode of a directory it tightened. The database
/// holds proxy credentials, the run directory the sockets that reconfigure the VM.
pub fn make_private(home: &Path) -> Result<Option<u32>, Error> {
    use std::os::unix::fs::PermissionsExt;
    // SAFETY: umask(2) only sets the process's file-mode creation mask.
    unsafe {
        libc::umask(0o077);
    }
    let Ok(meta) = std::fs::metadata(home) else { return Ok(None) };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 == 0 {
        return Ok(None);
    }
    std::fs::set_permissions(home, std::fs::Permissions::from_mode(mode & 0o700))
        .map_err(|source| Error::Io { path: home.to_owned(), source })?;
    Ok(Some(mode))
}

fn home_from(var: impl Fn(&str) -> Option<PathBuf>) -> Result<PathBuf, Error> {
    if let Some(home) = var("CAIRN_HOME") {
        return Ok(home);
    }
    if let Some(data) = var("XDG_DATA_HOME") {
        return Ok(data.join("cairn"));
    }
    var("HOME").map(|home| home.join(".local/share/cairn")).ok_or(Error::NoHome)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<PathBuf> + 'a {
        move |name| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| PathBuf::from(v))
    }

    #[test]
    fn a_loose_home_is_tightened_once() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let home = dir.path().join("home");
        std::fs::create_dir(&home).expect("mkdir");
        std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(make_private(&home).expect("chmod"), Some(0o755));
        let mode = std::fs::metadata(&home).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert_eq!(make_private(&home).expect("nothing to do"), None);
        std::fs::write(home.join("f"), "x").expect("write");
        let file = std::fs::metadata(home.join("f")).expect("stat").permissions().mode() & 0o777;
        assert_eq!(file, 0o600, "the umask is 077");
    }

    #[test]
    fn precedence() {
        let all = [("CAIRN_HOME", "/c"), ("XDG_DATA_HOME", "/x"), ("HOME", "/h")];
        assert_eq!(home_from(env(&all)).ok(), Some(PathBuf::from("/c")));
        assert_eq!(home_from(env(&all[1..])).ok(), Some(PathBuf::from("/x/cairn")));
        assert_eq!(home_from(env(&all[2..])).ok(), Some(PathBuf::from("/h/.local/share/cairn")));
        assert!(matches!(home_from(env(&[])), Err(Error::NoHome)));
    }
}
