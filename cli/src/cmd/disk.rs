//! `cairn disk`: the engine's data disk (its size, what the sparse file takes on the host,
//! what the guest uses), and `cairn disk wipe`, the one command that deletes it.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::bail;
use cairn::up::status::{alive, Status};
use serde_json::json;

use super::Ctx;
use crate::exit::Usage;
use crate::output::Mode;

pub fn show(ctx: &Ctx) -> anyhow::Result<()> {
    let home = cairn::home::cairn_home()?;
    let path = cairn::vm::disk::path(&home);
    let host = cairn::vm::disk::host_view(&path);
    let status = Status::load(&cairn::up::run_dir(&home).status()).filter(|s| alive(s.pid));
    let guest = status.and_then(|s| s.guest);
    let setting = ctx.open_read()?.read(cairn::db::CONFIG_BRANCH, "disk")?.unwrap_or_default();
    let setting = String::from_utf8_lossy(&setting).trim().to_owned();
    if ctx.mode == Mode::Json {
        return crate::output::print_json(&json!({
            "path": path.display().to_string(),
            "setting_mib": setting.parse::<u64>().ok(),
            "size_bytes": host.map(|h| h.size_bytes),
            "allocated_bytes": host.map(|h| h.allocated_bytes),
            "guest": guest.as_ref().map(|g| json!({
                "state": g.disk,
                "filesystem_bytes": g.disk_size_bytes,
                "used_bytes": g.disk_used_bytes,
            })),
        }));
    }
    let mib = |b: u64| format!("{} MiB", b >> 20);
    println!("disk:        {}", path.display());
    println!("setting:     {setting} MiB");
    match host {
        Some(h) => println!(
            "on the host: {} ({} allocated: the file is sparse)",
            mib(h.size_bytes),
            mib(h.allocated_bytes)
        ),
        None => println!("on the host: not made yet (the first `cairn up` makes it)"),
    }
    match guest {
        Some(g) if g.disk_size_bytes > 0 => println!(
            "in the guest: {} of {} used; {}",
            mib(g.disk_used_bytes),
            mib(g.disk_size_bytes),
            g.disk
        ),
        Some(g) if !g.disk.is_empty() => println!("in the guest: {}", g.disk),
        _ => println!("in the guest: the VM is not running"),
    }
    Ok(())
}

/// Deletes the disk and makes a new, empty one: stops the VM first if it runs, and starts it
/// again after (the guest formats the new disk).
pub fn wipe(ctx: &Ctx, yes: bool) -> anyhow::Result<()> {
    let home = cairn::home::cairn_home()?;
    let path = cairn::vm::disk::path(&home);
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(Usage("cairn disk wipe deletes every image, container and volume of the engine: give --yes to do it without a terminal".into()).into());
        }
        eprint!(
            "This deletes every image, container and volume of the engine ({}).\nType 'wipe' to go on: ",
            path.display()
        );
        std::io::stderr().flush()?;
        let mut answer = String::new();
        std::io::stdin().lock().read_line(&mut answer)?;
        if answer.trim() != "wipe" {
            bail!("not wiped");
        }
    }
    let run = cairn::up::run_dir(&home);
    let running = cairn::up::instance::running(&run.pid()).is_some();
    let vm_up = running && Status::load(&run.status()).is_some_and(|s| s.vm_pid.is_some());
    if vm_up {
        super::up::vm(crate::args::VmAction::Stop)?;
    }
    let setting = ctx.open_read()?.read(cairn::db::CONFIG_BRANCH, "disk")?.unwrap_or_default();
    let mib: u64 = String::from_utf8_lossy(&setting).trim().parse().unwrap_or(64 << 10);
    cairn::vm::disk::wipe(&path, mib)?;
    eprintln!("cairn disk wipe: {} is empty again ({mib} MiB)", path.display());
    if vm_up {
        super::up::vm(crate::args::VmAction::Start)?;
    }
    Ok(())
}
