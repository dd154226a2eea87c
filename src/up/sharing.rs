//! The host directories a boot shares: planned from the commit the VM boots for, served by
//! one virtiofsd per directory (or by qemu's own 9P server), shown in the status.

use cairn_channel::shares::Transport;
use cairn_db::ObjectId;

use super::Controller;
use crate::vm::file_events::FileEvents;
use crate::vm::shares::Plan;
use crate::vm::virtiofsd::{self, Virtiofsd};
use crate::vm::{SharedDevice, SharedVia, VmSpec};
use crate::Error;

/// Why the embedded VMM shares nothing.
const NATIVE: &str = "the embedded VMM has no virtiofs device yet (hypervisor=native); qemu shares";

impl Controller {
    /// The plan of `commit`'s file-sharing and filesystem.
    fn plan_shares(&self, commit: ObjectId) -> Result<Plan, Error> {
        let rev = commit.to_string();
        let text = |path: &str| -> Result<String, Error> {
            let raw = self.db.read(&rev, path)?.unwrap_or_default();
            Ok(String::from_utf8_lossy(&raw).into_owned())
        };
        let home = self.run.0.parent().unwrap_or(&self.run.0).to_owned();
        let plan = Plan::new(text("filesystem")?.trim(), &text("file-sharing")?, &home);
        Ok(if self.native { plan.unsupported(NATIVE) } else { plan })
    }

    /// Starts what serves `commit`'s shares (virtiofsd, before qemu connects to it) and puts
    /// the devices in `spec`. A share that cannot be served is reported and left out; the
    /// others are shared anyway.
    pub(super) fn serve_shares(
        &mut self,
        commit: ObjectId,
        spec: &mut VmSpec,
        progress: &mut dyn FnMut(&str),
    ) -> Result<(), Error> {
        // The last boot's daemons served a VM that has stopped.
        self.virtiofsd.clear();
        self.file_events = None;
        let mut plan = self.plan_shares(commit)?;
        if plan.boot.transport == Some(Transport::Virtiofs) && !plan.boot.shares.is_empty() {
            match virtiofsd::binary() {
                Some(binary) => self.start_virtiofsd(&binary, &mut plan),
                None => {
                    let why = "virtiofsd is not installed (cargo install virtiofsd, or Debian's virtiofsd; or set filesystem 9p)";
                    let tags: Vec<String> =
                        plan.boot.shares.iter().map(|s| s.tag.clone()).collect();
                    for tag in tags {
                        plan.failed(&tag, why);
                    }
                }
            }
        }
        spec.shares = plan
            .boot
            .shares
            .iter()
            .map(|share| SharedDevice {
                tag: share.tag.clone(),
                via: match plan.boot.transport {
                    Some(Transport::NineP) => SharedVia::NineP(share.path.clone().into()),
                    _ => SharedVia::Virtiofs(crate::vm::shares::socket(&self.run.0, &share.tag)),
                },
            })
            .collect();
        spec.share_args = plan.boot.kernel_args();
        for share in &plan.status.shares {
            progress(&format!("sharing {}: {}", share.path, share.state));
        }
        self.status.sharing = Some(plan.status);
        self.watch_shares(&plan.boot);
        Ok(())
    }

    /// Starts sending the host's file events of `boot`'s shares to the guest.
    fn watch_shares(&mut self, boot: &cairn_channel::shares::Boot) {
        let paths: Vec<String> = boot.shares.iter().map(|s| s.path.clone()).collect();
        let Some(sharing) = &mut self.status.sharing else { return };
        if paths.is_empty() {
            sharing.events = "none: nothing is shared".into();
            return;
        }
        let sessions = self.sessions.subscribe();
        match FileEvents::start(&paths, &boot.hidden, sessions, &self.server.runtime) {
            Ok(events) => {
                sharing.events = "forwarded for the directories containers mount".into();
                self.file_events = Some(events);
            }
            Err(why) => sharing.events = format!("off: {why}"),
        }
    }

    fn start_virtiofsd(&mut self, binary: &std::path::Path, plan: &mut Plan) {
        let mut started = Vec::new();
        let mut failed = Vec::new();
        for share in &plan.boot.shares {
            let socket = crate::vm::shares::socket(&self.run.0, &share.tag);
            let log = self.run.0.join(format!("virtiofs-{}.log", share.tag));
            match Virtiofsd::start(binary, &share.path, &socket, &plan.boot.hidden, &log) {
                Ok(daemon) => started.push((share.tag.clone(), daemon)),
                Err(why) => failed.push((share.tag.clone(), why)),
            }
        }
        if !started.is_empty() {
            std::thread::sleep(crate::vm::virtiofsd::START_LOOK);
        }
        for (tag, mut daemon) in started {
            match daemon.ended_at_once() {
                Some(why) => failed.push((tag, why)),
                None => self.virtiofsd.push(daemon),
            }
        }
        for (tag, why) in failed {
            plan.failed(&tag, &why);
        }
    }

    /// The sharing of a VM taken over from an earlier control plane: its boot's plan, until
    /// the guest's report says what it mounted.
    pub(super) fn show_adopted_shares(&mut self, booted: ObjectId) -> Result<(), Error> {
        let plan = self.plan_shares(booted)?;
        self.status.sharing = Some(plan.status);
        self.watch_shares(&plan.boot);
        Ok(())
    }

    /// Notes a virtiofsd that ended under a running VM (its share is gone until a reboot),
    /// and the file events' counts. Whether the status changed.
    pub(super) fn refresh_shares(&mut self) -> bool {
        let ended: Vec<String> = self
            .virtiofsd
            .iter_mut()
            .filter_map(|d| (!d.running()).then(|| d.dir().to_owned()))
            .collect();
        self.virtiofsd.retain(|d| !ended.iter().any(|e| e == d.dir()));
        let Some(sharing) = &mut self.status.sharing else { return false };
        let mut changed = false;
        if let Some(events) = &self.file_events {
            let (sent, dropped) = (
                events.counters.sent.load(std::sync::atomic::Ordering::Relaxed),
                events.counters.dropped.load(std::sync::atomic::Ordering::Relaxed),
            );
            let watched = events.watched.lock().map(|w| w.clone()).unwrap_or_default();
            let now = format!(
                "forwarded for {} director{} containers mount ({sent} sent, {dropped} dropped)",
                watched.len(),
                if watched.len() == 1 { "y" } else { "ies" }
            );
            changed |= sharing.events != now || sharing.watched != watched;
            sharing.events = now;
            sharing.watched = watched;
        }
        for share in sharing.shares.iter_mut().filter(|s| ended.contains(&s.path)) {
            share.state = "virtiofsd ended: the share is gone until the VM reboots".into();
            changed = true;
        }
        changed
    }
}
