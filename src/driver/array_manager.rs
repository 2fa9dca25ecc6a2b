//! The ArrayManager: the arrays the driver serves, by device id, with the nesting of
//! RAID 50 / 60 (groups are internal arrays) and the event log every array writes to; the
//! requests about whole arrays (`status`, `detail`, `stop`, `set`) and the discovery of
//! nested arrays inside running ones.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;

use alloc::vec;
use core::cell::RefCell;

use orion_driver::DriverError;

use super::disk_manager::ready_member_sets;
use super::{ARRAY_ID_BASE, Answer, CacheManager, group_names, uuid_of};
use crate::array::assemble::assemble;
use crate::array::nested::{Stack, groups_of, read_inner_superblock};
use crate::array::scrub::ScrubReport;
use crate::array::settings::Setting;
use crate::array::{Array, MemberState};
use crate::block::{BlockDevice, SECTOR_BYTES};
use crate::executor::Executor;
use crate::manage::{self, Refusal};
use crate::metadata::Superblock;
use crate::monitor::{Event, EventLog, MonitorConfig};

/// Told of every array that starts being served (the RebuildManager takes its jobs).
pub type OnArrayAdded = Rc<dyn Fn(&Rc<Array>)>;

/// The arrays the driver serves, by device id.
#[derive(Default)]
pub struct ArrayManager {
    pub(super) arrays: BTreeMap<u32, Rc<Array>>,
    pub(super) next_id: u32,
    /// Arrays whose data starts with another array's superblock (the groups of a RAID
    /// 50/60): each one's superblock and its outer array's id once that runs. They are
    /// internal: not served to clients.
    pub(super) inner: BTreeMap<u32, (Superblock, Option<u32>)>,
    /// Arrays already looked at for an inner superblock (outer arrays count as looked at:
    /// md nests one level here).
    pub(super) probed: BTreeSet<u32>,
    /// Every array's events, in one sequence (it outlives a stopped array).
    pub(super) events: Rc<EventLog>,
    pub(super) monitor_config: MonitorConfig,
    pub(super) on_added: Option<OnArrayAdded>,
}

impl ArrayManager {
    /// Registers a running array and returns the device id it is served under. An array
    /// whose name another served array has is served under its name qualified by its UUID
    /// (`orion-1a2b3c4d`), with a warning naming both: names are how clients and commands
    /// reach arrays, so no two may share one.
    pub fn add(&mut self, array: Rc<Array>) -> u32 {
        let wanted = String::from(array.name());
        self.add_as(array, wanted)
    }

    fn add_as(&mut self, array: Rc<Array>, wanted: String) -> u32 {
        if let Some(hook) = &self.on_added {
            hook(&array);
        }
        let name = self.free_name(&array, &wanted);
        if name != array.name() && !array.serve_as(name.clone()) {
            log::error!("{}: already named; not renamed to {name}", array.name());
        }
        if name != wanted
            && let Some((_, other)) = self.find(&wanted)
        {
            log::warn!(
                "two arrays named '{wanted}': array {} is served as '{wanted}', array {} as \
                 '{name}'",
                uuid_of(&other),
                uuid_of(&array)
            );
        }
        let id = ARRAY_ID_BASE + self.next_id;
        self.next_id += 1;
        array.monitor().attach_events(self.events.clone());
        array.monitor().configure(&self.monitor_config);
        array.emit(Event::ArrayStarted);
        array.check_health();
        self.arrays.insert(id, array);
        id
    }

    /// The event log every array writes to.
    pub fn events(&self) -> &Rc<EventLog> {
        &self.events
    }

    pub fn monitor_config(&self) -> MonitorConfig {
        self.monitor_config
    }

    pub fn get(&self, id: u32) -> Option<&Rc<Array>> {
        self.arrays.get(&id)
    }

    /// The array with this name, and its id.
    pub fn find(&self, name: &str) -> Option<(u32, Rc<Array>)> {
        self.arrays
            .iter()
            .find(|(_, a)| a.name() == name)
            .map(|(&id, a)| (id, a.clone()))
    }

    /// Stops serving an array.
    pub fn remove(&mut self, id: u32) -> Option<Rc<Array>> {
        self.inner.remove(&id);
        self.probed.remove(&id);
        self.arrays.remove(&id)
    }

