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

/// The exit code for an error: the first cause in its chain that has one of its own, so a
/// refused value wrapped in context ("reading daemon.json: ...") still exits 3.
pub fn code_of(err: &anyhow::Error) -> i32 {
    err.chain().find_map(code_of_cause).unwrap_or(RUNTIME)
}

fn code_of_cause(cause: &(dyn std::error::Error + 'static)) -> Option<i32> {
    if cause.is::<Usage>() {
        return Some(USAGE);
    }
    if cause.is::<TimedOut>() {
        return Some(TIMEOUT);
    }
    if cause.is::<cairn::schema::Error>() {
        return Some(REFUSED);
    }
    match cause.downcast_ref::<DbError>()? {
        DbError::Refused(_) => Some(REFUSED),
        DbError::Conflict { .. } | DbError::Moved { .. } => Some(CONFLICT),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context;

    #[test]
    fn a_refusal_under_context_still_exits_3() {
        let refused = cairn::schema::by_name("nope").expect_err("not a key");
        let wrapped: anyhow::Result<()> =
            Err(DbError::Refused(refused)).context("applying saved.json").context("cairn apply");
        assert_eq!(code_of(&wrapped.expect_err("an error")), REFUSED);
        let timed: anyhow::Result<()> = Err(TimedOut("late".into())).context("waiting");
        assert_eq!(code_of(&timed.expect_err("an error")), TIMEOUT);
        assert_eq!(code_of(&anyhow::anyhow!("other")), RUNTIME);
    }
}
