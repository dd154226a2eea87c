//! `cairn shell`: a process in the VM through the running control plane.

use anyhow::bail;
use cairn::up::status::{Status, VmState};

/// Runs the session and exits with the guest process's code.
pub fn run(tty: Option<bool>, argv: Vec<String>) -> anyhow::Result<()> {
    let home = cairn::home::cairn_home()?;
    let run = cairn::up::run_dir(&home);
    if cairn::up::instance::running(&run.pid()).is_none() {
        bail!("cairn up is not running, so neither is the VM; start it with `cairn up --detach`");
    }
    let status = Status::load(&run.status()).unwrap_or_default();
    match status.vm {
        VmState::Stopped => bail!("the VM is stopped; `cairn vm start` starts it"),
        // auto-pause's sleep ends with the session's connection.
        VmState::Paused if status.paused.as_ref().is_some_and(|p| p.idle) => {}
        VmState::Paused => bail!("the VM is paused; `cairn vm resume` runs it again"),
        _ => {}
    }
    // A VM on its way up answers once its agent is there.
    let code = cairn::shell::run(&run.shell(), cairn::shell::Options { argv, tty })?;
    std::process::exit(code)
}
