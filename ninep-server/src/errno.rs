//! The Linux errno values 9P2000.L replies carry (Rlerror), and their names for 9P2000.u's Rerror.

pub const EPERM: u32 = 1;
pub const ENOENT: u32 = 2;
pub const EIO: u32 = 5;
pub const EBADF: u32 = 9;
pub const EACCES: u32 = 13;
pub const EBUSY: u32 = 16;
pub const EEXIST: u32 = 17;
pub const ENOTDIR: u32 = 20;
pub const EISDIR: u32 = 21;
pub const EINVAL: u32 = 22;
pub const EMFILE: u32 = 24;
pub const EFBIG: u32 = 27;
pub const ENOSPC: u32 = 28;
pub const EROFS: u32 = 30;
pub const ENOTEMPTY: u32 = 39;
pub const ENODATA: u32 = 61;
pub const EPROTO: u32 = 71;
pub const EOPNOTSUPP: u32 = 95;

/// A walk through a file: ENOTDIR to 9P2000.L clients, and to the others DataKit's own words,
/// which go-datakit compares (a distinct code keeps the two apart until the reply is made).
pub const WALK_FROM_FILE: u32 = 0x1_0000 | ENOTDIR;

/// The errno a code stands for on the wire.
pub fn errno_of(code: u32) -> u32 {
    code & 0xffff
}

/// The message 9P2000.u and 9P2000 clients get with the number.
pub fn describe(errno: u32) -> &'static str {
    match errno {
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
