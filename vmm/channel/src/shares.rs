//! The host directories a boot shares, as the guest's kernel command line tells the agent.
//!
//! The devices carry only a short tag (virtiofs allows 36 bytes), not the path the guest must
//! mount them at, and the configuration may change while the VM boots: the boot's own record,
//! written by the control plane that started it, is the one place both ends agree on. One word
//! per share (`cairn.share=TAG:PATH`) and per hidden directory (`cairn.hide=PATH`), paths
//! percent-encoded so that spaces and non-ASCII bytes survive the command line.

/// How the shares reach the guest.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// virtiofsd on the host, `vhost-user-fs-pci` in the VM.
    Virtiofs,
    /// qemu's own 9P server (`-virtfs`).
    NineP,
}

impl Transport {
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Virtiofs => "virtiofs",
            Transport::NineP => "9p",
        }
    }
}

/// One shared directory: the device's tag and where the guest mounts it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Share {
    pub tag: String,
    pub path: String,
}

/// What a boot shares.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Boot {
    pub transport: Option<Transport>,
    pub shares: Vec<Share>,
    /// Directories inside a share that the guest must see empty and read-only ($CAIRN_HOME).
    pub hidden: Vec<String>,
}

const TRANSPORT: &str = "cairn.sharing=";
const SHARE: &str = "cairn.share=";
const HIDE: &str = "cairn.hide=";

impl Boot {
    /// The words for the kernel command line, each with a leading space; empty when nothing
    /// is shared.
    pub fn kernel_args(&self) -> String {
        let Some(transport) = self.transport.filter(|_| !self.shares.is_empty()) else {
            return String::new();
        };
        let mut args = format!(" {TRANSPORT}{}", transport.as_str());
        for share in &self.shares {
            args.push_str(&format!(" {SHARE}{}:{}", share.tag, encode(&share.path)));
        }
        for hidden in &self.hidden {
            args.push_str(&format!(" {HIDE}{}", encode(hidden)));
        }
        args
    }

    /// Takes one word of the command line: `Ok(false)` when it is not about shares.
    pub fn take_word(&mut self, word: &str) -> Result<bool, String> {
        if let Some(name) = word.strip_prefix(TRANSPORT) {
            self.transport = Some(match name {
                "virtiofs" => Transport::Virtiofs,
                "9p" => Transport::NineP,
                _ => return Err(format!("{word}: expected virtiofs or 9p")),
            });
        } else if let Some(share) = word.strip_prefix(SHARE) {
            let parsed = share.split_once(':').and_then(|(tag, path)| {
                let path = decode(path)?;
                (!tag.is_empty() && path.starts_with('/')).then(|| Share { tag: tag.into(), path })
            });
            self.shares.push(parsed.ok_or_else(|| format!("{word}: expected TAG:/PATH"))?);
        } else if let Some(path) = word.strip_prefix(HIDE) {
            let path = decode(path).filter(|p| p.starts_with('/'));
            self.hidden.push(path.ok_or_else(|| format!("{word}: expected /PATH"))?);
        } else {
            return Ok(false);
        }
        Ok(true)
    }
}

/// `path` with every byte but letters, digits and `/._-` as `%XX`.
pub fn encode(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for byte in path.bytes() {
        if byte.is_ascii_alphanumeric() || b"/._-".contains(&byte) {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// The path [`encode`] wrote; `None` for a broken escape or bytes that are not UTF-8.
pub fn decode(word: &str) -> Option<String> {
    let bytes = word.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_boot_survives_the_command_line() {
        let boot = Boot {
            transport: Some(Transport::Virtiofs),
            shares: vec![
                Share { tag: "share0".into(), path: "/home/me/My Files,ü%".into() },
                Share { tag: "share1".into(), path: "/tmp".into() },
            ],
            hidden: vec!["/home/me/.cairn".into()],
        };
        let args = boot.kernel_args();
        assert_eq!(args.split_whitespace().count(), 4, "one word each: {args}");
        let mut back = Boot::default();
        for word in format!("console=ttyS0{args} quiet").split_whitespace() {
            back.take_word(word).expect("valid");
        }
        assert_eq!(back, boot);
    }

    #[test]
    fn nothing_shared_says_nothing() {
        assert_eq!(Boot { transport: Some(Transport::NineP), ..Boot::default() }.kernel_args(), "");
    }

    #[test]
    fn bad_words_are_refused() {
        let mut boot = Boot::default();
        assert!(boot.take_word("cairn.sharing=osxfs").is_err());
        assert!(boot.take_word("cairn.share=share0:relative").is_err());
        assert!(boot.take_word("cairn.share=:/tmp").is_err());
        assert!(boot.take_word("cairn.hide=/a%2").is_err());
        assert_eq!(boot.take_word("quiet"), Ok(false));
    }
}
