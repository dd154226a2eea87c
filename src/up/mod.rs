//! `cairn up`: the control loop. It serves the database over 9P, builds the guest image when
//! needed, boots the VM with the configuration at master, then follows master: each new head
//! (after a short quiet period, so that quick commits coalesce) is planned against what the VM
//! runs, the VM is rebooted when the plan needs it, and the guest's report on branch `state`
//! says when the change is applied. Everything it knows goes to `run/status.json`.
//!
//! The control plane can restart without the VM: a VM that still runs when `up` starts (its
//! record in `run/vm.json`) is adopted, the new control plane connects to the channel's
//! socket that qemu keeps listening on, and the guest agent remounts /Database through the new
//! session and reports again.

pub mod instance;
mod logfile;
mod network;
pub mod status;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_db::{Db, ObjectId, CONFIG_BRANCH};
use cairn_vmm::image::Flavour;
use cairn_vmm::report::{Report, STATE_BRANCH};

use crate::net;
use crate::plan;
use crate::vm::native::Native;
use crate::vm::qemu::{self, Qemu};
use crate::vm::record::VmRecord;
use crate::vm::{Accel, Running, VmSpec};
use crate::Error;
use status::{Guest, LastError, RunDir, Status};

/// How `up` runs.
#[derive(Debug, Clone)]
pub struct Options {
    pub home: PathBuf,
    pub db: PathBuf,
    /// Bring your own kernel and initramfs instead of building the image.
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    /// The image to build; None: docker, or base when the engine's packages cannot be had.
    pub flavour: Option<Flavour>,
    /// Probe the hypervisors again instead of trusting what was found on this host before.
    pub reprobe: bool,
}

/// Quiet time after a commit before it is planned: later commits in this window join it.
const COALESCE: Duration = Duration::from_secs(1);
/// A native boot of the built image whose agent has not reported by then has failed: the VM
/// is started on qemu instead (a stock kernel reaches the agent in seconds under KVM).
const NATIVE_REPORT_WITHIN: Duration = Duration::from_secs(90);
const TICK: Duration = Duration::from_millis(50);

/// The run directory of a data directory.
pub fn run_dir(home: &std::path::Path) -> RunDir {
    RunDir(home.join("run"))
}

/// Runs until `stop` is set (by SIGINT or SIGTERM, or `cairn down`). `progress` hears the
/// stages of start-up and every change of state.
pub fn run(
    options: Options,
    stop: Arc<AtomicBool>,
    progress: &mut dyn FnMut(&str),
) -> Result<(), Error> {
    let run = run_dir(&options.home);
    std::fs::create_dir_all(&run.0).map_err(|e| Error::io(&run.0, e))?;
    let _instance = instance::Instance::claim(&run.pid())?;
    Controller::start(options, run.clone(), stop, progress).and_then(|mut c| c.follow(progress))
}

/// The image of `options.flavour`; without one, the docker flavour, or the base image when
/// the engine cannot be had (apt knows no docker.io, a download fails).
fn build_image(
    options: &Options,
    agent: PathBuf,
    cache: PathBuf,
    progress: &mut dyn FnMut(&str),
) -> Result<cairn_vmm::image::Image, Error> {
    let inputs = |flavour: Flavour| cairn_vmm::image::Inputs {
        dir: options.home.join(flavour.dir_name()),
        cache: cache.clone(),
        agent: agent.clone(),
        flavour,
        resolve: cairn_vmm::image::Resolve::IfMissing,
    };
    if let Some(flavour) = options.flavour {
        return Ok(cairn_vmm::image::ensure(&inputs(flavour), progress)?);
    }
    match cairn_vmm::image::ensure(&inputs(Flavour::Docker), progress) {
        Ok(image) => Ok(image),
        Err(e) => {
            progress(&format!("guest image: no Docker engine ({e}); using the base image"));
            Ok(cairn_vmm::image::ensure(&inputs(Flavour::Base), progress)?)
        }
    }
}

