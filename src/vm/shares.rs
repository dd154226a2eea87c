//! What a boot shares of the host's directories (`file-sharing`, `filesystem`), and how each
//! share fares: the plan is made from the commit the VM boots for, the guest's report says
//! which it mounted.

use std::path::{Path, PathBuf};

use cairn_channel::shares::{Boot, Share, Transport};
use serde::{Deserialize, Serialize};

/// One line of `file-sharing` and what became of it, for `cairn status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ShareStatus {
    pub path: String,
    /// `shared`, `mounted (virtiofs)` once the guest says so, or why it is not shared.
    pub state: String,
}

/// The sharing of one boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Sharing {
    /// `virtiofs`, `9p` or `none` (the `filesystem` key).
    pub mode: String,
    pub shares: Vec<ShareStatus>,
    /// $CAIRN_HOME when a share holds it: the guest sees it empty and read-only.
    #[serde(default)]
    pub hidden: Vec<String>,
    /// Host file events for the guest: `forwarded for N directories containers mount (N
    /// sent, M dropped)`, or why not.
    #[serde(default)]
    pub events: String,
    /// The directories watched for them: those containers bind-mount.
    #[serde(default)]
    pub watched: Vec<String>,
}

/// A state before the guest has said anything.
pub const SHARED: &str = "shared";

/// What to share at a boot: the devices, and the status of every line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub boot: Boot,
    pub status: Sharing,
}

impl Plan {
    /// Plans the sharing of `file_sharing` (the key's lines) under `filesystem`: a line whose
    /// directory is missing now, or that lies inside $CAIRN_HOME (`home`), is reported and not
    /// shared; the others are. $CAIRN_HOME inside a share is hidden.
    pub fn new(filesystem: &str, file_sharing: &str, home: &Path) -> Plan {
        let transport = match filesystem {
            "virtiofs" => Some(Transport::Virtiofs),
            "9p" => Some(Transport::NineP),
            _ => None,
        };
        // Compared as the host resolves them: a share reached through a symbolic link holds
        // $CAIRN_HOME as surely as one named plainly.
        let real = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_owned());
        let home_real = real(home).display().to_string();
        let inside = cairn_schema::shares::inside;
        let mut boot = Boot { transport, ..Boot::default() };
        let mut status = Sharing { mode: filesystem.to_owned(), ..Sharing::default() };
        let paths = cairn_schema::shares::parse("file-sharing", file_sharing, false);
        for path in paths.unwrap_or_default() {
            let share_real = real(Path::new(&path)).display().to_string();
            let state = if transport.is_none() {
                "not shared (filesystem is none)".to_owned()
            } else if !Path::new(&path).is_dir() {
                "not shared: not a directory on this host".to_owned()
            } else if share_real == "/" {
                "not shared: it leads to the host's whole file system".to_owned()
            } else if inside(&share_real, &home_real) {
                "not shared: it is inside $CAIRN_HOME, which no VM may reach".to_owned()
            } else {
                let tag = format!("share{}", boot.shares.len());
                if inside(&home_real, &share_real) {
                    // Where the guest (and virtiofsd, through the share's path) finds it.
                    boot.hidden.push(format!("{path}{}", &home_real[share_real.len()..]));
                }
                boot.shares.push(Share { tag, path: path.clone() });
                SHARED.to_owned()
            };
            status.shares.push(ShareStatus { path, state });
        }
        status.hidden = boot.hidden.clone();
        Plan { boot, status }
    }

    /// The plan of a backend that cannot share (the embedded VMM has no virtiofs device yet).
    pub fn unsupported(mut self, why: &str) -> Plan {
        for share in self.status.shares.iter_mut().filter(|s| s.state == SHARED) {
            share.state = format!("not shared: {why}");
        }
        self.boot.shares.clear();
        self.boot.hidden.clear();
        self.status.hidden.clear();
        self
    }

    /// Marks a share the host could not serve, and drops it from the boot.
    pub fn failed(&mut self, tag: &str, why: &str) {
        let Some(index) = self.boot.shares.iter().position(|s| s.tag == tag) else { return };
        let share = self.boot.shares.remove(index);
        if let Some(status) = self.status.shares.iter_mut().find(|s| s.path == share.path) {
            status.state = format!("not shared: {why}");
        }
        let holds = |hidden: &String| cairn_schema::shares::inside(hidden, &share.path);
        self.boot.hidden.retain(|h| !holds(h));
        self.status.hidden.retain(|h| !holds(h));
    }
}

