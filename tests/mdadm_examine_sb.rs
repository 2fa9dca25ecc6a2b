//! Cross-check of the superblock codec against the real `mdadm --examine`: superblocks we
//! encode are written into sparse 64 MiB image files and mdadm must find them correct.
//!
//! Without mdadm the tests print a notice and pass, unless `CI` is set: then they fail.

use std::collections::HashMap;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use orion_raid::metadata::{
    CreateSpec, DeviceRole, Level, Raid0Layout, Raid10Layout, SUPERBLOCK_OFFSET_BYTES, Superblock,
    SuperblockError, default_component_sectors, default_data_offset_sectors_for_chunk, format_uuid,
    usable_data_sectors,
};

const IMAGE_BYTES: u64 = 64 * 1024 * 1024;
const MEMBER_SECTORS: u64 = IMAGE_BYTES / 512;
const ARRAY_UUID: [u8; 16] = [
    0x3c, 0x1e, 0x55, 0x0a, 0x9b, 0x27, 0x48, 0xd2, 0x81, 0x6f, 0x07, 0xe4, 0x2a, 0xc9, 0x13, 0x5d,
];

/// Whether mdadm can be run; fails loudly under CI when it cannot.
fn mdadm_available() -> bool {
    let found = Command::new("mdadm")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "mdadm is required under CI (apt-get install mdadm)"
        );
        eprintln!("NOTICE: mdadm not found, skipping the mdadm --examine cross-check");
    }
    found
}

/// A sparse image file removed when dropped.
struct Image(PathBuf);

