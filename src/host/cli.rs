//! The `raid` command line: argument parsing and the commands that need no running server.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use clap::{Args, Parser, Subcommand};

use crate::array::assemble::{CreateOptions, create, parse_layout};
use crate::array::nested::{NestedSpec, check_nested, create_nested};
use crate::array::scrub::{ScrubMode, ScrubOutcome, ScrubReport};
use crate::block::{BlockDevice, SECTOR_BYTES};
use crate::host::control::{self, ControlError};
use crate::host::file::{FileDisk, IoPool};
use crate::host::runtime::HostRuntime;
use crate::host::serve::{MonitorOptions, ServeOptions, scan_dir, serve};
use crate::host::spec::{MemberSpec, format_size, parse_size};
use crate::manage;
use crate::metadata::{
    DeviceRole, FeatureMap, Level, SUPERBLOCK_BYTES, SUPERBLOCK_OFFSET_BYTES, Superblock,
    format_uuid,
};
use crate::monitor::{ArrayMetrics, EventBatch, EventRecord, IoMetrics, MonitorConfig};

/// Orion RAID host tool: create, assemble and inspect Linux-md-compatible arrays.
#[derive(Parser, Debug)]
#[command(name = "raid", version, about)]
pub struct Cli {
    /// More log output (-v info, -vv debug, -vvv trace).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Create an array: write md v1.2 superblocks to every member.
    Create(CreateArgs),
    /// Print the md superblock of each member.
    Examine(ExamineArgs),
    /// Assemble (or create) arrays and export each over NBD until SIGINT/SIGTERM.
    Serve(ServeArgs),
    /// The quick start: serve ./raid-data/ (created on first use) on ./raid.sock and
    /// 127.0.0.1:10809.
    Up(UpArgs),
    /// State of every array of a running server (like /proc/mdstat).
    Status(StatusArgs),
    /// One array in detail (like mdadm --detail).
    Detail(NameArgs),
    /// Stop serving an array: flush it and mark it clean.
    Stop(NameArgs),
    /// Scrub an array: compare every block's redundancy and count mismatches (md's check).
    Check(ScrubArgs),
    /// Scrub an array and make every mismatch consistent again (md's repair).
    Repair(ScrubArgs),
    /// Stream events (member failed, rebuild finished, …) one line each, until interrupted.
    Monitor(MonitorArgs),
    /// I/O figures: MB/s, IOPS, latency percentiles, errors, per array and member.
    Stats(StatsArgs),
    /// Mark a member faulty (a spare then takes its place if the policy allows).
    Fail(MemberArgs),
    /// Take a faulty or spare member out of an array.
    Remove(MemberArgs),
    /// Add a device as a spare of an array (it is rebuilt at once into an empty or failed
    /// slot), or with --pool to the shared spare pool.
    Add(AddArgs),
    /// Copy a member onto a new device while it keeps serving, then retire it to a spare.
    Replace(ReplaceArgs),
    /// Change array policies: rebuild_priority=low|normal|high, rebuild_rate_mb_s=N (0 no
    /// limit), spare_policy=dedicated|shared|none, read_policy=round-robin|adaptive,
    /// read_error_limit=N, read_error_window_s=N, io_timeout_ms=N (0 off, else 1000 to
    /// 600000), stripe_cache=SIZE; any key=default. With --members: on a stopped array's
    /// members.
    Set(SetArgs),
    /// Measure speed: `raid bench parity [--json]`.
    #[command(subcommand)]
    Bench(BenchCommand),
}

#[derive(Subcommand, Debug)]
pub enum BenchCommand {
    /// XOR, P+Q generation and two-block recovery per engine, in cache and from memory,
    /// beside a plain read of the same bytes.
    Parity {
        /// One JSON object per line (for scripts).
        #[arg(long)]
        json: bool,
        /// Skip the memory-bound rows (they cycle through 512 MiB of buffers).
        #[arg(long)]
        no_memory_bound: bool,
    },
    /// The floor under a RAID5 rebuild of file members: xor SOURCES into one file with the
    /// rebuild's own per-cell job on as many threads as its pool has, and nothing around it
    /// (no array, locks, events or checkpoints). Prints the time and the rate per source.
    XorFiles {
        /// The file written: from its start, created if missing. Refused if it holds an md
        /// superblock (a member of an array).
        #[arg(long)]
        into: PathBuf,
        /// Bytes per job, as the array's chunk is for a rebuild (e.g. 512K).
        #[arg(long, default_value = "512K")]
        cell: String,
        /// Threads (default: one per CPU, at most 8, as the rebuild's pool).
        #[arg(long)]
        threads: Option<usize>,
        /// One JSON object (for scripts).
        #[arg(long)]
        json: bool,
        /// Files of one size: the surviving members.
        #[arg(required = true)]
        sources: Vec<PathBuf>,
    },
}

/// Default control socket: the one `raid up` uses.
pub const DEFAULT_CONTROL: &str = "raid-data/control.sock";

#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Serve NBD on this Unix socket.
    #[arg(long)]
    pub nbd_socket: Option<PathBuf>,
    /// Serve NBD on this TCP address (e.g. 127.0.0.1:10809).
    #[arg(long)]
    pub nbd_listen: Option<String>,
    /// Control socket path.
    #[arg(long, default_value = DEFAULT_CONTROL)]
    pub control: PathBuf,
    /// Use every image file (*.img) and block device in this directory as a candidate.
    #[arg(long)]
    pub scan: Option<PathBuf>,
    /// Create the array on the members first (as `raid create`), then serve it.
    #[arg(long)]
    pub create: bool,
    /// With --create: the RAID level.
    #[arg(short, long, value_parser = parse_level_arg)]
    pub level: Option<LevelArg>,
    /// With --create and level 50 or 60: the number of RAID 5/6 groups.
    #[arg(long)]
    pub groups: Option<usize>,
    /// With --create: the layout.
    #[arg(short = 'p', long)]
    pub layout: Option<String>,
    /// With --create: the chunk size.
    #[arg(short, long, value_parser = parse_size, default_value = "512K")]
    pub chunk: u64,
    /// With --create: the array name (default: the first number, 0, 1, …, no array in the
    /// first member's directory has, as mdadm names arrays after their md device number).
    #[arg(short = 'N', long)]
    pub name: Option<String>,
    /// Stripe cache budget of the RAID 4/5/6 arrays (e.g. 64M; 0 turns it off); recorded
    /// with the array's settings, as `raid set NAME stripe_cache=SIZE`. Without it, arrays
    /// of mem: members only run with the cache off (their reads are memory copies already).
    #[arg(long, value_parser = parse_size)]
    pub stripe_cache: Option<u64>,
    /// The cache size: one memory budget the stripe caches of every array share (e.g.
    /// 256M, the default); when the arrays ask for more, each gets a share in proportion.
    #[arg(long, value_parser = parse_size)]
    pub cache_size: Option<u64>,
    /// How many arrays run background jobs (resync, rebuild) at once; the others wait
    /// their turn. 0: no limit.
    #[arg(long, default_value_t = default_max_jobs())]
    pub max_concurrent_jobs: usize,
    /// Members: image files, block devices, or mem:SIZE for a volatile memory member.
    pub members: Vec<String>,
    #[command(flatten)]
    pub monitoring: MonitoringFlags,
}

/// `raid serve`'s monitoring flags.
#[derive(Args, Debug)]
pub struct MonitoringFlags {
    /// Serve Prometheus metrics on GET /metrics at this TCP address (e.g. 127.0.0.1:9105).
    #[arg(long)]
    pub metrics_listen: Option<String>,
    /// Rewrite this file with the Prometheus metrics every monitoring interval.
    #[arg(long)]
    pub metrics_file: Option<PathBuf>,
    /// Monitoring interval: rate windows and health checks advance this often (e.g. 500ms, 2s).
    #[arg(long, value_parser = parse_duration_ns, default_value = "1s")]
    pub monitor_interval: u64,
    /// Intervals a rate (MB/s, IOPS) is averaged over (1-64).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub rate_window: u32,
    /// Events kept for `raid monitor`.
    #[arg(long, default_value_t = crate::monitor::DEFAULT_EVENT_CAPACITY)]
    pub event_capacity: usize,
}

impl MonitoringFlags {
    fn options(&self) -> MonitorOptions {
        MonitorOptions {
            config: MonitorConfig {
                tick_interval_ns: self.monitor_interval,
                rate_window_ticks: self.rate_window,
                event_capacity: self.event_capacity.max(1),
            },
            metrics_listen: self.metrics_listen.clone(),
            metrics_file: self.metrics_file.clone(),
        }
    }
}

/// Parses `500ms`, `2s`, `1.5s`, `1m` (a bare number is seconds) into nanoseconds; at least
/// 10 ms.
pub fn parse_duration_ns(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let (number, unit_ns) = if let Some(n) = t.strip_suffix("ms") {
        (n, 1e6)
    } else if let Some(n) = t.strip_suffix('s') {
        (n, 1e9)
    } else if let Some(n) = t.strip_suffix('m') {
        (n, 60e9)
    } else {
        (t, 1e9)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("'{text}' is not a duration (e.g. 500ms, 2s)"))?;
    let ns = value * unit_ns;
    if !(1e7..=3.6e12).contains(&ns) {
        return Err(format!("'{text}' is outside 10ms..1h"));
    }
    Ok(ns as u64)
}

