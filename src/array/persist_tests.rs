//! Persistence engine tests: settings, stripe cache size and a stopped scrub's position
//! survive a re-assembly from the same member disks; corrupt or missing records fall back to
//! the defaults; pool labels are found and never shadow an md member.

extern crate std;

use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use super::Array;
use super::assemble::assemble;
use super::members::{ArrayPolicy, RebuildPriority, SparePolicy};
use super::persist::{
    OfflineSetError, format_size_bytes, has_pool_label, parse_size_bytes, read_extension,
    set_offline, write_pool_label,
};
use super::scrub::{ScrubMode, ScrubOutcome};
use super::settings::Setting;
use super::test_rig::{faulty_array, options, write_now};
use super::{ReadPolicy, SUPERBLOCK_SECTOR};
use crate::block::{BlockDevice, SECTOR_BYTES};
use crate::executor::Executor;
use crate::metadata::extension::{
    EXTENSION_BYTES, ExtensionRecord, POOL_LABEL_SECTOR, StoredRegions, StoredSettings,
    extension_sector,
};
use crate::metadata::{FeatureMap, Level, Superblock};
use crate::platform::memory::MemoryDisk;
use crate::rng::SplitMix64;

/// Assembles the one array on `mem` with a fresh executor (a restart).
fn reassemble(mem: &[Rc<MemoryDisk>]) -> (Executor, Rc<Array>) {
    let exec = Executor::new();
    let members: Vec<(String, Rc<dyn BlockDevice>)> = mem
        .iter()
        .enumerate()
        .map(|(i, m)| (format!("d{i}"), m.clone() as Rc<dyn BlockDevice>))
        .collect();
    let e = exec.clone();
    let result = exec
        .block_on(async move { assemble(&e, members).await })
        .expect("assembly finishes");
    assert_eq!(result.arrays.len(), 1, "{result:?}");
    let array = result.arrays[0].clone();
    crate::jobs::attach(&array);
    (exec, array)
}

fn superblock_of(mem: &MemoryDisk) -> Superblock {
    let mut block = vec![0u8; 4096];
    mem.read_at(SUPERBLOCK_SECTOR, &mut block).unwrap();
    Superblock::decode(&block).unwrap()
}

fn stop(exec: &Executor, array: &Rc<Array>) {
    let a = array.clone();
    exec.block_on(async move {
        crate::jobs::scrub::stop(&a).await;
        a.mark_clean().await
    })
    .expect("stop finishes")
    .expect("marked clean");
}

fn set(array: &Array, key: &str, value: &str) {
    array.apply_setting(key, value).expect("a valid setting");
}

fn persist(exec: &Executor, array: &Rc<Array>) {
    let a = array.clone();
    exec.block_on(async move { a.persist_settings().await })
        .expect("finishes")
        .expect("recorded");
}

#[test]
fn settings_survive_a_restart() {
    let r = faulty_array(options(Level::Raid5, None, 16, "p"), 4, 4096, false);
    set(&r.array, "rebuild_priority", "high");
    set(&r.array, "rebuild_rate_mb_s", "40");
    set(&r.array, "spare_policy", "shared");
    set(&r.array, "read_policy", "round-robin");
    set(&r.array, "read_error_limit", "7");
    set(&r.array, "read_error_window_s", "30");
    set(&r.array, "io_timeout_ms", "2500");
    set(&r.array, "stripe_cache", "64M");
    persist(&r.exec, &r.array);
    let before = r.array.settings();
    let policy = r.array.policy();
    stop(&r.exec, &r.array);
    let (_exec, again) = reassemble(&r.mem);
    assert_eq!(again.settings(), before);
    assert_eq!(again.policy(), policy);
    assert_eq!(again.policy().rebuild_priority, RebuildPriority::High);
    assert_eq!(again.policy().spare_policy, SparePolicy::Shared);
    assert_eq!(again.read_policy(), ReadPolicy::RoundRobin);
    assert_eq!(again.stripe_cache_bytes(), 64 << 20);
    // Every member carries the record, at the place md leaves free.
    for m in &r.mem {
        let sb = superblock_of(m);
        assert_eq!(extension_sector(&sb), Some(POOL_LABEL_SECTOR));
        // Not where md keeps a bitmap, a partial parity log (either kind) or a journal.
        for owned in [
            FeatureMap::BITMAP_OFFSET,
            FeatureMap::PPL,
            FeatureMap::MULTIPLE_PPLS,
            FeatureMap::JOURNAL,
        ] {
            let mut with = sb.clone();
            with.features |= owned;
            assert_eq!(extension_sector(&with), None, "{owned:?}");
        }
        let rec = r.exec.block_on({
            let m = m.clone();
            async move { read_extension(m.as_ref(), &sb).await }
        });
        assert!(
            matches!(rec, Some(Ok(ExtensionRecord::Array { events, .. })) if events == superblock_of(m).events),
            "{rec:?}"
        );
    }
}

