//! Events: what happened to an array (a member failed, a rebuild finished, …), kept in a
//! bounded ring with sequence numbers so that a reader polling "events after N" learns both
//! the new events and how many it missed because the ring wrapped.

use alloc::collections::VecDeque;
use alloc::rc::Rc;
use alloc::string::String;
use alloc::vec::Vec;
use core::cell::{Cell, RefCell};
use core::fmt;

use serde::{Deserialize, Serialize};

/// Events kept when nothing else is configured.
pub const DEFAULT_EVENT_CAPACITY: usize = 1024;

/// Something that happened to an array. `slot` is the member's role in the array, `member`
/// its name (path) for display.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// The array was assembled (or created) and is being served.
    ArrayStarted,
    /// The array was stopped.
    ArrayStopped,
    /// The array lost redundancy (it still serves every block).
    ArrayDegraded,
    /// Every member is in sync again.
    ArrayOptimal,
    /// More members failed than the level tolerates: some blocks are lost.
    ArrayFailed,
    /// I/O to more members than the level tolerates timed out at once: the I/O got errors,
    /// no member was failed (a stall of something they share, not of each).
    ArrayStalled {
        members: u32,
    },
    MemberFailed {
        slot: u32,
        member: String,
    },
    /// A member's device is no longer what it was (its image file deleted or truncated
    /// under the server); `reason` says what. It is failed unless that fails the array.
    MemberGone {
        slot: u32,
        member: String,
        reason: String,
    },
    SpareActivated {
        slot: u32,
        member: String,
    },
    RebuildStarted {
        slot: u32,
        member: String,
    },
    RebuildFinished {
        slot: u32,
        member: String,
    },
    RebuildFailed {
        slot: u32,
        member: String,
        reason: String,
    },
    /// A check found copies or parity that disagree; `slot` names the wrong member when it
    /// is known (RAID6).
    MismatchFound {
        sector: u64,
        sectors: u64,
        slot: Option<u32>,
    },
    ResyncStarted,
    ResyncFinished {
        /// Extents no copy could be read from.
        unreadable_extents: u64,
    },
    /// A scrub (`check`, or `repair` when `repair`) started.
    CheckStarted {
        repair: bool,
    },
    CheckFinished {
        repair: bool,
        mismatches: u64,
    },
}

impl Event {
    /// The snake_case name used in JSON and in `raid monitor` lines.
    pub fn name(&self) -> &'static str {
        match self {
            Event::ArrayStarted => "array_started",
            Event::ArrayStopped => "array_stopped",
            Event::ArrayDegraded => "array_degraded",
            Event::ArrayOptimal => "array_optimal",
            Event::ArrayFailed => "array_failed",
            Event::ArrayStalled { .. } => "array_stalled",
            Event::MemberFailed { .. } => "member_failed",
            Event::MemberGone { .. } => "member_gone",
            Event::SpareActivated { .. } => "spare_activated",
            Event::RebuildStarted { .. } => "rebuild_started",
            Event::RebuildFinished { .. } => "rebuild_finished",
            Event::RebuildFailed { .. } => "rebuild_failed",
            Event::MismatchFound { .. } => "mismatch_found",
            Event::ResyncStarted => "resync_started",
            Event::ResyncFinished { .. } => "resync_finished",
            Event::CheckStarted { .. } => "check_started",
            Event::CheckFinished { .. } => "check_finished",
        }
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())?;
        match self {
            Event::MemberFailed { slot, member }
            | Event::SpareActivated { slot, member }
            | Event::RebuildStarted { slot, member }
            | Event::RebuildFinished { slot, member } => write!(f, " slot {slot} ({member})"),
            Event::RebuildFailed {
                slot,
                member,
                reason,
            }
            | Event::MemberGone {
                slot,
                member,
                reason,
            } => write!(f, " slot {slot} ({member}): {reason}"),
            Event::MismatchFound {
                sector,
                sectors,
                slot,
            } => {
                write!(f, " {sectors} sectors at array sector {sector}")?;
                match slot {
                    Some(s) => write!(f, ", member slot {s}"),
                    None => Ok(()),
                }
            }
            Event::ArrayStalled { members } => {
                write!(
                    f,
                    ": I/O to {members} members timed out at once, none failed"
                )
            }
            Event::ResyncFinished { unreadable_extents } if *unreadable_extents > 0 => {
                write!(f, " ({unreadable_extents} extents unreadable)")
            }
            Event::CheckStarted { repair } => {
                f.write_str(if *repair { " (repair)" } else { " (check)" })
            }
            Event::CheckFinished { repair, mismatches } => write!(
                f,
                " ({}): {mismatches} mismatches",
                if *repair { "repair" } else { "check" }
            ),
            _ => Ok(()),
        }
    }
}

