//! QEMU's `-netdev stream` transport: ethernet frames over a unix socket, each behind its
//! length as a 4-byte big-endian number. QEMU listens (`server=on`) and the NAT connects, so
//! that a control plane restarted while the VM runs connects again and the guest's network,
//! /Database's 9P connection included, carries on ([`follow`]); [`serve`] is the other way
//! round, for peers that connect.

use std::io;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

/// Larger than any ethernet frame QEMU sends without offloads (which it does not offer here).
const MAX_FRAME: usize = 65_536;
/// Bytes read or written at once.
const BATCH: usize = 256 * 1024;

/// Serves QEMU's connections on `listener`, one after the other, for as long as the NAT runs.
pub async fn serve(
    listener: UnixListener,
    to_nat: mpsc::Sender<Vec<u8>>,
    mut from_nat: mpsc::Receiver<Vec<u8>>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "accepting QEMU's network connection");
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        if !session(stream, &to_nat, &mut from_nat).await {
            return;
        }
    }
}

/// Connects to QEMU's socket at `path` (retrying while QEMU starts or after it restarted)
/// and moves frames, for as long as the NAT runs.
pub async fn follow(
    path: std::path::PathBuf,
    to_nat: mpsc::Sender<Vec<u8>>,
    mut from_nat: mpsc::Receiver<Vec<u8>>,
) {
    loop {
        let stream = match UnixStream::connect(&path).await {
            Ok(stream) => stream,
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        if !session(stream, &to_nat, &mut from_nat).await {
            return;
        }
    }
}

/// One connection to QEMU, from a clean start; false when the NAT is gone.
async fn session(
    stream: UnixStream,
    to_nat: &mpsc::Sender<Vec<u8>>,
    from_nat: &mut mpsc::Receiver<Vec<u8>>,
) -> bool {
    // Frames for the VM before this connection are of no use to it.
    while from_nat.try_recv().is_ok() {}
    match connection(stream, to_nat, from_nat).await {
        Ok(true) => tracing::debug!("QEMU's network connection closed"),
        Ok(false) => return false,
        Err(e) => tracing::debug!(error = %e, "QEMU's network connection ended"),
    }
    true
}

/// Moves frames until either side stops; false when the NAT has stopped.
async fn connection(
    stream: UnixStream,
    to_nat: &mpsc::Sender<Vec<u8>>,
    from_nat: &mut mpsc::Receiver<Vec<u8>>,
) -> io::Result<bool> {
    let (reader, mut writer) = stream.into_split();
    // Frames are small and come in bursts: one read fills the buffer with many of them, and
    // one write carries what the NAT has queued.
    let mut reader = tokio::io::BufReader::with_capacity(BATCH, reader);
    let inbound = async {
        loop {
            let mut prefix = [0u8; 4];
            reader.read_exact(&mut prefix).await?;
            let len = u32::from_be_bytes(prefix) as usize;
            if len > MAX_FRAME {
                let message = format!("a frame of {len} bytes (at most {MAX_FRAME})");
                return Err(io::Error::new(io::ErrorKind::InvalidData, message));
            }
            let mut frame = vec![0u8; len];
            reader.read_exact(&mut frame).await?;
            if to_nat.send(frame).await.is_err() {
                return Ok(false);
            }
        }
    };
    let outbound = async {
        let mut message = Vec::with_capacity(BATCH);
        while let Some(frame) = from_nat.recv().await {
            message.clear();
            let mut next = Some(frame);
            while let Some(frame) = next.take() {
                message.extend_from_slice(&(frame.len() as u32).to_be_bytes());
                message.extend_from_slice(&frame);
                if message.len() < BATCH {
                    next = from_nat.try_recv().ok();
                }
            }
            writer.write_all(&message).await?;
        }
        Ok(false)
    };
    tokio::select! {
        result = inbound => result.or_else(|e| match e.kind() {
            io::ErrorKind::UnexpectedEof => Ok(true),
            _ => Err(e),
        }),
        result = outbound => result,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::{Config, Nat};

    /// An ARP request from 10.0.2.15 for the gateway.
    fn who_has_gateway() -> Vec<u8> {
        let mac = [0x52, 0x54, 0, 0x12, 0x34, 0x56];
        let mut frame = vec![0xff; 6];
        frame.extend_from_slice(&mac);
        frame.extend_from_slice(&[8, 6, 0, 1, 8, 0, 6, 4, 0, 1]);
        frame.extend_from_slice(&mac);
        frame.extend_from_slice(&[10, 0, 2, 15, 0, 0, 0, 0, 0, 0, 10, 0, 2, 2]);
        frame
    }

    async fn ask(stream: &mut UnixStream) -> Vec<u8> {
        let frame = who_has_gateway();
        let mut message = (frame.len() as u32).to_be_bytes().to_vec();
        message.extend_from_slice(&frame);
        stream.write_all(&message).await.expect("writes");
        let mut prefix = [0; 4];
        stream.read_exact(&mut prefix).await.expect("a reply");
        let mut reply = vec![0; u32::from_be_bytes(prefix) as usize];
        stream.read_exact(&mut reply).await.expect("the whole reply");
        reply
    }

    #[tokio::test]
    async fn frames_cross_with_their_length_and_a_bad_peer_is_dropped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("net.sock");
        let listener = UnixListener::bind(&path).expect("binds");
        let nat = Nat::spawn(
            Config { resolvers: Vec::new(), ..Config::default() },
            &tokio::runtime::Handle::current(),
        );
        tokio::spawn(serve(listener, nat.to_nat.clone(), nat.from_nat));

        let mut qemu = UnixStream::connect(&path).await.expect("connects");
        let reply = ask(&mut qemu).await;
        assert_eq!(&reply[12..14], &[8, 6], "ARP");
        assert_eq!(&reply[20..22], &[0, 2], "a reply");
        assert_eq!(&reply[22..28], &Config::default().gateway_mac, "from the gateway");

        // A peer that claims a 1 GiB frame is cut off; the next connection works.
        let mut bad = UnixStream::connect(&path).await.expect("connects");
        drop(qemu);
        bad.write_all(&(1u32 << 30).to_be_bytes()).await.expect("writes");
        let mut byte = [0; 1];
        assert_eq!(bad.read(&mut byte).await.expect("reads"), 0, "closed");
        let mut qemu = UnixStream::connect(&path).await.expect("connects");
        assert_eq!(&ask(&mut qemu).await[20..22], &[0, 2]);
    }
}