#[test]
fn an_array_without_records_gets_the_defaults() {
    let r = faulty_array(options(Level::Raid1, None, 0, "n"), 2, 4096, false);
    stop(&r.exec, &r.array);
    // As an array made by mdadm: no record anywhere.
    for m in &r.mem {
        let at = extension_sector(&superblock_of(m)).unwrap();
        m.write_at(at, &[0u8; EXTENSION_BYTES]).unwrap();
    }
    let (_exec, again) = reassemble(&r.mem);
    assert_eq!(again.policy(), ArrayPolicy::default());
}

#[test]
fn corrupt_records_fall_back_to_a_valid_one_then_to_defaults() {
    let r = faulty_array(options(Level::Raid1, None, 0, "c"), 3, 4096, false);
    set(&r.array, "rebuild_priority", "low");
    persist(&r.exec, &r.array);
    stop(&r.exec, &r.array);
    let at = extension_sector(&superblock_of(&r.mem[0])).unwrap();
    let flip = |m: &MemoryDisk| {
        let mut block = vec![0u8; EXTENSION_BYTES];
        m.read_at(at, &mut block).unwrap();
        block[50] ^= 0x40;
        m.write_at(at, &block).unwrap();
    };
    flip(&r.mem[0]);
    flip(&r.mem[1]);
    let (exec, again) = reassemble(&r.mem);
    assert_eq!(again.policy().rebuild_priority, RebuildPriority::Low);
    stop(&exec, &again);
    // Garbage on every member: defaults, and the array still runs.
    let mut rng = SplitMix64::new(0x9e37);
    for m in &r.mem {
        let mut junk = vec![0u8; EXTENSION_BYTES];
        rng.fill(&mut junk);
        junk[..8].copy_from_slice(b"ORIONEXT");
        m.write_at(at, &junk).unwrap();
    }
    let (exec, again) = reassemble(&r.mem);
    assert_eq!(again.policy(), ArrayPolicy::default());
    write_now(&exec, &again, 0, vec![7u8; 4096]).expect("the array serves I/O");
}

#[test]
fn the_freshest_record_wins() {
    let r = faulty_array(options(Level::Raid1, None, 0, "f"), 2, 4096, false);
    set(&r.array, "rebuild_rate_mb_s", "10");
    persist(&r.exec, &r.array);
    let at = extension_sector(&superblock_of(&r.mem[0])).unwrap();
    let mut old = vec![0u8; EXTENSION_BYTES];
    r.mem[1].read_at(at, &mut old).unwrap();
    set(&r.array, "rebuild_rate_mb_s", "20");
    persist(&r.exec, &r.array);
    stop(&r.exec, &r.array);
    // Member 1 keeps an older record (as if its last record write was lost).
    r.mem[1].write_at(at, &old).unwrap();
    let (_exec, again) = reassemble(&r.mem);
    assert_eq!(again.policy().rebuild_rate_bytes_per_s, 20_000_000);
}

/// Writes on every member a record of the array on them carrying `settings` (as an older
/// version, or a hand edit, could have left it).
fn write_record(mem: &[Rc<MemoryDisk>], settings: StoredSettings) {
    for m in mem {
        let sb = superblock_of(m);
        let record = ExtensionRecord::Array {
            array_uuid: sb.array_uuid,
            events: sb.events,
            settings,
            scrub: None,
            scrub_regions: StoredRegions::default(),
        };
        m.write_at(extension_sector(&sb).unwrap(), &record.encode())
            .unwrap();
    }
}

fn named(mem: &[Rc<MemoryDisk>]) -> Vec<(String, Rc<dyn BlockDevice>)> {
    mem.iter()
        .enumerate()
        .map(|(i, m)| (format!("d{i}"), m.clone() as Rc<dyn BlockDevice>))
        .collect()
}