#[derive(Args, Debug)]
pub struct MonitorArgs {
    /// One JSON object per event (for scripts).
    #[arg(long)]
    pub json: bool,
    /// First print the events the server still holds, then follow.
    #[arg(long)]
    pub all: bool,
    /// How often to ask the server for new events.
    #[arg(long, value_parser = parse_duration_ns, default_value = "500ms")]
    pub poll: u64,
    /// Control socket of the running server.
    #[arg(long, default_value = DEFAULT_CONTROL)]
    pub control: PathBuf,
}

#[derive(Args, Debug)]
pub struct StatsArgs {
    /// Only this array.
    pub name: Option<String>,
    /// Print one JSON object (for scripts).
    #[arg(long)]
    pub json: bool,
    /// Print the Prometheus text exposition instead.
    #[arg(long, conflicts_with = "json")]
    pub prometheus: bool,
    /// Control socket of the running server.
    #[arg(long, default_value = DEFAULT_CONTROL)]
    pub control: PathBuf,
}

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Directory of the member images.
    #[arg(long, default_value = "raid-data")]
    pub dir: PathBuf,
    /// Size of each member image created on first use.
    #[arg(long, value_parser = parse_size, default_value = "1G")]
    pub member_size: u64,
    /// Stripe cache budget of the RAID 4/5/6 arrays (e.g. 64M; 0 turns it off); recorded
    /// with the array's settings, as `raid set NAME stripe_cache=SIZE`.
    #[arg(long, value_parser = parse_size)]
    pub stripe_cache: Option<u64>,
    #[command(flatten)]
    pub monitoring: MonitoringFlags,
}

#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Print one JSON object (for scripts).
    #[arg(long)]
    pub json: bool,
    /// Control socket of the running server.
    #[arg(long, default_value = DEFAULT_CONTROL)]
    pub control: PathBuf,
}

#[derive(Args, Debug)]
pub struct NameArgs {
    /// Array name.
    pub name: String,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
    /// Control socket of the running server.
    #[arg(long, default_value = DEFAULT_CONTROL)]
    pub control: PathBuf,
}

#[derive(Args, Debug)]
pub struct ScrubArgs {
    /// Array name.
    pub name: String,
    /// Wait until the scrub ends and print its report.
    #[arg(long)]
    pub wait: bool,
    /// Cancel the running scrub instead of starting one.
    #[arg(long, conflicts_with = "wait")]
    pub cancel: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
    /// Control socket of the running server.
    #[arg(long, default_value = DEFAULT_CONTROL)]
    pub control: PathBuf,
}

#[derive(Args, Debug)]
pub struct MemberArgs {
    /// Array name.
    pub name: String,
    /// The member: its path as `raid status` shows it, or its slot number.
    pub member: String,
    /// Control socket of the running server.
    #[arg(long, default_value = DEFAULT_CONTROL)]
    pub control: PathBuf,
}

#[derive(Args, Debug)]
pub struct AddArgs {
    /// Add to the shared spare pool instead of an array: `raid add --pool MEMBER`.
    #[arg(long)]
    pub pool: bool,
    /// `NAME MEMBER`, or `MEMBER` with --pool. MEMBER is a path the server opens (or
    /// mem:SIZE).
    #[arg(required = true, num_args = 1..=2)]
    pub args: Vec<String>,
    /// Control socket of the running server.
    #[arg(long, default_value = DEFAULT_CONTROL)]
    pub control: PathBuf,
}

#[derive(Args, Debug)]
pub struct ReplaceArgs {
    /// Array name.
    pub name: String,
    /// The member to replace.
    pub member: String,
    /// The new device (a path the server opens).
    #[arg(long = "with")]
    pub with: String,
    /// Control socket of the running server.
    #[arg(long, default_value = DEFAULT_CONTROL)]
    pub control: PathBuf,
}

#[derive(Args, Debug)]
pub struct SetArgs {
    /// Change the settings recorded on the members of a stopped array instead (the way
    /// back from a setting that keeps it from working): `raid set --members MEMBER...
    /// key=value...`. Refused while any of them is open in a server.
    #[arg(long)]
    pub members: bool,
    /// `NAME key=value...`, or with --members `MEMBER... key=value...`. A value may be
    /// `default`.
    #[arg(required = true, num_args = 1.., value_name = "NAME|MEMBER... key=value")]
    pub args: Vec<String>,
    /// Control socket of the running server.
    #[arg(long, default_value = DEFAULT_CONTROL)]
    pub control: PathBuf,
}

#[derive(Args, Debug)]
pub struct CreateArgs {
    /// RAID level: 0, 1, 4, 5, 6, 10, 50 or 60 (also raid0, raid1, raid10, mirror, stripe).
    #[arg(short, long, value_parser = parse_level_arg)]
    pub level: LevelArg,
    /// For levels 50 and 60: the number of RAID 5/6 groups; the members are split into
    /// equal groups in the order given.
    #[arg(long)]
    pub groups: Option<usize>,
    /// Layout: for RAID10 near2 (n2), far2 (f2), offset2 (o2), n3, …; for RAID0 with
    /// members of unequal size, original or alternate.
    #[arg(short = 'p', long)]
    pub layout: Option<String>,
    /// Chunk size (e.g. 64K, 512K, 1M); default 512K.
    #[arg(short, long, value_parser = parse_size, default_value = "512K")]
    pub chunk: u64,
    /// Array name stored in the superblock (up to 32 bytes). Default: the first number (0,
    /// 1, …) no array in the first member's directory has, as mdadm names arrays after their
    /// md device number.
    #[arg(short = 'N', long)]
    pub name: Option<String>,
    /// Create missing member image files, sparse, of this size.
    #[arg(short, long, value_parser = parse_size)]
    pub size: Option<u64>,
    /// Overwrite members that already carry an md superblock.
    #[arg(short, long)]
    pub force: bool,
    /// Stripe cache budget of the RAID 4/5/6 arrays (e.g. 64M; 0 turns it off); recorded
    /// with the array's settings, as `raid set NAME stripe_cache=SIZE`.
    #[arg(long, value_parser = parse_size)]
    pub stripe_cache: Option<u64>,
    /// Member image files or block devices, in role order.
    #[arg(required = true, num_args = 1..)]
    pub members: Vec<PathBuf>,
}

#[derive(Args, Debug)]
pub struct ExamineArgs {
    /// Member image files or block devices.
    #[arg(required = true, num_args = 1..)]
    pub members: Vec<PathBuf>,
}

/// Parses a level as mdadm spells it.
pub fn parse_level(text: &str) -> Result<Level, String> {
    let t = text.to_ascii_lowercase();
    let t = t.strip_prefix("raid").unwrap_or(&t);
    match t {
        "0" | "stripe" => Ok(Level::Raid0),
        "1" | "mirror" => Ok(Level::Raid1),
        "10" => Ok(Level::Raid10),
        "4" => Ok(Level::Raid4),
        "5" => Ok(Level::Raid5),
        "6" => Ok(Level::Raid6),
        "50" | "60" => Err(format!(
            "RAID level {t} is not available yet in this version (levels: 0, 1, 4, 5, 6, 10)"
        )),
        _ => Err(format!(
            "unknown RAID level '{text}' (levels: 0, 1, 4, 5, 6, 10)"
        )),
    }
}

/// A level as users give it: an md level, or a nested level (50, 60) that is a RAID 0 over
/// RAID 5/6 group arrays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LevelArg {
    Md(Level),
    Nested(u32),
}

impl std::fmt::Display for LevelArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LevelArg::Md(l) => write!(f, "{l}"),
            LevelArg::Nested(n) => write!(f, "raid{n}"),
        }
    }
}

/// Parses a level, nested levels included.
pub fn parse_level_arg(text: &str) -> Result<LevelArg, String> {
    let t = text.to_ascii_lowercase();
    match t.strip_prefix("raid").unwrap_or(&t) {
        "50" => Ok(LevelArg::Nested(50)),
        "60" => Ok(LevelArg::Nested(60)),
        _ => parse_level(text).map(LevelArg::Md).map_err(|_| {
            format!("unknown RAID level '{text}' (levels: 0, 1, 4, 5, 6, 10, 50, 60)")
        }),
    }
}

/// The md level of the (outer) array and the nesting, from `--level` and `--groups`.
fn level_and_nesting(
    level: LevelArg,
    groups: Option<usize>,
) -> Result<(Level, Option<NestedSpec>), CliError> {
    match (level, groups) {
        (LevelArg::Md(l), None) => Ok((l, None)),
        (LevelArg::Md(l), Some(_)) => Err(CliError::usage(format!(
            "--groups is for levels 50 and 60, not {l}"
        ))),
        (LevelArg::Nested(n), None) => Err(CliError::usage(format!(
            "raid{n} needs --groups G (the number of raid{} groups)",
            n / 10
        ))),
        (LevelArg::Nested(n), Some(g)) => match NestedSpec::for_level(n, g) {
            Some(spec) => Ok((Level::Raid0, Some(spec))),
            None => Err(CliError::usage(format!("raid{n} is not a nested level"))),
        },
    }
}

/// A command failure: message for the user and the exit status.
#[derive(Debug)]
pub struct CliError {
    pub message: String,
    pub status: i32,
}