/// Stops a VM that runs without its control plane (the `cairn up` that started it was killed).
/// Returns its pid, if there was one.
pub fn stop_left_running(home: &std::path::Path) -> Option<u32> {
    let run = run_dir(home);
    let record = VmRecord::load(&run.vm_record())?;
    let vm = Qemu::adopt(&record);
    let _ = std::fs::remove_file(run.vm_record());
    let vm = vm?;
    let pid = vm.pid();
    vm.stop(Duration::from_secs(10));
    Some(pid)
}

struct Controller {
    db: Arc<Db>,
    run: RunDir,
    status: Status,
    kernel: PathBuf,
    initrd: PathBuf,
    /// The embedded VMM instead of qemu.
    native: bool,
    accel: Accel,
    vm: Option<Running>,
    /// The commit whose reboot-class values the running VM was started with.
    booted: Option<ObjectId>,
    /// A boot whose reports no longer count (the VM was restarted after it).
    stale_boot: Option<String>,
    /// The commit being applied.
    target: Option<ObjectId>,
    /// master's head as last seen, and when it changed.
    head: Option<ObjectId>,
    head_seen: Instant,
    state_head: Option<ObjectId>,
    /// The guest's newest report from the current boot.
    report: Option<Report>,
    /// When to start the VM again after it stopped on its own.
    restart_at: Option<Instant>,
    backoff: Duration,
    /// A VM left running by an earlier control plane, to be taken over.
    orphan: Option<(Qemu, ObjectId)>,
    stop: Arc<AtomicBool>,
    server: crate::serve::VmServer,
    /// The channel to the guest agent of the current VM.
    channel: Option<crate::channel::HostChannel>,
    /// The docker socket's listener (each connection is a channel stream to dockerd).
    docker_socket: Option<tokio::task::JoinHandle<()>>,
    /// The transport between qemu's network socket and the NAT of the current boot.
    net_task: Option<tokio::task::JoinHandle<()>>,
    /// The NAT of the current boot: its commands and counters.
    nat: Option<(tokio::sync::mpsc::Sender<net::Command>, Arc<net::Stats>)>,
    forwards: net::forward::Forwards,
    /// The NAT's own thread (its runtime runs the NAT, its transport and its flows).
    nat_thread: net::thread::NatThread,
    /// The Docker CLI that came with the image's engine, shown in the status.
    docker_cli: Option<PathBuf>,
    /// When the network's counters were last copied into the status.
    network_seen: Instant,
    /// What this host's hypervisors can do, remembered across runs.
    verdicts: std::path::PathBuf,
    /// The image is cairn's own (its agent reports), not a kernel of the user's.
    built_image: bool,
    /// When the current VM was started.
    booted_at: Instant,
}

