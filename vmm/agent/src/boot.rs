//! What PID 1 does before anything else: the kernel's filesystems, the image's modules, and
//! `/Database` (the network is [`super::network`]'s).

use std::ffi::CString;
use std::path::Path;

use super::Error;

/// The file of the image that lists its modules, one file name a line, in an order that
/// satisfies their dependencies. The image builder decides what the guest needs; the agent
/// loads what it was given.
pub const MODULE_ORDER: &str = "/lib/modules/order";

fn c_string(s: &str) -> Result<CString, Error> {
    CString::new(s).map_err(|_| Error::Boot(format!("a NUL byte in {s:?}")))
}

/// The serial number of the image's read-only system disk (the image builder's
/// `cairn_image::system::SERIAL`).
pub const SYSTEM_SERIAL: &str = "cairn-system";

/// mount(2), with the errno in the error.
pub fn mount(source: &str, target: &str, fstype: &str, data: &str) -> Result<(), Error> {
    mount_with(source, target, fstype, 0, data)
}

pub(crate) fn mount_with(
    source: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> Result<(), Error> {
    std::fs::create_dir_all(target).map_err(|e| Error::Boot(format!("creating {target}: {e}")))?;
    let (source, target_c, fstype, data) =
        (c_string(source)?, c_string(target)?, c_string(fstype)?, c_string(data)?);
    // SAFETY: every pointer is a NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target_c.as_ptr(),
            fstype.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        let err = std::io::Error::last_os_error();
        return Err(Error::Boot(format!("mounting {target}: {err}")));
    }
    Ok(())
}

/// /proc, /sys, /dev, /tmp and /run, then what containers need: the cgroup2 hierarchy
/// (runc requires it), ptys and /dev/shm.
pub fn mount_kernel_filesystems() -> Result<(), Error> {
    mount("proc", "/proc", "proc", "")?;
    mount("sysfs", "/sys", "sysfs", "")?;
    mount("devtmpfs", "/dev", "devtmpfs", "")?;
    mount("tmpfs", "/tmp", "tmpfs", "")?;
    mount("tmpfs", "/run", "tmpfs", "")?;
    mount("cgroup2", "/sys/fs/cgroup", "cgroup2", "")?;
    mount("devpts", "/dev/pts", "devpts", "newinstance,ptmxmode=0666,mode=0620")?;
    mount("tmpfs", "/dev/shm", "tmpfs", "mode=1777")
}

/// Mounts the image's system disk (erofs: the engine and its libraries) read-only at /usr.
/// An image without one (everything in the initramfs) has none to mount: `Ok(None)`.
pub fn mount_system() -> Result<Option<std::path::PathBuf>, Error> {
    let Some(device) = super::disk::find_by_serial(SYSTEM_SERIAL) else { return Ok(None) };
    let source = device.to_string_lossy().into_owned();
    mount_with(&source, "/usr", "erofs", libc::MS_RDONLY | libc::MS_NODEV, "")?;
    Ok(Some(device))
}

/// Loads the modules `order` names (see [`MODULE_ORDER`]) from `dir`, in that order; a module
/// built into the kernel (absent here, or EEXIST) is fine.
pub fn load_modules(dir: &Path, order: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for name in order.lines().map(str::trim).filter(|n| !n.is_empty()) {
        let path = dir.join(name);
        let Ok(file) = std::fs::File::open(&path) else { continue };
        let params = c"";
        // SAFETY: a valid open descriptor and a NUL-terminated parameter string.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_finit_module,
                std::os::fd::AsRawFd::as_raw_fd(&file),
                params.as_ptr(),
                0,
            )
        };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EEXIST) {
                problems.push(format!("{name}: {err}"));
            }
        }
    }
    problems
}

/// Mounts the database at `/Database` over 9P: the kernel's fd transport on a stream of the
/// channel (the kernel cannot write to a virtio-serial port itself, so the agent relays), or
/// virtio-9p.
pub fn mount_database(
    db: &super::DbTransport,
    channel: Option<&super::channel::Channel>,
) -> Result<(), Error> {
    match db {
        super::DbTransport::Channel => {
            let channel = channel.ok_or_else(|| Error::Database("no channel".into()))?;
            let stream = channel
                .connect(&cairn_channel::Service::new(cairn_channel::Service::NINEP, &[]))?;
            let fd = std::os::fd::AsRawFd::as_raw_fd(&stream);
            let options =
                format!("trans=fd,rfdno={fd},wfdno={fd},version=9p2000.L,msize=524288,cache=none");
            // The kernel holds its own reference to the socket once mounted.
            mount("cairn", "/Database", "9p", &options)
        }
        super::DbTransport::Virtio { tag } => {
            mount(tag, "/Database", "9p", "trans=virtio,version=9p2000.L,msize=524288,cache=none")
        }
    }
}

/// Detaches /Database (lazily: a dead connection's files may still be open).
pub fn unmount_database() {
    // SAFETY: umount2 with a NUL-terminated path.
    unsafe {
        libc::umount2(c"/Database".as_ptr(), libc::MNT_DETACH);
    }
}
