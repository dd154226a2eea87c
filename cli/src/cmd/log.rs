//! `cairn log [KEY]`: the configuration's history, or one key's with old and new values.

use cairn::db::CommitInfo;
use cairn::schema::{by_name, value, Key};
use serde_json::json;

use super::Ctx;
use crate::output::{self, Mode};

pub fn run(ctx: &Ctx, key: Option<&str>, limit: Option<usize>, at: &str) -> anyhow::Result<()> {
    match key {
        Some(name) => key_log(ctx, by_name(name)?, limit, at),
        None => branch_log(ctx, limit, at),
    }
}

fn branch_log(ctx: &Ctx, limit: Option<usize>, at: &str) -> anyhow::Result<()> {
    let db = ctx.open_read()?;
    let commits = db.log(at, limit)?;
    match ctx.mode {
        Mode::Json => {
            output::print_json(&json!(commits.iter().map(commit_json).collect::<Vec<_>>()))
        }
        Mode::Plain => {
            for c in &commits {
                println!("{}\t{}\t{}", c.id, output::time(c.time), c.summary());
            }
            Ok(())
        }
        Mode::Table => {
            let mut table = output::table(&["COMMIT", "DATE", "AUTHOR", "MESSAGE"]);
            for c in &commits {
                table.add_row(vec![
                    output::cell(output::short(&c.id), false),
                    output::cell(output::time(c.time), false),
                    output::cell(&c.author, false),
                    output::cell(c.summary(), false),
                ]);
            }
            output::print_table(&table);
            Ok(())
        }
    }
}

fn key_log(ctx: &Ctx, key: &Key, limit: Option<usize>, at: &str) -> anyhow::Result<()> {
    let db = ctx.open_read()?;
    let changes = db.key_history(at, key.path, limit)?;
    let show =
        |v: &Option<Vec<u8>>| v.as_ref().map_or("(absent)".to_owned(), |b| value::display(key, b));
    match ctx.mode {
        Mode::Json => {
            let rows: Vec<_> = changes
                .iter()
                .map(|c| {
                    let mut row = commit_json(&c.commit);
                    row["old"] =
                        c.old.as_ref().map_or(serde_json::Value::Null, |b| value::to_json(key, b));
                    row["new"] =
                        c.new.as_ref().map_or(serde_json::Value::Null, |b| value::to_json(key, b));
                    row
                })
                .collect();
            output::print_json(&json!(rows))
        }
        Mode::Plain => {
            for c in &changes {
                let (id, time) = (c.commit.id, output::time(c.commit.time));
                println!(
                    "{id}\t{time}\t{}\t{}\t{}",
                    show(&c.old),
                    show(&c.new),
                    c.commit.summary()
                );
            }
            Ok(())
        }
        Mode::Table => {
            let mut table = output::table(&["COMMIT", "DATE", "OLD", "NEW", "MESSAGE"]);
            for c in &changes {
                table.add_row(vec![
                    output::cell(output::short(&c.commit.id), false),
                    output::cell(output::time(c.commit.time), false),
                    output::cell(show(&c.old), false),
                    output::cell(show(&c.new), true),
                    output::cell(c.commit.summary(), false),
                ]);
            }
            output::print_table(&table);
            Ok(())
        }
    }
}

fn commit_json(c: &CommitInfo) -> serde_json::Value {
    json!({
        "commit": c.id.to_string(),
        "parents": c.parents.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
        "author": c.author,
        "time": c.time,
        "message": c.message,
    })
}
