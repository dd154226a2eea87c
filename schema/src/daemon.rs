//! Docker's daemon.json: the typed subset of its keys and which of them dockerd reloads.
//!
//! An unknown key makes dockerd refuse to start, so it is refused here unless forced. The apply
//! class of each key follows dockerd's documented reload list: those keys are applied with SIGHUP,
//! everything else needs a restart.

use serde_json::{Map, Value as Json};

use crate::{ApplyClass, Error, Validation};

/// The JSON type a daemon.json key must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonType {
    Bool,
    String,
    /// One of a fixed set of strings.
    Enum(&'static [&'static str]),
    /// A non-negative integer.
    Count,
    StringList,
    /// An object whose values are strings (log-opts, storage-opts as a map).
    StringMap,
    /// An object whose values are true or false (`features`).
    BoolMap,
    /// An object of any shape dockerd parses itself (runtimes, features, builder, ...).
    Object,
    /// `default-address-pools`: a list of `{"base": CIDR, "size": n}`.
    AddressPools,
    /// `labels`: a list of "key=value" strings.
    Labels,
    /// A key dockerd knows that cairn does not let through, with the reason.
    Refused(&'static str),
    /// `data-root`: an absolute path on the data disk (`/var/lib/docker` or below).
    DataRoot,
}

/// Where the engine's state lives: the data disk's mount in the guest.
pub const DATA_ROOT: &str = "/var/lib/docker";

/// A known daemon.json key.
#[derive(Debug, Clone, Copy)]
pub struct DaemonKey {
    pub name: &'static str,
    pub ty: JsonType,
    /// Reloaded on SIGHUP (DaemonReload) or not (DaemonRestart).
    pub apply: ApplyClass,
}

const RELOAD: ApplyClass = ApplyClass::DaemonReload;
const RESTART: ApplyClass = ApplyClass::DaemonRestart;
const LOG_LEVELS: &[&str] = &["debug", "info", "warn", "error", "fatal"];

/// Why daemon.json may not choose dockerd's userland proxy.
const PROXY_IS_CAIRNS: &str = "is set by cairn: dockerd's userland proxy is cairn's port proxy, \
    which publishes each port on the host (without it `docker run -p` would reach no host port)";

const fn k(name: &'static str, ty: JsonType, apply: ApplyClass) -> DaemonKey {
    DaemonKey { name, ty, apply }
}

