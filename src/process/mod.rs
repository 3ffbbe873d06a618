//! Running a server in a process: start-up and stop ([`server`]: the
//! library's entry point, `herd::start`), the config in force and its
//! reloads (`control`, `live`), what each shard is given (`plan`) and
//! does (`shard_run`: its steps; `accept`: its accept loops; `chores`:
//! the rest), reading the config file (`config_file`) and what the host
//! says about itself ([`host`]).
//! The command line, signals, logging and `herd up` are the `herd`
//! binary's (`src/bin/herd/`).

mod accept;
mod chores;
pub(crate) mod config_file;
mod control;
pub mod host;
mod live;
mod plan;
pub mod server;
mod shard_run;
