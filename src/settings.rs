//! Every key of a commit as `cairn list --json` shows it, shared by the CLI and the web page:
//! value, default, whether it differs, its options' values, what a change does, and whether
//! the stored value is one the schema refuses (written around cairn).

use std::collections::BTreeMap;

use cairn_db::{BoundedSnapshot, Db};
use cairn_schema::{value, Host, Key, KEYS};
use serde_json::{json, Value};

/// The keys whose stored values the schema refuses, with why.
pub fn invalid_values(bounded: &BoundedSnapshot, host: &Host) -> Vec<(&'static Key, String)> {
    cairn_schema::tree::invalid_values(&bounded.snapshot.tree, &bounded.too_large, host)
        .into_iter()
        .map(|(key, error)| (key, error.to_string()))
        .collect()
}

/// A description without the line breaks of its source.
pub fn squash(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// One row per key of `bounded` (a commit of `db`), in the catalogue's order.
pub fn rows(db: &Db, bounded: &BoundedSnapshot) -> Vec<Value> {
    let tree = &bounded.snapshot.tree;
    let host = db.host();
    let invalid: BTreeMap<&str, String> =
        invalid_values(bounded, host).into_iter().map(|(key, why)| (key.name, why)).collect();
    let stored = |key: &Key| tree.get(key.path).cloned().unwrap_or_default();
    KEYS.iter()
        .map(|key| {
            json!({
                "key": key.name,
                "path": key.path,
                "value": match bounded.too_large.get(key.path) {
                    Some(_) => Value::Null,
                    None => value::to_json(key, &stored(key)),
                },
                "default": value::to_json(key, &key.default_bytes(host)),
                "changed": stored(key) != key.default_bytes(host),
                "options": key.options.iter().filter_map(|o| cairn_schema::by_name(o).ok())
                    .map(|o| (o.name.to_owned(), value::to_json(o, &stored(o))))
                    .collect::<serde_json::Map<_, _>>(),
                "apply": key.apply.as_str(),
                "invalid": invalid.get(key.name),
                "summary": key.summary,
                "description": squash(key.description),
            })
        })
        .collect()
}
