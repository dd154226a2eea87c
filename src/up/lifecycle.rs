//! The VM's life as the control loop runs it: a boot for a commit's configuration, adoption of
//! a VM left running, stopping, its end (started again with a growing delay), and the fallback
//! to qemu when the embedded VMM cannot boot the guest here.

use std::time::{Duration, Instant};

use cairn_db::ObjectId;

use super::events;
use super::status::{Backend, LastError, VmState};
use super::{short, Controller};
use crate::channel::HostChannel;
use crate::vm::native::Native;
use crate::vm::qemu::Qemu;
use crate::vm::{Running, VmSpec};
use crate::Error;

/// A native boot of the built image whose agent has not reported by then has failed: the VM
/// is started on qemu instead (a stock kernel reaches the agent in seconds under KVM).
const NATIVE_REPORT_WITHIN: Duration = Duration::from_secs(90);

impl Controller {
    /// Takes over a VM an earlier control plane left running.
    pub(super) fn adopt(
        &mut self,
        vm: Qemu,
        booted: ObjectId,
        progress: &mut dyn FnMut(&str),
    ) -> Result<(), Error> {
        progress(&format!(
            "adopted the running VM (pid {}, booted for {}); the guest remounts /Database",
            vm.pid(),
            short(&booted)
        ));
        self.generation += 1;
        self.status.vm_pid = Some(vm.pid());
        self.status.vm = VmState::Running;
        self.status.adopted = true;
        // An earlier control plane may have left it paused.
        if vm.paused() {
            self.adopted_paused();
        }
        events::watch_process(
            vm.pid(),
            crate::vm::record::process_start_time(vm.pid()),
            self.generation,
            self.events.clone(),
        );
        self.vm = Some(Running::Qemu(vm));
        self.booted = Some(booted);
        self.attach_channel(HostChannel::qemu(
            self.run.channel(),
            self.channel_services(),
            &self.server.runtime,
            &self.sessions,
        ));
        // The guest's network carries on through a new NAT: qemu still listens.
        self.start_network(booted)?;
        self.show_adopted_shares(booted)?;
        // What the guest runs is planned against master like any new head, and its last
        // report (from this boot) says where it is.
        self.target = None;
        let state = self.db.head(cairn_agent::report::STATE_BRANCH)?;
        self.on_report(state, progress)?;
        Ok(())
    }

    /// (Re)starts the VM for `commit`'s configuration.
    pub(super) fn boot(
        &mut self,
        commit: Option<ObjectId>,
        progress: &mut dyn FnMut(&str),
    ) -> Result<(), Error> {
        let commit = commit.ok_or(Error::NoConfig)?;
        self.generation += 1;
        self.forget_pause();
        if let Some(vm) = self.vm.take() {
            vm.stop(Duration::from_secs(5));
        }
        self.drop_channel();
        // Reports of the boots before (also those of a VM that an earlier `up` ran) no longer
        // say anything about this one.
        self.report = None;
        self.stale_boot = self.latest_report().map(|r| r.boot_id);
        let mut spec = self.spec_for(commit)?;
        self.serve_shares(commit, &mut spec, progress)?;
        self.prepare_disk(commit, progress)?;
        let port = self.start_network(commit)?;
        progress(&format!(
            "booting: {} MiB, {} cpus, {} ({})",
            spec.memory_mib,
            spec.ncpu,
            if self.native { Backend::Native } else { Backend::Qemu }.as_str(),
            self.accel.as_str()
        ));
        let vm = if self.native {
            let (fs, runtime) = (self.server.fs.clone(), self.server.runtime.clone());
            let vsock = self.run.vsock();
            let socket = format!("{}_{}", vsock.display(), crate::channel::VSOCK_PORT);
            let channel = HostChannel::vsock(
                std::path::Path::new(&socket),
                self.channel_services(),
                &runtime,
                &self.sessions,
            )?;
            self.attach_channel(channel);
            let native = Native::start(&spec, fs, runtime, &vsock, port)?;
            events::watch_machine(native.end_signal(), self.generation, self.events.clone());
            Running::Native(native)
        } else {
            // qemu listens there: a stale socket from an earlier VM would stop it.
            let _ = std::fs::remove_file(self.run.net());
            let _ = std::fs::remove_file(self.run.channel());
            let vm = Qemu::start(&spec, self.accel, &self.run.qemu_errors())?;
            let pid = vm.pid();
            events::watch_process(
                pid,
                crate::vm::record::process_start_time(pid),
                self.generation,
                self.events.clone(),
            );
            self.attach_channel(HostChannel::qemu(
                self.run.channel(),
                self.channel_services(),
                &self.server.runtime,
                &self.sessions,
            ));
            let record = vm.record(&spec, self.accel, commit);
            if let Err(e) = record.save(&self.run.vm_record()) {
                tracing::warn!(error = %e, "writing the VM record: a restarted control plane will not find this VM");
            }
            Running::Qemu(vm)
        };
        self.status.vm_pid = Some(vm.pid());
        self.status.vm = VmState::Booting;
        self.vm = Some(vm);
        self.booted = Some(commit);
        self.booted_at = Instant::now();
        Ok(())
    }

