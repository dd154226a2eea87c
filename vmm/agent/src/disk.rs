//! The engine's data disk in the guest: found by its serial (`cairn-data`), formatted (ext4)
//! only when it holds nothing at all, checked (`e2fsck -p`, which replays the journal of a VM
//! killed mid-write) and mounted before the engine starts, grown when the disk grows, and
//! trimmed now and then so that the host gets back the space the guest freed.
//!
//! A disk that holds something else (another filesystem, a damaged one, garbage) is never
//! formatted: the agent says why, and the engine does not start on top of the VM's memory
//! instead, where its images and volumes would vanish at the next reboot.

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use super::{children, say};

/// The serial number the host gives the data disk.
pub const SERIAL: &str = "cairn-data";
/// Where the disk is mounted.
pub const MOUNT: &str = "/var/lib/cairn-data";
/// What lives on it, bound to the paths the engine and the agent use.
const ON_THE_DISK: &[(&str, &str)] = &[
    ("docker", "/var/lib/docker"),
    ("containerd", "/var/lib/containerd"),
    ("cairn", "/var/lib/cairn"),
];
/// How often the filesystem is trimmed.
pub const TRIM_EVERY: Duration = Duration::from_secs(600);

/// What became of the disk at boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Disk {
    /// Mounted; `formatted` when it was blank and was formatted now.
    Mounted { device: PathBuf, formatted: bool },
    /// Not used, and why (what the user can do is part of the text).
    Refused(String),
}

impl Disk {
    pub fn is_mounted(&self) -> bool {
        matches!(self, Disk::Mounted { .. })
    }
}

/// Why a step failed, for the report.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no virtio disk with serial {SERIAL}")]
    NoDisk,
    #[error("reading {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("running {program}: {source}")]
    Run {
        program: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{program} failed ({status}): {output}")]
    Failed { program: &'static str, status: String, output: String },
    #[error("mounting {target}: {source}")]
    Mount {
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("creating {path}: {source}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the data disk's filesystem has errors e2fsck -p does not fix ({status}: {output}); cairn does not use it: repair it from `cairn shell`, or `cairn disk wipe` to start over (its data is lost)")]
    Unrepaired { status: String, output: String },
    #[error("the data disk ({device}) holds something that is not an ext4 filesystem; cairn formats only a blank disk and touched nothing: `cairn disk wipe` starts over with an empty one (what it holds is lost)")]
    NotExt4 { device: String },
}

/// The device node of the disk whose serial is [`SERIAL`] (/sys/block/vdX/serial).
pub fn find() -> Option<PathBuf> {
    find_by_serial(SERIAL)
}

/// The device node of the virtio disk whose serial is `wanted`.
pub fn find_by_serial(wanted: &str) -> Option<PathBuf> {
    let blocks = std::fs::read_dir("/sys/block").ok()?;
    blocks.flatten().find_map(|entry| {
        let serial = std::fs::read_to_string(entry.path().join("serial")).ok()?;
        (serial.trim() == wanted).then(|| Path::new("/dev").join(entry.file_name()))
    })
}

/// What the first bytes of a disk say it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    /// Nothing: every byte of the first MiB is zero (a new sparse file).
    Blank,
    /// An ext2/3/4 superblock.
    Ext4,
    /// Something else.
    Unknown,
}

