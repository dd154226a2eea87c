//! `cairn apply FILE`: many keys from a JSON object (as `export` writes) or KEY=VALUE lines,
//! validated as a whole, one commit.

use anyhow::Context;
use cairn::db::CONFIG_BRANCH;
use cairn::schema::{by_name, value, CURRENT_VERSION};

use super::{prepare, report, value_arg, Ctx};
use crate::args::WriteOpts;
use crate::exit::Usage;

pub fn run(ctx: &Ctx, file: &str, write: &WriteOpts, force: bool) -> anyhow::Result<()> {
    let source = if file == "-" { "-".to_owned() } else { format!("@{file}") };
    let bytes = value_arg(&source, &mut false)?;
    let text = String::from_utf8(bytes).map_err(|_| Usage(format!("{file}: not UTF-8 text")))?;
    let pairs = parse(&text).with_context(|| format!("reading {file}"))?;
    let db = ctx.open()?;
    let mut tx = db.transaction(CONFIG_BRANCH)?;
    tx.force(force);
    prepare(&db, &mut tx, write)?;
    if write.message.is_none() {
        tx.message(format!("apply {}", if file == "-" { "standard input" } else { file }));
    }
    for (name, input) in &pairs {
        tx.set_key(name, input.as_bytes())?;
    }
    let done = tx.commit()?;
    report(ctx, &db, &done, &format!("applied {} keys from {file}", pairs.len()))
}

/// Reads a JSON object or KEY=VALUE lines into (key, input) pairs. `schema-version` is checked,
/// not set: a file from another schema version is refused rather than half-applied.
fn parse(text: &str) -> anyhow::Result<Vec<(String, String)>> {
    let mut pairs = Vec::new();
    if text.trim_start().starts_with('{') {
        let object: serde_json::Map<String, serde_json::Value> =
            serde_json::from_str(text).map_err(|e| Usage(format!("not a JSON object: {e}")))?;
        for (name, json) in &object {
            let key = by_name(name)?;
            pairs.push((name.clone(), value::from_json(key, json)));
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
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn json_and_lines() {
        let pairs =
            parse(r#"{"memory": 4096, "dns": ["1.1.1.1", "8.8.8.8"], "schema-version": 2}"#)
                .expect("json");
        assert_eq!(
            pairs,
            vec![("memory".into(), "4096".into()), ("dns".into(), "1.1.1.1\n8.8.8.8".into())]
        );
        let pairs = parse("# comment\nmemory=4096\n\nncpu = 2\n").expect("lines");
        assert_eq!(pairs, vec![("memory".into(), "4096".into()), ("ncpu".into(), "2".into())]);
        assert!(parse("memory 4096").is_err());
        assert!(parse(r#"{"schema-version": 1}"#).is_err());
        assert!(parse(r#"{"nosuch": 1}"#).is_err());
    }
}
