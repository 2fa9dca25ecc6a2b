//! Engine tests of member states, spares, failure detection and rebuild: every state change
//! on disk before it is acted on, automatic spare activation, rebuild correctness under
//! concurrent writes, resume from the checkpoint after a stop and after a crash, policies.

use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;
use core::cell::RefCell;

use crate::array::assemble::assemble;
use crate::array::members::{ArrayPolicy, MemberError, SparePolicy};
use crate::array::test_rig::{FaultyArray, faulty_array, options, read_now, write_now};
#[cfg(feature = "std")]
use crate::array::test_rig::{drive, drive_until};
use crate::array::{Array, Health, MemberState};
use crate::block::{BlockDevice, Bytes, SECTOR_BYTES};
use crate::executor::Executor;
use crate::metadata::{DeviceRole, FeatureMap, Level, Superblock};
use crate::monitor::Event;
use crate::platform::faulty::{FaultConfig, FaultOp, FaultyDisk};
use crate::platform::memory::MemoryDisk;
use crate::rng::SplitMix64;

const MEMBER_SECTORS: u64 = 16 * 2048;

fn sb_of(mem: &MemoryDisk) -> Superblock {
    let mut block = vec![0u8; 4096];
    mem.read_at(8, &mut block).unwrap();
    Superblock::decode(&block).unwrap()
}

fn new_disk(exec: &Executor, seed: u64, latency: bool) -> (Rc<MemoryDisk>, Rc<FaultyDisk>) {
    let mem = Rc::new(MemoryDisk::new(MEMBER_SECTORS));
    let config = FaultConfig {
        min_latency_ns: if latency { 10 } else { 0 },
        max_latency_ns: if latency { 1000 } else { 0 },
        ..FaultConfig::default()
    };
    let disk = Rc::new(FaultyDisk::new(mem.clone(), exec.clone(), seed, config));
    (mem, disk)
}

fn add_spare(r: &FaultyArray, name: &str, disk: &Rc<FaultyDisk>) -> Result<(), MemberError> {
    let a = r.array.clone();
    let dev = disk.clone() as Rc<dyn BlockDevice>;
    let name = String::from(name);
    r.exec
        .block_on(async move { a.add_device(name, dev).await })
        .unwrap()
}

fn fail(r: &FaultyArray, name: &str) -> Result<(), MemberError> {
    let a = r.array.clone();
    let name = String::from(name);
    r.exec
        .block_on(async move { a.fail_named(&name).await })
        .unwrap()
}

/// Fills the whole array with a seeded pattern; returns it.
fn fill(r: &FaultyArray, seed: u64) -> Vec<u8> {
    let bytes = r.array.capacity_sectors() as usize * SECTOR_BYTES;
    let mut model = vec![0u8; bytes];
    SplitMix64::new(seed).fill(&mut model);
    for (i, piece) in model.chunks(1 << 20).enumerate() {
        write_now(&r.exec, &r.array, (i * 2048) as u64, piece.to_vec()).unwrap();
    }
    model
}

fn check_all(exec: &Executor, array: &Rc<Array>, model: &[u8]) {
    for (i, piece) in model.chunks(1 << 20).enumerate() {
        let got = read_now(exec, array, (i * 2048) as u64, piece.len() / SECTOR_BYTES).unwrap();
        assert!(got == piece, "array content differs in MiB {i}");
    }
}

/// Fails every member but `keep` that the layout can lose, so reads must use `keep`.
fn fail_all_but(exec: &Executor, array: &Rc<Array>, keep: usize) {
    let n = array.slots().len();
    for slot in (0..n).filter(|&s| s != keep) {
        let mut alive = array.alive();
        alive[slot] = false;
        if array.layout().survives(&alive) {
            let a = array.clone();
            exec.block_on(async move { a.fail_member(slot).await })
                .unwrap()
                .unwrap();
        }
    }
}

#[test]
fn spare_is_recorded_then_activated_on_failure_and_rebuilt() {
    let r = faulty_array(
        options(Level::Raid1, None, 64, "t"),
        2,
        MEMBER_SECTORS,
        false,
    );
    let model = fill(&r, 1);
    let (spare_mem, spare) = new_disk(&r.exec, 50, false);
    add_spare(&r, "s0", &spare).unwrap();
    let sb = sb_of(&spare_mem);
    assert_eq!(sb.own_role(), DeviceRole::Spare);
    assert_eq!(sb_of(&r.mem[0]).role_of(sb.dev_number), DeviceRole::Spare);
    assert_eq!(r.array.spares().len(), 1);

    let events = sb_of(&r.mem[0]).events;
    fail(&r, "d1").unwrap();
    r.exec.run_until_idle();
    assert_eq!(r.array.health(), Health::Optimal);
    let slots = r.array.slots();
    let m1 = slots[1].as_ref().unwrap();
    assert_eq!(m1.name, "s0");
    assert_eq!(m1.state(), MemberState::Active);
    let sb0 = sb_of(&r.mem[0]);
    assert!(
        sb0.events > events + 2,
        "failure, activation and the end recorded"
    );
    assert_eq!(sb0.role_of(sb.dev_number), DeviceRole::Active(1));
    assert_eq!(sb0.role_of(1), DeviceRole::Faulty);
    let ssb = sb_of(&spare_mem);
    assert!(!ssb.features.contains(FeatureMap::RECOVERY_OFFSET));
    // The failed member is listed until removed; then it is gone.
    assert!(r.array.spares().iter().any(|m| m.name == "d1"));
    let a = r.array.clone();
    r.exec
        .block_on(async move { a.remove_named("d1").await })
        .unwrap()
        .unwrap();
    assert!(r.array.spares().is_empty());
    fail_all_but(&r.exec, &r.array, 1);
    check_all(&r.exec, &r.array, &model);
}

#[test]
fn remove_only_takes_faulty_or_spare_members_and_fail_keeps_the_array() {
    let r = faulty_array(
        options(Level::Raid1, None, 64, "t"),
        2,
        MEMBER_SECTORS,
        false,
    );
    let a = r.array.clone();
    let busy = r
        .exec
        .block_on(async move { a.remove_named("d0").await })
        .unwrap();
    assert!(matches!(busy, Err(MemberError::InUse(_))));
    assert!(matches!(
        fail(&r, "nope"),
        Err(MemberError::NoSuchMember(_))
    ));
    fail(&r, "d0").unwrap();
    // The last in-sync copy cannot be failed by command.
    assert!(matches!(fail(&r, "d1"), Err(MemberError::WouldFail(_))));
    assert_eq!(r.array.health(), Health::Degraded);
    // A device too small is refused and nothing changes.
    let small = Rc::new(MemoryDisk::new(4096));
    let a = r.array.clone();
    let e = r
        .exec
        .block_on(async move { a.add_device("small".into(), small).await })
        .unwrap();
    assert!(matches!(e, Err(MemberError::TooSmall { .. })));
    assert!(r.array.spares().iter().all(|m| m.name != "small"));
}

#[test]
fn settings_reject_unknown_keys_and_bad_values() {
    let r = faulty_array(
        options(Level::Raid5, None, 64, "t"),
        3,
        MEMBER_SECTORS,
        false,
    );
    let before = r.array.policy();
    let settings_before = r.array.settings();
    assert!(matches!(
        r.array.apply_setting("colour", "blue"),
        Err(MemberError::UnknownKey(_))
    ));
    for (k, v) in [
        ("rebuild_priority", "urgent"),
        ("rebuild_rate_mb_s", "-1"),
        ("spare_policy", "maybe"),
        ("read_error_limit", "x"),
        ("io_timeout_ms", "99999999999999999999"),
        ("read_policy", "random"),
    ] {
        assert!(
            matches!(
                r.array.apply_setting(k, v),
                Err(MemberError::BadValue { .. })
            ),
            "{k}={v}"
        );
    }
    assert_eq!(r.array.policy(), before);
    // Values that parse but lie outside their key's bounds: a 1 ms timeout would fail every
    // member of a busy array at its next write.
    for (k, v, allowed) in [
        ("io_timeout_ms", "1", "0 (off) or 1000 to 600000"),
        ("io_timeout_ms", "999", "0 (off) or 1000 to 600000"),
        ("io_timeout_ms", "600001", "0 (off) or 1000 to 600000"),
        ("read_error_window_s", "0", "1 to 86400"),
        ("read_error_window_s", "86401", "1 to 86400"),
        ("read_error_limit", "100001", "0 (never) or 1 to 100000"),
        ("rebuild_rate_mb_s", "100001", "0 (no limit) or 1 to 100000"),
        ("stripe_cache", "8G", "0 (off) or a multiple of 4K"),
    ] {
        let e = r.array.apply_setting(k, v).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with(&format!("{k}={v} refused: {k} takes {allowed}")),
            "{text}"
        );
    }
    assert_eq!(r.array.policy(), before);
    assert_eq!(r.array.settings(), settings_before);
    r.array.apply_setting("io_timeout_ms", "1000").unwrap();
    r.array.apply_setting("io_timeout_ms", "0").unwrap();
    assert_eq!(r.array.policy().failure.io_timeout_ns, 0);
    // `default` puts any key back to its built-in value.
    for k in crate::array::members::SETTING_KEYS {
        r.array.apply_setting(k, "default").unwrap();
    }
    assert_eq!(r.array.policy(), ArrayPolicy::default());
    assert_eq!(r.array.settings(), settings_before);
    r.array.apply_setting("spare_policy", "shared").unwrap();
    r.array.apply_setting("rebuild_rate_mb_s", "5").unwrap();
    r.array.apply_setting("rebuild_priority", "low").unwrap();
    let p = r.array.policy();
    assert_eq!(p.spare_policy, SparePolicy::Shared);
    assert_eq!(p.rebuild_rate_bytes_per_s, 5_000_000);
    assert!(
        r.array
            .settings()
            .contains(&("rebuild_priority".into(), "low".into()))
    );
}

