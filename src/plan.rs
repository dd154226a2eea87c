//! What a change of configuration means for the VM: the keys it touches, each with its apply
//! class, and the most disruptive class among them, which decides the action.

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

/// The plan from commit `from` to commit `to` (any revisions the database resolves).
pub fn between(db: &Db, from: &str, to: &str) -> Result<Plan, cairn_db::Error> {
    let mut steps = Vec::new();
    for change in db.diff(from, to)? {
        let step = match cairn_schema::catalogue::by_path(&change.path) {
            Some(key) if key.path == "etc/docker/daemon.json" => Step {
                key: key.name.to_owned(),
                class: cairn_schema::daemon::change_class(
                    change.old.as_deref().unwrap_or(b"{}"),
                    change.new.as_deref().unwrap_or(b"{}"),
                ),
            },
            Some(key) => Step { key: key.name.to_owned(), class: key.apply },
            // Outside the schema (written with git directly): the guest does not use it.
            None => Step { key: change.path.clone(), class: ApplyClass::None },
        };
        steps.push(step);
    }
    let action = steps.iter().map(|s| s.class).max().unwrap_or(ApplyClass::None);
    Ok(Plan { from: from.to_owned(), to: to.to_owned(), action, steps })
}

/// Whether the qemu backend must reboot the VM for `action`. Without the user-space NAT, a
/// network change also needs a new qemu (its user-mode network is set at start).
pub fn needs_reboot(action: ApplyClass) -> bool {
    action >= ApplyClass::Network
}
