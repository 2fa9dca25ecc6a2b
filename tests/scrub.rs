//! `raid check` / `raid repair` through the host tool: RAID5 and RAID6 on image files written
//! with qemu-io, blocks of one member image corrupted while the server is stopped (placed with
//! the library's layout module), then found (RAID6 names the member), repaired and re-checked.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use orion_raid::layout::{MemberRole, ParityLevel, Raid5Layout};
use orion_raid::metadata::{Level, Superblock};

mod common;
use common::{Server, have, nbd_uri, ok, qemu_io, raid};

/// Waits until no background job (an initial resync) runs.
fn wait_idle(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let status = ok(&raid(&["status", "--json", "--control", "ctl.sock"], dir));
        let v: serde_json::Value = serde_json::from_str(status.trim()).unwrap();
        let a = &v["arrays"][0];
        if a["job"].is_null() && a["needs_resync"] == false {
            return;
        }
        assert!(Instant::now() < deadline, "background job did not end: {a}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn scrub(dir: &Path, what: &str, name: &str) -> serde_json::Value {
    let out = ok(&raid(
        &[what, name, "--wait", "--json", "--control", "ctl.sock"],
        dir,
    ));
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"))
}

/// The member's superblock, and the array's parity layout from it.
fn layout_of(image: &Path) -> (Superblock, Raid5Layout) {
    let bytes = std::fs::read(image).unwrap();
    let sb = Superblock::decode(&bytes[4096..8192]).unwrap();
    let level = match sb.level {
        Level::Raid5 => ParityLevel::Raid5,
        Level::Raid6 => ParityLevel::Raid6,
        other => panic!("not a parity level: {other}"),
    };
    let layout = Raid5Layout::new(
        level,
        sb.raid_disk_count as usize,
        sb.layout,
        sb.chunk_sectors,
        sb.size_sectors,
    )
    .unwrap();
    (sb, layout)
}

/// Overwrites `sectors` sectors of a member image at data sector `sector` with junk.
fn corrupt(image: &Path, data_offset: u64, sector: u64, sectors: u64) {
    use std::io::{Seek, SeekFrom, Write};
    let mut f = std::fs::OpenOptions::new().write(true).open(image).unwrap();
    f.seek(SeekFrom::Start((data_offset + sector) * 512))
        .unwrap();
    f.write_all(&vec![0xee; sectors as usize * 512]).unwrap();
}

fn run(level: &str, count: usize) {
    if !have("qemu-io") {
        return;
    }
    let dir: PathBuf =
        std::env::temp_dir().join(format!("orion-scrub-{level}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let name = format!("s{level}");
    let members: Vec<String> = (0..count).map(|i| format!("m{i}.img")).collect();
    let mut args = vec![
        "create", "--level", level, "--chunk", "64K", "--size", "24M", "--name", &name,
    ];
    args.extend(members.iter().map(String::as_str));
    ok(&raid(&args, &dir));

    // Data: a distinct pattern per 512 KiB over the first 6 MiB.
    let writes: Vec<String> = (0..12)
        .map(|i| format!("write -P {} {}k 512k", 0x10 + i, i * 512))
        .collect();
    let reads: Vec<String> = (0..12)
        .map(|i| format!("read -P {} {}k 512k", 0x10 + i, i * 512))
        .collect();
    let server = Server::start(&dir, &members);
    wait_idle(&dir);
    qemu_io(&nbd_uri(&dir, ""), &writes);
    let clean = scrub(&dir, "check", &name);
    assert_eq!(clean["mismatched_sectors"], 0, "{clean}");
    server.stop();

    // Corrupt one member: for RAID5 two of its parity blocks (the data stays right, so it
    // must read back right after repair), for RAID6 a data block, P and Q.
    let victim = 1usize;
    let image = dir.join(&members[victim]);
    let (sb, l) = layout_of(&image);
    let role_stripe = |want: fn(MemberRole) -> bool, from: u64| {
        (from..l.stripe_count())
            .find(|&s| want(l.member_role(s, victim)))
            .unwrap()
    };
    let is_p = |r| r == MemberRole::P;
    let is_q = |r| r == MemberRole::Q;
    let is_data = |r| matches!(r, MemberRole::Data { .. });
    let mut expected: Vec<(u64, &str)> = Vec::new();
    let s1 = role_stripe(is_p, 2);
    let s2 = role_stripe(if count == 4 { is_p } else { is_q }, s1 + 1);
    expected.push((s1, "p"));
    expected.push((s2, if count == 4 { "p" } else { "q" }));
    if level == "6" {
        let s3 = role_stripe(is_data, s2 + 1);
        expected.push((s3, "data"));
    }
    expected.sort();
    for &(stripe, _) in &expected {
        // 16 sectors = two compare units, from the second sector of the chunk.
        corrupt(
            &image,
            sb.data_offset_sectors,
            l.member_sector(stripe, 1),
            16,
        );
    }
    // Every corrupted stripe holds written data.
    assert!(
        expected
            .iter()
            .all(|&(s, _)| (s + 1) * l.stripe_data_sectors() <= 6 * 2048)
    );

    let server = Server::start(&dir, &members);
    wait_idle(&dir);
    let report = scrub(&dir, "check", &name);
    let units = 3 * 8; // sectors 1..17 of the chunk touch three 4 KiB units
    assert_eq!(
        report["mismatched_sectors"],
        (expected.len() * units) as u64,
        "{report}"
    );
    let regions = report["bad_regions"].as_array().unwrap();
    let stripes: Vec<u64> = regions
        .iter()
        .map(|r| r["stripe"].as_u64().unwrap())
        .collect();
    let mut want: Vec<u64> = expected.iter().map(|e| e.0).collect();
    want.dedup();
    let mut got = stripes.clone();
    got.dedup();
    assert_eq!(got, want, "{report}");
    if level == "6" {
        for r in regions {
            let stripe = r["stripe"].as_u64().unwrap();
            let kind = expected.iter().find(|e| e.0 == stripe).unwrap().1;
            assert_eq!(r["wrong"]["slot"], victim as u64, "{r}");
            assert_eq!(r["wrong"]["name"], members[victim], "{r}");
            assert_eq!(r["wrong"]["block"], kind, "{r}");
        }
        let text = ok(&raid(&["detail", &name, "--control", "ctl.sock"], &dir));
        assert!(
            text.contains(&format!("wrong member {} [{victim}]", members[victim])),
            "{text}"
        );
    }
    let status = ok(&raid(&["status", "--json", "--control", "ctl.sock"], &dir));
    let v: serde_json::Value = serde_json::from_str(status.trim()).unwrap();
    assert_eq!(v["arrays"][0]["mismatches"], report["mismatched_sectors"]);

    let repaired = scrub(&dir, "repair", &name);
    assert_eq!(repaired["repaired_sectors"], report["mismatched_sectors"]);
    let after = scrub(&dir, "check", &name);
    assert_eq!(after["mismatched_sectors"], 0, "{after}");
    assert_eq!(after["bad_regions"].as_array().unwrap().len(), 0);
    qemu_io(&nbd_uri(&dir, ""), &reads);
    server.stop();

    // The repair is on disk: served again, a check is still clean.
    let server = Server::start(&dir, &members);
    wait_idle(&dir);
    assert_eq!(scrub(&dir, "check", &name)["mismatched_sectors"], 0);
    qemu_io(&nbd_uri(&dir, ""), &reads);
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn raid5_check_finds_and_repair_fixes_corrupt_parity() {
    run("5", 4);
}

#[test]
fn raid6_check_names_the_corrupt_member_and_repair_fixes_it() {
    run("6", 5);
}

#[test]
fn check_is_refused_on_raid0_and_cancel_needs_a_scrub() {
    let dir = std::env::temp_dir().join(format!("orion-scrub-r0-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    ok(&raid(
        &[
            "create", "--level", "0", "--size", "8M", "--name", "z", "a.img", "b.img",
        ],
        &dir,
    ));
    let server = Server::start(&dir, &["a.img", "b.img"]);
    let out = raid(&["check", "z", "--control", "ctl.sock"], &dir);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("no redundancy"), "{text}");
    let out = raid(&["check", "z", "--cancel", "--control", "ctl.sock"], &dir);
    assert_eq!(out.status.code(), Some(1));
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}