impl CliError {
    /// A wrong argument: status 2, as for usage errors.
    pub fn usage(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            status: 2,
        }
    }

    /// Anything else that went wrong: status 1.
    pub fn failed(message: impl Into<String>) -> Self {
        CliError {
            message: message.into(),
            status: 1,
        }
    }
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Create(args) => cmd_create(args),
        Command::Examine(args) => cmd_examine(args),
        Command::Serve(args) => cmd_serve(args),
        Command::Up(args) => cmd_up(args),
        Command::Status(args) => cmd_status(args),
        Command::Detail(args) => cmd_detail(args),
        Command::Stop(args) => cmd_stop(args),
        Command::Check(args) => cmd_scrub(args, ScrubMode::Check),
        Command::Repair(args) => cmd_scrub(args, ScrubMode::Repair),
        Command::Monitor(args) => cmd_monitor(args),
        Command::Stats(args) => cmd_stats(args),
        Command::Fail(args) => cmd_member(args, manage::OP_FAIL, "marked faulty"),
        Command::Remove(args) => cmd_member(args, manage::OP_REMOVE, "removed"),
        Command::Add(args) => cmd_add(args),
        Command::Replace(args) => cmd_replace(args),
        Command::Set(args) => cmd_set(args),
        Command::Bench(BenchCommand::Parity {
            json,
            no_memory_bound,
        }) => {
            let mut opts = crate::host::bench::BenchOptions {
                json,
                ..Default::default()
            };
            if no_memory_bound {
                opts.memory_bound_bytes = 0;
            }
            let stdout = std::io::stdout();
            crate::host::bench::run(&opts, &mut stdout.lock())
                .map(|_| ())
                .map_err(|e| CliError::failed(format!("bench: {e}")))
        }
        Command::Bench(BenchCommand::XorFiles {
            into,
            cell,
            threads,
            json,
            sources,
        }) => cmd_bench_xor_files(&into, &cell, threads, json, &sources),
    }
}

fn cmd_bench_xor_files(
    into: &Path,
    cell: &str,
    threads: Option<usize>,
    json: bool,
    sources: &[PathBuf],
) -> Result<(), CliError> {
    use crate::host::file::{bulk_workers, xor_files};
    let cell_bytes = parse_size(cell)
        .ok()
        .and_then(|b| usize::try_from(b).ok())
        .filter(|&b| b > 0 && b.is_multiple_of(SECTOR_BYTES) && b <= 1 << 30)
        .ok_or_else(|| {
            CliError::usage(format!(
                "--cell {cell}: expected a size of whole 512-byte sectors up to 1G (e.g. 512K)"
            ))
        })?;
    let threads = threads.unwrap_or_else(bulk_workers);
    if !(1..=256).contains(&threads) {
        return Err(CliError::usage(format!(
            "--threads {threads}: expected 1 to 256"
        )));
    }
    // The magic alone, valid checksum or not: a member whose superblock is damaged is the
    // one whose data matters most.
    if let Ok(block) = read_superblock_block(into)
        && block[..4] == crate::metadata::MD_SB_MAGIC.to_le_bytes()
    {
        return Err(CliError::failed(format!(
            "{} holds an md superblock (a member of an array?); xor-files writes over its \
             target: name another file",
            into.display()
        )));
    }
    if sources.iter().any(|s| s == into) {
        return Err(CliError::usage(format!(
            "{} is both a source and the target",
            into.display()
        )));
    }
    let engine = crate::parity::ParityEngine::widest();
    let paths: Vec<&Path> = sources.iter().map(|p| p.as_path()).collect();
    let started = std::time::Instant::now();
    let bytes = xor_files(&paths, into, cell_bytes, threads, engine)
        .map_err(|e| CliError::failed(format!("bench xor-files: {e}")))?;
    let seconds = started.elapsed().as_secs_f64();
    let mb_per_s = bytes as f64 / seconds / 1e6;
    if json {
        println!(
            "{}",
            serde_json::json!({
                "op": "xor_files",
                "sources": sources.len(),
                "bytes": bytes,
                "cell_bytes": cell_bytes,
                "threads": threads,
                "engine": engine.name(),
                "seconds": seconds,
                "mb_per_s": mb_per_s,
            })
        );
    } else {
        println!(
            "xor of {} files of {bytes} bytes into {}: {seconds:.3} s, {mb_per_s:.0} MB/s per \
             file ({threads} threads, {} KiB cells, {})",
            sources.len(),
            into.display(),
            cell_bytes >> 10,
            engine.name()
        );
    }
    Ok(())
}

fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    let ok = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut out))
        .is_ok();
    if !ok {
        // No /dev/urandom: fall back to the clock and process id, still unique enough for
        // an array UUID on one host.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mut rng = crate::rng::SplitMix64::new(t as u64 ^ u64::from(std::process::id()));
        rng.fill(&mut out);
    }
    out
}

fn now_seconds() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Reads the v1.2 superblock block of an image file or device, opened as members are
/// (a FIFO or directory is refused, never waited on) but for reading only and without a
/// lock, so a served member can be examined. The error is the whole message, path first.
pub fn read_superblock_block(path: &Path) -> Result<Vec<u8>, String> {
    use std::os::unix::fs::FileExt;
    let file = crate::platform::open::open_for_reading(path).map_err(|e| e.to_string())?;
    let mut block = vec![0u8; SUPERBLOCK_BYTES];
    file.read_exact_at(&mut block, SUPERBLOCK_OFFSET_BYTES)
        .map_err(|e| format!("{}: cannot read superblock: {e}", path.display()))?;
    Ok(block)
}

/// Most directory entries looked at for the default name: a directory of member images
/// holds a few dozen, and a huge one must not make `create` slow.
const NAME_SCAN_MAX_ENTRIES: usize = 4096;

/// The name an array gets without `--name`: as mdadm names an array after its md device
/// number (`0`, `1`, …), the smallest number no array in the first member's directory (what
/// `raid serve --scan DIR` serves together) is named yet. mdadm's `host:` prefix and a group's
/// `-gK` suffix count as the number they carry; the members being created do not count.
/// Only regular files are read (a directory of block devices such as /dev is not probed).
pub fn default_array_name(members: &[PathBuf]) -> String {
    let Some(first) = members.first() else {
        return "0".into();
    };
    let dir = match first.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let ours: Vec<PathBuf> = members
        .iter()
        .filter_map(|m| std::fs::canonicalize(m).ok())
        .collect();
    let mut taken = std::collections::HashSet::new();
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for entry in entries.filter_map(Result::ok).take(NAME_SCAN_MAX_ENTRIES) {
            let path = entry.path();
            if !entry.file_type().is_ok_and(|t| t.is_file())
                || std::fs::canonicalize(&path).is_ok_and(|p| ours.contains(&p))
            {
                continue;
            }
            let Some(sb) = read_superblock_block(&path)
                .ok()
                .and_then(|block| Superblock::decode(&block).ok())
            else {
                continue;
            };
            let name = sb.name();
            let name = name.rsplit(':').next().unwrap_or(&name);
            let name = match name.rsplit_once("-g") {
                Some((base, k)) if !k.is_empty() && k.bytes().all(|b| b.is_ascii_digit()) => base,
                _ => name,
            };
            if let Ok(n) = name.parse::<u64>() {
                taken.insert(n);
            }
        }
    }
    let free = (0u64..).find(|n| !taken.contains(n)).unwrap_or(0);
    free.to_string()
}

/// Refuses a member list that names one file twice, by any path (symlink, hard link,
/// `./x` and `x`): by device and inode for files that exist, by the canonical directory
/// and name for the ones `--size` is to create.
fn check_members_distinct(members: &[PathBuf]) -> Result<(), CliError> {
    use crate::block::DeviceIdentity;
    #[derive(PartialEq)]
    enum Key {
        Existing(DeviceIdentity),
        New(PathBuf),
    }
    let mut seen: Vec<(Key, &PathBuf)> = Vec::new();
    for m in members {
        let key = if m.exists() {
            Key::Existing(
                crate::platform::open::identify(m).map_err(|e| CliError::failed(e.to_string()))?,
            )
        } else {
            let dir = match m.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
            Key::New(dir.join(m.file_name().unwrap_or_default()))
        };
        if let Some((_, first)) = seen.iter().find(|(k, _)| *k == key) {
            return Err(CliError::usage(if *first == m {
                format!("member {} is named twice", m.display())
            } else {
                format!(
                    "members {} and {} are the same file: one device fills one role",
                    first.display(),
                    m.display()
                )
            }));
        }
        seen.push((key, m));
    }
    Ok(())
}

