//! `cairn shell`: a process in the guest's own namespaces (not a container), started by the
//! agent for the host, with its standard streams and exit code carried on a [`SERVICE`] stream.
//!
//! One stream carries everything both ways as frames, `kind (1 byte) | length (u32, big
//! endian) | payload`, so that standard output and error stay apart, a window size can follow
//! a terminal, the end of standard input can be told without closing the stream, and the exit
//! code comes last. The host's first frame is [`Frame::Start`]; the guest's last is
//! [`Frame::Exit`] (or [`Frame::Failed`] when nothing could be started).
//!
//! The codec is sans-I/O ([`Frame::encode`], [`Decoder`]): the agent drives it from tokio and
//! the host's CLI from threads, and both share these bytes exactly.

/// The service of a shell stream (no arguments: the request is the first frame).
pub const SERVICE: &str = "shell";

/// The largest payload a frame may carry; data is cut into frames of at most this.
pub const MAX_PAYLOAD: usize = 64 << 10;

/// What to run, and how.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// The program and its arguments, looked up on the guest's PATH; empty: root's shell.
    pub argv: Vec<String>,
    /// A pseudo-terminal for an interactive session; `None`: pipes, binary-safe.
    pub tty: Option<Tty>,
}

/// The terminal a session runs on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tty {
    pub rows: u16,
    pub cols: u16,
    /// `TERM` for the guest's programs.
    pub term: String,
}

/// One frame of a shell stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// host -> guest, first: what to run.
    Start(Request),
    /// host -> guest: bytes for the process's standard input (or the terminal).
    Stdin(Vec<u8>),
    /// host -> guest: standard input ended.
    StdinEnd,
    /// host -> guest: the terminal's new size.
    Resize { rows: u16, cols: u16 },
    /// guest -> host: what the process wrote to standard output (or the terminal).
    Stdout(Vec<u8>),
    /// guest -> host: what it wrote to standard error.
    Stderr(Vec<u8>),
    /// guest -> host, last: the exit code (128 + N when signal N ended it, as shells say).
    Exit(i32),
    /// guest -> host, last: why nothing could be started.
    Failed(String),
}

/// Why bytes are not a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("unknown frame kind {0}")]
    Kind(u8),
    #[error("a frame of {0} bytes (at most {MAX_PAYLOAD})")]
    TooLong(usize),
    #[error("a malformed {0} frame")]
    Malformed(&'static str),
}

const START: u8 = 1;
const STDIN: u8 = 2;
const STDIN_END: u8 = 3;
const RESIZE: u8 = 4;
const STDOUT: u8 = 5;
const STDERR: u8 = 6;
const EXIT: u8 = 7;
const FAILED: u8 = 8;

const HEADER: usize = 5;

impl Frame {
    /// The frame's bytes, header included.
    pub fn encode(&self) -> Vec<u8> {
        let (kind, payload): (u8, std::borrow::Cow<'_, [u8]>) = match self {
            Frame::Start(request) => (START, encode_request(request).into()),
            Frame::Stdin(data) => (STDIN, data.as_slice().into()),
            Frame::StdinEnd => (STDIN_END, (&[][..]).into()),
            Frame::Resize { rows, cols } => {
                let mut bytes = rows.to_be_bytes().to_vec();
                bytes.extend_from_slice(&cols.to_be_bytes());
                (RESIZE, bytes.into())
            }
            Frame::Stdout(data) => (STDOUT, data.as_slice().into()),
            Frame::Stderr(data) => (STDERR, data.as_slice().into()),
            Frame::Exit(code) => (EXIT, code.to_be_bytes().to_vec().into()),
            Frame::Failed(why) => (FAILED, why.as_bytes().into()),
        };
        let mut out = Vec::with_capacity(HEADER + payload.len());
        out.push(kind);
        // Payloads are cut to MAX_PAYLOAD by their writers; a request is a few hundred bytes.
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&payload);
        out
    }
}

/// The request as bytes: a flag for the terminal, its size and TERM (u16-length-prefixed),
/// then each argument NUL-terminated.
fn encode_request(request: &Request) -> Vec<u8> {
    let mut out = Vec::new();
    match &request.tty {
        Some(tty) => {
            out.push(1);
            out.extend_from_slice(&tty.rows.to_be_bytes());
            out.extend_from_slice(&tty.cols.to_be_bytes());
            let term = &tty.term.as_bytes()[..tty.term.len().min(255)];
            out.extend_from_slice(&(term.len() as u16).to_be_bytes());
            out.extend_from_slice(term);
        }
        None => out.push(0),
    }
    for arg in &request.argv {
        out.extend(arg.bytes().filter(|b| *b != 0));
        out.push(0);
    }
    out
}

fn decode_request(bytes: &[u8]) -> Result<Request, FrameError> {
    let bad = || FrameError::Malformed("start");
    let (&flag, mut rest) = bytes.split_first().ok_or_else(bad)?;
    let mut take = |n: usize| -> Result<&[u8], FrameError> {
        let (head, tail) = rest.split_at_checked(n).ok_or_else(bad)?;
        rest = tail;
        Ok(head)
    };
    let u16_of = |b: &[u8]| u16::from_be_bytes([b[0], b[1]]);
    let tty = match flag {
        0 => None,
        1 => {
            let rows = u16_of(take(2)?);
            let cols = u16_of(take(2)?);
            let len = usize::from(u16_of(take(2)?));
            let term = String::from_utf8(take(len)?.to_vec()).map_err(|_| bad())?;
            Some(Tty { rows, cols, term })
        }
        _ => return Err(bad()),
    };
    let argv_bytes = rest;
    let mut argv = Vec::new();
    if !argv_bytes.is_empty() {
        let body = argv_bytes.strip_suffix(&[0]).ok_or_else(bad)?;
        for arg in body.split(|b| *b == 0) {
            argv.push(String::from_utf8(arg.to_vec()).map_err(|_| bad())?);
        }
    }
    Ok(Request { argv, tty })
}

