//! The guest's clock, kept on the host's through the agent's clock stream (cairn-channel's
//! [`cairn_channel::clock`]).
//!
//! Nothing in the guest can know how long it was away when its vCPUs stopped (`cairn vm
//! pause`, qemu's `stop`, a host that slept): a TCG guest stopped 30 s came back 33 s behind and
//! stayed there. KVM's ptp_kvm would give chrony a reference clock, but only under KVM, and
//! these hosts run TCG; so the control plane, which has the host's clock and the channel, does
//! what QEMU's guest agent `guest-set-time` does for libvirt, and a little more:
//! - when a session starts (a boot: the guest read whole seconds from the RTC; an adoption),
//!   after `cairn vm resume`, and when the host woke from a suspend (CLOCK_BOOTTIME ran ahead
//!   of CLOCK_MONOTONIC), the guest's clock is stepped to the host's;
//! - every minute in between it is measured and slewed (adjtime: at most 0.5 ms a second, so
//!   time never jumps under running programs), which also takes out the drift of a guest
//!   kernel's TSC calibration.
//!
//! One task on the control plane's runtime does it all; each result goes to the control loop
//! for the status.

use std::sync::mpsc::Sender;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use cairn_channel::clock::{self, Request};
use cairn_channel::{Service, Session};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

use super::events::Event;

/// How often the clock is measured and slewed while the VM runs.
const PERIOD: Duration = Duration::from_secs(60);
/// How often the host's own suspend is looked for.
const WAKE_CHECK: Duration = Duration::from_secs(2);
/// CLOCK_BOOTTIME ahead of CLOCK_MONOTONIC by more than this since the last look: the host slept.
const SLEPT: Duration = Duration::from_secs(1);
/// Offsets below this are left alone (the measurement is good to half a round trip).
const NEGLIGIBLE_NS: i128 = 1_000_000;
/// Off by this much after a pause or a boot, the clock is stepped rather than slewed.
const STEP_AT_LEAST_NS: i128 = 20_000_000;
/// Off by this much in a periodic check, the VM must have been stopped behind cairn's back
/// (slewing a second at 0.5 ms/s would take half an hour): stepped too.
const STEP_BEYOND_NS: i128 = 1_000_000_000;
/// Round trips per measurement: the shortest one is kept, as NTP does.
const SAMPLES: usize = 3;
/// A guest that does not answer within this is left for the next time.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// Why the clock was checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Reason {
    /// A session with the guest started (a boot, or an adopted VM).
    Connected,
    /// `cairn vm resume`.
    Resumed,
    /// The host came back from a suspend.
    HostWoke,
    /// The periodic check.
    Periodic,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Connected => "connected",
            Reason::Resumed => "resumed",
            Reason::HostWoke => "the host woke from a suspend",
            Reason::Periodic => "periodic",
        }
    }
}

/// What was done to the guest's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    None,
    Stepped,
    Slewed,
}

/// The last check of the guest's clock, for the status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockStatus {
    /// The guest's clock minus the host's when measured, in microseconds (negative: behind).
    pub offset_us: i64,
    /// The round trip the measurement came from.
    pub round_trip_us: u64,
    pub action: Action,
    pub reason: Reason,
    /// When, in seconds since the epoch.
    pub at: u64,
    /// Why the check failed, if it did.
    #[serde(default)]
    pub error: Option<String>,
}

/// What the control loop tells the keeper.
#[derive(Debug)]
enum Command {
    Paused,
    /// And who waits for the clock to be set.
    Resumed(std::sync::mpsc::Sender<()>),
}

/// The task that keeps the clock; ends with the control plane.
#[derive(Debug)]
pub struct Keeper {
    commands: mpsc::UnboundedSender<Command>,
}

impl Keeper {
    /// Starts keeping the clock of the guest of whichever session `sessions` has.
    pub fn start(
        runtime: &tokio::runtime::Handle,
        sessions: watch::Receiver<Option<Session>>,
        events: Sender<Event>,
    ) -> Keeper {
        let (commands, inbox) = mpsc::unbounded_channel();
        runtime.spawn(keep(sessions, inbox, events));
        Keeper { commands }
    }

