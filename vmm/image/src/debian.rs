//! Fetching Debian packages with apt and unpacking them with dpkg-deb.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::Error;

fn run(command: &mut Command, what: &str) -> Result<String, Error> {
    let output = command.output().map_err(|e| Error::Apt(format!("{what}: {e}")))?;
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(Error::Apt(format!("{what}: {}", stderr.trim())));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The package a metapackage depends on first whose name starts with `prefix`
/// (linux-image-amd64 -> linux-image-6.1.0-NN-amd64).
pub fn dependency(meta: &str, prefix: &str) -> Result<String, Error> {
    let out = run(
        Command::new("apt-cache").args(["depends", meta]),
        &format!("apt-cache depends {meta}"),
    )?;
    out.lines()
        .filter_map(|l| l.trim().strip_prefix("Depends: "))
        .find(|p| p.starts_with(prefix))
        .map(str::to_owned)
        .ok_or_else(|| {
            Error::Apt(format!(
                "apt knows no {meta} (run apt-get update, or pass --kernel and --initrd)"
            ))
        })
}

/// The version apt would download of `package`.
pub fn version(package: &str) -> Result<String, Error> {
    let out = run(
        Command::new("apt-cache").args(["show", "--no-all-versions", package]),
        &format!("apt-cache show {package}"),
    )?;
    out.lines()
        .find_map(|l| l.strip_prefix("Version: "))
        .map(str::to_owned)
        .ok_or_else(|| Error::Apt(format!("apt-cache show {package} gave no version")))
}

/// The .deb of `package` at `version` in `cache`, downloaded with `apt-get download` unless it
/// is already there.
pub fn fetch(package: &str, version: &str, cache: &Path) -> Result<PathBuf, Error> {
    std::fs::create_dir_all(cache).map_err(|e| Error::io(cache, e))?;
    // apt names files with the version's ':' escaped.
    let file = cache.join(format!("{package}_{}_amd64.deb", version.replace(':', "%3a")));
    if file.exists() {
        return Ok(file);
    }
    run(
        Command::new("apt-get")
            .args(["download", &format!("{package}={version}")])
            .current_dir(cache),
        &format!("apt-get download {package}"),
    )?;
    if !file.exists() {
        return Err(Error::Apt(format!(
            "apt-get download {package} did not leave {}",
            file.display()
        )));
    }
    Ok(file)
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
