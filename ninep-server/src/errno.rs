//! The Linux errno values 9P2000.L replies carry (Rlerror), and their names for 9P2000.u's Rerror.
//!
//! An [`Errno`] is what every failing filesystem call and request handler returns: a type of its
//! own, so that an errno cannot be mixed up with the counts, modes and fids that are `u32`s too.

use std::fmt;

/// An error number as a failed request answers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Errno(u32);

pub const EPERM: Errno = Errno(1);
pub const ENOENT: Errno = Errno(2);
pub const EIO: Errno = Errno(5);
pub const EBADF: Errno = Errno(9);
pub const EACCES: Errno = Errno(13);
pub const EBUSY: Errno = Errno(16);
pub const EEXIST: Errno = Errno(17);
pub const ENOTDIR: Errno = Errno(20);
pub const EISDIR: Errno = Errno(21);
pub const EINVAL: Errno = Errno(22);
pub const EMFILE: Errno = Errno(24);
pub const EFBIG: Errno = Errno(27);
pub const ENOSPC: Errno = Errno(28);
pub const EROFS: Errno = Errno(30);
pub const ENOTEMPTY: Errno = Errno(39);
pub const ENODATA: Errno = Errno(61);
pub const EPROTO: Errno = Errno(71);
pub const EOPNOTSUPP: Errno = Errno(95);

/// A walk through a file: ENOTDIR to 9P2000.L clients, and to the others DataKit's own words,
/// which go-datakit compares (a distinct code keeps the two apart until the reply is made).
pub const WALK_FROM_FILE: Errno = Errno(0x1_0000 | ENOTDIR.0);

impl Errno {
    /// An errno as a reply carried it (Rlerror's ecode, Rerror's errno).
    pub const fn from_wire(code: u32) -> Errno {
        Errno(code)
    }

    /// The number the reply carries: [`WALK_FROM_FILE`] goes out as ENOTDIR.
    pub const fn wire(self) -> u32 {
        self.0 & 0xffff
    }

    /// The message 9P2000.u and 9P2000 clients get with the number.
    pub fn describe(self) -> &'static str {
        match self {
            WALK_FROM_FILE => "Can't walk from a file",
            EPERM => "Operation not permitted",
            ENOENT => "No such file or directory",
            EIO => "Input/output error",
            EBADF => "Bad file descriptor",
            EACCES => "Permission denied",
            EBUSY => "Device or resource busy",
            EEXIST => "File exists",
            ENOTDIR => "Not a directory",
            EISDIR => "Is a directory",
            EINVAL => "Invalid argument",
            EMFILE => "Too many open files",
            EFBIG => "File too large",
            ENOSPC => "No space left on device",
            EROFS => "Read-only file system",
            ENOTEMPTY => "Directory not empty",
            ENODATA => "No data available",
            EPROTO => "Protocol error",
            EOPNOTSUPP => "Operation not supported",
            _ => "Error",
        }
    }
}

/// The number itself, as it was made or received.
impl fmt::Display for Errno {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_from_file_is_enotdir_on_the_wire_with_its_own_words() {
        assert_eq!(WALK_FROM_FILE.wire(), 20);
        assert_eq!(ENOTDIR.wire(), 20);
        assert_ne!(WALK_FROM_FILE, ENOTDIR);
        assert_eq!(WALK_FROM_FILE.describe(), "Can't walk from a file");
        assert_eq!(ENOTDIR.describe(), "Not a directory");
        assert_eq!(Errno::from_wire(2), ENOENT);
    }
}
