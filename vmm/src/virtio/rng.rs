//! virtio-rng: the guest's entropy from the host's getrandom(2).

use std::sync::Arc;

use super::{DeviceQueue, VirtioDevice, VERSION_1};
use crate::machine::Error;

/// The most a single request is given (the kernel asks for far less).
const MAX_REQUEST: u32 = 64 * 1024;

#[derive(Debug, Default)]
pub struct Rng {
    queue: Option<Arc<DeviceQueue>>,
}

fn fill(buf: &mut [u8]) -> bool {
    let mut done = 0;
    while done < buf.len() {
        let rest = &mut buf[done..];
        // SAFETY: getrandom writes at most `rest.len()` bytes into `rest`.
        let n = unsafe { libc::getrandom(rest.as_mut_ptr().cast(), rest.len(), 0) };
        if n <= 0 {
            return false;
        }
        done += n as usize;
    }
    true
}

impl VirtioDevice for Rng {
    fn device_type(&self) -> u32 {
        virtio_bindings::virtio_ids::VIRTIO_ID_RNG
    }
    fn features(&self) -> u64 {
        VERSION_1
    }
    fn queue_sizes(&self) -> &[u16] {
        &[256]
    }
    fn config(&self) -> Vec<u8> {
        Vec::new()
    }
    fn activate(&mut self, _features: u64, queues: Vec<Arc<DeviceQueue>>) -> Result<(), Error> {
        self.queue = Some(queues.into_iter().next().ok_or(Error::Queues {
            device: "virtio-rng",
            wanted: 1,
            got: 0,
        })?);
        Ok(())
    }
    fn notify(&mut self, _queue: usize) {
        let Some(queue) = &self.queue else { return };
        while let Some(request) = queue.pop_request(0) {
            let want = request.writable.iter().fold(0u32, |n, (_, len)| n.saturating_add(*len));
            let want = want.min(MAX_REQUEST);
            let mut bytes = vec![0u8; want as usize];
            let written = if fill(&mut bytes) { queue.write(&request.writable, &bytes) } else { 0 };
            queue.complete(request.head, written);
        }
    }
    fn reset(&mut self) {
        self.queue = None;
    }
}
