//! Schema versions and the migrations between them.
//!
//! A migration is a pure function on a [`Tree`]. It adds keys a newer cairn knows, converts
//! stored formats, and moves a default only where the user never changed the value; the database
//! commits its result as a commit of its own, so `git log` shows exactly what an upgrade did.
//!
//! History:
//! - v1: the first layout. `net/dns` held the servers on one comma-separated line, there was no
//!   `net/mtu`, and `memory` defaulted to 1024 MiB.
//! - v2: `net/mtu` (1500), `net/dns` one server per line, `memory` defaults to 2048 MiB.
//! - v3: `disk`, the size of the engine's data disk (64 GiB).
//! - v4: `net/external-bind` (false): where containers' published ports listen on the host.
//! - v5: `file-sharing` (home and /tmp); `filesystem` changes meaning from /Database's
//!   transport (only ever `9p`) to how shared directories reach the VM (`virtiofs`).
//! - v6: `binfmt` (every foreign architecture the image emulates) and `auto-pause` (0: never).

use crate::catalogue::by_name;
use crate::tree::defaults;
use crate::version::Tree;
pub use crate::version::{version_of, CURRENT_VERSION};
use crate::{Error, Host};

/// Brings `tree` to [`CURRENT_VERSION`]. `user_changed(path)` says whether the user ever changed
/// the value at `path` (the database answers it from history); such values are never touched.
/// Returns one line per step taken, for the commit message; empty when the tree was current.
pub fn migrate(
    tree: &mut Tree,
    user_changed: &dyn Fn(&str) -> bool,
    host: &Host,
) -> Result<Vec<String>, Error> {
    let mut notes = Vec::new();
    let mut version = version_of(tree)?;
    while version < CURRENT_VERSION {
        match version {
            1 => v1_to_v2(tree, user_changed, host, &mut notes)?,
            2 => v2_to_v3(tree, host, &mut notes),
            3 => v3_to_v4(tree, host, &mut notes),
            4 => v4_to_v5(tree, host, &mut notes),
            5 => v5_to_v6(tree, host, &mut notes),
            other => unreachable!("no migration from v{other}; version_of bounds it"),
        }
        version += 1;
        tree.insert("schema-version".into(), format!("{version}\n").into_bytes());
        notes.push(format!("schema-version: v{}", version));
    }
    Ok(notes)
}

/// The tree a cairn of schema `version` wrote at `init`. Needed to know the old defaults, and to
/// build upgrade fixtures.
pub fn initial_tree(version: u32, host: &Host) -> Tree {
    let mut tree = defaults(host);
    if version <= 5 {
        tree.remove("binfmt");
        tree.remove("auto-pause");
        tree.insert("schema-version".into(), format!("{version}\n").into_bytes());
    }
    if version <= 4 {
        tree.remove("file-sharing");
        tree.insert("filesystem".into(), b"9p\n".to_vec());
        tree.insert("schema-version".into(), format!("{version}\n").into_bytes());
    }
    if version <= 3 {
        tree.remove("net/external-bind");
        tree.insert("schema-version".into(), format!("{version}\n").into_bytes());
    }
    if version <= 2 {
        tree.remove("disk");
        tree.insert("schema-version".into(), format!("{version}\n").into_bytes());
    }
    if version == 1 {
        tree.remove("net/mtu");
        tree.insert("memory".into(), V1_MEMORY_DEFAULT.min(host.ram_mib).to_string().into_bytes());
        tree.get_mut("memory").expect("inserted above").push(b'\n');
        tree.insert("schema-version".into(), b"1\n".to_vec());
    }
    tree
}

const V1_MEMORY_DEFAULT: u64 = 1024;

/// v3 adds the data disk's size at its default, and touches nothing else.
fn v2_to_v3(tree: &mut Tree, host: &Host, notes: &mut Vec<String>) {
    if !tree.contains_key("disk") {
        let disk = by_name("disk").expect("disk is in the catalogue");
        tree.insert(disk.path.into(), disk.default_bytes(host));
        notes.push("disk: added with its default 64G (65536 MiB)".into());
    }
}

/// v4 adds `external-bind` at its default (false: published ports on the host's loopback,
/// as they were), and touches nothing else.
fn v3_to_v4(tree: &mut Tree, host: &Host, notes: &mut Vec<String>) {
    let key = by_name("external-bind").expect("external-bind is in the catalogue");
    if !tree.contains_key(key.path) {
        tree.insert(key.path.into(), key.default_bytes(host));
        notes.push("external-bind: added with its default false".into());
    }
}

