//! virtiofsd, the virtio-fs project's daemon: one per shared directory, started before qemu
//! (which connects to its socket as the VM starts) and ending with qemu's connection.
//!
//! Two things are decided here rather than left to virtiofsd's defaults:
//! - Ownership: every file the guest creates belongs on the host to the user running cairn
//!   (`--translate-uid squash-guest`), whatever uid the container ran as; run by another user
//!   virtiofsd cannot change owners anyway.
//! - $CAIRN_HOME: virtiofsd starts in a mount namespace of its own in which an empty,
//!   read-only tmpfs lies over $CAIRN_HOME, so no path the guest asks for can reach the
//!   repository or the control plane's sockets (virtiofsd's own sandbox clones the shared
//!   tree with its submounts, this one included). virtiofsd has no option to exclude a path.
//!   An unprivileged user gets the mount namespace inside a user namespace of their own.
//!   The socket lives in $CAIRN_HOME too, so it is bound here, before the cover, and handed
//!   over as a listening descriptor (`--fd`); it is there before qemu starts, with no wait.

use std::ffi::CString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// Where virtiofsd is looked for after `CAIRN_VIRTIOFSD` and `PATH` (Debian's package puts it
/// in /usr/libexec, older qemu packages in /usr/lib/qemu).
const SYSTEM_PATHS: &[&str] = &["/usr/libexec/virtiofsd", "/usr/lib/qemu/virtiofsd"];

/// The descriptor virtiofsd finds its listening socket on.
const LISTENER_FD: libc::c_int = 3;

/// The virtiofsd binary: `CAIRN_VIRTIOFSD`, then `virtiofsd` on PATH, then the system's.
pub fn binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("CAIRN_VIRTIOFSD") {
        return Some(PathBuf::from(path));
    }
    let on_path = std::env::var_os("PATH").into_iter().flat_map(|p| {
        std::env::split_paths(&p).map(|dir| dir.join("virtiofsd")).collect::<Vec<_>>()
    });
    on_path.chain(SYSTEM_PATHS.iter().map(PathBuf::from)).find(|p| p.is_file())
}

/// How long after virtiofsd starts a daemon that refuses its arguments or the share has
/// surely said so and ended ([`Virtiofsd::ended_at_once`]).
pub const START_LOOK: Duration = Duration::from_millis(50);

/// A running virtiofsd. Dropping it ends it (the VM it served has stopped by then).
#[derive(Debug)]
pub struct Virtiofsd {
    child: Child,
    dir: String,
    log: PathBuf,
}

