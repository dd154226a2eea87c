//! `cairn edit KEY`: the value in $VISUAL or $EDITOR, validated when saved.

use std::io::Write;
use std::process::Command;

use anyhow::Context;
use cairn::db::CONFIG_BRANCH;

use super::{prepare, report, Ctx};
use crate::args::WriteOpts;

pub fn run(ctx: &Ctx, name: &str, write: &WriteOpts, force: bool) -> anyhow::Result<()> {
    let key = cairn::schema::by_name(name)?;
    let db = ctx.open()?;
    let mut tx = db.transaction(CONFIG_BRANCH)?;
    tx.force(force);
    prepare(&db, &mut tx, write)?;
    let base = tx.base().map(|b| b.to_string()).unwrap_or_else(|| CONFIG_BRANCH.into());
    let current = db.read(&base, key.path)?.unwrap_or_default();
    let suffix = if key.path.ends_with(".json") { ".json" } else { ".txt" };
    let mut file = tempfile::Builder::new()
        .prefix(&format!("cairn-{}-", key.name))
        .suffix(suffix)
        .tempfile()
        .context("creating a temporary file to edit")?;
    file.write_all(&current)?;
    file.flush()?;
    let editor = std::env::var("VISUAL")
        .ok()
        .filter(|e| !e.is_empty())
        .or_else(|| std::env::var("EDITOR").ok().filter(|e| !e.is_empty()))
        .unwrap_or_else(|| "vi".into());
    // Through the shell, so that EDITOR="code --wait" works as it does for git.
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("{editor} \"$1\""))
        .arg("cairn-edit")
        .arg(file.path())
        .status()
        .with_context(|| format!("starting the editor {editor:?}"))?;
    if !status.success() {
        anyhow::bail!("the editor {editor:?} exited with {status}; nothing changed");
    }
    let edited = std::fs::read(file.path()).context("reading the edited file")?;
    if edited == current {
        crate::output::note(&format!("{}: unchanged", key.name));
        return Ok(());
    }
    if let Err(refused) = tx.set_key(key.name, &edited) {
        let (_, kept) = file.keep().context("keeping the edited file")?;
        return Err(anyhow::Error::new(refused)
            .context(format!("nothing changed; your edit is kept in {}", kept.display())));
    }
    let done = tx.commit()?;
    report(ctx, &db, &done, &format!("edited {}", key.name))
}
