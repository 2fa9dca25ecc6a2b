//! Management requests: the opcodes the storage service (or the host tool's control socket)
//! sends in `ManagementRequest` frames, and the JSON documents they answer with.
//!
//! Request payloads are small JSON objects (or empty); responses are JSON. JSON because the
//! same documents are what `raid status --json` prints for scripts: one encoding, no drift.

use alloc::string::{String, ToString};
use alloc::vec::Vec;

use serde::{Deserialize, Serialize};

use crate::array::JobProgress;
use crate::array::scrub::ScrubReport;
use crate::array::{Array, ArrayCounters, Member, MemberCounters, MemberState};
use crate::block::{BlockDevice, SECTOR_BYTES};
use crate::layout::ArrayLayout;
use crate::metadata::{Level, format_uuid};
use crate::monitor::ArrayMetrics;

/// Every array's state (like /proc/mdstat). Request payload: empty.
pub const OP_STATUS: u16 = 0x0001;
/// One array in detail (like `mdadm --detail`). Request: [`NameRequest`].
pub const OP_DETAIL: u16 = 0x0002;
/// Stop an array: flush, mark clean, stop serving it. Request: [`NameRequest`].
pub const OP_STOP: u16 = 0x0003;
/// Start a scrub that counts mismatches (md's `check`); answers at once with the new
/// [`ScrubReport`]. Request: [`NameRequest`].
pub const OP_CHECK: u16 = 0x0020;
/// Start a scrub that also fixes them (md's `repair`); as [`OP_CHECK`].
pub const OP_REPAIR: u16 = 0x0021;
/// The running or last scrub's [`ScrubReport`] (JSON `null` if none). Request: [`NameRequest`].
pub const OP_SCRUB_REPORT: u16 = 0x0022;
/// Cancel a running scrub; answers with its report as it stands. Request: [`NameRequest`].
pub const OP_SCRUB_CANCEL: u16 = 0x0023;

/// Monitoring figures of every array (empty payload) or of one ([`NameRequest`]).
/// Answer: [`MetricsReport`].
pub const OP_METRICS: u16 = 0x0030;
/// Events after a sequence number. Request: [`EventsRequest`]; answer:
/// [`crate::monitor::EventBatch`].
pub const OP_EVENTS: u16 = 0x0031;
/// Every array's figures in the Prometheus text format. Payload empty; answer: the text.
pub const OP_PROMETHEUS: u16 = 0x0032;

/// The request of [`OP_EVENTS`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventsRequest {
    /// Events with a larger sequence number are returned (0: all the ring holds).
    pub after_seq: u64,
    /// At most this many (default: all).
    #[serde(default)]
    pub max_events: Option<u32>,
}

/// The answer to [`OP_METRICS`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricsReport {
    pub arrays: Vec<ArrayMetrics>,
    /// Time between monitoring ticks (the rate windows advance on ticks).
    pub tick_interval_ns: u64,
    /// The most heap bytes the driver process has used at once, where the platform counts
    /// them (the freestanding driver's bounded heap).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heap_peak_bytes: Option<u64>,
}

/// Mark a member faulty. Request: [`MemberRequest`].
pub const OP_FAIL: u16 = 0x0010;
/// Take a faulty or spare member out of an array. Request: [`MemberRequest`].
pub const OP_REMOVE: u16 = 0x0011;
/// Add a device (a path the server opens) as a spare of an array, or to the shared spare
/// pool. Request: [`AddRequest`].
pub const OP_ADD: u16 = 0x0012;
/// Rebuild a copy of a member onto a new device while the old one serves, then retire the
/// old one. Request: [`ReplaceRequest`].
pub const OP_REPLACE: u16 = 0x0013;
/// Change an array policy. Request: [`SetRequest`]. Answer: the settings, as
/// [`SettingsReport`].
pub const OP_SET: u16 = 0x0014;
/// The shared spare pool. Request: empty. Answer: [`PoolReport`].
pub const OP_POOL: u16 = 0x0015;

/// A request naming one member of one array (by path, or by slot number).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRequest {
    pub name: String,
    pub member: String,
}

/// `raid add`: `name` is `None` for the shared pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AddRequest {
    pub name: Option<String>,
    pub member: String,
}

