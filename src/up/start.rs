//! Start-up, one step at a time: the database and its watches, the 9P server and the control
//! socket, a VM left running to adopt, the guest image, and the backend that will run it.

use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use cairn_agent::report::STATE_BRANCH;
use cairn_db::{Db, ObjectId, CONFIG_BRANCH};
use cairn_image::Flavour;

use super::events::{self, Event};
use super::status::{Backend, RunDir, Status, VmState};
use super::{Controller, Options};
use crate::net;
use crate::vm::qemu::{self, Qemu};
use crate::vm::record::VmRecord;
use crate::vm::verdicts::Verdicts;
use crate::vm::Accel;
use crate::Error;

/// The image to boot and what came with it.
struct Image {
    kernel: PathBuf,
    initrd: PathBuf,
    /// The read-only system disk of the image's layout.
    system: Option<PathBuf>,
    docker_cli: Option<PathBuf>,
    /// cairn's own image (its agent reports), not a kernel of the user's.
    built: bool,
}

/// The backend chosen, and why.
struct Choice {
    native: bool,
    accel: Accel,
    reason: String,
}

impl Controller {
    pub(super) fn start(
        options: Options,
        run: RunDir,
        events: Sender<Event>,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Controller, Error> {
        let db = Arc::new(Db::open(&options.db, crate::host::detect(&options.home)?)?);
        let mut status = Status { pid: std::process::id(), ..Status::default() };
        status.save(&run.status()).map_err(|e| Error::io(&run.status(), e))?;
        watch_branches(&db, &events)?;
        let stopper = events.clone();
        let on_stop = move || {
            let _ = stopper.send(Event::Stop);
        };
        let server = crate::serve::spawn_for_vm(db.clone(), &run.socket(), Box::new(on_stop))?;
        progress(&format!("9P: {}", run.socket().display()));
        super::control::serve(&run.control(), events.clone())?;
        let sessions = crate::channel::Sessions::default();
        let paused = super::pausing::PauseFlag::default();
        let refusal = cairn_channel::shell::Frame::Failed(
            "the VM is paused: `cairn vm resume` runs it again".into(),
        )
        .encode();
        let shell_gate = super::pausing::gate(paused.clone(), refusal, events.clone());
        serve_shell(&run, &server.runtime, &sessions, shell_gate)?;
        let counted = events.clone();
        server.runtime.spawn(crate::vm::containers::follow(sessions.subscribe(), move |running| {
            let _ = counted.send(Event::Containers(running.len()));
        }));
        let clock =
            super::clock::Keeper::start(&server.runtime, sessions.subscribe(), events.clone());
        let orphan = left_running(&run);
        let verdicts_path = crate::vm::verdicts::path(&options.home);
        let mut verdicts = Verdicts::load(&verdicts_path);
        if options.reprobe {
            verdicts.native = None;
            verdicts.qemu_kvm = None;
            verdicts.native_boot_failed = None;
        }
        status.vm = VmState::Building;
        let _ = status.save(&run.status());
        let image = image(&options, progress)?;
        let hypervisor = db.read(CONFIG_BRANCH, "hypervisor")?.unwrap_or_default();
        let wants_native = hypervisor.trim_ascii() == b"native";
        let choice =
            choose_backend(wants_native, orphan.as_ref(), &image.kernel, &run, &mut verdicts);
        let orphan = match orphan {
            Some((vm, _, record)) if choice.native => {
                progress(&format!(
                    "the VM left running (pid {}) is qemu's and hypervisor=native: stopping it",
                    record.pid
                ));
                vm.stop(Duration::from_secs(10));
                let _ = std::fs::remove_file(run.vm_record());
                None
            }
            orphan => orphan.map(|(vm, booted, _)| (vm, booted)),
        };
        verdicts.save(&verdicts_path);
        status.backend = Some(if choice.native { Backend::Native } else { Backend::Qemu });
        status.accel = Some(choice.accel);
        status.backend_reason = choice.reason;
        progress(&format!("backend: {}", status.backend_reason));
        Ok(Controller {
            db,
            run,
            status,
            events,
            kernel: image.kernel,
            initrd: image.initrd,
            system_disk: image.system,
            native: choice.native,
            accel: choice.accel,
            vm: None,
            generation: 0,
            booted: None,
            stale_boot: None,
            target: None,
            head: None,
            head_seen: Instant::now(),
            report: None,
            restart_at: None,
            backoff: Duration::from_secs(1),
            orphan,
            forwards: net::forward::Forwards::new(server.runtime.clone()),
            published: Default::default(),
            nat_thread: net::thread::NatThread::start()
                .map_err(|e| Error::io(Path::new("the NAT's thread"), e))?,
            docker_cli: image.docker_cli,
            server,
            channel: None,
            sessions,
            clock,
            paused,
            auto_pause: None,
            idle_since: None,
            running_containers: None,
            docker_socket: None,
            verdicts: verdicts_path,
            built_image: image.built,
            booted_at: Instant::now(),
            log_checked: Instant::now(),
            data_disk: crate::vm::disk::path(&options.home),
            virtiofsd: Vec::new(),
            file_events: None,
            net_task: None,
            nat: None,
            network_seen: Instant::now(),
        })
    }
}

/// `run/shell.sock` for the control plane's whole life: each connection is a shell stream to
/// the agent of whichever VM runs (a connection made while it boots waits for its channel).
fn serve_shell(
    run: &RunDir,
    runtime: &tokio::runtime::Handle,
    sessions: &crate::channel::Sessions,
    gate: crate::channel::Gate,
) -> Result<(), Error> {
    let listener = {
        let _entered = runtime.enter();
        cairn_9p::transport::bind_unix(&run.shell())?
    };
    let service = cairn_channel::Service::new(cairn_channel::shell::SERVICE, &[]);
    runtime.spawn(crate::channel::serve_unix(listener, service, sessions.subscribe(), Some(gate)));
    Ok(())
}

/// master's moves and the guest's reports, as events.
fn watch_branches(db: &Db, events: &Sender<Event>) -> Result<(), Error> {
    let thread = |e| Error::io(Path::new("a watch thread"), e);
    events::forward_heads(db.watch(CONFIG_BRANCH)?, events.clone(), Event::Head).map_err(thread)?;
    events::forward_heads(db.watch(STATE_BRANCH)?, events.clone(), Event::State).map_err(thread)
}

/// The VM an earlier control plane left running, with the commit it was booted for.
fn left_running(run: &RunDir) -> Option<(Qemu, ObjectId, VmRecord)> {
    let found = VmRecord::load(&run.vm_record()).filter(VmRecord::alive).and_then(|r| {
        let vm = Qemu::adopt(&r)?;
        let booted = ObjectId::from_hex(r.booted.as_bytes()).ok()?;
        Some((vm, booted, r))
    });
    if found.is_none() {
        let _ = std::fs::remove_file(run.vm_record());
    }
    found
}

/// The user's kernel and initramfs, or the built image of `options.flavour`: without one,
/// the docker flavour, or the base image when the engine cannot be had.
fn image(options: &Options, progress: &mut dyn FnMut(&str)) -> Result<Image, Error> {
    if let (Some(kernel), Some(initrd)) = (options.kernel.clone(), options.initrd.clone()) {
        return Ok(Image { kernel, initrd, system: None, docker_cli: None, built: false });
    }
    let agent = std::env::current_exe().map_err(|e| Error::io(Path::new("/proc/self/exe"), e))?;
    let cache =
        std::env::var_os("CAIRN_CACHE").map_or_else(|| options.home.join("cache"), PathBuf::from);
    let inputs = |flavour: Flavour| {
        let layout = cairn_image::Layout::for_flavour(flavour);
        cairn_image::Inputs {
            dir: options.home.join(layout.dir_name(flavour)),
            cache: cache.clone(),
            agent: agent.clone(),
            flavour,
            layout,
            resolve: cairn_image::Resolve::IfMissing,
        }
    };
    let built = match options.flavour {
        Some(flavour) => cairn_image::ensure(&inputs(flavour), progress)?,
        None => match cairn_image::ensure(&inputs(Flavour::Docker), progress) {
            Ok(image) => image,
            Err(e) => {
                progress(&format!("guest image: no Docker engine ({e}); using the base image"));
                cairn_image::ensure(&inputs(Flavour::Base), progress)?
            }
        },
    };
    Ok(Image {
        kernel: built.kernel,
        initrd: built.initrd,
        system: built.system,
        docker_cli: built.docker_cli,
        built: true,
    })
}

/// The embedded VMM when it is asked for and can run the guest here, else qemu, with KVM
/// when qemu's KVM boots the kernel (or the adopted VM runs on it).
fn choose_backend(
    wants_native: bool,
    orphan: Option<&(Qemu, ObjectId, VmRecord)>,
    kernel: &Path,
    run: &RunDir,
    verdicts: &mut Verdicts,
) -> Choice {
    let usable = wants_native.then(|| native_usable(verdicts));
    let native = matches!(usable, Some(Ok(_)));
    let (accel, accel_reason) = match orphan {
        _ if native => (Accel::Kvm, "KVM".to_owned()),
        Some((_, _, record)) if record.accel == Accel::Kvm => {
            (Accel::Kvm, "KVM (as the adopted VM runs)".to_owned())
        }
        Some(_) => (Accel::Tcg, "TCG (as the adopted VM runs)".to_owned()),
        None => choose_accel(kernel, &run.0, verdicts),
    };
    let reason = match usable {
        Some(Ok(how)) => format!("hypervisor=native: {how}"),
        Some(Err(why)) => format!("hypervisor=native, but {why}: qemu; {accel_reason}"),
        None => format!("hypervisor=qemu; {accel_reason}"),
    };
    Choice { native, accel, reason }
}

/// Whether the embedded VMM can run the guest here, by its KVM probe (remembered for this
/// host), or by a native boot that failed here before: how it will, or why not.
/// `CAIRN_NATIVE=force` skips the probe (for guests that need less than Linux does).
fn native_usable(verdicts: &mut Verdicts) -> Result<String, String> {
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

/// KVM when qemu's KVM boots the guest kernel here (remembered for this host and kernel),
/// else TCG; `CAIRN_ACCEL=kvm|tcg` decides instead of the probe.
pub(super) fn choose_accel(
    kernel: &Path,
    scratch: &Path,
    verdicts: &mut Verdicts,
) -> (Accel, String) {
    match std::env::var("CAIRN_ACCEL").as_deref() {
        Ok("tcg") => return (Accel::Tcg, "TCG (CAIRN_ACCEL=tcg)".into()),
        Ok("kvm") => return (Accel::Kvm, "KVM (CAIRN_ACCEL=kvm)".into()),
        _ => {}
    }
    let sha = cairn_image::sha256_file(kernel).unwrap_or_default();
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
