//! `run/control.sock`: how other cairn commands ask the running `cairn up` to act on its VM
//! (`cairn vm start|stop|restart|pause|resume`). One line in, one line out: the request's word, then `ok`
//! or `error: why`. The socket lives in the private run directory, mode 0600.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::mpsc::Sender;
use std::time::Duration;

use super::events::Event;
use crate::Error;

/// A command for the control loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    VmStart,
    VmStop,
    VmRestart,
    VmPause,
    VmResume,
}

impl Request {
    pub fn as_str(self) -> &'static str {
        match self {
            Request::VmStart => "vm start",
            Request::VmStop => "vm stop",
            Request::VmRestart => "vm restart",
            Request::VmPause => "vm pause",
            Request::VmResume => "vm resume",
        }
    }

    pub fn parse(line: &str) -> Option<Request> {
        [Request::VmStart, Request::VmStop, Request::VmRestart, Request::VmPause, Request::VmResume]
            .into_iter()
            .find(|r| r.as_str() == line.trim())
    }
}

/// How long an answer may take: the loop answers once it has started the action.
const ANSWER_WITHIN: Duration = Duration::from_secs(60);

/// Serves the control socket at `path` on a thread of its own, for as long as the process
/// runs.
pub fn serve(path: &Path, events: Sender<Event>) -> Result<(), Error> {
    let _ = std::fs::remove_file(path);
    let listener = UnixListener::bind(path).map_err(|e| Error::io(path, e))?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| Error::io(path, e))?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for client in listener.incoming().flatten() {
                answer(client, &events);
            }
        })
        .map_err(|e| Error::io(Path::new("the control socket's thread"), e))?;
    Ok(())
}

fn answer(client: UnixStream, events: &Sender<Event>) {
    let _ = client.set_read_timeout(Some(Duration::from_secs(5)));
    let mut line = String::new();
    if BufReader::new(&client).take(256).read_line(&mut line).is_err() {
        return;
    }
    let reply = match Request::parse(&line) {
        None => format!("error: unknown request {:?}", line.trim()),
        Some(request) => {
            let (tx, rx) = std::sync::mpsc::channel();
            match events.send(Event::Control(request, tx)) {
                Err(_) => "error: cairn up is stopping".into(),
                Ok(()) => rx
                    .recv_timeout(ANSWER_WITHIN)
                    .unwrap_or_else(|_| "error: no answer from the control loop".into()),
            }
        }
    };
    let _ = (&client).write_all(format!("{reply}\n").as_bytes());
}

/// Asks the `cairn up` whose control socket is `path`; its answer (`ok`, or the error).
pub fn ask(path: &Path, request: Request) -> Result<String, Error> {
    let mut stream = UnixStream::connect(path).map_err(|e| Error::io(path, e))?;
    stream.set_read_timeout(Some(ANSWER_WITHIN)).map_err(|e| Error::io(path, e))?;
    stream
        .write_all(format!("{}\n", request.as_str()).as_bytes())
        .map_err(|e| Error::io(path, e))?;
    let mut reply = String::new();
    BufReader::new(&stream).read_line(&mut reply).map_err(|e| Error::io(path, e))?;
    Ok(reply.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_reaches_the_loop_and_its_answer_comes_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("control.sock");
        let (events, inbox) = std::sync::mpsc::channel();
        serve(&path, events).expect("serves");
        let loop_side = std::thread::spawn(move || match inbox.recv() {
            Ok(Event::Control(Request::VmStop, reply)) => reply.send("ok".into()).is_ok(),
            _ => false,
        });
        assert_eq!(ask(&path, Request::VmStop).expect("asks"), "ok");
        assert!(loop_side.join().expect("joins"));
        assert_eq!(Request::parse("vm restart\n"), Some(Request::VmRestart));
        assert_eq!(Request::parse("vm dance"), None);
    }
}
