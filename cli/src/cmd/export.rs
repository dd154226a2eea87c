//! `cairn export`: every key as one JSON object, typed; `cairn apply` reads it back.

use cairn::schema::{value, KEYS};

use super::Ctx;
use crate::output;

pub fn run(ctx: &Ctx, at: &str) -> anyhow::Result<()> {
    let db = ctx.open_read()?;
    let snapshot = db.snapshot(at)?;
    let object: serde_json::Map<String, serde_json::Value> = KEYS
        .iter()
        .filter_map(|key| {
            snapshot.tree.get(key.path).map(|v| (key.name.to_owned(), value::to_json(key, v)))
        })
        .collect();
    output::print_json(&serde_json::Value::Object(object))
}
