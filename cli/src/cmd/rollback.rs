//! `cairn rollback COMMIT`: a new commit restoring an earlier configuration.

use super::{report, Ctx};
use crate::args::WriteOpts;

pub fn run(ctx: &Ctx, commit: &str, write: &WriteOpts) -> anyhow::Result<()> {
    let db = ctx.open()?;
    let expect = write.expect.as_deref().map(|e| db.resolve(e)).transpose()?;
    let done = db.rollback(commit, write.message.as_deref(), expect)?;
    report(ctx, &db, &done, &format!("rolled back to {commit}"))
}
