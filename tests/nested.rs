//! RAID 50 and RAID 60 through the `raid` binary: create, `mdadm --examine` of both layers
//! (the members' group superblocks and the outer superblock in each group's data), and
//! `raid serve` with real NBD clients — stopped, served again, and served degraded.

use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

mod common;
use common::{Server, array_in, ok, qemu_io, raid, status_json, test_dir, tool};

/// `Key : value` lines of mdadm's (or our) examine output.
fn field(text: &str, key: &str) -> String {
    text.lines()
        .filter_map(|l| l.split_once(" : "))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_else(|| panic!("no '{key}' in: {text}"))
}

fn members(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|i| format!("{prefix}{i}.img")).collect()
}

fn create(dir: &Path, level: &str, groups: usize, name: &str, names: &[String]) {
    let groups = groups.to_string();
    let mut args = vec![
        "create", "--level", level, "--groups", &groups, "--chunk", "64K", "--size", "64M",
        "--name", name,
    ];
    args.extend(names.iter().map(String::as_str));
    let text = ok(&raid(&args, dir));
    assert!(
        text.contains(&format!("raid{level} array '{name}'")),
        "{text}"
    );
}

/// Examines every member (group superblocks) and the outer superblock found 4 KiB into
/// each group's data, with mdadm when installed and with `raid examine` always.
fn check_layers(dir: &Path, name: &str, names: &[String], groups: usize, group_level: &str) {
    let per_group = names.len() / groups;
    let mdadm = tool("mdadm");
    let examine = |file: &str| -> Vec<String> {
        let mut texts = vec![ok(&raid(&["examine", file], dir))];
        if let Some(m) = mdadm {
            let out = Command::new(m)
                .args(["--examine", file])
                .current_dir(dir)
                .output()
                .unwrap();
            texts.push(ok(&out));
        }
        texts
    };
    let mut outer_uuid: Option<String> = None;
    for g in 0..groups {
        let mut group_uuid: Option<String> = None;
        for r in 0..per_group {
            let member = &names[g * per_group + r];
            for text in examine(member) {
                assert!(field(&text, "Checksum").ends_with("- correct"), "{text}");
                assert_eq!(field(&text, "Raid Level"), group_level, "{text}");
                assert_eq!(field(&text, "Raid Devices"), per_group.to_string());
                assert!(field(&text, "Name").ends_with(&format!("{name}-g{g}")));
                assert_eq!(field(&text, "Device Role"), format!("Active device {r}"));
                assert_eq!(field(&text, "State"), "clean");
                let u = field(&text, "Array UUID");
                assert_eq!(group_uuid.get_or_insert(u.clone()), &u);
            }
        }
        // The group's data starts on its first member (left-symmetric puts chunk 0 there):
        // its first chunk holds the outer superblock at 4 KiB.
        let first = &names[g * per_group];
        let text = ok(&raid(&["examine", first], dir));
        let data_offset: u64 = field(&text, "Data Offset")
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        let mut chunk = vec![0u8; 64 << 10];
        std::fs::File::open(dir.join(first))
            .unwrap()
            .read_exact_at(&mut chunk, data_offset * 512)
            .unwrap();
        let extracted = format!("{name}-g{g}-data.bin");
        std::fs::write(dir.join(&extracted), &chunk).unwrap();
        for text in examine(&extracted) {
            assert!(field(&text, "Checksum").ends_with("- correct"), "{text}");
            assert_eq!(field(&text, "Raid Level"), "raid0", "{text}");
            assert_eq!(field(&text, "Raid Devices"), groups.to_string());
            assert!(field(&text, "Name").ends_with(name));
            assert_eq!(field(&text, "Device Role"), format!("Active device {g}"));
            assert_eq!(field(&text, "Chunk Size"), "64K");
            assert_eq!(field(&text, "State"), "clean");
            let u = field(&text, "Array UUID");
            assert_eq!(outer_uuid.get_or_insert(u.clone()), &u);
            assert_ne!(Some(&u), group_uuid.as_ref());
        }
        std::fs::remove_file(dir.join(&extracted)).unwrap();
    }
}

