//! The `cairn` command: parses arguments, runs a command from [`cmd`], prints, exits with a
//! documented code. The work is done in the cairn crates.
#![forbid(unsafe_code)]

mod args;
mod cmd;
mod exit;
mod output;

use clap::Parser;

fn main() {
    // In the guest image this binary is /init: as PID 1 it is the guest agent.
    if std::process::id() == 1 {
        cairn::agent::run();
    }
    // dockerd runs it as its userland proxy, through a link named for it (see port_proxy).
    let argv: Vec<String> = std::env::args().collect();
    let name = argv.first().and_then(|a| a.rsplit('/').next()).unwrap_or_default();
    if name == "cairn-port-proxy" {
        std::process::exit(cairn::agent::port_proxy::run(&argv));
    }
    let args = args::Cli::parse();
    let code = match cmd::run(args) {
        Ok(()) => exit::OK,
        Err(err) => {
            let code = exit::code_of(&err);
            let mut message = format!("cairn: {err}");
            for cause in err.chain().skip(1) {
                message.push_str(&format!(": {cause}"));
            }
            eprintln!("{message}");
            code
        }
    };
    std::process::exit(code);
}
