//! One module per command; each parses nothing and prints its own data.

mod apply;
mod diagnose;
mod diff;
mod disk;
mod edit;
mod export;
mod get;
mod init;
mod list;
mod log;
mod reset;
mod rollback;
mod schema;
mod serve;
mod set;
mod shell;
mod status;
mod ui;
mod up;
mod wait;

use std::io::Read;
use std::path::PathBuf;

use anyhow::Context;
use cairn::db::{Committed, Db, Transaction};
use serde_json::json;

use crate::args::{Cli, Command, WriteOpts};
use crate::exit::Usage;
use crate::output::{self, Mode};

/// What every command needs: where the database is and how to print.
pub struct Ctx {
    pub db_path: PathBuf,
    pub mode: Mode,
}

impl Ctx {
    /// Opens the database, with the host's limits for validation.
    pub fn open(&self) -> anyhow::Result<Db> {
        self.open_with(self.host()?)
    }

    /// This machine's limits, and the data disk of `$CAIRN_HOME` as it is.
    pub fn host(&self) -> anyhow::Result<cairn::schema::Host> {
        Ok(cairn::host::detect(&cairn::home::cairn_home()?)?)
    }

    /// Opens the database for commands that only read stored values: they check no limits, so
    /// they skip reading the host's (`get` is the command scripts run most).
    pub fn open_read(&self) -> anyhow::Result<Db> {
        self.open_with(cairn::schema::Host::UNLIMITED)
    }

    fn open_with(&self, host: cairn::schema::Host) -> anyhow::Result<Db> {
        Db::open(&self.db_path, host)
            .with_context(|| format!("opening the database at {}", self.db_path.display()))
    }
}

/// Runs the parsed command line.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    if let Ok(home) = cairn::home::cairn_home() {
        if let Some(old) = cairn::home::make_private(&home)? {
            eprintln!(
                "cairn: {} was {old:04o}, open to other users; it is 0700 now",
                home.display()
            );
        }
    }
    let db_path = cairn::home::db_dir(cli.db.as_deref())?;
    let ctx = Ctx { db_path, mode: output::mode(cli.json) };
    if !matches!(cli.command, Command::Serve { .. } | Command::Up { .. } | Command::Ui { .. }) {
        // A command whose reader goes away (`cairn list | head`) ends quietly, as Unix tools
        // do. The servers keep SIGPIPE ignored: a client hanging up must not kill them.
        cairn::process::default_sigpipe();
    }
    match cli.command {
        Command::Init => init::run(&ctx),
        Command::List => list::run(&ctx),
        Command::Get { key, at } => get::run(&ctx, &key, &at),
        Command::Set { args, write, force, dry_run, wait, timeout } => {
            let then =
                set::Then { dry_run, wait, timeout: std::time::Duration::from_secs(timeout) };
            set::run(&ctx, &args, &write, force, then)
        }
        Command::Plan { args, force } => {
            let then = set::Then { dry_run: true, ..set::Then::default() };
            set::run(&ctx, &args, &WriteOpts::default(), force, then)
        }
        Command::Wait { commit, timeout } => {
            wait::run(&ctx, commit.as_deref(), std::time::Duration::from_secs(timeout))
        }
        Command::Reset { keys, all, write } => reset::run(&ctx, &keys, all, &write),
        Command::Log { key, limit, at } => log::run(&ctx, key.as_deref(), limit, &at),
        Command::Diff { from, to } => diff::run(&ctx, from.as_deref(), to.as_deref()),
        Command::Rollback { commit, write } => rollback::run(&ctx, &commit, &write),
        Command::Export { at } => export::run(&ctx, &at),
        Command::Apply { file, write, force } => apply::run(&ctx, &file, &write, force),
        Command::Edit { key, write, force } => edit::run(&ctx, &key, &write, force),
        Command::Schema { key } => schema::run(&ctx, key.as_deref()),
        Command::Serve { socket, tcp } => serve::run(&ctx, socket, tcp),
        Command::Up { detach, reprobe, kernel, initrd, flavour } => {
            let image = up::Image { kernel, initrd, flavour: flavour.map(Into::into) };
            up::run(&ctx, detach, reprobe, image)
        }
        Command::DockerEnv => up::docker_env(),
        Command::Down => up::down(),
        Command::Vm { action } => up::vm(action),
        Command::Shell { tty, no_tty, command } => {
            let tty = match (tty, no_tty) {
                (true, _) => Some(true),
                (_, true) => Some(false),
                _ => None,
            };
            shell::run(tty, command)
        }
        Command::Ui { listen, open } => ui::run(&ctx, listen, open),
        Command::Logs { follow, console, control } => up::logs(follow, console, control),
        Command::Status => status::run(&ctx),
        Command::Diagnose => diagnose::run(&ctx),
        Command::Disk { command: None } => disk::show(&ctx),
        Command::Disk { command: Some(crate::args::DiskCommand::Wipe { yes }) } => {
            disk::wipe(&ctx, yes)
        }
        Command::Guest { command: crate::args::GuestCommand::Build { flavour } } => {
            up::build_image(flavour.into())
        }
        Command::Path => {
            println!("{}", ctx.db_path.display());
            Ok(())
        }
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "cairn", &mut std::io::stdout());
            Ok(())
        }
    }
}

