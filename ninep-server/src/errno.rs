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
pub const EFBIG: u32 = 27;
pub const EROFS: u32 = 30;
pub const ENOTEMPTY: u32 = 39;
pub const ENODATA: u32 = 61;
pub const EOPNOTSUPP: u32 = 95;

/// The message 9P2000.u and 9P2000 clients get with the number.
pub fn describe(errno: u32) -> &'static str {
    match errno {
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
        EFBIG => "File too large",
        EROFS => "Read-only file system",
        ENOTEMPTY => "Directory not empty",
        ENODATA => "No data available",
        EOPNOTSUPP => "Operation not supported",
        _ => "Error",
    }
}
