//! Value types: parsing what a user types (or writes into a file over 9P) into the canonical
//! bytes stored in the tree, and the typed and one-line views of a stored value.
//!
//! Canonical forms: a scalar is its text and a newline; a list is one entry per line (an empty
//! list is an empty file); daemon.json is pretty-printed JSON and a newline. Input is more
//! forgiving: lists may be separated by commas, spaces or newlines, sizes may carry a unit.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde_json::Value as Json;

use crate::error::quote;
use crate::version::CURRENT_VERSION;
use crate::{Error, Host, Key};

/// The type of a setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// An RFC 1123 host name label.
    Hostname,
    /// An integer in `min..=max`; `unit` completes "is not ..." in messages.
    Int { min: Limit, max: Limit, unit: &'static str },
    /// One of a fixed set of words.
    Choice(&'static [&'static str]),
    /// Any of a fixed set of words (none, some or all), stored one per line in the set's order.
    ChoiceSet(&'static [&'static str]),
    /// A list of `[ADDRESS:]HOSTPORT:GUESTPORT[/PROTO]`.
    PortForwards,
    /// A list of IP addresses.
    IpList,
    /// A proxy URL, or empty.
    ProxyUrl,
    /// A list of host names, domains, addresses or CIDR ranges.
    HostList,
    /// Docker's daemon.json.
    DaemonJson,
    /// sysctl.conf lines.
    Sysctl,
    /// The schema version of the tree.
    SchemaVersion,
    /// Host directories, one per line (see [`crate::shares`]).
    Shares,
}

/// A bound that may depend on the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Fixed(u64),
    HostRam,
    HostCores,
    /// The larger of this and the data disk's size on the host: a disk only grows.
    AtLeastDataDisk(u64),
    /// The least memory the Docker engine's image runs in (boots the engine and runs a
    /// container): less boots a guest that cannot apply its configuration.
    ImageNeeds(u64),
}

impl Limit {
    fn resolve(self, host: &Host) -> u64 {
        match self {
            Limit::Fixed(n) => n,
            Limit::HostRam => host.ram_mib,
            Limit::HostCores => host.cores,
            Limit::AtLeastDataDisk(n) => n.max(host.disk_mib),
            Limit::ImageNeeds(n) => n,
        }
    }
}

/// How strict validation is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Validation {
    /// Accept daemon.json keys the schema does not know (`--force`).
    pub force: bool,
}

/// Longest value accepted for a scalar; a longer one is a mistake, not a setting.
const MAX_SCALAR: usize = 256;
/// Longest value accepted for lists, sysctl.conf and daemon.json.
const MAX_DOCUMENT: usize = 1 << 20;

/// Parses `input` (what a user typed, or the content of a file) for `key` and returns the
/// canonical bytes to store, or why it is refused.
pub fn normalize(key: &Key, input: &[u8], host: &Host, v: Validation) -> Result<Vec<u8>, Error> {
    normalize_as(key, input, host, v, Fresh::Input)
}

/// Whether a value is new input or already in a tree: some checks look at the host as it is
/// now (a shared directory must exist), which a stored value may have outlived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fresh {
    Input,
    Stored,
}