fn cmd_create(args: CreateArgs) -> Result<(), CliError> {
    let name = &args
        .name
        .clone()
        .unwrap_or_else(|| default_array_name(&args.members));
    if !args.chunk.is_multiple_of(4096) || args.chunk == 0 {
        return Err(CliError::usage(format!(
            "chunk size {} is not a positive multiple of 4 KiB",
            args.chunk
        )));
    }
    let chunk_sectors =
        u32::try_from(args.chunk / 512).map_err(|_| CliError::usage("chunk size is too large"))?;
    if name.len() > 32 {
        return Err(CliError::usage("array name is longer than 32 bytes"));
    }
    let (level, nesting) = level_and_nesting(args.level, args.groups)?;
    match nesting {
        Some(spec) => check_nested(spec, args.members.len(), name, args.layout.as_deref()),
        None => parse_layout(level, args.layout.as_deref()).map(|_| ()),
    }
    .map_err(|e| CliError::usage(e.to_string()))?;
    check_members_distinct(&args.members)?;
    if let Some(bytes) = args.stripe_cache
        && !crate::array::persist::valid_stripe_cache_bytes(bytes)
    {
        return Err(CliError::usage(format!(
            "--stripe-cache {bytes}: 0, or a multiple of 4 KiB up to 4G"
        )));
    }
    // Check everything before touching anything.
    for m in &args.members {
        if m.exists() {
            let existing = read_superblock_block(m)
                .ok()
                .and_then(|block| Superblock::decode(&block).ok());
            if let (false, Some(sb)) = (args.force, existing) {
                return Err(CliError::failed(format!(
                    "{} already belongs to array {} ({}); use --force to overwrite",
                    m.display(),
                    sb.name(),
                    format_uuid(&sb.array_uuid)
                )));
            }
        } else if args.size.is_none() {
            return Err(CliError::usage(format!(
                "member {} does not exist (give --size to create image files)",
                m.display()
            )));
        }
    }
    // Freshly made sparse images read as zeroes everywhere: the copies already agree.
    let all_fresh = args.members.iter().all(|m| !m.exists());
    let pool = IoPool::new(4);
    let mut members: Vec<(String, Rc<dyn BlockDevice>)> = Vec::new();
    // Image files this command made, removed again if it fails.
    let mut made: Vec<PathBuf> = Vec::new();
    let remove_made = |made: &[PathBuf]| {
        for p in made {
            let _ = std::fs::remove_file(p);
        }
    };
    for m in &args.members {
        let disk = if m.exists() {
            FileDisk::open(m, pool.clone())
        } else {
            let d = FileDisk::create_sparse(m, args.size.unwrap_or(0), pool.clone());
            if d.is_ok() {
                made.push(m.clone());
            }
            d
        };
        match disk {
            Ok(disk) => members.push((m.display().to_string(), Rc::new(disk))),
            Err(e) => {
                remove_made(&made);
                return Err(CliError::failed(e.to_string()));
            }
        }
    }
    let opts = CreateOptions {
        level,
        layout: args.layout.clone(),
        chunk_sectors,
        name: name.clone(),
        uuid: random_bytes(),
        time_s: now_seconds(),
        entropy: u64::from_le_bytes(random_bytes()),
        assume_clean: all_fresh,
    };
    let rt = HostRuntime::new();
    let exec = rt.exec.clone();
    let stripe_cache = args
        .stripe_cache
        .map(crate::array::persist::format_size_bytes);
    // Recorded by the superblock update that marks the new array clean.
    let set_cache = move |array: &crate::array::Array| {
        if let Some(v) = &stripe_cache {
            let _ = array.apply_setting("stripe_cache", v);
        }
    };
    let result = rt.block_on(async move {
        match nesting {
            Some(spec) => {
                let stack = create_nested(&exec, members, &opts, spec).await?;
                for layer in stack.layers() {
                    set_cache(layer);
                }
                let clean = stack.mark_clean().await;
                Ok::<_, crate::array::assemble::CreateError>((stack.array, clean))
            }
            None => {
                let array = create(&exec, members, &opts).await?;
                set_cache(&array);
                let clean = array.mark_clean().await;
                Ok((array, clean))
            }
        }
    });
    pool.shutdown();
    let (array, clean) = match result {
        Ok(r) => r,
        Err(e) => {
            remove_made(&made);
            let status = match e {
                crate::array::assemble::CreateError::Io { .. } => 1,
                _ => 2,
            };
            return Err(CliError {
                message: e.to_string(),
                status,
            });
        }
    };
    clean.map_err(|e| CliError::failed(e.to_string()))?;
    let sb = array
        .superblock()
        .ok_or_else(|| CliError::failed("array has no live member"))?;
    let groups = match nesting {
        Some(spec) => format!(" in {} groups", spec.group_count),
        None => String::new(),
    };
    println!(
        "raid: created {} array '{}' ({}) of {} members{groups}, {} usable",
        args.level,
        name,
        format_uuid(&sb.array_uuid),
        args.members.len(),
        format_size(array.capacity_sectors() * 512)
    );
    Ok(())
}

/// The size of an image file or block device in sectors (a block device's metadata says 0,
/// its end does not).
fn device_sectors(path: &Path) -> std::io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    Ok(file.seek(SeekFrom::End(0))? / 512)
}

fn cmd_examine(args: ExamineArgs) -> Result<(), CliError> {
    let mut failures = 0;
    // Members examined so far that decoded, to tell members of one array that disagree.
    let mut seen: Vec<(&Path, Superblock)> = Vec::new();
    for path in &args.members {
        let block = match read_superblock_block(path) {
            Ok(block) => block,
            Err(e) => {
                eprintln!("raid: {e}");
                failures += 1;
                continue;
            }
        };
        let sb = match Superblock::decode(&block) {
            Ok(sb) => sb,
            Err(e) => {
                eprintln!("raid: {}: no valid md superblock: {e}", path.display());
                failures += 1;
                continue;
            }
        };
        print!("{}", describe_superblock(path, &sb));
        if let Some(line) = describe_ppl(path, &sb) {
            println!("{line}");
        }
        // What only the device, or the other members, can tell: shown as examine shows
        // everything (a copy of a superblock cut out of a member is examined too), and
        // named as what assembly refuses.
        match device_sectors(path) {
            Ok(sectors) => {
                if let Err(e) = sb.check_device_size(sectors) {
                    eprintln!(
                        "raid: {}: {e}: assembly refuses this member",
                        path.display()
                    );
                }
            }
            Err(e) => eprintln!("raid: {}: cannot tell the size: {e}", path.display()),
        }
        let other = seen.iter().find_map(|(p, o)| {
            (o.array_uuid == sb.array_uuid)
                .then(|| crate::metadata::geometry_difference(o, &sb).map(|d| (p, d)))
                .flatten()
        });
        if let Some((p, d)) = other {
            eprintln!(
                "raid: {}: disagrees with {} of the same array on {d}: assembly refuses \
                 the array",
                path.display(),
                p.display()
            );
        }
        seen.push((path, sb));
    }
    if failures > 0 {
        return Err(CliError::failed(format!(
            "{failures} of {} members have no valid superblock",
            args.members.len()
        )));
    }
    Ok(())
}

/// The partial parity log line of `raid examine`: where the log is and what its first
/// header holds (md replays a valid header's entries when it starts the array dirty).
fn describe_ppl(path: &Path, sb: &Superblock) -> Option<String> {
    use crate::metadata::ppl;
    use std::os::unix::fs::FileExt;
    let (offset, size) = sb.ppl()?;
    let what = if sb.features.contains(FeatureMap::MULTIPLE_PPLS) {
        "multiple"
    } else {
        "single"
    };
    let header = (|| {
        let file = crate::platform::open::open_for_reading(path).map_err(|e| e.to_string())?;
        let sector = (SUPERBLOCK_OFFSET_BYTES / 512)
            .checked_add_signed(i64::from(offset))
            .ok_or("before the start of the device")?;
        let mut block = vec![0u8; ppl::PPL_HEADER_BYTES];
        file.read_exact_at(&mut block, sector * 512)
            .map_err(|e| format!("cannot read: {e}"))?;
        Ok::<_, String>(match ppl::decode_header(&block, &sb.array_uuid) {
            Some(h) => format!("generation {}, {} entries", h.generation, h.entries),
            None => "no valid header".into(),
        })
    })()
    .unwrap_or_else(|e| e);
    Some(format!(
        "{:>16} : {what}, {size} sectors at offset {offset:+} ({header})",
        "PPL"
    ))
}

fn format_time(seconds: u64) -> String {
    // UTC, ISO 8601, from the civil-from-days algorithm (no time zone database on purpose).
    let days = (seconds / 86_400) as i64;
    let rem = seconds % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A readable rendering of one member's superblock, in the spirit of `mdadm --examine`.
pub fn describe_superblock(path: &Path, sb: &Superblock) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "{}:", path.display());
    let mut line = |k: &str, v: String| {
        let _ = writeln!(s, "{k:>16} : {v}");
    };
    line("Magic", "a92b4efc".into());
    line("Version", "1.2".into());
    line("Feature Map", format!("{:#x}", sb.features.bits()));
    line("Array UUID", format_uuid(&sb.array_uuid).to_string());
    line("Name", sb.name().into_owned());
    line("Creation Time", format_time(sb.ctime.seconds()));
    line("Raid Level", sb.level.to_string());
    line("Raid Devices", sb.raid_disk_count.to_string());
    line(
        "Avail Dev Size",
        format!(
            "{} sectors ({})",
            sb.data_size_sectors,
            format_size(sb.data_size_sectors * 512)
        ),
    );
    line(
        "Used Dev Size",
        format!(
            "{} sectors ({})",
            sb.size_sectors,
            format_size(sb.size_sectors * 512)
        ),
    );
    line("Data Offset", format!("{} sectors", sb.data_offset_sectors));
    line(
        "Super Offset",
        format!("{} sectors", sb.super_offset_sectors),
    );
    line(
        "State",
        if sb.is_clean() { "clean" } else { "active" }.into(),
    );
    line("Device UUID", format_uuid(&sb.device_uuid).to_string());
    line("Update Time", format_time(sb.utime.seconds()));
    line("Checksum", format!("{:08x} - correct", sb.checksum()));
    line("Events", sb.events.to_string());
    match sb.level {
        Level::Raid10 => {
            if let Some(l) = sb.raid10_layout() {
                line("Layout", l.to_string());
            }
        }
        Level::Raid0 => {
            if let Some(l) = sb.raid0_layout() {
                line("Layout", l.to_string());
            }
        }
        Level::Raid5 | Level::Raid6 => {
            if let Some(a) = crate::layout::ParityAlgorithm::from_md_number(sb.layout) {
                line("Layout", a.name().into());
            }
        }
        _ => {}
    }
    if sb.level.is_striped() {
        line("Chunk Size", format!("{}K", sb.chunk_sectors / 2));
    }
    line("Device Role", describe_role(sb.own_role()));
    let state: String = (0..sb.raid_disk_count)
        .map(|slot| {
            let present =
                (0..sb.max_dev()).any(|d| sb.role_of(d) == DeviceRole::Active(slot as u16));
            if present { 'A' } else { '.' }
        })
        .collect();
    line(
        "Array State",
        format!("{state} ('A' == active, '.' == missing)"),
    );
    s
}

