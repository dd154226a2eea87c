//! virtio-9p: the database served to the guest in-process. Each descriptor chain is one
//! request (the T-message, then room for the R-message); the request goes to a
//! [`cairn_9p::Session`], the server's message-in/message-out entry point, and its reply, which
//! may come much later (a read of `head.live` waits for the next commit), goes back into that
//! chain by tag. Replies are written by a thread of the device, never by the vCPU.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::mpsc;
use vm_memory::GuestAddress;

use super::{DeviceQueue, VirtioDevice, VERSION_1};
use crate::machine::bus::lock;
use crate::machine::Error;

/// VIRTIO_9P_MOUNT_TAG: the tag is in the configuration space.
const MOUNT_TAG: u64 = 1;
const TFLUSH: u8 = 108;
const RLERROR: u8 = 7;
const EINTR: u32 = 4;

/// A request waiting for its reply: where the reply goes, and for a Tflush the tag it flushes.
#[derive(Debug)]
struct Pending {
    head: u16,
    writable: Vec<(GuestAddress, u32)>,
    flushes: Option<u16>,
}

#[derive(Debug)]
struct Active {
    queue: Arc<DeviceQueue>,
    session: cairn_9p::Session,
    pending: Arc<Mutex<HashMap<u16, Pending>>>,
}

/// The 9P device, mounted by the guest with `mount -t 9p -o trans=virtio TAG`.
#[derive(Debug)]
pub struct NinePDevice {
    tag: String,
    fs: Arc<cairn_9p::Fs>,
    runtime: tokio::runtime::Handle,
    active: Option<Active>,
}

impl NinePDevice {
    /// Serves `fs` under `tag`; the server's tasks run on `runtime`.
    pub fn new(tag: &str, fs: Arc<cairn_9p::Fs>, runtime: tokio::runtime::Handle) -> NinePDevice {
        NinePDevice { tag: tag.to_owned(), fs, runtime, active: None }
    }
}

fn tag_of(frame: &[u8]) -> Option<u16> {
    Some(u16::from_le_bytes([*frame.get(5)?, *frame.get(6)?]))
}

/// Rlerror(EINTR) for `tag`: the answer to a request that a Tflush cancelled, so that its
/// buffers return to the driver.
fn interrupted(tag: u16) -> Vec<u8> {
    let mut frame = 11u32.to_le_bytes().to_vec();
    frame.push(RLERROR);
    frame.extend_from_slice(&tag.to_le_bytes());
    frame.extend_from_slice(&EINTR.to_le_bytes());
    frame
}

/// Delivers the session's replies into the chains waiting for them. A task on the server's
/// runtime rather than a thread: the reply is usually delivered by the worker that produced
/// it, without waking another thread.
async fn deliver_replies(
    mut replies: mpsc::UnboundedReceiver<Vec<u8>>,
    queue: Arc<DeviceQueue>,
    pending: Arc<Mutex<HashMap<u16, Pending>>>,
    credits: cairn_9p::session::Credits,
) {
    while let Some(reply) = replies.recv().await {
        credits.delivered();
        let Some(tag) = tag_of(&reply) else { continue };
        let Some(request) = lock(&pending).remove(&tag) else { continue };
        if let Some(old) = request.flushes {
            if let Some(cancelled) = lock(&pending).remove(&old) {
                let len = queue.write(&cancelled.writable, &interrupted(old));
                queue.complete(cancelled.head, len);
            }
        }
        let len = queue.write(&request.writable, &reply);
        queue.complete(request.head, len);
    }
}

impl VirtioDevice for NinePDevice {
    fn device_type(&self) -> u32 {
        virtio_bindings::virtio_ids::VIRTIO_ID_9P
    }
    fn features(&self) -> u64 {
        VERSION_1 | MOUNT_TAG
    }
    fn queue_sizes(&self) -> &[u16] {
        &[128]
    }
    fn config(&self) -> Vec<u8> {
        let mut config = (self.tag.len() as u16).to_le_bytes().to_vec();
        config.extend_from_slice(self.tag.as_bytes());
        config
    }

    fn activate(&mut self, _features: u64, queues: Vec<Arc<DeviceQueue>>) -> Result<(), Error> {
        let queue = queues.into_iter().next().ok_or(Error::Queues {
            device: "virtio-9p",
            wanted: 1,
            got: 0,
        })?;
        let (replies_tx, replies) = mpsc::unbounded_channel();
        let session = {
            let _runtime = self.runtime.enter();
            cairn_9p::Session::new(self.fs.clone(), replies_tx)
        };
        let pending = Arc::new(Mutex::new(HashMap::new()));
        let (q, p, credits) = (queue.clone(), pending.clone(), session.credits());
        self.runtime.spawn(deliver_replies(replies, q, p, credits));
        self.active = Some(Active { queue, session, pending });
        Ok(())
    }

    fn notify(&mut self, _queue: usize) {
        let Some(active) = &self.active else { return };
        let max = active.session.msize() as usize;
        while let Some(request) = active.queue.pop_request(max) {
            let frame = request.readable;
            let Some(tag) = tag_of(&frame) else {
                active.queue.complete(request.head, 0);
                continue;
            };
            let flushes = (frame.get(4) == Some(&TFLUSH)).then(|| frame.get(7..9)).flatten();
            let flushes = flushes.map(|b| u16::from_le_bytes([b[0], b[1]]));
            let waiting = Pending { head: request.head, writable: request.writable, flushes };
            if let Some(old) = lock(&active.pending).insert(tag, waiting) {
                // A tag reused while in flight: the driver broke the protocol; give the old
                // chain back empty rather than leak it.
                active.queue.complete(old.head, 0);
            }
            // The queue holds fewer chains than the session allows in flight: never waits.
            self.runtime.block_on(active.session.ready());
            let _runtime = self.runtime.enter();
            if let Err(e) = active.session.dispatch(&frame) {
                tracing::warn!(error = %e, "a 9P request that does not decode");
                if let Some(p) = lock(&active.pending).remove(&tag) {
                    active.queue.complete(p.head, 0);
                }
            }
        }
    }

    fn reset(&mut self) {
        if let Some(active) = self.active.take() {
            active.session.close();
            // The reply task ends when the session's last sender is gone.
        }
    }
}