impl Controller {
    fn start(
        options: Options,
        run: RunDir,
        stop: Arc<AtomicBool>,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Controller, Error> {
        let host = crate::host::detect()?;
        let db = Arc::new(Db::open(&options.db, host)?);
        let mut status =
            Status { pid: std::process::id(), vm: "starting".into(), ..Status::default() };
        status.save(&run.status()).map_err(|e| Error::io(&run.status(), e))?;
        let record = VmRecord::load(&run.vm_record());
        let record = record.filter(|r| r.alive());
        let server = crate::serve::spawn_for_vm(db.clone(), &run.socket(), stop.clone())?;
        progress(&format!("9P: {}", run.socket().display()));
        let orphan = record.and_then(|r| {
            let vm = Qemu::adopt(&r)?;
            let booted = ObjectId::from_hex(r.booted.as_bytes()).ok()?;
            Some((vm, booted, r))
        });
        if orphan.is_none() {
            let _ = std::fs::remove_file(run.vm_record());
        }
        let mut docker_cli = None;
        let built_image = options.kernel.is_none();
        let verdicts_path = crate::vm::verdicts::path(&options.home);
        let mut verdicts = crate::vm::verdicts::Verdicts::load(&verdicts_path);
        if options.reprobe {
            verdicts.native = None;
            verdicts.qemu_kvm = None;
            verdicts.native_boot_failed = None;
        }
        let (kernel, initrd) = match (options.kernel.clone(), options.initrd.clone()) {
            (Some(k), Some(i)) => (k, i),
            _ => {
                status.vm = "building".into();
                let _ = status.save(&run.status());
                let agent = std::env::current_exe()
                    .map_err(|e| Error::io(std::path::Path::new("/proc/self/exe"), e))?;
                let cache = std::env::var_os("CAIRN_CACHE")
                    .map_or_else(|| options.home.join("cache"), PathBuf::from);
                let image = build_image(&options, agent, cache, progress)?;
                docker_cli = image.docker_cli;
                (image.kernel, image.initrd)
            }
        };
        let hypervisor = db
            .read(CONFIG_BRANCH, "hypervisor")?
            .map(|v| String::from_utf8_lossy(&v).trim().to_owned());
        let usable =
            (hypervisor.as_deref() == Some("native")).then(|| native_usable(&mut verdicts));
        let native = matches!(usable, Some(Ok(_)));
        let orphan = match orphan {
            Some((vm, _, record)) if native => {
                progress(&format!(
                    "the VM left running (pid {}) is qemu's and hypervisor=native: stopping it",
                    record.pid
                ));
                vm.stop(Duration::from_secs(10));
                let _ = std::fs::remove_file(run.vm_record());
                None
            }
            orphan => orphan,
        };
        let (accel, accel_reason) = match &orphan {
            _ if native => (Accel::Kvm, "KVM".to_owned()),
            Some((_, _, record)) if record.accel == "kvm" => {
                (Accel::Kvm, "KVM (as the adopted VM runs)".to_owned())
            }
            Some(_) => (Accel::Tcg, "TCG (as the adopted VM runs)".to_owned()),
            None => choose_accel(&kernel, &run.0, &mut verdicts),
        };
        verdicts.save(&verdicts_path);
        status.backend = if native { "native" } else { "qemu" }.into();
        status.accel = accel.as_str().into();
        status.backend_reason = match usable {
            Some(Ok(how)) => format!("hypervisor=native: {how}"),
            Some(Err(why)) => format!("hypervisor=native, but {why}: qemu; {accel_reason}"),
            None => format!("hypervisor=qemu; {accel_reason}"),
        };
        progress(&format!("backend: {}", status.backend_reason));
        Ok(Controller {
            db,
            run,
            status,
            kernel,
            initrd,
            native,
            accel,
            vm: None,
            booted: None,
            stale_boot: None,
            target: None,
            head: None,
            head_seen: Instant::now(),
            state_head: None,
            report: None,
            restart_at: None,
            backoff: Duration::from_secs(1),
            orphan: orphan.map(|(vm, booted, _)| (vm, booted)),
            stop,
            forwards: net::forward::Forwards::new(server.runtime.clone()),
            nat_thread: net::thread::NatThread::start()
                .map_err(|e| Error::io(std::path::Path::new("the NAT's thread"), e))?,
            docker_cli,
            server,
            channel: None,
            docker_socket: None,
            verdicts: verdicts_path,
            built_image,
            booted_at: Instant::now(),
            net_task: None,
            nat: None,
            network_seen: Instant::now(),
        })
    }

    /// The loop: follow master and the guest until asked to stop.
    fn follow(&mut self, progress: &mut dyn FnMut(&str)) -> Result<(), Error> {
        let head = self.db.head(CONFIG_BRANCH)?;
        self.head = head;
        self.status.config_head = head.map(|h| h.to_string());
        if let Some((vm, booted)) = self.orphan.take() {
            progress(&format!(
                "adopted the running VM (pid {}, booted for {}); the guest remounts /Database",
                vm.pid(),
                short(&booted)
            ));
            self.status.vm_pid = Some(vm.pid());
            self.status.vm = "running".into();
            self.status.adopted = true;
            self.vm = Some(Running::Qemu(vm));
            self.booted = Some(booted);
            self.channel = Some(self.qemu_channel());
            // The guest's network carries on through a new NAT: qemu still listens.
            self.start_network(booted)?;
            // What the guest runs is planned against master like any new head.
            self.target = None;
        } else {
            self.boot(head, progress)?;
            self.target = head;
        }
        self.save();
        let mut log_checked = Instant::now();
        while !self.stop.load(Ordering::SeqCst) {
            std::thread::sleep(TICK);
            if log_checked.elapsed() > Duration::from_secs(10) {
                log_checked = Instant::now();
                logfile::rotate_if_large(&self.run.log(), logfile::LIMIT);
            }
            let mut changed = self.watch_master()?;
            changed |= self.plan_if_quiet(progress)?;
            changed |= self.read_reports(progress)?;
            changed |= self.requests(progress)?;
            changed |= self.mind_the_vm(progress)?;
            changed |= self.refresh_network();
            changed |= self.watch_channel();
            changed |= self.native_boot_overdue(progress)?;
            if changed {
                self.save();
            }
        }
        progress("stopping the VM");
        self.close_docker_socket();
        self.stop_vm(progress);
        self.status.vm = "stopped".into();
        self.status.vm_pid = None;
        self.save();
        Ok(())
    }

    /// Powers the VM off (forcibly after a grace period) and forgets it.
    fn stop_vm(&mut self, progress: &mut dyn FnMut(&str)) {
        if let Some(vm) = self.vm.take() {
            let clean = vm.stop(Duration::from_secs(10));
            progress(if clean { "the guest powered off" } else { "the VM was killed" });
        }
        self.channel = None;
        let _ = std::fs::remove_file(self.run.vm_record());
    }

    /// The channel through qemu's virtio-serial port.
    fn qemu_channel(&self) -> crate::channel::HostChannel {
        crate::channel::HostChannel::qemu(
            self.run.channel(),
            self.server.fs.clone(),
            &self.server.runtime,
        )
    }

    fn save(&self) {
        if let Err(e) = self.status.save(&self.run.status()) {
            tracing::warn!(error = %e, "writing the status");
        }
    }

    fn spec_for(&self, commit: ObjectId) -> Result<VmSpec, Error> {
        let rev = commit.to_string();
        let number = |path: &str| -> Result<u64, Error> {
            let raw = self.db.read(&rev, path)?.unwrap_or_default();
            let text = String::from_utf8_lossy(&raw).trim().to_owned();
            text.parse().map_err(|_| Error::BadSetting { key: path.to_owned(), value: text })
        };
        Ok(VmSpec {
            kernel: self.kernel.clone(),
            initrd: self.initrd.clone(),
            memory_mib: number("memory")?,
            ncpu: u32::try_from(number("ncpu")?).unwrap_or(1),
            channel: self.run.channel(),
            console: self.run.console(),
            qmp: self.run.qmp(),
            // qemu's own network for hostnet; the NAT's socket otherwise.
            net: (!self.hostnet(&rev)?).then(|| self.run.net()),
        })
    }

    /// (Re)starts the VM for `commit`'s configuration.
    fn boot(
        &mut self,
        commit: Option<ObjectId>,
        progress: &mut dyn FnMut(&str),
    ) -> Result<(), Error> {
        let commit = commit.ok_or(Error::NoConfig)?;
        if let Some(vm) = self.vm.take() {
            vm.stop(Duration::from_secs(5));
        }
        self.channel = None;
        // Reports of the boots before (also those of a VM that an earlier `up` ran) no longer
        // say anything about this one.
        self.report = None;
        self.stale_boot = self.latest_report().map(|r| r.boot_id);
        let spec = self.spec_for(commit)?;
        let port = self.start_network(commit)?;
        progress(&format!(
            "booting: {} MiB, {} cpus, {} ({})",
            spec.memory_mib,
            spec.ncpu,
            self.status.backend,
            self.accel.as_str()
        ));
        let vm = if self.native {
            let (fs, runtime) = (self.server.fs.clone(), self.server.runtime.clone());
            let vsock = self.run.vsock();
            let channel_socket =
                PathBuf::from(format!("{}_{}", vsock.display(), crate::channel::VSOCK_PORT));
            self.channel =
                Some(crate::channel::HostChannel::vsock(&channel_socket, fs.clone(), &runtime)?);
            Running::Native(Native::start(&spec, fs, runtime, &vsock, port)?)
        } else {
            // qemu listens there: a stale socket from an earlier VM would stop it.
            let _ = std::fs::remove_file(self.run.net());
            let _ = std::fs::remove_file(self.run.channel());
            let vm = Qemu::start(&spec, self.accel, &self.run.qemu_errors())?;
            self.channel = Some(self.qemu_channel());
            let record = vm.record(&spec, self.accel, commit.to_string());
            if let Err(e) = record.save(&self.run.vm_record()) {
                tracing::warn!(error = %e, "writing the VM record: a restarted control plane will not find this VM");
            }
            Running::Qemu(vm)
        };
        self.status.vm_pid = Some(vm.pid());
        self.status.vm = "booting".into();
        self.vm = Some(vm);
        self.booted = Some(commit);
        self.booted_at = Instant::now();
        Ok(())
    }

    /// The newest report on `state`, whichever boot wrote it.
    fn latest_report(&self) -> Option<Report> {
        let rev = self.db.head(STATE_BRANCH).ok()??.to_string();
        Report::from_files(|name| self.db.read(&rev, name).ok().flatten()).ok()
    }

    fn watch_master(&mut self) -> Result<bool, Error> {
        let head = self.db.head(CONFIG_BRANCH)?;
        if head == self.head {
            return Ok(false);
        }
        self.head = head;
        self.head_seen = Instant::now();
        self.status.config_head = head.map(|h| h.to_string());
        Ok(true)
    }

    /// Plans the newest head: at once when the guest applies it live, after master has been
    /// quiet for [`COALESCE`] when it needs a reboot.
    fn plan_if_quiet(&mut self, progress: &mut dyn FnMut(&str)) -> Result<bool, Error> {
        let (Some(head), Some(booted)) = (self.head, self.booted) else { return Ok(false) };
        if self.target == Some(head) {
            return Ok(false);
        }
        let plan = plan::between(&self.db, &booted.to_string(), &head.to_string())?;
        // A reboot waits for master to be quiet, so that quick commits make one reboot; what
        // the guest applies live needs no wait (it follows head.live itself).
        if plan::needs_reboot(plan.action) && self.head_seen.elapsed() < COALESCE {
            return Ok(false);
        }
        progress(&format!("plan {}: {}", short(&head), plan.action.as_str()));
        self.target = Some(head);
        self.status.attempted_commit = Some(head.to_string());
        if plan::needs_reboot(plan.action) {
            self.status.reboots += 1;
            self.boot(Some(head), progress)?;
            self.status.vm = "rebooting".into();
        } else if plan::touches_network(&plan) {
            // Before the guest renews its lease for a new MTU, the NAT has the new value.
            self.reconfigure_network(head)?;
        }
        // Everything else the guest applies itself when it sees the new head.
        self.status.plan = Some(plan);
        Ok(true)
    }

    /// Reads the guest's newest report on `state`, and what it means for the commit being
    /// applied (also when the plan, not the report, is what changed).
    fn read_reports(&mut self, progress: &mut dyn FnMut(&str)) -> Result<bool, Error> {
        let state = self.db.head(STATE_BRANCH)?;
        let fresh = state != self.state_head;
        if fresh {
            self.state_head = state;
            if let Some(state) = state {
                let rev = state.to_string();
                let db = &self.db;
                match Report::from_files(|name| db.read(&rev, name).ok().flatten()) {
                    Ok(report) if self.stale_boot.as_deref() == Some(report.boot_id.as_str()) => {}
                    Ok(report) => {
                        self.status.guest = Some(Guest {
                            boot_id: report.boot_id.clone(),
                            memory_mib: report.memory_mib,
                            ncpu: report.ncpu,
                            hostname: report.hostname.clone(),
                            daemon_json_sha256: report.daemon_json_sha256.clone(),
                            dockerd: report.dockerd.clone(),
                            dockerd_pid: report.dockerd_pid,
                        });
                        let had_docker = self.status.docker.is_some();
                        self.show_docker(&report);
                        if let (false, Some(docker)) = (had_docker, &self.status.docker) {
                            progress(&format!("DOCKER_HOST=unix://{}", docker.socket));
                        }
                        self.status.vm = "running".into();
                        self.backoff = Duration::from_secs(1);
                        if let Some((key, why)) = report.first_error() {
                            progress(&format!("guest: {key}: {why}"));
                            self.status.last_error = Some(LastError {
                                key: Some(key.to_owned()),
                                message: why.to_owned(),
                                commit: Some(report.applied_commit.clone()),
                            });
                        }
                        self.report = Some(report);
                    }
                    Err(e) => {
                        let message = e.to_string();
                        self.status.last_error =
                            Some(LastError { key: None, message, commit: None });
                    }
                }
            }
        }
        let Some(report) = &self.report else { return Ok(false) };
        let target = self.target.map(|t| t.to_string());
        if target.as_deref() != Some(report.applied_commit.as_str())
            || self.status.applied_commit == target
        {
            return Ok(fresh);
        }
        if report.first_error().is_some() {
            // The guest kept its previous values for the keys that failed: not applied.
            return Ok(fresh);
        }
        self.status.last_error = None;
        self.status.applied_commit = target;
        self.status.attempted_commit = None;
        self.status.plan = None;
        progress(&format!(
            "applied {}",
            &report.applied_commit[..12.min(report.applied_commit.len())]
        ));
        Ok(true)
    }

    /// `cairn vm start|stop|restart`, asked through a file in the run directory.
    fn requests(&mut self, progress: &mut dyn FnMut(&str)) -> Result<bool, Error> {
        let Ok(request) = std::fs::read_to_string(self.run.request()) else { return Ok(false) };
        let _ = std::fs::remove_file(self.run.request());
        match request.trim() {
            "stop" => {
                progress("stopping the VM (cairn vm stop)");
                self.stop_vm(progress);
                if let Some(report) = self.report.take() {
                    self.stale_boot = Some(report.boot_id);
                }
                self.restart_at = None;
                self.status.vm = "stopped".into();
                self.status.vm_pid = None;
            }
            "start" if self.vm.is_none() => {
                progress("starting the VM (cairn vm start)");
                self.restart_at = None;
                let head = self.head;
                self.boot(head, progress)?;
                self.target = head;
            }
            "restart" => {
                progress("restarting the VM (cairn vm restart)");
                self.restart_at = None;
                let head = self.head;
                self.boot(head, progress)?;
                self.target = head;
            }
            _ => {}
        }
        Ok(true)
    }

    /// Restarts a VM that stopped on its own, with a growing delay.
    fn mind_the_vm(&mut self, progress: &mut dyn FnMut(&str)) -> Result<bool, Error> {
        if let Some(at) = self.restart_at {
            if Instant::now() < at {
                return Ok(false);
            }
            self.restart_at = None;
            self.status.restarts += 1;
            self.boot(self.target.or(self.head), progress)?;
            return Ok(true);
        }
        let Some(vm) = self.vm.as_mut() else { return Ok(false) };
        let Some(exit) = vm.exited() else { return Ok(false) };
        if self.native && self.report.is_none() {
            self.vm = None;
            self.channel = None;
            self.native_failed(
                &format!("its boot ended before the guest agent reported ({exit})"),
                progress,
            )?;
            return Ok(true);
        }
        self.vm = None;
        self.channel = None;
        let _ = std::fs::remove_file(self.run.vm_record());
        if let Some(report) = self.report.take() {
            self.stale_boot = Some(report.boot_id);
        }
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
        self.status.vm = "restarting".into();
        self.status.vm_pid = None;
        self.status.last_error = Some(LastError { key: None, message, commit: None });
        self.restart_at = Some(Instant::now() + self.backoff);
        self.backoff = (self.backoff * 2).min(Duration::from_secs(30));
        Ok(true)
    }
}

impl Controller {
    /// A native boot of the built image that has not reported in time has failed.
    fn native_boot_overdue(&mut self, progress: &mut dyn FnMut(&str)) -> Result<bool, Error> {
        let overdue = self.native
            && self.built_image
            && self.vm.is_some()
            && self.report.is_none()
            && self.booted_at.elapsed() > NATIVE_REPORT_WITHIN;
        if !overdue {
            return Ok(false);
        }
        if let Some(vm) = self.vm.take() {
            vm.stop(Duration::ZERO);
        }
        self.channel = None;
        let why = format!("the guest agent did not report within {NATIVE_REPORT_WITHIN:?}");
        self.native_failed(&why, progress)?;
        Ok(true)
    }

