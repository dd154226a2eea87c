//! What a change of configuration means for the VM: the keys it touches, each with its apply
//! class, and the most disruptive class among them, which decides the action.

use std::collections::BTreeMap;

use cairn_db::Db;
use cairn_schema::ApplyClass;
use serde::{Deserialize, Serialize};

/// One key a change touches.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    /// The friendly name (or the path, for a file the schema does not know).
    pub key: String,
    pub class: ApplyClass,
}

/// What it takes to go from one commit to another.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub from: String,
    pub to: String,
    /// The most disruptive class of the steps (`none` when nothing the VM sees changed).
    pub action: ApplyClass,
    pub steps: Vec<Step>,
}

/// The step for one path whose content goes from `old` to `new`.
fn step(path: &str, old: Option<&[u8]>, new: Option<&[u8]>) -> Step {
    match cairn_schema::catalogue::by_path(path) {
        Some(key) if key.path == "etc/docker/daemon.json" => Step {
            key: key.name.to_owned(),
            class: cairn_schema::daemon::change_class(old.unwrap_or(b"{}"), new.unwrap_or(b"{}")),
        },
        Some(key) => Step { key: key.name.to_owned(), class: key.apply },
        // Outside the schema (written with git directly): the guest does not use it.
        None => Step { key: path.to_owned(), class: ApplyClass::None },
    }
}

fn plan_of(from: &str, to: &str, steps: Vec<Step>) -> Plan {
    let action = steps.iter().map(|s| s.class).max().unwrap_or(ApplyClass::None);
    Plan { from: from.to_owned(), to: to.to_owned(), action, steps }
}

/// The plan from commit `from` to commit `to` (any revisions the database resolves).
pub fn between(db: &Db, from: &str, to: &str) -> Result<Plan, cairn_db::Error> {
    let steps = db
        .diff(from, to)?
        .iter()
        .map(|c| step(&c.path, c.old.as_deref(), c.new.as_deref()))
        .collect();
    Ok(plan_of(from, to, steps))
}

/// The plan of changes not yet committed (`path -> new content`, `None` removes) on top of
/// `base`: what `cairn plan` and `set --dry-run` show. Changes to the value already there are
/// no steps.
pub fn of_changes(
    db: &Db,
    base: &str,
    changes: &BTreeMap<String, Option<Vec<u8>>>,
) -> Result<Plan, cairn_db::Error> {
    let mut steps = Vec::new();
    for (path, new) in changes {
        let old = db.read(base, path)?;
        if old != *new {
            steps.push(step(path, old.as_deref(), new.as_deref()));
        }
    }
    Ok(plan_of(base, "(not committed)", steps))
}

/// Whether the qemu backend must reboot the VM for `action`. Without the user-space NAT, a
/// network change also needs a new qemu (its user-mode network is set at start).
pub fn needs_reboot(action: ApplyClass) -> bool {
    action >= ApplyClass::Network
}