/// `raid replace NAME MEMBER --with NEW`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplaceRequest {
    pub name: String,
    pub member: String,
    pub with: String,
}

/// `raid set NAME key=value`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetRequest {
    pub name: String,
    pub key: String,
    pub value: String,
}

/// Every policy of an array, after a `set`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SettingsReport {
    pub settings: Vec<(String, String)>,
}

/// The shared spare pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolReport {
    /// (path, size in bytes)
    pub spares: Vec<(String, u64)>,
}

/// A management request decoded once, with its arguments: what the driver hands to the
/// manager that owns it. [`ManagementOp::decode`] is the only place that reads a request's
/// payload; [`ManagementOp::encode`] builds the request a client sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManagementOp {
    Status,
    Detail(NameRequest),
    Stop(NameRequest),
    Check(NameRequest),
    Repair(NameRequest),
    ScrubReport(NameRequest),
    ScrubCancel(NameRequest),
    /// Every array's figures (`None`) or one's.
    Metrics(Option<NameRequest>),
    Events(EventsRequest),
    Prometheus,
    Fail(MemberRequest),
    Remove(MemberRequest),
    Add(AddRequest),
    Replace(ReplaceRequest),
    Set(SetRequest),
    Pool,
}

/// Why a management request was refused: the status the response carries and a sentence
/// for the user (the response's payload).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub status: orion_driver::DriverError,
    pub detail: String,
}

impl Refusal {
    pub fn new(status: orion_driver::DriverError, detail: impl Into<String>) -> Self {
        Refusal {
            status,
            detail: detail.into(),
        }
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Self::new(orion_driver::DriverError::NotFound, detail)
    }

    pub fn invalid(detail: impl Into<String>) -> Self {
        Self::new(orion_driver::DriverError::InvalidArgument, detail)
    }
}

impl core::fmt::Display for Refusal {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "{}: {}", self.status, self.detail)
    }
}

fn parse<T: serde::de::DeserializeOwned>(payload: &[u8]) -> Result<T, Refusal> {
    serde_json::from_slice(payload)
        .map_err(|e| Refusal::invalid(alloc::format!("bad request: {e}")))
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain structs of strings and numbers: serializing cannot fail.
    serde_json::to_vec(value).expect("management requests serialize")
}

impl ManagementOp {
    /// Decodes a request; an unknown opcode or a payload that is not the opcode's document
    /// is a refusal, and nothing has been looked at yet.
    pub fn decode(request: &orion_driver::ManagementRequest) -> Result<Self, Refusal> {
        let p = &request.payload[..];
        Ok(match request.opcode {
            OP_STATUS => ManagementOp::Status,
            OP_DETAIL => ManagementOp::Detail(parse(p)?),
            OP_STOP => ManagementOp::Stop(parse(p)?),
            OP_CHECK => ManagementOp::Check(parse(p)?),
            OP_REPAIR => ManagementOp::Repair(parse(p)?),
            OP_SCRUB_REPORT => ManagementOp::ScrubReport(parse(p)?),
            OP_SCRUB_CANCEL => ManagementOp::ScrubCancel(parse(p)?),
            OP_METRICS if p.is_empty() => ManagementOp::Metrics(None),
            OP_METRICS => ManagementOp::Metrics(Some(parse(p)?)),
            OP_EVENTS => ManagementOp::Events(parse(p)?),
            OP_PROMETHEUS => ManagementOp::Prometheus,
            OP_FAIL => ManagementOp::Fail(parse(p)?),
            OP_REMOVE => ManagementOp::Remove(parse(p)?),
            OP_ADD => ManagementOp::Add(parse(p)?),
            OP_REPLACE => ManagementOp::Replace(parse(p)?),
            OP_SET => ManagementOp::Set(parse(p)?),
            OP_POOL => ManagementOp::Pool,
            other => {
                return Err(Refusal::new(
                    orion_driver::DriverError::Protocol(orion_driver::ProtocolError::UnknownOpcode),
                    alloc::format!("unknown management opcode {other:#06x}"),
                ));
            }
        })
    }

