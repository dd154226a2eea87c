//! What a configuration tree is, and the schema version it declares.
//!
//! Both validation ([`crate::tree`]) and migration ([`crate::migrate`]) need these, and so do
//! the catalogue and the value types (the `schema-version` key); they live here, below all of
//! them, so that dependencies between the modules go one way: `migrate` uses `tree`, both use
//! this, and this uses only the error type.

use std::collections::BTreeMap;

use crate::error::{quote, Error};

/// A configuration tree: file path (relative, `/`-separated) to content. Directories are implied.
pub type Tree = BTreeMap<String, Vec<u8>>;

/// The schema version this cairn writes.
pub const CURRENT_VERSION: u32 = 6;

/// The version a tree declares; a tree without `schema-version` predates it and is v1.
pub fn version_of(tree: &Tree) -> Result<u32, Error> {
    let Some(bytes) = tree.get("schema-version") else {
        return Ok(1);
    };
    let text = String::from_utf8_lossy(bytes);
    match text.trim().parse::<u32>() {
        Ok(n) if n > CURRENT_VERSION => Err(Error::TooNew { found: n, supported: CURRENT_VERSION }),
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(Error::Migration {
            to: CURRENT_VERSION,
            key: "schema-version".into(),
            reason: format!("{} is not a schema version", quote(&text)),
        }),
    }
}
