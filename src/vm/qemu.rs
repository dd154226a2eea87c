//! The qemu backend: qemu-system-x86_64 as a child process, with direct kernel boot, the
//! channel to the guest agent on a virtio-serial port (qemu listens on a unix socket in the
//! run directory; /Database goes through it), the network on the NAT's socket or qemu's own
//! user network, and the serial console in a log file. qemu runs in a process group of its own, so that it outlives a
//! control plane that is killed and can be adopted by the next one (see [`super::record`]).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::record::{process_start_time, VmRecord};
use super::{Accel, VmError, VmSpec};

/// A running qemu.
#[derive(Debug)]
pub struct Qemu {
    process: Process,
    qmp: PathBuf,
}

/// qemu as our child, or adopted from a control plane before us (not our child: it cannot be
/// waited for, only watched through /proc).
#[derive(Debug)]
enum Process {
    Child(Child),
    Adopted { pid: u32, start_time: u64 },
}

/// qemu's name for the data disk's drive (QMP's `block_resize` takes it).
pub const DATA_DRIVE: &str = "data";
/// The serial number the guest finds the data disk by (/sys/block/vdX/serial).
pub const DATA_SERIAL: &str = "cairn-data";
/// qemu's name for the system disk's drive.
const SYSTEM_DRIVE: &str = "system";

/// The command line for `spec`.
pub fn command(spec: &VmSpec, accel: Accel) -> Command {
    let mut cmd = Command::new("qemu-system-x86_64");
    let append = format!(
        "console=ttyS0 quiet panic=-1 rdinit=/init cairn.db=channel cairn.channel=virtio-serial:{} cairn.ip=10.0.2.15/24 cairn.gw=10.0.2.2{}{}",
        crate::channel::PORT_NAME,
        spec.share_args,
        super::extra_kernel_args()
    );
    // TCG runs every vCPU on one host thread: with a thread per vCPU (MTTCG), qemu 7.2 lets a
    // vCPU run code another vCPU has just patched, and Debian 13's kernel patches its static
    // keys with int3 when the first container's memory cgroup appears (seen here: "Oops: int3"
    // in __free_pages_ok and a kernel panic, in one boot of four under load).
    let accel_arg = match accel {
        Accel::Kvm => "kvm",
        Accel::Tcg => "tcg,thread=single",
    };
    cmd.args(["-accel", accel_arg])
        .args(["-m", &spec.memory_mib.to_string(), "-smp", &spec.ncpu.to_string()])
        .args(["-nographic", "-nodefaults", "-no-reboot", "-monitor", "none"])
        .arg("-serial")
        .arg(format!("file:{}", spec.console.display()))
        .arg("-qmp")
        .arg(format!("unix:{},server=on,wait=off", spec.qmp.display()))
        .arg("-kernel")
        .arg(&spec.kernel)
        .arg("-initrd")
        .arg(&spec.initrd)
        .args(["-append", &append])
        .arg("-netdev")
        .arg(match &spec.net {
            Some(path) => {
                format!("stream,id=n0,server=on,addr.type=unix,addr.path={}", path.display())
            }
            None => {
                let forwards = spec.hostfwd.iter().map(|f| format!(",hostfwd={f}"));
                format!("user,id=n0{}", forwards.collect::<String>())
            }
        })
        .args(["-device", "virtio-net-pci,netdev=n0,romfile="])
        // The data disk: the guest's discards punch holes in the file (discard=unmap), and
        // its flushes reach the host's disk (the default cache mode honours them).
        .arg("-drive")
        .arg(format!(
            "file={},if=none,id={DATA_DRIVE},format=raw,discard=unmap,detect-zeroes=unmap",
            spec.data_disk.display()
        ))
        .args(["-device", &format!("virtio-blk-pci,drive={DATA_DRIVE},serial={}", DATA_SERIAL)])
        .args(spec.system_disk.iter().flat_map(|path| {
            // The system disk: read-only for the guest and opened read-only by qemu, so that
            // nothing in the VM can change the image another boot uses.
            let drive =
                format!("file={},if=none,id={SYSTEM_DRIVE},format=raw,readonly=on", path.display());
            let device = format!(
                "virtio-blk-pci,drive={SYSTEM_DRIVE},serial={}",
                cairn_image::system::SERIAL
            );
            ["-drive".to_owned(), drive, "-device".to_owned(), device]
        }))
        // The channel: qemu listens, the control plane connects (again, after a restart).
        .args(["-device", "virtio-serial-pci,id=serial0"])
        .arg("-chardev")
        .arg(format!("socket,id=channel,path={},server=on,wait=off", spec.channel.display()))
        .arg("-device")
        .arg(format!(
            "virtserialport,bus=serial0.0,chardev=channel,name={}",
            crate::channel::PORT_NAME
        ))
        .args(shared_devices(spec))
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    if accel == Accel::Kvm {
        cmd.args(["-cpu", "host"]);
    }
    cmd
}

