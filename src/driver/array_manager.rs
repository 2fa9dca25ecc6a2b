//! The ArrayManager: the arrays the driver serves, by device id, with the nesting of
//! RAID 50 / 60 (groups are internal arrays) and the event log every array writes to.

use alloc::collections::{BTreeMap, BTreeSet};
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;

use orion_driver::DriverError;

use super::{ARRAY_ID_BASE, group_names, uuid_of};
use crate::array::nested::Stack;
use crate::array::scrub::ScrubReport;
use crate::array::{Array, MemberState};
use crate::manage;
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
    pub fn member_target(
        &self,
        name: &str,
        member: &str,
    ) -> Result<Rc<Array>, (DriverError, String)> {
        let (id, array) = self.find(name).ok_or((
            DriverError::NotFound,
            alloc::format!("no array named '{name}'"),
        ))?;
        let groups = self.groups_of(id);
        if groups.is_empty() || array.find_member(member).is_some() {
            return Ok(array);
        }
        if let Some((_, g)) = groups.iter().find(|(_, g)| g.find_member(member).is_some()) {
            return Ok(g.clone());
        }
        Err((
            DriverError::NotFound,
            alloc::format!(
                "no group of '{name}' has a member '{member}' (groups: {})",
                group_names(&groups)
            ),
        ))
    }

    /// The array `raid add NAME MEMBER` adds to: `name` itself, or for an outer array (a
    /// RAID 0 cannot use a spare) the first group with more empty or failed slots than
    /// spares waiting to fill them.
    pub fn add_target(&self, name: &str) -> Result<Rc<Array>, (DriverError, String)> {
        let (id, array) = self.find(name).ok_or((
            DriverError::NotFound,
            alloc::format!("no array named '{name}'"),
        ))?;
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
            .ok_or((
                DriverError::InvalidArgument,
                alloc::format!(
                    "no group of '{name}' is missing a member: add the spare to a group ({})",
                    group_names(&groups)
                ),
            ))
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
