//! Block device implementations: memory, faulty (tests and simulation); the host's file
//! members are `host::file`.

pub mod faulty;
pub mod memory;
#[cfg(feature = "std")]
pub mod open;
