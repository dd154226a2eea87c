//! `cairn export`: every key as one JSON object, typed; `cairn apply` reads it back. A
//! daemon.json that holds keys only `set --force` accepts is listed under `forced-keys`, so
//! that applying the file writes it the same way.

use cairn::schema::{value, Validation, KEYS};

use super::Ctx;
use crate::output;

pub fn run(ctx: &Ctx, at: &str) -> anyhow::Result<()> {
    let db = ctx.open_read()?;
    let bounded = db.snapshot_bounded(at)?;
    super::list::warn_invalid(&bounded, db.host());
    let tree = &bounded.snapshot.tree;
    let mut object: serde_json::Map<String, serde_json::Value> = KEYS
        .iter()
        .filter(|key| !bounded.too_large.contains_key(key.path))
        .filter_map(|key| tree.get(key.path).map(|v| (key.name.to_owned(), value::to_json(key, v))))
        .collect();
    let daemon = cairn::schema::by_name("daemon")?;
    if let Some(stored) = tree.get(daemon.path) {
        let strict = value::normalize(daemon, stored, db.host(), Validation::default());
        let forced = value::normalize(daemon, stored, db.host(), Validation { force: true });
        if strict.is_err() && forced.is_ok() {
            object.insert(super::apply::FORCED.into(), serde_json::json!(["daemon"]));
        }
    }
    output::print_json(&serde_json::Value::Object(object))
}