impl Image {
    fn with_block(block: &[u8]) -> Image {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let path = std::env::temp_dir().join(format!(
            "orion-mdadm-examine-{}-{}.img",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let file = File::create(&path).expect("create image file");
        file.set_len(IMAGE_BYTES).expect("size image file");
        file.write_all_at(block, SUPERBLOCK_OFFSET_BYTES)
            .expect("write superblock");
        Image(path)
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}

/// `mdadm --examine` of an image holding `block`, as "Key" → "value" (both trimmed).
fn examine(block: &[u8]) -> HashMap<String, String> {
    let image = Image::with_block(block);
    let out = Command::new("mdadm")
        .arg("--examine")
        .arg(&image.0)
        .output()
        .expect("run mdadm");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "mdadm --examine failed: {}\n{stdout}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter_map(|line| line.split_once(" : "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn field<'a>(report: &'a HashMap<String, String>, key: &str) -> &'a str {
    report
        .get(key)
        .map(String::as_str)
        .unwrap_or_else(|| panic!("no {key:?} in {report:#?}"))
}

/// Superblock for device `dev_number` of a fresh array of `roles.len()` devices.
fn created(
    level: Level,
    layout: u32,
    chunk_sectors: u32,
    raid_disks: u32,
    roles: &[DeviceRole],
    dev_number: u32,
) -> Superblock {
    let data_offset = default_data_offset_sectors_for_chunk(MEMBER_SECTORS, chunk_sectors);
    let spec = CreateSpec {
        level,
        layout,
        chunk_sectors,
        raid_disk_count: raid_disks,
        array_uuid: ARRAY_UUID,
        name: b"orion-test:md7",
        size_sectors: default_component_sectors(
            level,
            chunk_sectors,
            usable_data_sectors(MEMBER_SECTORS, data_offset),
        ),
        data_offset_sectors: data_offset,
        time_seconds: 1_700_000_000,
        assume_clean: false,
        roles,
    };
    let mut device_uuid = [0u8; 16];
    device_uuid[0] = 0xd0;
    device_uuid[15] = dev_number as u8;
    Superblock::new_for_create(&spec, dev_number, MEMBER_SECTORS, device_uuid).expect("valid spec")
}

/// Everything mdadm reports that we can predict from the superblock.
fn assert_examine_matches(sb: &Superblock) {
    let block = sb.encode();
    assert_eq!(
        Superblock::decode(&block).as_ref(),
        Ok(sb),
        "our own decode"
    );
    let r = examine(&block);
    assert_eq!(field(&r, "Magic"), "a92b4efc");
    assert_eq!(field(&r, "Version"), "1.2");
    assert_eq!(
        field(&r, "Feature Map"),
        format!("{:#x}", sb.features.bits())
    );
    assert_eq!(
        field(&r, "Array UUID"),
        format_uuid(&sb.array_uuid).to_string()
    );
    assert_eq!(
        field(&r, "Device UUID"),
        format_uuid(&sb.device_uuid).to_string()
    );
    assert_eq!(field(&r, "Name"), sb.name());
    assert_eq!(field(&r, "Raid Level"), sb.level.name());
    assert_eq!(field(&r, "Raid Devices"), sb.raid_disk_count.to_string());
    assert_eq!(
        field(&r, "Checksum"),
        format!("{:x} - correct", sb.checksum())
    );
    assert_eq!(field(&r, "Events"), sb.events.to_string());
    assert_eq!(
        field(&r, "Data Offset"),
        format!("{} sectors", sb.data_offset_sectors)
    );
    assert_eq!(field(&r, "Super Offset"), "8 sectors");
    assert!(field(&r, "Avail Dev Size").starts_with(&format!("{} sectors", sb.data_size_sectors)));
    assert_eq!(
        field(&r, "State"),
        if sb.is_clean() { "clean" } else { "active" }
    );
    let role = match sb.own_role() {
        DeviceRole::Active(slot) => format!("Active device {slot}"),
        // mdadm prints a faulty device's own role as "spare" too.
        DeviceRole::Spare | DeviceRole::Faulty => "spare".to_string(),
        DeviceRole::Journal => "Journal".to_string(),
    };
    assert_eq!(field(&r, "Device Role"), role);
    if sb.level.is_striped() {
        assert_eq!(
            field(&r, "Chunk Size"),
            format!("{}K", sb.chunk_sectors / 2)
        );
    }
    if let Some(layout) = sb.raid10_layout() {
        assert_eq!(field(&r, "Layout"), layout.to_string());
    }
    if let Some(layout) = sb.raid0_layout() {
        assert_eq!(field(&r, "Layout"), layout.name());
    }
    if sb.bblog_size_sectors != 0 {
        assert_eq!(
            field(&r, "Bad Block Log"),
            format!(
                "{} entries available at offset {} sectors",
                sb.bblog_size_sectors as u32 * 64,
                sb.bblog_offset_sectors
            )
        );
    }
    let state: String = (0..sb.raid_disk_count)
        .map(|slot| {
            let holders = sb.dev_roles.iter().filter(|&&r| r as u32 == slot).count();
            match holders {
                0 => '.',
                1 => 'A',
                _ => 'R',
            }
        })
        .collect();
    assert!(field(&r, "Array State").starts_with(&state), "{state}");
}

fn actives(n: u16) -> Vec<DeviceRole> {
    (0..n).map(DeviceRole::Active).collect()
}

#[test]
fn raid0_superblock_examines_correct() {
    if !mdadm_available() {
        return;
    }
    for dev in 0..3 {
        assert_examine_matches(&created(
            Level::Raid0,
            Raid0Layout::Original.raw(),
            1024,
            3,
            &actives(3),
            dev,
        ));
    }
    assert_examine_matches(&created(
        Level::Raid0,
        Raid0Layout::Alternate.raw(),
        128,
        2,
        &actives(2),
        1,
    ));
}

#[test]
fn raid1_superblock_examines_correct() {
    if !mdadm_available() {
        return;
    }
    let roles = [
        DeviceRole::Active(0),
        DeviceRole::Active(1),
        DeviceRole::Spare,
    ];
    for dev in 0..3 {
        assert_examine_matches(&created(Level::Raid1, 0, 0, 2, &roles, dev));
    }
}

#[test]
fn raid10_superblocks_examine_correct() {
    if !mdadm_available() {
        return;
    }
    for layout in [
        Raid10Layout::NEAR2,
        Raid10Layout::far(2),
        Raid10Layout::offset(2),
    ] {
        for dev in [0, 3] {
            assert_examine_matches(&created(
                Level::Raid10,
                layout.raw(),
                1024,
                4,
                &actives(4),
                dev,
            ));
        }
    }
}

#[test]
fn degraded_and_updated_superblock_examines_correct() {
    if !mdadm_available() {
        return;
    }
    // A raid5 with slot 2 missing, one member failed later, events moved on.
    let roles = [
        DeviceRole::Active(0),
        DeviceRole::Active(1),
        DeviceRole::Spare,
        DeviceRole::Active(3),
    ];
    let mut sb = created(Level::Raid5, 2, 1024, 4, &roles, 0);
    sb.mark_faulty(1).unwrap();
    for _ in 0..41 {
        sb.bump_events();
    }
    sb.resync_offset_sectors = u64::MAX;
    assert_examine_matches(&sb);
    let r = examine(&sb.encode());
    assert!(field(&r, "Array State").starts_with("A..A"));
}

/// mdadm and we agree on the checksum of a block whose stored checksum is wrong.
#[test]
fn mdadm_and_decode_agree_on_a_bad_checksum() {
    if !mdadm_available() {
        return;
    }
    let mut block = created(Level::Raid1, 0, 0, 2, &actives(2), 0).encode();
    block[216] ^= 0x10;
    let Err(SuperblockError::ChecksumMismatch { stored, computed }) = Superblock::decode(&block)
    else {
        panic!("corrupt checksum accepted");
    };
    let r = examine(&block);
    assert_eq!(
        field(&r, "Checksum"),
        format!("{stored:x} - expected {computed:x}")
    );
}

/// The golden superblock pinned in the unit tests is one mdadm finds correct.
#[test]
fn golden_raid1_superblock_is_correct_for_mdadm() {
    if !mdadm_available() {
        return;
    }
    let roles = [DeviceRole::Active(0), DeviceRole::Active(1)];
    let spec = CreateSpec {
        level: Level::Raid1,
        layout: 0,
        chunk_sectors: 0,
        raid_disk_count: 2,
        array_uuid: [
            0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54,
            0x32, 0x10,
        ],
        name: b"golden",
        size_sectors: 129_024,
        data_offset_sectors: 2048,
        time_seconds: 1_700_000_000,
        assume_clean: false,
        roles: &roles,
    };
    let sb = Superblock::new_for_create(&spec, 0, MEMBER_SECTORS, [0x5a; 16]).unwrap();
    assert_eq!(sb.checksum(), 0x41b6_70cf);
    assert_examine_matches(&sb);
}
