//! `cairn list`: every key with its value, options, apply class and description.

use cairn::db::CONFIG_BRANCH;
use cairn::schema::{value, Key, Tree, KEYS};
use serde_json::json;

use super::Ctx;
use crate::output::{self, Mode};

pub fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let db = ctx.open()?;
    let snapshot = db.snapshot(CONFIG_BRANCH)?;
    let tree = &snapshot.tree;
    let host = db.host();
    let stored = |key: &Key| tree.get(key.path).cloned().unwrap_or_default();
    let changed = |key: &Key| stored(key) != key.default_bytes(host);
    match ctx.mode {
        Mode::Json => {
            let rows: Vec<_> = KEYS
                .iter()
                .map(|key| {
                    json!({
                        "key": key.name,
                        "path": key.path,
                        "value": value::to_json(key, &stored(key)),
                        "default": value::to_json(key, &key.default_bytes(host)),
                        "changed": changed(key),
                        "options": key.options.iter().filter_map(|o| cairn::schema::by_name(o).ok())
                            .map(|o| (o.name.to_owned(), value::to_json(o, &stored(o))))
                            .collect::<serde_json::Map<_, _>>(),
                        "apply": key.apply.as_str(),
                        "summary": key.summary,
                        "description": squash(key.description),
                    })
                })
                .collect();
            output::print_json(&serde_json::Value::Array(rows))
        }
        Mode::Plain => {
            for key in KEYS {
                println!("{}={}", key.name, value::display(key, &stored(key)));
            }
            Ok(())
        }
        Mode::Table => {
            let mut table = output::table(&["KEY", "VALUE", "", "OPTIONS", "APPLY", "DESCRIPTION"]);
            for key in KEYS {
                let is_changed = changed(key);
                table.add_row(vec![
                    output::cell(key.name, false),
                    output::cell(value::display(key, &stored(key)), is_changed),
                    output::cell(if is_changed { "*" } else { "" }, false),
                    output::cell(options(key, tree), false),
                    output::cell(key.apply, false),
                    output::cell(key.summary, false),
                ]);
            }
            output::print_table(&table);
            output::note("* differs from the default; `cairn schema KEY` describes a key");
            Ok(())
        }
    }
}

/// `memory=2048, ncpu=2`: the current values of a key's options.
fn options(key: &Key, tree: &Tree) -> String {
    key.options
        .iter()
        .filter_map(|name| cairn::schema::by_name(name).ok())
        .map(|o| {
            format!("{}={}", o.name, value::display(o, tree.get(o.path).map_or(&[][..], |v| v)))
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A description without the line breaks of its source.
pub fn squash(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}
