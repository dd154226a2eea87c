//! Validation of a whole configuration tree, as the database does before a commit moves the ref.

use std::collections::BTreeMap;

use crate::catalogue::{by_path, known_paths, KEYS};
use crate::value::{normalize, Validation};
pub use crate::version::Tree;
use crate::version::{version_of, CURRENT_VERSION};
use crate::{Error, Host};

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
    let version = version_of(tree)?;
    if version != CURRENT_VERSION {
        return Err(Error::Migration {
            to: CURRENT_VERSION,
            key: "schema-version".into(),
            reason: format!("the tree is at v{version}; it must be migrated before it is changed"),
        });
    }
    Ok(())
}

/// The paths whose values may only grow ([`check_change`]).
pub const GROWS_ONLY: &[&str] = &["disk"];

/// Refuses a change from `old` (the previous commit's tree) to `new` that neither value alone
/// shows: `disk` going down once the data disk exists. (Below the disk as it is, the value
/// itself is refused; this also refuses taking back a growth the VM has not applied yet, so
/// that the history of `disk` only goes up.) Before the first `up` there is no disk to cut
/// off, and any size goes.
pub fn check_change(old: &Tree, new: &Tree, host: &Host) -> Result<(), Error> {
    if host.disk_mib == 0 {
        return Ok(());
    }
    if let (Some(was), Some(now)) = (disk_mib(old), disk_mib(new)) {
        if now < was {
            return Err(Error::Refused {
                key: "disk".into(),
                value: crate::error::quote(&now.to_string()),
                problem: format!("is smaller than the disk's current size, {was} MiB"),
                allowed: format!(
                    "{was} MiB or more: the disk only grows (`cairn disk wipe` starts over with an empty one)"
                ),
            });
        }
    }
    Ok(())
}

fn disk_mib(tree: &Tree) -> Option<u64> {
    tree.get("disk").and_then(|v| crate::value::parse_mib(String::from_utf8_lossy(v).trim()))
}

/// Puts back into `target` (a tree rolled back to) the `disk` of `current` (or the disk's
/// size on `host`, if larger) where `target`'s is smaller, once the disk exists: a rollback of
/// the configuration never shrinks the data disk. Returns one note per value kept.
pub fn keep_growing_values(current: &Tree, target: &mut Tree, host: &Host) -> Vec<String> {
    let floor = disk_mib(current).unwrap_or(0).max(host.disk_mib);
    match disk_mib(target) {
        Some(wanted) if host.disk_mib > 0 && wanted < floor => {
            let kept = floor;
            target.insert("disk".into(), format!("{kept}\n").into_bytes());
            vec![format!(
                "disk: kept at {kept} MiB, not {wanted} (the data disk is {} MiB and only grows)",
                host.disk_mib
            )]
        }
        _ => Vec::new(),
    }
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

    const HOST: Host = Host { ram_mib: 4096, cores: 4, disk_mib: 0 };

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

    #[test]
    fn a_rollback_keeps_the_disk_as_large_as_it_is() {
        let host = Host { disk_mib: 81920, ..HOST };
        let mut current = defaults(&host);
        current.insert("disk".into(), b"102400\n".to_vec());
        let mut old = defaults(&host);
        let notes = keep_growing_values(&current, &mut old, &host);
        assert_eq!(old["disk"], b"102400\n", "the current, larger value");
        assert_eq!(notes.len(), 1, "{notes:?}");
        current.insert("disk".into(), b"4096\n".to_vec());
        let mut old = defaults(&host);
        keep_growing_values(&current, &mut old, &host);
        assert_eq!(old["disk"], b"81920\n", "never below the disk");
        let (small, large) = (defaults(&HOST), defaults(&host));
        assert!(check_change(&large, &small, &HOST).is_ok(), "no disk yet: any change");
        let mut grown = defaults(&host);
        grown.insert("disk".into(), b"102400\n".to_vec());
        let err = check_change(&grown, &large, &host).unwrap_err().to_string();
        assert!(err.contains("current size, 102400 MiB"), "{err}");
        let mut larger = defaults(&HOST);
        assert!(keep_growing_values(&current, &mut larger, &HOST).is_empty(), "no disk yet");
    }
}
