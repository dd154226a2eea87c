//! The guest's side of the clock stream (cairn-channel's [`clock`](cairn_channel::clock)):
//! reads CLOCK_REALTIME for the host, and steps or slews it as the host says. The host does
//! the measuring and deciding; the agent only has the privilege to set the clock.

use cairn_channel::clock::{format_time, Request};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The longest request line (`slew -9223372036854775808`).
const MAX_LINE: usize = 64;

/// Answers the host's requests until it closes the stream.
pub async fn serve<S: AsyncRead + AsyncWrite>(stream: S) {
    let (from_host, mut to_host) = tokio::io::split(stream);
    let mut from_host = tokio::io::BufReader::new(from_host);
    let mut line = Vec::new();
    loop {
        line.clear();
        let mut limited = (&mut from_host).take(MAX_LINE as u64);
        match limited.read_until(b'\n', &mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let request = std::str::from_utf8(&line).ok().and_then(Request::parse);
        let answer = match request {
            Some(Request::Read) => match now() {
                Ok(nanos) => format_time(nanos),
                Err(e) => format!("error reading the clock: {e}"),
            },
            Some(Request::Step(nanos)) => done(step(nanos)),
            Some(Request::Slew(nanos)) => done(slew(nanos)),
            None => "error an unknown request".into(),
        };
        if to_host.write_all(format!("{answer}\n").as_bytes()).await.is_err() {
            return;
        }
    }
}

fn done(result: std::io::Result<()>) -> String {
    match result {
        Ok(()) => "ok".into(),
        Err(e) => format!("error {e}"),
    }
}

/// CLOCK_REALTIME in nanoseconds since the epoch.
fn now() -> std::io::Result<i128> {
    let mut time = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes one timespec, ours and alive for the call.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut time) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(i128::from(time.tv_sec) * 1_000_000_000 + i128::from(time.tv_nsec))
}

/// Sets the clock `nanos` later (earlier when negative) at once, dropping any slew under way.
fn step(nanos: i64) -> std::io::Result<()> {
    slew(0)?;
    let target = now()? + i128::from(nanos);
    let seconds = target.div_euclid(1_000_000_000);
    let time = libc::timespec {
        tv_sec: libc::time_t::try_from(seconds).map_err(std::io::Error::other)?,
        // In 0..1e9, which every c_long holds.
        tv_nsec: target.rem_euclid(1_000_000_000) as libc::c_long,
    };
    // SAFETY: clock_settime reads one timespec, alive for the call.
    if unsafe { libc::clock_settime(libc::CLOCK_REALTIME, &time) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Lets the kernel gain (or lose) `nanos` gradually (adjtime(3): at most 0.5 ms a second), so
/// that time never jumps under running programs. A new slew replaces the one under way.
fn slew(nanos: i64) -> std::io::Result<()> {
    let micros = nanos / 1_000;
    let delta = libc::timeval {
        tv_sec: (micros / 1_000_000) as libc::time_t,
        tv_usec: (micros % 1_000_000) as libc::suseconds_t,
    };
    // SAFETY: adjtime reads one timeval, alive for the call, and is not asked for the old one.
    if unsafe { libc::adjtime(&delta, std::ptr::null_mut()) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_the_clock_and_refuses_what_it_does_not_know() {
        let (host, guest) = tokio::io::duplex(4096);
        tokio::spawn(serve(guest));
        let (from_guest, mut to_guest) = tokio::io::split(host);
        let mut from_guest = tokio::io::BufReader::new(from_guest).lines();
        to_guest.write_all(b"read\n").await.expect("write");
        let reading = from_guest.next_line().await.expect("read").expect("a line");
        let guest = cairn_channel::clock::parse_time(&reading).expect("a time");
        let host = now().expect("the host's clock");
        assert!((host - guest).abs() < 5_000_000_000, "{reading}");
        to_guest.write_all(b"jump 5\n").await.expect("write");
        let refused = from_guest.next_line().await.expect("read").expect("a line");
        assert!(refused.starts_with("error "), "{refused}");
        // Stepping the clock needs CAP_SYS_TIME, and a test must not move the host's clock.
    }
}