impl Virtiofsd {
    /// Starts virtiofsd for `dir` on `socket` (bound here), with `hidden` covered. Its
    /// messages go to `log`.
    pub fn start(
        binary: &Path,
        dir: &str,
        socket: &Path,
        hidden: &[String],
        log: &Path,
    ) -> Result<Virtiofsd, String> {
        let _ = std::fs::remove_file(socket);
        let listener = std::os::unix::net::UnixListener::bind(socket)
            .map_err(|e| format!("listening on {}: {e}", socket.display()))?;
        let log_file = std::fs::File::create(log).map_err(|e| format!("{}: {e}", log.display()))?;
        // SAFETY: geteuid and getegid cannot fail.
        let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
        let mut command = Command::new(binary);
        command
            .arg(format!("--fd={LISTENER_FD}"))
            .arg(format!("--shared-dir={dir}"))
            // As root, virtiofsd's own sandbox (a namespace rooted at the share); otherwise it
            // runs as the user, in the namespace below.
            .arg(if uid == 0 { "--sandbox=namespace" } else { "--sandbox=none" })
            .arg(format!("--translate-uid=squash-guest:0:{uid}:4294967295"))
            .arg(format!("--translate-gid=squash-guest:0:{gid}:4294967295"))
            .arg("--log-level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log_file))
            // Not in the terminal's process group: Ctrl-C stops the VM through the control
            // plane, and virtiofsd must serve until the guest has powered off.
            .process_group(0);
        let mut cover = Cover::new(uid, gid, hidden)?;
        cover.listener = std::os::fd::AsRawFd::as_raw_fd(&listener);
        // SAFETY: the closure only makes system calls on memory prepared before the fork.
        unsafe {
            command.pre_exec(move || cover.enter());
        }
        let child = command.spawn().map_err(|e| format!("starting {}: {e}", binary.display()))?;
        Ok(Virtiofsd { child, dir: dir.to_owned(), log: log.to_owned() })
    }

    /// Why it ended, if it has: a daemon that refuses its arguments or the share says so at
    /// once, so a look [`START_LOOK`] after starting (all of them: one wait for every share)
    /// turns that into the share's state instead of a guest whose mount fails.
    pub fn ended_at_once(&mut self) -> Option<String> {
        let status = self.child.try_wait().ok().flatten()?;
        let said = std::fs::read_to_string(&self.log).unwrap_or_default();
        Some(format!("virtiofsd ended ({status}): {}", said.trim()))
    }

    /// Whether it still runs.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The directory it serves.
    pub fn dir(&self) -> &str {
        &self.dir
    }
}

impl Drop for Virtiofsd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The mount namespace virtiofsd runs in, prepared before the fork: after it only system
/// calls on this memory are safe (another thread may hold the allocator's lock).
struct Cover {
    /// The bound socket, which becomes virtiofsd's [`LISTENER_FD`].
    listener: libc::c_int,
    /// An unprivileged user needs a user namespace to own a mount namespace.
    user_namespace: bool,
    uid_map: CString,
    gid_map: CString,
    hidden: Vec<CString>,
}

impl Cover {
    fn new(uid: u32, gid: u32, hidden: &[String]) -> Result<Cover, String> {
        let c = |s: String| CString::new(s).map_err(|_| "a NUL byte in a path".to_owned());
        Ok(Cover {
            listener: -1,
            user_namespace: uid != 0,
            uid_map: c(format!("{uid} {uid} 1"))?,
            gid_map: c(format!("{gid} {gid} 1"))?,
            hidden: hidden.iter().map(|h| c(h.clone())).collect::<Result<_, _>>()?,
        })
    }

    /// In the child: a private mount namespace with an empty read-only tmpfs over each hidden
    /// directory.
    fn enter(&self) -> std::io::Result<()> {
        // SAFETY: descriptor calls on this process's own descriptors. dup2's copy has no
        // CLOEXEC; a socket that already is LISTENER_FD needs the flag cleared instead.
        unsafe {
            if self.listener == LISTENER_FD {
                check(libc::fcntl(LISTENER_FD, libc::F_SETFD, 0))?;
            } else {
                check(libc::dup2(self.listener, LISTENER_FD))?;
            }
        }
        let flags = if self.user_namespace {
            libc::CLONE_NEWUSER | libc::CLONE_NEWNS
        } else {
            libc::CLONE_NEWNS
        };
        // SAFETY: unshare only changes this (single-threaded, forked) process.
        check(unsafe { libc::unshare(flags) })?;
        if self.user_namespace {
            write_proc(c"/proc/self/setgroups", c"deny")?;
            write_proc(c"/proc/self/uid_map", &self.uid_map)?;
            write_proc(c"/proc/self/gid_map", &self.gid_map)?;
        }
        // SAFETY: NUL-terminated strings (or null where mount(2) allows it) for each call.
        unsafe {
            let private = libc::MS_REC | libc::MS_PRIVATE;
            check(libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                private,
                std::ptr::null(),
            ))?;
            for dir in &self.hidden {
                let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
                check(libc::mount(
                    c"cairn-hidden".as_ptr(),
                    dir.as_ptr(),
                    c"tmpfs".as_ptr(),
                    flags,
                    c"mode=0555,size=4k".as_ptr().cast(),
                ))?;
            }
        }
        Ok(())
    }
}

fn check(rc: libc::c_int) -> std::io::Result<()> {
    if rc < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Writes `text` to a file of /proc with bare system calls (safe after fork).
fn write_proc(path: &std::ffi::CStr, text: &std::ffi::CStr) -> std::io::Result<()> {
    // SAFETY: NUL-terminated path; the buffer is `text`'s bytes; the descriptor is ours.
    unsafe {
        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
        check(fd)?;
        let bytes = text.to_bytes();
        let written = libc::write(fd, bytes.as_ptr().cast(), bytes.len());
        libc::close(fd);
        if written < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
