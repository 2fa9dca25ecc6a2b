//! The Linux host platform (std only): the runtime that drives the executor with a real
//! clock and worker-thread completions, file members, member specs, the NBD and control
//! front ends, the parity benchmark, and the `raid` command-line tool.

pub mod bench;
pub mod cli;
pub mod control;
pub mod file;
pub mod metrics;
pub mod nbd;
pub mod runtime;
pub mod serve;
pub mod sim;
pub mod spec;
