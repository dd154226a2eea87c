//! Exit codes, part of the CLI contract: scripts branch on them.

use cairn::db::Error as DbError;

/// Success.
pub const OK: i32 = 0;
/// Anything else that went wrong at run time.
pub const RUNTIME: i32 = 1;
/// The command line is wrong (clap uses 2 as well).
pub const USAGE: i32 = 2;
/// The schema refused a value; nothing changed.
pub const REFUSED: i32 = 3;
/// `--wait` or `cairn wait` gave up.
pub const TIMEOUT: i32 = 4;
/// The branch moved (`--expect`) or another writer changed the same key; nothing changed.
pub const CONFLICT: i32 = 5;

/// A command-line mistake found after parsing (a missing value, a bad pair).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// Waiting for the guest took longer than allowed.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TimedOut(pub String);

/// The exit code for an error.
pub fn code_of(err: &anyhow::Error) -> i32 {
    if err.downcast_ref::<Usage>().is_some() {
        return USAGE;
    }
    if err.downcast_ref::<TimedOut>().is_some() {
        return TIMEOUT;
    }
    if err.downcast_ref::<cairn::schema::Error>().is_some() {
        return REFUSED;
    }
    match err.downcast_ref::<DbError>() {
        Some(DbError::Refused(_)) => REFUSED,
        Some(DbError::Conflict { .. } | DbError::Moved { .. }) => CONFLICT,
        _ => RUNTIME,
    }
}