#[test]
fn create_raid50_and_raid60_and_examine_both_layers() {
    let dir = test_dir("nested-examine");
    let m50 = members("a", 6);
    create(&dir, "50", 2, "five", &m50);
    check_layers(&dir, "five", &m50, 2, "raid5");
    let m60 = members("b", 12);
    create(&dir, "60", 3, "six", &m60);
    check_layers(&dir, "six", &m60, 3, "raid6");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn nested_create_refuses_bad_groupings_and_touches_nothing() {
    let dir = test_dir("nested-refuse");
    let cases: &[(&[&str], &str)] = &[
        (&["--level", "50"], "needs --groups"),
        (
            &["--level", "50", "--groups", "3"],
            "cannot be split into 3",
        ),
        (
            &["--level", "50", "--groups", "4"],
            "at least 3 members per group",
        ),
        (
            &["--level", "60", "--groups", "4"],
            "at least 4 members per group",
        ),
        (&["--level", "50", "--groups", "1"], "at least 2 groups"),
        (
            &["--level", "5", "--groups", "2"],
            "--groups is for levels 50 and 60",
        ),
        (&["--level", "70"], "levels: 0, 1, 4, 5, 6, 10, 50, 60"),
    ];
    for (level_args, expect) in cases {
        let mut args = vec!["create", "--size", "64M"];
        args.extend_from_slice(level_args);
        args.extend([
            "m0.img", "m1.img", "m2.img", "m3.img", "m4.img", "m5.img", "m6.img", "m7.img",
        ]);
        let out = raid(&args, &dir);
        let text = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(2), "{level_args:?}: {text}");
        assert!(text.contains(expect), "{level_args:?}: {text}");
        assert!(
            !dir.join("m0.img").exists(),
            "nothing created for {level_args:?}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Writes spanning chunks and both groups, at offsets that land in every group.
const WRITES: &[&str] = &[
    "write -P 0xa5 0 1M",
    "write -P 0x5a 1M 320k",
    "write -P 0x3c 100M 64k",
    "write -P 0xc3 150M 1500k",
];
const READS: &[&str] = &[
    "read -P 0xa5 0 1M",
    "read -P 0x5a 1M 320k",
    "read -P 0x3c 100M 64k",
    "read -P 0xc3 150M 1500k",
];

#[test]
fn serve_raid50_and_raid60_stop_serve_again_and_degraded() {
    let dir = test_dir("nested-serve");
    let m50 = members("f", 6);
    let m60 = members("s", 8);
    create(&dir, "50", 2, "r50", &m50);
    create(&dir, "60", 2, "r60", &m60);
    let all: Vec<String> = m50.iter().chain(&m60).cloned().collect();
    let qemu = tool("qemu-io").is_some();

    let server = Server::start(&dir, &all);
    let status = status_json(&dir);
    let outer = array_in(&status, "r50");
    assert_eq!(outer["level"], "raid50");
    assert_eq!(outer["state"], "optimal");
    assert!(outer.get("parent").is_none());
    assert_eq!(outer["members"][1]["path"], "r50-g1");
    assert_eq!(array_in(&status, "r60")["level"], "raid60");
    let g = array_in(&status, "r60-g1");
    assert_eq!(g["parent"], "r60");
    assert_eq!(g["level"], "raid6");
    assert_eq!(g["members"][3]["path"], "s7.img");
    let text = ok(&raid(&["status", "--control", "ctl.sock"], &dir));
    assert!(
        text.contains("r50 : optimal raid50 r50-g0[0] r50-g1[1]"),
        "{text}"
    );
    assert!(text.contains("(group of r50, not exported)"), "{text}");
    let detail = ok(&raid(&["detail", "r60", "--control", "ctl.sock"], &dir));
    assert_eq!(field(&detail, "Raid Level"), "raid60");
    let refused = raid(&["stop", "r50-g0", "--control", "ctl.sock"], &dir);
    assert_eq!(refused.status.code(), Some(1));
    if let Some(info) = tool("nbdinfo") {
        let out = Command::new(info)
            .args(["--list", "--json", &server.uri("")])
            .output()
            .unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let mut names: Vec<&str> = v["exports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["export-name"].as_str().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["r50", "r60"], "only outer arrays are exported");
    }
    if qemu {
        for export in ["r50", "r60"] {
            qemu_io(&server.uri(export), WRITES);
            qemu_io(&server.uri(export), READS);
        }
    }
    server.stop();
    let ex = ok(&raid(&["examine", "f0.img", "s7.img"], &dir));
    assert_eq!(ex.matches("State : clean").count(), 2, "{ex}");

    // Served again, the images found by --scan.
    let server = Server::start(&dir, &["--scan".to_string(), ".".to_string()]);
    let detail = ok(&raid(&["detail", "r50-g1", "--control", "ctl.sock"], &dir));
    assert_eq!(field(&detail, "Group Of"), "r50");
    assert_eq!(field(&detail, "Raid Level"), "raid5");
    if qemu {
        for export in ["r50", "r60"] {
            qemu_io(&server.uri(export), READS);
        }
    }
    server.stop();

    // One member image missing per RAID 50 group, two per RAID 60 group.
    let missing = ["f1.img", "f3.img", "s0.img", "s2.img", "s5.img", "s6.img"];
    let degraded: Vec<String> = all
        .iter()
        .filter(|m| !missing.contains(&m.as_str()))
        .cloned()
        .collect();
    let server = Server::start(&dir, &degraded);
    let status = status_json(&dir);
    for name in ["r50", "r60", "r50-g0", "r50-g1", "r60-g0", "r60-g1"] {
        assert_eq!(array_in(&status, name)["state"], "degraded", "{name}");
    }
    if qemu {
        for export in ["r50", "r60"] {
            qemu_io(&server.uri(export), READS);
        }
    }
    // `raid stop` of an outer array stops its groups too.
    ok(&raid(&["stop", "r50", "--control", "ctl.sock"], &dir));
    let status = status_json(&dir);
    let names: Vec<&str> = status["arrays"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["r60", "r60-g0", "r60-g1"]);
    server.stop();
    std::fs::remove_dir_all(&dir).unwrap();
}
