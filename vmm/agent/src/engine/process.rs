//! dockerd and containerd as processes: their logs, signals, and dockerd's API on its unix
//! socket (ping, events).

use std::io::{BufRead, Read, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use super::super::{children, say};
use super::SOCKET;

/// The last lines a daemon wrote, numbered, for telling what a reload or a start did.
#[derive(Debug, Default)]
pub struct Log {
    lines: Mutex<(u64, std::collections::VecDeque<String>)>,
    grew: Condvar,
}

const LOG_LINES: usize = 200;

impl Log {
    pub fn push(&self, line: String) {
        let mut guard = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        guard.0 += 1;
        guard.1.push_back(line);
        if guard.1.len() > LOG_LINES {
            guard.1.pop_front();
        }
        self.grew.notify_all();
    }

    pub fn seq(&self) -> u64 {
        self.lines.lock().unwrap_or_else(PoisonError::into_inner).0
    }

    /// Lines after number `since` (as many as are kept).
    pub fn since(&self, since: u64) -> Vec<String> {
        let guard = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        let new = usize::try_from(guard.0.saturating_sub(since)).unwrap_or(usize::MAX);
        guard.1.iter().rev().take(new).rev().cloned().collect()
    }

    /// The last `n` lines.
    pub fn last(&self, n: u64) -> Vec<String> {
        self.since(self.seq().saturating_sub(n))
    }

    pub fn wait(&self, timeout: Duration) {
        let guard = self.lines.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = self.grew.wait_timeout(guard, timeout);
    }
}

/// The value of `field="..."` (or `field=word`) in a logfmt line, unescaped.
fn logfmt(line: &str, field: &str) -> Option<String> {
    let start = line.find(&format!("{field}="))? + field.len() + 1;
    let rest = &line[start..];
    let Some(quoted) = rest.strip_prefix('"') else {
        return rest.split_whitespace().next().map(str::to_owned);
    };
    let mut value = String::new();
    let mut chars = quoted.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => value.extend(chars.next()),
            '"' => return Some(value),
            c => value.push(c),
        }
    }
    Some(value)
}

/// What dockerd said went wrong: its last fatal line, else its last error line (message and
/// error), else its last line.
pub fn failure(lines: &[String]) -> String {
    let last = |level: &str| lines.iter().rev().find(|l| l.contains(&format!("level={level}")));
    let Some(line) = last("fatal").or_else(|| last("error")).or(lines.last()) else {
        return "no output".into();
    };
    match (logfmt(line, "msg"), logfmt(line, "error")) {
        (Some(msg), Some(error)) => format!("{msg}: {error}"),
        (Some(msg), None) => msg,
        _ => line.clone(),
    }
}
/// Spawns `command` (one of the engine's daemons, `name` in messages) with its output in
/// `file` and in `log`; error lines also reach the console. The receiver hears once per
/// output pipe that reached its end.
pub fn spawn_logged(
    command: &mut Command,
    name: &'static str,
    log: &Arc<Log>,
    file: &'static str,
) -> Result<(Child, mpsc::Receiver<()>), crate::Error> {
    command.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    super::super::power::default_signals(command);
    let mut child =
        children::spawn(command).map_err(|source| crate::Error::Start { program: name, source })?;
    let (done, drained) = mpsc::channel();
    let pipes: [Option<Box<dyn Read + Send>>; 2] = [
        child.stdout.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
        child.stderr.take().map(|p| Box::new(p) as Box<dyn Read + Send>),
    ];
    for pipe in pipes.into_iter().flatten() {
        let (log, done) = (log.clone(), done.clone());
        let _ = std::thread::Builder::new().name(format!("{name}-log")).spawn(move || {
            copy_log(pipe, name, &log, file);
            let _ = done.send(());
        });
    }
    Ok((child, drained))
}

fn copy_log(pipe: Box<dyn Read + Send>, name: &str, log: &Log, file: &str) {
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(file).ok();
    for line in std::io::BufReader::new(pipe).lines() {
        let Ok(line) = line else { break };
        if let Some(file) = &mut file {
            let _ = writeln!(file, "{line}");
        }
        if line.contains("level=error") || line.contains("level=fatal") {
            say(&format!("{name}: {line}"));
        }
        log.push(line);
    }
}

/// Waits up to `timeout` for `path` to appear (a daemon's socket).
pub fn wait_for_path(path: &str, timeout: Duration) -> bool {
    let deadline = std::time::Instant::now() + timeout;
    while !Path::new(path).exists() {
        if std::time::Instant::now() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    true
}

pub fn signal(child: &Child, signal: libc::c_int) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else { return };
    // SAFETY: kill(2) on our own child, which has not been reaped.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// `GET path` on dockerd's unix socket (HTTP/1.0: the reply ends when the connection does);
/// the status line and the body.
fn get(path: &str) -> Option<(String, String)> {
    let mut stream = std::os::unix::net::UnixStream::connect(SOCKET).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: docker\r\n\r\n").ok()?;
    let mut reply = Vec::new();
    let _ = stream.take(1 << 20).read_to_end(&mut reply);
    let reply = String::from_utf8_lossy(&reply);
    let (head, body) = reply.split_once("\r\n\r\n")?;
    Some((head.lines().next()?.to_owned(), body.to_owned()))
}

/// Whether dockerd answers its ping.
pub fn ping() -> bool {
    get("/_ping").is_some_and(|(status, _)| status.contains(" 200 "))
}

/// Whether dockerd announced a successful reload since `since` (its `daemon reload` event,
/// published whatever the log level).
pub fn reloaded_since(since: std::time::SystemTime) -> bool {
    let seconds = |t: std::time::SystemTime| {
        t.duration_since(std::time::UNIX_EPOCH).map_or(0.0, |d| d.as_secs_f64())
    };
    let now = std::time::SystemTime::now();
    // filters={"type":["daemon"]}
    let path = format!(
        "/events?since={:.3}&until={:.3}&filters=%7B%22type%22%3A%5B%22daemon%22%5D%7D",
        seconds(since),
        seconds(now)
    );
    get(&path).is_some_and(|(_, body)| body.contains("\"Action\":\"reload\""))
}

/// Replaces `path` with `data` so that a reader sees the old file or the new one.
pub fn write_atomically(path: &Path, data: &[u8]) -> Result<(), crate::Error> {
    let tmp = path.with_extension("json.tmp");
    path.parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&tmp, data))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(|source| crate::Error::Write { path: path.to_owned(), source })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_failure_is_dockerds_own_message() {
        let lines = vec![
            r#"time="t" level=info msg="Starting up""#.to_owned(),
            r#"time="t" level=error msg="Failed to GetDriver graph" driver=bogus error="graphdriver plugins are only supported with experimental mode""#.to_owned(),
        ];
        assert_eq!(
            failure(&lines),
            "Failed to GetDriver graph: graphdriver plugins are only supported with experimental mode"
        );
        let mut lines = lines;
        lines.push(r#"time="t" level=fatal msg="failed to start daemon: error initializing graphdriver: driver \"bogus\" not supported""#.to_owned());
        lines.push(r#"time="t" level=info msg="stopping""#.to_owned());
        assert_eq!(
            failure(&lines),
            r#"failed to start daemon: error initializing graphdriver: driver "bogus" not supported"#
        );
        assert_eq!(
            failure(&["unable to configure the Docker daemon".to_owned()]),
            "unable to configure the Docker daemon"
        );
        assert_eq!(failure(&[]), "no output");
    }
}
