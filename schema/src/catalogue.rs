//! The table of settings. The layout follows the 2016 Docker for Mac database so that its users
//! recognise it.

use crate::value::{Kind, Limit};
use crate::{ApplyClass, Error, Host};

/// One setting: what a user calls it, where it lives in the tree and how it behaves.
#[derive(Debug, Clone, Copy)]
pub struct Key {
    /// The friendly name users type (`memory`, `port-forwarding`).
    pub name: &'static str,
    /// The file holding the value, relative to the root of the tree.
    pub path: &'static str,
    /// The value's type, which decides parsing, validation and the canonical stored form.
    pub kind: Kind,
    /// The default, in the form a user would type it.
    pub default: Default,
    /// One line for tables.
    pub summary: &'static str,
    /// A paragraph for `cairn schema` and `list --json`.
    pub description: &'static str,
    /// Related keys shown with this one, pinata-style: `hypervisor = native (memory=2048, ncpu=2)`,
    /// and accepted after its value: `cairn set hypervisor qemu memory=4096`.
    pub options: &'static [&'static str],
    /// What the VM has to do when the value changes.
    pub apply: ApplyClass,
    /// Maintained by cairn; users cannot set it.
    pub internal: bool,
}

/// A key's default. Some defaults depend on the machine: a 2 GiB default on a 1 GiB host would
/// make the fresh database invalid.
#[derive(Debug, Clone, Copy)]
pub enum Default {
    /// The same everywhere.
    Text(&'static str),
    /// This many MiB, or the host's RAM if smaller.
    MemoryMib(u64),
    /// This many CPUs, or the host's cores if fewer.
    Cpus(u64),
    /// The schema version this cairn writes.
    SchemaVersion,
    /// The home directory of the user running cairn, and /tmp.
    HomeAndTmp,
}

impl Key {
    /// The default in the form a user types it.
    pub fn default_input(&self, host: &Host) -> String {
        match self.default {
            Default::Text(text) => text.to_owned(),
            Default::MemoryMib(mib) => mib.min(host.ram_mib).to_string(),
            Default::Cpus(n) => n.min(host.cores).max(1).to_string(),
            Default::SchemaVersion => crate::version::CURRENT_VERSION.to_string(),
            Default::HomeAndTmp => crate::shares::default_text(),
        }
    }

