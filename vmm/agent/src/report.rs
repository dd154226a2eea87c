//! What the guest agent reports on branch `state` after each head it applies, one file per
//! field so that `git show state:boot-id` and a 9P `cat` read it as they read settings.

use std::collections::BTreeMap;

/// The branch the agent reports on.
pub const STATE_BRANCH: &str = "state";

/// dockerd's state in the guest. On branch `state` and in status.json it is one line of text
/// (what [`Display`](std::fmt::Display) writes and [`FromStr`](std::str::FromStr) reads), so
/// that `git show state:dockerd` reads like a sentence.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Dockerd {
    /// Not said: an agent older than the engine.
    #[default]
    Unknown,
    /// The image has no Docker engine.
    Absent,
    Running,
    /// Running after a SIGHUP that took the new file.
    Reloaded,
    /// Running after a restart for a change.
    Restarted,
    /// Running again after it stopped on its own, and why it had.
    Recovered(String),
    /// Running on the file it had before, because it refused the new one: why.
    OnPrevious(String),
    /// Not running: why.
    Stopped(String),
}

const ABSENT: &str = "absent (an image without the Docker engine)";
const ON_PREVIOUS: &str = "running on the previous daemon.json: ";
const RECOVERED: &str = "running (restarted after it stopped: ";
const STOPPED: &str = "stopped: ";

impl Dockerd {
    /// Whether dockerd runs (on whichever file).
    pub fn is_running(&self) -> bool {
        matches!(
            self,
            Dockerd::Running
                | Dockerd::Reloaded
                | Dockerd::Restarted
                | Dockerd::Recovered(_)
                | Dockerd::OnPrevious(_)
        )
    }
}

impl std::fmt::Display for Dockerd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let one_line = |s: &str| s.replace('\n', " ");
        match self {
            Dockerd::Unknown => Ok(()),
            Dockerd::Absent => f.write_str(ABSENT),
            Dockerd::Running => f.write_str("running"),
            Dockerd::Reloaded => f.write_str("running (reloaded)"),
            Dockerd::Restarted => f.write_str("running (restarted)"),
            Dockerd::Recovered(why) => write!(f, "{RECOVERED}{})", one_line(why)),
            Dockerd::OnPrevious(why) => write!(f, "{ON_PREVIOUS}{}", one_line(why)),
            Dockerd::Stopped(why) => write!(f, "{STOPPED}{}", one_line(why)),
        }
    }
}

impl std::str::FromStr for Dockerd {
    type Err = BadReport;

    fn from_str(text: &str) -> Result<Dockerd, BadReport> {
        Ok(match text {
            "" => Dockerd::Unknown,
            ABSENT => Dockerd::Absent,
            "running" => Dockerd::Running,
            "running (reloaded)" => Dockerd::Reloaded,
            "running (restarted)" => Dockerd::Restarted,
            _ => {
                if let Some(why) = text.strip_prefix(RECOVERED).and_then(|w| w.strip_suffix(')')) {
                    Dockerd::Recovered(why.to_owned())
                } else if let Some(why) = text.strip_prefix(ON_PREVIOUS) {
                    Dockerd::OnPrevious(why.to_owned())
                } else if let Some(why) = text.strip_prefix(STOPPED) {
                    Dockerd::Stopped(why.to_owned())
                } else {
                    return Err(BadReport { field: "dockerd", value: text.to_owned() });
                }
            }
        })
    }
}

impl serde::Serialize for Dockerd {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Dockerd {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Dockerd, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// How applying one key went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    Applied,
    /// The guest kept its previous value; the reason says why.
    Failed(String),
}

/// One report: the commit the guest applied and what it sees of itself.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    /// The commit of `master` the guest applied.
    pub applied_commit: String,
    /// The kernel's boot id: it changes with every boot, so a reboot shows.
    pub boot_id: String,
    pub memory_mib: u64,
    pub ncpu: u32,
    pub hostname: String,
    /// sha256 of /etc/docker/daemon.json as written.
    pub daemon_json_sha256: String,
    /// dockerd's pid (0: not running) and state: running, on the previous daemon.json and
    /// why, stopped and why, or absent from the image.
    pub dockerd_pid: u32,
    pub dockerd: Dockerd,
    /// The data disk: mounted (and which device), or not used and why; the size and use of
    /// its filesystem.
    pub disk: String,
    pub disk_size_bytes: u64,
    pub disk_used_bytes: u64,
    /// The shared directories as mounted at boot, one line each: `PATH: mounted (virtiofs)`
    /// or `PATH: not mounted: why`.
    pub shares: Vec<String>,
    /// Per key (friendly name), how applying it went.
    pub results: BTreeMap<String, Outcome>,
}

/// Why a report could not be read.
#[derive(Debug, thiserror::Error)]
#[error("the guest's report has a bad {field}: {value:?}")]
pub struct BadReport {
    pub field: &'static str,
    pub value: String,
}