/// The arguments for the shared directories: vhost-user-fs devices on virtiofsd's sockets
/// (they need the guest's memory in a shareable memfd, which virtiofsd maps), and qemu's own
/// 9P server (`-virtfs`; security_model=none: files keep the owners the host gives them, and
/// links are links on the host).
fn shared_devices(spec: &VmSpec) -> Vec<String> {
    let mut args = Vec::new();
    if spec.shares.iter().any(|s| matches!(s.via, super::SharedVia::Virtiofs(_))) {
        args.extend([
            "-object".to_owned(),
            format!("memory-backend-memfd,id=mem,size={}M,share=on", spec.memory_mib),
            "-numa".to_owned(),
            "node,memdev=mem".to_owned(),
        ]);
    }
    for (index, share) in spec.shares.iter().enumerate() {
        match &share.via {
            super::SharedVia::Virtiofs(socket) => args.extend([
                "-chardev".to_owned(),
                format!("socket,id=fs{index},path={}", qemu_escape(socket)),
                "-device".to_owned(),
                format!("vhost-user-fs-pci,chardev=fs{index},tag={}", share.tag),
            ]),
            super::SharedVia::NineP(dir) => args.extend([
                "-fsdev".to_owned(),
                format!("local,id=fs{index},path={},security_model=none", qemu_escape(dir)),
                "-device".to_owned(),
                format!("virtio-9p-pci,fsdev=fs{index},mount_tag={}", share.tag),
            ]),
        }
    }
    args
}

/// A path as a value of a qemu option list, where a comma is written twice.
fn qemu_escape(path: &Path) -> String {
    path.display().to_string().replace(',', ",,")
}

impl Qemu {
    /// Starts qemu; its own errors go to `errors` (a file next to the console log).
    pub fn start(spec: &VmSpec, accel: Accel, errors: &Path) -> Result<Qemu, VmError> {
        let log = std::fs::File::create(errors).map_err(|e| VmError::io(errors, e))?;
        let mut command = command(spec, accel);
        command.stderr(Stdio::from(log));
        // Ctrl-C in the terminal of a foreground `cairn up` reaches the control plane only,
        // which then powers the guest off cleanly.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().map_err(VmError::SpawnQemu)?;
        Ok(Qemu { process: Process::Child(child), qmp: spec.qmp.clone() })
    }

    /// Takes over the qemu of `record`, if it still runs.
    pub fn adopt(record: &VmRecord) -> Option<Qemu> {
        let qemu = Qemu {
            process: Process::Adopted { pid: record.pid, start_time: record.start_time },
            qmp: record.qmp.clone(),
        };
        record.alive().then_some(qemu)
    }

    pub fn pid(&self) -> u32 {
        match &self.process {
            Process::Child(child) => child.id(),
            Process::Adopted { pid, .. } => *pid,
        }
    }

