//! The management protocol as the simulator speaks it: the requests it sends (status,
//! metrics, set, fail, remove, add) and the parts of the answers it reads. Kept in one place
//! so a change of opcodes or payloads (typed management operations) is one edit.

use orion_driver::{ManagementRequest, Message};
use serde_json::json;

use crate::manage;

/// A management request message.
fn request(opcode: u16, payload: serde_json::Value) -> Message {
    Message::ManagementRequest(ManagementRequest {
        opcode,
        payload: serde_json::to_vec(&payload).unwrap_or_default(),
    })
}

pub fn status() -> Message {
    Message::ManagementRequest(ManagementRequest {
        opcode: manage::OP_STATUS,
        payload: Vec::new(),
    })
}

pub fn metrics() -> Message {
    Message::ManagementRequest(ManagementRequest {
        opcode: manage::OP_METRICS,
        payload: Vec::new(),
    })
}

pub fn set(name: &str, key: &str, value: &str) -> Message {
    request(
        manage::OP_SET,
        json!({ "name": name, "key": key, "value": value }),
    )
}

pub fn fail(name: &str, member: &str) -> Message {
    request(manage::OP_FAIL, json!({ "name": name, "member": member }))
}

pub fn remove(name: &str, member: &str) -> Message {
    request(manage::OP_REMOVE, json!({ "name": name, "member": member }))
}

pub fn add(name: &str, member: &str) -> Message {
    request(manage::OP_ADD, json!({ "name": name, "member": member }))
}

/// The name the driver gives the kernel disk `id` (what `fail`, `remove` and `add` take).
pub fn disk_name(id: u32) -> String {
    format!("disk{id}")
}

/// The kernel disk id of a member path, if it is one.
pub fn disk_id(path: &str) -> Option<u32> {
    path.strip_prefix("disk")?.parse().ok()
}

/// The answer to a management request: its status and payload, or why it is not one.
pub fn response(reply: &Message) -> Result<(bool, &[u8]), String> {
    match reply {
        Message::ManagementResponse(r) => Ok((r.status.is_ok(), &r.payload)),
        other => Err(format!("expected a management response, got {other:?}")),
    }
}

pub fn parse_status(reply: &Message) -> Result<manage::StatusReport, String> {
    match response(reply)? {
        (true, payload) => serde_json::from_slice(payload).map_err(|e| format!("status: {e}")),
        (false, payload) => Err(format!(
            "status refused: {}",
            String::from_utf8_lossy(payload)
        )),
    }
}

/// The driver's heap high-water mark from a metrics answer (the freestanding driver reports
/// it; an embedded one does not).
pub fn heap_peak(reply: &Message) -> Option<u64> {
    let (ok, payload) = response(reply).ok()?;
    if !ok {
        return None;
    }
    let report: manage::MetricsReport = serde_json::from_slice(payload).ok()?;
    report.heap_peak_bytes
}
