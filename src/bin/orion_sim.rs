//! `orion-sim`: the kernel simulator's command line. Runs the freestanding driver (`--driver
//! PATH`) or an in-process one (`--in-process`) through the simulation for a seed (or a
//! range of seeds) and a level (or all), prints what each run found, and ends with the
//! summary line of the last run; the exit status is non-zero if any run read wrong data,
//! hit a driver panic or hang, or passed the heap budget.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use orion_raid::host::sim::{ChildProcess, SimConfig, SimLevel, SimReport, run, run_in_process};
use orion_raid::host::spec::parse_size;

#[derive(Parser, Debug)]
#[command(
    name = "orion-sim",
    about = "Plays the Orion kernel for the RAID driver, with faults and crashes"
)]
struct Args {
    /// The freestanding driver binary to run as the child process.
    #[arg(long, conflicts_with = "in_process")]
    driver: Option<PathBuf>,
    /// Run a RaidDriver in this process on simulated time (replays bit for bit).
    #[arg(long)]
    in_process: bool,
    /// The seed of the run.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seeds A..B (B excluded) instead of one.
    #[arg(long)]
    seeds: Option<String>,
    /// Block requests per run.
    #[arg(long, default_value_t = 20_000)]
    ops: u64,
    /// RAID level: 0, 1, 4, 5, 6, 10, 50, 60, or `all`.
    #[arg(long, default_value = "5")]
    level: String,
    /// No member faults.
    #[arg(long)]
    no_faults: bool,
    /// No crashes.
    #[arg(long)]
    no_crashes: bool,
    /// Size of each member disk (sparse: only written, non-zero pages take memory).
    #[arg(long, default_value = "8M")]
    member_size: String,
    /// Members per array (per group for RAID 50/60) instead of the level's default.
    #[arg(long)]
    members: Option<usize>,
    /// Block requests in flight at once.
    #[arg(long, default_value_t = 48)]
    depth: usize,
    /// Create the array without an initial resync (default: every other seed).
    #[arg(long)]
    assume_clean: bool,
    /// Print what the simulation does (faults, crashes, repairs) on stderr.
    #[arg(long)]
    trace: bool,
    /// The driver's own heap (MiB, its build's ORION_RAID_HEAP_MIB): with the cache, the
    /// budget its reported heap peak must stay within.
    #[arg(long, default_value_t = 64)]
    heap_mib: u64,
    /// The driver's cache size (MiB, its build's ORION_RAID_CACHE_MIB), on top of the heap.
    #[arg(long, default_value_t = 16)]
    cache_mib: u64,
}

fn parse_seeds(args: &Args) -> Result<Vec<u64>, String> {
    let Some(text) = &args.seeds else {
        return Ok(vec![args.seed]);
    };
    let (a, b) = text
        .split_once("..")
        .ok_or_else(|| format!("--seeds {text}: expected A..B"))?;
    let a: u64 = a
        .parse()
        .map_err(|_| format!("--seeds {text}: bad start"))?;
    let b: u64 = b.parse().map_err(|_| format!("--seeds {text}: bad end"))?;
    if a >= b {
        return Err(format!("--seeds {text}: empty range"));
    }
    Ok((a..b).collect())
}

fn parse_levels(text: &str) -> Result<Vec<SimLevel>, String> {
    if text == "all" {
        return Ok(SimLevel::ALL.to_vec());
    }
    text.split(',')
        .map(|l| {
            l.trim()
                .parse::<u32>()
                .ok()
                .and_then(SimLevel::from_number)
                .ok_or_else(|| format!("--level {l}: one of 0, 1, 4, 5, 6, 10, 50, 60, all"))
        })
        .collect()
}

fn print_report(report: &SimReport) {
    for detail in &report.wrong_details {
        eprintln!("orion-sim: seed {} wrong: {detail}", report.seed);
    }
    if let Some(why) = &report.failure {
        eprintln!(
            "orion-sim: seed {} level {} failed: {why}",
            report.seed, report.level
        );
    }
    if report.over_budget {
        eprintln!("orion-sim: seed {} heap peak over the budget", report.seed);
    }
    println!("{}", report.summary_line());
}

fn main() -> ExitCode {
    let args = Args::parse();
    // The in-process driver logs through `log`: RUST_LOG=info shows it.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("off")).init();
    let setup = (|| -> Result<_, String> {
        let seeds = parse_seeds(&args)?;
        let levels = parse_levels(&args.level)?;
        let member_bytes = parse_size(&args.member_size)
            .map_err(|e| format!("--member-size {}: {e}", args.member_size))?;
        if member_bytes < 4 << 20 {
            return Err("--member-size: at least 4M".into());
        }
        if args.driver.is_none() && !args.in_process {
            return Err("give --driver PATH or --in-process".into());
        }
        Ok((seeds, levels, member_bytes / 512))
    })();
    let (seeds, levels, member_sectors) = match setup {
        Ok(s) => s,
        Err(why) => {
            eprintln!("orion-sim: {why}");
            return ExitCode::from(2);
        }
    };
    let mut all_passed = true;
    for &seed in &seeds {
        for &level in &levels {
            let mut cfg = SimConfig::new(seed, level, args.ops);
            cfg.faults = !args.no_faults;
            cfg.crashes = !args.no_crashes;
            cfg.member_sectors = member_sectors;
            cfg.members_per_group = args.members;
            cfg.depth = args.depth.max(1);
            cfg.assume_clean |= args.assume_clean;
            cfg.heap_budget_bytes = (args.heap_mib + args.cache_mib) << 20;
            cfg.trace = args.trace;
            let report = match &args.driver {
                Some(path) => run(&cfg, ChildProcess::new(path)),
                None => run_in_process(&cfg),
            };
            all_passed &= report.passed();
            print_report(&report);
        }
    }
    if all_passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