#[test]
fn slow_member_is_failed_by_the_timeout() {
    let r = faulty_array(
        options(Level::Raid1, None, 64, "t"),
        2,
        MEMBER_SECTORS,
        false,
    );
    let model = fill(&r, 2);
    r.array.apply_setting("io_timeout_ms", "1000").unwrap();
    r.disks[0].set_config(FaultConfig {
        min_latency_ns: 3_600_000_000_000,
        max_latency_ns: 3_600_000_000_000,
        ..FaultConfig::default()
    });
    check_all(&r.exec, &r.array, &model);
    assert_eq!(
        r.array.slots()[0].as_ref().unwrap().state(),
        MemberState::Faulty
    );
    assert_eq!(sb_of(&r.mem[1]).role_of(0), DeviceRole::Faulty);
}

#[test]
fn too_many_read_errors_in_the_window_fail_the_member() {
    let r = faulty_array(
        options(Level::Raid5, None, 64, "t"),
        3,
        MEMBER_SECTORS,
        false,
    );
    let model = fill(&r, 3);
    r.array.apply_setting("read_error_limit", "2").unwrap();
    let offset = r.array.superblock().unwrap().data_offset_sectors;
    // Member 0 holds data chunk 0 of stripe 0 (left-symmetric): latent errors there.
    for s in [0, 3, 9] {
        r.disks[0].add_latent_error(offset + s);
    }
    for s in [0u64, 3, 9] {
        let got = read_now(&r.exec, &r.array, s, 1).unwrap();
        let at = s as usize * SECTOR_BYTES;
        assert_eq!(got, &model[at..at + SECTOR_BYTES]);
    }
    assert_eq!(
        r.array.slots()[0].as_ref().unwrap().state(),
        MemberState::Faulty
    );
    // Below the limit a member stays (the errors were repaired).
    let r = faulty_array(
        options(Level::Raid5, None, 64, "t"),
        3,
        MEMBER_SECTORS,
        false,
    );
    fill(&r, 3);
    r.array.apply_setting("read_error_limit", "2").unwrap();
    for s in [0, 3] {
        r.disks[0].add_latent_error(offset + s);
    }
    for s in [0u64, 3] {
        read_now(&r.exec, &r.array, s, 1).unwrap();
    }
    assert_eq!(
        r.array.slots()[0].as_ref().unwrap().state(),
        MemberState::Active
    );
}

/// Rebuild under concurrent writes: writers hit random blocks and the block at the rebuild
/// cursor while a spare is rebuilt; afterwards the rebuilt member alone (with the others
/// failed up to the tolerance) returns the model.
fn rebuild_under_writes(level: Level, layout: Option<&str>, count: usize, seed: u64) {
    let r = faulty_array(options(level, layout, 64, "t"), count, MEMBER_SECTORS, true);
    let model = Rc::new(RefCell::new(fill(&r, seed)));
    let (_, spare) = new_disk(&r.exec, 99, true);
    add_spare(&r, "s0", &spare).unwrap();
    let victim = (seed as usize) % count;
    let a = r.array.clone();
    r.exec.spawn_detached(async move {
        a.fail_member(victim).await.unwrap();
    });
    let capacity = r.array.capacity_sectors();
    let writers = 4u64;
    for w in 0..writers {
        let a = r.array.clone();
        let model = model.clone();
        let exec = r.exec.clone();
        exec.clone().spawn_detached(async move {
            let mut rng = SplitMix64::new(seed * 100 + w);
            for i in 0..150u64 {
                let len = 8;
                let near_cursor = i % 2 == 0;
                let mut block = if near_cursor {
                    // The array sector that sits around the rebuild cursor.
                    let done = a.job().map_or(0, |j| j.done_sectors);
                    let k = a.capacity_sectors() / a.member_used_sectors().max(1);
                    (done * k.max(1)) / 8
                } else {
                    rng.below(capacity / 8)
                };
                // Writers own disjoint blocks, so the model has one order per block.
                block = block - block % writers + w;
                let sector = (block * 8).min(capacity - len) / 8 * 8;
                if (sector / 8) % writers != w {
                    continue;
                }
                let mut data = vec![0u8; len as usize * SECTOR_BYTES];
                rng.fill(&mut data);
                a.write(sector, Bytes::from(data.clone()), false)
                    .await
                    .unwrap();
                let at = sector as usize * SECTOR_BYTES;
                model.borrow_mut()[at..at + data.len()].copy_from_slice(&data);
                exec.sleep(2_000).await;
            }
        });
    }
    r.exec.run_until_idle();
    assert_eq!(r.array.health(), Health::Optimal, "seed {seed}");
    let slots = r.array.slots();
    let rebuilt = slots
        .iter()
        .position(|m| m.as_ref().is_some_and(|m| m.name == "s0"))
        .expect("the spare took a slot");
    assert_eq!(rebuilt, victim);
    let model = model.borrow().clone();
    check_all(&r.exec, &r.array, &model);
    fail_all_but(&r.exec, &r.array, rebuilt);
    check_all(&r.exec, &r.array, &model);
}

#[test]
fn raid1_rebuild_under_concurrent_writes() {
    rebuild_under_writes(Level::Raid1, None, 2, 1);
}

#[test]
fn raid10_rebuild_under_concurrent_writes() {
    rebuild_under_writes(Level::Raid10, None, 4, 2);
    rebuild_under_writes(Level::Raid10, Some("f2"), 3, 3);
}

#[test]
fn raid5_rebuild_under_concurrent_writes() {
    rebuild_under_writes(Level::Raid5, None, 4, 3);
}

#[test]
fn raid6_rebuild_under_concurrent_writes() {
    rebuild_under_writes(Level::Raid6, None, 5, 4);
}