/// Reads what the start of `device` holds.
pub fn probe(device: &Path) -> Result<Content, Error> {
    use std::io::Read;
    let mut head = vec![0u8; 1 << 20];
    let mut file = std::fs::File::open(device)
        .map_err(|source| Error::Read { path: device.into(), source })?;
    let mut filled = 0;
    while filled < head.len() {
        match file.read(&mut head[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(source) => return Err(Error::Read { path: device.into(), source }),
        }
    }
    Ok(classify(&head[..filled]))
}

/// The ext superblock's magic, 0xEF53, at byte 1080 (offset 56 of the superblock at 1024).
fn classify(head: &[u8]) -> Content {
    if head.get(1080..1082) == Some(&[0x53, 0xEF]) {
        Content::Ext4
    } else if head.iter().all(|b| *b == 0) {
        Content::Blank
    } else {
        Content::Unknown
    }
}

/// Runs a program of the image to completion; its combined output.
fn run(program: &'static str, args: &[&str]) -> Result<(std::process::ExitStatus, String), Error> {
    let mut command = Command::new(program);
    command.args(args);
    super::power::default_signals(&mut command);
    let output =
        children::run_output(&mut command).map_err(|source| Error::Run { program, source })?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok((output.status, text.trim().to_owned()))
}

/// Finds, checks (or formats), mounts the disk and binds the engine's directories to it.
pub fn prepare() -> Disk {
    match prepare_steps() {
        Ok(disk) => disk,
        Err(e) => Disk::Refused(e.to_string()),
    }
}

fn prepare_steps() -> Result<Disk, Error> {
    let device = find().ok_or(Error::NoDisk)?;
    let shown = device.display().to_string();
    let formatted = match probe(&device)? {
        Content::Blank => {
            say(&format!("data disk {shown}: blank, formatting it (ext4)"));
            let (status, output) = run(
                "/usr/sbin/mke2fs",
                &[
                    "-t",
                    "ext4",
                    "-q",
                    "-F",
                    "-L",
                    SERIAL,
                    "-m",
                    "0",
                    "-E",
                    "lazy_itable_init=1,lazy_journal_init=1,nodiscard",
                    &shown,
                ],
            )?;
            if !status.success() {
                return Err(Error::Failed {
                    program: "mke2fs",
                    status: status.to_string(),
                    output,
                });
            }
            true
        }
        Content::Ext4 => {
            // -p repairs what is safe to repair (a journal to replay after a kill); exit codes
            // 0 and 1 mean clean or fixed, 4 and above that errors are left.
            let (status, output) = run("/usr/sbin/e2fsck", &["-p", &shown])?;
            if status.code().is_none_or(|c| c >= 4) {
                return Err(Error::Unrepaired { status: status.to_string(), output });
            }
            false
        }
        Content::Unknown => return Err(Error::NotExt4 { device: shown }),
    };
    mount(&shown, MOUNT, "ext4", 0)?;
    grow(&device)?;
    for (dir, target) in ON_THE_DISK {
        let source = Path::new(MOUNT).join(dir);
        std::fs::create_dir_all(&source)
            .map_err(|e| Error::Create { path: source.clone(), source: e })?;
        mount(&source.display().to_string(), target, "", libc::MS_BIND)?;
    }
    Ok(Disk::Mounted { device, formatted })
}

fn mount(source: &str, target: &str, fstype: &str, flags: libc::c_ulong) -> Result<(), Error> {
    let err = |source| Error::Mount { target: target.to_owned(), source };
    std::fs::create_dir_all(target).map_err(err)?;
    let c = |s: &str| CString::new(s).map_err(|_| err(std::io::ErrorKind::InvalidInput.into()));
    let (source_c, target_c, fstype_c, data) = (c(source)?, c(target)?, c(fstype)?, c("")?);
    // SAFETY: every pointer is a NUL-terminated string that outlives the call.
    let rc = unsafe {
        libc::mount(
            source_c.as_ptr(),
            target_c.as_ptr(),
            fstype_c.as_ptr(),
            flags,
            data.as_ptr().cast(),
        )
    };
    if rc != 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Grows the mounted filesystem to the disk's size, if the disk grew (online: ext4 grows
/// while mounted).
pub fn grow(device: &Path) -> Result<bool, Error> {
    let (Some(disk), Some(fs)) = (device_bytes(device), filesystem_bytes(device)) else {
        return Ok(false);
    };
    // The filesystem ends at its last whole block: grow only for more than that.
    if disk <= fs + (1 << 20) {
        return Ok(false);
    }
    let shown = device.display().to_string();
    let (status, output) = run("/usr/sbin/resize2fs", &[&shown])?;
    if !status.success() {
        return Err(Error::Failed { program: "resize2fs", status: status.to_string(), output });
    }
    say(&format!("data disk {shown}: grown to {} MiB", disk >> 20));
    Ok(true)
}

/// The size of the ext4 filesystem on `device`, from its superblock (blocks of 1024 << log).
fn filesystem_bytes(device: &Path) -> Option<u64> {
    use std::os::unix::fs::FileExt;
    let mut sb = [0u8; 1024];
    std::fs::File::open(device).ok()?.read_exact_at(&mut sb, 1024).ok()?;
    let u32_at = |i: usize| u32::from_le_bytes([sb[i], sb[i + 1], sb[i + 2], sb[i + 3]]);
    // s_blocks_count_lo, s_log_block_size, s_blocks_count_hi (with the 64bit feature).
    let (lo, log, hi) = (u32_at(4), u32_at(24), u32_at(0x150));
    let incompat_64bit = u32_at(0x60) & 0x80 != 0;
    let blocks = u64::from(lo) | if incompat_64bit { u64::from(hi) << 32 } else { 0 };
    Some(blocks << (10 + log.min(6)))
}

/// The size of a block device, from /sys/block/NAME/size (512-byte sectors).
fn device_bytes(device: &Path) -> Option<u64> {
    let name = device.file_name()?.to_str()?;
    let sectors: u64 =
        std::fs::read_to_string(format!("/sys/block/{name}/size")).ok()?.trim().parse().ok()?;
    Some(sectors * 512)
}

/// The mounted filesystem's size and use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub size_bytes: u64,
    pub used_bytes: u64,
}

/// What statvfs(2) says of the mounted disk.
pub fn usage() -> Option<Usage> {
    let path = CString::new(MOUNT).ok()?;
    // SAFETY: statvfs is plain data; zeroed is a valid value to be overwritten.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a statvfs we own, for the call.
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return None;
    }
    let block = st.f_frsize as u64;
    Some(Usage {
        size_bytes: st.f_blocks as u64 * block,
        used_bytes: (st.f_blocks as u64).saturating_sub(st.f_bfree as u64) * block,
    })
}