    /// The record that lets a later control plane adopt this VM.
    pub fn record(&self, spec: &VmSpec, accel: Accel, booted: cairn_db::ObjectId) -> VmRecord {
        let booted = booted.to_string();
        let pid = self.pid();
        VmRecord {
            pid,
            start_time: process_start_time(pid).unwrap_or_default(),
            qmp: self.qmp.clone(),
            booted,
            accel,
            memory_mib: spec.memory_mib,
            ncpu: spec.ncpu,
        }
    }

    /// Stops (`true`) or resumes the vCPUs through QMP.
    pub fn pause(&self, pause: bool) -> std::io::Result<()> {
        match pause {
            true => super::qmp::stop(&self.qmp),
            false => super::qmp::cont(&self.qmp),
        }
    }

    /// Whether the vCPUs are stopped (a VM adopted from an earlier control plane may be).
    pub fn paused(&self) -> bool {
        super::qmp::stopped(&self.qmp).unwrap_or(false)
    }

    /// How qemu ended, if it has.
    pub fn exited(&mut self) -> Option<String> {
        match &mut self.process {
            Process::Child(child) => child.try_wait().ok().flatten().map(|s| s.to_string()),
            Process::Adopted { pid, start_time } => (process_start_time(*pid) != Some(*start_time))
                .then(|| "exit status unknown: adopted from an earlier control plane".into()),
        }
    }

    fn signal(&self, signal: libc::c_int) {
        // SAFETY: kill(2) on the pid of the qemu this value manages, which has not been reaped
        // by us (a child is reaped only through `exited`, after which it is not signalled).
        unsafe {
            libc::kill(self.pid() as libc::pid_t, signal);
        }
    }