/// Starts a rate-limited rebuild, lets it run part way, then either stops the array (a clean
/// stop) or crashes every disk; reassembles from the memory behind the disks and checks the
/// rebuild resumes from its checkpoint and ends with the right data.
fn resume(level: Level, count: usize, crash: bool) {
    let r = faulty_array(options(level, None, 64, "t"), count, MEMBER_SECTORS, false);
    let model = fill(&r, 7);
    let mut p = r.array.policy();
    p.checkpoint_regions = 1;
    p.rebuild_rate_bytes_per_s = 1 << 20;
    r.array.set_policy(p);
    let (spare_mem, spare) = new_disk(&r.exec, 77, false);
    if crash {
        for d in r.disks.iter().chain([&spare]) {
            d.set_config(FaultConfig {
                write_cache: true,
                ..FaultConfig::default()
            });
        }
    }
    add_spare(&r, "s0", &spare).unwrap();
    fail(&r, "d1").unwrap();
    // About five seconds at 1 MiB/s: part of the member.
    let e = r.exec.clone();
    r.exec
        .block_on(async move { e.sleep(5_500_000_000).await })
        .unwrap();
    let done = r.array.job().expect("rebuild running").done_sectors;
    assert!(done > 0 && done < r.array.member_used_sectors());
    if crash {
        for d in r.disks.iter().chain([&spare]) {
            d.crash();
        }
    } else {
        let a = r.array.clone();
        r.exec
            .block_on(async move { a.mark_clean().await })
            .unwrap()
            .unwrap();
        assert!(!super::running(&r.array));
    }
    let ssb = sb_of(&spare_mem);
    assert!(ssb.features.contains(FeatureMap::RECOVERY_OFFSET));
    assert!(ssb.recovery_offset_sectors > 0);
    // A fresh start on the memory behind the disks.
    let exec = Executor::new();
    let mut candidates: Vec<(String, Rc<dyn BlockDevice>)> = r
        .mem
        .iter()
        .enumerate()
        .map(|(i, m)| (format!("d{i}"), m.clone() as Rc<dyn BlockDevice>))
        .collect();
    candidates.push(("s0".into(), spare_mem.clone()));
    let e = exec.clone();
    let result = exec
        .block_on(async move { assemble(&e, candidates).await })
        .unwrap();
    let array = result.arrays[0].clone();
    super::attach(&array);
    let slots = array.slots();
    let back = slots[1].as_ref().expect("the rebuilding member is back");
    assert_eq!(back.name, "s0");
    assert_eq!(back.state(), MemberState::Rebuilding);
    let resumed_at = back.recovery_offset_sectors();
    assert!(resumed_at > 0, "resumes, not from zero");
    super::start(&array);
    exec.run_until_idle();
    assert_eq!(array.health(), Health::Optimal);
    check_all(&exec, &array, &model);
    fail_all_but(&exec, &array, 1);
    check_all(&exec, &array, &model);
}

#[test]
fn raid1_rebuild_resumes_after_stop() {
    resume(Level::Raid1, 2, false);
}

#[test]
fn raid5_rebuild_resumes_after_stop() {
    resume(Level::Raid5, 3, false);
}

#[test]
fn raid6_rebuild_resumes_after_stop() {
    resume(Level::Raid6, 4, false);
}

#[test]
fn raid1_rebuild_resumes_after_crash() {
    resume(Level::Raid1, 2, true);
}

#[test]
fn raid10_rebuild_resumes_after_crash() {
    resume(Level::Raid10, 4, true);
}

#[test]
fn stale_member_is_re_added_and_rebuilt() {
    let r = faulty_array(
        options(Level::Raid1, None, 64, "t"),
        3,
        MEMBER_SECTORS,
        false,
    );
    let model = fill(&r, 11);
    let a = r.array.clone();
    r.exec
        .block_on(async move {
            a.mark_clean().await.unwrap();
            for _ in 0..3 {
                a.update_superblocks(|_| {}).await.unwrap();
            }
        })
        .unwrap();
    // d2 missed updates (as after a crash in the middle of one, or an older copy of the
    // disk): its events lag and its data is garbage.
    let mut sb = sb_of(&r.mem[2]);
    assert!(sb.events > 3);
    sb.events -= 3;
    r.mem[2].write_at(8, &sb.encode()).unwrap();
    let offset = sb.data_offset_sectors;
    let mut junk = vec![0u8; 1 << 20];
    SplitMix64::new(5).fill(&mut junk);
    for i in 0..(MEMBER_SECTORS - offset) / 2048 {
        r.mem[2].write_at(offset + i * 2048, &junk).unwrap();
    }
    let exec = Executor::new();
    let candidates: Vec<(String, Rc<dyn BlockDevice>)> = r
        .mem
        .iter()
        .enumerate()
        .map(|(i, m)| (format!("d{i}"), m.clone() as Rc<dyn BlockDevice>))
        .collect();
    let e = exec.clone();
    let result = exec
        .block_on(async move { assemble(&e, candidates).await })
        .unwrap();
    let array = result.arrays[0].clone();
    super::attach(&array);
    let slots = array.slots();
    let m2 = slots[2].as_ref().expect("the stale member is re-added");
    assert_eq!(m2.state(), MemberState::Rebuilding);
    assert_eq!(m2.recovery_offset_sectors(), 0);
    // Recorded: rebuilding from zero, with the array's events.
    let sb2 = sb_of(&r.mem[2]);
    assert!(sb2.features.contains(FeatureMap::RECOVERY_OFFSET));
    assert_eq!(sb2.events, sb_of(&r.mem[0]).events);
    // Reads never use it before it is rebuilt.
    check_all(&exec, &array, &model);
    super::start(&array);
    exec.run_until_idle();
    assert_eq!(array.health(), Health::Optimal);
    fail_all_but(&exec, &array, 2);
    check_all(&exec, &array, &model);
}

#[test]
fn shared_pool_spare_is_drawn_only_under_the_shared_policy() {
    let r = faulty_array(
        options(Level::Raid5, None, 64, "t"),
        3,
        MEMBER_SECTORS,
        false,
    );
    let model = fill(&r, 21);
    let (_, pooled) = new_disk(&r.exec, 5, false);
    struct Pool(RefCell<Vec<Rc<FaultyDisk>>>);
    impl super::SpareProvider for Pool {
        fn take_spare(&self, need: u64) -> Option<(String, Rc<dyn BlockDevice>)> {
            let mut pool = self.0.borrow_mut();
            let i = pool.iter().position(|d| d.capacity_sectors() >= need)?;
            let d = pool.remove(i);
            Some(("pool0".into(), d as Rc<dyn BlockDevice>))
        }
    }
    let pool = Rc::new(Pool(RefCell::new(vec![pooled])));
    Rc::new(super::Runner::new(None, Some(pool.clone()))).adopt(&r.array);
    let pool = &pool.0;
    fail(&r, "d2").unwrap();
    r.exec.run_until_idle();
    // Dedicated (the default): the pool is not touched.
    assert_eq!(pool.borrow().len(), 1);
    assert_eq!(r.array.health(), Health::Degraded);
    r.array.apply_setting("spare_policy", "shared").unwrap();
    r.exec.run_until_idle();
    assert!(pool.borrow().is_empty());
    assert_eq!(r.array.health(), Health::Optimal);
    assert_eq!(r.array.slots()[2].as_ref().unwrap().name, "pool0");
    check_all(&r.exec, &r.array, &model);
}

#[test]
fn smallest_sufficient_spare_is_used_first() {
    let r = faulty_array(
        options(Level::Raid1, None, 64, "t"),
        2,
        MEMBER_SECTORS,
        false,
    );
    let big = Rc::new(MemoryDisk::new(MEMBER_SECTORS * 2));
    let fitting = Rc::new(MemoryDisk::new(MEMBER_SECTORS));
    for (name, d) in [("big", big), ("fit", fitting)] {
        let a = r.array.clone();
        r.exec
            .block_on(async move { a.add_device(name.into(), d).await })
            .unwrap()
            .unwrap();
    }
    fail(&r, "d0").unwrap();
    r.exec.run_until_idle();
    assert_eq!(r.array.slots()[0].as_ref().unwrap().name, "fit");
    assert!(r.array.spares().iter().any(|m| m.name == "big"));
}

