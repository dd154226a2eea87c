//! The NAT as the native VMM's virtio-net backend: frames from the device go to the NAT
//! (dropped, and counted by the device's guest as loss, when it is far behind), frames from
//! the NAT reach the device through a channel its receive thread waits on.

use tokio::sync::mpsc;

use cairn_vmm::virtio::net::NetBackend;

/// One end of the NAT for a virtio-net device.
#[derive(Debug)]
pub struct NatPort {
    to_nat: mpsc::Sender<Vec<u8>>,
    incoming: Option<std::sync::mpsc::Receiver<Vec<u8>>>,
}

impl NatPort {
    /// Connects to the NAT's channels; a task on `runtime` carries its frames to the device.
    pub fn new(
        to_nat: mpsc::Sender<Vec<u8>>,
        mut from_nat: mpsc::Receiver<Vec<u8>>,
        runtime: &tokio::runtime::Handle,
    ) -> NatPort {
        let (to_device, incoming) = std::sync::mpsc::channel();
        runtime.spawn(async move {
            while let Some(frame) = from_nat.recv().await {
                if to_device.send(frame).is_err() {
                    return;
                }
            }
        });
        NatPort { to_nat, incoming: Some(incoming) }
    }
}

impl NetBackend for NatPort {
    fn send(&mut self, frame: &[u8]) {
        let _ = self.to_nat.try_send(frame.to_vec());
    }

    fn take_receiver(&mut self) -> Option<std::sync::mpsc::Receiver<Vec<u8>>> {
        self.incoming.take()
    }
}
