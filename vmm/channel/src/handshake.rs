//! The start of a session. The host says hello with a nonce, again and again until the guest
//! answers with the same nonce; then it says start. Whatever precedes these lines (bytes of a
//! former session left in a buffer, hellos repeated while the guest was busy) is skipped, so
//! that both ends begin yamux at the same byte.
//!
//! ```text
//! host  -> guest   \ncairn-channel/1 hello NONCE\n     (every HELLO_EVERY until answered)
//! guest -> host    \ncairn-channel/1 ready NONCE\n     (once per nonce)
//! host  -> guest   \ncairn-channel/1 start NONCE\n
//! ```
//!
//! The lines are read a byte at a time: the session's first frames may follow them at once,
//! and no byte past the handshake may be taken from the stream.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::Error;

const HELLO: &[u8] = b"\ncairn-channel/1 hello ";
const READY: &[u8] = b"\ncairn-channel/1 ready ";
const START: &[u8] = b"\ncairn-channel/1 start ";
/// How often the host repeats its hello while the guest says nothing.
pub const HELLO_EVERY: Duration = Duration::from_millis(500);
/// A nonce is at most this long; a longer "nonce" is garbage.
const MAX_NONCE: usize = 32;

/// A nonce that differs between sessions (it only has to tell sessions apart, not to be secret:
/// the channel is private by where it runs).
pub fn nonce() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    hasher.write_u128(now.map_or(0, |d| d.as_nanos()));
    format!("{:016x}", hasher.finish())
}

fn line(prefix: &[u8], nonce: &str) -> Vec<u8> {
    let mut out = prefix.to_vec();
    out.extend_from_slice(nonce.as_bytes());
    out.push(b'\n');
    out
}

/// Reads until one of `prefixes` has been seen, then the nonce after it up to a newline.
/// Returns which prefix and the nonce.
async fn expect<R: AsyncRead + Unpin>(
    io: &mut R,
    prefixes: &[&[u8]],
) -> Result<(usize, String), Error> {
    let longest = prefixes.iter().map(|p| p.len()).max().unwrap_or(0);
    let mut window: Vec<u8> = Vec::with_capacity(longest);
    loop {
        let byte = read_byte(io).await?;
        if window.len() == longest {
            window.remove(0);
        }
        window.push(byte);
        let Some(which) = prefixes.iter().position(|p| window.ends_with(p)) else { continue };
        let mut nonce = Vec::new();
        loop {
            let byte = read_byte(io).await?;
            if byte == b'\n' {
                break;
            }
            nonce.push(byte);
            if nonce.len() > MAX_NONCE {
                break;
            }
        }
        match String::from_utf8(nonce) {
            Ok(nonce) if !nonce.is_empty() && nonce.len() <= MAX_NONCE => {
                return Ok((which, nonce))
            }
            // Not a real line: keep looking.
            _ => window.clear(),
        }
    }
}

async fn read_byte<R: AsyncRead + Unpin>(io: &mut R) -> Result<u8, Error> {
    let mut byte = [0u8; 1];
    match io.read(&mut byte).await? {
        0 => Err(Error::Closed),
        _ => Ok(byte[0]),
    }
}

/// The host's side: returns once the guest has answered and been told to start.
pub async fn host<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S) -> Result<(), Error> {
    let nonce = nonce();
    let hello = line(HELLO, &nonce);
    loop {
        io.write_all(&hello).await?;
        io.flush().await?;
        let answer = tokio::time::timeout(HELLO_EVERY, async {
            loop {
                let (_, seen) = expect(io, &[READY]).await?;
                if seen == nonce {
                    return Ok::<(), Error>(());
                }
            }
        })
        .await;
        match answer {
            Ok(result) => {
                result?;
                break;
            }
            Err(_elapsed) => continue,
        }
    }
    io.write_all(&line(START, &nonce)).await?;
    io.flush().await?;
    Ok(())
}

/// The guest's side: answers the host's hello, returns at its start.
pub async fn guest<S: AsyncRead + AsyncWrite + Unpin>(io: &mut S) -> Result<(), Error> {
    let mut answered: Option<String> = None;
    loop {
        let (which, nonce) = expect(io, &[HELLO, START]).await?;
        match which {
            // A hello of a nonce already answered is a repeat.
            0 if answered.as_deref() != Some(nonce.as_str()) => {
                io.write_all(&line(READY, &nonce)).await?;
                io.flush().await?;
                answered = Some(nonce);
            }
            1 if answered.as_deref() == Some(nonce.as_str()) => return Ok(()),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stale_bytes_and_repeated_hellos_are_skipped() {
        let (mut host_end, mut guest_end) = tokio::io::duplex(4096);
        // Bytes of a former session wait in the guest's buffer.
        let stale = [b"garbage \ncairn-channel/1 hello old\n".as_slice(), b"\x00\x01\x02"].concat();
        let mut stale_then_guest = tokio::io::join(std::io::Cursor::new(stale), tokio::io::sink());
        let skipped =
            tokio::time::timeout(Duration::from_millis(200), guest(&mut stale_then_guest)).await;
        assert!(
            matches!(skipped, Ok(Err(Error::Closed))),
            "a stale hello alone does not start a session"
        );
        let guest_task = tokio::spawn(async move {
            // The guest is slow: the host repeats its hello at least once.
            tokio::time::sleep(HELLO_EVERY + Duration::from_millis(100)).await;
            guest(&mut guest_end).await.map(|()| guest_end)
        });
        host(&mut host_end).await.expect("host side");
        let mut guest_end = guest_task.await.expect("joins").expect("guest side");
        // Both ends are now at the same byte.
        host_end.write_all(b"after").await.expect("write");
        let mut buf = [0u8; 5];
        guest_end.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"after");
        guest_end.write_all(b"back").await.expect("write");
        let mut buf = [0u8; 4];
        host_end.read_exact(&mut buf).await.expect("read");
        assert_eq!(&buf, b"back");
    }

    #[test]
    fn nonces_differ() {
        assert_ne!(nonce(), nonce());
    }
}