fn describe_role(role: DeviceRole) -> String {
    match role {
        DeviceRole::Active(slot) => format!("Active device {slot}"),
        DeviceRole::Spare => "spare".into(),
        DeviceRole::Faulty => "faulty".into(),
        DeviceRole::Journal => "journal".into(),
    }
}

fn cmd_serve(args: ServeArgs) -> Result<(), CliError> {
    let mut members = Vec::new();
    if let Some(dir) = &args.scan {
        members.extend(scan_dir(dir).map_err(|e| CliError::failed(e.0))?);
    }
    for m in &args.members {
        members.push(MemberSpec::parse(m).map_err(|e| CliError::usage(e.to_string()))?);
    }
    if members.is_empty() {
        return Err(CliError::usage("give members, or --scan DIR"));
    }
    if args.nbd_socket.is_none() && args.nbd_listen.is_none() {
        return Err(CliError::usage(
            "give --nbd-socket PATH and/or --nbd-listen ADDR",
        ));
    }
    let mut nesting = None;
    let create = if args.create {
        let level_arg = args
            .level
            .ok_or_else(|| CliError::usage("--create needs --level"))?;
        let (level, spec) = level_and_nesting(level_arg, args.groups)?;
        nesting = spec;
        let paths: Vec<PathBuf> = members
            .iter()
            .filter_map(|m| match m {
                MemberSpec::Path(p) => Some(p.clone()),
                MemberSpec::Memory(_) => None,
            })
            .collect();
        let name = args
            .name
            .clone()
            .unwrap_or_else(|| default_array_name(&paths));
        if name.len() > 32 {
            return Err(CliError::usage("array name is longer than 32 bytes"));
        }
        match spec {
            Some(spec) => check_nested(spec, members.len(), &name, args.layout.as_deref()),
            None => parse_layout(level, args.layout.as_deref()).map(|_| ()),
        }
        .map_err(|e| CliError::usage(e.to_string()))?;
        let chunk_sectors = checked_chunk_sectors(args.chunk)?;
        // Memory members start zeroed; files are trusted only if they are all new.
        let assume_clean = members.iter().all(|m| matches!(m, MemberSpec::Memory(_)));
        Some(CreateOptions {
            level,
            layout: args.layout.clone(),
            chunk_sectors,
            name,
            uuid: random_bytes(),
            time_s: now_seconds(),
            entropy: u64::from_le_bytes(random_bytes()),
            assume_clean,
        })
    } else {
        if members.iter().any(|m| matches!(m, MemberSpec::Memory(_))) {
            return Err(CliError::usage(
                "mem: members hold no array yet: use --create with them",
            ));
        }
        None
    };
    serve(ServeOptions {
        nbd_socket: args.nbd_socket,
        nbd_listen: args.nbd_listen,
        control: args.control,
        create,
        nested: nesting,
        members,
        banner: true,
        monitor: args.monitoring.options(),
        stripe_cache_bytes: args.stripe_cache,
        max_concurrent_jobs: args.max_concurrent_jobs,
        cache_bytes: args.cache_size,
    })
    .map_err(|e| CliError::failed(e.0))
}

fn cmd_up(args: UpArgs) -> Result<(), CliError> {
    let dir = &args.dir;
    std::fs::create_dir_all(dir)
        .map_err(|e| CliError::failed(format!("{}: {e}", dir.display())))?;
    let existing = scan_dir(dir).map_err(|e| CliError::failed(e.0))?;
    if existing.is_empty() {
        println!(
            "raid: {} is empty: creating a RAID10 (near2) of 4 sparse {} members",
            dir.display(),
            format_size(args.member_size)
        );
        let members: Vec<PathBuf> = (0..4).map(|i| dir.join(format!("disk{i}.img"))).collect();
        cmd_create(CreateArgs {
            level: LevelArg::Md(Level::Raid10),
            groups: None,
            layout: Some("n2".into()),
            chunk: 512 * 1024,
            name: Some("orion".into()),
            size: Some(args.member_size),
            force: false,
            stripe_cache: args.stripe_cache,
            members,
        })?;
    }
    let members = scan_dir(dir).map_err(|e| CliError::failed(e.0))?;
    serve(ServeOptions {
        nbd_socket: Some(PathBuf::from("raid.sock")),
        nbd_listen: Some("127.0.0.1:10809".into()),
        control: dir.join("control.sock"),
        create: None,
        nested: None,
        members,
        banner: true,
        monitor: args.monitoring.options(),
        stripe_cache_bytes: args.stripe_cache,
        max_concurrent_jobs: default_max_jobs(),
        cache_bytes: None,
    })
    .map_err(|e| CliError::failed(e.0))
}

const fn default_max_jobs() -> usize {
    crate::driver::DEFAULT_MAX_CONCURRENT_JOBS
}

fn control_error(e: ControlError) -> CliError {
    CliError::failed(e.to_string())
}

fn decode_json<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, CliError> {
    serde_json::from_slice(payload)
        .map_err(|e| CliError::failed(format!("unexpected answer from the server: {e}")))
}

fn name_payload(name: &str) -> Vec<u8> {
    serde_json::to_vec(&manage::NameRequest {
        name: name.to_string(),
    })
    .unwrap_or_default()
}

fn cmd_status(args: StatusArgs) -> Result<(), CliError> {
    let payload =
        control::call(&args.control, manage::OP_STATUS, Vec::new()).map_err(control_error)?;
    if args.json {
        println!("{}", String::from_utf8_lossy(&payload));
        return Ok(());
    }
    let report: manage::StatusReport = decode_json(&payload)?;
    print!("{}", render_status(&report));
    Ok(())
}

/// `/proc/mdstat`-like text.
pub fn render_status(report: &manage::StatusReport) -> String {
    let mut s = String::new();
    if report.arrays.is_empty() {
        s.push_str("no arrays\n");
    }
    if !report.pool.is_empty() {
        let spares: Vec<String> = report
            .pool
            .iter()
            .map(|p| format!("{}({})", p.path, format_size(p.size_bytes)))
            .collect();
        let _ = writeln!(s, "spare pool : {}\n", spares.join(" "));
    }
    for a in &report.arrays {
        let members: Vec<String> = a
            .members
            .iter()
            .map(|m| match (m.state.as_str(), m.rebuilt) {
                ("active", _) => format!("{}[{}]", m.path, m.role),
                ("missing", _) => format!("(missing)[{}]", m.role),
                (other, Some(done)) => {
                    format!("{}[{}]({other} {:.1}%)", m.path, m.role, done * 100.0)
                }
                (other, None) => format!("{}[{}]({})", m.path, m.role, other),
            })
            .chain(a.spares.iter().map(|m| match m.state.as_str() {
                "spare" => format!("{}(S)", m.path),
                "faulty" => format!("{}(F)", m.path),
                other => format!("{}({other})", m.path),
            }))
            .collect();
        let _ = writeln!(
            s,
            "{} : {} {} {}",
            a.name,
            a.state,
            a.level,
            members.join(" ")
        );
        let map: String = a
            .members
            .iter()
            .map(|m| if m.state == "active" { 'U' } else { '_' })
            .collect();
        let layout = if a.layout == "-" {
            String::new()
        } else {
            format!(" layout {}", a.layout)
        };
        let chunk = if a.chunk_bytes > 0 {
            format!(" {}K chunk", a.chunk_bytes / 1024)
        } else {
            String::new()
        };
        let _ = writeln!(
            s,
            "      {} blocks{chunk}{layout} [{}/{}] [{map}]",
            a.size_bytes / 1024,
            a.members.len(),
            a.members.iter().filter(|m| m.state == "active").count()
        );
        if let Some(job) = &a.job {
            let _ = writeln!(s, "      {}: {}", job.kind, progress_bar(job));
        }
        if a.mismatches > 0 {
            let _ = writeln!(s, "      mismatch_cnt {} (see raid detail)", a.mismatches);
        }
        if a.needs_resync {
            let _ = writeln!(s, "      (unclean shutdown: resync pending)");
        }
        if let Some(parent) = &a.parent {
            let _ = writeln!(s, "      (group of {parent}, not exported)");
        }
        s.push('\n');
    }
    s
}