/// v5 adds `file-sharing` at its default and gives `filesystem` its new meaning. Its only
/// value before was `9p`, which said how /Database reached the guest (it still does, on a
/// transport of its own): no user chose a way to share directories, so it becomes the new
/// default, virtiofs.
fn v4_to_v5(tree: &mut Tree, host: &Host, notes: &mut Vec<String>) {
    let sharing = by_name("file-sharing").expect("file-sharing is in the catalogue");
    if !tree.contains_key(sharing.path) {
        let default = sharing.default_bytes(host);
        let shown = String::from_utf8_lossy(&default).trim().replace('\n', ", ");
        tree.insert(sharing.path.into(), default);
        notes.push(format!("file-sharing: added with its default {shown}"));
    }
    let filesystem = by_name("filesystem").expect("filesystem is in the catalogue");
    if tree.get(filesystem.path).is_none_or(|v| v.as_slice() == b"9p\n") {
        tree.insert(filesystem.path.into(), filesystem.default_bytes(host));
        notes.push(
            "filesystem: 9p -> virtiofs (it now says how shared directories reach the VM; /Database keeps its own transport)"
                .into(),
        );
    }
}

/// v6 adds `binfmt` and `auto-pause` at their defaults, and touches nothing else.
fn v5_to_v6(tree: &mut Tree, host: &Host, notes: &mut Vec<String>) {
    for name in ["binfmt", "auto-pause"] {
        let key = by_name(name).expect("in the catalogue");
        if !tree.contains_key(key.path) {
            let default = key.default_bytes(host);
            let shown = String::from_utf8_lossy(&default).trim().replace('\n', ", ");
            tree.insert(key.path.into(), default);
            notes.push(format!("{name}: added with its default {shown}"));
        }
    }
}

