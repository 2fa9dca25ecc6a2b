//! The `raid` command line: argument parsing and the commands that need no running server.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use clap::{Args, Parser, Subcommand};

use crate::array::assemble::{CreateOptions, create, parse_layout};
use crate::block::BlockDevice;
use crate::host::control::{self, ControlError};
use crate::host::runtime::HostRuntime;
use crate::host::serve::{ServeOptions, scan_dir, serve};
use crate::host::spec::{MemberSpec, format_size, parse_size};
use crate::manage;
use crate::metadata::{
    DeviceRole, Level, SUPERBLOCK_BYTES, SUPERBLOCK_OFFSET_BYTES, Superblock, format_uuid,
};
use crate::platform::file::{FileDisk, IoPool};

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
    #[arg(short, long, value_parser = parse_level)]
    pub level: Option<Level>,
    /// With --create: the layout.
    #[arg(short = 'p', long)]
    pub layout: Option<String>,
    /// With --create: the chunk size.
    #[arg(short, long, value_parser = parse_size, default_value = "512K")]
    pub chunk: u64,
    /// With --create: the array name.
    #[arg(short = 'N', long, default_value = "orion")]
    pub name: String,
    /// Members: image files, block devices, or mem:SIZE for a volatile memory member.
    pub members: Vec<String>,
}

