//! `cairn list`: every key with its value, options, apply class and description.

use cairn::db::CONFIG_BRANCH;
use cairn::schema::{value, Key, Tree, KEYS};

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
            output::print_json(&serde_json::Value::Array(cairn::settings::rows(&db, &bounded)))
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
    cairn::settings::invalid_values(bounded, host)
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
    cairn::settings::squash(text)
}
