//! cairn's NAT on its own, for the network benchmark (tests/bench/net.sh): it dials the
//! `-netdev stream` socket a QEMU listens on and runs until interrupted, then prints its
//! counters. It runs the NAT as `cairn up` does, on a [`cairn::net::thread::NatThread`].
//! `cargo run --release --example nat -- /path/to/net.sock [MTU]`

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let path: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .ok_or_else(|| anyhow::anyhow!("usage: nat SOCKET [MTU] (QEMU's -netdev stream path)"))?;
    let mut config = cairn::net::Config::default();
    if let Some(mtu) = std::env::args().nth(2) {
        config.mtu = mtu.parse().map_err(|_| anyhow::anyhow!("MTU {mtu:?} is not a number"))?;
    }
    let thread = cairn::net::thread::NatThread::start()?;
    let nat = cairn::net::Nat::spawn(config, thread.handle());
    let stats = nat.stats.clone();
    thread.handle().spawn(cairn::net::stream::follow(path, nat.to_nat, nat.from_nat));
    // Signals on a runtime of their own, as the control plane's are elsewhere.
    let signals = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    signals.block_on(async {
        // A script's background job ignores SIGINT: SIGTERM ends it too.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result?,
            _ = term.recv() => {}
        }
        eprintln!("{:?}", stats.snapshot());
        anyhow::Ok(())
    })
}
