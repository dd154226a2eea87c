//! The control plane's small JSON files (status.json, vm.json, hypervisors.json): written
//! whole or not at all, by a temporary file renamed over the old one, so that a reader (or a
//! crash) never sees half a file.

use std::path::Path;

/// Writes `value` as pretty JSON at `path`, atomically.
pub fn save(path: &Path, value: &impl serde::Serialize) -> std::io::Result<()> {
    let tmp = path.with_extension("json.tmp");
    let json = serde_json::to_vec_pretty(value).map_err(std::io::Error::other)?;
    std::fs::write(&tmp, json)?;
    std::fs::rename(&tmp, path)
}

/// The value in `path`, if there is a readable one.
pub fn load<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    serde_json::from_slice(&std::fs::read(path).ok()?).ok()
}
