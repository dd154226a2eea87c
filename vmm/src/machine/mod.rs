//! The embedded VMM: a KVM virtual machine with `memory` MiB and `ncpu` vCPUs, booted directly
//! into a PVH ELF kernel or a bzImage, with a serial console into a bounded log, poweroff and reset told apart,
//! and virtio-mmio devices. [`Machine`] is the lifecycle the control plane drives: start, stop,
//! wait for the exit and its reason, status.

pub mod acpi;
pub mod boot;
pub mod bus;
pub mod console;
pub mod cpu;
pub mod i8042;
pub mod layout;
pub mod legacy;
pub mod notify;
pub mod pause;
pub mod probe;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_bindings::{kvm_pit_config, kvm_userspace_memory_region, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VmFd};
use vm_memory::{Address, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::EventFd;

use crate::virtio::{mmio::MmioTransport, Interrupt, VirtioDevice};
use bus::Bus;
use legacy::StopRequest;

/// Why the VMM could not start or run a VM.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{op}: {source}")]
    Kvm {
        op: &'static str,
        #[source]
        source: kvm_ioctls::Error,
    },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Guest memory could not be set up or written (`what` says which part).
    #[error("guest memory ({what}): {source}")]
    Memory {
        what: &'static str,
        #[source]
        source: BoxedError,
    },
    /// The loader refused the kernel, the initramfs, the command line or the boot information.
    #[error("{what}: {source}")]
    Load {
        what: String,
        #[source]
        source: BoxedError,
    },
    #[error("{0}: no setup header")]
    NoSetupHeader(PathBuf),
    #[error("{0}: no PVH entry note (XEN_ELFNOTE_PHYS32_ENTRY)")]
    NoPvhEntry(PathBuf),
    #[error("{path}: {mib} MiB does not fit in guest memory above the kernel")]
    InitrdTooLarge { path: PathBuf, mib: u64 },
    #[error("the memory map has {0} entries, more than the zero page holds")]
    MemoryMap(usize),
    #[error("the ACPI tables do not fit below 1 MiB")]
    AcpiTooLarge,
    /// This host's KVM refused an MSR the vCPUs are set up with (REFERENCE.md).
    #[error("KVM_SET_MSRS set {set} of {of}: MSR {index:#x} refused")]
    MsrRefused { set: usize, of: usize, index: u32 },
    /// An operating-system resource of the VMM: an eventfd, epoll, a thread, a signal handler.
    #[error("{what}: {source}")]
    Os {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// A driver set up other queues than the device has.
    #[error("{device} has {wanted} queue(s), the driver set up {got}")]
    Queues { device: &'static str, wanted: usize, got: usize },
    /// A device could not start the thread that serves it.
    #[error("starting {thread}: {source}")]
    Thread {
        thread: &'static str,
        #[source]
        source: std::io::Error,
    },
    /// A backend that gives a device no frames to deliver.
    #[error("{0}: the backend gives no frames")]
    NoFrames(&'static str),
    /// KVM stopped at an instruction Linux needs (the probe, [`probe::can_run_linux`]).
    #[error("KVM cannot emulate {0} (internal error): a Linux kernel would die the same way")]
    CannotEmulate(&'static str),
    /// The probe's guest left KVM in a way it never should.
    #[error("the probe stopped at {step} ({exit})")]
    ProbeStopped { step: &'static str, exit: String },
    /// The probe's guest ran out of steps without finishing.
    #[error("the probe did not finish (last step: {0})")]
    ProbeUnfinished(&'static str),
}

/// The source of an error from a crate whose error types differ by call (vm-memory,
/// linux-loader), kept whole for the chain.
pub type BoxedError = Box<dyn std::error::Error + Send + Sync>;

impl Error {
    pub(crate) fn memory<E: std::error::Error + Send + Sync + 'static>(
        what: &'static str,
    ) -> impl FnOnce(E) -> Error {
        move |e| Error::Memory { what, source: Box::new(e) }
    }
    pub(crate) fn load<E: std::error::Error + Send + Sync + 'static>(
        what: impl std::fmt::Display,
    ) -> impl FnOnce(E) -> Error {
        move |e| Error::Load { what: what.to_string(), source: Box::new(e) }
    }
    pub(crate) fn os(what: impl std::fmt::Display) -> impl FnOnce(std::io::Error) -> Error {
        move |source| Error::Os { what: what.to_string(), source }
    }
    pub(crate) fn kvm(op: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> Error {
        move |source| Error::Kvm { op, source }
    }
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Error {
        Error::Io { path: path.to_owned(), source }
    }
}

/// How a VM ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Exit {
    /// The guest powered off (ACPI S5, or KVM's shutdown system event).
    PowerOff,
    /// The guest reset the machine: how (i8042 reset, triple fault, ...).
    Reboot(String),
    /// A vCPU halted with interrupts off and nothing can wake it.
    Halted,
    /// The VMM stopped it ([`Machine::stop`]).
    Stopped,
    /// KVM refused to go on.
    Crashed(String),
}

impl std::fmt::Display for Exit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Exit::PowerOff => write!(f, "the guest powered off"),
            Exit::Reboot(how) => write!(f, "the guest rebooted ({how})"),
            Exit::Halted => write!(f, "the guest halted"),
            Exit::Stopped => write!(f, "stopped by the VMM"),
            Exit::Crashed(why) => write!(f, "the VM crashed: {why}"),
        }
    }
}

/// What to run.
pub struct Config {
    pub memory_mib: u64,
    pub ncpu: u8,
    pub kernel: PathBuf,
    pub initrd: Option<PathBuf>,
    pub cmdline: String,
    /// The serial console's log, kept under `console_limit` bytes.
    pub console: PathBuf,
    pub console_limit: u64,
    pub devices: Vec<Box<dyn VirtioDevice>>,
    /// Also list the devices as `virtio_mmio.device=` words on the command line, for guests
    /// without ACPI (a Linux kernel finds them in the DSDT, and would see them twice).
    pub devices_on_cmdline: bool,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("memory_mib", &self.memory_mib)
            .field("ncpu", &self.ncpu)
            .field("kernel", &self.kernel)
            .field("cmdline", &self.cmdline)
            .field("devices", &self.devices.len())
            .finish()
    }
}

