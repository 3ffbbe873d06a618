//! The process around the shards: start-up and stop ([`server`]), the
//! command line ([`cli`]), `herd up` ([`up`]), `herd certs` ([`certs`]) and
//! logging ([`logging`]).

pub mod certs;
pub mod cli;
pub mod config_file;
pub mod logging;
pub mod serve;
pub mod server;
pub mod up;
