//! What dockerd runs with: the commit's daemon.json and proxy keys, and the flags the guest adds.

use std::collections::BTreeMap;
use std::path::Path;

use cairn_schema::ApplyClass;
use serde_json::{Map, Value as Json};

use super::{CONTAINERD_SOCKET, SOCKET};

/// The containerd the agent runs, and cairn's port proxy as dockerd's userland proxy (it
/// publishes each port on the host before dockerd goes on): given as flags for every key the
/// user's daemon.json leaves out (dockerd refuses a key given both ways). Networking is
/// dockerd's own default (docker0, iptables through nf_tables); a daemon.json may still set
/// `bridge` or `iptables`. The storage driver is dockerd's own choice, overlay2 on the ext4
/// data disk; `vfs` only where daemon.json asks.
const GUEST_DEFAULTS: &[(&str, &str)] =
    &[("containerd", CONTAINERD_SOCKET), ("userland-proxy-path", crate::port_proxy::PATH)];

/// What dockerd runs with: the daemon.json bytes and the environment from the proxy keys.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Settings {
    pub json: Vec<u8>,
    pub env: BTreeMap<String, String>,
}

impl Settings {
    /// The settings of the commit whose tree is `ro`.
    pub fn from_commit(ro: &Path) -> Result<Settings, crate::Error> {
        let read = |path: &str| {
            std::fs::read(ro.join(path))
                .map_err(|source| crate::Error::ReadSetting { path: path.to_owned(), source })
        };
        let json = read("etc/docker/daemon.json")?;
        let mut env = BTreeMap::new();
        let text = |path: &str| read(path).map(|b| String::from_utf8_lossy(&b).trim().to_owned());
        for (path, name) in [("proxy/http", "HTTP_PROXY"), ("proxy/https", "HTTPS_PROXY")] {
            let value = text(path).unwrap_or_default();
            if !value.is_empty() {
                env.insert(name.to_owned(), value.clone());
                env.insert(name.to_lowercase(), value);
            }
        }
        let exclude = text("proxy/exclude").unwrap_or_default();
        let hosts: Vec<&str> = exclude
            .split(|c: char| c == ',' || c.is_whitespace())
            .filter(|h| !h.is_empty())
            .collect();
        if !hosts.is_empty() {
            env.insert("NO_PROXY".into(), hosts.join(","));
            env.insert("no_proxy".into(), hosts.join(","));
        }
        Ok(Settings { json, env })
    }

    fn keys(&self) -> Map<String, Json> {
        serde_json::from_slice(&self.json).unwrap_or_default()
    }

    /// dockerd's flags: its API on the unix socket only (the host reaches it through the
    /// channel), and the guest defaults for the keys the file leaves out.
    pub fn flags(&self) -> Vec<String> {
        let keys = self.keys();
        let mut flags = vec![format!("--host=unix://{SOCKET}")];
        for (key, value) in GUEST_DEFAULTS {
            if !keys.contains_key(*key) {
                flags.push(format!("--{key}={value}"));
            }
        }
        flags
    }

    /// Whether going from `self` to `new` takes a restart rather than a reload.
    pub fn restart_for(&self, new: &Settings) -> bool {
        self.env != new.env
            || cairn_schema::daemon::change_class(&self.json, &new.json) > ApplyClass::DaemonReload
    }

    /// The top-level keys that differ, for saying which key dockerd refused.
    pub fn changed_keys(&self, new: &Settings) -> Vec<String> {
        let (old, new_keys) = (self.keys(), new.keys());
        let mut names: Vec<String> = old
            .keys()
            .chain(new_keys.keys())
            .filter(|k| old.get(*k) != new_keys.get(*k))
            .cloned()
            .collect();
        names.sort();
        names.dedup();
        if self.env != new.env {
            names.push("proxy".into());
        }
        names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(json: &str) -> Settings {
        Settings { json: json.as_bytes().to_vec(), env: BTreeMap::new() }
    }

    #[test]
    fn reloadable_keys_reload_and_the_rest_restart() {
        let base = settings("{}");
        assert!(!base.restart_for(&settings(r#"{"debug": true}"#)));
        assert!(!base
            .restart_for(&settings(r#"{"labels": ["a=b"], "insecure-registries": ["r:5000"]}"#)));
        assert!(base.restart_for(&settings(r#"{"debug": true, "log-level": "warn"}"#)));
        let mut proxied = base.clone();
        proxied.env.insert("HTTP_PROXY".into(), "http://p:3128".into());
        assert!(base.restart_for(&proxied), "the environment only changes with a restart");
        assert_eq!(base.changed_keys(&proxied), vec!["proxy".to_owned()]);
    }

    #[test]
    fn guest_defaults_yield_to_the_file() {
        let flags = settings(r#"{"iptables": false}"#).flags();
        assert!(!flags.iter().any(|f| f.starts_with("--iptables")), "{flags:?}");
        let flags = settings(r#"{"storage-driver": "vfs"}"#).flags();
        assert!(!flags.iter().any(|f| f.starts_with("--iptables")), "{flags:?}");
        assert!(!flags.iter().any(|f| f.starts_with("--bridge")), "{flags:?}");
        assert!(flags.contains(&format!("--containerd={CONTAINERD_SOCKET}")), "{flags:?}");
        assert!(flags.contains(&"--userland-proxy-path=/sbin/cairn-port-proxy".to_owned()));
        assert!(!flags.iter().any(|f| f.starts_with("--storage-driver")), "{flags:?}");
    }

    #[test]
    fn proxy_keys_become_the_environment() {
        let dir = tempfile::tempdir().expect("tempdir");
        let ro = dir.path();
        std::fs::create_dir_all(ro.join("etc/docker")).expect("mkdir");
        std::fs::create_dir_all(ro.join("proxy")).expect("mkdir");
        std::fs::write(ro.join("etc/docker/daemon.json"), "{}\n").expect("write");
        std::fs::write(ro.join("proxy/http"), "http://proxy.example:3128\n").expect("write");
        std::fs::write(ro.join("proxy/https"), "").expect("write");
        std::fs::write(ro.join("proxy/exclude"), "localhost, .corp\n10.0.0.0/8\n").expect("write");
        let s = Settings::from_commit(ro).expect("reads");
        assert_eq!(s.env["HTTP_PROXY"], "http://proxy.example:3128");
        assert_eq!(s.env["no_proxy"], "localhost,.corp,10.0.0.0/8");
        assert!(!s.env.contains_key("HTTPS_PROXY"));
    }
}