#[derive(Args, Debug)]
pub struct UpArgs {
    /// Directory of the member images.
    #[arg(long, default_value = "raid-data")]
    pub dir: PathBuf,
    /// Size of each member image created on first use.
    #[arg(long, value_parser = parse_size, default_value = "1G")]
    pub member_size: u64,
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
pub struct CreateArgs {
    /// RAID level: 0, 1 or 10 (also raid0, raid1, raid10, mirror, stripe).
    #[arg(short, long, value_parser = parse_level)]
    pub level: Level,
    /// Layout: for RAID10 near2 (n2), far2 (f2), offset2 (o2), n3, …; for RAID0 with
    /// members of unequal size, original or alternate.
    #[arg(short = 'p', long)]
    pub layout: Option<String>,
    /// Chunk size (e.g. 64K, 512K, 1M); default 512K.
    #[arg(short, long, value_parser = parse_size, default_value = "512K")]
    pub chunk: u64,
    /// Array name stored in the superblock (up to 32 bytes).
    #[arg(short = 'N', long, default_value = "orion")]
    pub name: String,
    /// Create missing member image files, sparse, of this size.
    #[arg(short, long, value_parser = parse_size)]
    pub size: Option<u64>,
    /// Overwrite members that already carry an md superblock.
    #[arg(short, long)]
    pub force: bool,
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
        Command::Bench(BenchCommand::Parity {
            json,
            no_memory_bound,
        }) => {
            let mut opts = crate::parity::bench::BenchOptions {
                json,
                ..Default::default()
            };
            if no_memory_bound {
                opts.memory_bound_bytes = 0;
            }
            let stdout = std::io::stdout();
            crate::parity::bench::run(&opts, &mut stdout.lock())
                .map(|_| ())
                .map_err(|e| CliError::failed(format!("bench: {e}")))
        }
    }
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

/// Reads the v1.2 superblock block of an image file or device.
pub fn read_superblock_block(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::open(path)?;
    let mut block = vec![0u8; SUPERBLOCK_BYTES];
    file.read_exact_at(&mut block, SUPERBLOCK_OFFSET_BYTES)?;
    Ok(block)
}

fn cmd_create(args: CreateArgs) -> Result<(), CliError> {
    if !args.chunk.is_multiple_of(4096) || args.chunk == 0 {
        return Err(CliError::usage(format!(
            "chunk size {} is not a positive multiple of 4 KiB",
            args.chunk
        )));
    }
    let chunk_sectors =
        u32::try_from(args.chunk / 512).map_err(|_| CliError::usage("chunk size is too large"))?;
    if args.name.len() > 32 {
        return Err(CliError::usage("array name is longer than 32 bytes"));
    }
    parse_layout(args.level, args.layout.as_deref()).map_err(|e| CliError::usage(e.to_string()))?;
    let mut seen = std::collections::HashSet::new();
    for m in &args.members {
        if !seen.insert(m.clone()) {
            return Err(CliError::usage(format!(
                "member {} is named twice",
                m.display()
            )));
        }
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
                return Err(CliError::failed(format!("{}: {e}", m.display())));
            }
        }
    }
    let opts = CreateOptions {
        level: args.level,
        layout: args.layout.clone(),
        chunk_sectors,
        name: args.name.clone(),
        uuid: random_bytes(),
        time_s: now_seconds(),
        entropy: u64::from_le_bytes(random_bytes()),
        assume_clean: all_fresh,
    };
    let rt = HostRuntime::new();
    let exec = rt.exec.clone();
    let result = rt.block_on(async move {
        let array = create(&exec, members, &opts).await?;
        let clean = array.mark_clean().await;
        Ok::<_, crate::array::assemble::CreateError>((array, clean))
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
    println!(
        "raid: created {} array '{}' ({}) of {} members, {} usable",
        args.level,
        args.name,
        format_uuid(&sb.array_uuid),
        args.members.len(),
        format_size(array.capacity_sectors() * 512)
    );
    Ok(())
}

fn cmd_examine(args: ExamineArgs) -> Result<(), CliError> {
    let mut failures = 0;
    for path in &args.members {
        match read_superblock_block(path) {
            Err(e) => {
                eprintln!("raid: {}: cannot read superblock: {e}", path.display());
                failures += 1;
            }
            Ok(block) => match Superblock::decode(&block) {
                Err(e) => {
                    eprintln!("raid: {}: no valid md superblock: {e}", path.display());
                    failures += 1;
                }
                Ok(sb) => print!("{}", describe_superblock(path, &sb)),
            },
        }
    }
    if failures > 0 {
        return Err(CliError::failed(format!(
            "{failures} of {} members have no valid superblock",
            args.members.len()
        )));
    }
    Ok(())
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
    let create = if args.create {
        let level = args
            .level
            .ok_or_else(|| CliError::usage("--create needs --level"))?;
        parse_layout(level, args.layout.as_deref()).map_err(|e| CliError::usage(e.to_string()))?;
        let chunk_sectors = checked_chunk_sectors(args.chunk)?;
        // Memory members start zeroed; files are trusted only if they are all new.
        let assume_clean = members.iter().all(|m| matches!(m, MemberSpec::Memory(_)));
        Some(CreateOptions {
            level,
            layout: args.layout.clone(),
            chunk_sectors,
            name: args.name.clone(),
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
        members,
        banner: true,
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
            level: Level::Raid10,
            layout: Some("n2".into()),
            chunk: 512 * 1024,
            name: "orion".into(),
            size: Some(args.member_size),
            force: false,
            members,
        })?;
    }
    let members = scan_dir(dir).map_err(|e| CliError::failed(e.0))?;
    serve(ServeOptions {
        nbd_socket: Some(PathBuf::from("raid.sock")),
        nbd_listen: Some("127.0.0.1:10809".into()),
        control: dir.join("control.sock"),
        create: None,
        members,
        banner: true,
    })
    .map_err(|e| CliError::failed(e.0))
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
    for a in &report.arrays {
        let members: Vec<String> = a
            .members
            .iter()
            .map(|m| match m.state.as_str() {
                "active" => format!("{}[{}]", m.path, m.role),
                "missing" => format!("(missing)[{}]", m.role),
                other => format!("{}[{}]({})", m.path, m.role, other),
            })
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
            let width = 20usize;
            let done = ((job.progress.clamp(0.0, 1.0)) * width as f64) as usize;
            let _ = writeln!(
                s,
                "      [{}>{}]  {} = {:.1}% finish={}s speed={}K/sec",
                "=".repeat(done),
                ".".repeat(width - done),
                job.kind,
                job.progress * 100.0,
                job.eta_s,
                job.rate_bytes_per_s / 1024
            );
        }
        if a.needs_resync {
            let _ = writeln!(s, "      (unclean shutdown: resync pending)");
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
    print!("{s}");
    Ok(())
}

fn cmd_stop(args: NameArgs) -> Result<(), CliError> {
    control::call(&args.control, manage::OP_STOP, name_payload(&args.name))
        .map_err(control_error)?;
    println!("raid: stopped {}", args.name);
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
                    },
                    manage::MemberStatus {
                        path: String::new(),
                        role: 1,
                        state: "missing".into(),
                    },
                ],
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
            }],
        };
        let text = render_status(&report);
        assert!(
            text.contains("a : degraded raid1 x.img[0] (missing)[1]"),
            "{text}"
        );
        assert!(text.contains("[2/1] [U_]"), "{text}");
        assert!(
            text.contains("[==========>..........]  recovery = 50.0% finish=51s speed=10240K/sec"),
            "{text}"
        );
    }

    #[test]
    fn time_formatting() {
        assert_eq!(format_time(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(format_time(1_700_000_000), "2023-11-14 22:13:20 UTC");
        assert_eq!(format_time(951_782_400), "2000-02-29 00:00:00 UTC");
    }
}