/// `replace`: the new member is copied while the old one serves (and takes every write);
/// afterwards it holds the slot and the old one is a spare. Also across a stop.
fn replace(level: Level, count: usize, stop_midway: bool) {
    let r = faulty_array(options(level, None, 64, "t"), count, MEMBER_SECTORS, true);
    let model = Rc::new(RefCell::new(fill(&r, 31)));
    let mut p = r.array.policy();
    p.checkpoint_regions = 1;
    if stop_midway {
        p.rebuild_rate_bytes_per_s = 1 << 20;
    }
    r.array.set_policy(p);
    let (new_mem, new) = new_disk(&r.exec, 8, true);
    let a = r.array.clone();
    let dev = new.clone() as Rc<dyn BlockDevice>;
    r.exec
        .block_on(async move { a.replace_named("d1", "n".into(), dev).await })
        .unwrap()
        .unwrap();
    let nsb = sb_of(&new_mem);
    assert!(nsb.features.contains(FeatureMap::REPLACEMENT));
    assert_eq!(
        sb_of(&r.mem[0]).role_of(nsb.dev_number),
        DeviceRole::Active(1)
    );
    // Writes while the copy runs reach the new member too.
    let a = r.array.clone();
    let m = model.clone();
    r.exec.spawn_detached(async move {
        let mut rng = SplitMix64::new(4);
        let capacity = a.capacity_sectors();
        for _ in 0..100 {
            let sector = rng.below(capacity / 8) * 8;
            let mut data = vec![0u8; 4096];
            rng.fill(&mut data);
            a.write(sector, Bytes::from(data.clone()), false)
                .await
                .unwrap();
            let at = sector as usize * SECTOR_BYTES;
            m.borrow_mut()[at..at + 4096].copy_from_slice(&data);
        }
    });
    let (exec, array) = if stop_midway {
        let e = r.exec.clone();
        r.exec
            .block_on(async move { e.sleep(4_000_000_000).await })
            .unwrap();
        r.exec.run_until_stalled();
        let a = r.array.clone();
        r.exec
            .block_on(async move { a.mark_clean().await })
            .unwrap()
            .unwrap();
        let nsb = sb_of(&new_mem);
        assert!(nsb.recovery_offset_sectors > 0);
        let exec = Executor::new();
        let mut candidates: Vec<(String, Rc<dyn BlockDevice>)> = r
            .mem
            .iter()
            .enumerate()
            .map(|(i, m)| (format!("d{i}"), m.clone() as Rc<dyn BlockDevice>))
            .collect();
        candidates.push(("n".into(), new_mem.clone()));
        let e = exec.clone();
        let result = exec
            .block_on(async move { assemble(&e, candidates).await })
            .unwrap();
        let array = result.arrays[0].clone();
        super::attach(&array);
        let rep = array.replacement_of(1).expect("the replacement is back");
        assert!(rep.recovery_offset_sectors() > 0);
        super::start(&array);
        (exec, array)
    } else {
        (r.exec.clone(), r.array.clone())
    };
    exec.run_until_idle();
    let slots = array.slots();
    assert_eq!(slots[1].as_ref().unwrap().name, "n");
    assert_eq!(slots[1].as_ref().unwrap().state(), MemberState::Active);
    assert!(
        array
            .spares()
            .iter()
            .any(|m| m.name == "d1" && m.state() == MemberState::Spare)
    );
    let sb = sb_of(&new_mem);
    assert!(
        !sb.features
            .intersects(FeatureMap::REPLACEMENT | FeatureMap::RECOVERY_OFFSET)
    );
    let model = model.borrow().clone();
    check_all(&exec, &array, &model);
    fail_all_but(&exec, &array, 1);
    check_all(&exec, &array, &model);
}

#[test]
fn raid1_replace_copies_while_the_old_member_serves() {
    replace(Level::Raid1, 2, false);
}

#[test]
fn raid5_replace_copies_while_the_old_member_serves() {
    replace(Level::Raid5, 3, false);
}

#[test]
fn raid6_replace_resumes_after_a_stop() {
    replace(Level::Raid6, 4, true);
}

#[test]
fn failing_the_old_member_mid_replace_promotes_the_replacement() {
    let r = faulty_array(
        options(Level::Raid5, None, 64, "t"),
        3,
        MEMBER_SECTORS,
        false,
    );
    let model = fill(&r, 41);
    let mut p = r.array.policy();
    p.rebuild_rate_bytes_per_s = 1 << 20;
    r.array.set_policy(p);
    let (_, new) = new_disk(&r.exec, 9, false);
    let a = r.array.clone();
    let dev = new.clone() as Rc<dyn BlockDevice>;
    r.exec
        .block_on(async move {
            a.replace_named("d0", "n".into(), dev).await.unwrap();
            a.executor().sleep(3_000_000_000).await;
            a.fail_member(0).await.unwrap();
        })
        .unwrap();
    let slots = r.array.slots();
    assert_eq!(slots[0].as_ref().unwrap().name, "n");
    assert_eq!(slots[0].as_ref().unwrap().state(), MemberState::Rebuilding);
    r.exec.run_until_idle();
    assert_eq!(r.array.health(), Health::Optimal);
    fail_all_but(&r.exec, &r.array, 0);
    check_all(&r.exec, &r.array, &model);
}

#[test]
fn resync_resumes_from_its_checkpoint() {
    let r = faulty_array(
        options(Level::Raid1, None, 64, "t"),
        2,
        MEMBER_SECTORS,
        false,
    );
    let model = fill(&r, 51);
    // An unclean shutdown: the array stays dirty on disk (no mark_clean), and the copies
    // disagree somewhere.
    let offset = r.array.superblock().unwrap().data_offset_sectors;
    r.mem[1].write_at(offset + 20_000, &[0x55; 4096]).unwrap();
    let assemble_now = |exec: &Executor| {
        let candidates: Vec<(String, Rc<dyn BlockDevice>)> = r
            .mem
            .iter()
            .enumerate()
            .map(|(i, m)| (format!("d{i}"), m.clone() as Rc<dyn BlockDevice>))
            .collect();
        let e = exec.clone();
        let array = exec
            .block_on(async move { assemble(&e, candidates).await })
            .unwrap()
            .arrays[0]
            .clone();
        super::attach(&array);
        array
    };
    let exec = Executor::new();
    let array = assemble_now(&exec);
    assert!(array.needs_resync());
    let mut p = array.policy();
    p.rebuild_rate_bytes_per_s = 1 << 20;
    array.set_policy(p);
    super::start(&array);
    let e = exec.clone();
    exec.block_on(async move { e.sleep(4_000_000_000).await })
        .unwrap();
    let done = array.job().expect("resync running").done_sectors;
    assert!(done > 0);
    let a = array.clone();
    exec.block_on(async move { a.mark_clean().await })
        .unwrap()
        .unwrap();
    let at = sb_of(&r.mem[0]).resync_offset_sectors;
    assert!(
        at > 0 && at != crate::array::RESYNC_DONE,
        "position recorded: {at}"
    );
    // Served again: the resync starts where it stopped and the copies end up equal.
    let exec = Executor::new();
    let array = assemble_now(&exec);
    assert!(array.needs_resync());
    assert_eq!(array.resync_cursor(), at);
    super::start(&array);
    exec.run_until_idle();
    assert!(!array.needs_resync());
    let a = array.clone();
    exec.block_on(async move { a.mark_clean().await })
        .unwrap()
        .unwrap();
    assert_eq!(
        sb_of(&r.mem[0]).resync_offset_sectors,
        crate::array::RESYNC_DONE
    );
    // Sector 20_000 onwards was past the checkpoint: both copies agree again.
    let mut a0 = vec![0u8; 4096];
    let mut a1 = vec![0u8; 4096];
    r.mem[0].read_at(offset + 20_000, &mut a0).unwrap();
    r.mem[1].read_at(offset + 20_000, &mut a1).unwrap();
    assert_eq!(a0, a1);
    let at = 20_000 * SECTOR_BYTES;
    assert_eq!(a0, model[at..at + 4096]);
}

#[test]
fn hung_member_write_is_given_up_and_the_member_failed() {
    let r = faulty_array(
        options(Level::Raid5, None, 64, "t"),
        3,
        MEMBER_SECTORS,
        false,
    );
    let mut model = fill(&r, 4);
    r.array.apply_setting("io_timeout_ms", "1000").unwrap();
    // A member that stops answering (an hour is forever here): its requests are given up.
    r.disks[1].set_config(FaultConfig {
        min_latency_ns: 3_600_000_000_000,
        max_latency_ns: 3_600_000_000_000,
        ..FaultConfig::default()
    });
    let started = r.exec.now_ns();
    let data = vec![0x77u8; 64 * 1024];
    write_now(&r.exec, &r.array, 0, data.clone()).unwrap();
    model[..data.len()].copy_from_slice(&data);
    assert!(
        r.exec.now_ns() - started < 2_000_000_000,
        "nothing waited for the hung disk longer than the timeout"
    );
    assert_eq!(r.array.health(), Health::Degraded);
    assert_eq!(sb_of(&r.mem[0]).role_of(1), DeviceRole::Faulty);
    check_all(&r.exec, &r.array, &model);
}