impl Sharing {
    /// Takes the guest's word on each share (`PATH: mounted (virtiofs)`, `PATH: not mounted:
    /// why`, `PATH: could not be hidden...`).
    pub fn take_report(&mut self, lines: &[String]) {
        for line in lines {
            for share in &mut self.shares {
                if let Some(state) = line.strip_prefix(&format!("{}: ", share.path)) {
                    share.state = state.to_owned();
                }
            }
        }
    }
}

/// Where virtiofsd serves share `tag` (qemu connects there).
pub fn socket(run: &Path, tag: &str) -> PathBuf {
    run.join(format!("virtiofs-{tag}.sock"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_what_exists_and_hides_cairn_home() {
        let dir = tempfile::tempdir().expect("tempdir");
        let top = dir.path().display().to_string();
        let home = dir.path().join("home");
        std::fs::create_dir_all(home.join("run")).expect("mkdir");
        let elsewhere = tempfile::tempdir().expect("tempdir");
        let other = elsewhere.path().display().to_string();
        let lines = format!("{top}\n{other}/missing\n");
        let plan = Plan::new("virtiofs", &lines, &home);
        assert_eq!(plan.boot.shares, [Share { tag: "share0".into(), path: top.clone() }]);
        assert_eq!(plan.boot.hidden, [home.display().to_string()]);
        assert_eq!(plan.status.shares[0].state, SHARED);
        assert!(plan.status.shares[1].state.contains("not a directory"), "{:?}", plan.status);
        let inside = Plan::new("9p", &format!("{}\n{other}", home.join("run").display()), &home);
        assert!(inside.status.shares[0].state.contains("inside $CAIRN_HOME"));
        assert_eq!(inside.boot.shares, [Share { tag: "share0".into(), path: other.clone() }]);
        assert!(inside.boot.hidden.is_empty());
        let none = Plan::new("none", &other, &home);
        assert!(none.boot.shares.is_empty() && none.boot.kernel_args().is_empty());
    }

    #[test]
    fn a_share_through_a_link_still_hides_cairn_home() {
        let dir = tempfile::tempdir().expect("tempdir");
        let real = dir.path().join("real");
        let home = real.join("me/cairn");
        std::fs::create_dir_all(&home).expect("mkdir");
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).expect("symlink");
        let plan = Plan::new("virtiofs", &link.display().to_string(), &home);
        assert_eq!(plan.boot.hidden, [format!("{}/me/cairn", link.display())]);
        let inner = Plan::new("virtiofs", &link.join("me/cairn").display().to_string(), &home);
        assert!(inner.status.shares[0].state.contains("inside $CAIRN_HOME"), "{:?}", inner.status);
        let root = dir.path().join("root");
        std::os::unix::fs::symlink("/", &root).expect("symlink");
        let whole = Plan::new("virtiofs", &root.display().to_string(), &home);
        assert!(whole.status.shares[0].state.contains("whole file system"), "{:?}", whole.status);
    }

    #[test]
    fn the_guest_report_and_failures_update_the_status() {
        let dir = tempfile::tempdir().expect("tempdir");
        let top = dir.path().display().to_string();
        let home = dir.path().join("home");
        let mut plan = Plan::new("virtiofs", &top, &home);
        plan.status.take_report(&[format!("{top}: mounted (virtiofs)")]);
        assert_eq!(plan.status.shares[0].state, "mounted (virtiofs)");
        plan.failed("share0", "virtiofsd ended");
        assert!(plan.boot.shares.is_empty() && plan.boot.hidden.is_empty());
        assert_eq!(plan.status.shares[0].state, "not shared: virtiofsd ended");
    }
}