#[test]
fn a_stored_setting_out_of_bounds_keeps_the_default_and_the_rest_applies() {
    let r = faulty_array(options(Level::Raid5, None, 16, "b"), 4, 4096, false);
    stop(&r.exec, &r.array);
    write_record(
        &r.mem,
        StoredSettings {
            io_timeout_ns: Some(1_000_000),
            read_error_window_ns: Some(0),
            rebuild_rate_bytes_per_s: Some(40_000_000),
            ..StoredSettings::default()
        },
    );
    let (exec, again) = reassemble(&r.mem);
    let p = again.policy();
    let defaults = ArrayPolicy::default();
    assert_eq!(p.failure.io_timeout_ns, defaults.failure.io_timeout_ns);
    assert_eq!(
        p.failure.read_error_window_ns,
        defaults.failure.read_error_window_ns
    );
    assert_eq!(p.rebuild_rate_bytes_per_s, 40_000_000);
    write_now(&exec, &again, 0, vec![7u8; 4096]).expect("the array serves I/O");
}

#[test]
fn offline_set_rewrites_the_records_of_stopped_members() {
    let r = faulty_array(options(Level::Raid5, None, 16, "o"), 4, 4096, false);
    set(&r.array, "rebuild_priority", "low");
    persist(&r.exec, &r.array);
    stop(&r.exec, &r.array);
    let events = superblock_of(&r.mem[0]).events;
    let exec = Executor::new();
    // A member short: refused, nothing written.
    let before: Vec<Vec<u8>> = r
        .mem
        .iter()
        .map(|m| {
            let mut b = vec![0u8; EXTENSION_BYTES];
            m.read_at(extension_sector(&superblock_of(m)).unwrap(), &mut b)
                .unwrap();
            b
        })
        .collect();
    let three = named(&r.mem[..3]);
    let timeout = Setting::parse("io_timeout_ms", "5000").unwrap();
    let refused = exec
        .block_on(async move { set_offline(&three, &[timeout]).await })
        .unwrap();
    assert!(
        matches!(&refused, Err(OfflineSetError::MissingMembers { dev_numbers, .. }) if dev_numbers == &[3]),
        "{refused:?}"
    );
    for (m, b) in r.mem.iter().zip(&before) {
        let mut now = vec![0u8; EXTENSION_BYTES];
        m.read_at(extension_sector(&superblock_of(m)).unwrap(), &mut now)
            .unwrap();
        assert_eq!(&now, b, "a refused offline set writes nothing");
    }
    let all = named(&r.mem);
    let changes = [
        timeout,
        Setting::parse("rebuild_rate_mb_s", "default").unwrap(),
    ];
    let reports = exec
        .block_on(async move { set_offline(&all, &changes).await })
        .unwrap()
        .unwrap();
    assert_eq!(reports.len(), 1);
    assert_eq!(reports[0].array, "o");
    assert_eq!(reports[0].members.len(), 4);
    // md's superblocks are untouched; the record keeps what it had besides the change.
    assert_eq!(superblock_of(&r.mem[0]).events, events);
    let (_exec, again) = reassemble(&r.mem);
    assert_eq!(again.policy().failure.io_timeout_ns, 5_000_000_000);
    assert_eq!(again.policy().rebuild_priority, RebuildPriority::Low);
    assert_eq!(again.policy().rebuild_rate_bytes_per_s, 0);
    // Not a member at all: refused.
    let blank = vec![(
        String::from("blank"),
        Rc::new(MemoryDisk::new(4096)) as Rc<dyn BlockDevice>,
    )];
    let refused = exec
        .block_on(async move { set_offline(&blank, &[timeout]).await })
        .unwrap();
    assert!(
        matches!(refused, Err(OfflineSetError::NotAMember { .. })),
        "{refused:?}"
    );
}

#[test]
fn stripe_cache_setting_is_checked() {
    let r = faulty_array(options(Level::Raid5, None, 16, "s"), 3, 4096, false);
    for bad in ["", "x", "12", "5G", "-1", "1.5M"] {
        assert!(r.array.apply_setting("stripe_cache", bad).is_err(), "{bad}");
    }
    set(&r.array, "stripe_cache", "0");
    assert_eq!(r.array.stripe_cache_bytes(), 0);
    set(&r.array, "stripe_cache", "1536K");
    assert_eq!(r.array.stripe_cache_bytes(), 1536 << 10);
    let shown = r
        .array
        .settings()
        .into_iter()
        .find(|(k, _)| k == "stripe_cache");
    assert_eq!(shown, Some(("stripe_cache".into(), "1536K".into())));
    assert_eq!(parse_size_bytes("64MiB"), Some(64 << 20));
    assert_eq!(parse_size_bytes("4096"), Some(4096));
    assert_eq!(format_size_bytes(16 << 20), "16M");
    assert_eq!(format_size_bytes(0), "0");
}

