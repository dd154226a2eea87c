//! Fetching Debian packages with apt state of the image's own, and unpacking them with
//! dpkg-deb.
//!
//! The guest is Debian 13 whatever the host runs: the builder keeps its own sources file,
//! package lists, dpkg status and archive cache under the cache directory and points every
//! apt command at them, so the host's sources, lists, pinning and installed packages never
//! choose a version (the same cairn builds the same image on a Debian 12 host, a Debian 13
//! host or a CI machine). The host's apt.conf still says *how* to reach the mirror (a proxy,
//! its date checks); it no longer says *what* to fetch. Release files are verified with the
//! Debian archive keyring, as a Debian system does.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use super::Error;

/// The Debian release the guest runs.
pub const SUITE: &str = "trixie";

/// Where Debian's archive is, unless `CAIRN_DEBIAN_MIRROR` names another (a local mirror).
const MIRROR: &str = "http://deb.debian.org/debian";
const SECURITY: &str = "http://deb.debian.org/debian-security";

/// The keyring Release files must be signed with (package debian-archive-keyring).
pub const KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// Package lists older than this are refreshed before a version is looked up.
const LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// The image's own apt state: one directory per suite (and foreign architecture) under the
/// cache.
#[derive(Debug, Clone)]
pub struct Apt {
    dir: PathBuf,
    /// Debian's name of the architecture whose packages this state fetches.
    arch: &'static str,
}

/// The guest's own architecture.
const NATIVE: &str = "amd64";

