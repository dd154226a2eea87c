//! The serial console's log: a file that never grows past its bound. When it reaches the
//! bound it keeps its newest half (cut at a line), so the file always starts at a whole line
//! and holds the most recent output, which is what someone debugging a boot reads.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

#[derive(Debug)]
pub struct ConsoleLog {
    path: PathBuf,
    file: File,
    len: u64,
    limit: u64,
}

impl ConsoleLog {
    /// Starts an empty log at `path`, bounded to `limit` bytes (at least 4 KiB).
    pub fn create(path: &Path, limit: u64) -> std::io::Result<ConsoleLog> {
        let file = File::create(path)?;
        Ok(ConsoleLog { path: path.to_owned(), file, len: 0, limit: limit.max(4096) })
    }

    fn keep_newest_half(&mut self) -> std::io::Result<()> {
        let mut data = Vec::new();
        let mut reader = File::open(&self.path)?;
        reader.seek(SeekFrom::Start(self.len.saturating_sub(self.limit / 2)))?;
        reader.read_to_end(&mut data)?;
        let cut = data.iter().position(|b| *b == b'\n').map_or(0, |i| i + 1);
        self.file.set_len(0)?;
        self.file.seek(SeekFrom::Start(0))?;
        self.file.write_all(&data[cut..])?;
        self.len = (data.len() - cut) as u64;
        Ok(())
    }
}

impl Write for ConsoleLog {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.len + buf.len() as u64 > self.limit {
            self.keep_newest_half()?;
        }
        self.file.write_all(buf)?;
        self.len += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_keeps_its_newest_whole_lines_within_the_bound() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("console.log");
        let mut log = ConsoleLog::create(&path, 4096).expect("creates");
        for i in 0..1000 {
            writeln!(log, "line {i}").expect("writes");
        }
        let text = std::fs::read_to_string(&path).expect("reads");
        assert!(text.len() <= 4096, "{} bytes", text.len());
        assert!(text.starts_with("line ") && text.ends_with("line 999\n"), "{text}");
    }
}