    /// The embedded VMM could not boot the guest here: remember it for this host, say why,
    /// and boot the VM on qemu.
    fn native_failed(&mut self, why: &str, progress: &mut dyn FnMut(&str)) -> Result<(), Error> {
        let mut verdicts = crate::vm::verdicts::Verdicts::load(&self.verdicts);
        verdicts.native_boot_failed = Some(why.to_owned());
        let (accel, accel_reason) = choose_accel(&self.kernel, &self.run.0, &mut verdicts);
        verdicts.save(&self.verdicts);
        self.native = false;
        self.accel = accel;
        self.status.backend = "qemu".into();
        self.status.accel = accel.as_str().into();
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

    /// Copies whether the guest's channel is up into the status.
    fn watch_channel(&mut self) -> bool {
        let up = self.channel.as_ref().is_some_and(|c| c.session().is_some());
        let changed = up != self.status.channel;
        self.status.channel = up;
        if changed {
            self.show_docker_channel();
        }
        changed
    }
}

/// Whether the embedded VMM can run the guest here, by its KVM probe (remembered for this
/// host), or by a native boot that failed here before: how it will, or why not.
/// `CAIRN_NATIVE=force` skips the probe (for guests that need less than Linux does).
fn native_usable(verdicts: &mut crate::vm::verdicts::Verdicts) -> Result<String, String> {
    if let Some(why) = &verdicts.native_boot_failed {
        return Err(format!(
            "the embedded VMM failed to boot the guest here before ({why}; `cairn set hypervisor native` asks again)"
        ));
    }
    if std::env::var("CAIRN_NATIVE").as_deref() == Ok("force") {
        return Ok("the embedded VMM (KVM probe skipped: CAIRN_NATIVE=force)".into());
    }
    let verdict =
        verdicts.native.get_or_insert_with(|| match cairn_vmm::machine::probe::can_run_linux() {
            Ok(()) => Ok("the embedded VMM (KVM)".into()),
            Err(why) => Err(format!("the embedded VMM cannot run Linux on this host ({why})")),
        });
    verdict.clone()
}

fn short(id: &ObjectId) -> String {
    id.to_string()[..12].to_owned()
}

/// KVM when qemu's KVM boots the guest kernel here (remembered for this host and kernel),
/// else TCG; `CAIRN_ACCEL=kvm|tcg` decides instead of the probe.
fn choose_accel(
    kernel: &std::path::Path,
    scratch: &std::path::Path,
    verdicts: &mut crate::vm::verdicts::Verdicts,
) -> (Accel, String) {
    match std::env::var("CAIRN_ACCEL").as_deref() {
        Ok("tcg") => return (Accel::Tcg, "TCG (CAIRN_ACCEL=tcg)".into()),
        Ok("kvm") => return (Accel::Kvm, "KVM (CAIRN_ACCEL=kvm)".into()),
        _ => {}
    }
    let sha = cairn_vmm::image::sha256_file(kernel).unwrap_or_default();
    let (kvm, why) = match &verdicts.qemu_kvm {
        Some((tried, kvm, why)) if *tried == sha => (*kvm, why.clone()),
        _ => {
            let (kvm, why) = qemu::probe_kvm(kernel, scratch);
            verdicts.qemu_kvm = Some((sha, kvm, why.clone()));
            (kvm, why)
        }
    };
    if kvm {
        (Accel::Kvm, why)
    } else {
        (Accel::Tcg, format!("TCG: {why}"))
    }
}
