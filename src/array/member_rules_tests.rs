//! Engine tests of what may be a member: no space is not a media error.

use alloc::vec;
use alloc::vec::Vec;

use super::test_rig::{faulty_array, options, read_now, write_now};
use super::{Health, MemberState};
use crate::block::IoError;
use crate::metadata::Level;

const MEMBER_SECTORS: u64 = 16 * 2048;

fn states(array: &super::Array) -> Vec<Option<MemberState>> {
    array
        .slots()
        .iter()
        .map(|m| m.as_ref().map(|m| m.state()))
        .collect()
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
    r.array.start_jobs();
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
    r.array.start_jobs();
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
    r.array.start_jobs();
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
