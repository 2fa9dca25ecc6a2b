//! `raid`: the Orion RAID host tool (the driver's engine on Linux).

use clap::Parser;
use orion_raid::host::cli::{Cli, run};

fn main() {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        .format_timestamp_millis()
        .init();
    if let Err(e) = run(cli) {
        eprintln!("raid: {}", e.message);
        std::process::exit(e.status);
    }
}
