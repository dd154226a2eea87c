//! Keeping the guest's clock on the host's: a [`SERVICE`] stream, opened by the host, on which
//! it reads the guest's clock and then says how to correct it.
//!
//! A hypervisor that pauses the vCPUs (qemu's `stop`, a host that sleeps) stops the guest's
//! clock with them, and nothing in the guest knows how long it was away; a TCG guest's clock
//! also starts up to a second off (the RTC counts whole seconds). The host measures the offset
//! the way NTP does, from one round trip: it notes its own time, asks for the guest's
//! ([`Request::Read`]), and takes the middle of the round trip as the moment the guest read its
//! clock; the error is at most half the round trip (a few milliseconds over the channel).
//! Then it asks the guest to [`Request::Step`] (set the clock at once, after a resume) or to
//! [`Request::Slew`] (let the kernel run the clock a little faster or slower until the offset
//! is gone, as it must while programs run).
//!
//! Lines of text: `read`, `step NANOS`, `slew NANOS` (signed: what to add to the guest's clock)
//! from the host; the guest's clock as `SECONDS.NANOS`, then `ok` or `error WHY`.

/// The service of a clock stream.
pub const SERVICE: &str = "clock";

/// What the host asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// The guest's CLOCK_REALTIME, now.
    Read,
    /// Add this many nanoseconds to the guest's clock at once.
    Step(i64),
    /// Run the guest's clock faster (or slower) until it has gained this many nanoseconds.
    Slew(i64),
}

impl Request {
    pub fn line(self) -> String {
        match self {
            Request::Read => "read\n".into(),
            Request::Step(ns) => format!("step {ns}\n"),
            Request::Slew(ns) => format!("slew {ns}\n"),
        }
    }

    pub fn parse(line: &str) -> Option<Request> {
        let mut words = line.split_whitespace();
        let request = match (words.next()?, words.next()) {
            ("read", None) => Request::Read,
            ("step", Some(ns)) => Request::Step(ns.parse().ok()?),
            ("slew", Some(ns)) => Request::Slew(ns.parse().ok()?),
            _ => return None,
        };
        words.next().is_none().then_some(request)
    }
}

/// A time since the epoch as the guest writes it: `SECONDS.NANOS`.
pub fn format_time(nanos: i128) -> String {
    let (seconds, rest) = (nanos.div_euclid(1_000_000_000), nanos.rem_euclid(1_000_000_000));
    format!("{seconds}.{rest:09}")
}

/// Nanoseconds since the epoch from [`format_time`]'s text.
pub fn parse_time(text: &str) -> Option<i128> {
    let (seconds, nanos) = text.trim().split_once('.')?;
    if nanos.len() != 9 || !nanos.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some(seconds.parse::<i128>().ok()? * 1_000_000_000 + nanos.parse::<i128>().ok()?)
}

/// The guest clock's offset from the host's, from one round trip: the host's time when it
/// asked and when the answer came, and the guest's reading in between. Positive: the guest is
/// behind (add it to the guest's clock).
pub fn offset(host_sent: i128, guest: i128, host_received: i128) -> i128 {
    host_sent + (host_received - host_sent) / 2 - guest
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_and_nothing_else_parses() {
        for request in [Request::Read, Request::Step(-33_000_000_001), Request::Slew(42)] {
            assert_eq!(Request::parse(&request.line()), Some(request));
        }
        for bad in ["", "read now", "step", "step 1.5", "slew x", "jump 3", "step 1 2"] {
            assert_eq!(Request::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn times_round_trip_including_before_the_epoch() {
        for nanos in [0, 1, 1_796_684_107_900_808_420, -1, -1_500_000_000] {
            assert_eq!(parse_time(&format_time(nanos)), Some(nanos), "{nanos}");
        }
        assert_eq!(format_time(1_500_000_000), "1.500000000");
        for bad in ["", "12", "12.5", "x.000000000", "1.00000000a"] {
            assert_eq!(parse_time(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn the_offset_is_taken_at_the_middle_of_the_round_trip() {
        // The guest read 100 while the host went from 1000 to 1010: it is 905 behind.
        assert_eq!(offset(1000, 100, 1010), 905);
        assert_eq!(offset(1000, 2005, 1010), -1000);
    }
}
