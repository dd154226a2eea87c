//! The host's file events, raised in the guest: inotify in the guest sees only what the
//! guest's kernel does, so for each change the host reports under a shared directory the agent
//! sets the file's times to what they already are. That is an attribute change in the guest's
//! kernel, which every inotify watch on the file or its directory reports (`IN_ATTRIB`), in
//! whatever container it is, and it changes nothing on the host (which ignores changes of
//! metadata alone, so the touch does not come back).
//!
//! A change the guest made itself comes back from the host too (virtiofsd wrote the file): the
//! agent follows the guest's own writes with fanotify on each shared file system and drops the
//! host's report of a file the guest wrote within [`ECHO`]. The guest's kernel queues the
//! fanotify event as the write returns, long before the host's report comes back (the host
//! waits 50 ms to coalesce), but the thread that reads the queue may not have run by then
//! (a busy TCG guest): so the raiser reads what is queued itself before it decides. The
//! guest's own
//! mkdir, rename and unlink are not seen that way (fanotify reports them only by file handle),
//! and come back as an event on the directory.

use std::collections::HashMap;
use std::ffi::CString;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use cairn_channel::file_events::Change;
use tokio::io::AsyncBufReadExt;

/// How long after the guest wrote a file the host's report of it is taken for the echo.
const ECHO: Duration = Duration::from_secs(2);
/// Changes waiting to be raised; more are dropped (a burst the guest cannot follow anyway).
const QUEUE: usize = 65_536;
/// A directory touched for a removal is not touched again for the next ones this soon.
const DIRECTORY_AGAIN: Duration = Duration::from_millis(200);

/// Files (device, inode) the guest wrote, and when.
fn written() -> &'static Mutex<HashMap<(u64, u64), Instant>> {
    static WRITTEN: OnceLock<Mutex<HashMap<(u64, u64), Instant>>> = OnceLock::new();
    WRITTEN.get_or_init(Default::default)
}

fn wrote_recently(key: (u64, u64)) -> bool {
    drain_guest_writes();
    let Ok(map) = written().lock() else { return false };
    map.get(&key).is_some_and(|at| at.elapsed() < ECHO)
}

/// The fanotify descriptor of the guest's writes (non-blocking), once it is open; reading it
/// takes the lock, so that the reader thread and the raiser never split a batch.
fn fanotify() -> &'static OnceLock<Mutex<libc::c_int>> {
    static FANOTIFY: OnceLock<Mutex<libc::c_int>> = OnceLock::new();
    &FANOTIFY
}

/// Records every write the kernel has queued so far.
fn drain_guest_writes() {
    let Some(fd) = fanotify().get() else { return };
    let Ok(fd) = fd.lock() else { return };
    read_queued(*fd);
}

/// What counts as the guest writing a file: its first write (the host may report a file
/// while it is still being written) and its close.
const WRITES: u64 = libc::FAN_MODIFY | libc::FAN_CLOSE_WRITE;

/// Follows the guest's own writes under `mounts` (fanotify on their file systems), for
/// [`ECHO`]. Without it every write of the guest comes back as an event.
pub fn follow_guest_writes(mounts: &[String]) -> Result<(), String> {
    if mounts.is_empty() {
        return Ok(());
    }
    let flags = libc::FAN_CLASS_NOTIF | libc::FAN_CLOEXEC | libc::FAN_NONBLOCK;
    let event_flags = (libc::O_RDONLY | libc::O_LARGEFILE | libc::O_CLOEXEC) as libc::c_uint;
    // SAFETY: fanotify_init with constant flags; the descriptor is checked.
    let fd = unsafe { libc::fanotify_init(flags, event_flags) };
    if fd < 0 {
        return Err(format!("fanotify: {}", std::io::Error::last_os_error()));
    }
    for mount in mounts {
        let path = CString::new(mount.as_str()).map_err(|_| format!("{mount}: a NUL byte"))?;
        let how = libc::FAN_MARK_ADD | libc::FAN_MARK_FILESYSTEM;
        // SAFETY: a NUL-terminated path and our fanotify descriptor.
        let rc = unsafe { libc::fanotify_mark(fd, how, WRITES, libc::AT_FDCWD, path.as_ptr()) };
        if rc < 0 {
            return Err(format!("fanotify on {mount}: {}", std::io::Error::last_os_error()));
        }
    }
    if fanotify().set(Mutex::new(fd)).is_err() {
        return Err("fanotify is followed already".into());
    }
    std::thread::Builder::new()
        .name("guest-writes".into())
        .spawn(move || loop {
            let mut poll = libc::pollfd { fd, events: libc::POLLIN, revents: 0 };
            // SAFETY: one pollfd of ours, for the call's length.
            if unsafe { libc::poll(&mut poll, 1, -1) } < 0
                && std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
            {
                return;
            }
            drain_guest_writes();
        })
        .map(drop)
        .map_err(|e| format!("a thread: {e}"))
}

