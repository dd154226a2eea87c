//! `cairn up`: the control loop. It serves the database over 9P, builds the guest image when
//! needed, boots the VM with the configuration at master, then follows master: each new head
//! (after a short quiet period, so that quick commits coalesce) is planned against what the VM
//! runs, the VM is rebooted when the plan needs it, and the guest's report on branch `state`
//! says when the change is applied. Everything it knows goes to `run/status.json`.
//!
//! The loop is event-driven ([`events`]): it sleeps until something happens (a commit, a
//! report, the VM's end, the channel, a command on the control socket, a signal) or until a
//! deadline of its own, and handles each with a function of its own.
//!
//! The control plane can restart without the VM: a VM that still runs when `up` starts (its
//! record in `run/vm.json`) is adopted, the new control plane connects to the channel's
//! socket that qemu keeps listening on, and the guest agent remounts /Database through the new
//! session and reports again.
//!
//! # Layout
//! - `start`: start-up, step by step (serve, find a VM to adopt, the image, the backend).
//! - `lifecycle`: booting and stopping the VM, its end, the native fallback.
//! - `reports`: the guest's reports and when a commit counts as applied.
//! - `network`: the NAT of each boot, forwards, the docker socket; [`docker_context`], the
//!   Docker CLI's context for it.
//! - [`events`], [`control`], [`status`], [`instance`], `logfile`.

pub mod clock;
pub mod control;
mod disk;
pub mod docker_context;
pub mod events;
pub mod instance;
mod lifecycle;
mod logfile;
mod network;
mod pausing;
mod reports;
mod sharing;
mod start;
pub mod status;

use std::path::PathBuf;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_agent::report::Report;
use cairn_db::{Db, ObjectId};
use cairn_image::Flavour;

use crate::net;
use crate::plan;
use crate::vm::qemu::Qemu;
use crate::vm::record::VmRecord;
use crate::vm::{Accel, Running};
use crate::Error;
use events::Event;
use status::{RunDir, Status, VmState};

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
/// How often the detached log's size is looked at.
const LOG_CHECK: Duration = Duration::from_secs(10);

/// The run directory of a data directory.
pub fn run_dir(home: &std::path::Path) -> RunDir {
    RunDir(home.join("run"))
}

