//! `cairn diagnose`: one line per check, then the archive's path; exit 1 when a check failed.

use super::Ctx;
use crate::output::Mode;

pub fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let home = cairn::home::cairn_home()?;
    let json = ctx.mode == Mode::Json;
    let report = cairn::diagnose::run(&home, &ctx.db_path, &mut |check| {
        if !json {
            println!("{} {}: {}", check.verdict.tag(), check.name, check.detail);
        }
    })?;
    if json {
        crate::output::print_json(&serde_json::json!({
            "passed": report.passed(),
            "checks": report.checks,
            "archive": report.archive.display().to_string(),
        }))?;
    } else {
        println!("archive: {}", report.archive.display());
    }
    if !report.passed() {
        std::process::exit(crate::exit::RUNTIME);
    }
    Ok(())
}