    pub fn opcode(&self) -> u16 {
        match self {
            ManagementOp::Status => OP_STATUS,
            ManagementOp::Detail(_) => OP_DETAIL,
            ManagementOp::Stop(_) => OP_STOP,
            ManagementOp::Check(_) => OP_CHECK,
            ManagementOp::Repair(_) => OP_REPAIR,
            ManagementOp::ScrubReport(_) => OP_SCRUB_REPORT,
            ManagementOp::ScrubCancel(_) => OP_SCRUB_CANCEL,
            ManagementOp::Metrics(_) => OP_METRICS,
            ManagementOp::Events(_) => OP_EVENTS,
            ManagementOp::Prometheus => OP_PROMETHEUS,
            ManagementOp::Fail(_) => OP_FAIL,
            ManagementOp::Remove(_) => OP_REMOVE,
            ManagementOp::Add(_) => OP_ADD,
            ManagementOp::Replace(_) => OP_REPLACE,
            ManagementOp::Set(_) => OP_SET,
            ManagementOp::Pool => OP_POOL,
        }
    }

    /// The request a client sends for this operation.
    pub fn encode(&self) -> orion_driver::ManagementRequest {
        let payload = match self {
            ManagementOp::Status | ManagementOp::Prometheus | ManagementOp::Pool => Vec::new(),
            ManagementOp::Metrics(None) => Vec::new(),
            ManagementOp::Metrics(Some(r)) => json(r),
            ManagementOp::Detail(r)
            | ManagementOp::Stop(r)
            | ManagementOp::Check(r)
            | ManagementOp::Repair(r)
            | ManagementOp::ScrubReport(r)
            | ManagementOp::ScrubCancel(r) => json(r),
            ManagementOp::Events(r) => json(r),
            ManagementOp::Fail(r) | ManagementOp::Remove(r) => json(r),
            ManagementOp::Add(r) => json(r),
            ManagementOp::Replace(r) => json(r),
            ManagementOp::Set(r) => json(r),
        };
        orion_driver::ManagementRequest {
            opcode: self.opcode(),
            payload,
        }
    }
}

/// A request naming one array.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NameRequest {
    pub name: String,
}

/// One member as `status` reports it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MemberStatus {
    pub path: String,
    /// Slot in the array.
    pub role: u32,
    /// `active`, `faulty`, `spare`, `rebuilding` or `missing`.
    pub state: String,
    /// For a member being rebuilt: 0..1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rebuilt: Option<f64>,
}

/// A background job (rebuild, resync, check) in progress; a monitoring figure too.
pub use crate::monitor::JobStatus;

/// How `status` and `metrics` show a job's progress.
pub fn job_status(job: &JobProgress) -> JobStatus {
    JobStatus {
        kind: job.kind.name().into(),
        progress: job.fraction(),
        rate_bytes_per_s: job.rate_bytes_per_s(),
        eta_s: job.eta_s(),
    }
}

/// One array as `status` reports it; the field names are a contract with scripts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArrayStatus {
    pub name: String,
    pub level: String,
    pub size_bytes: u64,
    /// `optimal`, `degraded`, `rebuilding` or `failed`.
    pub state: String,
    pub members: Vec<MemberStatus>,
    /// Spares, and failed members not yet removed (`role` is meaningless for them).
    #[serde(default)]
    pub spares: Vec<MemberStatus>,
    pub job: Option<JobStatus>,
    pub mismatches: u64,
    pub uuid: String,
    /// The device id the array is served under.
    pub device_id: u32,
    pub chunk_bytes: u64,
    pub layout: String,
    /// Unclean shutdown seen and no resync run yet.
    pub needs_resync: bool,
    /// For a group of a nested array (RAID 50/60): the outer array it is a member of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
}

/// The answer to [`OP_STATUS`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusReport {
    pub arrays: Vec<ArrayStatus>,
    /// The shared spare pool (devices no array owns yet, any array may draw from).
    #[serde(default)]
    pub pool: Vec<PoolSpare>,
}

/// One spare of the shared pool, as `status` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolSpare {
    pub path: String,
    pub size_bytes: u64,
}

/// Counters of one member, for `detail`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberDetail {
    pub path: String,
    pub role: u32,
    pub state: String,
    pub device_uuid: String,
    pub events: u64,
    #[serde(flatten)]
    pub counters: MemberCounters,
    pub in_flight: u32,
}