/// Waits for a VM to end, apart from its [`Machine`].
#[derive(Debug, Clone)]
pub struct EndSignal(legacy::StopRequest);

impl EndSignal {
    /// Blocks until the VM has ended (or is ending), and says how.
    pub fn wait(&self) -> Exit {
        loop {
            if let Some(exit) = self.0.wait(Duration::from_secs(3600)) {
                return exit;
            }
        }
    }
}

/// A running VM.
#[derive(Debug)]
pub struct Machine {
    stop: StopRequest,
    pause: pause::PauseGate,
    keyboard: Arc<Mutex<i8042::I8042>>,
    vcpus: Vec<JoinHandle<Exit>>,
    /// The notification thread's stopper and handle, until the VM has ended.
    notifications: Option<(EventFd, JoinHandle<()>)>,
    exit: Option<Exit>,
    _vm: Arc<VmFd>,
    started: Instant,
}

/// The signal that kicks a vCPU thread out of KVM_RUN.
fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn ignore(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

fn guest_memory(vm: &VmFd, memory: u64) -> Result<GuestMemoryMmap, Error> {
    let ranges: Vec<(GuestAddress, usize)> = layout::ram_regions(memory)
        .into_iter()
        .map(|(start, len)| (GuestAddress(start), len as usize))
        .collect();
    let mem = GuestMemoryMmap::from_ranges(&ranges).map_err(Error::memory("mapping"))?;
    for (slot, region) in mem.iter().enumerate() {
        let host = mem
            .get_host_address(region.start_addr())
            .map_err(Error::memory("a region's address"))?;
        let region = kvm_userspace_memory_region {
            slot: slot as u32,
            guest_phys_addr: region.start_addr().raw_value(),
            memory_size: region.len(),
            userspace_addr: host as u64,
            flags: 0,
        };
        // SAFETY: the region is mapped for the life of `mem`, which the vCPU threads and
        // devices hold until the VM is gone.
        unsafe { vm.set_user_memory_region(region) }
            .map_err(Error::kvm("KVM_SET_USER_MEMORY_REGION"))?;
    }
    Ok(mem)
}

impl Machine {
    /// Creates the VM, loads the kernel and starts the vCPUs.
    pub fn start(mut config: Config) -> Result<Machine, Error> {
        let kvm = Kvm::new().map_err(Error::kvm("opening /dev/kvm"))?;
        let vm = Arc::new(kvm.create_vm().map_err(Error::kvm("KVM_CREATE_VM"))?);
        vm.set_tss_address(layout::KVM_TSS as usize).map_err(Error::kvm("KVM_SET_TSS_ADDR"))?;
        vm.set_identity_map_address(layout::KVM_IDENTITY_MAP)
            .map_err(Error::kvm("KVM_SET_IDENTITY_MAP_ADDR"))?;
        vm.create_irq_chip().map_err(Error::kvm("KVM_CREATE_IRQCHIP"))?;
        let pit = kvm_pit_config { flags: KVM_PIT_SPEAKER_DUMMY, ..Default::default() };
        vm.create_pit2(pit).map_err(Error::kvm("KVM_CREATE_PIT2"))?;
        let mem = guest_memory(&vm, config.memory_mib << 20)?;

        let stop = StopRequest::default();
        let mut io = Bus::default();
        let console = console::ConsoleLog::create(&config.console, config.console_limit)
            .map_err(|e| Error::io(&config.console, e))?;
        let serial_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::os("eventfd"))?;
        vm.register_irqfd(&serial_irq, layout::SERIAL_IRQ).map_err(Error::kvm("KVM_IRQFD"))?;
        let serial = vm_superio::Serial::new(legacy::IrqLine(serial_irq), console);
        io.insert(u64::from(layout::COM1), 8, Arc::new(Mutex::new(legacy::SerialPort(serial))));
        let keyboard_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::os("eventfd"))?;
        vm.register_irqfd(&keyboard_irq, layout::KEYBOARD_IRQ).map_err(Error::kvm("KVM_IRQFD"))?;
        let keyboard = Arc::new(Mutex::new(i8042::I8042::new(
            stop.clone(),
            Some(legacy::IrqLine(keyboard_irq)),
        )));
        io.insert(u64::from(layout::I8042_DATA), 5, keyboard.clone());
        io.insert(
            u64::from(layout::SLEEP_CONTROL_PORT),
            2,
            Arc::new(Mutex::new(legacy::SleepRegisters(stop.clone()))),
        );

        let mut mmio = Bus::default();
        let mut notifier = notify::Notifier::new()?;
        let mut cmdline = config.cmdline.clone();
        let mut described = Vec::new();
        for (index, device) in std::mem::take(&mut config.devices).into_iter().enumerate() {
            let (addr, gsi) = layout::virtio_slot(index);
            let line = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::os("eventfd"))?;
            vm.register_irqfd(&line, gsi).map_err(Error::kvm("KVM_IRQFD"))?;
            let queues = device.queue_sizes().len();
            let transport = Arc::new(Mutex::new(MmioTransport::new(
                device,
                mem.clone(),
                Arc::new(Interrupt::new(line)),
            )));
            notifier.add(&vm, addr, &transport, queues)?;
            mmio.insert(addr, layout::VIRTIO_MMIO_SIZE, transport);
            if config.devices_on_cmdline {
                cmdline.push_str(&format!(" virtio_mmio.device=4K@{addr:#x}:{gsi}"));
            }
            described.push(acpi::MmioDevice { base: addr, gsi });
        }
        acpi::write(&mem, config.ncpu.max(1), &described)?;

        let entry = boot::load(
            &mem,
            &boot::Kernel {
                kernel: &config.kernel,
                initrd: config.initrd.as_deref(),
                cmdline: &cmdline,
            },
        )?;

        // Every vCPU is created and set up before any runs: a failure half-way must not leave
        // vCPU 0 running with no Machine to stop it.
        let count = config.ncpu.max(1);
        let mut prepared = Vec::new();
        for id in 0..count {
            let vcpu = vm.create_vcpu(u64::from(id)).map_err(Error::kvm("KVM_CREATE_VCPU"))?;
            vcpu.set_cpuid2(&cpu::cpuid(&kvm, id, count)?).map_err(Error::kvm("KVM_SET_CPUID2"))?;
            cpu::wire_lints(&vcpu)?;
            cpu::set_msrs(&vcpu)?;
            if id == 0 {
                cpu::enter(&vcpu, &mem, entry)?;
            }
            prepared.push(vcpu);
        }
        vmm_sys_util::signal::register_signal_handler(kick_signal(), ignore)
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))
            .map_err(Error::os("registering the vCPU kick signal"))?;
        let notifications = (notifier.stopper()?, notifier.spawn()?);
        let mut machine = Machine {
            stop,
            pause: pause::PauseGate::default(),
            keyboard,
            vcpus: Vec::new(),
            notifications: Some(notifications),
            exit: None,
            _vm: vm,
            started: Instant::now(),
        };
        for (id, mut vcpu) in prepared.into_iter().enumerate() {
            let (io, mmio, stop, mem) =
                (io.clone(), mmio.clone(), machine.stop.clone(), mem.clone());
            let gate = machine.pause.clone();
            let spawned = std::thread::Builder::new().name(format!("vcpu{id}")).spawn(move || {
                let _mem = mem;
                cpu::run(&mut vcpu, &io, &mmio, &stop, &gate)
            });
            match spawned {
                Ok(thread) => machine.vcpus.push(thread),
                Err(e) => {
                    // The vCPUs already running are stopped and joined with the rest.
                    machine.stop();
                    return Err(Error::os(format!("starting vCPU {id}"))(e));
                }
            }
        }
        Ok(machine)
    }

    /// A handle that says when the VM ends, for a thread to wait on while the owner of the
    /// Machine goes on.
    pub fn end_signal(&self) -> EndSignal {
        EndSignal(self.stop.clone())
    }

    /// Whether the VM still runs.
    pub fn running(&self) -> bool {
        self.exit.is_none() && self.stop.get().is_none()
    }

    /// How long it has run.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops the VM now.
    pub fn stop(&mut self) -> Exit {
        self.stop.set(Exit::Stopped);
        self.wait()
    }

    /// Pauses the VM: returns once every vCPU has left KVM_RUN and waits (the guest runs no
    /// instruction and its vCPU threads use no CPU) or the VM has ended.
    pub fn pause(&self) {
        self.pause.close();
        while self.running() && self.pause.parked() < self.vcpus.len() {
            self.kick_vcpus();
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Lets a paused VM run again.
    pub fn resume(&self) {
        self.pause.open();
    }

    /// Whether the VM is paused.
    pub fn paused(&self) -> bool {
        self.pause.is_closed()
    }

    /// Kicks every vCPU thread still running out of KVM_RUN.
    fn kick_vcpus(&self) {
        for vcpu in &self.vcpus {
            use std::os::unix::thread::JoinHandleExt;
            if !vcpu.is_finished() {
                // SAFETY: the thread has not been joined, so its pthread_t is valid.
                unsafe {
                    libc::pthread_kill(vcpu.as_pthread_t(), kick_signal());
                }
            }
        }
    }

    /// Asks the guest to shut down by typing Ctrl-Alt-Del on its keyboard; it may ignore it.
    pub fn ctrl_alt_del(&self) {
        bus::lock(&self.keyboard).ctrl_alt_del();
    }

    /// Graceful, then forced: asks the guest to shut down ([`Machine::ctrl_alt_del`]) and
    /// gives it `grace` to end on its own (a poweroff, or a reboot the control plane does not
    /// follow); then stops it.
    pub fn shutdown(&mut self, grace: Duration) -> Exit {
        if self.running() {
            self.ctrl_alt_del();
        }
        match self.wait_timeout(grace) {
            Some(exit) => exit,
            None => self.stop(),
        }
    }

    /// Waits at most `timeout` for the VM to end.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<Exit> {
        if self.exit.is_none() && self.stop.wait(timeout).is_none() {
            return None;
        }
        Some(self.wait())
    }

    /// Waits for the VM to end, and says how it did.
    pub fn wait(&mut self) -> Exit {
        if let Some(exit) = &self.exit {
            return exit.clone();
        }
        while self.stop.wait(Duration::from_secs(3600)).is_none() {}
        // Every vCPU leaves KVM_RUN, or its pause: kicked until its thread ends (a kick that
        // lands just before KVM_RUN is lost, so it is repeated).
        while self.vcpus.iter().any(|vcpu| !vcpu.is_finished()) {
            self.pause.wake();
            self.kick_vcpus();
            std::thread::sleep(Duration::from_millis(1));
        }
        for vcpu in self.vcpus.drain(..) {
            let _ = vcpu.join();
        }
        if let Some((stopper, thread)) = self.notifications.take() {
            // Written or not, the thread cannot outlive the process; a failed write only
            // leaves it waiting.
            if stopper.write(1).is_ok() {
                let _ = thread.join();
            }
        }
        let exit = self.stop.get().unwrap_or(Exit::Stopped);
        self.exit = Some(exit.clone());
        exit
    }
}
