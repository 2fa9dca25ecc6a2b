//! Everything the embedding API needs: `use orion_raid::prelude::*;`.

pub use crate::api::{
    ArrayId, ArrayStatus, Disk, DiskId, DiskInfo, DiskState, Health, RaidConfig, RaidError,
    RaidLevel,
};
pub use crate::block::BlockDevice;
pub use crate::driver::RaidDriver;
