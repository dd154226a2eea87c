//! What the control loop waits for. Every source of change is a thread or a task that sends
//! an [`Event`] on one channel, and the loop handles them one at a time; between events it
//! sleeps until the next deadline it keeps (a quiet period ending, a restart falling due), so an
//! idle control plane does nothing at all. The sources:
//! - the database: master's and `state`'s heads ([`forward_heads`], on the db's HeadWatch);
//! - the VM: its end ([`watch_process`] on a pidfd for qemu, [`watch_machine`] for the
//!   embedded VMM), tagged with the boot it belongs to;
//! - the guest's channel coming up or going down ([`watch_channel`]);
//! - the control socket's commands (`cairn vm ...`, [`super::control`]);
//! - SIGINT, SIGTERM and SIGHUP (the 9P server's signal task sends [`Event::Stop`]).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::mpsc::{self, Receiver, Sender};
use std::time::Duration;

use cairn_channel::Session;
use cairn_db::{HeadWatch, ObjectId};

/// One thing that happened.
#[derive(Debug)]
pub enum Event {
    /// master moved (`None`: it was deleted).
    Head(Option<ObjectId>),
    /// The guest reported: branch `state` moved.
    State(Option<ObjectId>),
    /// The VM of boot `generation` ended.
    VmExited { generation: u64 },
    /// The guest's channel of boot `generation` came up or went down.
    Channel { generation: u64, up: bool },
    /// A command from the control socket, and where its one-line answer goes.
    Control(super::control::Request, Sender<String>),
    /// A client came to a socket of a VM auto-pause paused.
    Wake,
    /// How many containers run in the guest now.
    Containers(usize),
    /// The guest's clock was checked (and corrected).
    Clock(super::clock::ClockStatus),
    /// A signal asked `cairn up` to stop.
    Stop,
}

/// The loop's channel.
pub fn channel() -> (Sender<Event>, Receiver<Event>) {
    mpsc::channel()
}

/// Forwards every head `watch` delivers as `make(head)`, on a thread of its own, until the
/// loop is gone.
pub fn forward_heads(
    watch: HeadWatch,
    events: Sender<Event>,
    make: fn(Option<ObjectId>) -> Event,
) -> std::io::Result<()> {
    std::thread::Builder::new().name("head events".into()).spawn(move || {
        while let Some(head) = watch.recv() {
            if events.send(make(head)).is_err() {
                return;
            }
        }
    })?;
    Ok(())
}

/// Sends [`Event::VmExited`] when process `pid` (qemu, a child or adopted) ends. The kernel
/// says so through a pidfd; where it has none (before Linux 5.3) the process is looked at
/// once a second.
pub fn watch_process(pid: u32, start_time: Option<u64>, generation: u64, events: Sender<Event>) {
    let spawned = std::thread::Builder::new().name("vm exit".into()).spawn(move || {
        match pidfd(pid) {
            Some(fd) => wait_readable(&fd),
            None => {
                while crate::vm::record::process_start_time(pid) == start_time {
                    std::thread::sleep(Duration::from_secs(1));
                }
            }
        }
        let _ = events.send(Event::VmExited { generation });
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "watching the VM's process: its end will not be seen");
    }
}

fn pidfd(pid: u32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open(2) with a pid and no flags; the result is checked before use.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
    let fd = i32::try_from(fd).ok().filter(|fd| *fd >= 0)?;
    // SAFETY: `fd` was just returned by the kernel and is ours alone.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Blocks until `fd` is readable (a pidfd is, once its process has ended).
fn wait_readable(fd: &OwnedFd) {
    let mut poll = libc::pollfd { fd: fd.as_raw_fd(), events: libc::POLLIN, revents: 0 };
    loop {
        // SAFETY: one pollfd we own, for the call's length.
        let rc = unsafe { libc::poll(&mut poll, 1, -1) };
        if rc > 0 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            return;
        }
    }
}

/// Sends [`Event::VmExited`] when the embedded VMM's machine ends.
pub fn watch_machine(end: cairn_vmm::machine::EndSignal, generation: u64, events: Sender<Event>) {
    let spawned = std::thread::Builder::new().name("vm exit".into()).spawn(move || {
        end.wait();
        let _ = events.send(Event::VmExited { generation });
    });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "watching the VM: its end will not be seen");
    }
}

/// Sends [`Event::Channel`] each time the guest's session comes or goes, on `runtime`.
pub fn watch_channel(
    mut sessions: tokio::sync::watch::Receiver<Option<Session>>,
    generation: u64,
    events: Sender<Event>,
    runtime: &tokio::runtime::Handle,
) -> tokio::task::JoinHandle<()> {
    runtime.spawn(async move {
        loop {
            let up = sessions.borrow_and_update().as_ref().is_some_and(|s| !s.is_closed());
            if events.send(Event::Channel { generation, up }).is_err() {
                return;
            }
            if sessions.changed().await.is_err() {
                return;
            }
        }
    })
}
