//! A real Linux kernel as the oracle for the on-disk format: the distribution's kernel boots
//! under qemu (`vm.sh` beside this file) with mdadm and the members as virtio disks.
//! Arrays go both ways — ours assembled, checked and hashed by Linux md; Linux's served by
//! us, read back and checked — and an array Linux left mid-reshape must be refused by us
//! with nothing written.
//!
//! `cargo test --test linux_md` runs the quick set (a few cases);
//! `cargo test --test linux_md -- --ignored` runs every level and layout (~12 min under TCG). Without qemu or a kernel the tests skip with a notice, except
//! under CI (`CI=true`), where that is a failure.

#[path = "../common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{Server, have, ok, raid, test_dir, text_of};
use orion_raid::array::SUPERBLOCK_SECTOR;
use orion_raid::rng::SplitMix64;

const MEMBER_BYTES: u64 = 48 << 20;
const DATA_BYTES: usize = 24 << 20;

/// Whether the VM can run here (qemu, a kernel in /boot, busybox, mdadm, nbdcopy).
fn vm_available() -> bool {
    let kernel = std::fs::read_dir("/boot")
        .map(|d| {
            d.flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-"))
        })
        .unwrap_or(false);
    if !kernel {
        assert!(
            std::env::var_os("CI").is_none(),
            "no kernel in /boot; .ci/run must install linux-image-amd64"
        );
        eprintln!("notice: no kernel in /boot, skipping the Linux md test");
        return false;
    }
    [
        "qemu-system-x86_64",
        "busybox",
        "mdadm",
        "nbdcopy",
        "sha256sum",
    ]
    .iter()
    .all(|t| have(t))
}

/// Runs `script` in the VM with `disks` as /dev/vda, /dev/vdb, ...; returns its output,
/// panicking (with the output) if it failed.
fn vm(dir: &Path, script: &str, disks: &[PathBuf]) -> String {
    let path = dir.join("guest.sh");
    std::fs::write(&path, format!("set -e\n{script}")).unwrap();
    let out = Command::new("bash")
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/linux_md/vm.sh"))
        .arg(&path)
        .args(disks)
        .output()
        .expect("run vm.sh");
    let text = text_of(&out);
    assert!(out.status.success(), "the guest failed:\n{text}");
    text
}

/// The value of `KEY=value` printed by the guest.
fn guest_value<'a>(out: &'a str, key: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("the guest printed no {key}:\n{out}"))
        .trim()
}

/// Seeded data the size of [`DATA_BYTES`], written to `data.bin` in `dir`.
fn data_file(dir: &Path, seed: u64) -> (PathBuf, Vec<u8>) {
    let mut data = vec![0u8; DATA_BYTES];
    SplitMix64::new(seed).fill(&mut data);
    let path = dir.join("data.bin");
    std::fs::write(&path, &data).unwrap();
    (path, data)
}

fn sha256(bytes: &[u8], dir: &Path) -> String {
    let path = dir.join("hash.tmp");
    std::fs::write(&path, bytes).unwrap();
    let out = Command::new("sha256sum").arg(&path).output().unwrap();
    let _ = std::fs::remove_file(&path);
    text_of(&out).split_whitespace().next().unwrap().to_string()
}

fn members(dir: &Path, count: usize) -> Vec<PathBuf> {
    (0..count)
        .map(|i| {
            let p = dir.join(format!("m{i}.img"));
            let f = std::fs::File::create(&p).unwrap();
            f.set_len(MEMBER_BYTES).unwrap();
            p
        })
        .collect()
}

/// The guest's name of the virtio disk given `index`-th to `vm.sh`.
fn guest_disk(index: usize) -> String {
    format!("/dev/vd{}", (b'a' + index as u8) as char)
}

/// The guest's names of the first `count` disks, space-separated.
fn guest_disks(count: usize) -> String {
    (0..count).map(guest_disk).collect::<Vec<_>>().join(" ")
}

fn names(paths: &[PathBuf]) -> Vec<String> {
    paths
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect()
}

