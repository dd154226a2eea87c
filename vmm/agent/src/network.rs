//! The guest's network: a DHCP lease from the gateway (busybox's udhcpc, which stays in the
//! background and renews), or the static address of the kernel command line when no DHCP
//! server answers. The MTU follows `net/mtu` live: the agent asks udhcpc to renew, and the
//! lease, which the control plane's NAT now hands out with the new MTU, sets it.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::{say, Error};
use crate::report::Outcome;

/// udhcpc's hook: it runs with `deconfig`, `bound`, `renew` or `nak` and the lease in its
/// environment (`ip`, `mask` as a prefix length, `router`, `dns`, `mtu`, `lease`).
const SCRIPT: &str = r#"#!/bin/busybox sh
PATH=/bin:/sbin
case "$1" in
deconfig)
  ip addr flush dev "$interface"
  ip link set "$interface" up
  ;;
bound|renew)
  [ -n "$mtu" ] && ip link set dev "$interface" mtu "$mtu"
  [ "$1" = bound ] && ip addr flush dev "$interface"
  ip addr add "$ip/${mask:-24}" dev "$interface" 2>/dev/null
  [ -n "$router" ] && ip route replace default via "${router%% *}" dev "$interface"
  : > /etc/resolv.conf
  for server in $dns; do echo "nameserver $server" >> /etc/resolv.conf; done
  echo "$1 ip=$ip/${mask:-24} router=$router dns=$dns mtu=$mtu lease=$lease" > /run/cairn-lease
  ;;
esac
exit 0
"#;

const SCRIPT_PATH: &str = "/run/udhcpc.script";
const PID_FILE: &str = "/run/udhcpc.pid";
const INTERFACE: &str = "eth0";

/// Runs a busybox applet to completion.
fn busybox(args: &[&str]) -> Result<(), Error> {
    let mut command = Command::new("/bin/busybox");
    command.args(args);
    super::power::default_signals(&mut command);
    let status = super::children::run(&mut command)
        .map_err(|e| Error::Boot(format!("running busybox {}: {e}", args.join(" "))))?;
    if status.success() {
        Ok(())
    } else {
        Err(Error::Boot(format!("busybox {} failed ({status})", args.join(" "))))
    }
}

/// Brings up `lo` and `eth0`: by DHCP, else with `address` and `gateway`.
pub fn configure(address: &str, gateway: &str) -> Result<(), Error> {
    busybox(&["ip", "link", "set", "lo", "up"])?;
    match dhcp() {
        Ok(()) => {
            let lease = std::fs::read_to_string("/run/cairn-lease").unwrap_or_default();
            say(&format!("network: DHCP lease {}", lease.trim()));
            Ok(())
        }
        Err(e) => {
            say(&format!("network: {e}; using {address} via {gateway}"));
            busybox(&["ip", "link", "set", INTERFACE, "up"])?;
            busybox(&["ip", "addr", "add", address, "dev", INTERFACE])?;
            busybox(&["ip", "route", "add", "default", "via", gateway])
        }
    }
}

/// Asks for a lease; udhcpc returns once it has one and stays in the background to renew it.
fn dhcp() -> Result<(), Error> {
    std::fs::write(SCRIPT_PATH, SCRIPT)
        .and_then(|()| {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(SCRIPT_PATH, std::fs::Permissions::from_mode(0o755))
        })
        .map_err(|e| Error::Boot(format!("writing {SCRIPT_PATH}: {e}")))?;
    // -n: give up (and let the static address stand in) after -t tries -T seconds apart.
    busybox(&[
        "udhcpc",
        "-i",
        INTERFACE,
        "-s",
        SCRIPT_PATH,
        "-p",
        PID_FILE,
        "-n",
        "-t",
        "8",
        "-T",
        "1",
        "-O",
        "mtu",
    ])
}

/// The MTU `eth0` has now.
fn current_mtu() -> Option<u32> {
    std::fs::read_to_string(format!("/sys/class/net/{INTERFACE}/mtu")).ok()?.trim().parse().ok()
}

/// Makes `eth0`'s MTU the one `net/mtu` asks for: a DHCP renew first (the lease carries it
/// once the control plane's NAT has the new value, which can take a moment after the commit),
/// and where no lease brings it (qemu's own network does not send the option), directly.
pub fn mtu(ro: &Path) -> Outcome {
    let wanted = match std::fs::read_to_string(ro.join("net/mtu")) {
        Ok(text) => match text.trim().parse::<u32>() {
            Ok(mtu) => mtu,
            Err(_) => return Outcome::Failed(format!("net/mtu {:?} is not a number", text.trim())),
        },
        Err(e) => return Outcome::Failed(format!("reading net/mtu from /Database: {e}")),
    };
    if current_mtu() == Some(wanted) {
        return Outcome::Applied;
    }
    if let Some(pid) = std::fs::read_to_string(PID_FILE).ok().and_then(|p| p.trim().parse().ok()) {
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            // SAFETY: kill(2) with a pid read from udhcpc's pid file; SIGUSR1 asks it to renew.
            unsafe {
                libc::kill(pid, libc::SIGUSR1);
            }
            std::thread::sleep(Duration::from_millis(500));
            if current_mtu() == Some(wanted) {
                return Outcome::Applied;
            }
        }
    }
    let wanted_text = wanted.to_string();
    match busybox(&["ip", "link", "set", "dev", INTERFACE, "mtu", &wanted_text]) {
        Ok(()) => Outcome::Applied,
        Err(e) => Outcome::Failed(format!("{INTERFACE} mtu {wanted}: {e}")),
    }
}
