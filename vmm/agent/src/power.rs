//! Poweroff and reboot requests. The control plane asks with Ctrl-Alt-Del (qemu's `send-key`),
//! which the kernel turns into SIGINT for PID 1, and it means power off here. busybox's
//! `reboot`, `halt` and `poweroff` signal init with SIGTERM, SIGUSR1 and SIGUSR2, and those are
//! honoured too. A thread waits for them with sigwait: the main
//! thread spends its life in a 9P read that only fatal signals could interrupt.

use std::time::Duration;

use super::say;

fn signals() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in [libc::SIGINT, libc::SIGTERM, libc::SIGUSR1, libc::SIGUSR2] {
            libc::sigaddset(&mut set, signal);
        }
        set
    }
}

/// Blocks the request signals in every thread (before any is spawned) and answers them on a
/// thread of their own.
pub fn watch_signals() {
    // Ctrl-Alt-Del becomes SIGINT for PID 1 instead of an immediate restart by the kernel.
    // SAFETY: reboot(2) with a command that only changes that setting.
    unsafe {
        libc::reboot(libc::RB_DISABLE_CAD);
    }
    let set = signals();
    // SAFETY: `set` is initialised; blocking signals in the calling thread, inherited by the
    // threads it starts.
    unsafe {
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    let spawned = std::thread::Builder::new().name("power".into()).spawn(move || loop {
        let mut signal = 0;
        // SAFETY: `set` is initialised and `signal` is a valid out-pointer.
        if unsafe { libc::sigwait(&set, &mut signal) } != 0 {
            continue;
        }
        let reboot = signal == libc::SIGTERM;
        say(if reboot { "rebooting" } else { "powering off" });
        off(if reboot { libc::RB_AUTOBOOT } else { libc::RB_POWER_OFF });
    });
    if let Err(e) = spawned {
        say(&format!("cannot watch for poweroff requests: {e}"));
    }
}

/// Makes `command`'s process start with no signal blocked: it inherits the agent's mask, in
/// which the request signals wait for the power thread, and udhcpc (renew on SIGUSR1) or a
/// daemon would never see them.
pub fn default_signals(command: &mut std::process::Command) {
    use std::os::unix::process::CommandExt;
    let set = signals();
    // SAFETY: the closure runs between fork and exec and only calls pthread_sigmask, which
    // is async-signal-safe, on a set copied in before the fork.
    unsafe {
        command.pre_exec(move || {
            libc::pthread_sigmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            Ok(())
        });
    }
}

/// Syncs, unmounts /Database (lazily: a 9P read may still be blocked on it) and powers off or
/// reboots.
pub fn off(how: libc::c_int) -> ! {
    // The host gets back what the guest freed on the data disk since the last trim.
    let _ = super::disk::trim();
    // SAFETY: sync and reboot; reboot does not return on success.
    unsafe {
        libc::sync();
        super::boot::unmount_database();
        libc::sync();
        libc::reboot(how);
    }
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}