    /// `wanted` if no served array has that name, else `wanted-UUID8` (then `-2`, `-3`… in
    /// the unlikely case that is taken too).
    fn free_name(&self, array: &Array, wanted: &str) -> String {
        if self.find(wanted).is_none() {
            return wanted.into();
        }
        let uuid = array
            .superblock()
            .map(|sb| sb.array_uuid)
            .unwrap_or([0; 16]);
        let base = alloc::format!(
            "{wanted}-{:02x}{:02x}{:02x}{:02x}",
            uuid[0],
            uuid[1],
            uuid[2],
            uuid[3]
        );
        let mut name = base.clone();
        let mut n = 2;
        while self.find(&name).is_some() {
            name = alloc::format!("{base}-{n}");
            n += 1;
        }
        name
    }

    /// Registers a running stack: the outer array (served) and its groups (internal).
    /// Returns the outer array's id. When the outer array is served under a qualified name,
    /// its groups' names follow it (`orion-1a2b3c4d-g0`).
    pub fn add_stack(&mut self, stack: &Stack) -> u32 {
        let id = self.add(stack.array.clone());
        self.probed.insert(id);
        let (md, served) = (stack.array.md_name(), stack.array.name());
        for group in &stack.groups {
            let wanted = match group.md_name().strip_prefix(md) {
                Some(rest) if md != served && rest.starts_with('-') => {
                    alloc::format!("{served}{rest}")
                }
                _ => String::from(group.name()),
            };
            let gid = self.add_as(group.clone(), wanted);
            self.probed.insert(gid);
            if let Some(sb) = stack.array.slots().iter().flatten().find_map(|m| {
                (Rc::as_ptr(&m.dev) as *const () == Rc::as_ptr(group) as *const ())
                    .then(|| m.superblock())
            }) {
                self.inner.insert(gid, (sb, Some(id)));
            }
        }
        id
    }

    /// The outer array a group array belongs to.
    pub fn parent_of(&self, id: u32) -> Option<u32> {
        self.inner.get(&id).and_then(|(_, p)| *p)
    }

    /// Whether the array holds another array's superblock (internal, not served).
    pub fn is_inner(&self, id: u32) -> bool {
        self.inner.contains_key(&id)
    }

    /// The group arrays of an outer array, by id order.
    pub fn groups_of(&self, id: u32) -> Vec<(u32, Rc<Array>)> {
        self.inner
            .iter()
            .filter(|(_, (_, p))| *p == Some(id))
            .filter_map(|(&gid, _)| self.arrays.get(&gid).map(|a| (gid, a.clone())))
            .collect()
    }

    /// The status document of an array, nesting included.
    pub fn status(&self, id: u32, array: &Array) -> manage::ArrayStatus {
        let mut status = manage::array_status(id, array);
        self.mark_nesting(id, &mut status);
        status
    }

    /// Adds the nesting to an array's status: the parent of a group, the nested level and
    /// combined health of an outer array.
    pub fn mark_nesting(&self, id: u32, status: &mut manage::ArrayStatus) {
        status.parent = self
            .parent_of(id)
            .and_then(|p| self.arrays.get(&p))
            .map(|p| p.name().into());
        let groups = self.groups_of(id);
        if let Some(array) = self.arrays.get(&id) {
            let groups: Vec<&Array> = groups.iter().map(|(_, g)| g.as_ref()).collect();
            manage::apply_groups(status, array, &groups);
        }
        if groups.is_empty() {
            return;
        }
        // The outer RAID 0 keeps no redundancy: its checks and rebuilds are its groups'.
        status.mismatches = groups.iter().map(|(_, g)| g.mismatches()).sum();
        if status.job.is_none() {
            let jobs: Vec<_> = groups.iter().filter_map(|(_, g)| g.job()).collect();
            if let Some(first) = jobs.first() {
                status.job = Some(manage::JobStatus {
                    kind: first.kind.name().into(),
                    progress: jobs.iter().map(|j| j.fraction()).fold(1.0, f64::min),
                    rate_bytes_per_s: jobs.iter().map(|j| j.rate_bytes_per_s()).sum(),
                    eta_s: jobs.iter().map(|j| j.eta_s()).max().unwrap_or(0),
                });
            }
        }
    }

    /// The scrub report of an array; for an outer array, its groups' reports combined.
    pub fn scrub_report(&self, id: u32) -> Option<ScrubReport> {
        let groups = self.groups_of(id);
        if groups.is_empty() {
            return self.arrays.get(&id).and_then(|a| a.scrub_report());
        }
        let reports: Vec<(String, ScrubReport)> = groups
            .iter()
            .filter_map(|(_, g)| g.scrub_report().map(|r| (String::from(g.name()), r)))
            .collect();
        ScrubReport::combine(&reports)
    }

