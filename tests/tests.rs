//! End-to-end tests: the real `cairn` binary in temporary data directories, checked against the
//! git CLI. Run `cargo build --bins` first (the README's test command does).

mod util;

mod bad_input;
mod cli;
mod concurrency;
mod crash;
mod diod_tools;
mod docker;
mod external_git;
mod hostile;
mod linux_guest;
mod migration;
mod native;
mod network;
mod up;
