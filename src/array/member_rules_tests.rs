//! Engine tests of what may be a member: one device fills one role (by identity and by its
//! superblock), a member too small for its superblock is left out at assembly, no space is
//! not a media error, and a member file deleted or truncated under the array is noticed.

use alloc::format;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec;
use alloc::vec::Vec;

use super::assemble::{CreateError, assemble, create};
use super::members::MemberError;
use super::test_rig::{faulty_array, named_members, options, read_now, write_now};
use super::{Health, MemberState};
use crate::block::{BlockDevice, IoError};
use crate::executor::Executor;
use crate::metadata::Level;
use crate::platform::memory::MemoryDisk;

const MEMBER_SECTORS: u64 = 16 * 2048;

fn states(array: &super::Array) -> Vec<Option<MemberState>> {
    array
        .slots()
        .iter()
        .map(|m| m.as_ref().map(|m| m.state()))
        .collect()
}

/// `raid add` of a device that is already in a slot, and `raid replace` of a member with
/// itself, are refused by the device's identity whatever name it comes under; nothing
/// changes (no spare, no replacement, no superblock update).
#[test]
fn a_device_in_the_array_is_refused_as_its_spare_or_replacement() {
    let r = faulty_array(
        options(Level::Raid6, None, 64, "s6"),
        4,
        MEMBER_SECTORS,
        false,
    );
    let events = r.array.superblock().unwrap().events;
    let a = r.array.clone();
    let again: Rc<dyn BlockDevice> = r.disks[1].clone();
    let added = r
        .exec
        .block_on(async move { a.add_device("/abs/path/d1".into(), again).await })
        .unwrap();
    match added {
        Err(MemberError::AlreadyMember { device, role }) => {
            assert_eq!(device, "/abs/path/d1");
            assert_eq!(role, "the active member in slot 1 of array s6 (as d1)");
        }
        other => panic!("add of a member accepted: {other:?}"),
    }
    let a = r.array.clone();
    let itself: Rc<dyn BlockDevice> = r.disks[2].clone();
    let replaced = r
        .exec
        .block_on(async move { a.replace_named("d2", "d2".into(), itself).await })
        .unwrap();
    assert!(
        matches!(replaced, Err(MemberError::AlreadyMember { ref role, .. }) if role.contains("slot 2")),
        "{replaced:?}"
    );
    // A memory disk made anew is another device, even under a member's name.
    let fresh: Rc<dyn BlockDevice> = Rc::new(MemoryDisk::new(MEMBER_SECTORS));
    assert!(r.array.role_of_device("d1", fresh.as_ref()).is_none());
    assert!(r.array.spares().is_empty());
    assert!(r.array.replacement_of(2).is_none());
    assert_eq!(r.array.superblock().unwrap().events, events);
    assert_eq!(r.array.health(), Health::Optimal);
}

/// A device that carries the superblock of a member of the array (the same disk reached
/// another way, or a copy) is refused too: by its superblock.
#[test]
fn a_copy_of_a_member_is_refused_by_its_superblock() {
    let r = faulty_array(
        options(Level::Raid1, None, 64, "m"),
        2,
        MEMBER_SECTORS,
        false,
    );
    let copy = Rc::new(MemoryDisk::new(MEMBER_SECTORS));
    let mut head = vec![0u8; 64 * 512];
    r.mem[1].read_at(0, &mut head).unwrap();
    copy.write_at(0, &head).unwrap();
    let a = r.array.clone();
    let dev: Rc<dyn BlockDevice> = copy.clone();
    let added = r
        .exec
        .block_on(async move { a.add_device("copy.img".into(), dev).await })
        .unwrap();
    assert!(
        matches!(&added, Err(MemberError::AlreadyMember { role, .. })
            if role.contains("slot 1") && role.contains("by its md superblock")),
        "{added:?}"
    );
    // Its superblock was not overwritten.
    let mut after = vec![0u8; 64 * 512];
    copy.read_at(0, &mut after).unwrap();
    assert!(after == head);
    assert!(r.array.spares().is_empty());
}

