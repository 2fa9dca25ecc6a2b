//! Failures, spares and rebuild through the host tool: a live `raid serve` on image files,
//! data written and checked with qemu-io, members failed with `raid fail` up to the level's
//! tolerance, spares added with `raid add`; then a slow (rate-limited) rebuild stopped with
//! SIGTERM in the middle resumes from its checkpoint when served again.

use std::path::Path;
use std::time::{Duration, Instant};

use orion_raid::metadata::FeatureMap;

mod common;
use common::{
    Server, first_array_status, have, member_cmd, ok, raid, superblock_of, verify_pieces,
    write_pieces,
};

/// The data written: (offset, length, pattern byte).
const PIECES: &[(u64, u64, u8)] = &[
    (0, 4 << 20, 0xa1),
    (5 << 20, 3 << 20, 0xb2),
    (12 << 20, 1 << 20, 0xc3),
];

fn wait_optimal(dir: &Path) {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let a = first_array_status(dir);
        if a["state"] == "optimal" && a["job"].is_null() {
            return;
        }
        assert!(Instant::now() < deadline, "no rebuild to optimal: {a}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `fail` lists members to fail (up to the tolerance).
fn scenario(level: &str, count: usize, fail: &[usize]) {
    if !have("qemu-io") {
        eprintln!("notice: qemu-io not installed, skipping");
        return;
    }
    let dir = std::env::temp_dir().join(format!("orion-rebuild-{level}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let members: Vec<String> = (0..count).map(|i| format!("m{i}.img")).collect();
    let mut args: Vec<&str> = vec![
        "create", "--level", level, "--chunk", "64K", "--size", "32M", "--name", "a",
    ];
    args.extend(members.iter().map(String::as_str));
    ok(&raid(&args, &dir));
    let spares: Vec<String> = (0..fail.len() + 1).map(|i| format!("s{i}.img")).collect();
    for s in &spares {
        std::fs::File::create(dir.join(s))
            .unwrap()
            .set_len(32 << 20)
            .unwrap();
    }
    let member_refs: Vec<&str> = members.iter().map(String::as_str).collect();
    let server = Server::start(&dir, &member_refs);
    let uri = server.uri("");
    write_pieces(&uri, PIECES);

    // Fail up to the tolerance: degraded, data intact.
    for &i in fail {
        member_cmd(&dir, "fail", "a", &members[i]);
    }
    let a = first_array_status(&dir);
    assert_eq!(a["state"], "degraded", "{a}");
    for &i in fail {
        assert_eq!(a["members"][i]["state"], "faulty", "{a}");
    }
    verify_pieces(&uri, PIECES);
    // One more is refused.
    let survivors: Vec<usize> = (0..count).filter(|i| !fail.contains(i)).collect();
    let refused = raid(
        &["fail", "a", &members[survivors[0]], "--control", "ctl.sock"],
        &dir,
    );
    assert!(!refused.status.success(), "failing past the tolerance");
    // Spares: rebuilt without further commands.
    for (k, &i) in fail.iter().enumerate() {
        member_cmd(&dir, "remove", "a", &members[i]);
        member_cmd(&dir, "add", "a", &spares[k]);
    }
    wait_optimal(&dir);
    let a = first_array_status(&dir);
    for &i in fail {
        assert!(
            a["members"][i]["path"]
                .as_str()
                .unwrap()
                .ends_with(&format!(
                    "s{}.img",
                    fail.iter().position(|&f| f == i).unwrap()
                )),
            "{a}"
        );
    }
    verify_pieces(&uri, PIECES);

    // A slow rebuild stopped in the middle resumes from its checkpoint.
    ok(&raid(
        &[
            "set",
            "a",
            "rebuild_rate_mb_s=4",
            "rebuild_priority=low",
            "--control",
            "ctl.sock",
        ],
        &dir,
    ));
    let victim = survivors[0];
    member_cmd(&dir, "fail", "a", &members[victim]);
    let last_spare = spares.last().unwrap();
    member_cmd(&dir, "add", "a", last_spare);
    std::thread::sleep(Duration::from_millis(1500));
    // Foreground writes while it rebuilds.
    let during = [(13 << 20, 1 << 20, 0xd4u8), (1 << 20, 64 << 10, 0xe5)];
    write_pieces(&uri, &during);
    let a = first_array_status(&dir);
    assert_eq!(a["job"]["kind"], "recovery", "{a}");
    let progress = a["members"][victim]["rebuilt"].as_f64().unwrap();
    assert!(progress > 0.0 && progress < 1.0, "{a}");
    server.stop();
    let sb = superblock_of(&dir.join(last_spare));
    assert!(sb.features.contains(FeatureMap::RECOVERY_OFFSET));
    let checkpoint = sb.recovery_offset_sectors;
    assert!(checkpoint > 0, "a checkpoint was written at the stop");

    let mut all: Vec<&str> = member_refs.clone();
    all.extend(spares.iter().map(String::as_str));
    let server = Server::start(&dir, &all);
    let uri = server.uri("");
    let a = first_array_status(&dir);
    if let Some(done) = a["members"][victim]["rebuilt"].as_f64() {
        assert!(done > 0.0, "resumes, not from zero: {a}");
    }
    wait_optimal(&dir);
    let mut expect: Vec<(u64, u64, u8)> = PIECES.to_vec();
    expect[0] = (0, 1 << 20, 0xa1);
    expect.push(((1 << 20) + (64 << 10), (3 << 20) - (64 << 10), 0xa1));
    expect.extend_from_slice(&during);
    verify_pieces(&uri, &expect);
    // The rebuilt member alone (the others failed up to the tolerance) has the data too.
    let others: Vec<usize> = (0..count)
        .filter(|&i| i != victim)
        .take(fail.len())
        .collect();
    for &i in &others {
        let path = first_array_status(&dir)["members"][i]["path"]
            .as_str()
            .unwrap()
            .to_string();
        member_cmd(&dir, "fail", "a", &path);
    }
    verify_pieces(&uri, &expect);
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn raid1_fail_add_rebuild_resume() {
    scenario("1", 2, &[1]);
}

#[test]
fn raid5_fail_add_rebuild_resume() {
    scenario("5", 3, &[1]);
}

#[test]
fn raid6_fail_add_rebuild_resume() {
    scenario("6", 4, &[0, 2]);
}

#[test]
fn raid10_fail_add_rebuild_resume() {
    scenario("10", 4, &[0, 2]);
}