/// The keys the schema knows. The reloadable set is what dockerd 26.1 (Debian 13's docker.io,
/// the engine of the guest image) takes on SIGHUP in daemon/reload.go, reload_unix.go and
/// cmd/dockerd's reloadConfig: debug, labels, live-restore, max-concurrent-downloads/uploads,
/// max-download-attempts, shutdown-timeout, features, insecure-registries, registry-mirrors,
/// allow-nondistributable-artifacts, authorization-plugins, network-diagnostic-port, and the
/// platform's runtimes, default-runtime, default-shm-size, default-ipc-mode and
/// default-cgroupns-mode: the same set as 20.10's, less the cluster-store keys 26 no longer
/// has. Everything else (builder included) needs a restart. Keys new since 20.10:
/// default-network-opts, log-format, cdi-spec-dirs (and `features` entries such as
/// containerd-snapshotter and cdi).
pub static DAEMON_KEYS: &[DaemonKey] = &[
    k("debug", JsonType::Bool, RELOAD),
    k("labels", JsonType::Labels, RELOAD),
    k("live-restore", JsonType::Bool, RELOAD),
    k("max-concurrent-downloads", JsonType::Count, RELOAD),
    k("max-concurrent-uploads", JsonType::Count, RELOAD),
    k("max-download-attempts", JsonType::Count, RELOAD),
    k("default-runtime", JsonType::String, RELOAD),
    k("runtimes", JsonType::Object, RELOAD),
    k("authorization-plugins", JsonType::StringList, RELOAD),
    k("insecure-registries", JsonType::StringList, RELOAD),
    k("registry-mirrors", JsonType::StringList, RELOAD),
    k("shutdown-timeout", JsonType::Count, RELOAD),
    k("features", JsonType::BoolMap, RELOAD),
    k("allow-nondistributable-artifacts", JsonType::StringList, RELOAD),
    k("network-diagnostic-port", JsonType::Count, RELOAD),
    k("default-shm-size", JsonType::String, RELOAD),
    k("default-ipc-mode", JsonType::Enum(&["private", "shareable"]), RELOAD),
    k("default-cgroupns-mode", JsonType::Enum(&["host", "private"]), RELOAD),
    k("builder", JsonType::Object, RESTART),
    k("log-level", JsonType::Enum(LOG_LEVELS), RESTART),
    k("log-driver", JsonType::String, RESTART),
    k("log-opts", JsonType::StringMap, RESTART),
    k("dns", JsonType::StringList, RESTART),
    k("dns-opts", JsonType::StringList, RESTART),
    k("dns-search", JsonType::StringList, RESTART),
    k("default-address-pools", JsonType::AddressPools, RESTART),
    k("bridge", JsonType::String, RESTART),
    k("bip", JsonType::String, RESTART),
    k("mtu", JsonType::Count, RESTART),
    k("ipv6", JsonType::Bool, RESTART),
    k("fixed-cidr", JsonType::String, RESTART),
    k("fixed-cidr-v6", JsonType::String, RESTART),
    k("iptables", JsonType::Bool, RESTART),
    k("ip6tables", JsonType::Bool, RESTART),
    k("ip-forward", JsonType::Bool, RESTART),
    k("ip-masq", JsonType::Bool, RESTART),
    k("icc", JsonType::Bool, RESTART),
    k("ip", JsonType::String, RESTART),
    k("userland-proxy", JsonType::Refused(PROXY_IS_CAIRNS), RESTART),
    k("userland-proxy-path", JsonType::Refused(PROXY_IS_CAIRNS), RESTART),
    k("experimental", JsonType::Bool, RESTART),
    k("data-root", JsonType::DataRoot, RESTART),
    k("storage-driver", JsonType::String, RESTART),
    k("storage-opts", JsonType::StringList, RESTART),
    k("exec-opts", JsonType::StringList, RESTART),
    k(
        "hosts",
        JsonType::Refused(
            "is set by cairn: the agent gives dockerd its socket with --host, and dockerd refuses \
             to start when daemon.json sets hosts too; the host reaches the engine through \
             `cairn docker-env`",
        ),
        RESTART,
    ),
    k("default-ulimits", JsonType::Object, RESTART),
    k("cgroup-parent", JsonType::String, RESTART),
    k("no-new-privileges", JsonType::Bool, RESTART),
    k("userns-remap", JsonType::String, RESTART),
    k("metrics-addr", JsonType::String, RESTART),
    k("containerd", JsonType::String, RESTART),
    k("seccomp-profile", JsonType::String, RESTART),
    k("selinux-enabled", JsonType::Bool, RESTART),
    k("init", JsonType::Bool, RESTART),
    k("proxies", JsonType::StringMap, RESTART),
    k("host-gateway-ip", JsonType::String, RESTART),
    k("default-network-opts", JsonType::Object, RESTART),
    k("log-format", JsonType::Enum(&["text", "json"]), RESTART),
    k("cdi-spec-dirs", JsonType::StringList, RESTART),
];

/// Looks up a daemon.json key.
pub fn key(name: &str) -> Option<&'static DaemonKey> {
    DAEMON_KEYS.iter().find(|k| k.name == name)
}

