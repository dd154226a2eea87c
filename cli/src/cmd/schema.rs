//! `cairn schema [KEY|daemon]`: the catalogue of keys, one key in detail, or daemon.json's keys.

use cairn::schema::{by_name, daemon, value, KEYS};
use serde_json::json;

use super::list::squash;
use super::Ctx;
use crate::output::{self, Mode};

pub fn run(ctx: &Ctx, key: Option<&str>) -> anyhow::Result<()> {
    let host = ctx.host()?;
    match key {
        Some("daemon.json") | Some("daemon-keys") => daemon_keys(ctx),
        Some(name) if by_name(name).is_ok_and(|k| k.name == "daemon") && ctx.mode != Mode::Json => {
            one(ctx, name, &host)?;
            println!();
            daemon_keys(ctx)
        }
        Some(name) => one(ctx, name, &host),
        None => all(ctx, &host),
    }
}

fn key_json(key: &cairn::schema::Key, host: &cairn::schema::Host) -> serde_json::Value {
    json!({
        "key": key.name,
        "path": key.path,
        "type": value::type_name(key.kind),
        "default": value::to_json(key, &key.default_bytes(host)),
        "allowed": value::allowed(key, host),
        "apply": key.apply.as_str(),
        "options": key.options,
        "internal": key.internal,
        "description": squash(key.description),
    })
}

fn all(ctx: &Ctx, host: &cairn::schema::Host) -> anyhow::Result<()> {
    match ctx.mode {
        Mode::Json => output::print_json(&json!({
            "schema-version": cairn::schema::CURRENT_VERSION,
            "keys": KEYS.iter().map(|k| key_json(k, host)).collect::<Vec<_>>(),
        })),
        Mode::Plain => {
            for key in KEYS {
                let default = value::display(key, &key.default_bytes(host));
                println!(
                    "{}\t{}\t{}\t{default}\t{}",
                    key.name,
                    key.path,
                    value::type_name(key.kind),
                    key.apply
                );
            }
            Ok(())
        }
        Mode::Table => {
            let mut table = output::table(&["KEY", "PATH", "TYPE", "DEFAULT", "APPLY", "ALLOWED"]);
            for key in KEYS {
                table.add_row(vec![
                    output::cell(key.name, true),
                    output::cell(key.path, false),
                    output::cell(value::type_name(key.kind), false),
                    output::cell(value::display(key, &key.default_bytes(host)), false),
                    output::cell(key.apply, false),
                    output::cell(value::allowed(key, host), false),
                ]);
            }
            output::print_table(&table);
            Ok(())
        }
    }
}

fn one(ctx: &Ctx, name: &str, host: &cairn::schema::Host) -> anyhow::Result<()> {
    let key = by_name(name)?;
    let info = key_json(key, host);
    if ctx.mode == Mode::Json {
        return output::print_json(&info);
    }
    println!("{} ({})", key.name, key.path);
    println!("  type:    {}", value::type_name(key.kind));
    println!("  allowed: {}", value::allowed(key, host));
    println!("  default: {}", value::display(key, &key.default_bytes(host)));
    println!("  apply:   {}", key.apply);
    if !key.options.is_empty() {
        println!("  options: {}", key.options.join(", "));
    }
    println!();
    println!("  {}", squash(key.description));
    Ok(())
}

fn daemon_keys(ctx: &Ctx) -> anyhow::Result<()> {
    let rows = daemon::DAEMON_KEYS.iter();
    match ctx.mode {
        Mode::Json => output::print_json(&json!(rows
            .map(|k| json!({"key": k.name, "type": daemon::describe(k.ty), "apply": k.apply.as_str()}))
            .collect::<Vec<_>>())),
        Mode::Plain => {
            for k in rows {
                println!("{}\t{}\t{}", k.name, daemon::describe(k.ty), k.apply);
            }
            Ok(())
        }
        Mode::Table => {
            let mut table = output::table(&["DAEMON.JSON KEY", "TYPE", "APPLY"]);
            for k in rows {
                table.add_row(vec![
                    output::cell(k.name, false),
                    output::cell(daemon::describe(k.ty), false),
                    output::cell(k.apply, false),
                ]);
            }
            output::print_table(&table);
            Ok(())
        }
    }
}
