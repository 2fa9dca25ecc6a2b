//! The `raid` binary: `create` and `examine`, checked independently by Linux's `mdadm
//! --examine`, and bad command lines.

use std::process::Command;

mod common;
use common::{raid, test_dir, text_of, tool};

/// `Key : value` lines of mdadm's output.
fn fields(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.split_once(" : "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn field<'a>(f: &'a [(String, String)], key: &str) -> &'a str {
    f.iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("no '{key}' in mdadm output: {f:?}"))
}

struct Case {
    level: &'static str,
    layout: Option<&'static str>,
    members: usize,
    chunk: &'static str,
    md_level: &'static str,
    md_layout: Option<&'static str>,
    md_chunk: Option<&'static str>,
}

fn check_case(case: &Case) {
    let dir = test_dir(&format!(
        "cli-{}-{}",
        case.level,
        case.layout.unwrap_or("default")
    ));
    let names: Vec<String> = (0..case.members).map(|i| format!("m{i}.img")).collect();
    let mut args = vec!["create", "--level", case.level, "--chunk", case.chunk];
    if let Some(l) = case.layout {
        args.extend(["--layout", l]);
    }
    args.extend(["--size", "64M", "--name", "cross"]);
    args.extend(names.iter().map(String::as_str));
    let out = raid(&args, &dir);
    assert!(
        out.status.success(),
        "create failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Our own examine reads every member back.
    let mut ex = vec!["examine"];
    ex.extend(names.iter().map(String::as_str));
    let out = raid(&ex, &dir);
    assert!(out.status.success());
    let ours = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(ours.matches("Checksum").count(), case.members);

    let Some(mdadm) = tool("mdadm") else { return };
    let mut uuid = None;
    for (role, name) in names.iter().enumerate() {
        let out = Command::new(mdadm)
            .args(["--examine", name])
            .current_dir(&dir)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(
            out.status.success(),
            "mdadm --examine {name} failed: {}{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        let f = fields(&text);
        assert_eq!(field(&f, "Magic"), "a92b4efc");
        assert_eq!(field(&f, "Version"), "1.2");
        assert!(
            field(&f, "Checksum").ends_with("- correct"),
            "checksum: {text}"
        );
        assert_eq!(field(&f, "Raid Level"), case.md_level);
        assert_eq!(field(&f, "Raid Devices"), case.members.to_string());
        assert!(field(&f, "Name").ends_with("cross"));
        if let Some(layout) = case.md_layout {
            assert_eq!(field(&f, "Layout"), layout);
        }
        if let Some(chunk) = case.md_chunk {
            assert_eq!(field(&f, "Chunk Size"), chunk);
        }
        assert_eq!(field(&f, "Device Role"), format!("Active device {role}"));
        assert_eq!(
            field(&f, "Array State").split(' ').next().unwrap(),
            "A".repeat(case.members)
        );
        let this_uuid = field(&f, "Array UUID").to_string();
        // Ours prints the same UUID.
        assert!(ours.contains(&this_uuid));
        match &uuid {
            None => uuid = Some(this_uuid),
            Some(u) => assert_eq!(u, &this_uuid, "all members carry one array UUID"),
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn mdadm_examines_raid0_members() {
    check_case(&Case {
        level: "0",
        layout: None,
        members: 3,
        chunk: "64K",
        md_level: "raid0",
        md_layout: Some("original"),
        md_chunk: Some("64K"),
    });
}

#[test]
fn mdadm_examines_raid1_members() {
    check_case(&Case {
        level: "1",
        layout: None,
        members: 3,
        chunk: "512K",
        md_level: "raid1",
        md_layout: None,
        md_chunk: None,
    });
}

#[test]
fn mdadm_examines_raid10_layouts() {
    for (layout, md) in [("n2", "near=2"), ("f2", "far=2"), ("o2", "offset=2")] {
        check_case(&Case {
            level: "10",
            layout: Some(layout),
            members: 4,
            chunk: "512K",
            md_level: "raid10",
            md_layout: Some(md),
            md_chunk: Some("512K"),
        });
    }
}

#[test]
fn mdadm_examines_raid5_layouts() {
    for layout in ["left-symmetric", "right-asymmetric", "parity-first"] {
        check_case(&Case {
            level: "5",
            layout: Some(layout),
            members: 4,
            chunk: "64K",
            md_level: "raid5",
            md_layout: Some(layout),
            md_chunk: Some("64K"),
        });
    }
    // No layout given: mdadm's default.
    check_case(&Case {
        level: "raid5",
        layout: None,
        members: 3,
        chunk: "512K",
        md_level: "raid5",
        md_layout: Some("left-symmetric"),
        md_chunk: Some("512K"),
    });
}

#[test]
fn mdadm_examines_raid6_layouts() {
    for layout in ["left-symmetric", "right-symmetric", "left-symmetric-6"] {
        check_case(&Case {
            level: "6",
            layout: Some(layout),
            members: 5,
            chunk: "128K",
            md_level: "raid6",
            md_layout: Some(layout),
            md_chunk: Some("128K"),
        });
    }
}

#[test]
fn mdadm_examines_raid4_members() {
    check_case(&Case {
        level: "4",
        layout: None,
        members: 4,
        chunk: "64K",
        md_level: "raid4",
        md_layout: None,
        md_chunk: Some("64K"),
    });
}

#[test]
fn wrong_arguments_exit_with_status_2_and_touch_nothing() {
    let dir = test_dir("cli-badargs");
    for args in [
        vec!["create", "--level", "7", "--size", "8M", "a.img", "b.img"],
        vec![
            "create", "--level", "1", "--chunk", "3K", "--size", "8M", "a.img", "b.img",
        ],
        vec!["create", "--level", "1", "--size", "lots", "a.img", "b.img"],
        vec![
            "create", "--level", "10", "--layout", "zz9", "--size", "8M", "a.img", "b.img",
        ],
        vec!["create", "--level", "1", "a.img", "b.img"],
        vec!["create", "--level", "1", "--size", "8M", "a.img", "a.img"],
        vec!["create", "--level", "1", "--size", "8M", "a.img"],
        vec!["frobnicate"],
        vec!["examine"],
    ] {
        let out = raid(&args, &dir);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.stderr.is_empty(), "{args:?} says why");
    }
    let left: Vec<_> = std::fs::read_dir(&dir).unwrap().collect();
    assert!(
        left.is_empty(),
        "a failed create left files behind: {left:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn create_refuses_members_of_another_array_and_examine_rejects_corruption() {
    let dir = test_dir("cli-refuse");
    let out = raid(
        &["create", "--level", "1", "--size", "16M", "a.img", "b.img"],
        &dir,
    );
    assert!(out.status.success());
    let before = std::fs::read(dir.join("a.img")).unwrap();
    let out = raid(&["create", "--level", "0", "a.img", "b.img"], &dir);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already belongs"));
    assert_eq!(std::fs::read(dir.join("a.img")).unwrap(), before);

    // Flip one byte inside the checksummed superblock: examine refuses to trust it.
    let mut bytes = before.clone();
    bytes[4096 + 100] ^= 0x01;
    std::fs::write(dir.join("a.img"), &bytes).unwrap();
    let out = raid(&["examine", "a.img", "b.img"], &dir);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("a.img") && err.contains("checksum"), "{err}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("b.img"));

    // --force overwrites.
    let out = raid(
        &["create", "--force", "--level", "0", "a.img", "b.img"],
        &dir,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bench_xor_files_writes_the_xor_and_refuses_an_array_member() {
    let dir = test_dir("cli-xorfiles");
    // Three sources of 1 MiB + 4 KiB (the last cell is short).
    let size = (1 << 20) + 4096;
    let mut want = vec![0u8; size];
    for (i, name) in ["a", "b", "c"].iter().enumerate() {
        let data: Vec<u8> = (0..size)
            .map(|j| ((j as u64 * 2654435761) >> (8 + i * 5)) as u8)
            .collect();
        for (w, b) in want.iter_mut().zip(&data) {
            *w ^= b;
        }
        std::fs::write(dir.join(name), &data).unwrap();
    }
    let out = raid(
        &[
            "bench",
            "xor-files",
            "--json",
            "--cell",
            "64K",
            "--into",
            "t",
            "a",
            "b",
            "c",
        ],
        &dir,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = String::from_utf8_lossy(&out.stdout);
    assert!(
        line.contains("\"op\":\"xor_files\"") && line.contains(&format!("\"bytes\":{size}")),
        "{line}"
    );
    assert!(std::fs::read(dir.join("t")).unwrap() == want, "the xor");

    // A member of an array is not written over; wrong arguments exit 2; nothing changes.
    let out = raid(
        &["create", "--level", "1", "--size", "8M", "m0.img", "m1.img"],
        &dir,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let member = std::fs::read(dir.join("m0.img")).unwrap();
    let out = raid(&["bench", "xor-files", "--into", "m0.img", "a", "b"], &dir);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("md superblock"));
    assert!(std::fs::read(dir.join("m0.img")).unwrap() == member);
    // Also when the superblock's checksum is wrong.
    let mut damaged = member.clone();
    damaged[4096 + 100] ^= 1;
    std::fs::write(dir.join("m0.img"), &damaged).unwrap();
    let out = raid(&["bench", "xor-files", "--into", "m0.img", "a", "b"], &dir);
    assert_eq!(out.status.code(), Some(1));
    assert!(std::fs::read(dir.join("m0.img")).unwrap() == damaged);
    let source_a = std::fs::read(dir.join("a")).unwrap();
    for args in [
        vec!["bench", "xor-files", "--cell", "100", "--into", "u", "a"],
        vec!["bench", "xor-files", "--cell", "0", "--into", "u", "a"],
        vec!["bench", "xor-files", "--cell", "2G", "--into", "u", "a"],
        vec!["bench", "xor-files", "--threads", "0", "--into", "u", "a"],
        vec!["bench", "xor-files", "--into", "a", "a", "b"],
        vec!["bench", "xor-files", "--into", "u"],
    ] {
        let out = raid(&args, &dir);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(!out.stderr.is_empty(), "{args:?} says why");
    }
    // A source by another spelling of its path is not a target either.
    let out = raid(&["bench", "xor-files", "--into", "./a", "a", "b"], &dir);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("would overwrite"));
    assert!(
        std::fs::read(dir.join("a")).unwrap() == source_a,
        "the source untouched"
    );
    // Sources of different sizes: an error, and no target appears.
    std::fs::write(dir.join("short"), vec![0u8; 4096]).unwrap();
    let out = raid(&["bench", "xor-files", "--into", "u", "a", "short"], &dir);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("one size"));
    assert!(!dir.join("u").exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn serve_rejects_a_bad_max_concurrent_jobs() {
    let dir = test_dir("cli-max-jobs");
    let out = raid(&["serve", "--max-concurrent-jobs", "many", "x.img"], &dir);
    assert!(!out.status.success());
    assert!(
        text_of(&out).contains("--max-concurrent-jobs"),
        "{}",
        text_of(&out)
    );
    let _ = std::fs::remove_dir_all(&dir);
}
