//! Validation of a whole configuration tree, as the database does before a commit moves the ref.

use std::collections::BTreeMap;

use crate::catalogue::{known_paths, KEYS};
use crate::value::{normalize, Validation};
use crate::{by_path, Error, Host, CURRENT_VERSION};

/// A configuration tree: file path (relative, `/`-separated) to content. Directories are implied.
pub type Tree = BTreeMap<String, Vec<u8>>;

/// The tree `init` writes: every key at its default.
pub fn defaults(host: &Host) -> Tree {
    KEYS.iter().map(|key| (key.path.to_owned(), key.default_bytes(host))).collect()
}

/// Checks a tree of the current schema version before it becomes a head.
///
/// Paths for which `changed` is true are validated strictly, with `v`; the others were already
/// part of the head and are only required to be present, so that a value accepted with `--force`
/// (or one written by an older cairn for a bigger host) does not block unrelated changes.
pub fn validate_tree(
    tree: &Tree,
    changed: &dyn Fn(&str) -> bool,
    host: &Host,
    v: Validation,
) -> Result<(), Error> {
    if let Some(path) = tree.keys().find(|path| by_path(path).is_none()) {
        return Err(Error::UnknownPath { path: path.clone(), known: known_paths() });
    }
    for key in KEYS {
        match tree.get(key.path) {
            None => return Err(Error::Missing { key: key.name.into(), path: key.path.into() }),
            Some(content) if changed(key.path) => {
                normalize(key, content, host, v)?;
            }
            Some(_) => {}
        }
    }
    let version = crate::migrate::version_of(tree)?;
    if version != CURRENT_VERSION {
        return Err(Error::Migration {
            to: CURRENT_VERSION,
            key: "schema-version".into(),
            reason: format!("the tree is at v{version}; it must be migrated before it is changed"),
        });
    }
    Ok(())
}

/// The keys of `tree` whose values the schema refuses (a value written by hand with git, or
/// one larger than could be read: `too_large` lists those with their sizes), with why.
/// Limits that depend on the host are checked against `host`.
pub fn invalid_values(
    tree: &Tree,
    too_large: &BTreeMap<String, u64>,
    host: &Host,
) -> Vec<(&'static crate::Key, Error)> {
    KEYS.iter()
        .filter_map(|key| {
            if let Some(size) = too_large.get(key.path) {
                return Some((key, Error::refused_too_long(key.name, *size)));
            }
            let stored = tree.get(key.path)?;
            crate::value::check_stored(key, stored, host).err().map(|e| (key, e))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST: Host = Host { ram_mib: 4096, cores: 4 };

    #[test]
    fn defaults_validate() {
        let tree = defaults(&HOST);
        assert_eq!(tree.len(), KEYS.len());
        validate_tree(&tree, &|_| true, &HOST, Validation::default()).expect("defaults are valid");
    }

    #[test]
    fn refuses_missing_unknown_and_invalid() {
        let mut tree = defaults(&HOST);
        tree.remove("memory");
        let err = validate_tree(&tree, &|_| true, &HOST, Validation::default()).unwrap_err();
        assert!(matches!(err, Error::Missing { .. }), "{err}");

        let mut tree = defaults(&HOST);
        tree.insert("etc/motd".into(), b"hi\n".to_vec());
        let err = validate_tree(&tree, &|_| true, &HOST, Validation::default()).unwrap_err();
        assert!(err.to_string().starts_with("etc/motd: not a configuration key"), "{err}");

        let mut tree = defaults(&HOST);
        tree.insert("memory".into(), b"lots\n".to_vec());
        assert!(validate_tree(&tree, &|_| true, &HOST, Validation::default()).is_err());
        // Unchanged paths are not re-validated.
        assert!(validate_tree(&tree, &|p| p != "memory", &HOST, Validation::default()).is_ok());
    }

    #[test]
    fn forced_daemon_keys_survive_unrelated_changes() {
        let mut tree = defaults(&HOST);
        tree.insert("etc/docker/daemon.json".into(), br#"{"custom": 1}"#.to_vec());
        let strict = Validation::default();
        assert!(validate_tree(&tree, &|_| true, &HOST, strict).is_err());
        assert!(validate_tree(&tree, &|_| true, &HOST, Validation { force: true }).is_ok());
        assert!(validate_tree(&tree, &|p| p == "memory", &HOST, strict).is_ok());
    }
}