/// The answer to [`OP_DETAIL`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ArrayDetail {
    #[serde(flatten)]
    pub status: ArrayStatus,
    pub events: u64,
    pub data_offset_sectors: u64,
    pub member_size_bytes: u64,
    pub read_policy: String,
    #[serde(flatten)]
    pub counters: ArrayCounters,
    pub member_details: Vec<MemberDetail>,
    /// The running or last scrub (check/repair) since the array started.
    #[serde(default)]
    pub scrub: Option<ScrubReport>,
    /// The `raid set` policies.
    #[serde(default)]
    pub settings: Vec<(String, String)>,
}

fn layout_name(layout: &ArrayLayout, md_layout: u32) -> String {
    match layout {
        // mdadm's spelling (`near=2`), as `mdadm --detail` prints it.
        ArrayLayout::Raid10(l) => crate::metadata::Raid10Layout::from_raw(md_layout)
            .map(|m| m.to_string())
            .unwrap_or_else(|| l.layout().to_string()),
        ArrayLayout::Raid0(_) => match md_layout {
            1 => "original".into(),
            2 => "alternate".into(),
            _ => "-".into(),
        },
        ArrayLayout::Raid1(_) => "-".into(),
        ArrayLayout::Raid5(l) => match l.level() {
            crate::layout::ParityLevel::Raid4 => "-".into(),
            _ => l.algorithm().name().into(),
        },
    }
}

fn member_status(array: &Array, role: u32, m: &Member) -> MemberStatus {
    let used = array.member_used_sectors();
    MemberStatus {
        path: m.name.clone(),
        role,
        state: m.state().to_string(),
        rebuilt: (m.state() == MemberState::Rebuilding).then(|| {
            if used == 0 {
                1.0
            } else {
                m.recovery_offset_sectors().min(used) as f64 / used as f64
            }
        }),
    }
}

/// The status document of one array served as `device_id`.
pub fn array_status(device_id: u32, array: &Array) -> ArrayStatus {
    let sb = array.superblock();
    let members = array
        .slots()
        .iter()
        .enumerate()
        .map(|(slot, m)| match m {
            Some(m) => member_status(array, slot as u32, m),
            None => MemberStatus {
                path: String::new(),
                role: slot as u32,
                state: "missing".into(),
                rebuilt: None,
            },
        })
        .collect();
    let spares = array
        .spares()
        .iter()
        .map(|m| member_status(array, u32::MAX, m))
        .collect();
    ArrayStatus {
        name: array.name().to_string(),
        level: sb
            .as_ref()
            .map(|s| s.level.to_string())
            .unwrap_or_else(|| level_of(array.layout()).to_string()),
        size_bytes: array.capacity_sectors() * SECTOR_BYTES as u64,
        state: array.health_state().to_string(),
        members,
        spares,
        job: array.job().as_ref().map(job_status),
        mismatches: array.mismatches(),
        uuid: sb
            .as_ref()
            .map(|s| format_uuid(&s.array_uuid).to_string())
            .unwrap_or_default(),
        device_id,
        chunk_bytes: sb
            .as_ref()
            .map(|s| u64::from(s.chunk_sectors) * SECTOR_BYTES as u64)
            .unwrap_or(0),
        layout: layout_name(array.layout(), sb.as_ref().map(|s| s.layout).unwrap_or(0)),
        needs_resync: array.needs_resync(),
        parent: None,
    }
}

/// Completes the status of an array whose members are group arrays (RAID 50/60): the level
/// users know it by. Its state already counts the groups' (`Array::health_state`).
pub fn apply_groups(status: &mut ArrayStatus, array: &Array, groups: &[&Array]) {
    if groups.is_empty() {
        return;
    }
    status.level = crate::array::nested::level_name(array, groups);
}

fn level_of(layout: &ArrayLayout) -> Level {
    match layout {
        ArrayLayout::Raid0(_) => Level::Raid0,
        ArrayLayout::Raid1(_) => Level::Raid1,
        ArrayLayout::Raid10(_) => Level::Raid10,
        ArrayLayout::Raid5(l) => match l.level() {
            crate::layout::ParityLevel::Raid4 => Level::Raid4,
            crate::layout::ParityLevel::Raid5 => Level::Raid5,
            crate::layout::ParityLevel::Raid6 => Level::Raid6,
        },
    }
}