    /// The default as stored in the tree.
    pub fn default_bytes(&self, host: &Host) -> Vec<u8> {
        crate::value::normalize_default(self, &self.default_input(host), host)
    }
}

/// The least memory, in MiB, that the Docker engine's image boots in and runs a container with.
/// The guest's initramfs is unpacked into a RAM file system limited to half the guest's memory,
/// so below this the unpack runs out of space (mke2fs and the engine go missing) and the agent
/// cannot even write daemon.json. Measured 2026-12-03 on the image of the time (qemu, docker
/// flavour: `cairn up`, `docker import`, `docker run`): 512 and 640 failed so, 704 worked; 768
/// leaves room for the image to grow a little. Re-measure when the image changes.
pub const MEMORY_MIN_MIB: u64 = 768;

/// The foreign architectures the guest can run programs of, by Debian's names for them, each
/// through QEMU's user-mode emulator (`binfmt`).
pub const FOREIGN_ARCHITECTURES: &[&str] = &["arm64", "arm", "riscv64", "ppc64le", "s390x"];

/// Every setting of the current schema, in the order `list` shows them.
pub static KEYS: &[Key] = &[
    Key {
        name: "hostname",
        path: "etc/hostname",
        kind: Kind::Hostname,
        default: Default::Text("cairn"),
        summary: "The VM's host name.",
        description: "The host name of the VM, as the guest and its containers see it. An RFC 1123 \
            label: letters, digits and hyphens, at most 63 characters, not starting or ending \
            with a hyphen. Applied live by the guest agent.",
        options: &[],
        apply: ApplyClass::GuestLive,
        internal: false,
    },
    Key {
        name: "memory",
        path: "memory",
        kind: Kind::Int {
            min: Limit::ImageNeeds(MEMORY_MIN_MIB),
            max: Limit::HostRam,
            unit: "a size in MiB",
        },
        default: Default::MemoryMib(2048),
        summary: "Memory of the VM in MiB.",
        description: "The memory given to the VM, in MiB (suffixes M, MiB, G and GiB are accepted \
            and stored as MiB). At least 768 (the Docker engine's image needs it: its initramfs is unpacked into \
            memory) and at most the host's RAM. Changing it reboots the VM.",
        options: &[],
        apply: ApplyClass::Reboot,
        internal: false,
    },
    Key {
        name: "ncpu",
        path: "ncpu",
        kind: Kind::Int { min: Limit::Fixed(1), max: Limit::HostCores, unit: "a number of CPUs" },
        default: Default::Cpus(2),
        summary: "Virtual CPUs of the VM.",
        description: "The number of virtual CPUs, from 1 to the host's logical CPUs. Changing it \
            reboots the VM.",
        options: &[],
        apply: ApplyClass::Reboot,
        internal: false,
    },
    Key {
        name: "hypervisor",
        path: "hypervisor",
        kind: Kind::Choice(&["native", "qemu"]),
        default: Default::Text("native"),
        summary: "Which hypervisor runs the VM.",
        description: "native runs the VM in cairn's embedded KVM monitor; qemu runs \
            qemu-system-x86_64 as a child process (KVM where the host allows it, else TCG). \
            Where the native monitor cannot boot the guest on this host, cairn says why and uses \
            qemu. Changing it reboots the VM.",
        options: &["memory", "ncpu"],
        apply: ApplyClass::Reboot,
        internal: false,
    },
    Key {
        name: "network",
        path: "network",
        kind: Kind::Choice(&["nat", "hostnet", "none"]),
        default: Default::Text("nat"),
        summary: "How the VM reaches the network.",
        description: "nat: cairn's user-space NAT turns the guest's traffic into ordinary host \
            sockets, so it works through VPNs and firewalls; none: the same NAT, but the guest \
            reaches only the gateway (/Database, the host's services, forwarded ports), not the \
            outside world; hostnet: the hypervisor's own user network (qemu's slirp), which \
            takes the IPv4 port forwards at boot (qemu's hostfwd). Between nat and none the \
            switch is live; to or from hostnet the VM reboots.",
        options: &["mtu", "dns", "port-forwarding", "external-bind"],
        apply: ApplyClass::Network,
        internal: false,
    },
    Key {
        name: "port-forwarding",
        path: "net/port-forwarding",
        kind: Kind::PortForwards,
        default: Default::Text(""),
        summary: "Host ports forwarded into the VM.",
        description: "A list of forwards [ADDRESS:]HOSTPORT:GUESTPORT[/tcp|/udp], separated by \
            commas, spaces or newlines; the address defaults to 127.0.0.1 (loopback only) and the \
            protocol to tcp. Stored one per line. Added and removed live.",
        options: &[],
        apply: ApplyClass::NetworkLive,
        internal: false,
    },
    Key {
        name: "external-bind",
        path: "net/external-bind",
        kind: Kind::Choice(&["false", "true"]),
        default: Default::Text("false"),
        summary: "Whether published ports listen on every host address.",
        description: "Where a container's published port (`docker run -p 8080:80`, or \
            `-p 0.0.0.0:8080:80`) listens on the host: false, the host's loopback only \
            (127.0.0.1 and ::1), so that nothing beyond this machine reaches it; true, every \
            address of the host, as Docker on Linux does. A port published on a named address \
            (`-p 127.0.0.1:8080:80`) listens there either way. Applies to ports published from \
            then on.",
        options: &[],
        apply: ApplyClass::NetworkLive,
        internal: false,
    },
    Key {
        name: "dns",
        path: "net/dns",
        kind: Kind::IpList,
        default: Default::Text(""),
        summary: "DNS servers for the VM (empty: the host's resolvers).",
        description: "The name servers the guest's resolver forwards to, as IPv4 or IPv6 \
            addresses separated by commas, spaces or newlines. Empty means the host's own \
            resolvers. Applied live.",
        options: &[],
        apply: ApplyClass::NetworkLive,
        internal: false,
    },
    Key {
        name: "mtu",
        path: "net/mtu",
        kind: Kind::Int { min: Limit::Fixed(576), max: Limit::Fixed(65535), unit: "an MTU in bytes" },
        default: Default::Text("1500"),
        summary: "MTU of the VM's network interface.",
        description: "The MTU of the guest's network interface, from 576 to 65535 bytes. Changing \
            it reconfigures the guest network.",
        options: &[],
        apply: ApplyClass::Network,
        internal: false,
    },
    Key {
        name: "proxy.http",
        path: "proxy/http",
        kind: Kind::ProxyUrl,
        default: Default::Text(""),
        summary: "HTTP proxy for the daemon (empty: none).",
        description: "The proxy dockerd uses for plain HTTP, as a URL such as \
            http://proxy.example:3128. Empty means none. Changing it restarts dockerd.",
        options: &["proxy.https", "proxy.exclude"],
        apply: ApplyClass::DaemonRestart,
        internal: false,
    },
    Key {
        name: "proxy.https",
        path: "proxy/https",
        kind: Kind::ProxyUrl,
        default: Default::Text(""),
        summary: "HTTPS proxy for the daemon (empty: none).",
        description: "The proxy dockerd uses for HTTPS, as a URL. Empty means none. Changing it \
            restarts dockerd.",
        options: &[],
        apply: ApplyClass::DaemonRestart,
        internal: false,
    },
    Key {
        name: "proxy.exclude",
        path: "proxy/exclude",
        kind: Kind::HostList,
        default: Default::Text(""),
        summary: "Hosts reached without the proxy.",
        description: "Host names, domains (.example.com), addresses and CIDR ranges that bypass \
            the proxy, separated by commas, spaces or newlines (dockerd's NO_PROXY). Changing it \
            restarts dockerd.",
        options: &[],
        apply: ApplyClass::DaemonRestart,
        internal: false,
    },
    Key {
        name: "daemon",
        path: "etc/docker/daemon.json",
        kind: Kind::DaemonJson,
        default: Default::Text("{}"),
        summary: "Docker's daemon.json.",
        description: "The Docker engine's daemon.json: a JSON object. The common keys are typed \
            and a wrong type is refused; an unknown key is refused unless forced, because it \
            stops dockerd from starting. Keys dockerd reloads on SIGHUP (debug, labels, \
            insecure-registries, registry-mirrors, ...) are applied with a reload; the others \
            restart dockerd.",
        options: &[],
        apply: ApplyClass::DaemonRestart,
        internal: false,
    },
    Key {
        name: "sysctl",
        path: "etc/sysctl.conf",
        kind: Kind::Sysctl,
        default: Default::Text(""),
        summary: "Kernel parameters for the VM.",
        description: "Kernel parameters as sysctl.conf lines, NAME = VALUE (for example \
            vm.max_map_count = 262144), one per line; lines starting with # are comments. Applied \
            live by the guest agent; a parameter the kernel refuses is reported and the previous \
            value kept.",
        options: &[],
        apply: ApplyClass::GuestLive,
        internal: false,
    },
    Key {
        name: "binfmt",
        path: "binfmt",
        kind: Kind::ChoiceSet(FOREIGN_ARCHITECTURES),
        default: Default::Text("arm64 arm riscv64 ppc64le s390x"),
        summary: "Foreign architectures containers can run (QEMU user emulation).",
        description: "The architectures whose programs the VM runs through QEMU's user-mode \
            emulators (Debian's qemu-user, registered with binfmt_misc and its F flag, so \
            that they work in containers whose image has no emulator): `docker run \
            --platform linux/arm64` on this x86-64 VM. Any of arm64, arm, riscv64, ppc64le and \
            s390x, separated by commas or spaces; empty for none. Applied live.",
        options: &[],
        apply: ApplyClass::GuestLive,
        internal: false,
    },
    Key {
        name: "auto-pause",
        path: "auto-pause",
        kind: Kind::Int { min: Limit::Fixed(0), max: Limit::Fixed(1440), unit: "a number of minutes" },
        default: Default::Text("0"),
        summary: "Pause the VM after this many idle minutes (0: never).",
        description: "When no container has run for this many minutes, the VM is paused (as \
            `cairn vm pause` does: it keeps its state and uses no CPU), and the next connection \
            to the Docker socket or `cairn shell` resumes it. 0, the default, never pauses. From \
            0 to 1440 (a day). Applied at once by the control plane.",
        options: &[],
        apply: ApplyClass::HostLive,
        internal: false,
    },
    Key {
        name: "file-sharing",
        path: "file-sharing",
        kind: Kind::Shares,
        default: Default::HomeAndTmp,
        summary: "Host directories that containers can mount.",
        description: "Host directories, one absolute path per line, that the VM mounts at the \
            same paths, so that `docker run -v \"$PWD\":/src` works from inside any of them. \
            Files written in a container belong on the host to the user running cairn. \
            $CAIRN_HOME, if inside one, is seen empty and read-only. Default: your home \
            directory and /tmp. Changing it reboots the VM.",
        options: &[],
        apply: ApplyClass::Reboot,
        internal: false,
    },
    Key {
        name: "filesystem",
        path: "filesystem",
        kind: Kind::Choice(&["virtiofs", "9p", "none"]),
        default: Default::Text("virtiofs"),
        summary: "How shared directories reach the VM.",
        description: "How the directories of file-sharing reach the VM: virtiofs (virtiofsd, \
            fast, with file events), 9p (qemu's own 9P server, slower; a fallback where \
            virtiofsd is missing) or none (nothing shared). /Database has its own transport \
            either way. Changing it reboots the VM.",
        options: &[],
        apply: ApplyClass::Reboot,
        internal: false,
    },
    Key {
        name: "disk",
        path: "disk",
        kind: Kind::Int { min: Limit::AtLeastDataDisk(4096), max: Limit::Fixed(16 << 20), unit: "a size in MiB" },
        default: Default::Text("64G"),
        summary: "Size of the engine's data disk in MiB.",
        description: "The size of the persistent data disk that holds the Docker engine's \
            images, containers and volumes (a sparse file, $CAIRN_HOME/data.img: it takes on \
            the host only what the guest keeps). In MiB; suffixes M, G and T are accepted. At \
            least 4G. It only grows: a value smaller than the disk as it is on the host is \
            refused (`cairn disk wipe` starts over). Growing is applied live on qemu, at the next boot on the \
            embedded VMM.",
        options: &[],
        apply: ApplyClass::DiskGrow,
        internal: false,
    },
    Key {
        name: "schema-version",
        path: "schema-version",
        kind: Kind::SchemaVersion,
        default: Default::SchemaVersion,
        summary: "Version of the layout of this tree.",
        description: "The version of the schema this tree follows. Maintained by cairn: an \
            upgrade adds or migrates keys in a commit of its own and never touches a value the \
            user changed.",
        options: &[],
        apply: ApplyClass::None,
        internal: true,
    },
];

/// Finds a key by its friendly name, or by its path in the tree.
pub fn by_name(name: &str) -> Result<&'static Key, Error> {
    KEYS.iter()
        .find(|key| key.name == name)
        .or_else(|| KEYS.iter().find(|key| key.path == name))
        .ok_or_else(|| Error::UnknownKey { name: crate::error::quote(name), known: known_names() })
}