    /// What the channel of a VM serves: /Database, and the ports its containers publish.
    fn channel_services(&self) -> crate::channel::Services {
        crate::channel::Services { fs: self.server.fs.clone(), published: self.published.0.clone() }
    }

    /// Keeps `channel` as the current VM's, with a task that reports it coming and going.
    fn attach_channel(&mut self, channel: HostChannel) {
        let watcher = events::watch_channel(
            self.sessions.subscribe(),
            self.generation,
            self.events.clone(),
            &self.server.runtime,
        );
        self.channel = Some((channel, watcher));
    }

    /// Powers the VM off (forcibly after a grace period) and forgets it.
    pub(super) fn stop_vm(&mut self, progress: &mut dyn FnMut(&str)) {
        // Its end is ours to see now, not the loop's.
        self.generation += 1;
        self.forget_pause();
        if let Some(vm) = self.vm.take() {
            let clean = vm.stop(Duration::from_secs(10));
            progress(if clean { "the guest powered off" } else { "the VM was killed" });
        }
        // What served its shares (virtiofsd ends with qemu's connection; this reaps it).
        self.file_events = None;
        self.virtiofsd.clear();
        self.drop_channel();
        let _ = std::fs::remove_file(self.run.vm_record());
    }

    fn drop_channel(&mut self) {
        if let Some((_, watcher)) = self.channel.take() {
            watcher.abort();
        }
    }

    /// The reports of the current boot no longer count (the VM was stopped or ended).
    pub(super) fn forget_report(&mut self) {
        if let Some((report, _)) = self.report.take() {
            self.stale_boot = Some(report.boot_id);
        }
    }

    fn spec_for(&self, commit: ObjectId) -> Result<VmSpec, Error> {
        let rev = commit.to_string();
        let number = |path: &str| -> Result<u64, Error> {
            let raw = self.db.read(&rev, path)?.unwrap_or_default();
            let text = String::from_utf8_lossy(&raw).trim().to_owned();
            text.parse().map_err(|_| Error::BadSetting { key: path.to_owned(), value: text })
        };
        let hostnet = self.hostnet(&rev)?;
        Ok(VmSpec {
            kernel: self.kernel.clone(),
            initrd: self.initrd.clone(),
            system_disk: self.system_disk.clone(),
            memory_mib: number("memory")?,
            ncpu: u32::try_from(number("ncpu")?).unwrap_or(1),
            channel: self.run.channel(),
            data_disk: self.data_disk.clone(),
            console: self.run.console(),
            qmp: self.run.qmp(),
            // qemu's own network for hostnet (with the forwards it takes at boot); the NAT's
            // socket otherwise.
            net: (!hostnet).then(|| self.run.net()),
            hostfwd: if hostnet { self.hostnet_forwards(&rev)? } else { Vec::new() },
            shares: Vec::new(),
            share_args: String::new(),
        })
    }

