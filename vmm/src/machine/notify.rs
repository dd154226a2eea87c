//! Queue notifications through ioeventfds: KVM completes the driver's write to a device's
//! QueueNotify register in the kernel and signals an eventfd, so the vCPU goes straight back
//! to the guest instead of exiting to this process; one thread here waits on all of them and
//! runs the device's queue work. (Without an ioeventfd the same write reaches the transport
//! as an MMIO exit, which stays as the fallback.)

use std::os::fd::AsRawFd;
use std::sync::{Arc, Mutex};

use kvm_ioctls::{IoEventAddress, VmFd};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};
use vmm_sys_util::eventfd::EventFd;

use super::bus::lock;
use super::Error;
use crate::virtio::mmio::{MmioTransport, QUEUE_NOTIFY};

/// The eventfds of every queue, and the thread that serves them.
#[derive(Debug)]
pub struct Notifier {
    epoll: Epoll,
    /// (transport, queue index, eventfd), indexed by the epoll event's data.
    queues: Vec<(Arc<Mutex<MmioTransport>>, u32, EventFd)>,
    /// Written to end the thread.
    stop: EventFd,
}

impl Notifier {
    pub fn new() -> Result<Notifier, Error> {
        let epoll = Epoll::new().map_err(Error::os("epoll"))?;
        let stop = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::os("eventfd"))?;
        epoll
            .ctl(ControlOperation::Add, stop.as_raw_fd(), EpollEvent::new(EventSet::IN, u64::MAX))
            .map_err(Error::os("epoll_ctl"))?;
        Ok(Notifier { epoll, queues: Vec::new(), stop })
    }

    /// Routes writes of each queue index of the device at `base` through an ioeventfd.
    pub fn add(
        &mut self,
        vm: &VmFd,
        base: u64,
        transport: &Arc<Mutex<MmioTransport>>,
        queues: usize,
    ) -> Result<(), Error> {
        for queue in 0..queues as u32 {
            let fd = EventFd::new(libc::EFD_NONBLOCK).map_err(Error::os("eventfd"))?;
            vm.register_ioevent(&fd, &IoEventAddress::Mmio(base + QUEUE_NOTIFY), queue)
                .map_err(Error::kvm("KVM_IOEVENTFD"))?;
            let event = EpollEvent::new(EventSet::IN, self.queues.len() as u64);
            self.epoll
                .ctl(ControlOperation::Add, fd.as_raw_fd(), event)
                .map_err(Error::os("epoll_ctl"))?;
            self.queues.push((transport.clone(), queue, fd));
        }
        Ok(())
    }

    /// A handle that ends the thread started by [`Notifier::spawn`].
    pub fn stopper(&self) -> Result<EventFd, Error> {
        self.stop.try_clone().map_err(Error::os("eventfd"))
    }

    /// Serves the notifications on a thread of its own until the stopper is written.
    pub fn spawn(self) -> Result<std::thread::JoinHandle<()>, Error> {
        std::thread::Builder::new()
            .name("virtio-notify".into())
            .spawn(move || self.run())
            .map_err(Error::os("starting the notification thread"))
    }

    fn run(self) {
        let mut events = vec![EpollEvent::default(); self.queues.len() + 1];
        loop {
            let ready = match self.epoll.wait(-1, &mut events) {
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    tracing::error!(error = %e, "waiting for virtio notifications");
                    return;
                }
            };
            for event in &events[..ready] {
                let Some((transport, queue, fd)) = self.queues.get(event.data() as usize) else {
                    return; // the stopper
                };
                // Several writes may have coalesced into one count: one pass serves them all.
                if fd.read().is_ok() {
                    lock(transport).queue_notify(*queue);
                }
            }
        }
    }
}