fn cmd_detail(args: NameArgs) -> Result<(), CliError> {
    let payload = control::call(&args.control, manage::OP_DETAIL, name_payload(&args.name))
        .map_err(control_error)?;
    if args.json {
        println!("{}", String::from_utf8_lossy(&payload));
        return Ok(());
    }
    let d: manage::ArrayDetail = decode_json(&payload)?;
    let mut s = String::new();
    let mut line = |k: &str, v: String| {
        let _ = writeln!(s, "{k:>16} : {v}");
    };
    line("Name", d.status.name.clone());
    line("UUID", d.status.uuid.clone());
    line("Raid Level", d.status.level.clone());
    line(
        "Array Size",
        format!(
            "{} ({})",
            d.status.size_bytes,
            format_size(d.status.size_bytes)
        ),
    );
    line(
        "Used Dev Size",
        format!(
            "{} ({})",
            d.member_size_bytes,
            format_size(d.member_size_bytes)
        ),
    );
    line("Raid Devices", d.status.members.len().to_string());
    line("State", d.status.state.clone());
    if let Some(parent) = &d.status.parent {
        line("Group Of", parent.clone());
    }
    line("Events", d.events.to_string());
    if d.status.layout != "-" {
        line("Layout", d.status.layout.clone());
    }
    if d.status.chunk_bytes > 0 {
        line("Chunk Size", format!("{}K", d.status.chunk_bytes / 1024));
    }
    line("Read Policy", d.read_policy.clone());
    line("Data Offset", format!("{} sectors", d.data_offset_sectors));
    line(
        "I/O",
        format!(
            "{} reads ({}), {} writes ({}), {} flushes, {} errors",
            d.counters.reads,
            format_size(d.counters.read_bytes),
            d.counters.writes,
            format_size(d.counters.write_bytes),
            d.counters.flushes,
            d.counters.errors
        ),
    );
    if let Some(scrub) = &d.scrub {
        line(
            "Last Scrub",
            format!(
                "{} {}: {} mismatched sectors, {} repaired",
                scrub.mode.name(),
                scrub.outcome.name(),
                scrub.mismatched_sectors,
                scrub.repaired_sectors
            ),
        );
    }
    if d.counters.cache_hits + d.counters.cache_misses > 0 {
        line(
            "Stripe Cache",
            format!(
                "{} hits, {} misses",
                d.counters.cache_hits, d.counters.cache_misses
            ),
        );
    }
    let _ = writeln!(
        s,
        "\n    Number   State     Reads  Writes  Errors  Corrected  Device"
    );
    for m in &d.status.members {
        let det = d.member_details.iter().find(|x| x.role == m.role);
        let (r, w, e, c) = det
            .map(|x| {
                let c = &x.counters;
                (
                    c.reads,
                    c.writes,
                    c.read_errors + c.write_errors,
                    c.corrected_sectors,
                )
            })
            .unwrap_or((0, 0, 0, 0));
        let _ = writeln!(
            s,
            "    {:>6}   {:<8} {:>6}  {:>6}  {:>6}  {:>9}  {}",
            m.role, m.state, r, w, e, c, m.path
        );
    }
    for m in &d.status.spares {
        let _ = writeln!(
            s,
            "    {:>6}   {:<8} {:>6}  {:>6}  {:>6}  {:>9}  {}",
            "-", m.state, "", "", "", "", m.path
        );
    }
    if let Some(scrub) = &d.scrub {
        // The bad regions after the member table, as `raid check --wait` prints them.
        let _ = write!(s, "\n{}", render_scrub_report(&d.status.name, scrub));
    }
    if !d.settings.is_empty() {
        let _ = writeln!(s);
        for (k, v) in &d.settings {
            let _ = writeln!(s, "{k:>20} = {v}");
        }
    }
    print!("{s}");
    Ok(())
}

fn cmd_stop(args: NameArgs) -> Result<(), CliError> {
    control::call(&args.control, manage::OP_STOP, name_payload(&args.name))
        .map_err(control_error)?;
    println!("raid: stopped {}", args.name);
    Ok(())
}

