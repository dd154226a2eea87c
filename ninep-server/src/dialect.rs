//! The three protocol variants: which one a connection speaks decides how the fields that differ
//! are read and written, from primitive stat records ([`crate::wire`]) up to whole messages
//! ([`crate::codec`]), so it sits below both.

/// The protocol variant a connection negotiated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// 9P2000.L
    L,
    /// 9P2000.u
    U,
    /// 9P2000
    Plain,
}

impl Dialect {
    /// The dialect named by a Tversion string, if it is one we speak.
    pub fn from_version(version: &[u8]) -> Option<Dialect> {
        match version {
            b"9P2000.L" => Some(Dialect::L),
            b"9P2000.u" => Some(Dialect::U),
            b"9P2000" => Some(Dialect::Plain),
            _ => None,
        }
    }

    pub fn version(self) -> &'static [u8] {
        match self {
            Dialect::L => b"9P2000.L",
            Dialect::U => b"9P2000.u",
            Dialect::Plain => b"9P2000",
        }
    }
}
