//! The few process-level system calls the command line needs, kept here so that the `cairn`
//! binary's crate has no unsafe code of its own.

use std::os::unix::process::CommandExt;

/// Restores SIGPIPE's default: a command whose reader goes away (`cairn list | head`) ends
/// quietly, as Unix tools do. Call it before any thread is started.
pub fn default_sigpipe() {
    // SAFETY: setting a signal's disposition to its default; no handler of ours is replaced.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Makes `command`'s process leave this session (setsid), so that it outlives the terminal.
pub fn detach(command: &mut std::process::Command) {
    // SAFETY: the closure runs between fork and exec and only calls setsid(2), which is
    // async-signal-safe.
    unsafe {
        command.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
}

/// Sends SIGTERM to `pid` (a `cairn up` known by the lock it holds).
pub fn terminate(pid: u32) -> std::io::Result<()> {
    let pid = libc::pid_t::try_from(pid)
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidInput))?;
    // SAFETY: kill(2) with a positive pid and a constant signal.
    if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}