fn normalize_as(
    key: &Key,
    input: &[u8],
    host: &Host,
    v: Validation,
    fresh: Fresh,
) -> Result<Vec<u8>, Error> {
    let limit = if is_document(key.kind) { MAX_DOCUMENT } else { MAX_SCALAR };
    let Ok(text) = std::str::from_utf8(input) else {
        let lossy = String::from_utf8_lossy(input);
        return Err(Error::refused(key.name, &lossy, "is not UTF-8 text", allowed(key, host)));
    };
    if input.len() > limit {
        let problem = format!("is too long ({} bytes, at most {limit})", input.len());
        return Err(Error::refused(key.name, text, problem, allowed(key, host)));
    }
    let trimmed = text.trim();
    // Messages quote the value without the newline a file write (`echo 4096 > memory`) adds;
    // a value of nothing but blanks is quoted as it is, or it would read as "".
    let shown = if trimmed.is_empty() { text.strip_suffix('\n').unwrap_or(text) } else { trimmed };
    let refuse = |problem: &str| Error::refused(key.name, shown, problem, allowed(key, host));
    let canonical = match key.kind {
        Kind::Hostname => line(hostname(trimmed).ok_or_else(|| refuse("is not a host name"))?),
        Kind::Int { min, max, unit } => {
            let n = if unit == "a size in MiB" { parse_mib(trimmed) } else { trimmed.parse().ok() };
            let (floor, max) = (min.resolve(host), max.resolve(host));
            match n {
                Some(n) if (floor..=max).contains(&n) => line(n.to_string()),
                Some(n) if n < floor && matches!(min, Limit::AtLeastDataDisk(least) if n >= least) => {
                    return Err(Error::Refused {
                        key: key.name.into(),
                        value: crate::error::quote(shown),
                        problem: format!("is smaller than the data disk as it is, {floor} MiB"),
                        allowed: format!(
                            "{floor} to {max}: the disk only grows (`cairn disk wipe` starts over with an empty one)"
                        ),
                    })
                }
                Some(n) if n < floor && matches!(min, Limit::ImageNeeds(_)) => {
                    let problem = format!("is less than the {floor} MiB the Docker engine's image needs");
                    return Err(refuse(&problem));
                }
                Some(_) => return Err(refuse("is out of range")),
                None => return Err(refuse(&format!("is not {unit}"))),
            }
        }
        Kind::Choice(words) => match words.iter().find(|w| **w == trimmed) {
            Some(word) => line((*word).to_owned()),
            None => return Err(refuse("is not one of the choices")),
        },
        Kind::ChoiceSet(words) => {
            let mut chosen = BTreeSet::new();
            for item in items(text) {
                let Some(at) = words.iter().position(|w| *w == item) else {
                    return Err(Error::refused(
                        key.name,
                        item,
                        "is not one of the choices",
                        allowed(key, host),
                    ));
                };
                chosen.insert(at);
            }
            lines(chosen.into_iter().map(|at| words[at].to_owned()).collect())
        }
        Kind::PortForwards => lines(port_forwards(key, text, host)?),
        Kind::IpList => {
            let mut seen = BTreeSet::new();
            let mut out = Vec::new();
            for item in items(text) {
                let refuse =
                    |problem: &str| Error::refused(key.name, item, problem, allowed(key, host));
                let ip: IpAddr = item.parse().map_err(|_| refuse("is not an IP address"))?;
                if let Some(problem) = not_a_server(ip) {
                    return Err(refuse(problem));
                }
                if seen.insert(ip) {
                    out.push(ip.to_string());
                }
            }
            lines(out)
        }
        Kind::ProxyUrl if trimmed.is_empty() => Vec::new(),
        Kind::ProxyUrl => line(proxy_url(trimmed).ok_or_else(|| refuse("is not a proxy URL"))?),
        Kind::HostList => {
            let mut out = Vec::new();
            for item in items(text) {
                if !is_host_pattern(item) {
                    return Err(Error::refused(
                        key.name,
                        item,
                        "is not a host, domain, address or CIDR range",
                        allowed(key, host),
                    ));
                }
                out.push(item.to_owned());
            }
            lines(out)
        }
        Kind::DaemonJson => crate::daemon::normalize(key.name, text, v)?,
        Kind::Shares => lines(crate::shares::parse(key.name, text, fresh == Fresh::Input)?),
        Kind::Sysctl => lines(sysctl(key, text, host)?),
        Kind::SchemaVersion => match trimmed.parse::<u32>() {
            Ok(n) if (1..=CURRENT_VERSION).contains(&n) => line(n.to_string()),
            Ok(n) if n > CURRENT_VERSION => {
                return Err(Error::TooNew { found: n, supported: CURRENT_VERSION })
            }
            _ => return Err(refuse("is not a schema version")),
        },
    };
    Ok(canonical)
}

/// Checks bytes found in a tree: valid for the key, canonical or not.
pub fn check_stored(key: &Key, stored: &[u8], host: &Host) -> Result<(), Error> {
    normalize_as(key, stored, host, Validation { force: true }, Fresh::Stored).map(drop)
}

/// The canonical form of a default, which is valid by construction (a catalogue test checks).
pub(crate) fn normalize_default(key: &Key, input: &str, host: &Host) -> Vec<u8> {
    normalize_as(key, input.as_bytes(), host, Validation { force: true }, Fresh::Stored)
        .unwrap_or_else(|_| input.as_bytes().to_vec())
}