/// `create` with one device twice is refused before anything is written.
#[test]
fn create_refuses_one_device_twice() {
    let exec = Executor::new();
    let d0 = Rc::new(MemoryDisk::new(MEMBER_SECTORS));
    let d1 = Rc::new(MemoryDisk::new(MEMBER_SECTORS));
    let members = vec![
        ("a".into(), d0.clone() as Rc<dyn BlockDevice>),
        ("b".into(), d1 as Rc<dyn BlockDevice>),
        ("a-again".into(), d0.clone() as Rc<dyn BlockDevice>),
    ];
    let e = exec.clone();
    let opts = options(Level::Raid5, None, 64, "x");
    let made = exec
        .block_on(async move { create(&e, members, &opts).await })
        .unwrap();
    match made {
        Err(CreateError::SameDevice { first, second }) => {
            assert_eq!((first.as_str(), second.as_str()), ("a", "a-again"));
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("created over one device twice"),
    }
    assert_eq!(d0.resident_bytes(), 0, "nothing written");
}

/// Assembly given one device twice uses it once, and says so.
#[test]
fn assembly_uses_a_device_given_twice_once() {
    let r = faulty_array(
        options(Level::Raid1, None, 64, "m"),
        2,
        MEMBER_SECTORS,
        false,
    );
    let exec = r.exec.clone();
    let array = r.array.clone();
    exec.block_on(async move { array.mark_clean().await.unwrap() })
        .unwrap();
    let mut members = named_members(&r.disks);
    members.push(("d1-again".into(), r.disks[1].clone()));
    let e = exec.clone();
    let result = exec
        .block_on(async move { assemble(&e, members).await })
        .unwrap();
    assert_eq!(result.arrays.len(), 1, "{result:?}");
    assert_eq!(result.arrays[0].health(), Health::Optimal);
    assert!(
        result
            .problems
            .iter()
            .any(|p| p.member == "d1-again" && p.reason.contains("the same device as d1")),
        "{result:?}"
    );
}

/// A member smaller than its superblock's data offset + data size (a truncated image) is
/// left out as md leaves it out ("device too small"), so the array starts degraded
/// instead of optimal.
#[test]
fn assembly_leaves_out_a_member_too_small_for_its_superblock() {
    let r = faulty_array(
        options(Level::Raid1, None, 64, "m"),
        2,
        MEMBER_SECTORS,
        false,
    );
    let exec = r.exec.clone();
    let array = r.array.clone();
    exec.block_on(async move { array.mark_clean().await.unwrap() })
        .unwrap();
    // The same bytes on a device of less than its data offset + data size.
    let sb = r.array.superblock().unwrap();
    let short_sectors = sb.data_offset_sectors + sb.data_size_sectors / 2;
    let short = Rc::new(MemoryDisk::new(short_sectors));
    let mut bytes = vec![0u8; short_sectors as usize * 512];
    r.mem[1].read_at(0, &mut bytes).unwrap();
    short.write_at(0, &bytes).unwrap();
    let members = vec![
        ("d0".into(), r.disks[0].clone() as Rc<dyn BlockDevice>),
        ("short".into(), short as Rc<dyn BlockDevice>),
    ];
    let e = exec.clone();
    let result = exec
        .block_on(async move { assemble(&e, members).await })
        .unwrap();
    assert_eq!(result.arrays.len(), 1, "{result:?}");
    assert_eq!(result.arrays[0].health(), Health::Degraded);
    let reason = &result
        .problems
        .iter()
        .find(|p| p.member == "short")
        .unwrap_or_else(|| panic!("{result:?}"))
        .reason;
    assert!(reason.contains("device too small"), "{reason}");
    assert!(
        reason.contains(&format!("{short_sectors} sectors")),
        "{reason}"
    );
}

/// A full host file system under every member of a RAID1: the write gets `NoSpace`, no
/// member is failed, and what was written before reads back.
#[test]
fn no_space_on_every_member_fails_the_write_not_the_members() {
    let r = faulty_array(
        options(Level::Raid1, None, 64, "m"),
        2,
        MEMBER_SECTORS,
        false,
    );
    let before = vec![0x5au8; 8 * 512];
    write_now(&r.exec, &r.array, 100, before.clone()).unwrap();
    for d in &r.disks {
        d.set_write_error(Some(IoError::NoSpace));
    }
    assert_eq!(
        write_now(&r.exec, &r.array, 100, vec![0xa5; 8 * 512]),
        Err(IoError::NoSpace)
    );
    assert_eq!(
        write_now(&r.exec, &r.array, 4000, vec![1; 4096]),
        Err(IoError::NoSpace)
    );
    r.exec.run_until_idle();
    assert_eq!(states(&r.array), vec![Some(MemberState::Active); 2]);
    assert_eq!(r.array.health(), Health::Optimal);
    for _ in 0..2 {
        assert_eq!(read_now(&r.exec, &r.array, 100, 8).unwrap(), before);
    }
    // Room again: writes work, nothing to re-add.
    for d in &r.disks {
        d.set_write_error(None);
    }
    crate::jobs::start(&r.array);
    r.exec.run_until_idle();
    write_now(&r.exec, &r.array, 100, vec![7; 8 * 512]).unwrap();
    assert_eq!(
        read_now(&r.exec, &r.array, 100, 8).unwrap(),
        vec![7; 8 * 512]
    );
}

/// Only one copy had no space: the copies now disagree where the (failed) write went, so
/// the array owes a resync; it stays owed while the member is full, and once there is room
/// the copies agree again. The member is never failed.
#[test]
fn no_space_on_one_copy_is_resynced_once_there_is_room() {
    let r = faulty_array(
        options(Level::Raid1, None, 64, "m"),
        2,
        MEMBER_SECTORS,
        false,
    );
    write_now(&r.exec, &r.array, 100, vec![1; 4096]).unwrap();
    r.disks[1].set_write_error(Some(IoError::NoSpace));
    assert_eq!(
        write_now(&r.exec, &r.array, 100, vec![2; 4096]),
        Err(IoError::NoSpace)
    );
    r.exec.run_until_idle();
    assert!(r.array.needs_resync(), "the copies may differ: resync owed");
    assert_eq!(states(&r.array), vec![Some(MemberState::Active); 2]);
    r.disks[1].set_write_error(None);
    crate::jobs::start(&r.array);
    r.exec.run_until_idle();
    assert!(!r.array.needs_resync());
    let offset = r.array.superblock().unwrap().data_offset_sectors;
    let copy = |d: usize| {
        let mut b = vec![0u8; 4096];
        r.mem[d].read_at(offset + 100, &mut b).unwrap();
        b
    };
    assert_eq!(copy(0), copy(1), "the resync made the copies agree");
    assert_eq!(r.array.health(), Health::Optimal);
}

/// RAID5: the parity member has no space for a read-modify-write. The client gets
/// `NoSpace`, no member fails, and after the resync the parity matches the data again (a
/// later degraded read would otherwise rebuild wrong data for the stripe's other blocks).
#[test]
fn no_space_on_parity_keeps_the_members_and_the_resync_restores_parity() {
    let r = faulty_array(
        options(Level::Raid5, None, 64, "p"),
        4,
        MEMBER_SECTORS,
        false,
    );
    let crate::layout::ArrayLayout::Raid5(l) = r.array.layout().clone() else {
        panic!("raid5 layout");
    };
    let full: Vec<u8> = (0..l.stripe_data_sectors() as usize * 512)
        .map(|i| (i % 251) as u8)
        .collect();
    write_now(&r.exec, &r.array, 0, full.clone()).unwrap();
    let p_disk = l.parity_disk(0);
    r.disks[p_disk].set_write_error(Some(IoError::NoSpace));
    assert_eq!(
        write_now(&r.exec, &r.array, 8, vec![9; 4096]),
        Err(IoError::NoSpace)
    );
    r.exec.run_until_idle();
    assert_eq!(states(&r.array), vec![Some(MemberState::Active); 4]);
    assert!(r.array.needs_resync());
    r.disks[p_disk].set_write_error(None);
    crate::jobs::start(&r.array);
    r.exec.run_until_idle();
    assert!(!r.array.needs_resync());
    let offset = r.array.superblock().unwrap().data_offset_sectors;
    super::test_rig::assert_stripe_parity(
        &l,
        0,
        |d, stripe| {
            let mut b = vec![0u8; l.cell_bytes()];
            r.mem[d]
                .read_at(offset + l.member_sector(stripe, 0), &mut b)
                .unwrap();
            b
        },
        "after the resync",
    );
}

/// Image files deleted or truncated under a running RAID1: the monitor's probe reports the
/// member (`member_gone`) and fails it, the array serves from the other copy; a read of a
/// truncated member's lost tail is a member failure, never zeros.
#[cfg(feature = "std")]
#[test]
fn member_files_deleted_or_truncated_under_the_array_are_failed() {
    use super::test_rig::drive;
    use crate::host::file::{FileDisk, IoPool};
    use crate::monitor::Event;
    let dir = std::env::temp_dir().join(format!("orion-member-gone-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let pool = IoPool::new(2);
    for (gone, truncate) in [("d1", false), ("d0", true)] {
        let exec = Executor::new();
        let members: Vec<(String, Rc<dyn BlockDevice>)> = ["d0", "d1"]
            .iter()
            .map(|n| {
                let path = dir.join(format!("{n}-{truncate}.img"));
                let disk = FileDisk::create_sparse(&path, 8 << 20, pool.clone()).unwrap();
                (String::from(*n), Rc::new(disk) as Rc<dyn BlockDevice>)
            })
            .collect();
        let e = exec.clone();
        let opts = options(Level::Raid1, None, 64, "f");
        let array = drive(&exec, async move { create(&e, members, &opts).await }).unwrap();
        crate::jobs::attach(&array);
        let mut policy = array.policy();
        policy.failure.io_timeout_ns = 0;
        array.set_policy(policy);
        let cap = array.capacity_sectors();
        let data: Vec<u8> = (0..cap as usize * 512).map(|i| (i % 249) as u8).collect();
        let a = array.clone();
        let d = crate::block::Bytes::from(data.clone());
        drive(&exec, async move { a.write(0, d, false).await }).unwrap();
        array.probe_members();
        assert_eq!(array.health(), Health::Optimal, "nothing wrong yet");
        let path = dir.join(format!("{gone}-{truncate}.img"));
        if truncate {
            std::fs::OpenOptions::new()
                .write(true)
                .open(&path)
                .unwrap()
                .set_len(2 << 20)
                .unwrap();
            // Before the monitor looks: a read of the lost tail fails the member and is
            // served from the other copy.
            let a = array.clone();
            let back = drive(&exec, async move {
                let mut out = Vec::new();
                for _ in 0..2 {
                    out.push(a.read(cap - 64, vec![0u8; 64 * 512]).await);
                }
                out
            });
            for b in back {
                assert!(b.unwrap() == data[(cap as usize - 64) * 512..]);
            }
        } else {
            std::fs::remove_file(&path).unwrap();
        }
        array.probe_members();
        let a = array.clone();
        drive(&exec, async move { a.flush().await }).unwrap();
        let slot = usize::from(gone == "d1");
        assert_eq!(
            array.slots()[slot].as_ref().map(|m| m.state()),
            Some(MemberState::Faulty),
            "{gone} (truncated: {truncate})"
        );
        assert_eq!(array.health(), Health::Degraded);
        if !truncate {
            let gone_events: Vec<String> = array
                .monitor()
                .events()
                .after(0, usize::MAX)
                .events
                .iter()
                .filter(|e| matches!(e.event, Event::MemberGone { .. }))
                .map(|e| e.event.to_string())
                .collect();
            assert_eq!(gone_events.len(), 1, "{gone_events:?}");
            assert!(gone_events[0].contains("deleted"), "{gone_events:?}");
        }
        let a = array.clone();
        let back = drive(&exec, async move {
            a.read(0, vec![0u8; cap as usize * 512]).await
        });
        assert!(back.unwrap() == data, "every byte from the other copy");
    }
    pool.shutdown();
    let _ = std::fs::remove_dir_all(&dir);
}
