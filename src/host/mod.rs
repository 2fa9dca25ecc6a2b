//! The Linux host platform: the runtime that drives the executor with a real clock and
//! worker-thread completions, member specs, and the `raid` command-line tool.

pub mod cli;
pub mod control;
pub mod metrics;
pub mod nbd;
pub mod runtime;
pub mod serve;
pub mod spec;