fn cmd_scrub(args: ScrubArgs, mode: ScrubMode) -> Result<(), CliError> {
    let name = name_payload(&args.name);
    if args.cancel {
        let payload =
            control::call(&args.control, manage::OP_SCRUB_CANCEL, name).map_err(control_error)?;
        if args.json {
            println!("{}", String::from_utf8_lossy(&payload));
        } else {
            println!("raid: cancelling the scrub of {}", args.name);
        }
        return Ok(());
    }
    let opcode = match mode {
        ScrubMode::Check => manage::OP_CHECK,
        ScrubMode::Repair => manage::OP_REPAIR,
    };
    control::call(&args.control, opcode, name.clone()).map_err(control_error)?;
    if !args.wait {
        if !args.json {
            println!(
                "raid: {} of {} started (follow it with raid status)",
                mode.name(),
                args.name
            );
        }
        return Ok(());
    }
    loop {
        let payload = control::call(&args.control, manage::OP_SCRUB_REPORT, name.clone())
            .map_err(control_error)?;
        let report: Option<ScrubReport> = decode_json(&payload)?;
        let Some(report) = report else {
            return Err(CliError::failed("the server has no scrub report"));
        };
        if report.outcome != ScrubOutcome::Running {
            if args.json {
                println!("{}", String::from_utf8_lossy(&payload));
            } else {
                print!("{}", render_scrub_report(&args.name, &report));
            }
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// A scrub report as text: totals, then one line per bad region.
pub fn render_scrub_report(name: &str, r: &ScrubReport) -> String {
    let mut s = String::new();
    let outcome = match r.outcome {
        ScrubOutcome::Running => "running",
        ScrubOutcome::Finished => "finished",
        ScrubOutcome::Cancelled => "cancelled",
        ScrubOutcome::Aborted => "aborted (redundancy lost)",
    };
    let _ = writeln!(s, "{} of {name}: {outcome}", r.mode.name());
    let _ = writeln!(
        s,
        "  checked {} sectors, mismatches {} sectors, repaired {} sectors, read errors corrected {} sectors{}",
        r.checked_sectors,
        r.mismatched_sectors,
        r.repaired_sectors,
        r.read_errors_corrected,
        if r.unchecked_sectors > 0 {
            format!(", {} sectors not checkable", r.unchecked_sectors)
        } else {
            String::new()
        }
    );
    for b in &r.bad_regions {
        let mut place = match b.stripe {
            Some(stripe) => format!("stripe {stripe}"),
            None => format!("array sector {}", b.array_sector),
        };
        if let Some(group) = &b.group {
            place = format!("group {group} {place}");
        }
        let wrong = match &b.wrong {
            Some(w) => {
                let block = match w.block {
                    crate::array::scrub::BlockKind::Data => match w.syndrome_slot {
                        Some(z) => format!("data (syndrome slot {z})"),
                        None => "data".into(),
                    },
                    crate::array::scrub::BlockKind::P => "P".into(),
                    crate::array::scrub::BlockKind::Q => "Q".into(),
                };
                format!(": wrong member {} [{}] holds {block}", w.name, w.slot)
            }
            None => String::new(),
        };
        let _ = writeln!(
            s,
            "  mismatch: {place}, member sectors {}+{}{wrong}",
            b.member_sector, b.sectors
        );
    }
    if r.bad_regions_omitted > 0 {
        let _ = writeln!(s, "  ... and {} more bad regions", r.bad_regions_omitted);
    }
    s
}

/// `[=========>..........] 42.1% (123.4 MB/s, ETA 00:03:12)`.
pub fn progress_bar(job: &manage::JobStatus) -> String {
    const WIDTH: usize = 20;
    let fraction = if job.progress.is_finite() {
        job.progress.clamp(0.0, 1.0)
    } else {
        0.0
    };
    let done = ((fraction * WIDTH as f64) as usize).min(WIDTH);
    let bar = if done == WIDTH {
        "=".repeat(WIDTH + 1)
    } else {
        format!("{}>{}", "=".repeat(done), ".".repeat(WIDTH - done))
    };
    let eta = if job.rate_bytes_per_s == 0 {
        "--:--:--".to_string()
    } else {
        format!(
            "{:02}:{:02}:{:02}",
            job.eta_s / 3600,
            job.eta_s / 60 % 60,
            job.eta_s % 60
        )
    };
    format!(
        "[{bar}] {:.1}% ({:.1} MB/s, ETA {eta})",
        fraction * 100.0,
        job.rate_bytes_per_s as f64 / 1e6
    )
}

/// A latency for people: `850ns`, `12.3us`, `4.56ms`, `1.20s`.
pub fn format_latency(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns}ns"),
        1_000..1_000_000 => format!("{:.1}us", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2}ms", ns as f64 / 1e6),
        _ => format!("{:.2}s", ns as f64 / 1e9),
    }
}

fn io_row(label: &str, io: &IoMetrics) -> String {
    let l = &io.latency;
    format!(
        "  {label:<6} {:>10} {:>10} {:>9.1} {:>8.2} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6}\n",
        io.ops,
        format_size(io.bytes),
        io.ops_per_s,
        io.bytes_per_s / 1e6,
        format_latency(l.avg_ns),
        format_latency(l.p50_ns),
        format_latency(l.p90_ns),
        format_latency(l.p99_ns),
        format_latency(l.p999_ns),
        format_latency(io.recent_latency.p99_ns),
        io.errors
    )
}

/// The text of `raid stats`.
pub fn render_stats(arrays: &[ArrayMetrics]) -> String {
    let mut s = String::new();
    if arrays.is_empty() {
        s.push_str("no arrays\n");
    }
    for a in arrays {
        let window = if a.interval_ns == 0 {
            "no rate window yet".to_string()
        } else {
            format!("rates over the last {:.1}s", a.interval_ns as f64 / 1e9)
        };
        let _ = writeln!(s, "{}: {}  ({window})", a.name, a.health);
        let header = format!(
            "  {:<6} {:>10} {:>10} {:>9} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>6}\n",
            "",
            "ops",
            "bytes",
            "IOPS",
            "MB/s",
            "avg",
            "p50",
            "p90",
            "p99",
            "p99.9",
            "p99 now",
            "errors"
        );
        s.push_str(&header);
        s.push_str(&io_row("read", &a.read));
        s.push_str(&io_row("write", &a.write));
        let lookups = a.cache_hits + a.cache_misses;
        let _ = writeln!(
            s,
            "  flushes {} ({} failed), discards {}, cache hits {} of {} ({:.1}%)",
            a.flushes,
            a.flush_errors,
            a.discards,
            a.cache_hits,
            lookups,
            a.cache_hit_ratio * 100.0
        );
        if let Some(job) = &a.job {
            let _ = writeln!(s, "  {}: {}", job.kind, progress_bar(job));
        }
        for m in &a.members {
            let _ = writeln!(s, "  member {} {} ({})", m.slot, m.member, m.state);
            s.push_str(&io_row("read", &m.read));
            s.push_str(&io_row("write", &m.write));
        }
        s.push('\n');
    }
    s
}

fn cmd_stats(args: StatsArgs) -> Result<(), CliError> {
    if args.prometheus {
        let text = control::call(&args.control, manage::OP_PROMETHEUS, Vec::new())
            .map_err(control_error)?;
        print!("{}", String::from_utf8_lossy(&text));
        return Ok(());
    }
    let payload = match &args.name {
        Some(name) => name_payload(name),
        None => Vec::new(),
    };
    let answer =
        control::call(&args.control, manage::OP_METRICS, payload).map_err(control_error)?;
    if args.json {
        println!("{}", String::from_utf8_lossy(&answer));
        return Ok(());
    }
    let report: manage::MetricsReport = decode_json(&answer)?;
    print!("{}", render_stats(&report.arrays));
    Ok(())
}

/// One `raid monitor` line.
pub fn render_event(e: &EventRecord) -> String {
    let wall = format_time(e.wall_time_ms / 1000);
    // "YYYY-MM-DD HH:MM:SS UTC" with milliseconds before the zone.
    let wall = match wall.strip_suffix(" UTC") {
        Some(t) => format!("{t}.{:03} UTC", e.wall_time_ms % 1000),
        None => wall,
    };
    format!("{wall} [{}] {}: {}", e.seq, e.array, e.event)
}

fn cmd_monitor(args: MonitorArgs) -> Result<(), CliError> {
    use std::io::Write as _;
    let fetch = |after_seq: u64| -> Result<EventBatch, CliError> {
        let payload = serde_json::to_vec(&manage::EventsRequest {
            after_seq,
            max_events: Some(1000),
        })
        .unwrap_or_default();
        let answer =
            control::call(&args.control, manage::OP_EVENTS, payload).map_err(control_error)?;
        decode_json(&answer)
    };
    let mut after = if args.all { 0 } else { fetch(0)?.latest_seq };
    let stdout = std::io::stdout();
    loop {
        let batch = fetch(after)?;
        if batch.latest_seq < after {
            // The server restarted: its numbering did too.
            eprintln!("raid: the server restarted; following its new events");
            after = 0;
            continue;
        }
        let mut out = stdout.lock();
        if batch.missed > 0 {
            if args.json {
                let _ = writeln!(out, "{{\"missed\":{}}}", batch.missed);
            } else {
                let _ = writeln!(
                    out,
                    "({} events missed: the server's ring wrapped)",
                    batch.missed
                );
            }
        }
        for e in &batch.events {
            let line = if args.json {
                serde_json::to_string(e).unwrap_or_default()
            } else {
                render_event(e)
            };
            if writeln!(out, "{line}").is_err() {
                // The reader went away (a closed pipe): nothing left to do.
                return Ok(());
            }
            after = e.seq;
        }
        let _ = out.flush();
        drop(out);
        if batch.events.len() < 1000 {
            std::thread::sleep(std::time::Duration::from_nanos(args.poll));
        }
    }
}

fn cmd_member(args: MemberArgs, opcode: u16, done: &str) -> Result<(), CliError> {
    let payload = serde_json::to_vec(&manage::MemberRequest {
        name: args.name.clone(),
        member: args.member.clone(),
    })
    .unwrap_or_default();
    control::call(&args.control, opcode, payload).map_err(control_error)?;
    println!("raid: {}: {} {done}", args.name, args.member);
    Ok(())
}

/// The server opens the device itself, maybe from another directory: send an absolute path.
fn server_path(member: &str) -> String {
    if member.starts_with("mem:") {
        return member.to_string();
    }
    std::fs::canonicalize(member)
        .map(|p| p.display().to_string())
        .unwrap_or_else(|_| member.to_string())
}

fn cmd_add(args: AddArgs) -> Result<(), CliError> {
    let (name, member) = match (args.pool, args.args.as_slice()) {
        (true, [member]) => (None, member.clone()),
        (false, [name, member]) => (Some(name.clone()), member.clone()),
        (true, _) => return Err(CliError::usage("usage: raid add --pool MEMBER")),
        (false, _) => return Err(CliError::usage("usage: raid add NAME MEMBER")),
    };
    let payload = serde_json::to_vec(&manage::AddRequest {
        name: name.clone(),
        member: server_path(&member),
    })
    .unwrap_or_default();
    control::call(&args.control, manage::OP_ADD, payload).map_err(control_error)?;
    match name {
        Some(n) => println!("raid: {n}: added {member}"),
        None => println!("raid: added {member} to the shared spare pool"),
    }
    Ok(())
}

fn cmd_replace(args: ReplaceArgs) -> Result<(), CliError> {
    let payload = serde_json::to_vec(&manage::ReplaceRequest {
        name: args.name.clone(),
        member: args.member.clone(),
        with: server_path(&args.with),
    })
    .unwrap_or_default();
    control::call(&args.control, manage::OP_REPLACE, payload).map_err(control_error)?;
    println!(
        "raid: {}: replacing {} with {}",
        args.name, args.member, args.with
    );
    Ok(())
}

fn cmd_set(args: SetArgs) -> Result<(), CliError> {
    use crate::array::settings::{SETTING_KEYS, Setting};
    // An argument is a setting when it starts with a known key and `=`; anything else names
    // the array (or, with --members, a member: a path may hold a `=` of its own).
    let is_setting = |a: &str| {
        a.split_once('=').is_some_and(|(k, _)| {
            SETTING_KEYS.contains(&k.trim()) || !args.members || !Path::new(a).exists()
        })
    };
    let (pairs, targets): (Vec<&String>, Vec<&String>) =
        args.args.iter().partition(|a| is_setting(a));
    let mut checked = Vec::new();
    for kv in &pairs {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(CliError::usage(format!("expected key=value, got '{kv}'")));
        };
        // Every pair is checked before anything is sent or written: a refused one changes
        // nothing.
        let setting = Setting::parse(k, v).map_err(|e| CliError::usage(e.to_string()))?;
        checked.push((k.trim().to_string(), v.trim().to_string(), setting));
    }
    if checked.is_empty() {
        return Err(CliError::usage("no key=value given"));
    }
    if args.members {
        let members: Vec<PathBuf> = targets.iter().map(PathBuf::from).collect();
        let settings: Vec<Setting> = checked.iter().map(|(_, _, s)| *s).collect();
        return set_on_stopped_members(&members, &settings);
    }
    let name = match targets.as_slice() {
        [name] => (*name).clone(),
        [] => return Err(CliError::usage("usage: raid set NAME key=value...")),
        more => {
            return Err(CliError::usage(format!(
                "one array name expected, got {} ({}); for members of a stopped array use \
                 raid set --members",
                more.len(),
                more.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            )));
        }
    };
    let mut last = None;
    for (key, value, _) in checked {
        let payload = serde_json::to_vec(&manage::SetRequest {
            name: name.clone(),
            key,
            value,
        })
        .unwrap_or_default();
        last = Some(control::call(&args.control, manage::OP_SET, payload).map_err(control_error)?);
    }
    if let Some(payload) = last {
        let report: manage::SettingsReport = decode_json(&payload)?;
        for (k, v) in report.settings {
            println!("{k}={v}");
        }
    }
    Ok(())
}

