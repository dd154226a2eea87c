//! Published ports: what the guest's port proxy asks of the control plane, and how the host's
//! connections and datagrams come back into the guest.
//!
//! dockerd runs a userland proxy for every published port (`docker run -p`). cairn's proxy
//! first opens a [`PUBLISH`] stream whose header names the binding as dockerd gave it; the
//! control plane binds the host's socket and answers one line, [`Answer`], before the proxy
//! tells dockerd it started. The stream then stays open for as long as the port is published:
//! its end (the proxy exited, the guest rebooted) closes the host's socket. Each connection the
//! host accepts is a [`FORWARD`] stream to the container's address, opened by the host; UDP
//! datagrams travel on it as [`write_datagram`] frames, one stream per host peer.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::Service;

/// The service of a publish stream: `publish PROTO HOST_IP HOST_PORT CONTAINER_IP CONTAINER_PORT`.
pub const PUBLISH: &str = "publish";
/// The service of a forwarded connection: `forward PROTO CONTAINER_IP CONTAINER_PORT`.
pub const FORWARD: &str = "forward";

/// The transport of a binding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn parse(text: &str) -> Option<Proto> {
        match text {
            "tcp" => Some(Proto::Tcp),
            "udp" => Some(Proto::Udp),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

impl std::fmt::Display for Proto {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One published port, as dockerd hands it to its userland proxy.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Binding {
    pub proto: Proto,
    /// The address dockerd was asked to bind (`0.0.0.0`, `::`, `127.0.0.1`, ...).
    pub host: std::net::SocketAddr,
    /// Where the container listens.
    pub container: std::net::SocketAddr,
}

impl Binding {
    /// The header of its publish stream.
    pub fn service(&self) -> Service {
        let (hip, hport) = (self.host.ip().to_string(), self.host.port().to_string());
        let (cip, cport) = (self.container.ip().to_string(), self.container.port().to_string());
        Service::new(PUBLISH, &[self.proto.as_str(), &hip, &hport, &cip, &cport])
    }

    /// The binding a publish stream's header names.
    pub fn from_service(service: &Service) -> Option<Binding> {
        let [proto, hip, hport, cip, cport] = service.args.as_slice() else { return None };
        let address = |ip: &str, port: &str| -> Option<std::net::SocketAddr> {
            Some(std::net::SocketAddr::new(ip.parse().ok()?, port.parse().ok()?))
        };
        Some(Binding {
            proto: Proto::parse(proto)?,
            host: address(hip, hport)?,
            container: address(cip, cport)?,
        })
    }

    /// The header of a forwarded connection to the container.
    pub fn forward(&self) -> Service {
        let (ip, port) = (self.container.ip().to_string(), self.container.port().to_string());
        Service::new(FORWARD, &[self.proto.as_str(), &ip, &port])
    }
}

/// Where a forward stream goes, from its header.
pub fn forward_target(service: &Service) -> Option<(Proto, std::net::SocketAddr)> {
    let [proto, ip, port] = service.args.as_slice() else { return None };
    Some((Proto::parse(proto)?, std::net::SocketAddr::new(ip.parse().ok()?, port.parse().ok()?)))
}

/// The control plane's one-line answer to a publish stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// Listening on the host at this address.
    Listening(String),
    /// Not published, and why (the address and port it could not bind, named).
    Refused(String),
}

impl Answer {
    pub fn line(&self) -> String {
        match self {
            Answer::Listening(address) => format!("listening {address}\n"),
            Answer::Refused(why) => format!("refused {}\n", why.replace('\n', " ")),
        }
    }

    pub fn parse(line: &str) -> Answer {
        let line = line.trim_end_matches(['\r', '\n']);
        match line.split_once(' ') {
            Some(("listening", address)) => Answer::Listening(address.to_owned()),
            Some(("refused", why)) => Answer::Refused(why.to_owned()),
            _ => Answer::Refused(format!("the control plane answered {line:?}")),
        }
    }
}

/// The largest datagram a forward stream carries (UDP's own limit).
pub const MAX_DATAGRAM: usize = 65535;

/// Writes one datagram as a frame: its length (two bytes, big-endian), then its bytes.
pub async fn write_datagram<W: AsyncWrite + Unpin>(io: &mut W, data: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(data.len()).map_err(|_| {
        std::io::Error::new(std::io::ErrorKind::InvalidInput, "a datagram over 65535 bytes")
    })?;
    let mut frame = Vec::with_capacity(2 + data.len());
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(data);
    io.write_all(&frame).await
}

/// Reads one datagram frame into `buffer`; `None` when the stream ended between frames.
pub async fn read_datagram<R: AsyncRead + Unpin>(
    io: &mut R,
    buffer: &mut Vec<u8>,
) -> std::io::Result<Option<usize>> {
    let mut len = [0u8; 2];
    match io.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let len = usize::from(u16::from_be_bytes(len));
    buffer.resize(len, 0);
    io.read_exact(&mut buffer[..len]).await?;
    Ok(Some(len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_binding_round_trips_through_its_header() {
        let binding = Binding {
            proto: Proto::Udp,
            host: "[::]:5353".parse().expect("addr"),
            container: "172.17.0.2:53".parse().expect("addr"),
        };
        let service = binding.service();
        assert_eq!(service.args, ["udp", "::", "5353", "172.17.0.2", "53"]);
        assert_eq!(Binding::from_service(&service), Some(binding.clone()));
        assert_eq!(
            forward_target(&binding.forward()),
            Some((Proto::Udp, "172.17.0.2:53".parse().expect("addr")))
        );
        assert_eq!(
            Binding::from_service(&Service::new(PUBLISH, &["sctp", "::", "1", "::", "1"])),
            None
        );
        assert_eq!(
            Binding::from_service(&Service::new(PUBLISH, &["tcp", "x", "1", "::", "1"])),
            None
        );
    }

    #[test]
    fn answers_round_trip() {
        for answer in [
            Answer::Listening("127.0.0.1:8080".into()),
            Answer::Refused("cannot listen on 127.0.0.1:8080: in use".into()),
        ] {
            assert_eq!(Answer::parse(&answer.line()), answer);
        }
        assert!(matches!(Answer::parse("what\n"), Answer::Refused(_)));
    }

    #[tokio::test]
    async fn datagrams_keep_their_boundaries() {
        let (mut a, mut b) = tokio::io::duplex(1 << 17);
        for data in [&b"one"[..], &[], &[7u8; MAX_DATAGRAM]] {
            write_datagram(&mut a, data).await.expect("write");
        }
        drop(a);
        let mut buffer = Vec::new();
        for want in [3, 0, MAX_DATAGRAM] {
            assert_eq!(read_datagram(&mut b, &mut buffer).await.expect("read"), Some(want));
        }
        assert_eq!(read_datagram(&mut b, &mut buffer).await.expect("read"), None);
        assert!(write_datagram(&mut tokio::io::sink(), &[0; MAX_DATAGRAM + 1]).await.is_err());
    }
}
