//! The embedding API (`orion_raid::prelude`): every level built, written and read back; hot
//! removal, a spare and a rebuild; bad arguments are errors that change nothing.

use orion_raid::prelude::*;

const DISK_BYTES: u64 = 16 << 20;

fn disks(n: usize) -> Vec<Disk> {
    (0..n).map(|_| Disk::memory(DISK_BYTES)).collect()
}

fn pattern(seed: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(seed).wrapping_add(seed))
        .collect()
}

fn config(level: RaidLevel, n: usize) -> RaidConfig {
    RaidConfig {
        level,
        disks: disks(n),
        stripe_size: 64,
        ..Default::default()
    }
}

#[test]
fn every_level_is_built_written_and_read_back() {
    let cases = [
        (RaidLevel::RAID0, 2),
        (RaidLevel::RAID1, 2),
        (RaidLevel::RAID4, 3),
        (RaidLevel::RAID5, 4),
        (RaidLevel::RAID6, 5),
        (RaidLevel::RAID10, 4),
        (RaidLevel::RAID50, 6),
        (RaidLevel::RAID60, 8),
    ];
    for (level, n) in cases {
        let mut driver = RaidDriver::new();
        let raid = driver.create_array(config(level, n)).unwrap();
        driver.run_until_idle();
        let status = driver.status(raid).unwrap();
        assert_eq!(status.level, level);
        assert_eq!(status.health, Health::Optimal, "{level}");
        assert!(status.capacity_sectors > 0);
        assert_eq!(driver.disks(raid).unwrap().len(), n, "{level}");
        let mut written = Vec::new();
        for (i, sector) in [0u64, 127, 1000, status.capacity_sectors - 16]
            .into_iter()
            .enumerate()
        {
            let data = pattern(i as u8 + 3, 16 * 512);
            driver.write_blocks(raid, sector, &data).unwrap();
            written.push((sector, data));
        }
        for (sector, data) in &written {
            let mut back = vec![0u8; data.len()];
            driver.read_blocks(raid, *sector, &mut back).unwrap();
            assert!(back == *data, "{level}: sector {sector}");
        }
    }
}

#[test]
fn hot_removal_degrades_and_a_spare_rebuilds_it() {
    for (level, n) in [(RaidLevel::RAID5, 4), (RaidLevel::RAID60, 8)] {
        let mut driver = RaidDriver::new();
        let raid = driver.create_array(config(level, n)).unwrap();
        driver.run_until_idle();
        let data = pattern(9, 256 * 512);
        driver.write_blocks(raid, 500, &data).unwrap();
        let victim = driver.disks(raid).unwrap()[1].id;
        driver.remove_disk(raid, victim).unwrap();
        assert_eq!(
            driver.status(raid).unwrap().health,
            Health::Degraded,
            "{level}"
        );
        assert!(driver.disks(raid).unwrap().iter().all(|d| d.id != victim));
        let mut back = vec![0u8; data.len()];
        driver.read_blocks(raid, 500, &mut back).unwrap();
        assert!(back == data, "{level}: degraded read");
        let spare = driver.add_disk(raid, Disk::memory(DISK_BYTES)).unwrap();
        driver.start_rebuild(raid).unwrap();
        driver.start_rebuild(raid).unwrap();
        driver.run_until_idle();
        let status = driver.status(raid).unwrap();
        assert_eq!(status.health, Health::Optimal, "{level}: {status:?}");
        let info = driver.disks(raid).unwrap();
        let joined = info
            .iter()
            .find(|d| d.id == spare)
            .expect("the spare is listed");
        assert_eq!(joined.state, DiskState::Active, "{level}: {info:?}");
        driver.read_blocks(raid, 500, &mut back).unwrap();
        assert!(back == data, "{level}: after the rebuild");
    }
}

