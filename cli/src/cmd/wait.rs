//! `cairn wait`, `set --wait`, and printing plans (`cairn plan`, `set --dry-run`).

use std::time::{Duration, Instant};

use anyhow::bail;
use cairn::up::status::{alive, Status};

use super::Ctx;
use crate::exit::TimedOut;
use crate::output::Mode;

pub fn print_plan(ctx: &Ctx, plan: &cairn::plan::Plan) -> anyhow::Result<()> {
    if matches!(ctx.mode, Mode::Json) {
        println!("{}", serde_json::to_string_pretty(plan)?);
        return Ok(());
    }
    println!("{}", cairn::plan::words(plan));
    Ok(())
}

pub fn run(ctx: &Ctx, commit: Option<&str>, timeout: Duration) -> anyhow::Result<()> {
    let db = ctx.open_read()?;
    let commit = db.resolve(commit.unwrap_or(cairn::db::CONFIG_BRANCH))?.to_string();
    until_applied(ctx, &commit, timeout)
}

/// Returns once the guest has applied `commit` (or a later commit that contains it); fails with
/// the guest's error for it, when `cairn up` is not running, or after `timeout`.
pub fn until_applied(ctx: &Ctx, commit: &str, timeout: Duration) -> anyhow::Result<()> {
    let home = cairn::home::cairn_home()?;
    let run = cairn::up::run_dir(&home);
    let db = ctx.open_read().ok();
    let contains = |later: &str| {
        later == commit
            || db.as_ref().is_some_and(|db| {
                let (Ok(a), Ok(b)) = (db.resolve(commit), db.resolve(later)) else { return false };
                db.merge_base(a, b).ok().flatten() == Some(a)
            })
    };
    let deadline = Instant::now() + timeout;
    loop {
        let status = Status::load(&run.status()).unwrap_or_default();
        if !alive(status.pid) {
            bail!("cairn up is not running; start it with `cairn up --detach`");
        }
        if status.applied_commit.as_deref().is_some_and(contains) {
            eprintln!("applied {commit}");
            return Ok(());
        }
        if let Some(error) = &status.last_error {
            if error.commit.as_deref().is_some_and(contains) {
                let key = error.key.as_deref().map(|k| format!("{k}: ")).unwrap_or_default();
                bail!("the guest could not apply {commit}: {key}{}", error.message);
            }
        }
        if Instant::now() > deadline {
            return Err(
                TimedOut(format!("the guest did not apply {commit} within {timeout:?}")).into()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
