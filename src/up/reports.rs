//! The guest's reports on branch `state`, and when a commit counts as applied: the guest
//! reported it from the current boot with no key failing.

use std::path::Path;

use cairn_agent::report::{Report, STATE_BRANCH};
use cairn_db::ObjectId;

use super::status::{Guest, LastError, VmState};
use super::{short, Controller};
use crate::Error;

impl Controller {
    /// The newest report on `state`, whichever boot wrote it.
    pub(super) fn latest_report(&self) -> Option<Report> {
        let rev = self.db.head(STATE_BRANCH).ok()??.to_string();
        Report::from_files(|name| self.db.read(&rev, name).ok().flatten()).ok()
    }

    /// The guest reported (`state` is at `state`): what it says of itself, and whether the
    /// commit being applied is now applied.
    pub(super) fn on_report(
        &mut self,
        state: Option<ObjectId>,
        progress: &mut dyn FnMut(&str),
    ) -> Result<bool, Error> {
        let Some(state) = state else { return Ok(false) };
        let rev = state.to_string();
        let db = &self.db;
        let parsed = Report::from_files(|name| db.read(&rev, name).ok().flatten())
            .map_err(|e| e.to_string())
            .and_then(|report| {
                // The boundary: the commit the guest names must be a commit id.
                let applied =
                    ObjectId::from_hex(report.applied_commit.as_bytes()).map_err(|_| {
                        format!(
                            "the guest's report names {:?}, not a commit",
                            report.applied_commit
                        )
                    })?;
                Ok((report, applied))
            });
        let (report, applied) = match parsed {
            Ok(parsed) => parsed,
            Err(message) => {
                self.status.last_error = Some(LastError { key: None, message, commit: None });
                return Ok(true);
            }
        };
        if self.stale_boot.as_deref() == Some(report.boot_id.as_str()) {
            return Ok(false);
        }
        self.status.guest = Some(Guest {
            boot_id: report.boot_id.clone(),
            memory_mib: report.memory_mib,
            ncpu: report.ncpu,
            hostname: report.hostname.clone(),
            daemon_json_sha256: report.daemon_json_sha256.clone(),
            dockerd: report.dockerd.clone(),
            dockerd_pid: report.dockerd_pid,
            disk: report.disk.clone(),
            disk_size_bytes: report.disk_size_bytes,
            disk_used_bytes: report.disk_used_bytes,
        });
        if let Some(sharing) = &mut self.status.sharing {
            sharing.take_report(&report.shares);
        }
        let had_docker = self.status.docker.is_some();
        self.show_docker(&report);
        if let (false, Some(docker)) = (had_docker, &mut self.status.docker) {
            progress(&format!("engine ready: DOCKER_HOST=unix://{}", docker.socket));
            let home = self.run.0.parent().unwrap_or(&self.run.0);
            let outcome = super::docker_context::ensure(Path::new(&docker.socket), home);
            progress(&outcome.describe());
            docker.context = outcome.points_here().then(|| super::docker_context::NAME.to_owned());
        }
        // A report written just before a pause is read after it: the VM stays paused.
        if !self.is_paused() {
            self.status.vm = VmState::Running;
        }
        self.backoff = std::time::Duration::from_secs(1);
        if let Some((key, why)) = report.first_error() {
            progress(&format!("guest: {key}: {why}"));
            self.status.last_error = Some(LastError {
                key: Some(key.to_owned()),
                message: why.to_owned(),
                commit: Some(applied.to_string()),
            });
        }
        self.report = Some((report, applied));
        self.check_applied(progress);
        Ok(true)
    }

    /// Marks the commit being applied as applied once the guest's report of this boot says so
    /// with no key failing (a key that failed kept its previous value: not applied).
    pub(super) fn check_applied(&mut self, progress: &mut dyn FnMut(&str)) {
        let Some((report, applied)) = &self.report else { return };
        let target = self.target.map(|t| t.to_string());
        if self.target != Some(*applied) || self.status.applied_commit == target {
            return;
        }
        if report.first_error().is_some() {
            return;
        }
        progress(&format!("applied {}", short(applied)));
        self.status.last_error = None;
        self.status.applied_commit = target;
        self.status.attempted_commit = None;
        self.status.plan = None;
    }
}