/// What the key accepts, for messages and `cairn schema`.
pub fn allowed(key: &Key, host: &Host) -> String {
    match key.kind {
        Kind::Hostname => "letters, digits and hyphens, 1 to 63 characters, no hyphen at either end".into(),
        Kind::Int { min, max, .. } => format!("{} to {}", min.resolve(host), max.resolve(host)),
        Kind::Choice(words) => words.join(", "),
        Kind::ChoiceSet(words) => {
            format!("any of {} separated by commas or spaces, or empty for none", words.join(", "))
        }
        Kind::PortForwards => {
            "[ADDRESS:]HOSTPORT:GUESTPORT[/tcp|/udp], ports 1 to 65535, separated by commas or spaces".into()
        }
        Kind::IpList => "IPv4 or IPv6 addresses separated by commas or spaces, or empty for the host's resolvers".into(),
        Kind::ProxyUrl => "empty, or a URL http://HOST[:PORT], https://... or socks5://...".into(),
        Kind::HostList => "host names, .domains, addresses or CIDR ranges separated by commas or spaces".into(),
        Kind::DaemonJson => "a JSON object with the keys of dockerd's daemon.json".into(),
        Kind::Sysctl => "lines NAME = VALUE, such as vm.max_map_count = 262144; # comments".into(),
        Kind::SchemaVersion => format!("1 to {}", CURRENT_VERSION),
        Kind::Shares => crate::shares::ALLOWED.into(),
    }
}

/// The type's name, for `cairn schema`.
pub fn type_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Hostname => "hostname",
        Kind::Int { unit: "a size in MiB", .. } => "MiB",
        Kind::Int { .. } => "integer",
        Kind::Choice(_) => "choice",
        Kind::ChoiceSet(_) => "list of choices",
        Kind::PortForwards => "list of port forwards",
        Kind::IpList => "list of IP addresses",
        Kind::ProxyUrl => "URL",
        Kind::HostList => "list of hosts",
        Kind::DaemonJson => "JSON object",
        Kind::Sysctl => "sysctl lines",
        Kind::SchemaVersion => "integer",
        Kind::Shares => "list of directories",
    }
}

/// The typed view of a stored value, for `--json` and `export`: integers as numbers, lists as
/// arrays, daemon.json as an object. A value that does not parse is shown as a string.
pub fn to_json(key: &Key, stored: &[u8]) -> Json {
    let text = String::from_utf8_lossy(stored);
    let trimmed = text.trim();
    match key.kind {
        Kind::Int { .. } | Kind::SchemaVersion => {
            trimmed.parse::<u64>().map(Json::from).unwrap_or_else(|_| Json::from(trimmed))
        }
        Kind::PortForwards
        | Kind::IpList
        | Kind::HostList
        | Kind::Sysctl
        | Kind::Shares
        | Kind::ChoiceSet(_) => Json::Array(
            text.lines().filter(|l| !l.trim().is_empty()).map(|l| Json::from(l.trim())).collect(),
        ),
        Kind::DaemonJson => serde_json::from_str(&text).unwrap_or_else(|_| Json::from(trimmed)),
        Kind::Hostname | Kind::Choice(_) | Kind::ProxyUrl => Json::from(trimmed),
    }
}

