//! What a stream is for: the opener writes one line naming the service (and its arguments,
//! space separated) before anything else; the acceptor reads it and dispatches.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::Error;

/// The longest header accepted: a service name and a few arguments.
const MAX_HEADER: usize = 1024;

/// A stream's purpose, as its header line names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub args: Vec<String>,
}

impl Service {
    /// The 9P of /Database.
    pub const NINEP: &'static str = "9p";

    pub fn new(name: &str, args: &[&str]) -> Service {
        Service { name: name.to_owned(), args: args.iter().map(|a| (*a).to_owned()).collect() }
    }

    /// The header line, newline included (for writers that are not async).
    pub fn line(&self) -> String {
        let mut line = self.name.clone();
        for arg in &self.args {
            line.push(' ');
            line.push_str(arg);
        }
        line.push('\n');
        line
    }

    /// Writes the header line.
    pub async fn send<W: AsyncWrite + Unpin>(&self, io: &mut W) -> Result<(), Error> {
        io.write_all(self.line().as_bytes()).await?;
        Ok(())
    }

    /// Reads the header line, a byte at a time so that nothing after it is consumed.
    pub async fn receive<R: AsyncRead + Unpin>(io: &mut R) -> Result<Service, Error> {
        let mut line = Vec::new();
        loop {
            let mut byte = [0u8; 1];
            if io.read(&mut byte).await? == 0 {
                return Err(Error::Header("the stream ended before its header".into()));
            }
            if byte[0] == b'\n' {
                break;
            }
            line.push(byte[0]);
            if line.len() > MAX_HEADER {
                return Err(Error::Header(format!("longer than {MAX_HEADER} bytes")));
            }
        }
        let text = String::from_utf8(line).map_err(|_| Error::Header("not UTF-8".into()))?;
        let mut words = text.split(' ').filter(|w| !w.is_empty());
        let name = words.next().ok_or_else(|| Error::Header("empty".into()))?.to_owned();
        Ok(Service { name, args: words.map(str::to_owned).collect() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_header_round_trips_and_leaves_the_rest() {
        let (mut a, mut b) = tokio::io::duplex(256);
        Service::new("port", &["tcp", "8080"]).send(&mut a).await.expect("send");
        a.write_all(b"payload").await.expect("write");
        let got = Service::receive(&mut b).await.expect("receive");
        assert_eq!(got, Service::new("port", &["tcp", "8080"]));
        let mut rest = [0u8; 7];
        b.read_exact(&mut rest).await.expect("rest");
        assert_eq!(&rest, b"payload");
        drop(a);
        assert!(Service::receive(&mut b).await.is_err());
    }
}
