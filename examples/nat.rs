//! cairn's NAT on its own, for the network benchmark (tests/bench/net.sh): it dials the
//! `-netdev stream` socket a QEMU listens on and runs until interrupted, then prints its
//! counters. `cargo run --release --example nat -- /path/to/net.sock [MTU]`

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
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let nat = cairn::net::Nat::spawn(config, &tokio::runtime::Handle::current());
        let stats = nat.stats.clone();
        tokio::spawn(cairn::net::stream::follow(path, nat.to_nat, nat.from_nat));
        // A script's background job ignores SIGINT: SIGTERM ends it too.
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            result = tokio::signal::ctrl_c() => result?,
            _ = term.recv() => {}
        }
        eprintln!("{:?}", stats.snapshot());
        Ok(())
    })
}