/// One event as stored and sent.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventRecord {
    /// 1, 2, 3, … in the order events happened (across arrays).
    pub seq: u64,
    /// Executor time.
    pub time_ns: u64,
    /// Milliseconds since the Unix epoch, from the array's wall-clock base.
    pub wall_time_ms: u64,
    pub array: String,
    pub event: Event,
}

/// The answer to "events after `after_seq`".
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventBatch {
    /// Oldest first.
    pub events: Vec<EventRecord>,
    /// Events after `after_seq` that the ring no longer holds.
    pub missed: u64,
    /// The newest sequence number given out so far (0: none): a reader that wants only new
    /// events starts from it.
    pub latest_seq: u64,
}

/// A bounded ring of events; the oldest is dropped when it is full. A log may forward to
/// another (`forward_to`): an array's own log forwards to the driver's once the array is
/// served, so a nested group that still holds its parent's original log is heard too.
#[derive(Debug)]
pub struct EventLog {
    ring: RefCell<VecDeque<EventRecord>>,
    capacity: Cell<usize>,
    /// Sequence number of the next event.
    next_seq: Cell<u64>,
    forward: RefCell<Option<Rc<EventLog>>>,
}

impl Default for EventLog {
    fn default() -> Self {
        Self::new(DEFAULT_EVENT_CAPACITY)
    }
}

impl EventLog {
    /// A log keeping the newest `capacity` events (at least one).
    pub fn new(capacity: usize) -> Self {
        EventLog {
            ring: RefCell::new(VecDeque::new()),
            capacity: Cell::new(capacity.max(1)),
            next_seq: Cell::new(1),
            forward: RefCell::new(None),
        }
    }

    /// The log events really land in (the end of the forwarding chain).
    fn target(self: &Rc<Self>) -> Rc<EventLog> {
        let mut log = self.clone();
        loop {
            let next = log.forward.borrow().clone();
            match next {
                Some(n) => log = n,
                None => return log,
            }
        }
    }

    /// Moves this log's events into `target` and sends every later one there. Both ends of
    /// the forwarding chains are joined, so no cycle can form.
    pub fn forward_to(self: &Rc<Self>, target: &Rc<EventLog>) {
        let (from, to) = (self.target(), target.target());
        if Rc::ptr_eq(&from, &to) {
            return;
        }
        to.absorb(&from);
        *from.forward.borrow_mut() = Some(to);
    }

    fn forwarded(&self) -> Option<Rc<EventLog>> {
        self.forward.borrow().clone()
    }

    pub fn capacity(&self) -> usize {
        match self.forwarded() {
            Some(f) => f.capacity(),
            None => self.capacity.get(),
        }
    }

    /// Changes how many events are kept (dropping the oldest if needed).
    pub fn set_capacity(&self, capacity: usize) {
        if let Some(f) = self.forwarded() {
            return f.set_capacity(capacity);
        }
        self.capacity.set(capacity.max(1));
        self.trim();
    }

    fn trim(&self) {
        let mut ring = self.ring.borrow_mut();
        while ring.len() > self.capacity.get() {
            ring.pop_front();
        }
    }

    /// Appends an event and returns its sequence number.
    pub fn push(&self, array: &str, time_ns: u64, wall_time_ms: u64, event: Event) -> u64 {
        if let Some(f) = self.forwarded() {
            return f.push(array, time_ns, wall_time_ms, event);
        }
        let seq = self.next_seq.get();
        self.next_seq.set(seq + 1);
        self.ring.borrow_mut().push_back(EventRecord {
            seq,
            time_ns,
            wall_time_ms,
            array: String::from(array),
            event,
        });
        self.trim();
        seq
    }

    /// Moves every event of `other` into this log (renumbered, in order), leaving it empty.
    pub fn absorb(&self, other: &EventLog) {
        let taken: Vec<EventRecord> = other.ring.borrow_mut().drain(..).collect();
        for r in taken {
            self.push(&r.array, r.time_ns, r.wall_time_ms, r.event);
        }
    }

    /// The newest sequence number given out (0: none yet).
    pub fn latest_seq(&self) -> u64 {
        match self.forwarded() {
            Some(f) => f.latest_seq(),
            None => self.next_seq.get() - 1,
        }
    }

