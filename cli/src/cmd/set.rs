//! `cairn set`: `KEY VALUE [KEY=VALUE...]` or `KEY=VALUE...`, one commit.

use cairn::db::CONFIG_BRANCH;

use super::{prepare, report, value_arg, Ctx};
use crate::args::WriteOpts;
use crate::exit::Usage;

/// What `set` does after preparing the change.
#[derive(Debug, Clone, Copy, Default)]
pub struct Then {
    /// Print the plan instead of committing.
    pub dry_run: bool,
    /// Wait for the guest to apply the commit.
    pub wait: bool,
    pub timeout: std::time::Duration,
}

pub fn run(
    ctx: &Ctx,
    args: &[String],
    write: &WriteOpts,
    force: bool,
    then: Then,
) -> anyhow::Result<()> {
    let pairs = parse(args)?;
    super::refuse_repeated_keys(pairs.iter().map(|(name, _)| name.as_str()))?;
    let db = ctx.open()?;
    let mut tx = db.transaction(CONFIG_BRANCH)?;
    tx.force(force);
    prepare(&db, &mut tx, write)?;
    let mut stdin_used = false;
    let mut shown = Vec::new();
    for (name, raw) in &pairs {
        let value = value_arg(raw, &mut stdin_used)?;
        let key = tx.set_key(name, &value)?;
        let stored = &tx.changes()[key.path];
        let stored = stored.as_deref().unwrap_or_default();
        shown.push(format!("{}={}", key.name, cairn::schema::value::display(key, stored)));
    }
    if then.dry_run {
        let base = tx.base().map(|b| b.to_string()).unwrap_or_else(|| CONFIG_BRANCH.into());
        let plan = cairn::plan::of_changes(&db, &base, tx.changes())?;
        return super::wait::print_plan(ctx, &plan);
    }
    let asks_native =
        tx.changes().get("hypervisor").is_some_and(|v| v.as_deref() == Some(b"native\n"));
    let done = tx.commit()?;
    report(ctx, &db, &done, &format!("set {}", shown.join(" ")))?;
    if asks_native {
        // Asking for the embedded VMM again is how a native boot that failed here is retried.
        let home = cairn::home::cairn_home()?;
        if cairn::vm::verdicts::Verdicts::forget_native_failure(&cairn::vm::verdicts::path(&home)) {
            eprintln!(
                "cairn: the embedded VMM's failed boot on this host is forgotten: the next boot tries it again (`cairn vm restart` boots now)"
            );
        }
    }
    if then.wait {
        super::wait::until_applied(ctx, &done.id.to_string(), then.timeout)?;
    }
    Ok(())
}

/// Splits the arguments into (key, value) pairs.
fn parse(args: &[String]) -> Result<Vec<(String, String)>, Usage> {
    let pair = |arg: &String| {
        arg.split_once('=')
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .ok_or_else(|| Usage(format!("{arg:?}: expected KEY=VALUE")))
    };
    match args {
        [] => Err(Usage("set what? try `cairn set memory 4096`".into())),
        [first, ..] if first.contains('=') => args.iter().map(pair).collect(),
        [key] => {
            Err(Usage(format!("{key}: no value given (cairn set {key} VALUE, or {key}=VALUE)")))
        }
        [key, value, rest @ ..] => {
            let mut pairs = vec![(key.clone(), value.clone())];
            for arg in rest {
                pairs.push(pair(arg)?);
            }
            Ok(pairs)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::parse;

    fn s(args: &[&str]) -> Vec<String> {
        args.iter().map(|a| (*a).to_owned()).collect()
    }

    #[test]
    fn forms() {
        let pairs = parse(&s(&["memory", "4096"])).expect("key value");
        assert_eq!(pairs, vec![("memory".into(), "4096".into())]);
        let pairs = parse(&s(&["hypervisor", "qemu", "ncpu=4"])).expect("with options");
        assert_eq!(pairs.len(), 2);
        let pairs = parse(&s(&["memory=4096", "ncpu=2"])).expect("pairs");
        assert_eq!(pairs[1], ("ncpu".into(), "2".into()));
        let pairs = parse(&s(&["daemon", r#"{"labels":["a=b"]}"#])).expect("json with =");
        assert_eq!(pairs[0].0, "daemon");
        assert!(parse(&s(&["memory"])).is_err());
        assert!(parse(&s(&["memory=1", "ncpu"])).is_err());
    }
}