    /// Stops the VM: the guest is asked to power off (Ctrl-Alt-Del, which the agent turns into
    /// sync, unmount, poweroff); after `grace`, qemu gets SIGTERM, then SIGKILL. Returns whether
    /// the guest shut down by itself.
    pub fn stop(mut self, grace: Duration) -> bool {
        let wait = |q: &mut Qemu, limit: Duration| {
            let deadline = Instant::now() + limit;
            while Instant::now() < deadline {
                if q.exited().is_some() {
                    return true;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            false
        };
        if self.exited().is_some() {
            return false;
        }
        // A paused guest would never see the keys.
        let _ = super::qmp::cont(&self.qmp);
        if super::qmp::ctrl_alt_del(&self.qmp).is_ok() && wait(&mut self, grace) {
            return true;
        }
        self.signal(libc::SIGTERM);
        if !wait(&mut self, Duration::from_secs(2)) {
            self.signal(libc::SIGKILL);
            wait(&mut self, Duration::from_secs(2));
        }
        false
    }
}

/// Whether qemu's KVM can boot this kernel: a short boot with no initramfs must reach the
/// kernel's "no root" panic; nested, software-assisted KVM instead dies early with an emulation
/// failure (DESIGN.md). Returns the reason either way.
pub fn probe_kvm(kernel: &Path, scratch: &Path) -> (bool, String) {
    if std::fs::OpenOptions::new().read(true).write(true).open("/dev/kvm").is_err() {
        return (false, "no usable /dev/kvm".into());
    }
    let console = scratch.join("kvm-probe.log");
    let errors = scratch.join("kvm-probe.err");
    let Ok(err_file) = std::fs::File::create(&errors) else {
        return (false, format!("cannot write {}", errors.display()));
    };
    let started = Command::new("qemu-system-x86_64")
        .args(["-accel", "kvm", "-cpu", "host", "-m", "256", "-nographic", "-nodefaults"])
        .args(["-no-reboot", "-monitor", "none"])
        .arg("-serial")
        .arg(format!("file:{}", console.display()))
        .arg("-kernel")
        .arg(kernel)
        .args(["-append", "console=ttyS0 panic=-1"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(err_file))
        .spawn();
    let Ok(mut child) = started else { return (false, "qemu-system-x86_64 did not start".into()) };
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = |path: &Path| std::fs::read_to_string(path).unwrap_or_default();
    let verdict = loop {
        if text(&console).contains("Kernel panic") {
            break (true, "KVM boots the guest kernel".to_owned());
        }
        let stderr = text(&errors);
        // qemu stops the VM but stays up after "KVM internal error ... emulation failure".
        if stderr.contains("KVM internal error") || matches!(child.try_wait(), Ok(Some(_))) {
            let first = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("no output");
            break (false, format!("KVM cannot boot the guest kernel ({})", first.trim()));
        }
        if Instant::now() > deadline {
            break (false, "KVM did not boot the guest kernel within 30 s".to_owned());
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&console);
    let _ = std::fs::remove_file(&errors);
    verdict
}

/// The console log of a VM whose data lives in `run_dir`.
pub fn console_path(run_dir: &Path) -> PathBuf {
    run_dir.join("console.log")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(system_disk: Option<PathBuf>) -> VmSpec {
        VmSpec {
            kernel: "/k".into(),
            initrd: "/i".into(),
            memory_mib: 2048,
            ncpu: 2,
            channel: "/run/c".into(),
            data_disk: "/d".into(),
            system_disk,
            console: "/console".into(),
            qmp: "/qmp".into(),
            net: None,
            hostfwd: Vec::new(),
            shares: Vec::new(),
            share_args: String::new(),
        }
    }

    #[test]
    fn shares_get_their_devices_and_virtiofs_shared_memory() {
        let mut with = spec(None);
        with.shares = vec![
            crate::vm::SharedDevice {
                tag: "share0".into(),
                via: crate::vm::SharedVia::Virtiofs("/run/virtiofs-share0.sock".into()),
            },
            crate::vm::SharedDevice {
                tag: "share1".into(),
                via: crate::vm::SharedVia::NineP("/srv/a,b".into()),
            },
        ];
        with.share_args = " cairn.sharing=virtiofs cairn.share=share0:/tmp".into();
        let a = args(&with);
        assert!(a.contains(&"memory-backend-memfd,id=mem,size=2048M,share=on".to_owned()), "{a:?}");
        assert!(a.contains(&"vhost-user-fs-pci,chardev=fs0,tag=share0".to_owned()), "{a:?}");
        assert!(a.contains(&"local,id=fs1,path=/srv/a,,b,security_model=none".to_owned()), "{a:?}");
        let append = a.iter().skip_while(|x| *x != "-append").nth(1).expect("append");
        assert!(append.contains(" cairn.sharing=virtiofs cairn.share=share0:/tmp"), "{append}");
        assert!(!args(&spec(None)).iter().any(|x| x.contains("memory-backend")));
    }

    fn args(spec: &VmSpec) -> Vec<String> {
        command(spec, Accel::Tcg).get_args().map(|a| a.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn the_system_disk_is_attached_read_only_with_the_serial_the_agent_looks_for() {
        assert_eq!(cairn_image::system::SERIAL, cairn_agent::SYSTEM_SERIAL);
        let with = args(&spec(Some("/img/system.erofs".into())));
        let drive = with.iter().find(|a| a.starts_with("file=/img/system.erofs")).expect("drive");
        assert!(drive.contains("readonly=on"), "{drive}");
        assert!(with.iter().any(|a| a.ends_with("serial=cairn-system")), "{with:?}");
        let without = args(&spec(None));
        assert!(!without.iter().any(|a| a.contains("cairn-system")), "{without:?}");
    }

    #[test]
    fn tcg_runs_its_vcpus_on_one_thread() {
        let tcg = args(&spec(None));
        assert!(tcg.windows(2).any(|w| w[0] == "-accel" && w[1] == "tcg,thread=single"));
        let kvm: Vec<String> = command(&spec(None), Accel::Kvm)
            .get_args()
            .map(|a| a.to_string_lossy().into_owned())
            .collect();
        assert!(kvm.windows(2).any(|w| w[0] == "-accel" && w[1] == "kvm"), "{kvm:?}");
    }
}
