//! A few commands over qemu's QMP socket (JSON lines). qemu offers no other way to ask the
//! guest to shut down: SIGTERM ends qemu itself at once.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

/// Runs one QMP command; its `return` value, or the error qemu gave.
pub fn execute(socket: &Path, command: Value) -> std::io::Result<Value> {
    let stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(Duration::from_secs(2)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut reply = || -> std::io::Result<Value> {
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line)? == 0 {
                return Err(std::io::Error::other("qemu closed QMP"));
            }
            let value: Value = serde_json::from_str(&line).map_err(std::io::Error::other)?;
            // Greetings and asynchronous events come in between.
            if let Some(ret) = value.get("return") {
                return Ok(ret.clone());
            }
            if let Some(err) = value.get("error") {
                return Err(std::io::Error::other(err.to_string()));
            }
        }
    };
    writeln!(writer, "{}", json!({"execute": "qmp_capabilities"}))?;
    reply()?;
    writeln!(writer, "{command}")?;
    reply()
}

/// Presses Ctrl-Alt-Del: the guest agent (PID 1) powers off cleanly when it gets it.
pub fn ctrl_alt_del(socket: &Path) -> std::io::Result<()> {
    let key = |k: &str| json!({"type": "qcode", "data": k});
    let keys = json!([key("ctrl"), key("alt"), key("delete")]);
    execute(socket, json!({"execute": "send-key", "arguments": {"keys": keys}})).map(drop)
}

/// Stops the vCPUs (`stop`): the guest runs no instruction, qemu's devices stay as they are.
pub fn stop(socket: &Path) -> std::io::Result<()> {
    execute(socket, json!({"execute": "stop"})).map(drop)
}

/// Lets stopped vCPUs run again (`cont`).
pub fn cont(socket: &Path) -> std::io::Result<()> {
    execute(socket, json!({"execute": "cont"})).map(drop)
}

/// Whether the vCPUs are stopped (`query-status`), as an earlier control plane may have left
/// them.
pub fn stopped(socket: &Path) -> std::io::Result<bool> {
    let status = execute(socket, json!({"execute": "query-status"}))?;
    Ok(status.get("running").and_then(serde_json::Value::as_bool) == Some(false))
}

/// Grows the data disk as the guest sees it to `bytes` (the file has been grown already).
pub fn block_resize(socket: &Path, drive: &str, bytes: u64) -> std::io::Result<()> {
    let arguments = json!({"device": drive, "size": bytes});
    execute(socket, json!({"execute": "block_resize", "arguments": arguments})).map(drop)
}