/// Finds the key stored at `path`.
pub fn by_path(path: &str) -> Option<&'static Key> {
    KEYS.iter().find(|key| key.path == path)
}

/// The user-settable names, comma separated, for error messages.
pub(crate) fn known_names() -> String {
    KEYS.iter().filter(|k| !k.internal).map(|k| k.name).collect::<Vec<_>>().join(", ")
}

/// Every key path, for error messages.
pub(crate) fn known_paths() -> String {
    KEYS.iter().map(|k| k.path).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths_are_unique() {
        for (i, a) in KEYS.iter().enumerate() {
            for b in &KEYS[i + 1..] {
                assert_ne!(a.name, b.name);
                assert_ne!(a.path, b.path);
            }
        }
    }

    #[test]
    fn options_name_existing_keys() {
        for key in KEYS {
            for option in key.options {
                assert!(by_name(option).is_ok(), "{}: option {option} is not a key", key.name);
            }
        }
    }

    #[test]
    fn every_default_is_valid_on_small_and_large_hosts() {
        // 1 GiB: the smallest host whose RAM holds the VM the engine's image needs.
        for host in [
            Host { ram_mib: 1024, cores: 1, disk_mib: 0 },
            Host { ram_mib: 65536, cores: 64, disk_mib: 0 },
        ] {
            for key in KEYS {
                let stored = key.default_bytes(&host);
                crate::value::check_stored(key, &stored, &host).unwrap_or_else(|e| {
                    panic!(
                        "{}: default {:?} invalid: {e}",
                        key.name,
                        String::from_utf8_lossy(&stored)
                    )
                });
            }
        }
    }

    #[test]
    fn lookup_by_path_and_unknown_key_message() {
        assert_eq!(by_name("etc/hostname").map(|k| k.name), Ok("hostname"));
        let err = by_name("memroy").unwrap_err().to_string();
        assert!(err.starts_with("\"memroy\": no such key (known keys: hostname, memory"), "{err}");
    }
}
