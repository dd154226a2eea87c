//! `cairn reset KEY...`: back to the defaults, one commit.

use cairn::db::CONFIG_BRANCH;

use super::{prepare, report, Ctx};
use crate::args::WriteOpts;

pub fn run(ctx: &Ctx, names: &[String], all: bool, write: &WriteOpts) -> anyhow::Result<()> {
    let db = ctx.open()?;
    let mut tx = db.transaction(CONFIG_BRANCH)?;
    prepare(&db, &mut tx, write)?;
    let names: Vec<&str> = if all {
        cairn::schema::KEYS.iter().filter(|k| !k.internal).map(|k| k.name).collect()
    } else {
        names.iter().map(String::as_str).collect()
    };
    let mut done_names = Vec::new();
    for name in names {
        done_names.push(tx.reset_key(name)?.name);
    }
    if write.message.is_none() {
        tx.message(format!("reset {}", if all { "all keys".into() } else { done_names.join(" ") }));
    }
    let done = tx.commit()?;
    report(ctx, &db, &done, &format!("reset {}", done_names.join(" ")))
}