    /// Up to `max_events` events with a sequence number above `after_seq`, oldest first.
    pub fn after(&self, after_seq: u64, max_events: usize) -> EventBatch {
        if let Some(f) = self.forwarded() {
            return f.after(after_seq, max_events);
        }
        let ring = self.ring.borrow();
        let oldest_kept = ring.front().map(|r| r.seq).unwrap_or(self.next_seq.get());
        let missed = oldest_kept.saturating_sub(after_seq.saturating_add(1));
        let events = ring
            .iter()
            .filter(|r| r.seq > after_seq)
            .take(max_events)
            .cloned()
            .collect();
        EventBatch {
            events,
            missed,
            latest_seq: self.latest_seq(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::format;
    use alloc::string::ToString;

    fn failed(slot: u32) -> Event {
        Event::MemberFailed {
            slot,
            member: format!("disk{slot}"),
        }
    }

    #[test]
    fn sequence_numbers_start_at_one_and_readers_page_through() {
        let log = EventLog::new(8);
        assert_eq!(log.after(0, 10), EventBatch::default());
        for i in 0..5 {
            assert_eq!(log.push("a", i, 1000 + i, failed(i as u32)), i + 1);
        }
        let b = log.after(0, 2);
        assert_eq!(b.events.iter().map(|e| e.seq).collect::<Vec<_>>(), [1, 2]);
        assert_eq!((b.missed, b.latest_seq), (0, 5));
        let b = log.after(2, 10);
        assert_eq!(
            b.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [3, 4, 5]
        );
        assert_eq!(b.events[0].event, failed(2));
        assert_eq!(b.events[0].wall_time_ms, 1002);
        assert!(log.after(5, 10).events.is_empty());
        // A reader ahead of the log (e.g. after a server restart) misses nothing.
        assert_eq!(log.after(99, 10).missed, 0);
    }

    #[test]
    fn a_wrapped_ring_reports_what_a_slow_reader_missed() {
        let log = EventLog::new(4);
        for i in 0..10 {
            log.push("a", i, 0, Event::ArrayDegraded);
        }
        let b = log.after(0, 100);
        assert_eq!(
            b.events.iter().map(|e| e.seq).collect::<Vec<_>>(),
            [7, 8, 9, 10]
        );
        assert_eq!(b.missed, 6);
        assert_eq!(log.after(5, 100).missed, 1);
        assert_eq!(log.after(6, 100).missed, 0);
        assert_eq!(log.after(6, 100).events.len(), 4);
        log.set_capacity(2);
        assert_eq!(log.after(0, 100).events.len(), 2);
        assert_eq!(log.after(0, 100).missed, 8);
    }

    #[test]
    fn absorb_renumbers_in_order() {
        let shared = EventLog::new(16);
        shared.push("x", 0, 0, Event::ArrayStarted);
        let own = EventLog::new(16);
        own.push("a", 5, 0, Event::ResyncStarted);
        own.push("a", 6, 0, Event::ArrayDegraded);
        shared.absorb(&own);
        let b = shared.after(1, 10);
        assert_eq!(b.events[0].seq, 2);
        assert_eq!(b.events[0].event, Event::ResyncStarted);
        assert_eq!(b.events[1].time_ns, 6);
        assert!(own.after(0, 10).events.is_empty());
    }

    #[test]
    fn forwarding_joins_chain_ends_and_never_cycles() {
        let shared = Rc::new(EventLog::new(16));
        let parent = Rc::new(EventLog::new(16));
        let group = Rc::new(EventLog::new(16));
        group.push("g0", 0, 0, Event::ArrayDegraded);
        group.forward_to(&parent);
        parent.push("p", 0, 0, Event::ResyncStarted);
        parent.forward_to(&shared);
        // A group that still holds its parent's original log reaches the shared one.
        group.push("g0", 0, 0, Event::ArrayOptimal);
        let names: Vec<String> = shared
            .after(0, 10)
            .events
            .iter()
            .map(|e| format!("{}:{}", e.array, e.event.name()))
            .collect();
        assert_eq!(
            names,
            ["g0:array_degraded", "p:resync_started", "g0:array_optimal"]
        );
        assert_eq!(group.after(0, 10).events.len(), 3, "reads follow the chain");
        assert_eq!(group.latest_seq(), 3);
        // Forwarding back is a no-op, not a cycle.
        shared.forward_to(&group);
        assert_eq!(shared.push("s", 0, 0, Event::ArrayStopped), 4);
        group.set_capacity(2);
        assert_eq!(shared.capacity(), 2);
    }

    #[test]
    fn events_round_trip_through_json_and_read_well() {
        let log = EventLog::new(4);
        log.push(
            "r5",
            1,
            2,
            Event::MismatchFound {
                sector: 64,
                sectors: 8,
                slot: Some(2),
            },
        );
        let batch = log.after(0, 10);
        let json = serde_json::to_string(&batch).unwrap();
        assert!(json.contains(r#""type":"mismatch_found""#), "{json}");
        let back: EventBatch = serde_json::from_str(&json).unwrap();
        assert_eq!(back, batch);
        assert_eq!(
            batch.events[0].event.to_string(),
            "mismatch_found 8 sectors at array sector 64, member slot 2"
        );
        assert_eq!(failed(1).to_string(), "member_failed slot 1 (disk1)");
        let unit = serde_json::to_string(&Event::ArrayStopped).unwrap();
        assert_eq!(unit, r#"{"type":"array_stopped"}"#);
    }
}
