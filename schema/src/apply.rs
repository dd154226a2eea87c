//! Apply classes: what the control plane must do to the VM when a key changes.

use serde::{Deserialize, Serialize};

/// How disruptive applying a change is, from least to most. The reconciler takes the maximum over
/// the keys a commit changes, so the order of the variants is part of the contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ApplyClass {
    /// Nothing to do: bookkeeping such as the schema version.
    None,
    /// The control plane applies it at once; the guest is not touched (auto-pause).
    HostLive,
    /// The guest agent applies it live (hostname, sysctl).
    GuestLive,
    /// The network stack reconfigures live, without touching the guest (port forwarding, DNS).
    NetworkLive,
    /// dockerd re-reads its configuration on SIGHUP.
    DaemonReload,
    /// dockerd must be restarted.
    DaemonRestart,
    /// The guest network must be reconfigured (new lease or interface).
    Network,
    /// The data disk grows: live on qemu (the disk is resized under the running guest, which
    /// grows its filesystem), at the next boot on the embedded VMM.
    DiskGrow,
    /// The VM must be rebooted.
    Reboot,
}

impl ApplyClass {
    /// The name used in output and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            ApplyClass::None => "none",
            ApplyClass::HostLive => "host-live",
            ApplyClass::GuestLive => "guest-live",
            ApplyClass::NetworkLive => "network-live",
            ApplyClass::DaemonReload => "daemon-reload",
            ApplyClass::DaemonRestart => "daemon-restart",
            ApplyClass::Network => "network",
            ApplyClass::DiskGrow => "disk-grow",
            ApplyClass::Reboot => "reboot",
        }
    }
}

impl std::fmt::Display for ApplyClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::ApplyClass::*;

    #[test]
    fn order_is_least_to_most_disruptive() {
        let mut classes = vec![
            Reboot,
            GuestLive,
            Network,
            DiskGrow,
            DaemonReload,
            None,
            DaemonRestart,
            NetworkLive,
            HostLive,
        ];
        classes.sort();
        assert_eq!(
            classes,
            vec![
                None,
                HostLive,
                GuestLive,
                NetworkLive,
                DaemonReload,
                DaemonRestart,
                Network,
                DiskGrow,
                Reboot
            ]
        );
    }
}
