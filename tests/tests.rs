//! End-to-end tests: the real `cairn` binary (the one cargo builds for the cli package's tests)
//! in temporary data directories, checked against the git CLI, real 9P clients and guests.

mod util;

mod bad_input;
mod cli;
mod concurrency;
mod crash;
mod diod_tools;
mod disk;
mod docker;
mod external_git;
mod hostile;
mod in_vm;
mod linux_guest;
mod migration;
mod native;
mod network;
mod ports;
mod sharing;
mod ui;
mod up;
