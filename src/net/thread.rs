//! The thread the NAT runs on: a current-thread tokio runtime of its own.
//!
//! Every frame crosses from the stream task to the NAT's loop to a flow's host socket and
//! back; on a multi-threaded runtime each hop may wake another worker, and profiles of the
//! network benchmark showed a quarter of the NAT's time in those context switches. On one
//! thread the hops are plain task switches (measured side by side at MTU 1500: 1.46x slirp's
//! throughput on the multi-threaded runtime, about 1.6x on this one; see the README).

use std::sync::mpsc as std_mpsc;

use tokio::sync::oneshot;

/// A running NAT thread; stopped (its tasks dropped) when this is dropped.
#[derive(Debug)]
pub struct NatThread {
    handle: tokio::runtime::Handle,
    stop: Option<oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl NatThread {
    /// Starts the thread and its runtime.
    pub fn start() -> std::io::Result<NatThread> {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let (handle_tx, handle_rx) = std_mpsc::channel();
        let thread = std::thread::Builder::new().name("nat".into()).spawn(move || {
            let _ = handle_tx.send(runtime.handle().clone());
            // A current-thread runtime runs its tasks only inside block_on.
            runtime.block_on(async {
                let _ = stopped.await;
            });
        })?;
        let handle = handle_rx.recv().map_err(|_| std::io::Error::other("the NAT thread died"))?;
        Ok(NatThread { handle, stop: Some(stop), thread: Some(thread) })
    }

    /// Where the NAT, its transport and its flows are spawned.
    pub fn handle(&self) -> &tokio::runtime::Handle {
        &self.handle
    }
}

impl Drop for NatThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tasks_run_on_the_thread_until_it_is_dropped() {
        let thread = NatThread::start().expect("starts");
        let (tx, rx) = std_mpsc::channel();
        thread.handle().spawn(async move {
            let _ = tx.send(std::thread::current().name().map(str::to_owned));
        });
        let name = rx.recv_timeout(std::time::Duration::from_secs(5)).expect("the task ran");
        assert_eq!(name.as_deref(), Some("nat"));
        drop(thread);
    }
}
