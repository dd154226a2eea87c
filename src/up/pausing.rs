//! Pausing the VM: by `cairn vm pause`, or by auto-pause when no container has run for the
//! `auto-pause` key's minutes (Docker Desktop's Resource Saver). A paused VM keeps its state
//! and uses no CPU; the control plane goes on serving and plans nothing until it resumes.
//!
//! Who paused it decides what a client gets meanwhile. Paused by the user, the docker socket
//! answers for the VM (the engine API's own error format) and `cairn shell` is refused: the
//! user said to stop. Paused for idleness, the first connection to either wakes it, and is
//! then served like any other: nobody has to know it slept.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::events::Event;
use super::status::{PauseInfo, VmState};
use super::Controller;
use crate::Error;

/// How long `cairn vm resume` waits for the guest's clock to be set.
const CLOCK_ON_RESUME: Duration = Duration::from_secs(3);

/// Whether the VM is paused, and by whom.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Paused {
    No,
    /// `cairn vm pause`.
    ByUser,
    /// auto-pause: no container ran for a while.
    Idle,
}

/// [`Paused`], shared with the sockets' listeners.
#[derive(Debug, Clone, Default)]
pub struct PauseFlag(Arc<AtomicU8>);

impl PauseFlag {
    pub fn get(&self) -> Paused {
        match self.0.load(Ordering::Relaxed) {
            1 => Paused::ByUser,
            2 => Paused::Idle,
            _ => Paused::No,
        }
    }

    fn set(&self, paused: Paused) {
        let value = match paused {
            Paused::No => 0,
            Paused::ByUser => 1,
            Paused::Idle => 2,
        };
        self.0.store(value, Ordering::Relaxed);
    }
}

/// The gate of a socket that reaches the guest (see [`crate::channel::Gate`]): while the user
/// has the VM paused, `refusal` answers; while it sleeps for idleness, the loop is woken and
/// the connection goes on (it waits for the guest like any other).
pub fn gate(flag: PauseFlag, refusal: Vec<u8>, events: Sender<Event>) -> crate::channel::Gate {
    Arc::new(move || match flag.get() {
        Paused::No => None,
        Paused::ByUser => Some(refusal.clone()),
        Paused::Idle => {
            let _ = events.send(Event::Wake);
            None
        }
    })
}

impl Controller {
    pub(super) fn is_paused(&self) -> bool {
        self.paused.get() != Paused::No
    }

    /// The VM is not paused (any more): it started, stopped or ended.
    pub(super) fn forget_pause(&mut self) {
        self.paused.set(Paused::No);
        self.status.paused = None;
        self.idle_since = None;
    }

    /// A VM adopted with its vCPUs stopped: whoever stopped them, only a user resumes it.
    pub(super) fn adopted_paused(&mut self) {
        self.paused.set(Paused::ByUser);
        self.clock.paused();
        self.status.vm = VmState::Paused;
        self.status.paused = Some(PauseInfo { idle: false, why: PAUSED_BY_USER.into() });
    }

    /// `cairn vm pause` (or auto-pause): stops the vCPUs.
    pub(super) fn pause(
        &mut self,
        by: Paused,
        progress: &mut dyn FnMut(&str),
    ) -> Result<(), Error> {
        let Some(vm) = &self.vm else { return Err(Error::NotRunning("paused")) };
        if self.is_paused() {
            // A user's pause outranks idleness: the next connection must not wake it.
            if by == Paused::ByUser {
                self.paused.set(Paused::ByUser);
                self.status.paused = Some(PauseInfo { idle: false, why: PAUSED_BY_USER.into() });
            }
            return Ok(());
        }
        vm.pause(true)?;
        self.paused.set(by);
        self.clock.paused();
        self.status.vm = VmState::Paused;
        let why = match by {
            Paused::Idle => format!(
                "auto-pause: no container ran for {} (a docker command or `cairn shell` resumes it)",
                minutes(self.auto_pause.unwrap_or_default())
            ),
            _ => PAUSED_BY_USER.into(),
        };
        progress(&format!("paused the VM ({why})"));
        self.status.paused = Some(PauseInfo { idle: by == Paused::Idle, why });
        Ok(())
    }

    /// `cairn vm resume` (or a client that woke an idle VM): the vCPUs run again, the guest's
    /// clock is stepped to the host's, and what was committed meanwhile is planned.
    pub(super) fn resume(&mut self, progress: &mut dyn FnMut(&str)) -> Result<(), Error> {
        let Some(vm) = &self.vm else { return Err(Error::NotRunning("resumed")) };
        let was = self.paused.get();
        if was == Paused::No {
            return Ok(());
        }
        vm.pause(false)?;
        self.forget_pause();
        // Idle again from now: it was just asked for.
        self.idle_since = (self.running_containers == Some(0)).then(Instant::now);
        // The guest's clock is set before `cairn vm resume` returns: nobody reads a time from
        // before the pause. A guest that does not answer in time is corrected when it does.
        let _ = self.clock.resumed().recv_timeout(CLOCK_ON_RESUME);
        self.status.vm = if self.report.is_some() { VmState::Running } else { VmState::Booting };
        progress(match was {
            Paused::Idle => "resumed the VM (a client came)",
            _ => "resumed the VM (cairn vm resume)",
        });
        self.plan_if_quiet(progress)?;
        Ok(())
    }

    /// A client connected to a socket of an idle-paused VM.
    pub(super) fn on_wake(&mut self, progress: &mut dyn FnMut(&str)) -> Result<bool, Error> {
        if self.paused.get() != Paused::Idle {
            return Ok(false);
        }
        self.resume(progress)?;
        Ok(true)
    }

    /// How many containers run now (dockerd said so).
    pub(super) fn on_containers(&mut self, running: usize) -> bool {
        let before = self.running_containers;
        self.running_containers = Some(running);
        match (running, self.idle_since) {
            (0, None) => self.idle_since = Some(Instant::now()),
            (0, Some(_)) => {}
            (_, _) => self.idle_since = None,
        }
        before != self.running_containers
    }

    /// master's `auto-pause` (minutes; 0 or absent: never).
    pub(super) fn read_auto_pause(&mut self, rev: &str) -> Result<(), Error> {
        let raw = self.db.read(rev, "auto-pause")?.unwrap_or_default();
        let minutes: u64 = String::from_utf8_lossy(&raw).trim().parse().unwrap_or(0);
        self.auto_pause = (minutes > 0).then(|| Duration::from_secs(minutes * 60));
        Ok(())
    }

    /// When auto-pause falls due, if it will.
    pub(super) fn idle_deadline(&self) -> Option<Instant> {
        let running = self.vm.is_some() && self.status.vm == VmState::Running;
        match (self.auto_pause, self.idle_since) {
            (Some(after), Some(since)) if running && !self.is_paused() => Some(since + after),
            _ => None,
        }
    }

    /// Pauses the VM if it has been idle for long enough.
    pub(super) fn pause_if_idle(&mut self, progress: &mut dyn FnMut(&str)) -> Result<bool, Error> {
        match self.idle_deadline() {
            Some(due) if Instant::now() >= due => {
                self.pause(Paused::Idle, progress)?;
                Ok(true)
            }
            _ => Ok(false),
        }
    }
}

const PAUSED_BY_USER: &str = "cairn vm pause (`cairn vm resume` runs it again)";

fn minutes(d: Duration) -> String {
    match d.as_secs() / 60 {
        1 => "a minute".into(),
        n => format!("{n} minutes"),
    }
}
