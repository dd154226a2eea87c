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
pub fn step(path: &str, old: Option<&[u8]>, new: Option<&[u8]>) -> Step {
    match cairn_schema::catalogue::by_path(path) {
        Some(key) if key.path == "etc/docker/daemon.json" => Step {
            key: key.name.to_owned(),
            class: cairn_schema::daemon::change_class(old.unwrap_or(b"{}"), new.unwrap_or(b"{}")),
        },
        // The hypervisor's own network (hostnet) is chosen when the VM starts: a change to or
        // from it reboots; between nat and none the NAT switches live.
        Some(key) if key.name == "network" => {
            let hostnet = |v: Option<&[u8]>| v.is_some_and(|v| v.trim_ascii() == b"hostnet");
            let class = match hostnet(old) || hostnet(new) {
                true => ApplyClass::Reboot,
                false => key.apply,
            };
            Step { key: key.name.to_owned(), class }
        }
        Some(key) => Step { key: key.name.to_owned(), class: key.apply },
        // Outside the schema (written with git directly): the guest does not use it.
        None => Step { key: path.to_owned(), class: ApplyClass::None },
    }
}

fn plan_of(from: &str, to: &str, steps: Vec<Step>) -> Plan {
    let action = steps.iter().map(|s| s.class).max().unwrap_or(ApplyClass::None);
    Plan { from: from.to_owned(), to: to.to_owned(), action, steps }
}

/// The plan in the words `cairn plan` prints: `reboot: memory (reboot), hostname (guest-live)`.
pub fn words(plan: &Plan) -> String {
    if plan.steps.is_empty() {
        return "nothing: no value changes".into();
    }
    let steps: Vec<String> =
        plan.steps.iter().map(|s| format!("{} ({})", s.key, s.class.as_str())).collect();
    format!("{}: {}", plan.action.as_str(), steps.join(", "))
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

/// Whether the VM must reboot for `action`. Network changes do not: the NAT takes the new
/// mode and resolvers at once, and the guest renews its lease for a new MTU.
pub fn needs_reboot(action: ApplyClass) -> bool {
    action >= ApplyClass::Reboot
}

/// Whether the plan changes what the NAT does (mode, MTU, resolvers, forwarded ports).
pub fn touches_network(plan: &Plan) -> bool {
    plan.steps.iter().any(|s| matches!(s.class, ApplyClass::Network | ApplyClass::NetworkLive))
}

#[cfg(test)]
mod tests {
    use super::*;
    use cairn_db::CONFIG_BRANCH;
    use cairn_schema::Host;

    fn commit(db: &Db, changes: &[(&str, &str)]) -> String {
        let mut tx = db.transaction(CONFIG_BRANCH).expect("tx");
        for (key, value) in changes {
            tx.set_key(key, value.as_bytes()).expect("valid");
        }
        tx.commit().expect("commit").id.to_string()
    }

    #[test]
    fn the_most_disruptive_key_decides() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::init(&dir.path().join("db"), Host { ram_mib: 8192, cores: 4, disk_mib: 0 })
            .expect("init");
        let init = db.head(CONFIG_BRANCH).expect("head").expect("exists").to_string();
        let live = commit(&db, &[("hostname", "web1")]);
        let plan = between(&db, &init, &live).expect("plan");
        assert_eq!(plan.action, ApplyClass::GuestLive);
        assert_eq!(plan.steps, [Step { key: "hostname".into(), class: ApplyClass::GuestLive }]);
        let reload = commit(&db, &[("daemon", r#"{"debug": true}"#)]);
        assert_eq!(between(&db, &live, &reload).expect("plan").action, ApplyClass::DaemonReload);
        let restart = commit(&db, &[("daemon", r#"{"debug": true, "dns": ["1.1.1.1"]}"#)]);
        assert_eq!(
            between(&db, &reload, &restart).expect("plan").action,
            ApplyClass::DaemonRestart
        );
        let reboot = commit(&db, &[("memory", "1536"), ("hostname", "web2")]);
        let plan = between(&db, &restart, &reboot).expect("plan");
        assert_eq!(plan.action, ApplyClass::Reboot);
        assert!(needs_reboot(plan.action) && !needs_reboot(ApplyClass::DaemonRestart));
        // nat to none switches live; hostnet is the hypervisor's, set at start.
        let none = commit(&db, &[("network", "none")]);
        let plan = between(&db, &reboot, &none).expect("plan");
        assert_eq!(plan.action, ApplyClass::Network);
        assert!(!needs_reboot(plan.action) && touches_network(&plan));
        let hostnet = commit(&db, &[("network", "hostnet")]);
        assert_eq!(between(&db, &none, &hostnet).expect("plan").action, ApplyClass::Reboot);
        let forwards = commit(&db, &[("port-forwarding", "8080:80")]);
        let plan = between(&db, &hostnet, &forwards).expect("plan");
        assert_eq!(plan.action, ApplyClass::NetworkLive);
        assert!(touches_network(&plan));
        // Over several commits, the classes of every key changed since.
        assert_eq!(between(&db, &init, &reboot).expect("plan").steps.len(), 3);
        assert!(!touches_network(&between(&db, &init, &reboot).expect("plan")));
        assert_eq!(between(&db, &reboot, &reboot).expect("plan").action, ApplyClass::None);
    }

    #[test]
    fn uncommitted_changes_to_the_same_value_are_no_steps() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::init(&dir.path().join("db"), Host { ram_mib: 8192, cores: 4, disk_mib: 0 })
            .expect("init");
        let mut tx = db.transaction(CONFIG_BRANCH).expect("tx");
        tx.set_key("hostname", b"cairn").expect("valid");
        tx.set_key("ncpu", b"1").expect("valid");
        let plan = of_changes(&db, CONFIG_BRANCH, tx.changes()).expect("plan");
        assert_eq!(plan.steps, [Step { key: "ncpu".into(), class: ApplyClass::Reboot }]);
    }
}