/// The detail document of one array.
pub fn array_detail(device_id: u32, array: &Array) -> ArrayDetail {
    let sb = array.superblock();
    let counters = array.counters();
    let member_details = array
        .slots()
        .iter()
        .enumerate()
        .filter_map(|(slot, m)| m.as_ref().map(|m| (slot, m)))
        .map(|(slot, m)| {
            let msb = m.superblock();
            MemberDetail {
                path: m.name.clone(),
                role: slot as u32,
                state: m.state().to_string(),
                device_uuid: format_uuid(&msb.device_uuid).to_string(),
                events: msb.events,
                counters: m.counters(),
                in_flight: m.inflight(),
            }
        })
        .collect();
    ArrayDetail {
        status: array_status(device_id, array),
        events: sb.as_ref().map(|s| s.events).unwrap_or(0),
        data_offset_sectors: sb.as_ref().map(|s| s.data_offset_sectors).unwrap_or(0),
        member_size_bytes: sb
            .as_ref()
            .map(|s| s.size_sectors * SECTOR_BYTES as u64)
            .unwrap_or(0),
        read_policy: match array.read_policy() {
            crate::array::ReadPolicy::RoundRobin => "round-robin".into(),
            crate::array::ReadPolicy::LeastOutstanding => "adaptive".into(),
        },
        counters,
        member_details,
        scrub: array.scrub_report(),
        settings: array.settings(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use orion_driver::{DriverError, ManagementRequest, ProtocolError};

    fn name(n: &str) -> NameRequest {
        NameRequest { name: n.into() }
    }

    #[test]
    fn every_operation_encodes_to_a_request_that_decodes_back_to_it() {
        let member = MemberRequest {
            name: "md0".into(),
            member: "disk3".into(),
        };
        let ops = [
            ManagementOp::Status,
            ManagementOp::Detail(name("a")),
            ManagementOp::Stop(name("b")),
            ManagementOp::Check(name("c")),
            ManagementOp::Repair(name("d")),
            ManagementOp::ScrubReport(name("e")),
            ManagementOp::ScrubCancel(name("f")),
            ManagementOp::Metrics(None),
            ManagementOp::Metrics(Some(name("g"))),
            ManagementOp::Events(EventsRequest {
                after_seq: 9,
                max_events: Some(3),
            }),
            ManagementOp::Prometheus,
            ManagementOp::Fail(member.clone()),
            ManagementOp::Remove(member),
            ManagementOp::Add(AddRequest {
                name: None,
                member: "disk4".into(),
            }),
            ManagementOp::Replace(ReplaceRequest {
                name: "md0".into(),
                member: "disk1".into(),
                with: "disk5".into(),
            }),
            ManagementOp::Set(SetRequest {
                name: "md0".into(),
                key: "read_policy".into(),
                value: "adaptive".into(),
            }),
            ManagementOp::Pool,
        ];
        let mut opcodes: Vec<u16> = ops.iter().map(|op| op.opcode()).collect();
        for op in &ops {
            assert_eq!(ManagementOp::decode(&op.encode()).as_ref(), Ok(op));
        }
        opcodes.sort();
        opcodes.dedup();
        assert_eq!(
            opcodes.len(),
            ops.len() - 1,
            "one opcode per operation (metrics twice)"
        );
    }

    #[test]
    fn unknown_opcodes_and_bad_payloads_are_refused_with_the_reason() {
        let unknown = ManagementOp::decode(&ManagementRequest {
            opcode: 0x7777,
            payload: Vec::new(),
        })
        .unwrap_err();
        assert_eq!(
            unknown.status,
            DriverError::Protocol(ProtocolError::UnknownOpcode)
        );
        assert!(unknown.detail.contains("0x7777"), "{unknown}");
        for (opcode, payload) in [
            (OP_DETAIL, &b""[..]),
            (OP_STOP, b"{\"nam\":\"x\"}"),
            (OP_FAIL, b"{\"name\":\"x\"}"),
            (OP_EVENTS, b"{\"after_seq\":\"soon\"}"),
            (OP_METRICS, b"\xff\xfe"),
        ] {
            let refusal = ManagementOp::decode(&ManagementRequest {
                opcode,
                payload: payload.to_vec(),
            })
            .unwrap_err();
            assert_eq!(refusal.status, DriverError::InvalidArgument, "{opcode:#x}");
            assert!(refusal.detail.starts_with("bad request"), "{refusal}");
        }
    }
}