/// Parses and checks a daemon.json document; returns it pretty-printed with a trailing newline.
/// A key given twice is refused (JSON parsers keep one of them silently, and which one is not
/// what the user meant); refused values are quoted as they were written.
pub(crate) fn normalize(setting: &str, text: &str, v: Validation) -> Result<Vec<u8>, Error> {
    const ALLOWED: &str = "a JSON object with the keys of dockerd's daemon.json";
    let refuse = |value: &str, problem: String, allowed: &str| {
        Error::refused(setting, value, problem, allowed)
    };
    let entries = crate::json::object_entries(text)
        .map_err(|e| refuse(text, format!("is not valid JSON ({e})"), ALLOWED))?
        .ok_or_else(|| refuse(text, "is not a JSON object".into(), ALLOWED))?;
    let mut map = Map::new();
    for (name, raw, value) in entries {
        match key(name.as_str()) {
            Some(DaemonKey { ty: JsonType::Refused(why), .. }) => {
                return Err(refuse(
                    &name,
                    (*why).to_owned(),
                    "the other keys of `cairn schema daemon`",
                ));
            }
            Some(known) => {
                if let Some(problem) = misfit(known.ty, &value) {
                    let problem = format!("{problem} for {name}");
                    return Err(refuse(raw.trim(), problem, &describe(known.ty)));
                }
            }
            None if v.force => {}
            None => {
                let problem = "is not a daemon.json key known to cairn".to_owned();
                let allowed =
                    "the keys listed by `cairn schema daemon`, or --force to write it anyway";
                return Err(refuse(&name, problem, allowed));
            }
        }
        map.insert(name, value);
    }
    let mut pretty =
        serde_json::to_vec_pretty(&Json::Object(map)).expect("a parsed JSON value serialises");
    pretty.push(b'\n');
    Ok(pretty)
}

/// Why `value` does not fit `ty`, if it does not.
fn misfit(ty: JsonType, value: &Json) -> Option<&'static str> {
    if fits(ty, value) {
        return None;
    }
    Some(match (ty, value) {
        (JsonType::Count, Json::Number(n)) if n.as_i64().is_some_and(|n| n < 0) => "is negative",
        (JsonType::Count, Json::Number(n)) if n.is_f64() => "is not a whole number (or too large)",
        (JsonType::AddressPools, Json::Array(_)) => {
            "has a pool that is not {\"base\": CIDR, \"size\": 0..32}"
        }
        _ => "has the wrong type",
    })
}

fn fits(ty: JsonType, value: &Json) -> bool {
    let strings = |v: &Json| v.as_array().is_some_and(|a| a.iter().all(Json::is_string));
    match ty {
        JsonType::Bool => value.is_boolean(),
        JsonType::String => value.is_string(),
        JsonType::Enum(words) => value.as_str().is_some_and(|s| words.contains(&s)),
        JsonType::Count => value.as_u64().is_some(),
        JsonType::StringList => strings(value),
        JsonType::Labels => {
            strings(value)
                && value.as_array().is_some_and(|a| {
                    a.iter()
                        .filter_map(Json::as_str)
                        .all(|s| s.split_once('=').is_some_and(|(k, _)| !k.is_empty()))
                })
        }
        JsonType::StringMap => value.as_object().is_some_and(|m| m.values().all(Json::is_string)),
        JsonType::BoolMap => value.as_object().is_some_and(|m| m.values().all(Json::is_boolean)),
        JsonType::Object => value.is_object(),
        JsonType::Refused(_) => false,
        JsonType::DataRoot => value.as_str().is_some_and(on_the_data_disk),
        JsonType::AddressPools => value.as_array().is_some_and(|pools| {
            pools.iter().all(|p| {
                p.as_object().is_some_and(|o| {
                    o.get("base").and_then(Json::as_str).is_some_and(is_cidr)
                        && o.get("size").is_some_and(|s| s.as_u64().is_some_and(|n| n <= 32))
                        && o.keys().all(|k| k == "base" || k == "size")
                })
            })
        }),
    }
}

/// Whether `path` is the engine's directory on the data disk or under it (no `..`): anywhere
/// else in the guest is its memory, and the engine's images and volumes would vanish with
/// the next reboot.
fn on_the_data_disk(path: &str) -> bool {
    let under =
        path == DATA_ROOT || path.strip_prefix(DATA_ROOT).is_some_and(|rest| rest.starts_with('/'));
    under && !path.split('/').any(|c| c == ".." || c == ".")
}