/// Found by the kernel simulator: a discard sent to a member that stopped answering held
/// its range's lock for ever, and every request behind it hung. A member discard is under
/// the I/O timeout like every other member request: the discard ends, the write behind it
/// too, and the silent member is found out by the write.
#[test]
fn discard_to_a_hung_member_is_given_up_at_the_timeout() {
    let r = faulty_array(
        options(Level::Raid1, None, 64, "d1"),
        2,
        MEMBER_SECTORS,
        false,
    );
    let mut model = fill(&r, 9);
    r.array.apply_setting("io_timeout_ms", "1000").unwrap();
    r.disks[1].set_config(FaultConfig {
        min_latency_ns: 3_600_000_000_000,
        max_latency_ns: 3_600_000_000_000,
        ..FaultConfig::default()
    });
    let started = r.exec.now_ns();
    let a = r.array.clone();
    let discarded = r
        .exec
        .block_on(async move { a.discard(0, 256).await })
        .expect("the discard finishes");
    // A discard promises nothing: it succeeds, whatever the member did with it.
    assert_eq!(discarded, Ok(()));
    let data = vec![0x5eu8; 256 * SECTOR_BYTES];
    write_now(&r.exec, &r.array, 0, data.clone()).unwrap();
    model[..data.len()].copy_from_slice(&data);
    assert!(
        r.exec.now_ns() - started < 4_000_000_000,
        "the discard and the write waited for the hung member longer than two timeouts"
    );
    assert_eq!(r.array.health(), Health::Degraded);
    check_all(&r.exec, &r.array, &model);
}

/// Found by the kernel simulator: members written by one superblock update disagreed on the
/// role table at the same event count (a spare that came back with the older, shorter table
/// it had kept held a removed device's entry as spare, the others as faulty), and the next
/// assembly refused the array. One update writes one table to every member.
#[test]
fn one_update_writes_one_role_table_to_every_member() {
    let r = faulty_array(
        options(Level::Raid1, None, 64, "r1"),
        2,
        MEMBER_SECTORS,
        false,
    );
    let model = fill(&r, 21);
    let (_s0_mem, s0) = new_disk(&r.exec, 1, false);
    let (_s1_mem, s1) = new_disk(&r.exec, 2, false);
    add_spare(&r, "s0", &s0).unwrap();
    let s0_table_len = r.array.spares()[0].superblock().dev_roles.len();
    add_spare(&r, "s1", &s1).unwrap();
    let a = r.array.clone();
    r.exec
        .block_on(async move { a.remove_named("s1").await })
        .unwrap()
        .unwrap();
    // s0 holds the table it had before s1 existed, as a spare back from a restart does.
    let spare = r.array.spares()[0].clone();
    spare.edit_superblock_in_memory(|sb| sb.dev_roles.truncate(s0_table_len));
    // The next update (d1 fails, s0 takes its slot) writes every member.
    fail(&r, "d1").unwrap();
    r.exec.run_until_idle();
    assert_eq!(r.array.health(), Health::Optimal);
    let tables: Vec<(u64, Vec<u16>)> = r
        .array
        .slots()
        .iter()
        .flatten()
        .map(|m| {
            let sb = m.superblock();
            (sb.events, sb.dev_roles)
        })
        .collect();
    assert!(
        tables.windows(2).all(|w| w[0] == w[1]),
        "members disagree: {tables:?}"
    );
    check_all(&r.exec, &r.array, &model);
}

/// Every member's I/O takes `latency_ns` from now on.
fn set_latency(r: &FaultyArray, members: &[usize], latency_ns: u64) {
    for &i in members {
        r.disks[i].set_config(FaultConfig {
            min_latency_ns: latency_ns,
            max_latency_ns: latency_ns,
            ..FaultConfig::default()
        });
    }
}

fn events_since(r: &FaultyArray, from: u64) -> Vec<Event> {
    r.array
        .monitor()
        .events()
        .after(from, 1000)
        .events
        .into_iter()
        .map(|e| e.event)
        .collect()
}

/// Issue 17, item 4: a timeout that hits more members at once than the level tolerates is a
/// stall (of what they share), not the failure of each: the write gets an error, no member is
/// failed or recorded faulty, an event says the array stalled, and once the members answer
/// again the array serves everything, with a resync due for the torn write.
#[test]
fn a_timeout_on_more_members_than_tolerated_stalls_instead_of_failing_them() {
    let r = faulty_array(
        options(Level::Raid6, None, 64, "s6"),
        5,
        MEMBER_SECTORS,
        false,
    );
    let mut model = fill(&r, 5);
    r.array.apply_setting("io_timeout_ms", "1000").unwrap();
    let from = r.array.monitor().events().latest_seq();
    // Three of five members hang (RAID6 tolerates two): a full-stripe write touches them all.
    set_latency(&r, &[0, 1, 2], 3_600_000_000_000);
    let stripe = vec![0x42u8; 3 * 64 * 512];
    let e = write_now(&r.exec, &r.array, 0, stripe).unwrap_err();
    assert!(
        matches!(
            e,
            crate::block::IoError::DataLost { .. } | crate::block::IoError::Timeout
        ),
        "{e:?}"
    );
    assert_eq!(r.array.health(), Health::Optimal);
    for (i, m) in r.array.slots().iter().enumerate() {
        assert_eq!(
            m.as_ref().unwrap().state(),
            MemberState::Active,
            "member {i}"
        );
    }
    for mem in &r.mem {
        let sb = sb_of(mem);
        for d in 0..5 {
            assert!(
                matches!(sb.role_of(d), DeviceRole::Active(_)),
                "{d} recorded faulty"
            );
        }
    }
    let events = events_since(&r, from);
    assert!(
        events.contains(&Event::ArrayStalled { members: 3 }),
        "{events:?}"
    );
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::MemberFailed { .. })),
        "{events:?}"
    );
    assert!(r.array.needs_resync(), "the torn write is resynced");
    // The members answer again: everything is served, the stalled stripe included.
    set_latency(&r, &[0, 1, 2], 0);
    let again = vec![0x43u8; 3 * 64 * 512];
    write_now(&r.exec, &r.array, 0, again.clone()).unwrap();
    model[..again.len()].copy_from_slice(&again);
    check_all(&r.exec, &r.array, &model);
    assert_eq!(r.array.health(), Health::Optimal);
}

/// The same on a mirror (the copy levels' write and flush paths): both copies hang.
#[test]
fn a_mirror_whose_copies_all_time_out_stalls() {
    let r = faulty_array(
        options(Level::Raid1, None, 64, "m"),
        2,
        MEMBER_SECTORS,
        false,
    );
    let model = fill(&r, 7);
    r.array.apply_setting("io_timeout_ms", "1000").unwrap();
    set_latency(&r, &[0, 1], 3_600_000_000_000);
    assert!(write_now(&r.exec, &r.array, 8, vec![1u8; 4096]).is_err());
    let a = r.array.clone();
    let flushed = r.exec.block_on(async move { a.flush().await }).unwrap();
    assert!(
        flushed.is_err(),
        "a flush that did not reach a member is no flush"
    );
    assert_eq!(r.array.health(), Health::Optimal);
    set_latency(&r, &[0, 1], 0);
    let mut model = model;
    write_now(&r.exec, &r.array, 8, vec![2u8; 4096]).unwrap();
    model[8 * 512..8 * 512 + 4096].fill(2);
    check_all(&r.exec, &r.array, &model);
}

/// Within what the level tolerates, timed-out members are failed as before.
#[test]
fn a_timeout_on_as_many_members_as_tolerated_fails_them() {
    let r = faulty_array(
        options(Level::Raid6, None, 64, "s6"),
        5,
        MEMBER_SECTORS,
        false,
    );
    let mut model = fill(&r, 6);
    r.array.apply_setting("io_timeout_ms", "1000").unwrap();
    set_latency(&r, &[1, 3], 3_600_000_000_000);
    let stripe = vec![0x42u8; 3 * 64 * 512];
    write_now(&r.exec, &r.array, 0, stripe.clone()).unwrap();
    model[..stripe.len()].copy_from_slice(&stripe);
    assert_eq!(r.array.health(), Health::Degraded);
    for i in [1, 3] {
        assert_eq!(
            r.array.slots()[i].as_ref().unwrap().state(),
            MemberState::Faulty
        );
    }
    check_all(&r.exec, &r.array, &model);
}