/// How far the running scrub is; it must still run.
fn done_sectors(array: &Array) -> u64 {
    let job = array.job().expect("the scrub still runs");
    job.done_sectors
}

/// Starts a scrub and runs (simulated time) until it has done `sectors`.
fn scrub_until(r: &super::test_rig::FaultyArray, mode: ScrubMode, sectors: u64) {
    crate::jobs::scrub::start(&r.array, mode).expect("the scrub starts");
    let a = r.array.clone();
    let e = r.exec.clone();
    r.exec
        .block_on(async move {
            while done_sectors(&a) < sectors {
                e.sleep(1_000_000).await;
            }
        })
        .expect("the scrub gets there");
}

/// A RAID1 of two 16 MiB members with `bad` corrupted 4 KiB units spread over the array,
/// its jobs paced at 1 MB/s (simulated time) so a scrub can be caught in the middle.
fn mirror_with_mismatches(bad: &[u64]) -> super::test_rig::FaultyArray {
    let r = faulty_array(options(Level::Raid1, None, 0, "m"), 2, 32 * 1024, true);
    set(&r.array, "rebuild_rate_mb_s", "1");
    let data_offset = r.array.superblock().unwrap().data_offset_sectors;
    for &unit in bad {
        let at = data_offset + unit * 8;
        let mut block = vec![0u8; 4096];
        r.mem[1].read_at(at, &mut block).unwrap();
        block[100] ^= 0xff;
        r.mem[1].write_at(at, &block).unwrap();
    }
    r
}

#[test]
fn a_stopped_check_resumes_where_it_was() {
    // Units on both sides of where the check is stopped (about the middle).
    let bad = [3u64, 300, 900, 1500, 2800, 3500];
    let r = mirror_with_mismatches(&bad);
    let total = r.array.capacity_sectors();
    scrub_until(&r, ScrubMode::Check, total / 2);
    let stopped_at = r.array.job().unwrap().done_sectors;
    assert!(stopped_at < total);
    stop(&r.exec, &r.array);
    assert_eq!(
        r.array.scrub_report().unwrap().outcome,
        ScrubOutcome::Cancelled
    );

    let (exec, again) = reassemble(&r.mem);
    let cp = again.scrub_checkpoint().expect("the position was recorded");
    assert_eq!(
        again.policy().rebuild_rate_bytes_per_s,
        1_000_000,
        "restored"
    );
    assert!(!cp.repair);
    assert!(cp.cursor_sectors > 0 && cp.cursor_sectors <= stopped_at + 2048);
    crate::jobs::start(&again);
    exec.run_until_stalled();
    let job = again.job().expect("the check resumed by itself");
    assert!(job.done_sectors >= cp.cursor_sectors && job.done_sectors > 0);
    // Unpaced now: the resumed check runs to its end.
    set(&again, "rebuild_rate_mb_s", "0");
    let a = again.clone();
    let e = exec.clone();
    let report = exec
        .block_on(async move {
            loop {
                let r = a.scrub_report().unwrap();
                if r.outcome != ScrubOutcome::Running {
                    return r;
                }
                e.sleep(100_000).await;
            }
        })
        .unwrap();
    assert_eq!(report.outcome, ScrubOutcome::Finished);
    assert_eq!(
        report.mismatched_sectors,
        8 * bad.len() as u64,
        "{report:?}"
    );
    // Every bad unit is listed once, those found before the stop included.
    let data_units: Vec<u64> = report
        .bad_regions
        .iter()
        .map(|b| b.array_sector / 8)
        .collect();
    assert_eq!(data_units, bad.to_vec(), "{report:?}");
    assert_eq!(report.bad_regions_omitted, 0);
    assert_eq!(report.checked_sectors, total);
    assert_eq!(
        again.scrub_checkpoint(),
        None,
        "a finished check leaves none"
    );
    // A whole check from the start agrees.
    let a = again.clone();
    let full = exec
        .block_on(async move { crate::jobs::scrub::check(&a).await })
        .unwrap()
        .unwrap();
    assert_eq!(full.mismatched_sectors, report.mismatched_sectors);
}