    /// The array a member command names: `name` itself, or for an outer array whose own
    /// members do not include `member`, the group that holds it.
    pub fn member_target(&self, name: &str, member: &str) -> Result<Rc<Array>, Refusal> {
        let (id, array) = self.named(name)?;
        let groups = self.groups_of(id);
        if groups.is_empty() || array.find_member(member).is_some() {
            return Ok(array);
        }
        if let Some((_, g)) = groups.iter().find(|(_, g)| g.find_member(member).is_some()) {
            return Ok(g.clone());
        }
        Err(Refusal::not_found(alloc::format!(
            "no group of '{name}' has a member '{member}' (groups: {})",
            group_names(&groups)
        )))
    }

    /// The array `raid add NAME MEMBER` adds to: `name` itself, or for an outer array (a
    /// RAID 0 cannot use a spare) the first group with more empty or failed slots than
    /// spares waiting to fill them.
    pub fn add_target(&self, name: &str) -> Result<Rc<Array>, Refusal> {
        let (id, array) = self.named(name)?;
        let groups = self.groups_of(id);
        if groups.is_empty() {
            return Ok(array);
        }
        let wants_spare = |g: &Array| {
            let empty = g
                .slots()
                .iter()
                .filter(|m| m.as_ref().is_none_or(|m| m.state() == MemberState::Faulty))
                .count();
            empty > g.spares().len()
        };
        groups
            .iter()
            .find(|(_, g)| wants_spare(g))
            .map(|(_, g)| g.clone())
            .ok_or(Refusal::invalid(alloc::format!(
                "no group of '{name}' is missing a member: add the spare to a group ({})",
                group_names(&groups)
            )))
    }

    /// The served array named `name`, or the refusal that says there is none.
    pub fn named(&self, name: &str) -> Result<(u32, Rc<Array>), Refusal> {
        self.find(name)
            .ok_or_else(|| Refusal::not_found(alloc::format!("no array named '{name}'")))
    }

    /// The device id `array` is served under.
    pub fn id_of(&self, array: &Rc<Array>) -> Option<u32> {
        self.iter()
            .find(|(_, a)| Rc::ptr_eq(a, array))
            .map(|(id, _)| id)
    }

    /// `raid status`: every array, with the shared pool (`(name, sectors)`).
    pub fn status_report(&self, pool: Vec<(String, u64)>) -> manage::StatusReport {
        manage::StatusReport {
            arrays: self.iter().map(|(id, a)| self.status(id, a)).collect(),
            pool: pool
                .into_iter()
                .map(|(path, sectors)| manage::PoolSpare {
                    path,
                    size_bytes: sectors * SECTOR_BYTES as u64,
                })
                .collect(),
        }
    }

    /// `raid detail NAME`.
    pub fn detail(&self, name: &str) -> Result<manage::ArrayDetail, Refusal> {
        let (id, array) = self.named(name)?;
        let mut detail = manage::array_detail(id, &array);
        self.mark_nesting(id, &mut detail.status);
        detail.scrub = self.scrub_report(id);
        Ok(detail)
    }

    /// `raid stop NAME`: flushes, marks clean and stops serving the array (a RAID 50/60
    /// with its groups); answered when that is on disk. `stopped` hears of each layer
    /// stopped, so the disks it held are free again.
    pub(crate) fn stop(this: &Rc<RefCell<Self>>, name: &str, stopped: Rc<dyn Fn(u32)>) -> Answer {
        let (id, array) = match this.borrow().named(name) {
            Ok(found) => found,
            Err(e) => return Answer::Now(Err(e)),
        };
        if let Some(parent) = this.borrow().parent_of(id) {
            let parent: String = this
                .borrow()
                .get(parent)
                .map(|a| a.name().into())
                .unwrap_or_default();
            return Answer::Now(Err(Refusal::new(
                DriverError::Busy,
                alloc::format!("the array is a group of '{parent}': stop '{parent}'"),
            )));
        }
        // The outer array first: its superblock update writes into its groups.
        let mut layers = vec![(id, array)];
        layers.extend(this.borrow().groups_of(id));
        let arrays = this.clone();
        Answer::later(async move {
            let mut result = Ok(());
            for (id, array) in layers {
                // No repair write may land after the array is marked clean.
                array.stop_scrub().await;
                let r = array.mark_clean().await;
                array.emit(Event::ArrayStopped);
                result = result.and(r);
                arrays.borrow_mut().remove(id);
                stopped(id);
            }
            result
                .map(|()| Vec::new())
                .map_err(|e| Refusal::new(DriverError::Io, alloc::format!("{e}")))
        })
    }