#[test]
fn a_member_failing_mid_rebuild_is_replaced_by_the_next_spare() {
    let r = faulty_array(
        options(Level::Raid1, None, 64, "t"),
        2,
        MEMBER_SECTORS,
        false,
    );
    let model = fill(&r, 61);
    let mut p = r.array.policy();
    p.rebuild_rate_bytes_per_s = 1 << 20;
    r.array.set_policy(p);
    let (_, s0) = new_disk(&r.exec, 1, false);
    let (_, s1) = new_disk(&r.exec, 2, false);
    let (s2_mem, s2) = new_disk(&r.exec, 3, false);
    add_spare(&r, "s0", &s0).unwrap();
    add_spare(&r, "s1", &s1).unwrap();
    add_spare(&r, "s2", &s2).unwrap();
    // A spare can be removed; it is then recorded faulty and gone from the list.
    let a = r.array.clone();
    r.exec
        .block_on(async move { a.remove_named("s2").await })
        .unwrap()
        .unwrap();
    assert!(r.array.spares().iter().all(|m| m.name != "s2"));
    let s2_number = sb_of(&s2_mem).dev_number;
    assert_eq!(sb_of(&r.mem[0]).role_of(s2_number), DeviceRole::Faulty);
    fail(&r, "d1").unwrap();
    let e = r.exec.clone();
    r.exec
        .block_on(async move { e.sleep(2_000_000_000).await })
        .unwrap();
    let slots = r.array.slots();
    let first = slots[1].as_ref().unwrap().clone();
    assert_eq!(first.state(), MemberState::Rebuilding);
    // The member being rebuilt fails: the next spare takes the slot from zero.
    fail(&r, &first.name.clone()).unwrap();
    r.exec.run_until_idle();
    let slots = r.array.slots();
    let second = slots[1].as_ref().unwrap();
    assert_ne!(second.name, first.name);
    assert_eq!(second.state(), MemberState::Active);
    assert_eq!(r.array.health(), Health::Optimal);
    fail_all_but(&r.exec, &r.array, 1);
    check_all(&r.exec, &r.array, &model);
}

#[test]
fn spare_activation_and_rebuild_are_reported_as_events_in_order() {
    let r = faulty_array(
        options(Level::Raid5, None, 64, "t"),
        3,
        MEMBER_SECTORS,
        false,
    );
    let model = fill(&r, 61);
    let (_, spare) = new_disk(&r.exec, 62, false);
    add_spare(&r, "s0", &spare).unwrap();
    let from = r.array.monitor().events().latest_seq();
    fail(&r, "d1").unwrap();
    r.exec.run_until_idle();
    assert_eq!(r.array.health(), Health::Optimal);
    check_all(&r.exec, &r.array, &model);
    let events = events_since(&r, from);
    let member = |name: &str| String::from(name);
    let expected = [
        Event::MemberFailed {
            slot: 1,
            member: member("d1"),
        },
        Event::SpareActivated {
            slot: 1,
            member: member("s0"),
        },
        Event::RebuildStarted {
            slot: 1,
            member: member("s0"),
        },
        Event::RebuildFinished {
            slot: 1,
            member: member("s0"),
        },
        Event::ArrayOptimal,
    ];
    // In this order, possibly with others (ArrayDegraded) between.
    let mut rest = events.iter();
    for want in &expected {
        assert!(
            rest.any(|e| e == want),
            "{want:?} missing or out of order in {events:?}"
        );
    }
    assert!(events.contains(&Event::ArrayDegraded), "{events:?}");
    assert!(
        !events
            .iter()
            .any(|e| matches!(e, Event::RebuildFailed { .. })),
        "{events:?}"
    );
}

/// A rebuild that finds no readable copy of a block says so (an unreadable source), not
/// that superblocks could not be written; the data that is readable stays readable.
#[test]
fn a_rebuild_with_no_readable_source_reports_the_read_failure() {
    unreadable_source_is_reported(Level::Raid1, 2);
}

/// The same for the parity path (a cell P covers cannot be read, so the lost one cannot be
/// computed) and a RAID10 near copy.
#[test]
fn a_parity_or_raid10_rebuild_with_no_readable_source_reports_the_read_failure() {
    unreadable_source_is_reported(Level::Raid5, 3);
    unreadable_source_is_reported(Level::Raid10, 2);
}