/// `raid set --members`: rewrites the settings in the Orion record of stopped members. The
/// members are opened (and locked) like a server opens them, so members a server holds are
/// refused before anything is read.
fn set_on_stopped_members(
    members: &[PathBuf],
    settings: &[crate::array::settings::Setting],
) -> Result<(), CliError> {
    if members.is_empty() {
        return Err(CliError::usage(
            "usage: raid set --members MEMBER... key=value...",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    let pool = IoPool::new(2);
    let mut devices: Vec<(String, Rc<dyn BlockDevice>)> = Vec::new();
    for m in members {
        if !seen.insert(m.clone()) {
            return Err(CliError::usage(format!(
                "member {} is named twice",
                m.display()
            )));
        }
        let disk = FileDisk::open(m, pool.clone())
            .map_err(|e| CliError::failed(format!("{}: {e}", m.display())))?;
        devices.push((m.display().to_string(), Rc::new(disk)));
    }
    let rt = HostRuntime::new();
    let changes = settings.to_vec();
    let result =
        rt.block_on(async move { crate::array::persist::set_offline(&devices, &changes).await });
    pool.shutdown();
    let reports = result.map_err(|e| CliError::failed(format!("raid set: {e}")))?;
    for r in reports {
        println!(
            "raid: {}: recorded on {} stopped member(s) ({}):",
            r.array,
            r.members.len(),
            r.members.join(" ")
        );
        for s in settings {
            println!("{}={}", s.key(), s.value_text());
        }
    }
    Ok(())
}

fn checked_chunk_sectors(chunk: u64) -> Result<u32, CliError> {
    if !chunk.is_multiple_of(4096) || chunk == 0 {
        return Err(CliError::usage(format!(
            "chunk size {chunk} is not a positive multiple of 4 KiB"
        )));
    }
    u32::try_from(chunk / 512).map_err(|_| CliError::usage("chunk size is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_like_mdadm() {
        assert_eq!(parse_level("raid10"), Ok(Level::Raid10));
        assert_eq!(parse_level("1"), Ok(Level::Raid1));
        assert_eq!(parse_level("mirror"), Ok(Level::Raid1));
        assert_eq!(parse_level("raid5"), Ok(Level::Raid5));
        assert_eq!(parse_level("6"), Ok(Level::Raid6));
        assert_eq!(parse_level("4"), Ok(Level::Raid4));
        assert!(parse_level("7").is_err());
    }

    #[test]
    fn status_text_shows_members_and_job_progress() {
        let report = manage::StatusReport {
            arrays: vec![manage::ArrayStatus {
                name: "a".into(),
                level: "raid1".into(),
                size_bytes: 1 << 30,
                state: "degraded".into(),
                members: vec![
                    manage::MemberStatus {
                        path: "x.img".into(),
                        role: 0,
                        state: "active".into(),
                        rebuilt: None,
                    },
                    manage::MemberStatus {
                        path: String::new(),
                        role: 1,
                        state: "missing".into(),
                        rebuilt: None,
                    },
                ],
                spares: vec![],
                job: Some(manage::JobStatus {
                    kind: "recovery".into(),
                    progress: 0.5,
                    rate_bytes_per_s: 10 << 20,
                    eta_s: 51,
                }),
                mismatches: 0,
                uuid: "u".into(),
                device_id: 1,
                chunk_bytes: 0,
                layout: "-".into(),
                needs_resync: false,
                parent: None,
            }],
            pool: vec![manage::PoolSpare {
                path: "s.img".into(),
                size_bytes: 1 << 30,
            }],
        };
        let text = render_status(&report);
        assert!(text.starts_with("spare pool : s.img(1.00 GiB)\n"), "{text}");
        assert!(
            text.contains("a : degraded raid1 x.img[0] (missing)[1]"),
            "{text}"
        );
        assert!(text.contains("[2/1] [U_]"), "{text}");
        assert!(
            text.contains("recovery: [==========>..........] 50.0% (10.5 MB/s, ETA 00:00:51)"),
            "{text}"
        );
    }

    #[test]
    fn scrub_report_text_names_the_member() {
        use crate::array::scrub::{BadRegion, BlockKind, WrongMember};
        let report = ScrubReport {
            mode: ScrubMode::Check,
            outcome: ScrubOutcome::Finished,
            checked_sectors: 1000,
            mismatched_sectors: 16,
            bad_regions: vec![
                BadRegion {
                    stripe: Some(3),
                    array_sector: 384,
                    member_sector: 384,
                    sectors: 8,
                    wrong: Some(WrongMember {
                        slot: 2,
                        name: "m2.img".into(),
                        block: BlockKind::Data,
                        syndrome_slot: Some(1),
                    }),
                    group: None,
                },
                BadRegion {
                    stripe: None,
                    array_sector: 40,
                    member_sector: 40,
                    sectors: 8,
                    wrong: None,
                    group: None,
                },
            ],
            bad_regions_omitted: 2,
            repaired_sectors: 0,
            read_errors_corrected: 0,
            unchecked_sectors: 0,
        };
        let text = render_scrub_report("r6", &report);
        assert!(text.starts_with("check of r6: finished\n"), "{text}");
        assert!(text.contains("mismatches 16 sectors"), "{text}");
        assert!(
            text.contains("stripe 3, member sectors 384+8: wrong member m2.img [2] holds data (syndrome slot 1)"),
            "{text}"
        );
        assert!(
            text.contains("array sector 40, member sectors 40+8\n"),
            "{text}"
        );
        assert!(text.contains("2 more bad regions"), "{text}");
    }

    #[test]
    fn nested_levels_need_groups() {
        assert_eq!(parse_level_arg("raid50"), Ok(LevelArg::Nested(50)));
        assert_eq!(parse_level_arg("60"), Ok(LevelArg::Nested(60)));
        assert_eq!(parse_level_arg("5"), Ok(LevelArg::Md(Level::Raid5)));
        assert!(parse_level_arg("70").unwrap_err().contains("50, 60"));
        let (level, spec) = level_and_nesting(LevelArg::Nested(60), Some(3)).unwrap();
        assert_eq!(level, Level::Raid0);
        assert_eq!(
            spec,
            Some(NestedSpec {
                group_level: Level::Raid6,
                group_count: 3
            })
        );
        assert_eq!(
            level_and_nesting(LevelArg::Nested(50), None)
                .unwrap_err()
                .status,
            2
        );
        assert!(level_and_nesting(LevelArg::Md(Level::Raid5), Some(2)).is_err());
    }

    #[test]
    fn status_text_marks_groups() {
        let member = |path: &str, role| manage::MemberStatus {
            path: path.into(),
            role,
            state: "active".into(),
            rebuilt: None,
        };
        let array = |name: &str, level: &str, members, parent: Option<&str>| manage::ArrayStatus {
            name: name.into(),
            level: level.into(),
            size_bytes: 1 << 30,
            state: "optimal".into(),
            members,
            spares: Vec::new(),
            job: None,
            mismatches: 0,
            uuid: "u".into(),
            device_id: 1,
            chunk_bytes: 65536,
            layout: "original".into(),
            needs_resync: false,
            parent: parent.map(Into::into),
        };
        let report = manage::StatusReport {
            arrays: vec![
                array("big", "raid50", vec![member("big-g0", 0)], None),
                array("big-g0", "raid5", vec![member("a.img", 0)], Some("big")),
            ],
            pool: vec![],
        };
        let text = render_status(&report);
        assert!(text.contains("big : optimal raid50 big-g0[0]"), "{text}");
        assert!(text.contains("(group of big, not exported)"), "{text}");
        assert_eq!(text.matches("group of").count(), 1, "{text}");
        // Scripts see `parent` only on groups.
        let json = serde_json::to_string(&report).unwrap();
        assert_eq!(json.matches("\"parent\"").count(), 1, "{json}");
    }

    #[test]
    fn progress_bar_ends_and_eta() {
        let job = |progress: f64, rate: u64, eta: u64| manage::JobStatus {
            kind: "resync".into(),
            progress,
            rate_bytes_per_s: rate,
            eta_s: eta,
        };
        assert_eq!(
            progress_bar(&job(0.421, 123_000_000, 192)),
            "[========>............] 42.1% (123.0 MB/s, ETA 00:03:12)"
        );
        assert_eq!(
            progress_bar(&job(0.0, 0, 0)),
            "[>....................] 0.0% (0.0 MB/s, ETA --:--:--)"
        );
        assert_eq!(
            progress_bar(&job(1.0, 5_000_000, 0)),
            "[=====================] 100.0% (5.0 MB/s, ETA 00:00:00)"
        );
        assert_eq!(
            progress_bar(&job(f64::NAN, 1, 3_725)),
            "[>....................] 0.0% (0.0 MB/s, ETA 01:02:05)"
        );
    }

    #[test]
    fn stats_text_has_a_row_per_direction_and_member() {
        let io = IoMetrics {
            ops: 12,
            bytes: 3 << 20,
            errors: 1,
            ops_per_s: 4.0,
            bytes_per_s: 2.5e6,
            ..IoMetrics::default()
        };
        let array = ArrayMetrics {
            name: "r1".into(),
            health: "degraded".into(),
            interval_ns: 2_000_000_000,
            read: io.clone(),
            write: IoMetrics::default(),
            flushes: 2,
            flush_errors: 0,
            discards: 0,
            discard_errors: 0,
            cache_hits: 3,
            cache_misses: 1,
            cache_hit_ratio: 0.75,
            job: None,
            members: vec![crate::monitor::MemberMetrics {
                slot: 1,
                member: "b.img".into(),
                state: "faulty".into(),
                read: io,
                write: IoMetrics::default(),
                corrected_sectors: 0,
                in_flight: 0,
            }],
        };
        let text = render_stats(&[array]);
        assert!(
            text.starts_with("r1: degraded  (rates over the last 2.0s)\n"),
            "{text}"
        );
        assert!(text.contains("  member 1 b.img (faulty)\n"), "{text}");
        assert!(text.contains("cache hits 3 of 4 (75.0%)"), "{text}");
        let read_rows = text
            .lines()
            .filter(|l| l.trim_start().starts_with("read "))
            .count();
        assert_eq!(read_rows, 2, "{text}");
        assert!(text.contains("3.00 MiB") && text.contains("2.50"), "{text}");
        assert_eq!(render_stats(&[]), "no arrays\n");
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration_ns("500ms"), Ok(500_000_000));
        assert_eq!(parse_duration_ns("2s"), Ok(2_000_000_000));
        assert_eq!(parse_duration_ns("1.5"), Ok(1_500_000_000));
        assert_eq!(parse_duration_ns("1m"), Ok(60_000_000_000));
        assert!(parse_duration_ns("1ms").is_err());
        assert!(parse_duration_ns("soon").is_err());
    }

    #[test]
    fn event_lines_and_latencies_read_well() {
        let e = EventRecord {
            seq: 7,
            time_ns: 0,
            wall_time_ms: 1_700_000_000_123,
            array: "r1".into(),
            event: crate::monitor::Event::MemberFailed {
                slot: 1,
                member: "b.img".into(),
            },
        };
        assert_eq!(
            render_event(&e),
            "2023-11-14 22:13:20.123 UTC [7] r1: member_failed slot 1 (b.img)"
        );
        assert_eq!(format_latency(999), "999ns");
        assert_eq!(format_latency(12_340), "12.3us");
        assert_eq!(format_latency(4_560_000), "4.56ms");
        assert_eq!(format_latency(1_200_000_000), "1.20s");
    }

    #[test]
    fn time_formatting() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_time(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(format_time(951_782_400), "2000-02-29 00:00:00 UTC");
    }
}