fn run(command: &mut Command, what: &str) -> Result<String, Error> {
    let output = command.output().map_err(|e| Error::Apt(format!("{what}: {e}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(Error::Apt(format!("{what}: {}", stderr.trim())));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

impl Apt {
    /// The apt state for [`SUITE`] under `cache`, its sources file written (and the empty
    /// directories and status file that stand in for the host's).
    pub fn new(cache: &Path) -> Result<Apt, Error> {
        Apt::for_arch(cache, NATIVE)
    }

    /// The apt state for [`SUITE`]'s packages of another architecture (`arm64`): a state of
    /// its own, so that the guest's never sees a foreign candidate.
    pub fn for_arch(cache: &Path, arch: &'static str) -> Result<Apt, Error> {
        let name = if arch == NATIVE { SUITE.to_owned() } else { format!("{SUITE}-{arch}") };
        let dir = cache.join("apt").join(name);
        for sub in ["sources.list.d", "preferences.d", "lists/partial", "cache/archives/partial"] {
            let path = dir.join(sub);
            std::fs::create_dir_all(&path).map_err(|e| Error::io(&path, e))?;
        }
        let mirror = std::env::var("CAIRN_DEBIAN_MIRROR").unwrap_or_else(|_| MIRROR.to_owned());
        let sources = format!(
            "Types: deb\nURIs: {mirror}\nSuites: {SUITE} {SUITE}-updates\nComponents: main\n\
             Signed-By: {KEYRING}\n\n\
             Types: deb\nURIs: {SECURITY}\nSuites: {SUITE}-security\nComponents: main\n\
             Signed-By: {KEYRING}\n"
        );
        write_if_changed(&dir.join("sources.list.d/debian.sources"), sources.as_bytes())?;
        let status = dir.join("status");
        if !status.exists() {
            std::fs::write(&status, b"").map_err(|e| Error::io(&status, e))?;
        }
        Ok(Apt { dir, arch })
    }

    /// An apt command on this state alone.
    fn command(&self, program: &str) -> Command {
        let d = self.dir.display();
        let mut command = Command::new(program);
        for option in [
            "Dir::Etc::SourceList=/dev/null".to_owned(),
            format!("Dir::Etc::SourceParts={d}/sources.list.d"),
            "Dir::Etc::Preferences=/dev/null".to_owned(),
            format!("Dir::Etc::PreferencesParts={d}/preferences.d"),
            format!("Dir::State={d}"),
            format!("Dir::State::Lists={d}/lists"),
            format!("Dir::State::status={d}/status"),
            format!("Dir::Cache={d}/cache"),
            format!("APT::Architecture={}", self.arch),
            format!("APT::Architectures::={}", self.arch),
            "APT::Default-Release=".to_owned(),
            "Acquire::Languages=none".to_owned(),
        ] {
            command.arg("-o").arg(option);
        }
        // apt drops to _apt for downloads when root, and _apt cannot write under a private
        // cache directory (it would warn and go on unsandboxed).
        if is_root() {
            command.args(["-o", "APT::Sandbox::User=root"]);
        }
        command
    }

    /// Downloads the suite's package lists when they are missing, older than a day, or
    /// `always`.
    pub fn update(&self, always: bool) -> Result<(), Error> {
        let stamp = self.dir.join("lists/updated");
        let fresh = std::fs::metadata(&stamp)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age < LISTS_MAX_AGE);
        if fresh && !always {
            return Ok(());
        }
        if !Path::new(KEYRING).exists() {
            return Err(Error::Apt(format!(
                "{KEYRING} is missing: install debian-archive-keyring to verify Debian's archive"
            )));
        }
        run(self.command("apt-get").args(["-q", "update"]), &format!("apt-get update ({SUITE})"))?;
        std::fs::write(&stamp, b"").map_err(|e| Error::io(&stamp, e))
    }

    /// The package a metapackage depends on first whose name starts with `prefix`
    /// (linux-image-amd64 -> linux-image-6.12.NN+deb13-amd64).
    pub fn dependency(&self, meta: &str, prefix: &str) -> Result<String, Error> {
        let out = run(
            self.command("apt-cache").args(["depends", meta]),
            &format!("apt-cache depends {meta} ({SUITE})"),
        )?;
        out.lines()
            .filter_map(|l| l.trim().strip_prefix("Depends: "))
            .find(|p| p.starts_with(prefix))
            .map(str::to_owned)
            .ok_or_else(|| Error::Apt(format!("Debian {SUITE} has no {meta}")))
    }

    /// The version apt would download of `package`.
    pub fn version(&self, package: &str) -> Result<String, Error> {
        let out = run(
            self.command("apt-cache").args(["show", "--no-all-versions", package]),
            &format!("apt-cache show {package} ({SUITE})"),
        )?;
        out.lines()
            .find_map(|l| l.strip_prefix("Version: "))
            .map(str::to_owned)
            .ok_or_else(|| Error::Apt(format!("apt-cache show {package} gave no version")))
    }

    /// The .deb of `package` at `version` in `cache`, downloaded with `apt-get download`
    /// unless it is already there.
    pub fn fetch(&self, package: &str, version: &str, cache: &Path) -> Result<PathBuf, Error> {
        std::fs::create_dir_all(cache).map_err(|e| Error::io(cache, e))?;
        // apt names files with the version's ':' escaped.
        let file =
            cache.join(format!("{package}_{}_{}.deb", version.replace(':', "%3a"), self.arch));
        let all = cache.join(format!("{package}_{}_all.deb", version.replace(':', "%3a")));
        for candidate in [&file, &all] {
            if candidate.exists() {
                return Ok(candidate.clone());
            }
        }
        run(
            self.command("apt-get")
                .args(["-q", "download", &format!("{package}={version}")])
                .current_dir(cache),
            &format!("apt-get download {package} ({SUITE})"),
        )?;
        [file, all].into_iter().find(|f| f.exists()).ok_or_else(|| {
            Error::Apt(format!("apt-get download {package} left no {package}_{version}_*.deb"))
        })
    }
}

/// Whether this process runs as root (/proc/self belongs to the effective user).
fn is_root() -> bool {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn write_if_changed(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    if std::fs::read(path).ok().as_deref() == Some(bytes) {
        return Ok(());
    }
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

/// Unpacks a .deb's files into `into`.
pub fn unpack(deb: &Path, into: &Path) -> Result<(), Error> {
    std::fs::create_dir_all(into).map_err(|e| Error::io(into, e))?;
    run(
        Command::new("dpkg-deb").arg("-x").arg(deb).arg(into),
        &format!("dpkg-deb -x {}", deb.display()),
    )
    .map(drop)
}
