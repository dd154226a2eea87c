//! sysctl.conf lines, parsed the same way by the schema (before a commit) and by the guest
//! agent (before it writes anything under /proc/sys), so that the two can never disagree on
//! what a line means.
//!
//! A line is blank, a comment (`#` or `;` first), or `NAME = VALUE`, where NAME is a kernel
//! parameter: components of letters, digits, `_` and `-`, separated by `.` (or all by `/`, as
//! sysctl(8) also accepts), none of them empty. A leading `-` asks that a failure to set the
//! parameter be ignored, as sysctl(8) does. Nothing else is a name: not an absolute path, not
//! `..`, not a glob, so a value can never name a file outside /proc/sys.

/// One meaningful line of a sysctl.conf.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Line {
    /// A comment, kept as written.
    Comment(String),
    /// A parameter to set.
    Setting(Setting),
}

/// `NAME = VALUE`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting {
    /// The name's components (`vm.max_map_count` is `["vm", "max_map_count"]`).
    pub components: Vec<String>,
    pub value: String,
    /// The line began with `-`: a failure to set it is not an error.
    pub ignore_failure: bool,
}

impl Setting {
    /// The name in dotted form.
    pub fn name(&self) -> String {
        self.components.join(".")
    }

    /// The canonical line: `[-]a.b.c = value`.
    pub fn canonical(&self) -> String {
        let dash = if self.ignore_failure { "-" } else { "" };
        format!("{dash}{} = {}", self.name(), self.value)
    }
}

/// Why a line was refused, with the line as written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    pub line: String,
    pub problem: &'static str,
}

/// Parses every line; the first line that is not valid is the error.
pub fn parse(text: &str) -> Result<Vec<Line>, LineError> {
    let mut out = Vec::new();
    for raw in text.lines() {
        let entry = raw.trim();
        if entry.is_empty() {
            continue;
        }
        if entry.starts_with('#') || entry.starts_with(';') {
            out.push(Line::Comment(entry.to_owned()));
            continue;
        }
        let refuse = |problem| LineError { line: entry.to_owned(), problem };
        let (name, value) = entry.split_once('=').ok_or_else(|| refuse("is not NAME = VALUE"))?;
        let name = name.trim();
        let (ignore_failure, name) = match name.strip_prefix('-') {
            Some(rest) => (true, rest.trim_start()),
            None => (false, name),
        };
        let components = components(name).ok_or_else(|| {
            refuse("does not start with a kernel parameter name (components of letters, digits, _ and -, separated by dots)")
        })?;
        let value = value.trim();
        if value.is_empty() || value.chars().any(char::is_control) {
            return Err(refuse("has an empty or unprintable value"));
        }
        out.push(Line::Setting(Setting { components, value: value.to_owned(), ignore_failure }));
    }
    Ok(out)
}

/// The components of a parameter name, or `None` when it is not one.
fn components(name: &str) -> Option<Vec<String>> {
    // sysctl(8) takes `/` as the separator when a name has one (a `.` is then part of a
    // component, which is not allowed here).
    let separator = if name.contains('/') { '/' } else { '.' };
    let parts: Vec<String> = name.split(separator).map(str::to_owned).collect();
    let valid = |c: &String| {
        !c.is_empty() && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    };
    (parts.len() >= 2 && parts.iter().all(valid)).then_some(parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(text: &str) -> Vec<String> {
        parse(text)
            .expect("valid")
            .into_iter()
            .filter_map(|l| match l {
                Line::Setting(s) => Some(s.canonical()),
                Line::Comment(_) => None,
            })
            .collect()
    }

    #[test]
    fn names_in_both_spellings() {
        assert_eq!(names("vm.swappiness=10"), ["vm.swappiness = 10"]);
        assert_eq!(names("net/ipv4/ip_forward = 1"), ["net.ipv4.ip_forward = 1"]);
        assert_eq!(names("-kernel.nope = 1"), ["-kernel.nope = 1"]);
        assert_eq!(names("# a\n; b\nvm.a = 1"), ["vm.a = 1"]);
    }

    #[test]
    fn paths_out_of_proc_sys_are_not_names() {
        for bad in [
            "/etc/shadow = root::0:0:99999:7:::",
            "../../../init = x",
            ".etc.passwd = x",
            "vm..swappiness = 1",
            "vm.swappiness. = 1",
            "vm.* = 1",
            "swappiness = 1",
            "net/ipv4/../x = 1",
            "a b.c = 1",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