fn v1_to_v2(
    tree: &mut Tree,
    user_changed: &dyn Fn(&str) -> bool,
    host: &Host,
    notes: &mut Vec<String>,
) -> Result<(), Error> {
    if !tree.contains_key("net/mtu") {
        let mtu = by_name("mtu").expect("mtu is in the catalogue");
        tree.insert(mtu.path.into(), mtu.default_bytes(host));
        notes.push("mtu: added with its default 1500".into());
    }
    if let Some(old) = tree.get("net/dns") {
        let text = String::from_utf8_lossy(old).into_owned();
        let servers: Vec<&str> =
            text.split([',', ' ', '\n']).map(str::trim).filter(|s| !s.is_empty()).collect();
        let converted: Vec<u8> =
            servers.iter().flat_map(|s| format!("{s}\n").into_bytes()).collect();
        if converted != *old {
            tree.insert("net/dns".into(), converted);
            notes.push("dns: one server per line".into());
        }
    }
    let memory = by_name("memory").expect("memory is in the catalogue");
    let v1_default = format!("{}\n", V1_MEMORY_DEFAULT.min(host.ram_mib));
    let at_old_default = tree.get("memory").is_some_and(|m| *m == v1_default.as_bytes());
    if at_old_default && !user_changed(memory.path) {
        let new = memory.default_bytes(host);
        if new != v1_default.as_bytes() {
            notes.push(format!(
                "memory: default {} -> {} MiB (never changed by the user)",
                V1_MEMORY_DEFAULT,
                String::from_utf8_lossy(&new).trim()
            ));
            tree.insert("memory".into(), new);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tree::validate_tree;
    use crate::Validation;

    const HOST: Host = Host { ram_mib: 8192, cores: 4, disk_mib: 0 };

    #[test]
    fn v1_defaults_become_v2_defaults() {
        let mut tree = initial_tree(1, &HOST);
        let notes = migrate(&mut tree, &|_| false, &HOST).expect("migrates");
        assert_eq!(tree, defaults(&HOST));
        assert!(notes.iter().any(|n| n.starts_with("memory: default 1024 -> 2048")), "{notes:?}");
        validate_tree(&tree, &|_| true, &HOST, Validation::default()).expect("valid v2 tree");
    }

    #[test]
    fn never_touches_values_the_user_changed() {
        let mut tree = initial_tree(1, &HOST);
        tree.insert("net/dns".into(), b"1.1.1.1, 8.8.8.8\n".to_vec());
        tree.insert("etc/hostname".into(), b"mine\n".to_vec());
        // memory still reads 1024, but the user set it explicitly: it stays.
        migrate(&mut tree, &|path| path == "memory", &HOST).expect("migrates");
        assert_eq!(tree["memory"], b"1024\n");
        assert_eq!(tree["etc/hostname"], b"mine\n");
        assert_eq!(tree["net/dns"], b"1.1.1.1\n8.8.8.8\n");
        assert_eq!(tree["net/mtu"], b"1500\n");
        assert_eq!(tree["schema-version"], b"6\n");
        assert_eq!(tree["disk"], b"65536\n");
        assert_eq!(tree["net/external-bind"], b"false\n");
        assert_eq!(tree["filesystem"], b"virtiofs\n");
        assert_eq!(tree["binfmt"], b"arm64\narm\nriscv64\nppc64le\ns390x\n");
    }

    #[test]
    fn v2_gets_the_disk_and_nothing_else_changes() {
        let mut tree = initial_tree(2, &HOST);
        tree.insert("etc/hostname".into(), b"mine\n".to_vec());
        let before = tree.clone();
        let notes = migrate(&mut tree, &|_| false, &HOST).expect("migrates");
        assert_eq!(notes.len(), 10, "{notes:?}");
        let changed: Vec<&String> =
            tree.keys().filter(|k| before.get(*k) != tree.get(*k)).collect();
        let added = ["auto-pause", "binfmt", "disk", "file-sharing", "filesystem"];
        assert_eq!(changed, [&added[..], &["net/external-bind", "schema-version"]].concat());
    }

    #[test]
    fn v3_gets_external_bind_and_nothing_else_changes() {
        let mut tree = initial_tree(3, &HOST);
        assert!(!tree.contains_key("net/external-bind"));
        tree.insert("etc/hostname".into(), b"mine\n".to_vec());
        let before = tree.clone();
        let notes = migrate(&mut tree, &|_| false, &HOST).expect("migrates");
        assert_eq!(
            notes[..2],
            ["external-bind: added with its default false", "schema-version: v4"]
        );
        let changed: Vec<&String> =
            tree.keys().filter(|k| before.get(*k) != tree.get(*k)).collect();
        assert_eq!(
            changed,
            [
                "auto-pause",
                "binfmt",
                "file-sharing",
                "filesystem",
                "net/external-bind",
                "schema-version"
            ]
        );
        validate_tree(&tree, &|_| true, &HOST, Validation::default()).expect("valid v6 tree");
    }

    #[test]
    fn v4_gets_file_sharing_and_filesystem_means_sharing() {
        let mut tree = initial_tree(4, &HOST);
        assert!(!tree.contains_key("file-sharing"));
        assert_eq!(tree["filesystem"], b"9p\n");
        tree.insert("etc/hostname".into(), b"mine\n".to_vec());
        let before = tree.clone();
        let notes = migrate(&mut tree, &|_| false, &HOST).expect("migrates");
        assert!(notes[0].starts_with("file-sharing: added with its default "), "{notes:?}");
        assert!(notes[1].starts_with("filesystem: 9p -> virtiofs"), "{notes:?}");
        assert_eq!(notes[2], "schema-version: v5");
        let changed: Vec<&String> =
            tree.keys().filter(|k| before.get(*k) != tree.get(*k)).collect();
        assert_eq!(
            changed,
            ["auto-pause", "binfmt", "file-sharing", "filesystem", "schema-version"]
        );
        assert_eq!(tree["file-sharing"], crate::shares::default_text().as_bytes());
        tree.insert("etc/hostname".into(), defaults(&HOST)["etc/hostname"].clone());
        assert_eq!(tree, defaults(&HOST));
        validate_tree(&tree, &|_| true, &HOST, Validation::default()).expect("valid v5 tree");
    }

    #[test]
    fn v5_gets_binfmt_and_nothing_else_changes() {
        let mut tree = initial_tree(5, &HOST);
        assert!(!tree.contains_key("binfmt"));
        tree.insert("etc/hostname".into(), b"mine\n".to_vec());
        let before = tree.clone();
        let notes = migrate(&mut tree, &|_| false, &HOST).expect("migrates");
        assert_eq!(
            notes,
            [
                "binfmt: added with its default arm64, arm, riscv64, ppc64le, s390x",
                "auto-pause: added with its default 0",
                "schema-version: v6"
            ]
        );
        let changed: Vec<&String> =
            tree.keys().filter(|k| before.get(*k) != tree.get(*k)).collect();
        assert_eq!(changed, ["auto-pause", "binfmt", "schema-version"]);
        validate_tree(&tree, &|_| true, &HOST, Validation::default()).expect("valid v6 tree");
    }

    #[test]
    fn a_user_value_other_than_the_old_default_stays() {
        let mut tree = initial_tree(1, &HOST);
        tree.insert("memory".into(), b"3072\n".to_vec());
        migrate(&mut tree, &|_| false, &HOST).expect("migrates");
        assert_eq!(tree["memory"], b"3072\n");
    }

    #[test]
    fn current_trees_are_left_alone_and_newer_ones_refused() {
        let mut tree = defaults(&HOST);
        assert!(migrate(&mut tree, &|_| false, &HOST).expect("ok").is_empty());
        tree.insert("schema-version".into(), b"9\n".to_vec());
        assert!(matches!(
            migrate(&mut tree, &|_| false, &HOST),
            Err(Error::TooNew { found: 9, .. })
        ));
    }
}
