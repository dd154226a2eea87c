//! `cairn apply FILE`: many keys from a JSON object (as `export` writes) or KEY=VALUE lines,
//! validated as a whole, one commit.

use anyhow::Context;
use cairn::db::CONFIG_BRANCH;
use cairn::schema::{by_name, value, CURRENT_VERSION};

use super::{prepare, report, value_arg, Ctx};
use crate::args::WriteOpts;
use crate::exit::Usage;

/// The member of an exported object that lists the keys `set --force` wrote: applying the
/// file writes them the same way, so that export and apply round-trip.
pub const FORCED: &str = "forced-keys";

pub fn run(ctx: &Ctx, file: &str, write: &WriteOpts, force: bool) -> anyhow::Result<()> {
    let source = if file == "-" { "-".to_owned() } else { format!("@{file}") };
    let bytes = value_arg(&source, &mut false)?;
    let text = String::from_utf8(bytes).map_err(|_| Usage(format!("{file}: not UTF-8 text")))?;
    let parsed = parse(&text).with_context(|| format!("reading {file}"))?;
    let db = ctx.open()?;
    let mut tx = db.transaction(CONFIG_BRANCH)?;
    tx.force(force || parsed.forced);
    prepare(&db, &mut tx, write)?;
    if write.message.is_none() {
        tx.message(format!("apply {}", if file == "-" { "standard input" } else { file }));
    }
    for (name, input) in &parsed.pairs {
        tx.set_key(name, input.as_bytes())?;
    }
    let done = tx.commit()?;
    report(ctx, &db, &done, &format!("applied {} keys from {file}", parsed.pairs.len()))
}

/// What a file asks for.
#[derive(Debug, PartialEq, Eq)]
struct Parsed {
    pairs: Vec<(String, String)>,
    /// The file says its daemon.json was written with --force.
    forced: bool,
}

/// Reads a JSON object or KEY=VALUE lines into (key, input) pairs. `schema-version` is checked,
/// not set: a file from another schema version is refused rather than half-applied. A key
/// given twice is refused: which of the two was meant cannot be known.
fn parse(text: &str) -> anyhow::Result<Parsed> {
    let mut pairs = Vec::new();
    let mut forced = false;
    if text.trim_start().starts_with('{') {
        let entries = cairn::schema::json::object_entries(text)
            .map_err(|e| Usage(format!("not a JSON object: {e}")))?
            .ok_or_else(|| Usage("not a JSON object".into()))?;
        for (name, _, json) in &entries {
            if name == FORCED {
                forced = json.as_array().is_some_and(|keys| keys.iter().any(|k| k == "daemon"));
                continue;
            }
            let key = by_name(name)?;
            pairs.push((name.clone(), value::from_json(key, json)?));
        }
    } else {
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let (name, input) = line.split_once('=').ok_or_else(|| {
                Usage(format!("line {}: expected KEY=VALUE, found {line:?}", n + 1))
            })?;
            pairs.push((name.trim().to_owned(), input.trim().to_owned()));
        }
    }
    super::refuse_repeated_keys(pairs.iter().map(|(name, _)| name.as_str()))?;
    let mut out = Vec::new();
    for (name, input) in pairs {
        if by_name(&name)?.name == "schema-version" {
            if input.trim() != CURRENT_VERSION.to_string() {
                return Err(Usage(format!(
                    "the file is for schema-version {input}, this cairn writes {CURRENT_VERSION}"
                ))
                .into());
            }
            continue;
        }
        out.push((name, input));
    }
    Ok(Parsed { pairs: out, forced })
}

#[cfg(test)]
mod tests {
    use super::{parse, CURRENT_VERSION};

    #[test]
    fn json_and_lines() {
        let json = format!(
            r#"{{"memory": 4096, "dns": ["1.1.1.1", "8.8.8.8"], "schema-version": {CURRENT_VERSION}}}"#
        );
        let parsed = parse(&json).expect("json");
        assert_eq!(
            parsed.pairs,
            vec![("memory".into(), "4096".into()), ("dns".into(), "1.1.1.1\n8.8.8.8".into())]
        );
        assert!(!parsed.forced);
        let parsed = parse("# comment\nmemory=4096\n\nncpu = 2\n").expect("lines");
        assert_eq!(
            parsed.pairs,
            vec![("memory".into(), "4096".into()), ("ncpu".into(), "2".into())]
        );
        assert!(parse("memory 4096").is_err());
        assert!(parse(r#"{"schema-version": 1}"#).is_err());
        assert!(parse(r#"{"nosuch": 1}"#).is_err());
    }

    #[test]
    fn nulls_repeats_and_forced_keys() {
        assert!(parse(r#"{"hostname": null}"#).is_err());
        assert!(parse(r#"{"memory": [4096]}"#).is_err());
        assert!(parse(r#"{"memory": 4096, "memory": 8192}"#).is_err());
        assert!(parse("memory=4096\nmemory=8192").is_err());
        let parsed = parse(r#"{"daemon": {"foo": 1}, "forced-keys": ["daemon"]}"#).expect("json");
        assert!(parsed.forced);
    }
}
