//! `cairn get KEY`: the value exactly as stored, for scripts; typed with --json.

use anyhow::Context;

use super::Ctx;
use crate::output::{self, Mode};

pub fn run(ctx: &Ctx, name: &str, at: &str) -> anyhow::Result<()> {
    let key = cairn::schema::by_name(name)?;
    let db = ctx.open_read()?;
    let stored = db
        .read_bounded(at, key.path)?
        .with_context(|| format!("{}: not present at {at} (path {})", key.name, key.path))?;
    if let Err(why) = cairn::schema::value::check_stored(key, &stored, db.host()) {
        eprintln!("cairn: warning: {why} (stored in the database; `cairn set` or `cairn reset` replaces it)");
    }
    if ctx.mode == Mode::Json {
        return output::print_json(&cairn::schema::value::to_json(key, &stored));
    }
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_all(&stored)?;
    out.flush()?;
    Ok(())
}