/// Turns a typed JSON value (from `export`) back into input text for [`normalize`]: the JSON
/// type must be the one `export` writes for the key (a number for sizes and counts, a list of
/// strings for lists, an object for daemon.json; a string for anything). `null`, or a list
/// where one value belongs, is refused rather than stored as the text "null" or "\[4096\]".
pub fn from_json(key: &Key, value: &Json) -> Result<String, Error> {
    let list = matches!(
        key.kind,
        Kind::PortForwards
            | Kind::IpList
            | Kind::HostList
            | Kind::Sysctl
            | Kind::Shares
            | Kind::ChoiceSet(_)
    );
    let refuse = |problem: &str| {
        let wanted = match key.kind {
            Kind::Int { .. } | Kind::SchemaVersion => "a number (or a string)",
            Kind::DaemonJson => "a JSON object (or a string of one)",
            _ if list => "a list of strings (or one string)",
            _ => "a string",
        };
        Error::refused(key.name, &value.to_string(), problem, wanted)
    };
    match (key.kind, value) {
        (_, Json::Null) => Err(refuse("is null")),
        (_, Json::String(s)) => Ok(s.clone()),
        (Kind::DaemonJson, Json::Object(_)) => Ok(value.to_string()),
        (Kind::Int { .. } | Kind::SchemaVersion, Json::Number(n)) => Ok(n.to_string()),
        (_, Json::Array(items)) if list => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_owned)
                    .ok_or_else(|| refuse("holds something other than strings"))
            })
            .collect::<Result<Vec<_>, _>>()
            .map(|items| items.join("\n")),
        (_, Json::Array(_)) => Err(refuse("is a list where one value belongs")),
        (_, Json::Object(_)) => Err(refuse("is an object")),
        (_, Json::Bool(_)) => Err(refuse("is true or false")),
        (_, Json::Number(_)) => Err(refuse("is a number")),
    }
}

/// The value on one line, for tables and `key=value` output: lists joined by commas, JSON compact.
pub fn display(key: &Key, stored: &[u8]) -> String {
    match key.kind {
        Kind::DaemonJson => match serde_json::from_slice::<Json>(stored) {
            Ok(json) => json.to_string(),
            Err(_) => String::from_utf8_lossy(stored).trim().to_owned(),
        },
        Kind::Sysctl => String::from_utf8_lossy(stored)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(|l| l.replace(" = ", "="))
            .collect::<Vec<_>>()
            .join("; "),
        _ => String::from_utf8_lossy(stored)
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(","),
    }
}

fn is_document(kind: Kind) -> bool {
    matches!(
        kind,
        Kind::PortForwards
            | Kind::IpList
            | Kind::HostList
            | Kind::DaemonJson
            | Kind::Sysctl
            | Kind::Shares
            | Kind::ChoiceSet(_)
    )
}

fn line(text: String) -> Vec<u8> {
    let mut bytes = text.into_bytes();
    bytes.push(b'\n');
    bytes
}

fn lines(items: Vec<String>) -> Vec<u8> {
    items.into_iter().flat_map(line).collect()
}

/// List items separated by commas, whitespace or newlines.
fn items(text: &str) -> impl Iterator<Item = &str> {
    text.split(|c: char| c == ',' || c.is_whitespace()).filter(|s| !s.is_empty())
}

fn hostname(text: &str) -> Option<String> {
    let ok = (1..=63).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !text.starts_with('-')
        && !text.ends_with('-');
    ok.then(|| text.to_ascii_lowercase())
}

/// A size in MiB: a bare number, or a number with M, MiB, G, GiB, T or TiB.
pub(crate) fn parse_mib(text: &str) -> Option<u64> {
    let split = text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits.parse().ok()?;
    match unit.trim() {
        "" | "M" | "MiB" | "m" => Some(n),
        "G" | "GiB" | "g" => n.checked_mul(1024),
        "T" | "TiB" | "t" => n.checked_mul(1024 * 1024),
        _ => None,
    }
}

fn port_forwards(key: &Key, text: &str, host: &Host) -> Result<Vec<String>, Error> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for item in items(text) {
        let refuse = |problem: &str| Error::refused(key.name, item, problem, allowed(key, host));
        let (spec, proto) = match item.rsplit_once('/') {
            Some((spec, proto @ ("tcp" | "udp"))) => (spec, proto),
            Some(_) => return Err(refuse("has an unknown protocol")),
            None => (item, "tcp"),
        };
        let (rest, guest) = spec.rsplit_once(':').ok_or_else(|| refuse("is not a port forward"))?;
        let (address, host_port) = match rest.rsplit_once(':') {
            Some((address, port)) => {
                let address = address.trim_start_matches('[').trim_end_matches(']');
                let ip: IpAddr = address
                    .parse()
                    .map_err(|_| refuse("has an address that is not an IP address"))?;
                (ip, port)
            }
            None => (IpAddr::from([127, 0, 0, 1]), rest),
        };
        let port = |p: &str| p.parse::<u16>().ok().filter(|p| *p != 0);
        let (Some(host_port), Some(guest)) = (port(host_port), port(guest)) else {
            return Err(refuse("has a port that is not 1 to 65535"));
        };
        if !seen.insert((address, host_port, proto)) {
            return Err(refuse("repeats a host address, port and protocol"));
        }
        let address = match address {
            IpAddr::V6(v6) => format!("[{v6}]"),
            IpAddr::V4(v4) => v4.to_string(),
        };
        out.push(format!("{address}:{host_port}:{guest}/{proto}"));
    }
    Ok(out)
}

