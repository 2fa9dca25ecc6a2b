//! The kernel simulator (`orion-sim`, `tests/sim.rs`): one scenario engine that plays the
//! Orion kernel, the storage service and the member-disk drivers for a RAID driver, over a
//! transport — the freestanding driver as a child process, or a `RaidDriver` in this process
//! on simulated time — and checks every read against a model of the acknowledged writes.

pub mod disk;
pub mod model;
pub mod proto;
mod scenario;
pub mod transport;

pub use scenario::{ARRAY_NAME, SimConfig, SimLevel, SimReport, run};
pub use transport::{ChildProcess, DriverFault, InProcess, Transport};

/// Runs `cfg` on a `RaidDriver` in this process: the run replays bit for bit from its seed.
pub fn run_in_process(cfg: &SimConfig) -> SimReport {
    run(cfg, InProcess::default())
}