    /// The VM's vCPUs stopped: no checks until [`Keeper::resumed`].
    pub fn paused(&self) {
        let _ = self.commands.send(Command::Paused);
    }

    /// The VM runs again: its clock is stepped now. The receiver hears when it has been (or
    /// could not be): `cairn vm resume` returns with the guest's clock right.
    pub fn resumed(&self) -> std::sync::mpsc::Receiver<()> {
        let (done, waiter) = std::sync::mpsc::channel();
        let _ = self.commands.send(Command::Resumed(done));
        waiter
    }
}

async fn keep(
    mut sessions: watch::Receiver<Option<Session>>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: Sender<Event>,
) {
    let mut paused = false;
    let mut wake = WakeDetector::default();
    let mut ticks = tokio::time::interval(WAKE_CHECK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = Instant::now();
    loop {
        let mut waiting = None;
        let reason = tokio::select! {
            changed = sessions.changed() => {
                if changed.is_err() {
                    return;
                }
                let up = sessions.borrow_and_update().as_ref().is_some_and(|s| !s.is_closed());
                if !up || paused {
                    continue;
                }
                Reason::Connected
            }
            command = commands.recv() => match command {
                None => return,
                Some(Command::Paused) => {
                    paused = true;
                    continue;
                }
                Some(Command::Resumed(done)) => {
                    paused = false;
                    waiting = Some(done);
                    Reason::Resumed
                }
            },
            _ = ticks.tick() => {
                let slept = wake.slept(boot_minus_monotonic());
                if paused {
                    continue;
                }
                if slept {
                    Reason::HostWoke
                } else if last.elapsed() >= PERIOD {
                    Reason::Periodic
                } else {
                    continue;
                }
            }
        };
        let Some(session) = sessions.borrow().clone().filter(|s| !s.is_closed()) else { continue };
        last = Instant::now();
        let status = check(&session, reason).await;
        match &status.error {
            Some(e) => tracing::debug!(error = %e, reason = reason.as_str(), "the guest's clock"),
            None => tracing::debug!(?status, "the guest's clock"),
        }
        if events.send(Event::Clock(status)).is_err() {
            return;
        }
        if let Some(done) = waiting {
            let _ = done.send(());
        }
    }
}

/// Measures the guest's clock and corrects it as `reason` allows.
async fn check(session: &Session, reason: Reason) -> ClockStatus {
    let mut status = ClockStatus {
        offset_us: 0,
        round_trip_us: 0,
        action: Action::None,
        reason,
        at: SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()),
        error: None,
    };
    let work = async {
        let stream =
            session.open(&Service::new(clock::SERVICE, &[])).await.map_err(|e| e.to_string())?;
        let (from_guest, mut to_guest) = tokio::io::split(stream);
        let mut lines = tokio::io::BufReader::new(from_guest).lines();
        let mut ask = async |request: Request| -> Result<String, String> {
            to_guest.write_all(request.line().as_bytes()).await.map_err(|e| e.to_string())?;
            match lines.next_line().await {
                Ok(Some(line)) => Ok(line),
                Ok(None) => Err("the guest closed the clock stream".into()),
                Err(e) => Err(e.to_string()),
            }
        };
        let mut best: Option<(i128, i128)> = None;
        for _ in 0..SAMPLES {
            let sent = host_now();
            let answer = ask(Request::Read).await?;
            let received = host_now();
            let guest = clock::parse_time(&answer)
                .ok_or_else(|| format!("the guest answered {answer:?}"))?;
            let sample = (clock::offset(sent, guest, received), received - sent);
            if best.is_none_or(|(_, trip)| sample.1 < trip) {
                best = Some(sample);
            }
        }
        let (offset, trip) = best.ok_or("no sample")?;
        let action = correction(reason, offset);
        if let Some(request) = action {
            let answer = ask(request).await?;
            if answer != "ok" {
                return Err(format!("the guest could not set its clock: {answer}"));
            }
        }
        Ok::<_, String>((offset, trip, action))
    };
    match tokio::time::timeout(ANSWER_WITHIN, work).await {
        Ok(Ok((offset, trip, action))) => {
            // `offset` is what the guest lacked; the status says where the guest stood.
            status.offset_us = i64::try_from(-offset / 1000).unwrap_or(i64::MAX);
            status.round_trip_us = u64::try_from(trip / 1000).unwrap_or(u64::MAX);
            status.action = match action {
                None => Action::None,
                Some(Request::Step(_)) => Action::Stepped,
                Some(_) => Action::Slewed,
            };
        }
        Ok(Err(e)) => status.error = Some(e),
        Err(_) => status.error = Some(format!("no answer within {ANSWER_WITHIN:?}")),
    }
    status
}

