//! `cairn diff [FROM [TO]]`: per-key changes between two commits.

use anyhow::Context;
use cairn::db::CONFIG_BRANCH;

use super::{changes_json, Ctx};
use crate::output::{self, Mode};

pub fn run(ctx: &Ctx, from: Option<&str>, to: Option<&str>) -> anyhow::Result<()> {
    let db = ctx.open_read()?;
    let to = to.unwrap_or(CONFIG_BRANCH);
    let from = match from {
        Some(from) => from.to_owned(),
        None => {
            let tip = db.resolve(to)?;
            let parent = db
                .log(&tip.to_string(), Some(1))?
                .into_iter()
                .next()
                .and_then(|c| c.parents.first().copied());
            parent
                .with_context(|| format!("{to} has no parent to compare with; name two commits"))?
                .to_string()
        }
    };
    let changes = changes_json(&db, &from, to)?;
    match ctx.mode {
        Mode::Json => output::print_json(&serde_json::Value::Array(changes)),
        Mode::Plain | Mode::Table => {
            let text = |v: &serde_json::Value| match v {
                serde_json::Value::Null => "(absent)".to_owned(),
                serde_json::Value::String(s) if s.is_empty() => "\"\"".to_owned(),
                serde_json::Value::Array(items) if items.is_empty() => "\"\"".to_owned(),
                serde_json::Value::String(s) => s.clone(),
                serde_json::Value::Array(items) => items
                    .iter()
                    .map(|i| i.as_str().map_or_else(|| i.to_string(), str::to_owned))
                    .collect::<Vec<_>>()
                    .join(","),
                other => other.to_string(),
            };
            if ctx.mode == Mode::Plain {
                for c in &changes {
                    println!("{}: {} -> {}", str_of(&c["key"]), text(&c["old"]), text(&c["new"]));
                }
                return Ok(());
            }
            let mut table = output::table(&["KEY", "OLD", "NEW", "APPLY"]);
            for c in &changes {
                table.add_row(vec![
                    output::cell(str_of(&c["key"]), false),
                    output::cell(text(&c["old"]), false),
                    output::cell(text(&c["new"]), true),
                    output::cell(str_of(&c["apply"]), false),
                ]);
            }
            output::print_table(&table);
            if changes.is_empty() {
                output::note("no differences");
            }
            Ok(())
        }
    }
}

fn str_of(v: &serde_json::Value) -> &str {
    v.as_str().unwrap_or("")
}