/// Frames out of a byte stream read in pieces of any size.
#[derive(Debug, Default)]
pub struct Decoder {
    buffer: Vec<u8>,
}

impl Decoder {
    /// Bytes as they were read.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buffer.extend_from_slice(bytes);
    }

    /// The next whole frame, if the bytes so far hold one.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        let Some(header) = self.buffer.get(..HEADER) else { return Ok(None) };
        let kind = header[0];
        let len = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
        if len > MAX_PAYLOAD {
            return Err(FrameError::TooLong(len));
        }
        if !(START..=FAILED).contains(&kind) {
            return Err(FrameError::Kind(kind));
        }
        let Some(payload) = self.buffer.get(HEADER..HEADER + len) else { return Ok(None) };
        let frame = match kind {
            START => Frame::Start(decode_request(payload)?),
            STDIN => Frame::Stdin(payload.to_vec()),
            STDIN_END => Frame::StdinEnd,
            RESIZE => match payload {
                [r0, r1, c0, c1] => Frame::Resize {
                    rows: u16::from_be_bytes([*r0, *r1]),
                    cols: u16::from_be_bytes([*c0, *c1]),
                },
                _ => return Err(FrameError::Malformed("resize")),
            },
            STDOUT => Frame::Stdout(payload.to_vec()),
            STDERR => Frame::Stderr(payload.to_vec()),
            EXIT => match payload {
                [a, b, c, d] => Frame::Exit(i32::from_be_bytes([*a, *b, *c, *d])),
                _ => return Err(FrameError::Malformed("exit")),
            },
            _ => Frame::Failed(String::from_utf8_lossy(payload).into_owned()),
        };
        self.buffer.drain(..HEADER + len);
        Ok(Some(frame))
    }
}

/// The exit code a shell would give a process that ended with `status` (a raw wait status).
pub fn exit_code(status: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => code,
        (None, Some(signal)) => 128 + signal,
        (None, None) => 1,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frames: &[Frame], piece: usize) -> Vec<Frame> {
        let bytes: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
        let mut decoder = Decoder::default();
        let mut out = Vec::new();
        for chunk in bytes.chunks(piece) {
            decoder.push(chunk);
            while let Some(frame) = decoder.next_frame().expect("decodes") {
                out.push(frame);
            }
        }
        out
    }

    #[test]
    fn every_frame_round_trips_whatever_the_reads() {
        let frames = vec![
            Frame::Start(Request {
                argv: vec!["sh".into(), "-c".into(), "echo 'a b'; exit 7".into(), String::new()],
                tty: Some(Tty { rows: 40, cols: 132, term: "xterm-256color".into() }),
            }),
            Frame::Start(Request::default()),
            Frame::Stdin((0..=255).collect()),
            Frame::StdinEnd,
            Frame::Resize { rows: 24, cols: 80 },
            Frame::Stdout(vec![0; MAX_PAYLOAD]),
            Frame::Stderr(b"err\n".to_vec()),
            Frame::Exit(-1),
            Frame::Exit(130),
            Frame::Failed("no such program".into()),
        ];
        for piece in [1, 3, 7, 4096, 1 << 20] {
            assert_eq!(round_trip(&frames, piece), frames, "in pieces of {piece}");
        }
    }

    #[test]
    fn bad_bytes_are_errors_not_panics() {
        let mut decoder = Decoder::default();
        decoder.push(&[99, 0, 0, 0, 0]);
        assert_eq!(decoder.next_frame(), Err(FrameError::Kind(99)));
        let mut decoder = Decoder::default();
        decoder.push(&[STDIN, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(decoder.next_frame(), Err(FrameError::TooLong(_))));
        for payload in
            [&[][..], &[2][..], &[1, 0][..], &[1, 0, 1, 0, 1, 0, 9, b'x'][..], &[0, b'a']]
        {
            let mut bytes = vec![START];
            bytes.extend_from_slice(&(payload.len() as u32).to_be_bytes());
            bytes.extend_from_slice(payload);
            let mut decoder = Decoder::default();
            decoder.push(&bytes);
            assert_eq!(decoder.next_frame(), Err(FrameError::Malformed("start")), "{payload:?}");
        }
        let mut decoder = Decoder::default();
        decoder.push(&[RESIZE, 0, 0, 0, 1, 5]);
        assert_eq!(decoder.next_frame(), Err(FrameError::Malformed("resize")));
    }

    #[test]
    fn a_partial_frame_waits_for_the_rest() {
        let bytes = Frame::Stdout(b"hello".to_vec()).encode();
        let mut decoder = Decoder::default();
        decoder.push(&bytes[..7]);
        assert_eq!(decoder.next_frame(), Ok(None));
        decoder.push(&bytes[7..]);
        assert_eq!(decoder.next_frame(), Ok(Some(Frame::Stdout(b"hello".to_vec()))));
        assert_eq!(decoder.next_frame(), Ok(None));
    }

    #[test]
    fn exit_codes_as_a_shell_gives_them() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit_code(std::process::ExitStatus::from_raw(7 << 8)), 7);
        // A raw wait status of 2: killed by SIGINT.
        assert_eq!(exit_code(std::process::ExitStatus::from_raw(2)), 130);
    }
}