/// The guest's lines that assemble the array on the first `count` disks, wait for any
/// resync, hash the data and run a check.
fn linux_check_script(count: usize) -> String {
    let devs = guest_disks(count);
    format!(
        "mdadm --assemble --run /dev/md0 {devs}\n\
         mdadm --wait /dev/md0 || true\n\
         echo SHA=$(head -c {DATA_BYTES} /dev/md0 | sha256sum | cut -d' ' -f1)\n\
         if [ -e /sys/block/md0/md/sync_action ] && [ \"$(cat /sys/block/md0/md/level)\" != raid0 ]; then\n\
           echo check > /sys/block/md0/md/sync_action; sleep 1; mdadm --wait /dev/md0 || true\n\
           echo MISMATCH=$(cat /sys/block/md0/md/mismatch_cnt)\n\
         else echo MISMATCH=0; fi\n\
         cat /proc/mdstat\n\
         mdadm --stop /dev/md0\n",
    )
}

/// Ours to Linux: `raid create` + data through NBD, a clean stop; Linux assembles it, reads
/// the same bytes and finds parity and copies consistent.
fn ours_to_linux(level: &str, layout: Option<&str>, count: usize) {
    if !vm_available() {
        return;
    }
    let case = format!("o2l-{level}-{}-{count}", layout.unwrap_or("default"));
    let dir = test_dir(&case);
    let files = members(&dir, count);
    let (data_path, data) = data_file(&dir, 17 + count as u64);
    let mut args = vec![
        "create", "--level", level, "--chunk", "64K", "--name", "ours",
    ];
    if let Some(l) = layout {
        args.extend(["--layout", l]);
    }
    let member_names = names(&files);
    args.extend(member_names.iter().map(String::as_str));
    ok(&raid(&args, &dir));
    let server = Server::start(&dir, &member_names);
    let out = Command::new("nbdcopy")
        .args(["--destination-is-zero", "--flush"])
        .arg(&data_path)
        .arg(server.uri(""))
        .output()
        .unwrap();
    assert!(out.status.success(), "{case}: nbdcopy: {}", text_of(&out));
    server.stop();
    let guest = vm(&dir, &linux_check_script(count), &files);
    assert_eq!(
        guest_value(&guest, "SHA"),
        sha256(&data, &dir),
        "{case}: Linux read other data:\n{guest}"
    );
    assert_eq!(guest_value(&guest, "MISMATCH"), "0", "{case}:\n{guest}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Linux to ours: mdadm creates the array and writes the data (from an extra virtio disk);
/// `raid serve` assembles it, returns the same bytes, and `raid check` finds nothing.
fn linux_to_ours(level: &str, layout: Option<&str>, count: usize) {
    if !vm_available() {
        return;
    }
    let case = format!("l2o-{level}-{}-{count}", layout.unwrap_or("default"));
    let dir = test_dir(&case);
    let mut disks = members(&dir, count);
    let (data_path, data) = data_file(&dir, 91 + count as u64);
    let data_dev = guest_disk(count);
    disks.push(data_path);
    let devs = guest_disks(count);
    let layout_arg = layout.map(|l| format!("--layout={l}")).unwrap_or_default();
    let chunk = if level == "1" { "" } else { "--chunk=64" };
    // mdadm refuses a bitmap option of any kind on RAID0.
    let bitmap = if level == "0" { "" } else { "--bitmap=none" };
    let script = format!(
        "mdadm --create /dev/md0 --run --metadata=1.2 --level={level} --raid-devices={count} \
         {layout_arg} {chunk} --name=linux {bitmap} {devs}\n\
         mdadm --wait /dev/md0 || true\n\
         dd if={data_dev} of=/dev/md0 bs=1M count={mib} conv=fsync 2>/dev/null\n\
         mdadm --stop /dev/md0\n\
         echo DONE=1\n",
        mib = DATA_BYTES >> 20,
    );
    let guest = vm(&dir, &script, &disks);
    assert_eq!(guest_value(&guest, "DONE"), "1");
    disks.pop();
    let member_names = names(&disks);
    let server = Server::start(&dir, &member_names);
    let copy = dir.join("out.bin");
    let out = Command::new("nbdcopy")
        .arg(server.uri(""))
        .arg(&copy)
        .output()
        .unwrap();
    assert!(out.status.success(), "{case}: nbdcopy: {}", text_of(&out));
    let read = std::fs::read(&copy).unwrap();
    assert!(
        read.len() >= DATA_BYTES,
        "{case}: export of {} bytes",
        read.len()
    );
    assert!(
        read[..DATA_BYTES] == data[..],
        "{case}: we read other data than Linux wrote"
    );
    if level != "0" {
        let name = common::first_array_status(&dir)["name"]
            .as_str()
            .unwrap()
            .to_string();
        let report = ok(&raid(
            &["check", &name, "--wait", "--json", "--control", "ctl.sock"],
            &dir,
        ));
        let v: serde_json::Value =
            serde_json::from_str(report.trim()).unwrap_or_else(|e| panic!("{case}: {e}: {report}"));
        assert_eq!(v["mismatched_sectors"], 0, "{case}: {v}");
    }
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn raid5_ours_to_linux() {
    ours_to_linux("5", None, 4);
}

#[test]
fn raid6_linux_to_ours() {
    linux_to_ours("6", None, 5);
}

#[test]
fn raid10_ours_to_linux_and_back() {
    ours_to_linux("10", Some("n2"), 4);
    linux_to_ours("10", Some("n2"), 4);
}

/// Every level and layout md has, both directions.
#[test]
#[ignore = "the full set, ~12 min: cargo test --test linux_md -- --ignored"]
fn every_level_and_layout_both_ways() {
    if !vm_available() {
        return;
    }
    let cases: &[(&str, Option<&str>, usize)] = &[
        ("0", None, 3),
        ("1", None, 2),
        ("1", None, 3),
        ("4", None, 4),
        ("5", Some("left-asymmetric"), 4),
        ("5", Some("right-asymmetric"), 4),
        ("5", Some("left-symmetric"), 4),
        ("5", Some("right-symmetric"), 4),
        ("5", Some("parity-first"), 4),
        ("5", Some("parity-last"), 4),
        ("6", Some("left-asymmetric"), 5),
        ("6", Some("right-asymmetric"), 5),
        ("6", Some("left-symmetric"), 6),
        ("6", Some("right-symmetric"), 5),
        ("6", Some("parity-first"), 5),
        ("6", Some("parity-last"), 5),
        ("6", Some("left-symmetric-6"), 5),
        ("6", Some("right-asymmetric-6"), 5),
        ("6", Some("parity-first-6"), 5),
        ("10", Some("n2"), 5),
        ("10", Some("f2"), 4),
        ("10", Some("o2"), 4),
        ("10", Some("n3"), 4),
    ];
    for &(level, layout, count) in cases {
        ours_to_linux(level, layout, count);
        linux_to_ours(level, layout, count);
    }
}

/// The reproduction of issue 17: Linux grows a RAID5 from 4 to 5 members and the machine
/// dies mid-reshape. `raid serve` must not start it (reading it with either geometry gives
/// other data), must say it is a reshape, and must write nothing to any member.
#[test]
fn interrupted_linux_reshape_is_refused_and_left_untouched() {
    if !vm_available() {
        return;
    }
    let dir = test_dir("linux-md-reshape");
    let mut disks = members(&dir, 5);
    let (data_path, _) = data_file(&dir, 5);
    disks.push(data_path);
    let script = format!(
        "mdadm --create /dev/md0 --run --level=5 --raid-devices=4 --chunk=64 --bitmap=none \
         /dev/vda /dev/vdb /dev/vdc /dev/vdd\n\
         mdadm --wait /dev/md0 || true\n\
         dd if=/dev/vdf of=/dev/md0 bs=1M count={mib} conv=fsync 2>/dev/null\n\
         echo 200 > /proc/sys/dev/raid/speed_limit_min\n\
         echo 200 > /proc/sys/dev/raid/speed_limit_max\n\
         mdadm /dev/md0 --add /dev/vde\n\
         mdadm --grow /dev/md0 --raid-devices=5 --backup-file=/tmp/md0.backup\n\
         sleep 4\n\
         cat /proc/mdstat\n\
         mdadm --examine /dev/vda | grep -i -e 'reshape' -e 'feature'\n\
         sync\n\
         echo '=== guest exit 0'\n\
         sleep 2 # the serial port drains after echo returns; a reset at once loses the line\n\
         echo 1 > /proc/sys/kernel/sysrq\n\
         echo b > /proc/sysrq-trigger\n",
        mib = DATA_BYTES >> 20,
    );
    let guest = vm(&dir, &script, &disks);
    assert!(guest.contains("Reshape"), "no reshape under way:\n{guest}");
    disks.pop();
    let before: Vec<Vec<u8>> = disks.iter().map(|d| std::fs::read(d).unwrap()).collect();
    let member_names = names(&disks);
    let mut args = vec!["serve", "--nbd-socket", "nbd.sock", "--control", "ctl.sock"];
    args.extend(member_names.iter().map(String::as_str));
    let out = raid(&args, &dir);
    let text = text_of(&out);
    assert!(
        !out.status.success(),
        "served an array mid-reshape:\n{text}"
    );
    assert!(
        text.contains("reshape"),
        "the refusal does not name the reshape:\n{text}"
    );
    assert!(text.contains("4 -> 5 members"), "{text}");
    for (d, old) in disks.iter().zip(&before) {
        assert!(
            std::fs::read(d).unwrap() == *old,
            "{} was written",
            d.display()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A Linux RAID5 with a write journal in write-back mode, stopped: `raid serve` over its
/// members and journal must not start it (the journal is not kept here and may hold writes
/// newer than the members), must say so, and must write nothing.
#[test]
fn linux_journal_array_is_refused_and_left_untouched() {
    if !vm_available() {
        return;
    }
    let dir = test_dir("linux-md-journal");
    let disks = members(&dir, 4);
    let script = "mdadm --create /dev/md0 --run --level=5 --raid-devices=3 --chunk=64 \
                  --write-journal /dev/vdd /dev/vda /dev/vdb /dev/vdc\n\
                  mdadm --wait /dev/md0 || true\n\
                  echo write-back > /sys/block/md0/md/journal_mode\n\
                  dd if=/dev/urandom of=/dev/md0 bs=4k count=256 2>/dev/null\n\
                  sync\n\
                  mdadm --stop /dev/md0\n\
                  echo DONE=1\n";
    let guest = vm(&dir, script, &disks);
    assert_eq!(guest_value(&guest, "DONE"), "1");
    let before: Vec<Vec<u8>> = disks.iter().map(|d| std::fs::read(d).unwrap()).collect();
    let member_names = names(&disks);
    let mut args = vec!["serve", "--nbd-socket", "nbd.sock", "--control", "ctl.sock"];
    args.extend(member_names.iter().map(String::as_str));
    let out = raid(&args, &dir);
    let text = text_of(&out);
    assert!(!out.status.success(), "served a journal array:\n{text}");
    assert!(
        text.contains("write journal") && text.contains("m3.img"),
        "the refusal does not name the journal:\n{text}"
    );
    for (d, old) in disks.iter().zip(&before) {
        assert!(
            std::fs::read(d).unwrap() == *old,
            "{} was written",
            d.display()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A Linux array with a consistency policy we do not maintain (`--bitmap=internal`,
/// `--consistency-policy=ppl`), written by us and then crashed (`kill -9`: the array is left
/// dirty) with one stripe's parity torn. Linux must not trust the bitmap's clean bits or the
/// PPL's old entries: it resyncs, reads our data, and a check finds parity consistent.
fn linux_policy_written_by_us_then_crashed(policy: &str) {
    if !vm_available() {
        return;
    }
    let dir = test_dir(&format!("linux-md-crash-{}", policy.replace('=', "-")));
    let disks = members(&dir, 4);
    let script = format!(
        "mdadm --create /dev/md0 --run --level=5 --raid-devices=4 --chunk=64 {policy} \
         /dev/vda /dev/vdb /dev/vdc /dev/vdd\n\
         mdadm --wait /dev/md0 || true\n\
         mdadm --detail /dev/md0 | grep -i -e consistency -e intent\n\
         dd if=/dev/urandom of=/dev/md0 bs=4k count=512 oflag=direct 2>/dev/null\n\
         mdadm --stop /dev/md0\n\
         echo DONE=1\n"
    );
    let guest = vm(&dir, &script, &disks);
    assert_eq!(guest_value(&guest, "DONE"), "1");
    let examine = |what: &str| {
        let out = ok(&raid(&["examine", &names(&disks)[3]], &dir));
        eprintln!("{policy} {what}: {out}");
        out
    };
    if policy.contains("ppl") {
        // Linux's partial-stripe writes left entries in the log; our reading of md's header
        // format (checksum, signature) must accept the header Linux wrote.
        let linux = examine("after Linux");
        assert!(linux.contains("PPL :"), "{linux}");
        assert!(!linux.contains("no valid header"), "{linux}");
    }
    let (data_path, data) = data_file(&dir, 3);
    let member_names = names(&disks);
    let server = Server::start(&dir, &member_names);
    let out = Command::new("nbdcopy")
        .arg("--flush")
        .arg(&data_path)
        .arg(server.uri(""))
        .output()
        .unwrap();
    assert!(out.status.success(), "nbdcopy: {}", text_of(&out));
    drop(server); // kill -9: no clean shutdown
    if policy.contains("ppl") {
        // Left dirty: the superblocks record no log (we did not keep it), and the log area
        // (md's place, 8 sectors past the superblock) was emptied before our first write,
        // as md empties it when it starts the array.
        let ours = examine("after us");
        assert!(!ours.contains("PPL :"), "{ours}");
        let sb = common::superblock_of(&disks[3]);
        let image = std::fs::read(&disks[3]).unwrap();
        let at = (SUPERBLOCK_SECTOR as usize + 8) * 512;
        assert_eq!(
            orion_raid::metadata::ppl::decode_header(&image[at..at + 4096], &sb.array_uuid),
            Some(orion_raid::metadata::ppl::PplHeader {
                generation: 0,
                entries: 0
            })
        );
    }
    if policy.contains("bitmap") {
        // Our writes set no bits, so the bitmap must say it is stale (md's BITMAP_STALE in
        // `bitmap_super_t.state`) rather than rely on event counts.
        let sb = common::superblock_of(&disks[0]);
        let image = std::fs::read(&disks[0]).unwrap();
        let at = (SUPERBLOCK_SECTOR as i64 + i64::from(sb.bitmap_offset_sectors)) as usize * 512;
        assert_eq!(
            &image[at..at + 4],
            b"bitm",
            "no md bitmap where the superblock says"
        );
        let state = u32::from_le_bytes(image[at + 48..at + 52].try_into().unwrap());
        assert!(
            state & 2 != 0,
            "the bitmap was not marked stale (state {state:#x})"
        );
    }
    // The torn stripe: stripe 0's parity (left-symmetric, 4 members: on the last member)
    // no longer matches its data.
    let sb = common::superblock_of(&disks[3]);
    let parity_at = sb.data_offset_sectors * 512;
    let mut image = std::fs::read(&disks[3]).unwrap();
    for b in &mut image[parity_at as usize..parity_at as usize + 4096] {
        *b ^= 0x5a;
    }
    std::fs::write(&disks[3], &image).unwrap();
    let guest = vm(&dir, &linux_check_script(4), &disks);
    assert_eq!(
        guest_value(&guest, "SHA"),
        sha256(&data, &dir),
        "{policy}: Linux read other data:\n{guest}"
    );
    assert_eq!(
        guest_value(&guest, "MISMATCH"),
        "0",
        "{policy}: Linux trusted state we did not maintain:\n{guest}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A Linux array with a consistency policy we do not maintain, served by us with its last
/// member missing and written. After a clean stop Linux takes the member back (`--re-add`,
/// else `--add`): its recovery must not be limited to bitmap bits we never set, so Linux
/// reads our data and a check finds parity consistent. (md 6.1 refuses the re-add of a
/// member we recorded faulty and recovers it in full; the stale mark that would force a
/// full recovery otherwise is asserted by the crash test above.) After
/// a crash (`kill -9`) the array is dirty and degraded: Linux must refuse to start it, as
/// md does without `--force` when nothing closes the write hole. The PPL we emptied does
/// not close it, so it must not be recorded then.
fn linux_policy_written_by_us_degraded(policy: &str, crash: bool) {
    if !vm_available() {
        return;
    }
    let dir = test_dir(&format!(
        "linux-md-degraded-{}-{}",
        policy.replace('=', "-"),
        if crash { "crash" } else { "stop" }
    ));
    let disks = members(&dir, 4);
    let script = format!(
        "mdadm --create /dev/md0 --run --level=5 --raid-devices=4 --chunk=64 {policy} \
         /dev/vda /dev/vdb /dev/vdc /dev/vdd\n\
         mdadm --wait /dev/md0 || true\n\
         dd if=/dev/urandom of=/dev/md0 bs=4k count=512 oflag=direct 2>/dev/null\n\
         mdadm --stop /dev/md0\n\
         echo DONE=1\n"
    );
    let guest = vm(&dir, &script, &disks);
    assert_eq!(guest_value(&guest, "DONE"), "1");
    let (data_path, data) = data_file(&dir, 4);
    let member_names = names(&disks);
    let server = Server::start(&dir, &member_names[..3]);
    let out = Command::new("nbdcopy")
        .arg("--flush")
        .arg(&data_path)
        .arg(server.uri(""))
        .output()
        .unwrap();
    assert!(out.status.success(), "nbdcopy: {}", text_of(&out));
    if crash {
        drop(server);
        let script = format!(
            "mdadm --assemble --run /dev/md0 {devs} 2>&1 || true\n\
             echo STATE=$(cat /sys/block/md0/md/array_state 2>/dev/null || echo none)\n\
             cat /proc/mdstat\n",
            devs = guest_disks(4)
        );
        let guest = vm(&dir, &script, &disks);
        let state = guest_value(&guest, "STATE");
        assert!(
            ["inactive", "none", "clear"].contains(&state),
            "{policy}: Linux started a dirty degraded array we wrote ({state}):\n{guest}"
        );
    } else {
        server.stop();
        let script = format!(
            "mdadm --assemble --run /dev/md0 {devs} 2>&1\n\
             mdadm /dev/md0 --re-add /dev/vdd 2>&1 || mdadm /dev/md0 --add /dev/vdd 2>&1 || true\n\
             sleep 1\n\
             mdadm --wait /dev/md0 || true\n\
             cat /proc/mdstat\n\
             echo SHA=$(head -c {DATA_BYTES} /dev/md0 | sha256sum | cut -d' ' -f1)\n\
             echo check > /sys/block/md0/md/sync_action; sleep 1; mdadm --wait /dev/md0 || true\n\
             echo MISMATCH=$(cat /sys/block/md0/md/mismatch_cnt)\n\
             echo DEGRADED=$(cat /sys/block/md0/md/degraded)\n\
             mdadm --stop /dev/md0\n",
            devs = guest_disks(4)
        );
        let guest = vm(&dir, &script, &disks);
        assert_eq!(guest_value(&guest, "DEGRADED"), "0", "{policy}:\n{guest}");
        assert_eq!(
            guest_value(&guest, "SHA"),
            sha256(&data, &dir),
            "{policy}: Linux read other data:\n{guest}"
        );
        assert_eq!(
            guest_value(&guest, "MISMATCH"),
            "0",
            "{policy}: the re-added member was not fully recovered:\n{guest}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn linux_bitmap_array_written_by_us_degraded_then_re_added() {
    linux_policy_written_by_us_degraded("--bitmap=internal", false);
}

#[test]
fn linux_ppl_array_written_by_us_degraded_then_crashed_is_not_started() {
    linux_policy_written_by_us_degraded("--consistency-policy=ppl", true);
}

#[test]
fn linux_ppl_array_written_by_us_degraded_then_re_added() {
    linux_policy_written_by_us_degraded("--consistency-policy=ppl", false);
}

#[test]
fn linux_bitmap_array_written_by_us_degraded_then_crashed_is_not_started() {
    linux_policy_written_by_us_degraded("--bitmap=internal", true);
}

#[test]
fn linux_bitmap_array_written_by_us_then_crashed() {
    linux_policy_written_by_us_then_crashed("--bitmap=internal");
}

#[test]
fn linux_ppl_array_written_by_us_then_crashed() {
    linux_policy_written_by_us_then_crashed("--consistency-policy=ppl");
}
