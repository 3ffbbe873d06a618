//! Running a server in a process: start-up and stop ([`server`]: the
//! library's entry point, `herd::start`), reading the config file
//! (`config_file`), what the host says about itself ([`host`]) and making
//! a herd's link certificates ([`certs`]).
//! The command line, signals, logging and `herd up` are the `herd`
//! binary's (`src/bin/herd/`).

pub mod certs;
pub(crate) mod config_file;
pub mod host;
pub mod server;