/// `struct fstrim_range` of linux/fs.h (the libc crate does not carry it).
#[repr(C)]
struct FstrimRange {
    start: u64,
    len: u64,
    minlen: u64,
}

/// FITRIM: `_IOWR('X', 121, struct fstrim_range)`.
const FITRIM: libc::c_ulong = 0xC018_5879;

/// Tells the disk which blocks are free (FITRIM), so that the host punches holes for them;
/// the bytes trimmed.
pub fn trim() -> Result<u64, Error> {
    let dir =
        std::fs::File::open(MOUNT).map_err(|source| Error::Read { path: MOUNT.into(), source })?;
    let mut range = FstrimRange { start: 0, len: u64::MAX, minlen: 0 };
    use std::os::fd::AsRawFd;
    // SAFETY: FITRIM on a directory of the mounted filesystem with a range struct we own; the
    // kernel writes back how much it trimmed.
    let rc = unsafe { libc::ioctl(dir.as_raw_fd(), FITRIM, &mut range) };
    if rc != 0 {
        return Err(Error::Read { path: MOUNT.into(), source: std::io::Error::last_os_error() });
    }
    Ok(range.len)
}

/// Trims the disk every [`TRIM_EVERY`], on a thread of its own.
pub fn trim_now_and_then() {
    let spawned = std::thread::Builder::new().name("trim".into()).spawn(|| loop {
        std::thread::sleep(TRIM_EVERY);
        if let Err(e) = trim() {
            say(&format!("data disk: trimming: {e}"));
        }
    });
    if let Err(e) = spawned {
        say(&format!("data disk: no periodic trim: {e}"));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_blank_disk_an_ext4_one_and_anything_else() {
        assert_eq!(classify(&[0u8; 4096]), Content::Blank);
        let mut ext4 = vec![0u8; 4096];
        ext4[1080] = 0x53;
        ext4[1081] = 0xEF;
        assert_eq!(classify(&ext4), Content::Ext4);
        let mut garbage = vec![0u8; 4096];
        garbage[7] = 1;
        assert_eq!(classify(&garbage), Content::Unknown);
    }
}
