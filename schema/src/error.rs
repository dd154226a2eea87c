/// Why a key or value was refused. Every message names the key, the value and what is allowed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The friendly name or path matches no setting.
    #[error("{name}: no such key (known keys: {known})")]
    UnknownKey { name: String, known: String },
    /// The value does not fit the key's type or range.
    #[error("{key}: {value} {problem} (allowed: {allowed})")]
    Refused { key: String, value: String, problem: String, allowed: String },
    /// A key's path holds something other than a regular file (a symbolic link).
    #[error("{key}: must be a regular file holding the value, not a symbolic link")]
    NotAFile { key: String },
    /// The key is maintained by cairn itself.
    #[error("{key}: is managed by cairn and cannot be set")]
    Internal { key: String },
    /// A required key is missing from a configuration tree.
    #[error("{key}: missing from the tree at {path} (every key must be present; use reset to restore a default)")]
    Missing { key: String, path: String },
    /// A file in the tree is not any key's path.
    #[error("{path}: not a configuration key (known paths: {known})")]
    UnknownPath { path: String, known: String },
    /// The tree was written by a newer cairn.
    #[error("schema-version: {found} is newer than this cairn understands (up to {supported})")]
    TooNew { found: u32, supported: u32 },
    /// A migration step could not convert a stored value.
    #[error("migration to schema v{to}: {key}: {reason}")]
    Migration { to: u32, key: String, reason: String },
}

impl Error {
    /// A value too large to have been read (its size only is known).
    pub fn refused_too_long(key: &str, size: u64) -> Self {
        Error::Refused {
            key: key.to_owned(),
            value: format!("({size} bytes)"),
            problem: "is too long".into(),
            allowed: "a value of at most 1 MiB; `cairn reset` or `cairn set` replaces it".into(),
        }
    }

    /// Builds [`Error::Refused`], quoting the value the way a user would type it.
    pub(crate) fn refused(
        key: &str,
        value: &str,
        problem: impl Into<String>,
        allowed: impl Into<String>,
    ) -> Self {
        Error::Refused {
            key: key.to_owned(),
            value: quote(value),
            problem: problem.into(),
            allowed: allowed.into(),
        }
    }
}

/// Quotes a value for an error message: JSON string syntax escapes control characters, and very
/// long values are cut so that an error stays one readable line.
pub(crate) fn quote(value: &str) -> String {
    const MAX: usize = 60;
    if value.chars().count() > MAX {
        let head: String = value.chars().take(MAX).collect();
        let quoted = serde_json::Value::String(head).to_string();
        format!("{}...\" ({} bytes)", &quoted[..quoted.len() - 1], value.len())
    } else {
        serde_json::Value::String(value.to_owned()).to_string()
    }
}