/// What to do about an offset of `offset` ns (what the guest lacks) found for `reason`.
fn correction(reason: Reason, offset: i128) -> Option<Request> {
    let size = offset.abs();
    let nanos = i64::try_from(offset).unwrap_or(if offset < 0 { i64::MIN } else { i64::MAX });
    if size < NEGLIGIBLE_NS {
        return None;
    }
    let step = match reason {
        Reason::Periodic => size >= STEP_BEYOND_NS,
        _ => size >= STEP_AT_LEAST_NS,
    };
    Some(if step { Request::Step(nanos) } else { Request::Slew(nanos) })
}

/// The host's CLOCK_REALTIME in nanoseconds since the epoch.
fn host_now() -> i128 {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i128,
        Err(e) => -(e.duration().as_nanos() as i128),
    }
}

/// CLOCK_BOOTTIME minus CLOCK_MONOTONIC: grows only while the host is suspended.
fn boot_minus_monotonic() -> Duration {
    use rustix::time::{clock_gettime, ClockId};
    let as_duration = |t: rustix::time::Timespec| Duration::new(t.tv_sec as u64, t.tv_nsec as u32);
    as_duration(clock_gettime(ClockId::Boottime))
        .saturating_sub(as_duration(clock_gettime(ClockId::Monotonic)))
}

/// Tells a host suspend from the growth of CLOCK_BOOTTIME - CLOCK_MONOTONIC between looks.
#[derive(Debug, Default)]
struct WakeDetector {
    last: Option<Duration>,
}

impl WakeDetector {
    /// Whether the host slept since the last look.
    fn slept(&mut self, boot_minus_monotonic: Duration) -> bool {
        let before = self.last.replace(boot_minus_monotonic);
        before.is_some_and(|before| boot_minus_monotonic.saturating_sub(before) > SLEPT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn steps_after_a_pause_slews_while_running() {
        const MS: i64 = 1_000_000;
        let c = |reason, ms: i64| correction(reason, i128::from(ms * MS));
        assert_eq!(c(Reason::Resumed, 60_000), Some(Request::Step(60_000 * MS)));
        assert_eq!(c(Reason::Connected, -900), Some(Request::Step(-900 * MS)));
        assert_eq!(c(Reason::HostWoke, 3_600_000), Some(Request::Step(3_600_000 * MS)));
        assert_eq!(c(Reason::Resumed, 5), Some(Request::Slew(5 * MS)));
        assert_eq!(c(Reason::Periodic, 80), Some(Request::Slew(80 * MS)));
        assert_eq!(c(Reason::Periodic, -999), Some(Request::Slew(-999 * MS)));
        assert_eq!(c(Reason::Periodic, 2_000), Some(Request::Step(2_000 * MS)));
        assert_eq!(correction(Reason::Periodic, i128::from(MS / 2)), None);
    }

    #[test]
    fn a_host_suspend_is_boottime_running_ahead() {
        let mut wake = WakeDetector::default();
        let s = Duration::from_secs;
        assert!(!wake.slept(s(10)), "the first look has nothing to compare");
        assert!(!wake.slept(s(10) + Duration::from_millis(5)), "jitter");
        assert!(wake.slept(s(75)), "65 s asleep");
        assert!(!wake.slept(s(75)));
    }

    #[test]
    fn the_two_clocks_are_read() {
        // BOOTTIME is never behind MONOTONIC.
        let _ = boot_minus_monotonic();
        assert!(host_now() > 1_700_000_000 * 1_000_000_000);
    }
}
