//! `cairn serve`: the 9P server on its own.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::Ctx;

pub fn run(ctx: &Ctx, socket: Option<PathBuf>, tcp: Option<SocketAddr>) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CAIRN_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none();
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .init();
    let socket = match socket {
        Some(path) => path,
        None => cairn::home::cairn_home()?.join("9p.sock"),
    };
    if let Some(dir) = socket.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let db = ctx.open()?;
    cairn::serve::run(db, cairn::serve::Listeners { socket: Some(socket), tcp })?;
    Ok(())
}
