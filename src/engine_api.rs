//! dockerd's API in the guest, asked over the channel (the agent's `docker` service relays
//! each stream to dockerd's socket): one request per stream, in HTTP/1.0, so that a reply
//! ends with its stream and needs no chunked decoding.

use std::time::Duration;

use cairn_channel::{Service, Session};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

/// How long a reply may take.
const REPLY_WITHIN: Duration = Duration::from_secs(10);

/// `GET path`, its body as JSON; `None` when the engine is not there or says otherwise.
pub async fn get_json(session: &Session, path: &str) -> Option<serde_json::Value> {
    let mut stream = request(session, path).await?;
    let mut reply = Vec::new();
    tokio::time::timeout(REPLY_WITHIN, stream.read_to_end(&mut reply)).await.ok()?.ok()?;
    let at = reply.windows(4).position(|w| w == b"\r\n\r\n")?;
    serde_json::from_slice(&reply[at + 4..]).ok()
}

/// `GET path` of a reply that goes on (`/events`): the stream after the reply's header, one
/// JSON value a line.
pub async fn get_lines(session: &Session, path: &str) -> Option<BufReader<cairn_channel::Stream>> {
    let mut stream = BufReader::new(request(session, path).await?);
    let mut header = String::new();
    loop {
        header.clear();
        let n =
            tokio::time::timeout(REPLY_WITHIN, stream.read_line(&mut header)).await.ok()?.ok()?;
        if n == 0 {
            return None;
        }
        if header == "\r\n" {
            return Some(stream);
        }
    }
}

async fn request(session: &Session, path: &str) -> Option<cairn_channel::Stream> {
    let mut stream = session.open(&Service::new(cairn_agent::DOCKER_SERVICE, &[])).await.ok()?;
    let request = format!("GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n");
    stream.write_all(request.as_bytes()).await.ok()?;
    Some(stream)
}