/// A proxy URL: `SCHEME://[USER[:PASS]@]HOST[:PORT][/...]`, HOST a name, an IPv4 address or
/// a bracketed IPv6 address, PORT 1 to 65535.
fn proxy_url(text: &str) -> Option<String> {
    let (scheme, rest) = text.split_once("://")?;
    if !matches!(scheme, "http" | "https" | "socks5" | "socks5h") {
        return None;
    }
    if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return None;
    }
    let authority = rest.split('/').next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    let (host, port) = match host_port.strip_prefix('[') {
        Some(bracketed) => {
            let (v6, after) = bracketed.split_once(']')?;
            v6.parse::<std::net::Ipv6Addr>().ok()?;
            match after {
                "" => (v6, None),
                _ => (v6, Some(after.strip_prefix(':')?)),
            }
        }
        None => match host_port.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host_port, None),
        },
    };
    if let Some(port) = port {
        port.parse::<u16>().ok().filter(|p| *p != 0)?;
    }
    let name_ok = host_port.starts_with('[')
        || (!host.is_empty()
            && host.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b)));
    name_ok.then(|| text.to_owned())
}

/// Why an address cannot be a name server's: nothing answers there.
fn not_a_server(ip: IpAddr) -> Option<&'static str> {
    match ip {
        _ if ip.is_unspecified() => Some("is the unspecified address"),
        _ if ip.is_multicast() => Some("is a multicast address"),
        IpAddr::V4(v4) if v4.is_broadcast() => Some("is the broadcast address"),
        _ => None,
    }
}