#[test]
fn a_pending_check_cancelled_before_it_resumes_stays_cancelled() {
    let r = mirror_with_mismatches(&[1]);
    scrub_until(&r, ScrubMode::Check, 4096);
    stop(&r.exec, &r.array);
    let (exec, again) = reassemble(&r.mem);
    assert!(again.scrub_checkpoint().is_some(), "interrupted: pending");
    // Cancelled before its jobs start (as when it cannot resume yet).
    let a = again.clone();
    let forgot = exec
        .block_on(async move { a.forget_scrub_checkpoint().await })
        .unwrap()
        .expect("recorded");
    assert!(forgot);
    stop(&exec, &again);
    let (exec, third) = reassemble(&r.mem);
    assert_eq!(third.scrub_checkpoint(), None, "the cancel was recorded");
    crate::jobs::start(&third);
    exec.run_until_stalled();
    assert!(third.job().is_none());
    let a = third.clone();
    let forgot = exec
        .block_on(async move { a.forget_scrub_checkpoint().await })
        .unwrap()
        .expect("nothing to write");
    assert!(!forgot, "nothing pending");
}

#[test]
fn a_cancelled_check_does_not_resume() {
    let r = mirror_with_mismatches(&[1]);
    scrub_until(&r, ScrubMode::Check, 4096);
    let a = r.array.clone();
    let e = r.exec.clone();
    r.exec
        .block_on(async move {
            crate::jobs::scrub::cancel(&a);
            while a.scrub_report().unwrap().outcome == ScrubOutcome::Running {
                e.sleep(10_000).await;
            }
        })
        .unwrap();
    stop(&r.exec, &r.array);
    let (exec, again) = reassemble(&r.mem);
    assert_eq!(again.scrub_checkpoint(), None);
    crate::jobs::start(&again);
    exec.run_until_stalled();
    assert!(again.job().is_none());
}

#[test]
fn a_checkpoint_is_written_while_the_check_runs() {
    let r = mirror_with_mismatches(&[]);
    set(&r.array, "rebuild_priority", "normal");
    let mut p = r.array.policy();
    p.checkpoint_regions = 2;
    r.array.set_policy(p);
    scrub_until(&r, ScrubMode::Repair, 5 * 2048);
    // A crash now: nothing more is written; the members say where the repair was.
    let sb = superblock_of(&r.mem[0]);
    let rec = r.exec.block_on({
        let m = r.mem[0].clone();
        async move { read_extension(m.as_ref(), &sb).await }
    });
    match rec {
        Some(Ok(ExtensionRecord::Array {
            scrub: Some(cp), ..
        })) => {
            assert!(cp.repair);
            assert!(cp.cursor_sectors >= 2 * 2048, "{cp:?}");
        }
        other => panic!("no checkpoint on disk: {other:?}"),
    }
}

#[test]
fn pool_labels_are_found_and_never_shadow_a_member() {
    let exec = Executor::new();
    let blank = Rc::new(MemoryDisk::new(8192));
    let d = blank.clone();
    assert_eq!(
        exec.block_on(async move { has_pool_label(d.as_ref()).await }),
        Some(false)
    );
    let d = blank.clone();
    exec.block_on(async move { write_pool_label(d.as_ref()).await })
        .unwrap()
        .unwrap();
    let d = blank.clone();
    assert_eq!(
        exec.block_on(async move { has_pool_label(d.as_ref()).await }),
        Some(true)
    );
    // A former member given to the pool loses its superblock.
    let r = faulty_array(options(Level::Raid1, None, 0, "x"), 2, 4096, false);
    stop(&r.exec, &r.array);
    let m = r.mem[1].clone();
    exec.block_on(async move { write_pool_label(m.as_ref()).await })
        .unwrap()
        .unwrap();
    let mut block = vec![0u8; 4096];
    r.mem[1].read_at(SUPERBLOCK_SECTOR, &mut block).unwrap();
    assert!(Superblock::decode(&block).is_err());
    // A member that took a pool spare's place: its superblock rules, not the old label.
    let m = r.mem[0].clone();
    let label = ExtensionRecord::PoolLabel.encode();
    r.mem[0].write_at(POOL_LABEL_SECTOR, &label).unwrap();
    assert_eq!(
        exec.block_on(async move { has_pool_label(m.as_ref()).await }),
        Some(false)
    );
    let _ = SECTOR_BYTES;
}