    /// `raid set NAME key=value`: applied to the array (and a RAID 50/60's groups, whose
    /// rebuild and spare policies they are) at once, answered once recorded on disk (the
    /// extension record), so it survives a restart. A refusal changes nothing.
    pub(crate) fn set(
        this: &Rc<RefCell<Self>>,
        req: manage::SetRequest,
        cache: &CacheManager,
    ) -> Answer {
        let (id, array) = match this.borrow().named(&req.name) {
            Ok(found) => found,
            Err(e) => return Answer::Now(Err(e)),
        };
        let setting = match Setting::parse(&req.key, &req.value) {
            Ok(s) => s,
            Err(e) => return Answer::Now(Err(Refusal::invalid(alloc::format!("{e}")))),
        };
        let mut layers = vec![array.clone()];
        layers.extend(this.borrow().groups_of(id).into_iter().map(|(_, g)| g));
        for layer in &layers {
            layer.apply(setting);
        }
        log::info!(
            "{}: {} set to {}",
            array.name(),
            setting.key(),
            setting.value_text()
        );
        // A new stripe_cache ask changes every array's share.
        cache.rebalance();
        Answer::later(async move {
            let mut result = Ok(());
            for layer in &layers {
                if let Err(e) = layer.persist_settings().await {
                    result = Err(Refusal::new(
                        DriverError::Io,
                        alloc::format!("not recorded: {e}"),
                    ));
                }
            }
            result.map(|()| {
                super::to_json(&manage::SettingsReport {
                    settings: array.settings(),
                })
            })
        })
    }

    /// Every array, outer arrays before the groups they write into (the order to stop them).
    pub fn stop_order(&self) -> Vec<Rc<Array>> {
        let mut arrays: Vec<(bool, Rc<Array>)> = self
            .iter()
            .map(|(id, a)| (self.is_inner(id), a.clone()))
            .collect();
        arrays.sort_by_key(|(inner, _)| *inner);
        arrays.into_iter().map(|(_, a)| a).collect()
    }

    /// Looks for superblocks at the start of running arrays' data, and starts the outer
    /// arrays they describe (RAID 50/60: a RAID 0 over RAID 5/6 groups) as disk discovery
    /// does from disks.
    pub(super) async fn discover_nested(
        exec: &Executor,
        arrays: &Rc<RefCell<Self>>,
        degraded_ok: bool,
    ) {
        let unprobed: Vec<(u32, Rc<Array>)> = arrays
            .borrow()
            .iter()
            .filter(|(id, _)| !arrays.borrow().probed.contains(id))
            .map(|(id, a)| (id, a.clone()))
            .collect();
        for (id, array) in unprobed {
            arrays.borrow_mut().probed.insert(id);
            if let Some(sb) = read_inner_superblock(&array).await {
                arrays.borrow_mut().inner.insert(id, (sb, None));
            }
        }
        let free: Vec<(u32, Rc<Array>, Superblock)> = {
            let a = arrays.borrow();
            a.inner
                .iter()
                .filter(|(_, (_, parent))| parent.is_none())
                .filter_map(|(&id, (sb, _))| a.arrays.get(&id).map(|x| (id, x.clone(), sb.clone())))
                .collect()
        };
        let superblocks = free.iter().map(|(_, _, sb)| sb.clone()).collect();
        for ids in ready_member_sets(superblocks, degraded_ok) {
            let members: Vec<(String, Rc<dyn BlockDevice>)> = ids
                .iter()
                .map(|&i| {
                    let (_, array, _) = &free[i];
                    (array.name().into(), array.clone() as Rc<dyn BlockDevice>)
                })
                .collect();
            let result = assemble(exec, members).await;
            for problem in &result.problems {
                log::warn!("{}: {}", problem.member, problem.reason);
            }
            let groups: Vec<Rc<Array>> = free.iter().map(|(_, a, _)| a.clone()).collect();
            for outer in result.arrays {
                let mut manager = arrays.borrow_mut();
                let outer_id = manager.add(outer.clone());
                manager.probed.insert(outer_id);
                for group in groups_of(&outer, &groups) {
                    let gid = free.iter().find(|(_, a, _)| Rc::ptr_eq(a, &group));
                    if let Some(entry) = gid.and_then(|(gid, _, _)| manager.inner.get_mut(gid)) {
                        entry.1 = Some(outer_id);
                    }
                }
                log::info!("array {} started as device {outer_id:#x}", outer.name());
            }
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (u32, &Rc<Array>)> {
        self.arrays.iter().map(|(&id, a)| (id, a))
    }

    pub fn len(&self) -> usize {
        self.arrays.len()
    }

    pub fn is_empty(&self) -> bool {
        self.arrays.is_empty()
    }
}