/// Reads a value argument: `@FILE` from a file, `-` from standard input (once), else literal.
pub fn value_arg(arg: &str, stdin_used: &mut bool) -> anyhow::Result<Vec<u8>> {
    if arg == "-" {
        if std::mem::replace(stdin_used, true) {
            return Err(Usage("only one value can come from standard input".into()).into());
        }
        let mut bytes = Vec::new();
        std::io::stdin().read_to_end(&mut bytes).context("reading standard input")?;
        return Ok(bytes);
    }
    if let Some(path) = arg.strip_prefix('@') {
        return std::fs::read(path).with_context(|| format!("reading {path}"));
    }
    Ok(arg.as_bytes().to_vec())
}

/// Refuses a command that names a key twice (`set memory=4096 memory=8192`): which value
/// was meant cannot be known, and keeping the last would hide the mistake.
pub fn refuse_repeated_keys<'a>(names: impl Iterator<Item = &'a str>) -> Result<(), Usage> {
    let mut seen = std::collections::BTreeSet::new();
    for name in names {
        let canonical = cairn::schema::by_name(name).map_or(name, |k| k.name);
        if !seen.insert(canonical) {
            return Err(Usage(format!("{canonical} is given twice; give each key once")));
        }
    }
    Ok(())
}

/// Applies `--message` and `--expect` to a transaction.
pub fn prepare(db: &Db, tx: &mut Transaction<'_>, write: &WriteOpts) -> anyhow::Result<()> {
    if let Some(message) = &write.message {
        if message.trim().is_empty() {
            return Err(
                Usage("-m: the message is empty; leave -m out for a generated one".into()).into()
            );
        }
        tx.message(message.clone());
    }
    if let Some(expected) = &write.expect {
        let id = db.resolve(expected).with_context(|| format!("--expect {expected}"))?;
        tx.expect(Some(id));
    }
    Ok(())
}

/// Prints the outcome of a write: the commit id on stdout (for scripts), a summary on a
/// terminal's stderr, or JSON.
pub fn report(ctx: &Ctx, db: &Db, done: &Committed, what: &str) -> anyhow::Result<()> {
    if ctx.mode == Mode::Json {
        let changes = match (done.parent, done.created) {
            (Some(parent), true) => changes_json(db, &parent.to_string(), &done.id.to_string())?,
            _ => Vec::new(),
        };
        return output::print_json(&json!({
            "commit": done.id.to_string(),
            "parent": done.parent.map(|p| p.to_string()),
            "created": done.created,
            "rebased": done.rebased,
            "migration": done.migration.map(|m| m.to_string()),
            "changes": changes,
            "kept_invalid": done.kept_invalid,
        }));
    }
    for invalid in &done.kept_invalid {
        eprintln!(
            "cairn: warning: {invalid}; kept as it is (`cairn set` or `cairn reset` replaces it)"
        );
    }
    println!("{}", done.id);
    if done.created {
        let rebased = if done.rebased { ", re-applied on a newer head" } else { "" };
        output::note(&format!("{what} (commit {}{rebased})", output::short(&done.id)));
    } else {
        output::note(&format!("{what}: already so, no commit made"));
    }
    Ok(())
}

/// Per-key changes between two commits, as JSON objects.
/// In the catalogue's order, the order `list` shows.
pub fn changes_json(db: &Db, from: &str, to: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    let mut changes = db.diff(from, to)?;
    let rank =
        |path: &str| cairn::schema::KEYS.iter().position(|k| k.path == path).unwrap_or(usize::MAX);
    changes.sort_by_key(|c| rank(&c.path));
    Ok(changes
        .into_iter()
        .map(|change| {
            let key = cairn::schema::by_path(&change.path);
            let view = |v: &Option<Vec<u8>>| match (key, v) {
                (Some(key), Some(bytes)) => cairn::schema::value::to_json(key, bytes),
                (None, Some(bytes)) => json!(String::from_utf8_lossy(bytes)),
                (_, None) => serde_json::Value::Null,
            };
            json!({
                "key": key.map_or(change.path.as_str(), |k| k.name),
                "path": change.path,
                "old": view(&change.old),
                "new": view(&change.new),
                "apply": key.map(|k| apply_class(k, &change.old, &change.new).as_str()),
            })
        })
        .collect())
}

/// The apply class of a change of `key`; daemon.json is decided per top-level key.
pub fn apply_class(
    key: &cairn::schema::Key,
    old: &Option<Vec<u8>>,
    new: &Option<Vec<u8>>,
) -> cairn::schema::ApplyClass {
    match (key.kind, old, new) {
        (cairn::schema::Kind::DaemonJson, Some(old), Some(new)) => {
            cairn::schema::daemon::change_class(old, new)
        }
        _ => key.apply,
    }
}