/// `ADDRESS/PREFIX`, IPv4 or IPv6, the prefix within the address's bits.
fn is_cidr(text: &str) -> bool {
    let Some((address, prefix)) = text.split_once('/') else { return false };
    let Ok(prefix) = prefix.parse::<u8>() else { return false };
    match address.parse::<std::net::IpAddr>() {
        Ok(std::net::IpAddr::V4(_)) => prefix <= 32,
        Ok(std::net::IpAddr::V6(_)) => prefix <= 128,
        Err(_) => false,
    }
}

/// What a type accepts, for messages.
pub fn describe(ty: JsonType) -> String {
    let text = match ty {
        JsonType::Enum(words) => {
            let quoted: Vec<String> = words.iter().map(|w| format!("\"{w}\"")).collect();
            return format!("one of {}", quoted.join(", "));
        }
        JsonType::Bool => "true or false",
        JsonType::String => "a string",
        JsonType::Count => "a non-negative integer",
        JsonType::StringList => "a list of strings",
        JsonType::Labels => "a list of \"key=value\" strings",
        JsonType::StringMap => "an object of strings",
        JsonType::BoolMap => "an object of true/false (e.g. {\"containerd-snapshotter\": true})",
        JsonType::Object => "an object",
        JsonType::AddressPools => "a list of {\"base\": \"CIDR\", \"size\": 0..32}",
        JsonType::Refused(why) => why,
        JsonType::DataRoot => "/var/lib/docker or a directory under it, on the data disk",
    };
    text.to_owned()
}

