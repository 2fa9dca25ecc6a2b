//! Members whose superblocks the driver must refuse: an unknown feature bit, a level or
//! layout it does not know or serve, a bad chunk or member count, members that disagree on
//! the geometry, a data area past the end of the file, a `dev_number` outside the role
//! table, a wrong checksum. Each superblock is rewritten with the codec (a correct
//! checksum, unless the checksum is the case). `raid serve` must then refuse, and `raid
//! examine` refuse an undecodable superblock or show a decodable one with the problem
//! assembly refuses; both name the field, write nothing to any member, and do not panic.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use orion_raid::metadata::{FeatureMap, Level, MdTime, Superblock, checksum};

mod common;
use common::{raid, test_dir, text_of};

const SB: std::ops::Range<usize> = 4096..8192;
const OFF_LEVEL: usize = 72;
const OFF_SB_CSUM: usize = 216;

/// How one member's superblock block is spoiled.
type Spoil = fn(usize, &mut [u8]);

/// Decodes, edits and re-encodes a superblock block (encode does not validate).
fn typed(block: &mut [u8], edit: impl FnOnce(&mut Superblock)) {
    let mut sb = Superblock::decode(block).expect("created superblock decodes");
    edit(&mut sb);
    block.copy_from_slice(&sb.encode());
}