impl Report {
    /// The report as files of the `state` tree.
    pub fn to_files(&self) -> Vec<(&'static str, Vec<u8>)> {
        let results: String = self
            .results
            .iter()
            .map(|(key, outcome)| match outcome {
                Outcome::Applied => format!("{key} ok\n"),
                Outcome::Failed(why) => format!("{key} error: {}\n", why.replace('\n', " ")),
            })
            .collect();
        let line = |s: &str| format!("{s}\n").into_bytes();
        vec![
            ("applied-commit", line(&self.applied_commit)),
            ("boot-id", line(&self.boot_id)),
            ("memory-mib", line(&self.memory_mib.to_string())),
            ("ncpu", line(&self.ncpu.to_string())),
            ("hostname", line(&self.hostname)),
            ("daemon-json-sha256", line(&self.daemon_json_sha256)),
            ("dockerd-pid", line(&self.dockerd_pid.to_string())),
            ("dockerd", line(&self.dockerd.to_string())),
            ("disk", line(&self.disk.replace('\n', " "))),
            ("disk-size-bytes", line(&self.disk_size_bytes.to_string())),
            ("disk-used-bytes", line(&self.disk_used_bytes.to_string())),
            ("shares", self.shares.iter().flat_map(|s| line(&s.replace('\n', " "))).collect()),
            ("results", results.into_bytes()),
        ]
    }

    /// Reads a report back; `file` gives a file's content, `None` when absent.
    pub fn from_files(file: impl Fn(&str) -> Option<Vec<u8>>) -> Result<Report, BadReport> {
        let text = |name: &str| {
            file(name)
                .map(|b| String::from_utf8_lossy(&b).trim_end().to_owned())
                .unwrap_or_default()
        };
        let number = |field: &'static str| -> Result<u64, BadReport> {
            let value = text(field);
            value.parse().map_err(|_| BadReport { field, value })
        };
        let mut results = BTreeMap::new();
        for line in text("results").lines() {
            let Some((key, rest)) = line.split_once(' ') else {
                return Err(BadReport { field: "results", value: line.to_owned() });
            };
            let outcome = match rest.strip_prefix("error: ") {
                Some(why) => Outcome::Failed(why.to_owned()),
                None if rest == "ok" => Outcome::Applied,
                None => return Err(BadReport { field: "results", value: line.to_owned() }),
            };
            results.insert(key.to_owned(), outcome);
        }
        Ok(Report {
            applied_commit: text("applied-commit"),
            boot_id: text("boot-id"),
            memory_mib: number("memory-mib")?,
            ncpu: u32::try_from(number("ncpu")?)
                .map_err(|_| BadReport { field: "ncpu", value: text("ncpu") })?,
            hostname: text("hostname"),
            daemon_json_sha256: text("daemon-json-sha256"),
            // Absent from the reports of agents older than the engine.
            dockerd_pid: text("dockerd-pid").parse().unwrap_or(0),
            dockerd: text("dockerd").parse()?,
            // Absent from the reports of agents older than the data disk.
            disk: text("disk"),
            disk_size_bytes: text("disk-size-bytes").parse().unwrap_or(0),
            disk_used_bytes: text("disk-used-bytes").parse().unwrap_or(0),
            // Absent from the reports of agents older than file sharing.
            shares: text("shares").lines().map(str::to_owned).collect(),
            results,
        })
    }

    /// Whether the guest runs the Docker engine (an agent older than the engine says nothing).
    pub fn has_engine(&self) -> bool {
        !matches!(self.dockerd, Dockerd::Unknown | Dockerd::Absent)
    }

    /// The first key that failed, with its reason.
    pub fn first_error(&self) -> Option<(&str, &str)> {
        self.results.iter().find_map(|(key, outcome)| match outcome {
            Outcome::Failed(why) => Some((key.as_str(), why.as_str())),
            Outcome::Applied => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_round_trips_through_files() {
        let mut report = Report {
            applied_commit: "ab".repeat(20),
            boot_id: "1234".into(),
            memory_mib: 491,
            ncpu: 2,
            hostname: "cairn".into(),
            daemon_json_sha256: "00".repeat(32),
            dockerd_pid: 731,
            dockerd: Dockerd::OnPrevious("bad\nfile".into()),
            disk: "mounted (/dev/vda)".into(),
            disk_size_bytes: 64 << 30,
            disk_used_bytes: 1 << 20,
            shares: vec!["/home/me: mounted (virtiofs)".into(), "/tmp: not mounted: gone".into()],
            results: BTreeMap::new(),
        };
        report.results.insert("hostname".into(), Outcome::Applied);
        report.results.insert("sysctl".into(), Outcome::Failed("no such\nsysctl".into()));
        let files: BTreeMap<_, _> = report.to_files().into_iter().collect();
        let back = Report::from_files(|name| files.get(name).cloned()).expect("parses");
        assert_eq!(back.results["sysctl"], Outcome::Failed("no such sysctl".into()));
        assert_eq!(back.first_error(), Some(("sysctl", "no such sysctl")));
        assert_eq!(back.memory_mib, 491);
        assert_eq!(back.dockerd_pid, 731);
        assert_eq!((back.disk.as_str(), back.disk_size_bytes), ("mounted (/dev/vda)", 64 << 30));
        assert_eq!(back.dockerd, Dockerd::OnPrevious("bad file".into()));
        assert_eq!(back.shares, report.shares);
        for state in [
            Dockerd::Unknown,
            Dockerd::Absent,
            Dockerd::Running,
            Dockerd::Reloaded,
            Dockerd::Restarted,
            Dockerd::Recovered("killed".into()),
            Dockerd::Stopped("no such file".into()),
        ] {
            assert_eq!(state.to_string().parse::<Dockerd>().ok(), Some(state));
        }
        assert!("dancing".parse::<Dockerd>().is_err());
        let bad = Report::from_files(|name| (name == "memory-mib").then(|| b"lots".to_vec()));
        assert!(bad.is_err());
    }
}
