//! `cairn init`: create the database, or bring an existing one to the current schema.

use cairn::db::{Db, Error as DbError, CONFIG_BRANCH};

use super::Ctx;
use crate::output;

pub fn run(ctx: &Ctx) -> anyhow::Result<()> {
    let host = ctx.host()?;
    let path = &ctx.db_path;
    match Db::init(path, host) {
        Ok(db) => {
            let head = db.head(CONFIG_BRANCH)?.expect("init made the first commit");
            println!("{head}");
            output::note(&format!("initialised {} with every key at its default", path.display()));
            Ok(())
        }
        Err(DbError::AlreadyExists { .. }) => {
            let db = ctx.open()?;
            // An empty transaction commits nothing but migrates an older schema first.
            let done = db.transaction(CONFIG_BRANCH)?.commit()?;
            println!("{}", done.id);
            match done.migration {
                Some(m) => output::note(&format!(
                    "{} upgraded to schema v{} (commit {})",
                    path.display(),
                    cairn::schema::CURRENT_VERSION,
                    output::short(&m)
                )),
                None => output::note(&format!("{} is already a cairn database", path.display())),
            }
            Ok(())
        }
        Err(e) => Err(anyhow::Error::new(e).context(format!("creating {}", path.display()))),
    }
}
