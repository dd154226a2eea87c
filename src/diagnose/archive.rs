//! The archive `cairn diagnose` leaves for a bug report: one tar.gz, mode 0600, of what a
//! maintainer asks for first. From the host: the checks, `status.json`, the control plane's
//! log, the VM's console and qemu's errors, the configuration and its last 50 commits key by
//! key. From the guest, when its agent answers: dmesg, dockerd's and containerd's logs, the
//! processes, mounts and disk use; from the engine, `docker info`. Every text goes through
//! [`super::mask`] first.

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use cairn_schema::value;

use super::checks::{self, Check, Probe, Verdict};
use super::mask;
use crate::Error;

/// The newest part kept of each log.
const LOG_TAIL: u64 = 4 << 20;
/// Commits of history in the archive.
const HISTORY: usize = 50;

/// Writes the archive to `path` (a new file, mode 0600).
pub fn write(probe: &Probe<'_>, results: &[Check], path: &Path) -> Result<(), Error> {
    let mut members: Vec<(String, Vec<u8>)> = Vec::new();
    let mut add_text =
        |name: &str, text: &str| members.push((name.to_owned(), mask::text(text).into_bytes()));
    add_text("README.txt", &readme(results));
    let checks = serde_json::to_string_pretty(results).unwrap_or_default();
    add_text("checks.json", &checks);
    let run = &probe.run;
    for (name, file) in [
        ("status.json", run.status()),
        ("cairn.log", run.log()),
        ("console.log", run.console()),
        ("qemu.err", run.qemu_errors()),
    ] {
        if let Some(text) = tail(&file, LOG_TAIL) {
            match name.ends_with(".json") {
                true => add_json(&mut members, name, &text),
                false => members.push((name.to_owned(), mask::text(&text).into_bytes())),
            }
        }
    }
    match configuration(probe) {
        Ok((config, history)) => {
            add_json(&mut members, "config.json", &config);
            members.push(("history.txt".into(), mask::text(&history).into_bytes()));
        }
        Err(e) => members.push(("config.txt".into(), format!("the database: {e}\n").into_bytes())),
    }
    let passed = |name: &str| results.iter().any(|c| c.name == name && c.verdict == Verdict::Ok);
    if passed("agent") {
        for (name, argv) in [
            ("guest/dmesg.txt", &["dmesg"][..]),
            ("guest/dockerd.log", &["tail", "-n", "5000", "/var/log/dockerd.log"]),
            ("guest/containerd.log", &["tail", "-n", "5000", "/var/log/containerd.log"]),
            ("guest/ps.txt", &["ps", "-o", "pid,ppid,user,stat,vsz,rss,args"]),
            ("guest/mounts.txt", &["cat", "/proc/mounts"]),
            ("guest/df.txt", &["df", "-k"]),
            (
                "guest/binfmt.txt",
                &[
                    "sh",
                    "-c",
                    "cd /proc/sys/fs/binfmt_misc 2>/dev/null && grep -H . qemu-* 2>/dev/null",
                ],
            ),
        ] {
            let text =
                checks::guest(probe, argv).unwrap_or_else(|e| format!("(not collected: {e})\n"));
            members.push((name.into(), mask::text(&text).into_bytes()));
        }
    }
    if passed("engine") {
        if let Ok(info) = checks::http_get(&probe.run.docker(), "/info", Duration::from_secs(10)) {
            add_json(&mut members, "docker-info.json", &info);
        }
    }
    pack(path, &members)
}

/// A JSON member, its credentials masked (kept as masked text if it does not parse).
fn add_json(members: &mut Vec<(String, Vec<u8>)>, name: &str, text: &str) {
    let bytes = match serde_json::from_str::<serde_json::Value>(text) {
        Ok(value) => serde_json::to_vec_pretty(&mask::json(&value)).unwrap_or_default(),
        Err(_) => mask::text(text).into_bytes(),
    };
    members.push((name.to_owned(), bytes));
}

fn readme(results: &[Check]) -> String {
    let mut text = format!(
        "cairn {} diagnostics\n\nPasswords in URLs and credential fields in JSON are masked as {}.\n\n",
        env!("CARGO_PKG_VERSION"),
        mask::MASK
    );
    for check in results {
        text.push_str(&format!("{} {}: {}\n", check.verdict.tag(), check.name, check.detail));
    }
    text
}

/// The newest `limit` bytes of a file, as text.
fn tail(path: &Path, limit: u64) -> Option<String> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).ok()?;
    let len = file.metadata().ok()?.len();
    file.seek(SeekFrom::Start(len.saturating_sub(limit))).ok()?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).ok()?;
    Some(String::from_utf8_lossy(&bytes).into_owned())
}

/// master's configuration as JSON, and its last commits with each key's old and new value.
fn configuration(probe: &Probe<'_>) -> Result<(String, String), Error> {
    let db = cairn_db::Db::open(probe.db, cairn_schema::Host::UNLIMITED)?;
    let master = cairn_db::CONFIG_BRANCH;
    let mut config = serde_json::Map::new();
    for key in cairn_schema::KEYS {
        if let Some(bytes) = db.read(master, key.path)? {
            config.insert(key.name.into(), value::to_json(key, &bytes));
        }
    }
    let mut history = String::new();
    for commit in db.log(master, Some(HISTORY))? {
        history.push_str(&format!(
            "commit {}\nAuthor: {}\nDate:   {}\n\n    {}\n\n",
            commit.id,
            commit.author,
            crate::utc(commit.time),
            commit.message.replace('\n', "\n    ")
        ));
        let Some(parent) = commit.parents.first() else { continue };
        for change in db.diff(&parent.to_string(), &commit.id.to_string())? {
            let key = cairn_schema::by_path(&change.path);
            let show = |v: &Option<Vec<u8>>| match (key, v) {
                (_, None) => "(absent)".to_owned(),
                (Some(key), Some(bytes)) => value::display(key, bytes),
                (None, Some(bytes)) => String::from_utf8_lossy(bytes).trim().to_owned(),
            };
            let name = key.map_or(change.path.as_str(), |k| k.name);
            history.push_str(&format!(
                "  {name}: {} -> {}\n",
                show(&change.old),
                show(&change.new)
            ));
        }
        history.push('\n');
    }
    Ok((serde_json::Value::Object(config).to_string(), history))
}

/// Writes `members` as a gzip'd tar at `path`, readable by its owner only.
fn pack(path: &Path, members: &[(String, Vec<u8>)]) -> Result<(), Error> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |e| Error::io(path, e);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    let gzip = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gzip);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for (name, bytes) in members {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o600);
        header.set_mtime(now);
        header.set_cksum();
        tar.append_data(&mut header, format!("cairn-diagnose/{name}"), bytes.as_slice())
            .map_err(io)?;
    }
    let gzip = tar.into_inner().map_err(io)?;
    let mut file = gzip.finish().map_err(io)?;
    file.flush().map_err(io)?;
    file.sync_all().map_err(io)
}
