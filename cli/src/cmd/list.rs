//! `cairn list`: every key with its value, options, apply class and description.

use cairn::db::CONFIG_BRANCH;
use cairn::schema::{value, Key, Tree, KEYS};
use serde_json::json;

use super::Ctx;
use crate::output::{self, Mode};

pub fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let db = ctx.open()?;
    let bounded = db.snapshot_bounded(CONFIG_BRANCH)?;
    let tree = &bounded.snapshot.tree;
    let host = db.host();
    let invalid: std::collections::BTreeMap<&str, String> =
        invalid_values(&bounded, host).into_iter().map(|(key, why)| (key.name, why)).collect();
    warn_invalid(&bounded, host);
    let stored = |key: &Key| tree.get(key.path).cloned().unwrap_or_default();
    let changed = |key: &Key| stored(key) != key.default_bytes(host);
    let shown = |key: &Key| match bounded.too_large.get(key.path) {
        Some(size) => format!("({size} bytes, not read)"),
        None => value::display(key, &stored(key)),
    };
    match ctx.mode {
        Mode::Json => {
            let rows: Vec<_> = KEYS
                .iter()
                .map(|key| {
                    json!({
                        "key": key.name,
                        "path": key.path,
                        "value": match bounded.too_large.get(key.path) {
                            Some(_) => serde_json::Value::Null,
                            None => value::to_json(key, &stored(key)),
                        },
                        "default": value::to_json(key, &key.default_bytes(host)),
                        "changed": changed(key),
                        "options": key.options.iter().filter_map(|o| cairn::schema::by_name(o).ok())
                            .map(|o| (o.name.to_owned(), value::to_json(o, &stored(o))))
                            .collect::<serde_json::Map<_, _>>(),
                        "apply": key.apply.as_str(),
                        "invalid": invalid.get(key.name),
                        "summary": key.summary,
                        "description": squash(key.description),
                    })
                })
                .collect();
            output::print_json(&serde_json::Value::Array(rows))
        }
        Mode::Plain => {
            for key in KEYS {
                println!("{}={}", key.name, shown(key));
            }
            Ok(())
        }
        Mode::Table => {
            let mut table = output::table(&["KEY", "VALUE", "", "OPTIONS", "APPLY", "DESCRIPTION"]);
            for key in KEYS {
                let is_changed = changed(key);
                let mark = match (invalid.contains_key(key.name), is_changed) {
                    (true, _) => "!",
                    (false, true) => "*",
                    (false, false) => "",
                };
                table.add_row(vec![
                    output::cell(key.name, false),
                    output::cell(shown(key), is_changed),
                    output::cell(mark, false),
                    output::cell(options(key, tree), false),
                    output::cell(key.apply, false),
                    output::cell(key.summary, false),
                ]);
            }
            output::print_table(&table);
            output::note(
                "* differs from the default; ! the schema refuses the stored value; `cairn schema KEY` describes a key",
            );
            Ok(())
        }
    }
}

/// The keys whose stored values the schema refuses, with why.
pub fn invalid_values(
    bounded: &cairn::db::BoundedSnapshot,
    host: &cairn::schema::Host,
) -> Vec<(&'static Key, String)> {
    cairn::schema::tree::invalid_values(&bounded.snapshot.tree, &bounded.too_large, host)
        .into_iter()
        .map(|(key, error)| (key, error.to_string()))
        .collect()
}

/// Says on stderr which stored values the schema refuses: they were written around cairn (git
/// plumbing, an older cairn) and would otherwise pass unnoticed.
pub fn warn_invalid(bounded: &cairn::db::BoundedSnapshot, host: &cairn::schema::Host) {
    for (_, why) in invalid_values(bounded, host) {
        eprintln!("cairn: warning: {why} (stored in the database; `cairn set` or `cairn reset` replaces it)");
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