fn unreadable_source_is_reported(level: Level, count: usize) {
    let r = faulty_array(options(level, None, 64, "t"), count, MEMBER_SECTORS, false);
    let model = fill(&r, 95);
    let offset = sb_of(&r.mem[0]).data_offset_sectors;
    fail(&r, "d1").unwrap();
    // The last copy has a latent error in the middle.
    r.disks[0].add_latent_error(offset + 5000);
    let from = r.array.monitor().events().latest_seq();
    let (_, spare) = new_disk(&r.exec, 96, false);
    add_spare(&r, "s0", &spare).unwrap();
    r.exec.run_until_idle();
    let events = events_since(&r, from);
    let reason = events
        .iter()
        .find_map(|e| match e {
            Event::RebuildFailed { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no rebuild_failed: {events:?}"));
    assert!(
        reason.contains("no readable copy") && !reason.contains("superblock"),
        "{level:?}: {reason}"
    );
    // Everything but the bad sector still reads back.
    let data = read_now(&r.exec, &r.array, 0, 4096).unwrap();
    assert!(data[..] == model[..4096 * 512]);
}

#[test]
fn a_replacement_failing_a_write_below_its_cursor_is_recorded_before_the_ack() {
    let r = faulty_array(
        options(Level::Raid1, None, 64, "t"),
        2,
        MEMBER_SECTORS,
        false,
    );
    let model = fill(&r, 71);
    let mut p = r.array.policy();
    p.checkpoint_regions = 1;
    p.rebuild_rate_bytes_per_s = 1 << 20;
    r.array.set_policy(p);
    let (new_mem, new) = new_disk(&r.exec, 72, false);
    let a = r.array.clone();
    let dev = new.clone() as Rc<dyn BlockDevice>;
    r.exec
        .block_on(async move {
            a.replace_named("d1", "n".into(), dev).await.unwrap();
            a.executor().sleep(4_000_000_000).await;
        })
        .unwrap();
    let rep = r.array.replacement_of(1).expect("replacing");
    let cursor = rep.recovery_offset_sectors();
    assert!(cursor > 64, "the copy moved: {cursor}");
    assert!(sb_of(&new_mem).recovery_offset_sectors > 0, "checkpointed");
    // The first 32 KiB are behind the cursor: only a client write reaches them now.
    new.add_error_range(rep.data_offset(), 64, FaultOp::Write);
    let mut data = vec![0u8; 4096];
    SplitMix64::new(73).fill(&mut data);
    let a = r.array.clone();
    let d = Bytes::from(data.clone());
    // Nothing else runs between the acknowledgement and the checks below.
    let sb_at_ack = r
        .exec
        .block_on(async move {
            a.write(8, d, false).await.unwrap();
            sb_of_dev(&a)
        })
        .unwrap();
    let nsb = sb_of(&new_mem);
    assert_eq!(
        sb_at_ack.role_of(nsb.dev_number),
        DeviceRole::Faulty,
        "the failure is on disk when the write is acknowledged"
    );
    assert_eq!(rep.state(), MemberState::Faulty);
    assert!(r.array.replacement_of(1).is_none());
    let mut model = model;
    model[8 * SECTOR_BYTES..8 * SECTOR_BYTES + 4096].copy_from_slice(&data);
    let a = r.array.clone();
    r.exec.block_on(async move { a.stop_jobs().await }).unwrap();

    // Restart: the replacement is not taken back, neither as replacement nor in sync.
    let exec = Executor::new();
    let mut candidates: Vec<(String, Rc<dyn BlockDevice>)> = r
        .mem
        .iter()
        .enumerate()
        .map(|(i, m)| (format!("d{i}"), m.clone() as Rc<dyn BlockDevice>))
        .collect();
    candidates.push(("n".into(), new_mem.clone()));
    let e = exec.clone();
    let result = exec
        .block_on(async move { assemble(&e, candidates).await })
        .unwrap();
    let array = result.arrays[0].clone();
    super::attach(&array);
    assert!(array.replacement_of(1).is_none());
    for m in array.slots().iter().flatten() {
        assert_ne!(m.name, "n", "the failed replacement holds no slot");
    }
    super::start(&array);
    exec.run_until_idle();
    check_all(&exec, &array, &model);
    fail_all_but(&exec, &array, 1);
    check_all(&exec, &array, &model);
}

/// The superblock as the first member's device holds it now.
fn sb_of_dev(array: &Array) -> Superblock {
    array.slots()[0]
        .as_ref()
        .map(|m| m.superblock())
        .expect("slot 0 present")
}

/// A spare whose writes are slow (up to `max_latency_ns`) and sit in a volatile cache.
fn slow_cached_spare(
    r: &FaultyArray,
    seed: u64,
    max_latency_ns: u64,
) -> (Rc<MemoryDisk>, Rc<FaultyDisk>) {
    let (mem, spare) = new_disk(&r.exec, seed, false);
    spare.set_config(FaultConfig {
        min_latency_ns: 20_000,
        max_latency_ns,
        write_cache: true,
        ..FaultConfig::default()
    });
    (mem, spare)
}

/// The rebuild position `spare`'s superblock records (0 without one), and whether the
/// spare holds `source`'s data, byte for byte, up to it.
fn recorded_position_holds(spare: &MemoryDisk, source: &MemoryDisk) -> (u64, bool) {
    let ssb = sb_of(spare);
    if !ssb.features.contains(FeatureMap::RECOVERY_OFFSET) {
        return (0, true);
    }
    let offset = ssb.recovery_offset_sectors;
    let mut want = vec![0u8; offset as usize * SECTOR_BYTES];
    let mut got = vec![0u8; want.len()];
    source
        .read_at(sb_of(source).data_offset_sectors, &mut want)
        .unwrap();
    spare.read_at(ssb.data_offset_sectors, &mut got).unwrap();
    (offset, got == want)
}

/// A RAID5 rebuild at normal priority with no rate limit keeps several regions in flight;
/// the spare's writes are slow (so regions finish out of order) and cached. A crash or a
/// stop at any point leaves on the spare a checkpoint that covers only data the spare
/// holds (the failed member's cells, byte for byte); after a stop (and the loss of the
/// spare's unflushed writes) the rebuild resumes from it.
fn regions_in_flight_stop(crash: bool) {
    let mut checkpointed = 0;
    for crash_at_us in [700u64, 1500, 2200, 2400, 2600, 2800, 3200] {
        let r = faulty_array(
            options(Level::Raid5, None, 64, "t"),
            4,
            MEMBER_SECTORS,
            false,
        );
        let model = fill(&r, 81);
        let mut p = r.array.policy();
        p.checkpoint_regions = 1;
        r.array.set_policy(p);
        let (spare_mem, spare) = slow_cached_spare(&r, 82 + crash_at_us, 400_000);
        add_spare(&r, "s0", &spare).unwrap();
        fail(&r, "d1").unwrap();
        let e = r.exec.clone();
        r.exec
            .block_on(async move { e.sleep(crash_at_us * 1000).await })
            .unwrap();
        // Finished, or recording its end: later crash points say nothing more.
        match r.array.job() {
            Some(job) if job.done_sectors < r.array.member_used_sectors() => {}
            _ => break,
        }
        if crash {
            spare.crash();
            for d in &r.disks {
                d.crash();
            }
        } else {
            let a = r.array.clone();
            r.exec
                .block_on(async move { a.mark_clean().await })
                .unwrap()
                .unwrap();
            assert!(!super::running(&r.array));
            spare.crash();
        }
        let (offset, holds) = recorded_position_holds(&spare_mem, &r.mem[1]);
        checkpointed += usize::from(offset > 0);
        assert!(
            holds,
            "stop at {crash_at_us} us: the checkpoint ({offset}) covers unwritten cells"
        );
        if crash {
            // A degraded RAID5 that was not shut down cleanly is not assembled (the write
            // hole); the checkpoint on disk is what this case checks.
            continue;
        }
        let exec = Executor::new();
        let mut candidates: Vec<(String, Rc<dyn BlockDevice>)> = r
            .mem
            .iter()
            .enumerate()
            .map(|(i, m)| (format!("d{i}"), m.clone() as Rc<dyn BlockDevice>))
            .collect();
        candidates.push(("s0".into(), spare_mem.clone()));
        let e = exec.clone();
        let result = exec
            .block_on(async move { assemble(&e, candidates).await })
            .unwrap();
        let array = result.arrays[0].clone();
        super::attach(&array);
        let back = array.slots()[1]
            .clone()
            .expect("the rebuilding member is back");
        assert_eq!(back.name, "s0");
        assert_eq!(back.recovery_offset_sectors(), offset);
        super::start(&array);
        exec.run_until_idle();
        assert_eq!(array.health(), Health::Optimal);
        check_all(&exec, &array, &model);
        fail_all_but(&exec, &array, 1);
        check_all(&exec, &array, &model);
    }
    assert!(checkpointed > 0, "no stop fell after a checkpoint");
}

/// The rebuild position a superblock records covers only data the target holds durably,
/// whichever update writes it: here an update for another reason (a failure record, the
/// dirty mark) lands mid-rebuild, long before the job's next checkpoint, while the spare's
/// rebuilt regions sit in its volatile cache. Then the spare loses power. What its
/// superblock says is rebuilt must equal the failed member's data, byte for byte.
fn other_update_mid_rebuild(level: Level, layout: Option<&str>, count: usize) {
    let mut recorded = 0;
    for at_us in [10_000u64, 40_000, 70_000, 100_000, 130_000] {
        let r = faulty_array(
            options(level, layout, 64, "t"),
            count,
            MEMBER_SECTORS,
            false,
        );
        fill(&r, 83);
        let mut p = r.array.policy();
        // The job's own checkpoints every 4 MiB, 1 MiB regions at a pace that leaves the
        // job under way at each update time, mostly between two checkpoints.
        p.checkpoint_regions = 4;
        p.rebuild_rate_bytes_per_s = 100_000_000;
        r.array.set_policy(p);
        let (spare_mem, spare) = slow_cached_spare(&r, 84 + at_us, 100_000);
        add_spare(&r, "s0", &spare).unwrap();
        fail(&r, "d1").unwrap();
        let e = r.exec.clone();
        r.exec
            .block_on(async move { e.sleep(at_us * 1000).await })
            .unwrap();
        match r.array.job() {
            Some(job)
                if job.done_sectors > 0 && job.done_sectors < r.array.member_used_sectors() => {}
            _ => continue,
        }
        let a = r.array.clone();
        r.exec
            .block_on(async move { a.update_superblocks(|_| {}).await })
            .unwrap()
            .unwrap();
        spare.crash();
        let (offset, holds) = recorded_position_holds(&spare_mem, &r.mem[1]);
        recorded += usize::from(offset > 0);
        assert!(
            holds,
            "{level:?} update at {at_us} us: the recorded rebuild position ({offset}) covers \
             data the spare lost"
        );
    }
    assert!(
        recorded > 0,
        "{level:?}: no position was recorded mid-rebuild"
    );
}

#[test]
fn raid1_update_mid_rebuild_records_only_the_flushed_position() {
    other_update_mid_rebuild(Level::Raid1, None, 2);
}

#[test]
fn raid10_update_mid_rebuild_records_only_the_flushed_position() {
    other_update_mid_rebuild(Level::Raid10, Some("n2"), 4);
}

#[test]
fn raid5_update_mid_rebuild_records_only_the_flushed_position() {
    other_update_mid_rebuild(Level::Raid5, None, 4);
}

#[test]
fn raid5_crash_with_regions_in_flight_leaves_a_checkpoint_behind_written_data() {
    regions_in_flight_stop(true);
}

#[test]
fn raid5_stop_with_regions_in_flight_resumes_from_a_written_checkpoint() {
    regions_in_flight_stop(false);
}

/// Foreground writes land in regions in flight and in regions rebuilt but not yet behind
/// the cursor (the spare's writes are slow, so those wait); the rebuilt member alone then
/// returns every write.
#[test]
fn raid5_writes_into_regions_in_flight_reach_the_rebuilt_member() {
    let r = faulty_array(
        options(Level::Raid5, None, 64, "t"),
        4,
        MEMBER_SECTORS,
        false,
    );
    let model = Rc::new(RefCell::new(fill(&r, 91)));
    let (_, spare) = new_disk(&r.exec, 92, false);
    spare.set_config(FaultConfig {
        min_latency_ns: 20_000,
        max_latency_ns: 400_000,
        ..FaultConfig::default()
    });
    add_spare(&r, "s0", &spare).unwrap();
    fail(&r, "d1").unwrap();
    let data_disks = 3u64;
    let capacity = r.array.capacity_sectors();
    let a = r.array.clone();
    let m = model.clone();
    let exec = r.exec.clone();
    let writes = r.exec.spawn(async move {
        let mut rng = SplitMix64::new(93);
        let mut count = 0u32;
        // The job starts once the spare is recorded in its slot.
        while a.job().is_none() {
            exec.sleep(1_000).await;
        }
        while let Some(job) = a.job() {
            // Up to three 1 MiB regions ahead of the cursor, in array sectors.
            let ahead = rng.below(3 * 2048 * data_disks);
            let sector = ((job.done_sectors * data_disks + ahead).min(capacity - 8)) / 8 * 8;
            let mut data = vec![0u8; 4096];
            rng.fill(&mut data);
            a.write(sector, Bytes::from(data.clone()), false)
                .await
                .unwrap();
            let at = sector as usize * SECTOR_BYTES;
            m.borrow_mut()[at..at + data.len()].copy_from_slice(&data);
            count += 1;
            exec.sleep(5_000).await;
        }
        count
    });
    r.exec.run_until_idle();
    assert!(writes.try_take().expect("writer finished") > 10);
    assert_eq!(r.array.health(), Health::Optimal);
    let model = model.borrow().clone();
    check_all(&r.exec, &r.array, &model);
    fail_all_but(&r.exec, &r.array, 1);
    check_all(&r.exec, &r.array, &model);
}

/// A `low` rebuild gives way to a client whose requests come one after another: each ends
/// at once (memory members), so nothing is in flight most of the time, yet a new one starts
/// every half millisecond. The rebuild waits for a whole quiet nap, so it moves at most one
/// region per wait cap (200 ms) while the client runs, and finishes once the client stops.
#[test]
fn low_priority_rebuild_gives_way_to_back_to_back_requests() {
    let r = faulty_array(
        options(Level::Raid5, None, 64, "t"),
        4,
        MEMBER_SECTORS,
        false,
    );
    let model = fill(&r, 91);
    let mut p = r.array.policy();
    p.rebuild_priority = crate::array::RebuildPriority::Low;
    r.array.set_policy(p);
    let (_spare_mem, spare) = new_disk(&r.exec, 92, false);
    add_spare(&r, "s0", &spare).unwrap();
    fail(&r, "d1").unwrap();
    // 100 ms of a client writing 4 KiB every 0.5 ms (the data it already holds).
    let (a, e) = (r.array.clone(), r.exec.clone());
    let head = Bytes::from(model[..4096].to_vec());
    let client = r.exec.spawn(async move {
        for _ in 0..200 {
            a.write(0, head.clone(), false).await.unwrap();
            e.sleep(500_000).await;
        }
    });
    let e = r.exec.clone();
    r.exec
        .block_on(async move { e.sleep(100_000_000).await })
        .unwrap();
    let Some(job) = r.array.job() else {
        panic!("a low rebuild finished while the client was busy");
    };
    let done = job.done_sectors;
    assert!(
        done <= 2 * 2048,
        "a low rebuild ran {done} sectors while the client was busy"
    );
    r.exec.run_until_idle();
    assert!(client.try_take().is_some());
    assert_eq!(r.array.health(), Health::Optimal, "the rebuild finished");
    let cap = r.array.capacity_sectors();
    assert!(read_now(&r.exec, &r.array, 0, cap as usize).unwrap() == model);
}

/// A RAID5 on host files is rebuilt by the fused worker job (reads, xor and write of each
/// cell off the engine, in pieces smaller than a cell), and every byte comes back: the
/// rebuilt member then serves the reads of another failed one.
#[cfg(feature = "std")]
#[test]
fn parity_rebuild_on_file_members_uses_worker_jobs_and_restores_every_byte() {
    use crate::array::assemble::create;
    use crate::host::file::{FileDisk, IoPool};
    use crate::layout::ArrayLayout;
    let dir = std::env::temp_dir().join(format!("orion-rebuild-files-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pool = IoPool::new(3);
    let disk = |name: &str| {
        Rc::new(FileDisk::create_sparse(&dir.join(name), 6 << 20, pool.clone()).unwrap())
    };
    let exec = Executor::new();
    let members: Vec<(String, Rc<dyn BlockDevice>)> = (0..4)
        .map(|i| {
            (
                format!("d{i}"),
                disk(&format!("d{i}")) as Rc<dyn BlockDevice>,
            )
        })
        .collect();
    let e = exec.clone();
    // 256 KiB chunks: two worker pieces a cell.
    let opts = options(Level::Raid5, None, 512, "f");
    let array = drive(&exec, async move { create(&e, members, &opts).await }).unwrap();
    super::attach(&array);
    let mut policy = array.policy();
    policy.failure.io_timeout_ns = 0;
    array.set_policy(policy);
    let bytes = array.capacity_sectors() as usize * SECTOR_BYTES;
    let mut model = vec![0u8; bytes];
    SplitMix64::new(17).fill(&mut model);
    for (i, piece) in model.chunks(1 << 20).enumerate() {
        let (a, d) = (array.clone(), piece.to_vec());
        drive(&exec, async move {
            a.write((i * 2048) as u64, Bytes::from(d), false).await
        })
        .unwrap();
    }
    let (a, spare) = (array.clone(), disk("s0") as Rc<dyn BlockDevice>);
    drive(&exec, async move { a.add_device("s0".into(), spare).await }).unwrap();
    let a = array.clone();
    drive(&exec, async move { a.fail_named("d1").await }).unwrap();
    drive_until(&exec, || {
        array.health() == Health::Optimal && !super::running(&array)
    });
    let target = array.slots()[1].clone().unwrap();
    assert_eq!(target.name, "s0");
    assert_eq!(target.state(), MemberState::Active);

    // The fused path applies to these members: run it again over every stripe after
    // spoiling the rebuilt member's cells, and it must report them all done.
    let ArrayLayout::Raid5(l) = array.layout().clone() else {
        panic!("a RAID5 layout")
    };
    let stripes = array.member_used_sectors() / l.chunk_sectors();
    let offset = target.superblock().data_offset_sectors;
    let t = target.clone();
    drive(&exec, async move {
        t.dev
            .write(offset, Bytes::from(vec![0x5a; 1 << 20]), false)
            .await
    })
    .unwrap();
    let (a, t) = (array.clone(), target.clone());
    let r = drive(&exec, async move {
        super::rebuild::rebuild_stripes_offloaded(&a, &l, (0, stripes), &t, 1).await
    });
    assert_eq!(r, Ok(()));

    // Reads now need s0 wherever d0 held data or parity.
    let a = array.clone();
    drive(&exec, async move { a.fail_named("d0").await }).unwrap();
    for (i, piece) in model.chunks(1 << 20).enumerate() {
        let (a, n) = (array.clone(), piece.len());
        let got = drive(&exec, async move {
            a.read((i * 2048) as u64, vec![0u8; n]).await
        })
        .unwrap();
        assert!(got == piece, "array content differs in MiB {i}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A replacement of the last member in sync (RAID1 of two, degraded): while the end of the
/// copy is recorded the array must still count the member being replaced, which keeps its
/// slot until the replacement is on disk as in sync. Swapped first, the array had no member
/// in sync for that moment: it failed, and neither the end of the copy nor a member failure
/// racing it could be recorded (found by `orion-sim`: RAID1 of three, one member failed, one
/// being replaced, the third failed as the replacement finished).
#[test]
fn replacing_the_last_member_in_sync_never_fails_the_array() {
    let r = faulty_array(
        options(Level::Raid1, None, 64, "t"),
        2,
        MEMBER_SECTORS,
        true,
    );
    let model = fill(&r, 61);
    // The member replaced stays a spare: what the replacement recorded is what is read.
    r.array.apply_setting("spare_policy", "none").unwrap();
    fail(&r, "d0").unwrap();
    r.exec.run_until_idle();
    assert_eq!(r.array.health(), Health::Degraded);
    let from = r.array.monitor().events().latest_seq();
    let (new_mem, new) = new_disk(&r.exec, 12, true);
    let a = r.array.clone();
    let dev = new.clone() as Rc<dyn BlockDevice>;
    r.exec
        .block_on(async move { a.replace_named("d1", "n".into(), dev).await })
        .unwrap()
        .unwrap();
    r.exec.run_until_idle();
    let events = events_since(&r, from);
    assert!(
        !events.iter().any(|e| matches!(e, Event::ArrayFailed)),
        "{events:?}"
    );
    assert_eq!(r.array.health(), Health::Degraded);
    let slots = r.array.slots();
    assert_eq!(slots[1].as_ref().unwrap().name, "n");
    assert_eq!(slots[1].as_ref().unwrap().state(), MemberState::Active);
    // The end is recorded: in sync in slot 1, the old member a spare, on both.
    let nsb = sb_of(&new_mem);
    assert!(
        !nsb.features
            .intersects(FeatureMap::REPLACEMENT | FeatureMap::RECOVERY_OFFSET),
        "{:?}",
        nsb.features
    );
    let old = sb_of(&r.mem[1]);
    assert_eq!(old.role_of(nsb.dev_number), DeviceRole::Active(1));
    assert_eq!(old.role_of(old.dev_number), DeviceRole::Spare);
    check_all(&r.exec, &r.array, &model);
}
