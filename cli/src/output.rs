//! How data reaches the user: a table on a terminal, plain lines when piped, JSON when asked.
//! Colour only on a terminal and never with NO_COLOR.

use std::io::{IsTerminal, Write};

use comfy_table::{presets, Attribute, Cell, ContentArrangement, Table};

/// The output format of data on stdout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Table,
    Plain,
    Json,
}

/// Picks the format: `--json` wins, then a terminal gets a table.
pub fn mode(json: bool) -> Mode {
    if json {
        Mode::Json
    } else if std::io::stdout().is_terminal() {
        Mode::Table
    } else {
        Mode::Plain
    }
}

/// Whether stdout may carry colour and bold.
pub fn colour() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// A table with a header, sized to the terminal.
pub fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table
        .load_preset(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(header.iter().map(|h| cell(h, true)));
    // A pseudo-terminal without a size (script, some CI runners) reports width 0, which would
    // squeeze every column to one character: fall back to $COLUMNS, then 120.
    if table.width().is_none_or(|w| w < 40) {
        let columns =
            std::env::var("COLUMNS").ok().and_then(|c| c.parse().ok()).filter(|c| *c >= 40);
        table.set_width(columns.unwrap_or(120));
    }
    table
}

/// A cell, bold when `strong` and colour is allowed.
pub fn cell(text: impl ToString, strong: bool) -> Cell {
    let cell = Cell::new(text.to_string());
    if strong && colour() {
        cell.add_attribute(Attribute::Bold)
    } else {
        cell
    }
}

/// Prints a table (its rows, when it has none the header alone is noise and is skipped).
pub fn print_table(table: &Table) {
    if table.row_count() > 0 {
        println!("{table}");
    }
}

/// Prints JSON, pretty.
pub fn print_json(value: &serde_json::Value) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(())
}

/// A human note on stderr, only when stderr is a terminal: scripts see data or errors, nothing else.
pub fn note(text: &str) {
    if std::io::stderr().is_terminal() {
        eprintln!("{text}");
    }
}

/// `2026-11-22 21:30:05Z` for seconds since the epoch (UTC, so output is the same everywhere).
pub fn time(seconds: i64) -> String {
    cairn::utc(seconds)
}

/// The first `n` characters of a commit id.
pub fn short(id: &cairn::db::ObjectId) -> String {
    id.to_hex_with_len(10).to_string()
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_utc_times() {
        assert_eq!(super::time(0), "1970-01-01 00:00:00Z");
        assert_eq!(super::time(1_795_297_805), "2026-11-21 21:50:05Z");
        assert_eq!(super::time(951_782_400), "2000-02-29 00:00:00Z");
    }
}