fn is_host_pattern(item: &str) -> bool {
    item == "*"
        || (item.len() <= 255
            && item.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:/[]*".contains(&b)))
}

fn sysctl(key: &Key, text: &str, host: &Host) -> Result<Vec<String>, Error> {
    use crate::sysctl::{parse, Line};
    let lines = parse(text)
        .map_err(|e| Error::refused(key.name, &e.line, e.problem, allowed(key, host)))?;
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for line in lines {
        match line {
            Line::Comment(text) => out.push(text),
            Line::Setting(setting) => {
                if !names.insert(setting.name()) {
                    let refused = setting.canonical();
                    return Err(Error::refused(
                        key.name,
                        &refused,
                        "sets a parameter twice",
                        allowed(key, host),
                    ));
                }
                out.push(setting.canonical());
            }
        }
    }
    Ok(out)
}

/// Quotes a value for display; re-exported for the CLI's own messages.
pub fn quoted(value: &str) -> String {
    quote(value)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::by_name;

    const HOST: Host = Host { ram_mib: 23552, cores: 2, disk_mib: 0 };

    fn norm(name: &str, input: &str) -> Result<String, String> {
        let key = by_name(name).map_err(|e| e.to_string())?;
        normalize(key, input.as_bytes(), &HOST, Validation::default())
            .map(|b| String::from_utf8(b).expect("canonical values are UTF-8"))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_set_of_choices_is_kept_in_the_catalogue_s_order_once_each() {
        assert_eq!(norm("binfmt", "s390x, arm64 arm64\narm").as_deref(), Ok("arm64\narm\ns390x\n"));
        assert_eq!(norm("binfmt", "").as_deref(), Ok(""));
        assert!(norm("binfmt", "arm64 x86").unwrap_err().starts_with("binfmt: \"x86\" is not one"));
        let key = by_name("binfmt").expect("binfmt");
        assert_eq!(to_json(key, b"arm64\narm\n"), serde_json::json!(["arm64", "arm"]));
        assert_eq!(display(key, b"arm64\narm\n"), "arm64,arm");
    }

    #[test]
    fn the_disk_never_goes_below_the_disk_as_it_is() {
        let key = by_name("disk").expect("disk");
        let with_disk = Host { disk_mib: 81920, ..HOST };
        let disk = |input: &str, host: &Host| {
            normalize(key, input.as_bytes(), host, Validation::default()).map_err(|e| e.to_string())
        };
        assert_eq!(disk("4G", &HOST).expect("no disk yet: any size"), b"4096\n");
        assert_eq!(
            disk("64G", &with_disk).unwrap_err(),
            "disk: \"64G\" is smaller than the data disk as it is, 81920 MiB (allowed: 81920 to \
             16777216: the disk only grows (`cairn disk wipe` starts over with an empty one))"
        );
        assert!(disk("80G", &with_disk).is_ok() && disk("1T", &with_disk).is_ok());
        assert!(disk("1G", &with_disk).unwrap_err().contains("out of range"), "below 4G");
    }

    #[test]
    fn memory_message_names_key_value_and_range() {
        assert_eq!(
            norm("memory", "lots").unwrap_err(),
            r#"memory: "lots" is not a size in MiB (allowed: 768 to 23552)"#
        );
        assert_eq!(
            norm("memory", "99999").unwrap_err(),
            r#"memory: "99999" is out of range (allowed: 768 to 23552)"#
        );
        assert_eq!(
            norm("memory", "512").unwrap_err(),
            "memory: \"512\" is less than the 768 MiB the Docker engine's image needs \
             (allowed: 768 to 23552)"
        );
        assert_eq!(norm("memory", "768").unwrap(), "768\n");
        assert_eq!(norm("memory", " 4G\n").unwrap(), "4096\n");
        assert_eq!(norm("memory", "4096MiB").unwrap(), "4096\n");
        assert!(norm("memory", "").is_err());
        assert!(norm("memory", "-1").is_err());
        assert!(norm("memory", "99999999999999999999999G").is_err());
    }

    #[test]
    fn ncpu_bounded_by_host() {
        assert_eq!(norm("ncpu", "2").unwrap(), "2\n");
        assert!(norm("ncpu", "3").unwrap_err().contains("(allowed: 1 to 2)"));
        assert!(norm("ncpu", "0").is_err());
    }

    #[test]
    fn hostname_rules() {
        assert_eq!(norm("hostname", "My-VM").unwrap(), "my-vm\n");
        for bad in ["", "-a", "a-", "a.b", "a b", &"x".repeat(64), "é"] {
            assert!(norm("hostname", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn choices() {
        assert_eq!(norm("hypervisor", "qemu\n").unwrap(), "qemu\n");
        assert_eq!(
            norm("hypervisor", "vbox").unwrap_err(),
            r#"hypervisor: "vbox" is not one of the choices (allowed: native, qemu)"#
        );
        assert!(norm("network", "bridge").is_err());
        assert_eq!(norm("filesystem", "virtiofs").unwrap(), "virtiofs\n");
        assert!(norm("filesystem", "osxfs").is_err());
    }

    #[test]
    fn port_forwards_canonical_and_refused() {
        assert_eq!(
            norm("port-forwarding", "8080:80, 0.0.0.0:53:53/udp [::1]:2222:22").unwrap(),
            "127.0.0.1:8080:80/tcp\n0.0.0.0:53:53/udp\n[::1]:2222:22/tcp\n"
        );
        assert_eq!(norm("port-forwarding", "").unwrap(), "");
        for bad in ["80", "0:80", "80:70000", "x:80:80", "80:80/sctp", "80:80,80:81"] {
            assert!(norm("port-forwarding", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn dns_and_proxy() {
        assert_eq!(
            norm("dns", "1.1.1.1, 2606:4700::1111 1.1.1.1").unwrap(),
            "1.1.1.1\n2606:4700::1111\n"
        );
        assert!(norm("dns", "one.one.one.one").unwrap_err().contains("is not an IP address"));
        for bad in ["0.0.0.0", "255.255.255.255", "224.0.0.1", "::", "ff02::1"] {
            let err = norm("dns", bad).unwrap_err();
            assert!(err.starts_with(&format!("dns: \"{bad}\" is ")), "{err}");
        }
        assert_eq!(
            norm("proxy.http", "http://proxy.example:3128").unwrap(),
            "http://proxy.example:3128\n"
        );
        assert_eq!(norm("proxy.http", "").unwrap(), "");
        for good in ["http://[::1]:3128", "http://u:p@proxy.example:8080/", "socks5://10.0.0.1"] {
            assert!(norm("proxy.http", good).is_ok(), "{good:?} refused");
        }
        for bad in [
            "proxy:3128",
            "ftp://x",
            "http://",
            "http://a b",
            "http://h:99999",
            "http://[::1",
            "http://proxy:0",
            "http://[nope]:1",
            "http://a:b:c",
        ] {
            assert!(norm("proxy.http", bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(
            norm("proxy.exclude", "localhost,.corp 10.0.0.0/8").unwrap(),
            "localhost\n.corp\n10.0.0.0/8\n"
        );
        assert!(norm("proxy.exclude", "a;b").is_err());
    }

    #[test]
    fn sysctl_lines() {
        assert_eq!(
            norm("sysctl", "# tuned\nvm.swappiness=10\nnet/ipv4/ip_forward = 1\n").unwrap(),
            "# tuned\nvm.swappiness = 10\nnet.ipv4.ip_forward = 1\n"
        );
        for bad in [
            "swappiness",
            "vm.swappiness=",
            "=1",
            "vm.a=1\nvm.a=2",
            "a b.c=1",
            "/etc/shadow = root::0:0:99999:7:::",
            "../../../init = x",
            ".etc.passwd = x",
        ] {
            assert!(norm("sysctl", bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn non_utf8_and_huge_values_are_refused() {
        let key = by_name("hostname").expect("hostname is a key");
        let err = normalize(key, b"\xff\xfe", &HOST, Validation::default()).unwrap_err();
        assert!(err.to_string().contains("is not UTF-8 text"), "{err}");
        let huge = "a".repeat(MAX_SCALAR + 1);
        let err = norm("hostname", &huge).unwrap_err();
        assert!(err.contains("is too long (257 bytes, at most 256)"), "{err}");
        assert!(err.len() < 300, "message is not cut: {err}");
    }

    #[test]
    fn schema_version_is_bounded() {
        assert!(norm("schema-version", "1").is_ok());
        assert!(norm("schema-version", "99").unwrap_err().contains("newer than this cairn"));
    }

    #[test]
    fn json_of_the_wrong_type_is_refused() {
        let hostname = by_name("hostname").expect("key");
        let memory = by_name("memory").expect("key");
        let dns = by_name("dns").expect("key");
        let err = from_json(hostname, &serde_json::json!(null)).unwrap_err().to_string();
        assert_eq!(err, "hostname: \"null\" is null (allowed: a string)");
        assert!(from_json(memory, &serde_json::json!([4096])).is_err());
        assert_eq!(from_json(memory, &serde_json::json!(4096)).ok().as_deref(), Some("4096"));
        assert!(from_json(dns, &serde_json::json!(["1.1.1.1", 2])).is_err());
        assert!(from_json(by_name("daemon").expect("key"), &serde_json::json!([])).is_err());
        let blank = norm("hostname", " ").unwrap_err();
        assert!(blank.starts_with("hostname: \" \" is not a host name"), "{blank}");
    }

    #[test]
    fn views() {
        let pf = by_name("port-forwarding").expect("key");
        let stored = b"127.0.0.1:8080:80/tcp\n0.0.0.0:53:53/udp\n";
        assert_eq!(display(pf, stored), "127.0.0.1:8080:80/tcp,0.0.0.0:53:53/udp");
        assert_eq!(
            to_json(pf, stored),
            serde_json::json!(["127.0.0.1:8080:80/tcp", "0.0.0.0:53:53/udp"])
        );
        let memory = by_name("memory").expect("key");
        assert_eq!(to_json(memory, b"4096\n"), serde_json::json!(4096));
        let daemon = by_name("daemon").expect("key");
        assert_eq!(display(daemon, b"{\n  \"debug\": true\n}\n"), r#"{"debug":true}"#);
        let back = from_json(pf, &to_json(pf, stored)).expect("export's own form");
        assert_eq!(
            normalize(pf, back.as_bytes(), &HOST, Validation::default()).ok(),
            Some(stored.to_vec())
        );
    }
}
