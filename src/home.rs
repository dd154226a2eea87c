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
    fn precedence() {
        let all = [("CAIRN_HOME", "/c"), ("XDG_DATA_HOME", "/x"), ("HOME", "/h")];
        assert_eq!(home_from(env(&all)).ok(), Some(PathBuf::from("/c")));
        assert_eq!(home_from(env(&all[1..])).ok(), Some(PathBuf::from("/x/cairn")));
        assert_eq!(home_from(env(&all[2..])).ok(), Some(PathBuf::from("/h/.local/share/cairn")));
        assert!(matches!(home_from(env(&[])), Err(Error::NoHome)));
    }
}
