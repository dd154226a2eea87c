//! cairn's NAT on its own, for the network benchmark (tests/bench/net.sh): it dials the
//! `-netdev stream` socket a QEMU listens on and runs until interrupted, then prints its
//! counters. `cargo run --release --example nat -- /path/to/net.sock`

use std::path::PathBuf;

fn main() -> anyhow::Result<()> {
    let path: PathBuf = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .ok_or_else(|| anyhow::anyhow!("usage: nat SOCKET (QEMU's -netdev stream path)"))?;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let nat = cairn::net::Nat::spawn(
            cairn::net::Config::default(),
            &tokio::runtime::Handle::current(),
        );
        let stats = nat.stats.clone();
        tokio::spawn(cairn::net::stream::follow(path, nat.to_nat, nat.from_nat));
        tokio::signal::ctrl_c().await?;
        eprintln!("{:?}", stats.snapshot());
        Ok(())
    })
}
