//! `cairn ui`: serves the settings page until Ctrl-C; prints its URL (with the token) first.

use super::Ctx;

pub fn run(ctx: &Ctx, listen: std::net::SocketAddr, open: bool) -> anyhow::Result<()> {
    let options =
        cairn::ui::Options { listen, home: cairn::home::cairn_home()?, db: ctx.db_path.clone() };
    cairn::ui::run(options, &mut |url| {
        println!("{url}");
        eprintln!(
            "cairn ui: serving the settings on {url} (Ctrl-C stops); the token is for you alone"
        );
        if open {
            match std::process::Command::new("xdg-open").arg(url).spawn() {
                Ok(_) => {}
                Err(e) => {
                    eprintln!("cairn ui: cannot open a browser (xdg-open: {e}): open the URL above")
                }
            }
        }
    })?;
    Ok(())
}
