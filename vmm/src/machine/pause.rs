//! Pausing a running VM: every vCPU thread leaves KVM_RUN and waits, using no CPU, until the
//! VM is resumed or stopped. Devices and their threads keep their state and go on serving
//! (a guest that runs no instruction asks them for nothing).
//!
//! A vCPU is kicked out of KVM_RUN with a signal, and a kick that lands just before it enters
//! is lost, so [`crate::machine::Machine::pause`] kicks until every vCPU says it is parked.

use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use super::legacy::StopRequest;

/// Shared by the machine and its vCPU loops.
#[derive(Debug, Clone, Default)]
pub struct PauseGate(Arc<Gate>);

#[derive(Debug, Default)]
struct Gate {
    state: Mutex<State>,
    changed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    paused: bool,
    /// vCPUs waiting at the gate now.
    parked: usize,
}

impl PauseGate {
    fn state(&self) -> MutexGuard<'_, State> {
        self.0.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Called by a vCPU loop before each KVM_RUN: returns at once unless the VM is paused,
    /// else waits until it is resumed or `stop` is set.
    pub fn park_while_paused(&self, stop: &StopRequest) {
        let mut state = self.state();
        if !state.paused {
            return;
        }
        state.parked += 1;
        self.0.changed.notify_all();
        while state.paused && stop.get().is_none() {
            state = self.0.changed.wait(state).unwrap_or_else(PoisonError::into_inner);
        }
        state.parked -= 1;
    }

    /// Closes the gate: each vCPU parks the next time it comes out of KVM_RUN.
    pub fn close(&self) {
        self.state().paused = true;
    }

    /// Opens the gate: parked vCPUs run again (or see a stop and end).
    pub fn open(&self) {
        self.state().paused = false;
        self.0.changed.notify_all();
    }

    /// Wakes parked vCPUs without opening the gate, so that they see a stop request.
    pub fn wake(&self) {
        let _state = self.state();
        self.0.changed.notify_all();
    }

    pub fn is_closed(&self) -> bool {
        self.state().paused
    }

    /// How many vCPUs are parked.
    pub fn parked(&self) -> usize {
        self.state().parked
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn a_closed_gate_parks_until_opened_or_stopped() {
        let (gate, stop) = (PauseGate::default(), StopRequest::default());
        gate.park_while_paused(&stop);
        gate.close();
        let (g, s) = (gate.clone(), stop.clone());
        let parked = std::thread::spawn(move || g.park_while_paused(&s));
        let deadline = Instant::now() + Duration::from_secs(5);
        while gate.parked() != 1 {
            assert!(Instant::now() < deadline, "the vCPU never parked");
            std::thread::sleep(Duration::from_millis(1));
        }
        gate.open();
        parked.join().expect("released by open");
        assert_eq!(gate.parked(), 0);

        gate.close();
        let (g, s) = (gate.clone(), stop.clone());
        let parked = std::thread::spawn(move || g.park_while_paused(&s));
        while gate.parked() != 1 {
            std::thread::sleep(Duration::from_millis(1));
        }
        stop.set(crate::machine::Exit::Stopped);
        gate.wake();
        parked.join().expect("released by the stop");
        assert!(gate.is_closed());
    }
}