/// Runs until SIGINT, SIGTERM or SIGHUP (`cairn down`). `progress` hears the stages of
/// start-up and every change of state.
pub fn run(options: Options, progress: &mut dyn FnMut(&str)) -> Result<(), Error> {
    let run = run_dir(&options.home);
    std::fs::create_dir_all(&run.0).map_err(|e| Error::io(&run.0, e))?;
    let _instance = instance::Instance::claim(&run.pid())?;
    let (events, inbox) = events::channel();
    let mut controller = Controller::start(options, run, events, progress)?;
    controller.follow(inbox, progress)
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

/// The control plane's state while `up` runs.
struct Controller {
    db: Arc<Db>,
    run: RunDir,
    status: Status,
    events: Sender<Event>,
    kernel: PathBuf,
    initrd: PathBuf,
    /// The image's read-only system disk (the engine), if its layout has one.
    system_disk: Option<PathBuf>,
    /// The embedded VMM instead of qemu.
    native: bool,
    accel: Accel,
    vm: Option<Running>,
    /// Bumped at every boot: events of an earlier VM (its end, its channel) are ignored.
    generation: u64,
    /// The commit whose reboot-class values the running VM was started with.
    booted: Option<ObjectId>,
    /// A boot whose reports no longer count (the VM was restarted after it).
    stale_boot: Option<String>,
    /// The commit being applied.
    target: Option<ObjectId>,
    /// master's head as last seen, and when it changed.
    head: Option<ObjectId>,
    head_seen: Instant,
    /// The guest's newest report from the current boot, and the commit it says it applied.
    report: Option<(Report, ObjectId)>,
    /// When to start the VM again after it stopped on its own.
    restart_at: Option<Instant>,
    backoff: Duration,
    /// A VM left running by an earlier control plane, to be taken over.
    orphan: Option<(Qemu, ObjectId)>,
    server: crate::serve::VmServer,
    /// The channel to the guest agent of the current VM, and the task that reports on it.
    channel: Option<(crate::channel::HostChannel, tokio::task::JoinHandle<()>)>,
    /// The session of the current VM's channel, whichever VM that is.
    sessions: crate::channel::Sessions,
    /// The docker socket's listener (each connection is a channel stream to dockerd).
    docker_socket: Option<tokio::task::JoinHandle<()>>,
    /// The transport between qemu's network socket and the NAT of the current boot.
    net_task: Option<tokio::task::JoinHandle<()>>,
    /// The NAT of the current boot: its commands and counters.
    nat: Option<(tokio::sync::mpsc::Sender<net::Command>, Arc<net::Stats>)>,
    forwards: net::forward::Forwards,
    /// The ports containers publish, and the version of their list last put in the status.
    published: (net::published::Published, u64),
    /// The NAT's own thread (its runtime runs the NAT, its transport and its flows).
    nat_thread: net::thread::NatThread,
    /// The Docker CLI that came with the image's engine, shown in the status.
    docker_cli: Option<PathBuf>,
    /// When the network's counters were last copied into the status.
    network_seen: Instant,
    /// What this host's hypervisors can do, remembered across runs.
    verdicts: PathBuf,
    /// The image is cairn's own (its agent reports), not a kernel of the user's.
    built_image: bool,
    /// When the current VM was started.
    booted_at: Instant,
    /// When the log's size was last looked at.
    log_checked: Instant,
    /// The engine's persistent data disk.
    data_disk: PathBuf,
    /// The virtiofsd of each directory the current VM shares.
    virtiofsd: Vec<crate::vm::virtiofsd::Virtiofsd>,
    /// The watch that sends the shares' host file events to the guest.
    file_events: Option<crate::vm::file_events::FileEvents>,
    /// Keeps the guest's clock on the host's.
    clock: clock::Keeper,
    /// Whether the VM's vCPUs are stopped, and by whom: nothing is planned until it resumes,
    /// and the sockets' listeners answer for it or wake it.
    paused: pausing::PauseFlag,
    /// The `auto-pause` key: pause after this long without a running container.
    auto_pause: Option<Duration>,
    /// Since when no container runs (while the VM runs).
    idle_since: Option<Instant>,
    /// How many containers dockerd last said run (None: it has not said).
    running_containers: Option<usize>,
}

impl Controller {
    /// The loop: handle each event, and each deadline as it falls due, until asked to stop.
    fn follow(
        &mut self,
        inbox: Receiver<Event>,
        progress: &mut dyn FnMut(&str),
    ) -> Result<(), Error> {
        self.begin(progress)?;
        self.save();
        loop {
            let wait = self.next_deadline().saturating_duration_since(Instant::now());
            let mut changed = match inbox.recv_timeout(wait) {
                Ok(Event::Stop) | Err(RecvTimeoutError::Disconnected) => break,
                Ok(event) => self.on_event(event, progress)?,
                Err(RecvTimeoutError::Timeout) => false,
            };
            changed |= self.on_deadlines(progress)?;
            if changed {
                self.save();
            }
        }
        progress("stopping the VM");
        self.close_docker_socket();
        self.stop_vm(progress);
        self.status.vm = VmState::Stopped;
        self.status.vm_pid = None;
        self.save();
        Ok(())
    }

    /// The first VM: the one left running (adopted) or a new boot of master.
    fn begin(&mut self, progress: &mut dyn FnMut(&str)) -> Result<(), Error> {
        let head = self.db.head(cairn_db::CONFIG_BRANCH)?;
        if let Some(head) = head {
            self.read_auto_pause(&head.to_string())?;
        }
        self.head = head;
        self.status.config_head = head.map(|h| h.to_string());
        match self.orphan.take() {
            Some((vm, booted)) => self.adopt(vm, booted, progress),
            None => {
                self.boot(head, progress)?;
                self.target = head;
                Ok(())
            }
        }
    }

    fn on_event(&mut self, event: Event, progress: &mut dyn FnMut(&str)) -> Result<bool, Error> {
        match event {
            Event::Head(head) => self.on_head(head, progress),
            Event::State(state) => self.on_report(state, progress),
            Event::VmExited { generation } if generation == self.generation => {
                self.on_vm_exit(progress)
            }
            Event::Channel { generation, up } if generation == self.generation => {
                Ok(self.on_channel(up))
            }
            // An earlier VM's: it is gone already.
            Event::VmExited { .. } | Event::Channel { .. } => Ok(false),
            Event::Control(request, reply) => {
                let answer = self.on_control(request, progress);
                let text = match &answer {
                    Ok(()) => "ok".to_owned(),
                    Err(e) => format!("error: {e}"),
                };
                let _ = reply.send(text);
                answer.map(|()| true)
            }
            Event::Wake => self.on_wake(progress),
            Event::Containers(running) => Ok(self.on_containers(running)),
            Event::Clock(reading) => {
                self.status.clock = Some(reading);
                Ok(true)
            }
            Event::Stop => Ok(false),
        }
    }

    /// When the loop must wake up next without an event.
    fn next_deadline(&self) -> Instant {
        let mut due = vec![self.log_checked + LOG_CHECK];
        if self.head.is_some() && self.target != self.head {
            due.push(self.head_seen + COALESCE);
        }
        due.extend(self.restart_at);
        if self.nat.is_some() || self.status.docker.is_some() || self.file_events.is_some() {
            due.push(self.network_seen + network::REFRESH);
        }
        if let Some(overdue) = self.native_deadline() {
            due.push(overdue);
        }
        due.extend(self.idle_deadline());
        due.into_iter().min().unwrap_or_else(|| Instant::now() + LOG_CHECK)
    }

    /// Whatever has fallen due.
    fn on_deadlines(&mut self, progress: &mut dyn FnMut(&str)) -> Result<bool, Error> {
        if self.log_checked.elapsed() >= LOG_CHECK {
            self.log_checked = Instant::now();
            logfile::rotate_if_large(&self.run.log(), logfile::LIMIT);
        }
        let mut changed = self.plan_if_quiet(progress)?;
        changed |= self.restart_if_due(progress)?;
        changed |= self.refresh_network();
        changed |= self.native_boot_overdue(progress)?;
        changed |= self.pause_if_idle(progress)?;
        Ok(changed)
    }

    fn save(&self) {
        if let Err(e) = self.status.save(&self.run.status()) {
            tracing::warn!(error = %e, "writing the status");
        }
    }

    /// master moved: remember when, and plan it (at once if the guest applies it live).
    fn on_head(
        &mut self,
        head: Option<ObjectId>,
        progress: &mut dyn FnMut(&str),
    ) -> Result<bool, Error> {
        if head == self.head {
            return Ok(false);
        }
        self.head = head;
        self.head_seen = Instant::now();
        self.status.config_head = head.map(|h| h.to_string());
        // auto-pause is the control plane's own: applied at once, whatever the VM does.
        if let Some(head) = head {
            self.read_auto_pause(&head.to_string())?;
        }
        self.plan_if_quiet(progress)?;
        Ok(true)
    }

    /// Plans the newest head: at once when the guest applies it live, after master has been
    /// quiet for [`COALESCE`] when it needs a reboot.
    fn plan_if_quiet(&mut self, progress: &mut dyn FnMut(&str)) -> Result<bool, Error> {
        let (Some(head), Some(booted)) = (self.head, self.booted) else { return Ok(false) };
        // A paused guest applies nothing; the commit is planned when it resumes.
        if self.is_paused() {
            return Ok(false);
        }
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
            self.status.vm = VmState::Rebooting;
        } else {
            if plan::touches_network(&plan) {
                // Before the guest renews its lease for a new MTU, the NAT has the new value.
                self.reconfigure_network(head)?;
            }
            if plan.steps.iter().any(|s| s.class == cairn_schema::ApplyClass::DiskGrow) {
                self.grow_disk_live(head, progress)?;
            }
        }
        // Everything else the guest applies itself when it sees the new head.
        self.status.plan = Some(plan);
        // The guest may have reported this head already.
        self.check_applied(progress);
        Ok(true)
    }

    /// `cairn vm start|stop|restart`.
    fn on_control(
        &mut self,
        request: control::Request,
        progress: &mut dyn FnMut(&str),
    ) -> Result<(), Error> {
        match request {
            control::Request::VmStop => {
                progress("stopping the VM (cairn vm stop)");
                self.stop_vm(progress);
                self.forget_report();
                self.restart_at = None;
                self.status.vm = VmState::Stopped;
                self.status.vm_pid = None;
            }
            control::Request::VmPause => self.pause(pausing::Paused::ByUser, progress)?,
            control::Request::VmResume => self.resume(progress)?,
            control::Request::VmStart if self.vm.is_some() => {}
            control::Request::VmStart | control::Request::VmRestart => {
                progress(&format!(
                    "{} the VM ({})",
                    if request == control::Request::VmStart { "starting" } else { "restarting" },
                    request.as_str()
                ));
                self.restart_at = None;
                let head = self.head;
                self.boot(head, progress)?;
                self.target = head;
            }
        }
        Ok(())
    }
}

fn short(id: &ObjectId) -> String {
    id.to_string()[..12].to_owned()
}