/// Records each file the guest wrote, by device and inode (a path would be the one of a
/// container's mount namespace), from what the non-blocking descriptor `fd` has queued.
fn read_queued(fd: libc::c_int) {
    let size = std::mem::size_of::<libc::fanotify_event_metadata>();
    let mut buf = vec![0u8; 64 * size];
    loop {
        // SAFETY: reads into our buffer, at most its length.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            if std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            // EAGAIN: nothing more is queued.
            return;
        }
        let mut offset = 0;
        while offset + size <= n as usize {
            // SAFETY: the kernel wrote whole records; read_unaligned copies one out.
            let event: libc::fanotify_event_metadata =
                unsafe { std::ptr::read_unaligned(buf[offset..].as_ptr().cast()) };
            if event.event_len < size as u32 {
                break;
            }
            if event.fd >= 0 {
                let mut stat = std::mem::MaybeUninit::<libc::stat>::uninit();
                // SAFETY: fstat on the event's descriptor, closed right after.
                unsafe {
                    if libc::fstat(event.fd, stat.as_mut_ptr()) == 0 {
                        let stat = stat.assume_init();
                        if let Ok(mut map) = written().lock() {
                            if map.len() > 100_000 {
                                map.retain(|_, at| at.elapsed() < ECHO);
                            }
                            map.insert((stat.st_dev, stat.st_ino), Instant::now());
                        }
                    }
                    libc::close(event.fd);
                }
            }
            offset += event.event_len as usize;
        }
    }
}

/// Serves the host's `file-events` stream: each line a change to raise.
pub async fn serve(stream: cairn_channel::Stream) {
    let raiser = raiser();
    let mut lines = tokio::io::BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(change) = Change::parse(&line) {
            // A full queue drops the change: the guest is behind by more than a burst.
            let _ = raiser.try_send(change);
        }
    }
}

/// The thread that raises changes (each is a round trip to the host's file server).
fn raiser() -> SyncSender<Change> {
    static RAISER: OnceLock<SyncSender<Change>> = OnceLock::new();
    RAISER
        .get_or_init(|| {
            let (tx, rx) = sync_channel(QUEUE);
            let _ =
                std::thread::Builder::new().name("file-events".into()).spawn(move || raise_all(rx));
            tx
        })
        .clone()
}

fn raise_all(rx: Receiver<Change>) {
    let mut directories: HashMap<String, Instant> = HashMap::new();
    for change in rx {
        match change {
            Change::Changed(path) => raise_changed(Path::new(&path)),
            Change::Removed(path) => {
                // The guest may still hold the entry: looking it up finds it gone.
                let _ = std::fs::symlink_metadata(&path);
                let Some(dir) = Path::new(&path).parent() else { continue };
                let dir_text = dir.to_string_lossy().into_owned();
                if directories.get(&dir_text).is_some_and(|at| at.elapsed() < DIRECTORY_AGAIN) {
                    continue;
                }
                if directories.len() > 10_000 {
                    directories.retain(|_, at| at.elapsed() < DIRECTORY_AGAIN);
                }
                touch(dir);
                directories.insert(dir_text, Instant::now());
            }
        }
    }
}

fn raise_changed(path: &Path) {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return };
    if wrote_recently((meta.dev(), meta.ino())) {
        return;
    }
    touch(path);
}

/// Sets `path`'s times to what they are: an `IN_ATTRIB` for the guest's watchers, nothing
/// for the file.
fn touch(path: &Path) {
    let Ok(meta) = std::fs::symlink_metadata(path) else { return };
    let Ok(c_path) = CString::new(path.as_os_str().as_encoded_bytes()) else { return };
    let times = [
        libc::timespec { tv_sec: meta.atime(), tv_nsec: meta.atime_nsec() },
        libc::timespec { tv_sec: meta.mtime(), tv_nsec: meta.mtime_nsec() },
    ];
    // SAFETY: a NUL-terminated path and two timespecs.
    unsafe {
        libc::utimensat(libc::AT_FDCWD, c_path.as_ptr(), times.as_ptr(), libc::AT_SYMLINK_NOFOLLOW);
    }
}