    /// The VM ended on its own: start it again after a growing delay (on qemu, if it was the
    /// embedded VMM's first boot that never reached the agent).
    pub(super) fn on_vm_exit(&mut self, progress: &mut dyn FnMut(&str)) -> Result<bool, Error> {
        let Some(mut vm) = self.vm.take() else { return Ok(false) };
        self.forget_pause();
        let exit = vm.exited().unwrap_or_else(|| "it ended".into());
        self.file_events = None;
        self.virtiofsd.clear();
        self.drop_channel();
        let _ = std::fs::remove_file(self.run.vm_record());
        if self.native && self.report.is_none() {
            let why = format!("its boot ended before the guest agent reported ({exit})");
            self.native_failed(&why, progress)?;
            return Ok(true);
        }
        self.forget_report();
        let errors = match self.native {
            true => String::new(),
            false => std::fs::read_to_string(self.run.qemu_errors()).unwrap_or_default(),
        };
        let message = format!(
            "the VM stopped ({exit}); starting it again in {:?}. {}",
            self.backoff,
            errors.trim()
        );
        progress(&message);
        self.status.vm = VmState::Restarting;
        self.status.vm_pid = None;
        self.status.last_error = Some(LastError { key: None, message, commit: None });
        self.restart_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(Duration::from_secs(30));
        Ok(true)
    }

    /// Starts the VM again once its delay has passed.
    pub(super) fn restart_if_due(&mut self, progress: &mut dyn FnMut(&str)) -> Result<bool, Error> {
        match self.restart_at {
            Some(at) if Instant::now() >= at => {
                self.restart_at = None;
                self.status.restarts += 1;
                self.boot(self.target.or(self.head), progress)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    /// The guest's channel came up or went down.
    pub(super) fn on_channel(&mut self, up: bool) -> bool {
        let changed = up != self.status.channel;
        self.status.channel = up;
        if changed {
            self.show_docker_channel();
        }
        changed
    }

    /// When a native boot of the built image counts as failed if its agent has not reported.
    pub(super) fn native_deadline(&self) -> Option<Instant> {
        (self.native
            && self.built_image
            && self.vm.is_some()
            && self.report.is_none()
            && !self.is_paused())
        .then(|| self.booted_at + NATIVE_REPORT_WITHIN)
    }

    /// A native boot of the built image that has not reported in time has failed.
    pub(super) fn native_boot_overdue(
        &mut self,
        progress: &mut dyn FnMut(&str),
    ) -> Result<bool, Error> {
        if self.native_deadline().is_none_or(|at| Instant::now() < at) {
            return Ok(false);
        }
        self.generation += 1;
        if let Some(vm) = self.vm.take() {
            vm.stop(Duration::ZERO);
        }
        self.drop_channel();
        let why = format!("the guest agent did not report within {NATIVE_REPORT_WITHIN:?}");
        self.native_failed(&why, progress)?;
        Ok(true)
    }

    /// The embedded VMM could not boot the guest here: remember it for this host, say why,
    /// and boot the VM on qemu.
    fn native_failed(&mut self, why: &str, progress: &mut dyn FnMut(&str)) -> Result<(), Error> {
        let mut verdicts = crate::vm::verdicts::Verdicts::load(&self.verdicts);
        verdicts.native_boot_failed = Some(why.to_owned());
        let (accel, accel_reason) =
            super::start::choose_accel(&self.kernel, &self.run.0, &mut verdicts);
        verdicts.save(&self.verdicts);
        self.native = false;
        self.accel = accel;
        self.status.backend = Some(Backend::Qemu);
        self.status.accel = Some(accel);
        self.status.backend_reason = format!(
            "hypervisor=native, but the embedded VMM failed to boot the guest here ({why}); qemu until `cairn set hypervisor native` asks again; {accel_reason}"
        );
        progress(&format!("backend: {}", self.status.backend_reason));
        self.status.last_error = Some(LastError {
            key: Some("hypervisor".into()),
            message: self.status.backend_reason.clone(),
            commit: None,
        });
        let head = self.target.or(self.head);
        self.boot(head, progress)
    }
}