/// Overwrites a raw 32-bit field and recomputes the checksum.
fn raw_u32(block: &mut [u8], offset: usize, value: u32) {
    block[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
    let csum = checksum(block).expect("checksummable");
    block[OFF_SB_CSUM..OFF_SB_CSUM + 4].copy_from_slice(&csum.to_le_bytes());
}

/// `raid serve` on the members: it must exit (not serve) within a minute.
fn serve(dir: &Path, members: &[String]) -> Output {
    let mut args = vec!["serve", "--nbd-socket", "nbd.sock", "--control", "ctl.sock"];
    args.extend(members.iter().map(String::as_str));
    let mut child = Command::new(env!("CARGO_BIN_EXE_raid"))
        .args(&args)
        .current_dir(dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start raid serve");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("raid serve kept running: {}", text_of(&out));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// What `raid examine` does with a spoiled member.
#[derive(Clone, Copy, PartialEq)]
enum Examine {
    /// The superblock does not decode: refused, exit status 1.
    Refuses,
    /// It decodes and is shown (examine shows what is there); the problem assembly refuses
    /// is named on standard error.
    Warns,
    /// Nothing wrong to examine (a level it decodes but serve does not run).
    Shows,
}

/// Creates a `level` array of `count` 16 MiB members, spoils each member's superblock with
/// `spoil`, and checks `raid examine` (as `examine` says) and `raid serve`: both name every
/// one of `words`, leave every member unchanged byte for byte, and exit without a panic;
/// serve does not serve.
fn check(name: &str, level: &str, count: usize, spoil: Spoil, words: &[&str], examine: Examine) {
    let dir = test_dir(&format!("badsb-{name}"));
    let members: Vec<String> = (0..count).map(|i| format!("m{i}.img")).collect();
    let mut args = vec!["create", "--level", level, "--size", "16M", "--name", name];
    args.extend(members.iter().map(String::as_str));
    let out = raid(&args, &dir);
    assert!(out.status.success(), "create: {}", text_of(&out));
    for (i, m) in members.iter().enumerate() {
        let path = dir.join(m);
        let mut image = std::fs::read(&path).unwrap();
        spoil(i, &mut image[SB]);
        std::fs::write(&path, &image).unwrap();
    }
    let before: Vec<Vec<u8>> = members
        .iter()
        .map(|m| std::fs::read(dir.join(m)).unwrap())
        .collect();
    let unchanged = |what: &str| {
        for (m, b) in members.iter().zip(&before) {
            assert!(
                std::fs::read(dir.join(m)).unwrap() == *b,
                "{name}: {what} wrote to {m}"
            );
        }
    };

    let mut ex = vec!["examine"];
    ex.extend(members.iter().map(String::as_str));
    let out = raid(&ex, &dir);
    let text = text_of(&out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!text.contains("panicked"), "{name}: examine: {text}");
    match examine {
        Examine::Refuses => assert_eq!(out.status.code(), Some(1), "{name}: examine: {text}"),
        Examine::Warns | Examine::Shows => {
            assert!(out.status.success(), "{name}: examine: {text}");
            assert_eq!(text.matches("Checksum").count(), count, "{text}");
        }
    }
    if examine != Examine::Shows {
        for w in words {
            assert!(
                stderr.contains(w),
                "{name}: examine does not say '{w}': {text}"
            );
        }
    }
    unchanged("examine");

    let out = serve(&dir, &members);
    let text = text_of(&out);
    assert!(!out.status.success(), "{name}: serve succeeded: {text}");
    assert!(!text.contains("panicked"), "{name}: serve: {text}");
    assert!(
        text.contains("no array could be assembled"),
        "{name}: {text}"
    );
    for w in words {
        assert!(text.contains(w), "{name}: serve does not say '{w}': {text}");
    }
    unchanged("serve");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn unknown_feature_bit() {
    check(
        "feature",
        "5",
        3,
        |_, b| typed(b, |sb| sb.features |= FeatureMap::from_bits_retain(1 << 14)),
        &["m0.img", "feature_map", "bit 14"],
        Examine::Refuses,
    );
}

#[test]
fn levels_not_served_and_unknown_levels() {
    check(
        "multipath",
        "1",
        2,
        |_, b| raw_u32(b, OFF_LEVEL, -4i32 as u32),
        &["m1.img", "level -4 (multipath) is not supported"],
        Examine::Refuses,
    );
    check(
        "level7",
        "1",
        2,
        |_, b| raw_u32(b, OFF_LEVEL, 7),
        &["level 7 is not an md RAID level"],
        Examine::Refuses,
    );
    // Linear is an md level examine can show; the driver does not serve it.
    check(
        "linear",
        "1",
        2,
        |_, b| typed(b, |sb| sb.level = Level::Linear),
        &["level -1 (linear) is not served"],
        Examine::Shows,
    );
}

#[test]
fn unknown_layouts() {
    check(
        "r5layout",
        "5",
        3,
        |_, b| typed(b, |sb| sb.layout = 9),
        &["layout 9 is not a raid5 layout"],
        Examine::Refuses,
    );
    check(
        "r10layout",
        "10",
        4,
        |_, b| typed(b, |sb| sb.layout = 0x8_0102),
        &["layout 0x80102 is not a raid10 layout"],
        Examine::Refuses,
    );
    check(
        "r0layout",
        "0",
        2,
        |_, b| typed(b, |sb| sb.layout = 3),
        &["layout 3 is not a raid0 zone layout"],
        Examine::Refuses,
    );
}

#[test]
fn bad_chunk_and_member_count() {
    check(
        "chunk",
        "5",
        3,
        |_, b| typed(b, |sb| sb.chunk_sectors = 24),
        &["chunksize 24 sectors is not valid for raid5"],
        Examine::Refuses,
    );
    check(
        "raiddisks",
        "1",
        2,
        |_, b| typed(b, |sb| sb.raid_disk_count = 0),
        &["raid_disks 0"],
        Examine::Refuses,
    );
}

#[test]
fn members_disagreeing_on_geometry() {
    // The odd member is one event behind: it would be a stale member re-added with a
    // rebuild, in a geometry it never had.
    check(
        "geometry",
        "5",
        3,
        |i, b| {
            typed(b, |sb| {
                if i == 1 {
                    sb.chunk_sectors *= 2;
                } else {
                    sb.events += 1;
                }
            })
        },
        &["m1.img", "m0.img", "disagree", "chunksize"],
        Examine::Warns,
    );
    check(
        "ctime",
        "1",
        2,
        |i, b| {
            if i == 1 {
                typed(b, |sb| {
                    sb.ctime = MdTime::from_seconds(sb.ctime.seconds() + 1)
                });
            }
        },
        &["m1.img", "disagree", "ctime"],
        Examine::Warns,
    );
}

#[test]
fn data_area_past_the_end_of_the_member() {
    check(
        "datasize",
        "1",
        2,
        |_, b| typed(b, |sb| sb.data_size_sectors += 8),
        &[
            "m0.img",
            "data_offset",
            "data_size",
            "past the end of the device",
        ],
        Examine::Warns,
    );
}

#[test]
fn dev_number_outside_the_role_table() {
    check(
        "devnumber",
        "1",
        2,
        |_, b| typed(b, |sb| sb.dev_number = sb.max_dev()),
        &["m1.img", "dev_number", "max_dev"],
        Examine::Refuses,
    );
}

#[test]
fn wrong_checksum() {
    check(
        "csum",
        "1",
        2,
        |_, b| b[OFF_SB_CSUM] ^= 0x10,
        &["m0.img", "sb_csum"],
        Examine::Refuses,
    );
}
