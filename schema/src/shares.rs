//! `file-sharing`: the host directories that the guest mounts at the same paths, so that
//! `docker run -v "$PWD":/src` works unchanged from inside any of them.
//!
//! One absolute path per line (paths may hold commas and spaces, so lines are the only
//! separator). The guest mounts each at its own path, over its own file system: a directory
//! the guest's system lives in (`/usr`, `/etc`, ...) or one that holds such a directory (`/`)
//! would replace the guest's own files, so they are refused, and so are entries inside one
//! another (the guest could not mount both, and the inner one would be shared twice).

use crate::Error;

/// Most directories shared at once: each is a device of the VM.
pub const MAX_SHARES: usize = 16;

/// Longest path shared: all of them go on the guest's kernel command line.
pub const MAX_PATH: usize = 256;

/// The guest's own directories, which a share may neither be, be inside, nor contain.
pub const GUEST_SYSTEM: &[&str] = &[
    "/bin",
    "/boot",
    "/dev",
    "/etc",
    "/init",
    "/lib",
    "/lib64",
    "/proc",
    "/run",
    "/sbin",
    "/sys",
    "/usr",
    "/var",
    "/Database",
];

/// What the setting accepts, for error messages.
pub const ALLOWED: &str = "absolute paths of host directories, one per line, none inside \
    another, not / nor a directory of the guest's system (/usr, /etc, /var, /run, ...)";

/// Parses the setting into its paths (without trailing slashes), or says which line is wrong
/// and why. `existing` also requires every path to be a directory now (a new value from a
/// user); a stored value is not refused for a directory that went away since, which `cairn up`
/// reports instead.
pub fn parse(key: &str, text: &str, existing: bool) -> Result<Vec<String>, Error> {
    let mut paths: Vec<(usize, String)> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let number = index + 1;
        let item = raw.trim();
        if item.is_empty() {
            continue;
        }
        let refuse = |problem: String| {
            Error::refused(key, item, format!("(line {number}) {problem}"), ALLOWED)
        };
        let path = normal(item).map_err(|p| refuse(p.into()))?;
        if path.len() > MAX_PATH {
            return Err(refuse(format!("is longer than {MAX_PATH} bytes")));
        }
        if let Some(system) = GUEST_SYSTEM.iter().find(|s| inside(&path, s) || inside(s, &path)) {
            return Err(refuse(format!("would hide the guest's own {system}")));
        }
        if let Some((other, earlier)) =
            paths.iter().find(|(_, p)| inside(&path, p) || inside(p, &path))
        {
            let how = if *earlier == path {
                "repeats"
            } else if inside(&path, earlier) {
                "is inside"
            } else {
                "contains"
            };
            return Err(refuse(format!("{how} {earlier} of line {other}")));
        }
        if existing && !std::path::Path::new(&path).is_dir() {
            return Err(refuse("is not a directory on this host".into()));
        }
        if paths.len() == MAX_SHARES {
            return Err(refuse(format!(
                "is one more than the {MAX_SHARES} directories a VM can share"
            )));
        }
        paths.push((number, path));
    }
    Ok(paths.into_iter().map(|(_, p)| p).collect())
}

/// `path` without a trailing slash, or why it is no path to share.
fn normal(path: &str) -> Result<String, &'static str> {
    if !path.starts_with('/') {
        return Err("is not an absolute path");
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return Err("is the host's whole file system (/)");
    }
    if trimmed.split('/').skip(1).any(|c| c.is_empty() || c == "." || c == "..") {
        return Err("has an empty, . or .. component (write the path plainly)");
    }
    if trimmed.chars().any(char::is_control) {
        return Err("holds a control character");
    }
    Ok(trimmed.to_owned())
}

/// Whether `path` is `dir` or inside it, component-wise (`/tmpx` is not inside `/tmp`).
pub fn inside(path: &str, dir: &str) -> bool {
    path == dir || path.strip_prefix(dir).is_some_and(|rest| rest.starts_with('/'))
}

/// The default: the home directory of the user running cairn, and /tmp.
pub fn default_text() -> String {
    let home = std::env::var("HOME").ok().and_then(|h| normal(&h).ok());
    let usable = home.filter(|h| {
        !inside("/tmp", h)
            && !inside(h, "/tmp")
            && !GUEST_SYSTEM.iter().any(|s| inside(h, s) || inside(s, h))
    });
    match usable {
        Some(home) => format!("{home}\n/tmp\n"),
        None => "/tmp\n".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(text: &str) -> String {
        parse("file-sharing", text, false).expect_err(text).to_string()
    }

    #[test]
    fn takes_absolute_paths_one_per_line() {
        let parsed = parse("file-sharing", "/home/me/\n\n  /tmp \n/srv/a b,c\n", false);
        assert_eq!(parsed.expect("valid"), ["/home/me", "/tmp", "/srv/a b,c"]);
        assert_eq!(
            parse("file-sharing", "", false).expect("empty shares nothing"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn names_the_line_and_the_reason() {
        assert!(
            refused("/tmp\nsrc").contains("\"src\" (line 2) is not an absolute path"),
            "{}",
            refused("/tmp\nsrc")
        );
        assert!(refused("/").contains("whole file system"));
        assert!(refused("/home/../etc").contains(".. component"));
        assert!(refused("/usr/local/src").contains("the guest's own /usr"));
        assert!(refused("/var").contains("the guest's own /var"));
        let inner = refused("/home\n/home/me/src");
        assert!(inner.contains("(line 2) is inside /home of line 1"), "{inner}");
        assert!(refused("/home/me/src\n/home").contains("contains /home/me/src of line 1"));
        assert!(refused("/tmp\n/tmp/").contains("repeats /tmp of line 1"));
        assert!(parse("file-sharing", "/tmp\n/tmpx", false).is_ok(), "/tmpx is not inside /tmp");
        assert!(refused("relative").contains("allowed: absolute paths"));
    }

    #[test]
    fn a_new_value_must_name_existing_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        let here = dir.path().display().to_string();
        assert_eq!(parse("file-sharing", &here, true).expect("exists"), vec![here.clone()]);
        let gone = format!("{here}/missing");
        let err = parse("file-sharing", &gone, true).expect_err("missing").to_string();
        assert!(err.contains("is not a directory on this host"), "{err}");
        assert!(
            parse("file-sharing", &gone, false).is_ok(),
            "a stored value may name a missing one"
        );
    }

    #[test]
    fn the_default_shares_home_and_tmp() {
        let default = default_text();
        assert!(default.ends_with("/tmp\n"), "{default}");
        assert!(parse("file-sharing", &default, false).is_ok(), "{default}");
    }
}