#[test]
fn bad_arguments_are_errors_and_change_nothing() {
    let mut driver = RaidDriver::new();
    // Configurations that cannot make an array.
    for bad in [
        RaidConfig::default(),
        RaidConfig {
            stripe_size: 3,
            ..config(RaidLevel::RAID5, 4)
        },
        RaidConfig {
            stripe_size: 0,
            ..config(RaidLevel::RAID5, 4)
        },
        config(RaidLevel::RAID5, 1),
        config(RaidLevel::RAID6, 2),
        RaidConfig {
            groups: 1,
            ..config(RaidLevel::RAID50, 6)
        },
        RaidConfig {
            layout: Some("sideways".into()),
            ..config(RaidLevel::RAID10, 4)
        },
    ] {
        let e = driver.create_array(bad.clone()).unwrap_err();
        assert!(matches!(e, RaidError::InvalidConfig(_)), "{bad:?}: {e:?}");
        assert!(!e.to_string().is_empty());
    }
    let raid = driver.create_array(config(RaidLevel::RAID0, 2)).unwrap();
    let capacity = driver.status(raid).unwrap().capacity_sectors;
    let data = pattern(5, 8 * 512);
    driver.write_blocks(raid, 0, &data).unwrap();
    let mut buf = vec![0u8; 8 * 512];
    assert!(matches!(
        driver.read_blocks(raid, capacity - 4, &mut buf),
        Err(RaidError::OutOfRange { .. })
    ));
    assert!(matches!(
        driver.write_blocks(raid, u64::MAX - 2, &data),
        Err(RaidError::OutOfRange { .. })
    ));
    assert!(matches!(
        driver.write_blocks(raid, 0, &data[..100]),
        Err(RaidError::Misaligned { bytes: 100 })
    ));
    let nobody = ArrayId(12345);
    assert_eq!(
        driver.read_blocks(nobody, 0, &mut buf),
        Err(RaidError::UnknownArray(nobody))
    );
    assert_eq!(
        driver.status(nobody).unwrap_err(),
        RaidError::UnknownArray(nobody)
    );
    assert_eq!(
        driver.remove_disk(raid, DiskId(999)),
        Err(RaidError::UnknownDisk(DiskId(999)))
    );
    // RAID0 cannot lose a disk: refused, and the array still serves.
    let first = driver.disks(raid).unwrap()[0].id;
    assert!(matches!(
        driver.remove_disk(raid, first),
        Err(RaidError::Member(_))
    ));
    driver.read_blocks(raid, 0, &mut buf).unwrap();
    assert_eq!(buf, data);
    assert_eq!(driver.status(raid).unwrap().health, Health::Optimal);
    // A disk too small to be a spare.
    assert!(matches!(
        driver.add_disk(raid, Disk::memory(1 << 20)),
        Err(RaidError::Member(_))
    ));
}

/// The RebuildManager's limit: with room for one job, three arrays' initial resyncs run one
/// after another, never two at once, and all finish.
#[test]
fn background_jobs_of_several_arrays_respect_the_global_limit() {
    let mut driver = RaidDriver::new();
    driver.rebuild_manager().set_max_concurrent(1);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let raid = driver.create_array(config(RaidLevel::RAID1, 2)).unwrap();
        // Slow enough to overlap: 16 MiB at 20 MB/s.
        let array = driver.arrays().get(raid.0).unwrap().clone();
        array.apply_setting("rebuild_rate_mb_s", "20").unwrap();
        ids.push(raid);
    }
    let exec = driver.executor().clone();
    let mut most = 0;
    let mut seen_running = [false; 3];
    for _ in 0..100_000 {
        exec.run_until_stalled();
        let running: Vec<bool> = ids
            .iter()
            .map(|id| driver.status(*id).unwrap().job_progress.is_some())
            .collect();
        let n = running.iter().filter(|&&r| r).count();
        most = most.max(n);
        for (seen, r) in seen_running.iter_mut().zip(&running) {
            *seen |= *r;
        }
        assert!(driver.rebuild_manager().running() <= 1);
        match exec.next_deadline_ns() {
            Some(deadline) => exec.advance_to(deadline),
            None => break,
        }
    }
    assert_eq!(most, 1, "two arrays resynced at once");
    assert_eq!(seen_running, [true; 3]);
    for id in &ids {
        let status = driver.status(*id).unwrap();
        assert_eq!(status.health, Health::Optimal);
        assert_eq!(status.job_progress, None);
    }
}

/// The CacheManager: three parity arrays asking 16 MiB each share a 24 MiB cache size in
/// proportion; a larger cache size gives each its ask; reads through the cache count hits.
#[test]
fn stripe_caches_share_the_driver_cache_size() {
    let mut driver = RaidDriver::new();
    driver.cache_manager().set_budget_bytes(24 << 20);
    let mut ids = Vec::new();
    for _ in 0..3 {
        let raid = driver.create_array(config(RaidLevel::RAID5, 4)).unwrap();
        let array = driver.arrays().get(raid.0).unwrap().clone();
        array.apply_setting("stripe_cache", "16M").unwrap();
        ids.push(raid);
    }
    // A RAID1 has no stripe cache and takes no share.
    driver.create_array(config(RaidLevel::RAID1, 2)).unwrap();
    driver.cache_manager().rebalance();
    driver.run_until_idle();
    let effective = |driver: &RaidDriver, id: ArrayId| {
        driver
            .arrays()
            .get(id.0)
            .unwrap()
            .stripe_cache_effective_bytes()
    };
    for id in &ids {
        assert_eq!(effective(&driver, *id), 8 << 20);
        // The ask itself is kept (it is what is recorded).
        assert_eq!(
            driver.arrays().get(id.0).unwrap().stripe_cache_bytes(),
            16 << 20
        );
    }
    assert!(driver.cache_manager().granted_bytes() <= 24 << 20);
    driver.cache_manager().set_budget_bytes(64 << 20);
    for id in &ids {
        assert_eq!(effective(&driver, *id), 16 << 20);
    }
    // Small writes then reads of the same stripe: the second pass hits the cache.
    let data = pattern(7, 4096);
    for _ in 0..2 {
        for sector in (0..64).step_by(8) {
            driver.write_blocks(ids[0], sector, &data).unwrap();
        }
    }
    let ratio = driver
        .cache_manager()
        .hit_ratio()
        .expect("lookups happened");
    assert!(ratio > 0.0, "{ratio}");
}