/// The apply class of a change from `old` to `new` daemon.json: a reload when every top-level
/// key that differs is reloadable and still present, a restart otherwise (and for unknown keys,
/// or unparsable input). A removed key needs a restart: dockerd's reload only takes the keys
/// the file sets (`IsValueSet`), so a key taken out would keep its old value until then.
pub fn change_class(old: &[u8], new: &[u8]) -> ApplyClass {
    let parse = |b: &[u8]| serde_json::from_slice::<Map<String, Json>>(b).ok();
    let (Some(old), Some(new)) = (parse(old), parse(new)) else {
        return RESTART;
    };
    let names = old.keys().chain(new.keys());
    let mut class = ApplyClass::None;
    for name in names {
        match (old.get(name), new.get(name)) {
            (Some(_), None) => return RESTART,
            (was, now) if was != now => {
                class = class.max(key(name).map_or(RESTART, |k| k.apply));
            }
            _ => {}
        }
    }
    class
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(text: &str, force: bool) -> Result<String, String> {
        normalize("daemon", text, Validation { force })
            .map(|b| String::from_utf8(b).expect("utf-8"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn typed_keys() {
        assert_eq!(norm(r#"{"debug":true}"#, false).unwrap(), "{\n  \"debug\": true\n}\n");
        let err = norm(r#"{"debug":"yes"}"#, false).unwrap_err();
        assert_eq!(
            err,
            r#"daemon: "\"yes\"" has the wrong type for debug (allowed: true or false)"#
        );
        assert!(norm(r#"{"log-level":"loud"}"#, false).is_err());
        assert!(norm(r#"{"labels":["a=b"]}"#, false).is_ok());
        assert!(norm(r#"{"labels":["nolabel"]}"#, false).is_err());
        assert!(
            norm(r#"{"default-address-pools":[{"base":"10.10.0.0/16","size":24}]}"#, false).is_ok()
        );
        assert!(norm(r#"{"default-address-pools":[{"base":"10.10.0.0/16"}]}"#, false).is_err());
        let err = norm(r#"{"max-concurrent-downloads":-1}"#, false).unwrap_err();
        assert_eq!(err, "daemon: \"-1\" is negative for max-concurrent-downloads (allowed: a non-negative integer)");
        let err = norm(r#"{"mtu":99999999999999999999999}"#, false).unwrap_err();
        assert!(
            err.starts_with("daemon: \"99999999999999999999999\" is not a whole number"),
            "{err}"
        );
        assert!(norm(r#"{"default-address-pools":[{"base":"garbage","size":24}]}"#, false).is_err());
        assert!(
            norm(r#"{"default-address-pools":[{"base":"10.0.0.0/33","size":24}]}"#, false).is_err()
        );
    }

    #[test]
    fn keys_of_dockerd_26() {
        let opts =
            r#"{"default-network-opts":{"bridge":{"com.docker.network.driver.mtu":"1400"}}}"#;
        assert!(norm(opts, false).is_ok());
        assert!(norm(r#"{"features":{"containerd-snapshotter":true}}"#, false).is_ok());
        let err = norm(r#"{"features":{"containerd-snapshotter":"yes"}}"#, false).unwrap_err();
        assert!(err.contains("has the wrong type for features"), "{err}");
        assert!(norm(r#"{"log-format":"json"}"#, false).is_ok());
        assert!(norm(r#"{"log-format":"xml"}"#, false).is_err());
        assert!(norm(r#"{"cdi-spec-dirs":["/etc/cdi"]}"#, false).is_ok());
        // What dockerd 26 no longer has is no key of cairn's either.
        assert!(norm(r#"{"cluster-store":"consul://x"}"#, false).is_err());
        let classes = |json: &str| change_class(b"{}", json.as_bytes());
        assert_eq!(classes(r#"{"features":{"cdi":true}}"#), ApplyClass::DaemonReload);
        assert_eq!(classes(opts), ApplyClass::DaemonRestart);
    }

    #[test]
    fn data_root_stays_on_the_data_disk() {
        assert!(norm(r#"{"data-root":"/var/lib/docker"}"#, false).is_ok());
        assert!(norm(r#"{"data-root":"/var/lib/docker/engine"}"#, false).is_ok());
        for bad in ["/tmp/docker", "/var/lib/dockerx", "/var/lib/docker/../x", "docker"] {
            let err = norm(&format!(r#"{{"data-root":"{bad}"}}"#), false).unwrap_err();
            assert!(
                err.contains("off the data disk") || err.contains("wrong type"),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn keys_given_twice_and_keys_cairn_sets_are_refused() {
        let err = norm(r#"{"debug": true, "debug": false}"#, false).unwrap_err();
        assert!(err.contains("debug") && err.contains("twice"), "{err}");
        let err = norm(r#"{"log-opts": {"max-size": "1m", "max-size": "2m"}}"#, false).unwrap_err();
        assert!(err.contains("max-size") && err.contains("twice"), "{err}");
        let err = norm(r#"{"hosts": ["tcp://0.0.0.0:2375"]}"#, true).unwrap_err();
        assert!(err.starts_with("daemon: \"hosts\" is set by cairn"), "{err}");
    }

    #[test]
    fn not_an_object_or_not_json() {
        assert!(norm("[]", false).unwrap_err().contains("is not a JSON object"));
        assert!(norm("{", false).unwrap_err().contains("is not valid JSON"));
        assert!(norm("", false).is_err());
    }

    #[test]
    fn unknown_keys_need_force() {
        let err = norm(r#"{"debgu":true}"#, false).unwrap_err();
        assert!(
            err.starts_with("daemon: \"debgu\" is not a daemon.json key")
                && err.contains("--force"),
            "{err}"
        );
        assert!(norm(r#"{"debgu":true}"#, true).is_ok());
    }

    #[test]
    fn apply_class_per_key() {
        assert_eq!(change_class(b"{}", br#"{"debug":true}"#), ApplyClass::DaemonReload);
        assert_eq!(
            change_class(br#"{"debug":true}"#, br#"{"debug":false}"#),
            ApplyClass::DaemonReload
        );
        // dockerd's reload keeps the value of a key the file no longer sets.
        assert_eq!(change_class(br#"{"debug":true}"#, b"{}"), ApplyClass::DaemonRestart);
        assert_eq!(
            change_class(b"{}", br#"{"debug":true,"log-level":"warn"}"#),
            ApplyClass::DaemonRestart
        );
        assert_eq!(change_class(b"{}", br#"{"unknown":1}"#), ApplyClass::DaemonRestart);
        assert_eq!(change_class(b"{}", b"{}"), ApplyClass::None);
    }
}
